"""Process logging: one format (JSON lines or text) for voicegw and uvicorn, the call's CallSid on
every line logged on its behalf, and registered secrets scrubbed from every line.

    configure(level="info", fmt=None)      # once, at process start (the CLI does it)
    register_secret(value)                  # never print this value; register_settings(settings)
    with call_context("CA123"): ...         # lines logged inside carry call_sid
    set_call_sid("CA123")                   # the current context, and asyncio tasks created after it

Format: `VOICEGW_LOG_FORMAT=json|text` (or `voicegw --log-format`); by default text when stderr is a
terminal and JSON otherwise. A JSON line holds `ts` (ISO 8601 UTC, ms), `level`, `logger`, `msg`,
`call_sid` when known, `exc` (the traceback) and `stack` when present, and the record's `extra=`
fields. Uvicorn gets `uvicorn_log_config()` so its loggers have no handlers of their own and reach
the same root handler.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, TextIO
from urllib.parse import urlparse

FORMATS = ("json", "text")
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
NOISY_LOGGERS = ("httpx", "httpcore", "websockets", "picows")
MIN_SECRET_LENGTH = 6
REDACTED = "***"

# ---------------------------------------------------------------------------------------------
# Call context
# ---------------------------------------------------------------------------------------------

_call_sid: contextvars.ContextVar[str | None] = contextvars.ContextVar("voicegw_call_sid", default=None)


def current_call_sid() -> str | None:
    return _call_sid.get()


def set_call_sid(call_sid: str | None) -> contextvars.Token[str | None]:
    """Set the CallSid for the current context. asyncio tasks created afterwards copy the context,
    so every task a call starts after this logs with its CallSid."""
    return _call_sid.set(call_sid or None)


@contextlib.contextmanager
def call_context(call_sid: str | None) -> Iterator[None]:
    """Lines logged inside (and in tasks created inside) carry `call_sid`; reset on exit."""
    token = _call_sid.set(call_sid or None)
    try:
        yield
    finally:
        _call_sid.reset(token)


class CallSidFilter(logging.Filter):
    """Puts the context's CallSid on the record as `call_sid`, unless the caller passed one
    explicitly (`extra={"call_sid": ...}`, for lines about a call logged outside its context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_sid", None) is None:
            record.call_sid = _call_sid.get()
        return True


def _record_call_sid(record: logging.LogRecord) -> str | None:
    sid = getattr(record, "call_sid", None)
    return str(sid) if sid else _call_sid.get()


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------

_secrets_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_ordered: tuple[str, ...] = ()  # longest first, so a secret containing another goes whole


def register_secret(value: str | bytes | None) -> None:
    """Never print `value`: every line replaces it with ***. Values shorter than 6 characters are
    ignored (they would blank out ordinary words and numbers)."""
    global _secrets_ordered
    if value is None:
        return
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return
    value = str(value)
    if len(value) < MIN_SECRET_LENGTH:
        return
    # as written, and as repr() and JSON escape it (quotes, backslashes, non-ASCII)
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    with _secrets_lock:
        if not forms <= _secrets:
            _secrets.update(forms)
            _secrets_ordered = tuple(sorted(_secrets, key=len, reverse=True))


def register_settings(settings: Any) -> None:
    """Register the secrets a `voicegw.config.Settings` holds: model API key, Twilio auth token,
    operator tokens, stream secret, database password."""
    model = getattr(settings, "model", None)
    register_secret(getattr(model, "api_key", None))
    register_secret(getattr(settings, "twilio_auth_token", None))
    for token in getattr(settings, "operator_tokens", ()) or ():
        register_secret(token)
    stream_secret = getattr(settings, "stream_secret", None)
    if isinstance(stream_secret, (bytes, bytearray)):
        register_secret(stream_secret)
        register_secret(bytes(stream_secret).hex())
    else:
        register_secret(stream_secret)
    url = getattr(settings, "database_url", None)
    if url:
        with contextlib.suppress(ValueError):
            register_secret(urlparse(url).password)


_SECRET_ENV_SUFFIXES = ("API_KEY", "_KEY", "TOKEN", "TOKENS", "SECRET", "PASSWORD")


def register_environment(env: Mapping[str, str]) -> None:
    """Register the values of secret-named variables (…_API_KEY, …_KEY, …TOKEN(S), …SECRET,
    …PASSWORD; comma-separated lists item by item), so they are scrubbed even when the settings
    they feed fail to load."""
    for name, value in env.items():
        if value and name.upper().endswith(_SECRET_ENV_SUFFIXES):
            register_secret(value.strip())
            if "," in value:
                for item in value.split(","):
                    register_secret(item.strip())


def redact(text: str) -> str:
    for secret in _secrets_ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any) -> Any:
    if not _secrets_ordered:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Scrubs registered secrets from the record itself (message after %-formatting, exception and
    stack text), so any formatter sees clean text; the formatters below scrub their output again."""

    _exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets_ordered:
            return True
        message = _message(record)
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# ---------------------------------------------------------------------------------------------
# Formatters
# ---------------------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "call_sid", "call_sid_tag",
    "color_message",  # uvicorn's copy of the message with terminal colour codes
}


def _message(record: logging.LogRecord) -> str:
    """record.getMessage(), but a bad format string or argument never loses the line."""
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - a log call with mismatched args must still log
        return f"{record.msg!r} % {record.args!r} (log message formatting failed: {exc!r})"


def _timestamp(record: logging.LogRecord) -> str:
    ts = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, ensure_ascii=True, allow_nan=False)
        return value
    except (TypeError, ValueError, RecursionError):
        try:
            return repr(value)
        except Exception:  # noqa: BLE001
            return f"<unrepresentable {type(value).__name__}>"


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Pure ASCII (non-ASCII escaped), so a line stays valid JSON
    whatever the stream's encoding; newlines in messages and tracebacks are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
        }
        sid = _record_call_sid(record)
        if sid:
            out["call_sid"] = sid
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS or key.startswith("_"):
                continue
            out[f"extra_{key}" if key in out else key] = _jsonable(value)
        return json.dumps(_scrub(out), ensure_ascii=True, allow_nan=False, default=repr)


class TextFormatter(logging.Formatter):
    """`2025-01-01T12:00:00.123Z INFO voicegw.call [CA…]: message` (the CallSid when known)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(call_sid_tag)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _timestamp(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        sid = _record_call_sid(record)
        record.call_sid_tag = f" [{sid}]" if sid else ""
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        record.message = _message(record)
        record.asctime = self.formatTime(record)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = line.rstrip("\n") + "\n" + record.exc_text
        if record.stack_info:
            line = line.rstrip("\n") + "\n" + self.formatStack(record.stack_info)
        return redact(line)


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the *current* sys.stderr (or a given stream): replacing sys.stderr later, as test
    runners do, redirects the logs too."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._fixed_stream = stream  # StreamHandler.__init__ stored sys.stderr for None

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return self._fixed_stream if self._fixed_stream is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO | None) -> None:
        self._fixed_stream = value


