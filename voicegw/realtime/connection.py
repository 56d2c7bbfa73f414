"""One WebSocket to a Realtime model per call: connect, authenticate, send commands, yield events.

A thin I/O layer around `voicegw.realtime.dialects`: everything above it speaks only the
internal vocabulary of `voicegw.realtime.events`. The socket is a picows client (Cython framing):
frames arrive by callback and are decoded there, sends are written at once.

* `open` retries only failures that may heal (refused connections, timeouts, HTTP 5xx/408/429),
  never 401/403/404, and waits for `session.created` before returning. Its errors name the status
  and a redacted URL, never a key or token. Redirects are not followed (they would carry the key).
* `send` numbers every command and remembers the last few dozen, so an ``error`` event (whose
  ``event_id`` names the command that caused it) can be traced with `command_for`. Audio appends
  (50 a second) are numbered ``aud_<n>`` and not stored: their id says what they were, and the
  history holds no audio; other commands are ``evt_<n>``. A call's memory stays flat this way
  (a history of every command sent would hold ~55 KiB per call at 50 appends a second). A send made
  while the socket's write buffer is over its high-water mark (the peer is not reading: flow
  control) waits at most `send_timeout`, then the socket is aborted; one that need not wait arms
  no timer, which matters at 50 appends per second per call. `send_now` writes without waiting:
  a write buffer that stays over the mark for `send_timeout` aborts the socket the same way.
* `events` yields decoded events and ends when the socket closes normally; an abnormal close
  raises `RealtimeClosed(code, reason)`. The `session.created` event is not yielded again: it is
  `session_created`. Events that arrived before it are yielded first. `listen(on_event)` is the
  same stream handed to a plain function as each frame is read (no task switch per event).
* Messages split over CONTINUATION frames are reassembled, a CLOSE from the server is answered
  (`voicegw.realtime.wire`); a server that stops answering pings (20 s idle, 20 s for the pong)
  is dropped.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections import OrderedDict
from typing import AsyncIterator, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from picows import (
    WSAutoPingStrategy, WSError, WSInvalidMessageError, WSInvalidStatusError, WSInvalidURL, WSMsgType,
    ws_connect,
)

from voicegw.realtime.auth import Auth
from voicegw.realtime.dialects import APPEND_HEAD, Dialect, append_message
from voicegw.realtime.events import AppendAudio, ClientCommand, Ignored, ModelError, ServerEvent, SessionStarted
from voicegw.realtime.wire import MAX_EVENT_CHARS, MAX_MESSAGE_BYTES, ConnectionStats, RealtimeClosed, Wire

__all__ = ["MAX_EVENT_CHARS", "MAX_MESSAGE_BYTES", "ConnectionStats", "RealtimeClosed", "RealtimeConnectError",
           "RealtimeConnection", "redact_url"]

log = logging.getLogger(__name__)

READ_BUFFER_BYTES = 8192  # grows to the largest event; picows' 16 KiB default is memory per call
HISTORY = 64  # commands other than audio appends remembered for error matching
PING_IDLE_S = 20.0  # ping a server silent this long; drop it when the pong takes as long again
_AUDIO_ELIDED = AppendAudio("")
_SECRET_PARAMS = frozenset({"api-key", "api_key", "key", "token", "access_token", "sig", "signature"})
_RETRYABLE_STATUS = frozenset({408, 429})
_HINTS = {
    401: "check the API key or Entra ID credentials",
    403: "the credential is not allowed to use this resource (role assignment or network rules)",
    404: "check the endpoint, the deployment or model name and the api-version",
}
_TEXT = WSMsgType.TEXT
_tls: ssl.SSLContext | None = None


class RealtimeConnectError(Exception):
    """The Realtime session could not be opened. The message never contains secrets."""

    def __init__(self, message: str, *, url: str, status: int | None = None, attempts: int = 1, retryable: bool = False):
        super().__init__(message)
        self.url = url  # redacted
        self.status = status
        self.attempts = attempts
        self.retryable = retryable


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


def _tls_context() -> ssl.SSLContext:
    """One verifying client context for every wss connection (loading the CA store per connect
    costs milliseconds)."""
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls


def _without_userinfo(url: str) -> str:
    """picows would put user info into the Host header; the services take none."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])) if "@" in parts.netloc else url


class _Listener:
    """picows' listener factory for one connect attempt. Once the attempt is given up (its timeout,
    a cancelled call), a handshake that still completes is dropped at once."""

    __slots__ = ("dialect", "send_timeout", "wire", "given_up")

    def __init__(self, dialect: Dialect, send_timeout: float) -> None:
        self.dialect = dialect
        self.send_timeout = send_timeout
        self.wire: Wire | None = None
        self.given_up = False

    def __call__(self) -> Wire:
        self.wire = Wire(self.dialect, self.send_timeout, drop=self.given_up)
        return self.wire

    def give_up(self) -> None:
        self.given_up = True
        if self.wire is not None:
            self.wire.abort()


