"""The media stream without the ASGI layer: `/twilio/media` served by picows on uvicorn's socket.

uvicorn parses the HTTP request and, for a WebSocket upgrade, hands the connection to its `ws`
protocol class. `MediaUpgrade` is that class: for `/twilio/media` it gives the socket to a picows
protocol (Cython WebSocket framing, frames delivered by callback); any other WebSocket path goes to
uvicorn's own implementation, unchanged.

What it saves, per 20 ms frame of every call: the ASGI message dicts, the receive queue and the task
switch of `await ws.receive()` on the way in, and on the way out the writer task's wake-up and
`await ws.send_text()` (frames to the caller are written at once: `MediaSocket.send_now`). A frame
from Twilio is parsed and handed to the call core inside picows' callback, synchronously.

The stream's start (token, relay, admission) still runs as the endpoint coroutine of
voicegw.telephony.endpoints, reading from a small queue; once the call is attached the queue is
bypassed (`PicoMediaSocket.dispatch_to`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest
from picows.picows import WSAutoPingStrategy, WSProtocol
from uvicorn.config import WS_PROTOCOLS
from uvicorn.importer import import_from_string

from voicegw.compiled import fastwire
from voicegw.telephony import base as tel
from voicegw.telephony.handoff import hand_over, hinted_worker

if TYPE_CHECKING:
    from voicegw.call.bridge import CallBridge
    from voicegw.gateway import Gateway

log = logging.getLogger("voicegw.telephony")
_PICOWS_LOG = logging.getLogger("picows.media")  # its per-connection lines, quiet like picows' own

MEDIA_PATH = b"/twilio/media"
PENDING_MAX = 64  # frames queued before the call is attached (connected, start, a few media)
HANDSHAKE_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 256 * 1024
BURST_FRAMES = 8  # frames handled per loop turn; Twilio sends one per 20 ms, so only floods wait
BACKLOG_PAUSE = 400  # frames waiting: stop reading the socket until the backlog is a quarter of it
READ_BUFFER_BYTES = 4096  # Twilio's frames are ~0.3 KB: picows' 16 KiB default is memory per call


_TEXT, _BINARY, _CONT, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.CLOSE


def _binary(data: bytes | None) -> tel.StreamEvent:
    return tel.BadFrame(error=f"binary frame of {len(data or b'')} bytes (Twilio sends text frames)")


class StreamClosed(Exception):
    pass


class PicoMediaSocket(WSListener):  # type: ignore[misc]
    """One media stream: picows' listener, and the socket the endpoint and the call use."""

    def __init__(self, app: Any, request: WSUpgradeRequest, server_state: Any) -> None:
        self.app = app
        self.headers = {k.lower(): v for k, v in request.headers.items()} if request.headers else {}
        self._server_state = server_state
        self.transport: WSTransport | None = None
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue(PENDING_MAX)
        self._parts: list[bytes] = []
        self._call: CallBridge | None = None
        self._parse: Callable[[str], tel.StreamEvent] = tel.BadFrame  # the codec's, once a call is attached
        # the steady state's way for caller audio, once a call is attached (CallBridge.caller_lane):
        # the codec's exact media shape gives the payload, and the call takes it or declines it
        self._media_payload: Callable[[str], str | None] | None = None
        self._lane: Callable[[str], bool] | None = None
        self._gw: Gateway | None = None
        self._done: asyncio.Future[str] | None = None
        # `asyncio.get_running_loop()` costs a getpid() system call on every use (CPython's fork
        # check): the loop is looked up once, and frames are counted rather than timestamped
        self._loop = asyncio.get_running_loop()
        self._frames = 0  # frames handled; the silence guard notices when it stops moving
        self._frames_seen = 0
        self._last_frame = 0.0  # when the guard last saw the count move
        self._guard: asyncio.TimerHandle | None = None
        self._frame_timeout_s = 30.0
        self.closed = False
        # fairness: a socket gets BURST_FRAMES frames handled at once per millisecond of loop time
        # (one read can hold hundreds: a flood must not stall the other calls on this loop); the
        # rest wait in the backlog, BURST_FRAMES of it handled per loop turn
        self._turn = -1
        self._turn_frames = 0
        self._draining = False  # a `_next_turn` is scheduled
        self._write_paused = False  # the transport's write buffer is over its high-water mark
        self._backlog: deque[tuple[str | None, bytes | None]] = deque()
        self._paused = False

    # ---------------------------------------------------------------------- picows callbacks
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._server_state.connections.add(self)
        from voicegw.telephony.endpoints import media_stream

        task = asyncio.ensure_future(media_stream(self))  # type: ignore[arg-type]
        task.add_done_callback(_log_crash)

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        kind = frame.msg_type
        if kind is _TEXT and frame.fin and not self._parts:  # every frame Twilio sends
            self._message(frame.get_payload_as_utf8_text(), None)
            return
        if kind is _TEXT or kind is _BINARY or kind is _CONT:
            if not frame.fin or self._parts:
                self._parts.append(frame.get_payload_as_bytes())
                if sum(len(p) for p in self._parts) > MAX_MESSAGE_BYTES:
                    self._parts.clear()
                    self.close_now(1009, "message too big")
                    return
                if not frame.fin:
                    return
                data = b"".join(self._parts)
                self._parts.clear()
                self._message(None if kind is _BINARY else data.decode("utf-8", "replace"), data)
                return
            self._message(None, frame.get_payload_as_bytes())
        elif kind is _CLOSE:
            with contextlib.suppress(Exception):
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        self._server_state.connections.discard(self)
        if self._guard is not None:
            self._guard.cancel()
        if self._call is not None:
            if not self._backlog:  # else: once what came before the close has been handled
                self._lost()
        else:
            with contextlib.suppress(asyncio.QueueFull):
                self._pending.put_nowait({"type": "websocket.disconnect", "code": 1006})

    # ------------------------------------------------------------------------- the hot path
    def _message(self, text: str | None, data: bytes | None) -> None:
        call = self._call
        if call is None:  # still starting: the endpoint reads these
            message = {"type": "websocket.receive", "text": text} if text is not None else \
                {"type": "websocket.receive", "bytes": data}
            try:
                self._pending.put_nowait(message)
            except asyncio.QueueFull:
                self.close_now(1008, "no stream start")
            return
        # the loop's clock as the turn: uvloop's is read once per loop iteration (no system call,
        # no callback scheduled per frame); a millisecond is 50 calls' worth of frames at a time
        turn = int(self._loop.time() * 1000.0)
        if turn != self._turn:
            self._turn = turn
            self._turn_frames = 0
        if self._backlog or self._turn_frames >= BURST_FRAMES:
            self._backlog.append((text, data))  # a burst: the rest wait for their turn
            if not self._draining:
                self._draining = True
                self._loop.call_soon(self._next_turn)
            if len(self._backlog) > BACKLOG_PAUSE and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.underlying_transport.pause_reading()
            return
        self._turn_frames += 1
        self._handle(call, text, data)

    def _next_turn(self) -> None:
        """A loop turn of the backlog: up to BURST_FRAMES of what waited, then the other calls get theirs."""
        call, backlog = self._call, self._backlog
        if call is None:
            backlog.clear()
            self._draining = False
            return
        handled = 0
        while backlog and handled < BURST_FRAMES:
            handled += 1
            text, data = backlog.popleft()
            self._handle(call, text, data)
        if backlog:
            self._loop.call_soon(self._next_turn)
        else:
            self._draining = False
            if self.closed:
                self._lost()
        if self._paused and len(backlog) < BACKLOG_PAUSE // 4 and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.underlying_transport.resume_reading()

    def _lost(self) -> None:
        if self._call is not None and self._done is not None and not self._done.done():
            self._call.telephony_lost("caller_hangup")
        self._finish("disconnected")

    def _handle(self, call: CallBridge, text: str | None, data: bytes | None) -> None:
        self._frames += 1
        lane = self._lane
        if lane is not None and text is not None:  # caller audio in the call's steady state
            payload = self._media_payload(text)  # type: ignore[misc]  # set with the lane
            if payload is not None and lane(payload):
                return
        event = self._parse(text) if text is not None else _binary(data)
        call.on_frame(event)
        if type(event) is tel.StreamStopped:
            self._finish("stopped")

    def dispatch_to(self, call: CallBridge, gw: Gateway, frame_timeout_s: float) -> asyncio.Future[str]:
        """From now on every frame goes straight to `call`; the future resolves when the stream
        stops, the socket closes, or no frame came for `frame_timeout_s`."""
        loop = self._loop
        self._gw, self._call = gw, call
        self._parse = gw.codec.parse
        self._media_payload = getattr(gw.codec, "media_payload", None)
        self._lane = call.caller_lane() if self._media_payload is not None else None
        self._done = loop.create_future()
        self._frame_timeout_s = frame_timeout_s
        self._last_frame = loop.time()
        if self.closed:
            call.telephony_lost("caller_hangup")
            self._finish("disconnected")
            return self._done
        while not self._pending.empty():  # frames that came between `start` and now
            message = self._pending.get_nowait()
            if message["type"] == "websocket.disconnect":
                call.telephony_lost("caller_hangup")
                self._finish("disconnected")
                return self._done
            self._message(message.get("text"), message.get("bytes"))
        self._guard = loop.call_later(1.0, self._check_silence)
        return self._done

    def _check_silence(self) -> None:
        if self._done is None or self._done.done():
            return
        loop = self._loop
        now = loop.time()
        if self._frames != self._frames_seen:  # frames came since the last look: not silent
            self._frames_seen, self._last_frame = self._frames, now
        elif now - self._last_frame >= self._frame_timeout_s:
            if self._call is not None:
                self._call.telephony_lost("telephony_timeout")
            self._finish("timeout")
            return
        self._guard = loop.call_later(1.0, self._check_silence)

    def _finish(self, why: str) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(why)
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    # -------------------------------------------------- what the endpoint and the call use
    async def accept(self) -> None:
        """picows answered the upgrade already."""

    async def receive(self) -> dict[str, Any]:
        return await self._pending.get()

    def send_now(self, text: str) -> None:
        """Write a frame to the caller at once (the transport buffers; never waits)."""
        if self.closed and self._backlog:
            return  # gone, but frames from before the close are still being handled: they end the call
        if self.closed or self.transport is None:
            raise StreamClosed("the media stream is closed")
        self.transport.send(WSMsgType.TEXT, text.encode())

    def send_many(self, texts: list[str]) -> None:
        """`send_now` for several frames in one write: one system call and one TCP segment (on
        loopback or a LAN the send does the receiving side's work too, so it is per write, not per
        byte). picows writes a frame at a time, so the frames are put together here (`text_frames`)
        and written on the TCP transport, which keeps them in order with picows' writes."""
        if self.closed and self._backlog:
            return
        transport = self.transport
        if self.closed or transport is None:
            raise StreamClosed("the media stream is closed")
        if transport.is_close_frame_sent:
            return  # as picows' `send` after a close: nothing more goes out
        transport.underlying_transport.write(text_frames(texts))

    async def send_text(self, text: str) -> None:
        self.send_now(text)

    async def send_bytes(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise StreamClosed("the media stream is closed")
        self.transport.send(WSMsgType.BINARY, data)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel (a caller that stopped reading); 0 below the
        transport's high-water mark, where it is not worth asking the transport (once per send)."""
        if not self._write_paused or self.transport is None:
            return 0
        return int(self.transport.underlying_transport.get_write_buffer_size())

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False

    def close_now(self, code: int = 1000, reason: str = "") -> None:
        if self.transport is None or self.closed:
            return
        with contextlib.suppress(Exception):
            self.transport.send_close(code, reason.encode()[:120])
        self.transport.disconnect()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.close_now(code, reason or "")

    def shutdown(self) -> None:
        """uvicorn is shutting down (after the gateway's drain): service restart."""
        self.close_now(1012, "server restart")


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("media stream endpoint failed", exc_info=task.exception())


class MediaUpgrade(asyncio.Protocol):
    """uvicorn's `ws` protocol class: `/twilio/media` to picows, any other path to uvicorn's own.

    A stream URL may name the worker that owns its call (`/twilio/media/<worker>`, see
    voicegw.telephony.handoff): one named for another worker of this replica is passed to it
    before it opens. `handed` is the upgrade request of a connection another worker passed here,
    served as if this process had read it."""

    def __init__(self, config: Any, server_state: Any, app_state: Any, on_connection_lost: Any = None,
                 handed: bytes | None = None) -> None:
        self.config, self.server_state, self.app_state = config, server_state, app_state
        self.on_connection_lost = on_connection_lost
        self.transport: asyncio.Transport | None = None
        self.inner: Any = None
        self._handed = handed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        if self._handed is not None:  # before anything the socket itself delivers
            self.data_received(self._handed)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            _feed(self.inner, data)
            return
        path = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b""
        app = getattr(self.config, "app", None)
        gw = getattr(getattr(app, "state", None), "gateway", None)
        base = path.split(b"?", 1)[0]
        owner = hinted_worker(base, MEDIA_PATH)
        tcp = _is_tcp(self.transport)
        if tcp and self.transport is not None and owner is not None and gw is not None and self._handed is None \
                and gw.peers_dir is not None and owner != gw.worker and hand_over(self.transport, data, gw.peers_dir, owner):
            gw.metrics.stream_handed_over()
            self.transport.close()  # our copy of the socket: the connection lives on in the owner
            return
        if (base == MEDIA_PATH or owner is not None) and gw is not None and tcp:
            self.inner = WSProtocol(
                None, None, False, lambda request: PicoMediaSocket(app, request, self.server_state),
                _PICOWS_LOG, True, HANDSHAKE_TIMEOUT_S, False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
                MAX_MESSAGE_BYTES, None, READ_BUFFER_BYTES)
        else:
            ws = self.config.ws
            cls = import_from_string(WS_PROTOCOLS[ws]) if isinstance(ws, str) and ws in WS_PROTOCOLS else \
                import_from_string(WS_PROTOCOLS["auto"])
            self.inner = cls(config=self.config, server_state=self.server_state, app_state=self.app_state)
        self.inner.connection_made(self.transport)
        _feed(self.inner, data)
        # uvicorn sets this object as the transport's protocol when this call returns: hand over next
        asyncio.get_running_loop().call_soon(self._hand_over)

    def _hand_over(self) -> None:
        if self.transport is not None and self.inner is not None and not self.transport.is_closing():
            self.transport.set_protocol(self.inner)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


_SHORT, _MEDIUM, _LONG = struct.Struct("!BB"), struct.Struct("!BBH"), struct.Struct("!BBQ")


def text_frames_py(texts: list[str]) -> bytes:
    """Server-to-client WebSocket text frames, one per text, back to back (RFC 6455 5.2: FIN and
    opcode 1, no mask, the length in 7, 7+16 or 7+64 bits). websockets' `Frame.serialize` writes
    the same bytes (tests/test_fastmedia.py) at ten times the Python per frame. `text_frames` is
    this, in C where it was built (voicegw/_fastwire.c)."""
    out = bytearray()
    for text in texts:
        data = text.encode()
        n = len(data)
        out += _SHORT.pack(0x81, n) if n < 126 else _MEDIUM.pack(0x81, 126, n) if n < 65536 else _LONG.pack(0x81, 127, n)
        out += data
    return bytes(out)


text_frames: Callable[[list[str]], bytes] = text_frames_py if fastwire is None else fastwire.text_frames


def _is_tcp(transport: Any) -> bool:
    """picows tunes TCP sockets; a stream relayed from another worker arrives on a Unix socket and
    is served by uvicorn's implementation."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def _feed(protocol: Any, data: bytes) -> None:
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = protocol.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        protocol.data_received(data)