def resolve_format(fmt: str | None = None, stream: TextIO | None = None) -> str:
    """'json' or 'text': the argument, else VOICEGW_LOG_FORMAT, else text on a terminal, json not."""
    choice = (fmt or os.environ.get("VOICEGW_LOG_FORMAT", "")).strip().lower()
    if choice:
        if choice not in FORMATS:
            from voicegw.yamlsrc import ConfigError

            raise ConfigError("environment", None, "VOICEGW_LOG_FORMAT", f"expected json or text, got {choice!r}")
        return choice
    stream = stream if stream is not None else sys.stderr
    try:
        return "text" if stream is not None and stream.isatty() else "json"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "json"


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    handler = StderrHandler(stream)
    handler.addFilter(CallSidFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._voicegw = True  # type: ignore[attr-defined]
    return handler


def uvicorn_log_config() -> dict[str, Any]:
    """For `uvicorn.Config(log_config=...)`: uvicorn's loggers get no handlers or formats of their
    own and propagate to the root logger, whose handler `configure` installed."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
    }


def configure(level: str | int = "info", fmt: str | None = None, stream: TextIO | None = None) -> str:
    """Configure the process's logging (again, if called again): one handler on the root logger in
    the chosen format, uvicorn's loggers routed to it, noisy libraries at WARNING or above, Python
    warnings and uncaught exceptions logged through it.
    Returns the format used. Raises ConfigError for an unknown format."""
    chosen = resolve_format(fmt, stream)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_voicegw", False)]:
        root.removeHandler(old)
    root.addHandler(make_handler(chosen, stream))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _route_uvicorn()
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    return chosen


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """A crash's traceback goes out as one line in the log format, not as raw stderr text."""
    logging.getLogger("voicegw").critical("uncaught %s, exiting", exc_type.__name__, exc_info=(exc_type, exc, tb))


def _route_uvicorn() -> None:
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True
        logger.disabled = False
        logger.setLevel(logging.NOTSET)  # the root level decides (an earlier server may have set one)
