"""Process logging: JSON lines that always parse, the CallSid on a call's lines, secrets never
printed, one format for voicegw and uvicorn, and the CLI wiring."""
from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import logging.config
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn
import uvicorn.config

from voicegw import cli, logs
from voicegw.config import Settings

ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WATCHED = ("", *logs.UVICORN_LOGGERS, *logs.NOISY_LOGGERS)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures process logging; put the process back as it was afterwards."""
    saved = {name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
             for name in WATCHED for lg in [logging.getLogger(name)]}
    capturing = logging._warnings_showwarning is not None  # type: ignore[attr-defined]
    secrets = set(logs._secrets)
    excepthook = sys.excepthook
    try:
        yield
    finally:
        for name, (handlers, level, propagate, disabled) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        sys.excepthook = excepthook
        if not capturing:
            logging.captureWarnings(False)
        with logs._secrets_lock:
            logs._secrets.clear()
            logs._secrets.update(secrets)
            logs._secrets_ordered = tuple(sorted(secrets, key=len, reverse=True))


def configure(fmt: str, level: str = "debug") -> io.StringIO:
    buf = io.StringIO()
    assert logs.configure(level=level, fmt=fmt, stream=buf) == fmt
    return buf


def json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    lines = buf.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line parses, or the test fails here


def all_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------------------------


def test_json_lines_parse_with_traceback_non_ascii_and_extras() -> None:
    buf = configure("json")
    log = logging.getLogger("voicegw.test")
    log.info("caller said %s", "Grüße, 日本 👋\nsecond line", extra={"turn": 3, "tags": ["a", "ß"], "obj": object()})
    try:
        raise ValueError("bäd frame\n  with a continuation")
    except ValueError:
        log.exception("frame failed for %s", "Zoë")
    log.warning("50%% done %s", 1, stack_info=True)

    first, second, third = json_lines(buf)
    for line in (first, second, third):
        assert ISO_MS_UTC.match(line["ts"]), line["ts"]
        assert line["logger"] == "voicegw.test"
        assert "call_sid" not in line
    assert first["level"] == "INFO" and first["msg"] == "caller said Grüße, 日本 👋\nsecond line"
    assert first["turn"] == 3 and first["tags"] == ["a", "ß"] and first["obj"].startswith("<object object")
    assert second["level"] == "ERROR" and second["msg"] == "frame failed for Zoë"
    assert second["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: bäd frame\n  with a continuation" in second["exc"]
    assert third["msg"] == "50% done 1" and "test_logs.py" in third["stack"]
    assert buf.getvalue().isascii()  # valid JSON whatever the stream's encoding


def test_a_broken_log_call_still_yields_a_line() -> None:
    record = logging.makeLogRecord({"name": "voicegw.test", "msg": "bad args %s %s", "args": ("only-one",)})
    line = json.loads(logs.JsonFormatter().format(record))
    assert "only-one" in line["msg"] and "formatting failed" in line["msg"]
    assert "formatting failed" in logs.TextFormatter().format(record)


def test_extra_fields_never_replace_the_line_fields() -> None:
    buf = configure("json")
    logging.getLogger("voicegw.test").info("m", extra={"level": "fake", "ts": 0, "nan": float("nan")})
    (line,) = json_lines(buf)
    assert line["level"] == "INFO" and ISO_MS_UTC.match(line["ts"])
    assert line["extra_level"] == "fake" and line["extra_ts"] == 0 and line["nan"] == "nan"


def test_an_uncaught_exception_is_one_json_line() -> None:
    buf = configure("json")
    try:
        raise KeyError("lost\nframe")
    except KeyError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = json_lines(buf)
    assert line["level"] == "CRITICAL" and line["msg"] == "uncaught KeyError, exiting"
    assert line["exc"].startswith("Traceback") and line["exc"].endswith("KeyError: 'lost\\nframe'")


# ---------------------------------------------------------------------------------------------
# CallSid
# ---------------------------------------------------------------------------------------------


def test_call_sid_inside_call_context_only() -> None:
    buf = configure("json")
    log = logging.getLogger("voicegw.call")
    log.info("before")
    with logs.call_context("CA111"):
        log.info("inside")
        with logs.call_context("CA222"):
            log.info("nested")
        log.info("inside again")
    log.info("after")
    log.info("about a call", extra={"call_sid": "CA333"})
    sids = [(line["msg"], line.get("call_sid")) for line in json_lines(buf)]
    assert sids == [("before", None), ("inside", "CA111"), ("nested", "CA222"), ("inside again", "CA111"),
                    ("after", None), ("about a call", "CA333")]
    assert logs.current_call_sid() is None


def test_call_sid_follows_tasks_created_after_set_call_sid() -> None:
    buf = configure("json")
    log = logging.getLogger("voicegw.call")

    async def worker(name: str) -> None:
        log.info(name)

    async def call(sid: str) -> None:
        early = asyncio.create_task(worker(f"{sid} task created before"))
        logs.set_call_sid(sid)
        log.info(f"{sid} handler")
        await asyncio.gather(early, asyncio.create_task(worker(f"{sid} task created after")))

    async def main() -> None:
        await asyncio.gather(call("CA1"), call("CA2"))  # two calls at once: no crosstalk
        log.info("gateway")

    asyncio.run(main())
    log.info("outside")
    got = {line["msg"]: line.get("call_sid") for line in json_lines(buf) if line["logger"] == "voicegw.call"}
    assert got == {
        "CA1 task created before": None, "CA2 task created before": None,
        "CA1 handler": "CA1", "CA2 handler": "CA2",
        "CA1 task created after": "CA1", "CA2 task created after": "CA2",
        "gateway": None, "outside": None,
    }


def test_text_format_shows_the_call_sid_after_the_logger_name() -> None:
    buf = configure("text")
    log = logging.getLogger("voicegw.call")
    with logs.call_context("CA0123456789abcdef"):
        log.info("barge-in at %d ms", 1234)
    log.warning("no call here")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("with a traceback")
    lines = buf.getvalue().splitlines()
    assert re.fullmatch(r"\S+Z INFO voicegw\.call \[CA0123456789abcdef\]: barge-in at 1234 ms", lines[0]), lines[0]
    assert ISO_MS_UTC.match(lines[0].split(" ")[0])
    assert re.fullmatch(r"\S+Z WARNING voicegw\.call: no call here", lines[1]), lines[1]
    assert re.fullmatch(r"\S+Z ERROR voicegw\.call: with a traceback", lines[2]), lines[2]
    assert lines[3] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: boom"


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------

SECRET = "sk-test-0123456789abcdef"
ODD_SECRET = 'tök"en\\42'  # JSON-escapes differently from how it is written


def log_secrets_everywhere() -> None:
    log = logging.getLogger("voicegw.realtime")
    log.info(f"connecting with key {SECRET} and {ODD_SECRET}")
    log.info("auth header api-key=%s token=%r", SECRET, ODD_SECRET)
    log.info("extras", extra={"headers": {"api-key": SECRET}, "token": ODD_SECRET})
    try:
        raise PermissionError(f"401 for key {SECRET} / {ODD_SECRET}")
    except PermissionError:
        log.exception("model refused")
    log.info("short values stay: abc, 12345")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_registered_secrets_never_appear(fmt: str) -> None:
    logs.register_secret(SECRET)
    logs.register_secret(ODD_SECRET)
    logs.register_secret("abc")  # too short to register: ordinary text would vanish
    buf = configure(fmt)
    log_secrets_everywhere()
    out = buf.getvalue()
    assert "sk-test" not in out and "0123456789abcdef" not in out
    if fmt == "json":
        lines = json_lines(buf)
        assert ODD_SECRET not in all_text(lines) and "tök" not in all_text(lines)
        assert lines[0]["msg"] == "connecting with key *** and ***"
        assert lines[1]["msg"] == "auth header api-key=*** token='***'"
        assert lines[2]["headers"] == {"api-key": "***"} and lines[2]["token"] == "***"
        assert "PermissionError: 401 for key *** / ***" in lines[3]["exc"]
        assert lines[4]["msg"] == "short values stay: abc, 12345"
    else:
        assert ODD_SECRET not in out and "connecting with key *** and ***" in out
        assert "PermissionError: 401 for key *** / ***" in out and "short values stay: abc, 12345" in out


def test_register_settings_covers_every_secret_settings_hold() -> None:
    settings = Settings.from_env({
        "OPENAI_API_KEY": "sk-openai-key-111111", "TWILIO_AUTH_TOKEN": "twilio-token-222222",
        "VOICEGW_OPERATOR_TOKENS": "operator-one-333333, operator-two-444444",
        "VOICEGW_STREAM_SECRET": "stream-secret-555555",
        "VOICEGW_DATABASE_URL": "postgresql://voicegw:db-password-666666@db:5432/voicegw",
    })
    logs.register_settings(settings)
    buf = configure("json")
    logging.getLogger("voicegw").info("settings: %s %s %s %s %s", settings.model.api_key if settings.model else "",
                                      settings.twilio_auth_token, settings.operator_tokens,
                                      settings.stream_secret, settings.database_url)
    (line,) = json_lines(buf)
    assert not re.search(r"\d{6}", line["msg"]), line["msg"]
    assert "postgresql://voicegw:***@db:5432/voicegw" in line["msg"]


# ---------------------------------------------------------------------------------------------
# uvicorn
# ---------------------------------------------------------------------------------------------


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not served")


def test_uvicorn_loggers_come_out_in_the_same_format() -> None:
    logging.config.dictConfig(copy.deepcopy(uvicorn.config.LOGGING_CONFIG))  # uvicorn's own handlers, as a stale set-up
    buf = configure("json")
    uvicorn.Config(_app, log_level="info", log_config=logs.uvicorn_log_config())  # applies the logging config
    for name in logs.UVICORN_LOGGERS:
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate
    with logs.call_context("CAUV"):
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200)
    logging.getLogger("uvicorn").warning("plain uvicorn")
    logging.getLogger("voicegw").info("ours")
    lines = json_lines(buf)
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("uvicorn.error", "Started server process [42]"),
        ("uvicorn.access", '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'),
        ("uvicorn", "plain uvicorn"),
        ("voicegw", "ours"),
    ]
    assert lines[0]["call_sid"] == "CAUV" and set(lines[1]) == {"ts", "level", "logger", "msg"}
    logging.getLogger("uvicorn.error").info("Started %d", 7, extra={"color_message": "Started \x1b[36m%d\x1b[0m"})
    assert "color_message" not in json_lines(buf)[-1]  # uvicorn's terminal-colour copy stays out


async def test_serve_hands_uvicorn_the_log_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicegw import server

    seen: dict[str, Any] = {}

    class Calllog:
        async def aclose(self) -> None:
            seen["closed"] = True

    class FakeServer:
        def __init__(self, config: uvicorn.Config, *args: Any) -> None:
            seen["log_config"] = config.log_config

        async def serve(self, sockets: Any = None) -> None:
            return None

    async def assemble(settings: Settings, **kw: Any) -> Any:
        return server.Assembled(_app, None, Calllog())  # type: ignore[arg-type]

    monkeypatch.setattr(server, "assemble", assemble)
    monkeypatch.setattr(server, "tune_gc", lambda: None)
    monkeypatch.setattr(server, "GatewayServer", FakeServer)
    buf = configure("json")
    await server.serve(Settings(dev_mode=True))
    assert seen == {"log_config": logs.uvicorn_log_config(), "closed": True}
    assert all(line["logger"] == "voicegw" for line in json_lines(buf))  # start-up warnings, as JSON


# ---------------------------------------------------------------------------------------------
# Format choice and the CLI
# ---------------------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_default_handler_follows_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    logs.configure(level="info", fmt="json")
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("voicegw").info("to the current stderr")
    assert json.loads(later.getvalue())["msg"] == "to the current stderr"


def test_default_format_is_text_on_a_terminal_and_json_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEGW_LOG_FORMAT", raising=False)
    assert logs.resolve_format(None, Tty()) == "text"
    assert logs.resolve_format(None, io.StringIO()) == "json"
    monkeypatch.setenv("VOICEGW_LOG_FORMAT", "json")
    assert logs.resolve_format(None, Tty()) == "json"
    assert logs.resolve_format("text", io.StringIO()) == "text"


def agent_file(tmp_path: Path) -> str:
    path = tmp_path / "agent.yaml"
    path.write_text("name: support\n")
    return str(path)


def test_cli_logs_json_and_registers_the_environment_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOICEGW_LOG_FORMAT", "json")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "cli-twilio-token-777777")
    monkeypatch.setenv("VOICEGW_LOCALMODEL_KEY", "local-model-key-888888")
    assert cli.main(["check-config", agent_file(tmp_path)]) == 0
    capsys.readouterr()
    logging.getLogger("voicegw.test").info("token %s key %s", "cli-twilio-token-777777", "local-model-key-888888")
    logging.getLogger("uvicorn.error").info("uvicorn line")
    logging.getLogger("httpx").info("quietened")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("voicegw.test", "token *** key ***"), ("uvicorn.error", "uvicorn line")]


def test_cli_log_format_option_and_a_bad_environment_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOICEGW_LOG_FORMAT", "json")
    assert cli.main(["--log-format", "text", "check-config", agent_file(tmp_path)]) == 0
    capsys.readouterr()
    logging.getLogger("voicegw.test").warning("plain")
    assert re.fullmatch(r"\S+Z WARNING voicegw\.test: plain\n", capsys.readouterr().err)

    monkeypatch.setenv("VOICEGW_LOG_FORMAT", "yaml")
    assert cli.main(["check-config", agent_file(tmp_path)]) == 2
    assert "VOICEGW_LOG_FORMAT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--log-format", "xml", "check-config", agent_file(tmp_path)])
    assert "--log-format" in cli.build_parser().format_help()
