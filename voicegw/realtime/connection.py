"""One WebSocket to a Realtime model per call: connect, authenticate, send commands, yield events.

A thin I/O layer around `voicegw.realtime.dialects`: everything above it speaks only the
internal vocabulary of `voicegw.realtime.events`.

* `open` retries only failures that may heal (refused connections, timeouts, HTTP 5xx/408/429),
  never 401/403/404, and waits for `session.created` before returning. Its errors name the status
  and a redacted URL, never a key or token.
* `send` numbers every command (``evt_<n>``) and remembers the last few hundred, so an ``error``
  event (whose ``event_id`` names the command that caused it) can be traced with `command_for`.
  Audio appends are remembered without their payload so the history holds no audio. A send that
  may wait (data already queued: flow control) is bounded by `send_timeout`; one that cannot
  wait arms no timer, which matters at 50 appends per second per call.
* `events` yields decoded events and ends when the socket closes normally; an abnormal close
  raises `RealtimeClosed(code, reason)`. The `session.created` event is not yielded again: it is
  `session_created`. Events that arrived before it are yielded first.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.protocol import State

from voicegw.realtime.auth import Auth
from voicegw.realtime.dialects import Dialect
from voicegw.realtime.events import AppendAudio, ClientCommand, Ignored, ModelError, ServerEvent, SessionStarted

log = logging.getLogger(__name__)

# What websockets accepts in one frame before it fails the whole connection (close 1009). A bad or
# oversized event must cost the call that event, never its session, so this is set far above any
# event worth decoding, and `MAX_EVENT_CHARS` decides which ones are skipped.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Events over this are logged and skipped without being decoded: 4 MiB of base64 is 3 MiB of
# 24 kHz PCM16, 65 s of audio in one delta (the services send ~100-200 ms per delta), and decoding
# it would hold this worker's event loop (and every call on it) for tens of milliseconds.
MAX_EVENT_CHARS = 4 * 1024 * 1024
HISTORY = 512  # sent commands remembered for error matching
_AUDIO_ELIDED = AppendAudio("")
_SECRET_PARAMS = frozenset({"api-key", "api_key", "key", "token", "access_token", "sig", "signature"})
_RETRYABLE_STATUS = frozenset({408, 429})
_HINTS = {
    401: "check the API key or Entra ID credentials",
    403: "the credential is not allowed to use this resource (role assignment or network rules)",
    404: "check the endpoint, the deployment or model name and the api-version",
}


class RealtimeConnectError(Exception):
    """The Realtime session could not be opened. The message never contains secrets."""

    def __init__(self, message: str, *, url: str, status: int | None = None, attempts: int = 1, retryable: bool = False):
        super().__init__(message)
        self.url = url  # redacted
        self.status = status
        self.attempts = attempts
        self.retryable = retryable


class RealtimeClosed(Exception):
    """The socket closed abnormally (or a send found it closed)."""

    def __init__(self, code: int | None, reason: str = ""):
        super().__init__(f"Realtime connection closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


@dataclass
class ConnectionStats:
    """Counters for metrics. Text frames are counted in characters (JSON here is ASCII)."""

    bytes_in: int = 0
    bytes_out: int = 0
    events_in: int = 0
    events_out: int = 0


def redact_url(url: str) -> str:
    """The URL without user info and with secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(url)
        query = [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))
    except ValueError:
        return "<unparseable url>"


def _scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _secrets_of(url: str, headers: dict[str, str]) -> list[str]:
    """Every value that must not appear in an error message, longest first."""
    values = list(headers.values()) + [v.split(" ", 1)[-1] for v in headers.values()]
    try:
        values += [v for k, v in parse_qsl(urlsplit(url).query) if k.lower() in _SECRET_PARAMS]
    except ValueError:
        pass
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