class RealtimeConnection:
    """An open Realtime session. Create with `await RealtimeConnection.open(...)`."""

    def __init__(
        self,
        wire: Wire,
        dialect: Dialect,
        session_created: SessionStarted,
        *,
        url: str,
        close_timeout: float = 2.0,
    ) -> None:
        self._wire = wire
        self.dialect = dialect
        self.session_created = session_created
        self.url = url  # redacted
        self.close_timeout = close_timeout
        self._seq = 0
        self._recent: OrderedDict[str, ClientCommand] = OrderedDict()
        self.stats = wire.stats

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
                wire = await cls._connect(url, headers, dialect, open_timeout, send_timeout, safe_url, attempt)
                break
            except RealtimeConnectError as exc:
                if not exc.retryable or attempt > retries:
                    raise
                delay = backoff_s * (2 ** (attempt - 1))
                log.warning("%s; retrying in %.2fs (attempt %d of %d)", exc, delay, attempt + 1, retries + 1)
                await asyncio.sleep(delay)
        try:
            first = await cls._await_session(wire, open_timeout, safe_url)
        except BaseException:
            wire.abort()
            raise
        log.info("Realtime session %s open at %s (%s dialect)", first.session_id, safe_url, dialect.name)
        return cls(wire, dialect, first, url=safe_url)

    @staticmethod
    async def _connect(url: str, headers: dict[str, str], dialect: Dialect, timeout: float, send_timeout: float,
                       safe_url: str, attempt: int) -> Wire:
        def fail(msg: str, status: int | None = None, retryable: bool = False) -> RealtimeConnectError:
            text = _scrub(f"Realtime connect to {safe_url} failed: {msg}", _secrets_of(url, headers))
            return RealtimeConnectError(text, url=safe_url, status=status, attempts=attempt, retryable=retryable)

        target = _without_userinfo(url)
        listener = _Listener(dialect, send_timeout)
        try:
            async with asyncio.timeout(timeout):  # picows' own timeout starts after the TCP connect
                _, wire = await ws_connect(
                    listener, target,
                    ssl_context=_tls_context() if urlsplit(target).scheme.lower() == "wss" else None,
                    websocket_handshake_timeout=timeout,
                    extra_headers={**headers, "User-Agent": "voicegw"},
                    max_frame_size=MAX_MESSAGE_BYTES, read_buffer_init_size=READ_BUFFER_BYTES,
                    max_redirects=0,
                    enable_auto_ping=True, auto_ping_idle_timeout=PING_IDLE_S, auto_ping_reply_timeout=PING_IDLE_S,
                    auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
                )
            if wire is None:  # the server hung up before answering the upgrade
                raise fail("connection closed during the handshake", retryable=True)
            return wire  # type: ignore[no-any-return]
        except BaseException as exc:
            listener.give_up()
            if isinstance(exc, WSInvalidStatusError):
                status = int(exc.response.status) if exc.response is not None else 0
                phrase = exc.response.status.phrase if exc.response is not None else ""
                body = bytes(exc.raw_body or b"").decode("utf-8", "replace").strip()[:300]
                hint = _HINTS.get(status)
                msg = f"HTTP {status} {phrase}".rstrip()
                msg += (f" ({hint})" if hint else "") + (f": {body}" if body else "")
                raise fail(msg, status, retryable=status >= 500 or status in _RETRYABLE_STATUS) from None
            if isinstance(exc, WSInvalidURL):
                raise fail("invalid URL") from None
            if isinstance(exc, (OSError, TimeoutError, WSInvalidMessageError)):
                reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                raise fail(reason, retryable=True) from None
            if isinstance(exc, WSError):  # other handshake errors: a bad accept key, a bad header
                raise fail(f"{type(exc).__name__}: {exc}") from None
            raise

    @staticmethod
    async def _await_session(wire: Wire, timeout: float, safe_url: str) -> SessionStarted:
        """Wait for session.created; what came before it (but noise) stays first in the inbox."""
        pending: list[ServerEvent] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await wire.next_event()
                    if event is None:
                        code, reason = wire.rcvd or (None, "")
                        raise RealtimeConnectError(
                            f"Realtime connection to {safe_url} closed before session.created "
                            f"(code {code}{': ' + reason if reason else ''})", url=safe_url)
                    if isinstance(event, SessionStarted):
                        wire.inbox.extendleft(reversed(pending))
                        return event
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
    def send_timeout(self) -> float:
        return self._wire.send_timeout

    @property
    def closed(self) -> bool:
        return self._wire.closed

    @property
    def close_code(self) -> int | None:
        return self._wire.close_code

    @property
    def close_reason(self) -> str | None:
        return self._wire.close_reason

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel (a model that stopped reading); 0 below the
        transport's high-water mark, where it is not worth asking the transport (once per send)."""
        wire = self._wire
        if not wire.paused or wire.transport is None or wire.gone:
            return 0
        return int(wire.transport.underlying_transport.get_write_buffer_size())

    def command_for(self, event_id: str | None) -> ClientCommand | None:
        """The recently sent command that carried this event_id (audio appends without payload)."""
        if not event_id:
            return None
        if event_id.startswith("aud_"):  # only appends are given these ids
            return _AUDIO_ELIDED
        return self._recent.get(event_id)

    # -- traffic -------------------------------------------------------------------------------

    def append_now(self, audio_b64: str) -> bool:
        """An audio append written at once, the steady state's way (`send_now` without a command
        object). False, with nothing written, when the socket is closed or backed up: then the
        writer takes the append (`send_now`), which raises or times the stall as for any command."""
        wire = self._wire
        if not wire.writable:  # backed up or closed
            return False
        self._seq += 1
        data = append_message(APPEND_HEAD, self._seq, audio_b64)  # `Dialect.append_json`, encoded
        wire.transport.send(_TEXT, data)  # type: ignore[union-attr]
        stats = self.stats
        stats.events_out += 1
        stats.bytes_out += len(data)
        return True

    def send_now(self, cmd: ClientCommand) -> None:
        """Encode and write one command at once. Raises RealtimeClosed if the socket is gone.

        Never waits: over the high-water mark the bytes stay in the transport's buffer, and if it
        does not drain within `send_timeout` the socket is aborted (`events`/`listen` then raise
        RealtimeClosed with that reason)."""
        wire = self._wire
        if wire.closed:
            raise wire.closed_error()
        self._seq += 1
        if type(cmd) is AppendAudio:
            text = self.dialect.append_json(cmd.audio_b64, self._seq)
        else:
            event_id = f"evt_{self._seq}"
            text = self.dialect.encode_json(cmd, event_id)
            recent = self._recent
            recent[event_id] = cmd
            if len(recent) > HISTORY:
                recent.popitem(last=False)
        wire.transport.send(_TEXT, text.encode())  # type: ignore[union-attr]
        if wire.paused and wire.stall is None:
            wire.stall = asyncio.get_running_loop().call_later(wire.send_timeout, wire.stall_expired)
        stats = self.stats
        stats.events_out += 1
        stats.bytes_out += len(text)

    async def send(self, cmd: ClientCommand) -> None:
        """`send_now`, after waiting (at most `send_timeout`) for a full write buffer to drain.
        Raises RealtimeClosed if the socket is gone or stuck."""
        wire = self._wire
        if wire.paused and not wire.closed:
            loop = asyncio.get_running_loop()
            if wire.resumed is None or wire.resumed.done():
                wire.resumed = loop.create_future()
            try:
                async with asyncio.timeout(wire.send_timeout):
                    await asyncio.shield(wire.resumed)
            except TimeoutError:
                wire.abort(f"send timed out after {wire.send_timeout:g}s")
                raise RealtimeClosed(None, f"send timed out after {wire.send_timeout:g}s") from None
        self.send_now(cmd)

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Decoded server events until the socket closes; abnormal closes raise RealtimeClosed."""
        wire = self._wire
        inbox = wire.inbox
        while True:
            while inbox:
                event = inbox.popleft()
                if wire.reading_paused:
                    wire.took()
                yield event
            if wire.gone:
                end = wire.ending()
                if end is not None:
                    raise end
                return
            wire.waiter = asyncio.get_running_loop().create_future()
            try:
                await wire.waiter
            finally:
                wire.waiter = None

    async def listen(self, on_event: Callable[[ServerEvent], None],
                     on_audio: Callable[[str, str, str, int], bool] | None = None) -> None:
        """Hand every event to `on_event` as it is read, in the socket's callback, until the socket
        closes: returns on a normal close, raises RealtimeClosed on an abnormal one, and raises what
        `on_event` or `on_audio` raised (later events then wait for `events` or another `listen`).

        `on_audio` takes the audio deltas in the services' compact shape (most events of a call) as
        their fields -- response_id, item_id, the base64 audio, content_index -- with no event
        object; those it returns False for reach `on_event` as `AudioDelta`s, in order."""
        wire = self._wire
        inbox = wire.inbox
        while inbox:  # what came before
            on_event(inbox.popleft())
        wire.took()
        if wire.gone:
            end = wire.ending()
            if end is not None:
                raise end
            return
        wire.listening = asyncio.get_running_loop().create_future()
        wire.handler = on_event
        wire.audio_handler = on_audio
        try:
            await wire.listening
        finally:
            wire.handler = wire.audio_handler = None
            wire.listening = None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket; bounded by `close_timeout`, then the transport is aborted."""
        wire = self._wire
        if wire.gone:
            return
        wire.send_close(code, reason)
        try:
            async with asyncio.timeout(self.close_timeout):
                await asyncio.shield(wire.gone_future)
        except TimeoutError:
            wire.abort()

    def __repr__(self) -> str:
        return f"<RealtimeConnection {self.dialect.name} {self.url} session={self.session_created.session_id}>"
