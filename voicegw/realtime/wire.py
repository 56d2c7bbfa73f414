"""The picows side of a Realtime connection: frames in, decoded in picows' callback; flow control;
how the session ended. `voicegw.realtime.connection.RealtimeConnection` is the interface above it.

* A text frame is decoded where it is read and handed to `handler` (`RealtimeConnection.listen`)
  or queued in `inbox` (`events`); past `INBOX_HIGH` queued events the socket stops reading.
* Messages split over CONTINUATION frames are reassembled; events over `MAX_EVENT_CHARS` are
  skipped undecoded, binary frames and invalid UTF-8 or JSON are `Ignored`: a bad event costs the
  call that event, never its session.
* A CLOSE from the server is answered with its code and the socket closed; codes 1000, 1001 and
  1005 (none given) end the session normally, anything else (or no CLOSE) is `RealtimeClosed`.
* `pause_writing`/`resume_writing` track the transport's high-water mark: `paused` means the
  peer is not reading what is sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from voicegw.realtime.dialects import Dialect
from voicegw.realtime.events import AudioDelta, Ignored, ServerEvent

log = logging.getLogger("voicegw.realtime.connection")

# The largest frame accepted; a bigger one fails the connection (close 1009). A bad or oversized
# event must cost the call that event, never its session, so this is set far above any event
# worth decoding, and `MAX_EVENT_CHARS` decides which ones are skipped.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Events over this are logged and skipped without being decoded: 4 MiB of base64 is 3 MiB of
# 24 kHz PCM16, 65 s of audio in one delta (the services send ~100-200 ms per delta), and decoding
# it would hold this worker's event loop (and every call on it) for tens of milliseconds.
MAX_EVENT_CHARS = 4 * 1024 * 1024
INBOX_HIGH = 64  # events decoded and not yet read: past this the socket stops reading ...
INBOX_LOW = 16  # ... until the reader is back down to this
_OK_CLOSE = frozenset({1000, 1001, 1005})  # a normal end of the session (1005: a CLOSE without a code)
_TEXT, _BINARY, _CONT, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.CLOSE


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


class Wire(WSListener):  # type: ignore[misc]
    """The picows side of one connection: frames in (decoded at once), flow control, the end."""

    def __init__(self, dialect: Dialect, send_timeout: float, *, drop: bool = False) -> None:
        self.decode = dialect.decode
        self._delta_fields = dialect.audio_delta_fields
        self.send_timeout = send_timeout
        self.transport: WSTransport | None = None
        self.stats = ConnectionStats()
        self.inbox: deque[ServerEvent] = deque()
        self.waiter: asyncio.Future[None] | None = None  # `next_event` / `events` waiting for the inbox
        self.handler: Callable[[ServerEvent], None] | None = None  # `listen`'s function
        # `listen`'s function for audio deltas in the services' compact shape, given the delta's
        # fields (no event object); it returns False for the ones `handler` must take as events
        self.audio_handler: Callable[[str, str, str, int], bool] | None = None
        self.listening: asyncio.Future[None] | None = None  # resolves when `listen` must return
        self.reading_paused = False
        self.paused = False  # the write buffer is over its high-water mark
        # `not paused and not closed`, kept as one flag for the steady state's appends (50 a second)
        self.writable = False
        self.resumed: asyncio.Future[None] | None = None
        self.stall: asyncio.TimerHandle | None = None
        self.stalled = False
        self.rcvd: tuple[int, str] | None = None  # the server's CLOSE
        self.gone = False
        self.gone_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parts: list[bytes] = []
        self._parts_len = 0
        self._parts_text = True
        self._in_message = False
        self._stall_reason = ""
        self._drop = drop  # the connect attempt was given up before the server accepted it

    # -- picows callbacks ----------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self._drop:
            transport.disconnect(False)
            return
        self.writable = not self.paused
        # picows keeps why it dropped the connection (a protocol error) for `wait_disconnected`:
        # take it there, or asyncio reports it as never retrieved
        asyncio.ensure_future(transport.wait_disconnected()).add_done_callback(_retrieve)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if frame.fin and not self._in_message:
            if kind is _TEXT:
                if frame.payload_size > MAX_EVENT_CHARS:
                    self._deliver(self._oversized(frame.payload_size))
                    return
                try:
                    text = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self._deliver(self._counted(Ignored("<invalid utf-8>"), frame.payload_size))
                    return
                fields = self._delta_fields(text)  # most events of a call: no JSON decoding
                on_audio = self.audio_handler
                if fields is not None and on_audio is not None:
                    self._audio(on_audio, fields, len(text))
                    return
                self._deliver(self._event(text, fields))
            elif kind is _BINARY:
                self._deliver(self._counted(Ignored("<binary>"), frame.payload_size))
            elif kind is _CLOSE:
                self._on_close(transport, frame)
            return  # PING is answered by picows; PONG needs nothing
        if kind is _CONT or kind is _TEXT or kind is _BINARY:
            self._fragment(kind, frame)
        elif kind is _CLOSE:
            self._on_close(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gone = True
        self.writable = False
        self._parts.clear()
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)
        if not self.gone_future.done():
            self.gone_future.set_result(None)
        self._wake()
        listening = self.listening
        if listening is not None and not listening.done():
            end = self.ending()
            if end is None:
                listening.set_result(None)
            else:
                listening.set_exception(end)

    def pause_writing(self) -> None:
        self.paused = True
        self.writable = False

    def resume_writing(self) -> None:
        self.paused = False
        self.writable = self.transport is not None and not self.closed
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    # -- messages ------------------------------------------------------------------------------

    def _fragment(self, kind: WSMsgType, frame: WSFrame) -> None:
        """A frame of a message split over CONTINUATION frames (or a whole message arriving inside
        an unfinished one, which is then dropped). Parts past MAX_EVENT_CHARS are not kept."""
        if kind is not _CONT:
            self._parts.clear()
            self._parts_len = 0
            self._parts_text = kind is _TEXT
            self._in_message = True
        elif not self._in_message:
            return  # a continuation of nothing
        self._parts_len += frame.payload_size
        if self._parts_len <= MAX_EVENT_CHARS:
            self._parts.append(frame.get_payload_as_bytes())
        elif self._parts:
            self._parts.clear()
        if not frame.fin:
            return
        size, data = self._parts_len, b"".join(self._parts)
        self._parts.clear()
        self._parts_len = 0
        self._in_message = False
        if size > MAX_EVENT_CHARS:
            self._deliver(self._oversized(size))
        elif not self._parts_text:
            self._deliver(self._counted(Ignored("<binary>"), size))
        else:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self._deliver(self._counted(Ignored("<invalid utf-8>"), size))
                return
            self._deliver(self._decoded(text))

    def _counted(self, event: ServerEvent, size: int) -> ServerEvent:
        self.stats.events_in += 1
        self.stats.bytes_in += size
        return event

    def _oversized(self, size: int) -> ServerEvent:
        log.warning("oversized event from the Realtime model (%d chars, limit %d) skipped", size, MAX_EVENT_CHARS)
        return self._counted(Ignored("<oversized>"), size)

    def _decoded(self, text: str) -> ServerEvent:
        return self._event(text, self._delta_fields(text))

    def _event(self, text: str, delta: tuple[str, str, str, int] | None) -> ServerEvent:
        """The event `text` is, given its audio delta fields (`_delta_fields(text)`)."""
        stats = self.stats
        stats.events_in += 1
        stats.bytes_in += len(text)
        if delta is not None:
            return AudioDelta(*delta)
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            log.warning("invalid JSON from the Realtime model (%d chars) ignored", len(text))
            return Ignored("<invalid json>")
        return self.decode(msg)

    def _audio(self, on_audio: Callable[[str, str, str, int], bool], fields: tuple[str, str, str, int],
               size: int) -> None:
        """An audio delta's fields to `listen`'s audio function; as an event to `handler` if it declines."""
        stats = self.stats
        stats.events_in += 1
        stats.bytes_in += size
        try:
            if on_audio(*fields):
                return
        except Exception as exc:  # noqa: BLE001 - `listen` raises it, as for `handler`
            self._handler_failed(exc)
            return
        self._deliver(AudioDelta(*fields))

    def _deliver(self, event: ServerEvent) -> None:
        handler = self.handler
        if handler is not None:
            try:
                handler(event)
            except Exception as exc:  # noqa: BLE001 - `listen` raises it, as `async for` would
                self._handler_failed(exc)
            return
        self.inbox.append(event)
        if len(self.inbox) >= INBOX_HIGH and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            with contextlib.suppress(Exception):
                self.transport.underlying_transport.pause_reading()
        self._wake()

    def _handler_failed(self, exc: Exception) -> None:
        self.handler = self.audio_handler = None
        if self.listening is not None and not self.listening.done():
            self.listening.set_exception(exc)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def took(self) -> None:
        """The reader took events from the inbox: read the socket again once it is low."""
        if self.reading_paused and len(self.inbox) <= INBOX_LOW:
            self.reading_paused = False
            if self.transport is not None and not self.gone:
                with contextlib.suppress(Exception):
                    self.transport.underlying_transport.resume_reading()

    async def next_event(self) -> ServerEvent | None:
        """The next event, or None once the socket is gone and the inbox empty."""
        while not self.inbox:
            if self.gone:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        event = self.inbox.popleft()
        self.took()
        return event

    # -- closing -------------------------------------------------------------------------------

    def _on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        code = int(frame.get_close_code()) if frame.payload_size >= 2 else 1005
        try:
            reason = frame.get_close_reason() if frame.payload_size > 2 else ""
        except UnicodeDecodeError:
            reason = ""
        self.rcvd = (code, reason)
        self.writable = False
        if not transport.is_close_frame_sent:  # answer with its code (1000 for a CLOSE that had none)
            self.send_close(1000 if code == 1005 else code, "")
        transport.disconnect()

    def send_close(self, code: int, reason: str) -> None:
        self.writable = False
        if self.transport is not None and not self.transport.is_close_frame_sent and not self.gone:
            with contextlib.suppress(Exception):
                self.transport.send_close(WSCloseCode(code), reason.encode()[:120])

    def abort(self, why: str | None = None) -> None:
        """Drop the connection without a closing handshake; `why`: the peer stopped reading."""
        self.writable = False
        if why is not None and not self.gone:
            self.stalled = True
            self._stall_reason = why
        if self.transport is not None:
            self.transport.disconnect(False)

    def stall_expired(self) -> None:
        self.stall = None
        if self.paused and not self.gone:
            log.warning("Realtime model stopped reading: nothing sent for %.1fs, closing", self.send_timeout)
            self.abort(f"send timed out after {self.send_timeout:g}s")

    def ending(self) -> RealtimeClosed | None:
        """How the session ended (None: normally); meaningful once `gone`."""
        if self.stalled:
            return RealtimeClosed(None, self._stall_reason)
        if self.rcvd is not None:
            code, reason = self.rcvd
            return None if code in _OK_CLOSE else RealtimeClosed(code, reason)
        ours = self.transport.close_handshake if self.transport is not None else None
        reason = ours.sent.reason if ours is not None and ours.sent is not None else ""
        return RealtimeClosed(None, reason or "connection lost")  # e.g. no pong, a protocol error

    def closed_error(self) -> RealtimeClosed:
        """What a send on the closed socket raises."""
        if self.stalled:
            return RealtimeClosed(None, self._stall_reason)
        return RealtimeClosed(self.close_code, self.close_reason or "already closed")

    @property
    def closed(self) -> bool:
        return self.gone or self.stalled or self.rcvd is not None or (
            self.transport is not None and self.transport.is_close_frame_sent)

    @property
    def close_code(self) -> int | None:
        if self.rcvd is not None:
            return self.rcvd[0]
        return 1006 if self.gone else None

    @property
    def close_reason(self) -> str | None:
        if self.rcvd is not None:
            return self.rcvd[1]
        return "" if self.gone else None


def _retrieve(task: "asyncio.Future[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("Realtime socket dropped: %s", task.exception())