class RealtimeConnection:
    """An open Realtime session. Create with `await RealtimeConnection.open(...)`."""

    def __init__(
        self,
        ws: ClientConnection,
        dialect: Dialect,
        session_created: SessionStarted,
        *,
        url: str,
        pending: list[ServerEvent] | None = None,
        send_timeout: float = 5.0,
        close_timeout: float = 2.0,
    ) -> None:
        self._ws = ws
        self.dialect = dialect
        self.session_created = session_created
        self.url = url  # redacted
        self._pending: deque[ServerEvent] = deque(pending or ())
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self._seq = 0
        self._recent: OrderedDict[str, ClientCommand] = OrderedDict()
        self.stats = ConnectionStats()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        auth: Auth,
        dialect: Dialect,
        *,
        open_timeout: float = 10,
        retries: int = 2,
        backoff_s: float = 0.3,
        send_timeout: float = 5.0,
    ) -> RealtimeConnection:
        """Connect (retrying what may heal), then wait up to `open_timeout` for session.created.

        Raises RealtimeConnectError, or AuthError when no credential can be obtained.
        """
        safe_url = redact_url(url)
        attempt = 0
        while True:
            attempt += 1
            headers = await auth.headers()
            try:
                ws = await cls._connect(url, headers, open_timeout, safe_url, attempt)
                break
            except RealtimeConnectError as exc:
                if not exc.retryable or attempt > retries:
                    raise
                delay = backoff_s * (2 ** (attempt - 1))
                log.warning("%s; retrying in %.2fs (attempt %d of %d)", exc, delay, attempt + 1, retries + 1)
                await asyncio.sleep(delay)
        try:
            first, pending = await cls._await_session(ws, dialect, open_timeout, safe_url)
        except BaseException:
            ws.transport.abort()
            raise
        log.info("Realtime session %s open at %s (%s dialect)", first.session_id, safe_url, dialect.name)
        return cls(ws, dialect, first, url=safe_url, pending=pending, send_timeout=send_timeout)

    @staticmethod
    async def _connect(url: str, headers: dict[str, str], timeout: float, safe_url: str, attempt: int) -> ClientConnection:
        def fail(msg: str, status: int | None = None, retryable: bool = False) -> RealtimeConnectError:
            text = _scrub(f"Realtime connect to {safe_url} failed: {msg}", _secrets_of(url, headers))
            return RealtimeConnectError(text, url=safe_url, status=status, attempts=attempt, retryable=retryable)

        try:
            return await connect(
                url,
                additional_headers=headers,
                open_timeout=timeout,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,  # the services do not use it, and it costs CPU per frame
                close_timeout=2,
                user_agent_header="voicegw",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = bytes(exc.response.body or b"").decode("utf-8", "replace").strip()[:300]
            hint = _HINTS.get(status)
            msg = f"HTTP {status} {exc.response.reason_phrase}".rstrip()
            msg += (f" ({hint})" if hint else "") + (f": {body}" if body else "")
            raise fail(msg, status, retryable=status >= 500 or status in _RETRYABLE_STATUS) from None
        except InvalidURI:
            raise fail("invalid URL") from None
        except (OSError, TimeoutError, InvalidMessage) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise fail(reason, retryable=True) from None
        except InvalidHandshake as exc:
            raise fail(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    async def _await_session(
        ws: ClientConnection, dialect: Dialect, timeout: float, safe_url: str
    ) -> tuple[SessionStarted, list[ServerEvent]]:
        pending: list[ServerEvent] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = _decoded(await ws.recv(), dialect)
                    if isinstance(event, SessionStarted):
                        return event, pending
                    if isinstance(event, ModelError):
                        raise RealtimeConnectError(
                            f"Realtime session at {safe_url} was refused: {event.message}"
                            + (f" ({event.code})" if event.code else ""),
                            url=safe_url,
                        )
                    if type(event) is not Ignored:
                        pending.append(event)
        except TimeoutError:
            raise RealtimeConnectError(f"no session.created from {safe_url} within {timeout:g}s", url=safe_url) from None
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else ""
            raise RealtimeConnectError(
                f"Realtime connection to {safe_url} closed before session.created (code {code}{': ' + reason if reason else ''})",
                url=safe_url,
            ) from None

    # -- state ---------------------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.session_created.session_id

    @property
    def expires_at(self) -> float | None:
        """Epoch seconds when the server will end the session (15/30/60 min by version), if told."""
        value = self.session_created.session.get("expires_at")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None

    @property
    def closed(self) -> bool:
        return self._ws.state in (State.CLOSING, State.CLOSED)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    def command_for(self, event_id: str | None) -> ClientCommand | None:
        """The recently sent command that carried this event_id (audio appends without payload)."""
        return self._recent.get(event_id) if event_id else None

    # -- traffic -------------------------------------------------------------------------------

    async def send(self, cmd: ClientCommand) -> None:
        """Encode and send one command. Raises RealtimeClosed if the socket is gone or stuck."""
        if self.closed:
            raise RealtimeClosed(self._ws.close_code, self._ws.close_reason or "already closed")
        self._seq += 1
        event_id = f"evt_{self._seq}"
        text = self.dialect.encode_json(cmd, event_id)
        recent = self._recent
        recent[event_id] = _AUDIO_ELIDED if type(cmd) is AppendAudio else cmd
        if len(recent) > HISTORY:
            recent.popitem(last=False)
        ws = self._ws
        try:
            if ws.transport.get_write_buffer_size() == 0:
                if ws.send_in_progress is None and ws.protocol.state is State.OPEN and not ws.transport.is_closing():
                    # What `ws.send` does for an open, writable socket, without its async context
                    # manager and drain: frame the text and write it (the transport buffers it; a
                    # write that fills the buffer pauses the socket and the next send takes the
                    # bounded path below). -5% CPU per call-second at 50 calls (docs/BENCHMARKS.md).
                    ws.protocol.send_text(text.encode())
                    ws.send_data()
                else:
                    # Nothing queued, so the socket is not paused and send() writes without waiting
                    # (websockets only waits on flow control): no deadline to arm on the hot path.
                    await ws.send(text)
            else:
                async with asyncio.timeout(self.send_timeout):
                    await ws.send(text)
        except TimeoutError:
            # the peer stopped reading: a half-sent frame leaves the socket unusable
            self._ws.transport.abort()
            raise RealtimeClosed(None, f"send timed out after {self.send_timeout:g}s") from None
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            raise RealtimeClosed(code, exc.rcvd.reason if exc.rcvd else "") from None
        stats = self.stats
        stats.events_out += 1
        stats.bytes_out += len(text)

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Decoded server events until the socket closes; abnormal closes raise RealtimeClosed."""
        while self._pending:
            yield self._pending.popleft()
        decode = self.dialect.decode
        stats = self.stats
        try:
            async for raw in self._ws:
                stats.events_in += 1
                stats.bytes_in += len(raw)
                if type(raw) is not str:
                    yield Ignored("<binary>")
                    continue
                if len(raw) > MAX_EVENT_CHARS:
                    log.warning("oversized event from the Realtime model (%d chars, limit %d) skipped",
                                len(raw), MAX_EVENT_CHARS)
                    yield Ignored("<oversized>")
                    continue
                try:
                    msg = json.loads(raw)
                except (ValueError, RecursionError):
                    log.warning("invalid JSON from the Realtime model (%d chars) ignored", len(raw))
                    yield Ignored("<invalid json>")
                    continue
                yield decode(msg)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            raise RealtimeClosed(code, exc.rcvd.reason if exc.rcvd else "connection lost") from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket; bounded by `close_timeout`, then the transport is aborted."""
        if self._ws.state is State.CLOSED:
            return
        try:
            async with asyncio.timeout(self.close_timeout + 1):
                await self._ws.close(code, reason)
        except TimeoutError:
            self._ws.transport.abort()

    def __repr__(self) -> str:
        return f"<RealtimeConnection {self.dialect.name} {self.url} session={self.session_created.session_id}>"


def _decoded(raw: str | bytes, dialect: Dialect) -> ServerEvent:
    """One received message -> one event, never raising (what `events` does, off the hot path)."""
    if type(raw) is not str:
        return Ignored("<binary>")
    if len(raw) > MAX_EVENT_CHARS:
        log.warning("oversized event from the Realtime model (%d chars) skipped", len(raw))
        return Ignored("<oversized>")
    try:
        return dialect.decode(json.loads(raw))
    except (ValueError, RecursionError):
        return Ignored("<invalid json>")
