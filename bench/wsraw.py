"""Just enough RFC 6455 for the load generator: handshakes and text frames over asyncio Protocols.

Why not the websockets library here: the load side must carry hundreds of calls (about 300
WebSocket messages per call per second, both the callers' and the model peer's) on one core
while leaving that core mostly idle, so its own queueing does not show up as gateway latency.
A Protocol that writes prebuilt frames and slices received ones costs a few microseconds per
message. Client frames are masked with a fresh random key, as the RFC requires (the C masking
routine comes from websockets.speedups); pings are answered, close frames are echoed.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from typing import Callable

from websockets.speedups import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_urandom = os.urandom
_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(payload: bytes, opcode: int = OP_TEXT, masked: bool = False) -> bytes:
    """One final frame; masked (client to server) with a random key."""
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes((0x80 | opcode, mbit | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, mbit | 126)) + _pack_h(n)
    else:
        head = bytes((0x80 | opcode, mbit | 127)) + _pack_q(n)
    if not masked:
        return head + payload
    key = _urandom(4)
    return head + key + apply_mask(payload, key)


class FrameReader:
    """Splits a byte stream into (opcode, payload, mask key or None) messages; joins fragments."""

    __slots__ = ("_buf", "_frag_op", "_frag")

    def __init__(self) -> None:
        self._buf = b""
        self._frag_op = 0
        self._frag: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[int, bytes, bytes | None]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes, bytes | None]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            i = pos + 2
            if n == 126:
                if end - i < 2:
                    break
                n = (buf[i] << 8) | buf[i + 1]
                i += 2
            elif n == 127:
                if end - i < 8:
                    break
                n = int.from_bytes(buf[i:i + 8], "big")
                i += 8
            key = None
            if b1 & 0x80:
                if end - i < 4:
                    break
                key = buf[i:i + 4]
                i += 4
            if end - i < n:
                break
            payload = buf[i:i + n]
            pos = i + n
            op = b0 & 0x0F
            if not b0 & 0x80 or (op == OP_CONT and self._frag):  # fragmented message
                if key is not None:
                    payload, key = apply_mask(payload, key), None
                if op != OP_CONT:
                    self._frag_op = op
                self._frag.append(payload)
                if b0 & 0x80:
                    out.append((self._frag_op, b"".join(self._frag), None))
                    self._frag = []
                continue
            out.append((op, payload, key))
        self._buf = buf[pos:] if pos < end else b""
        return out


def unmask(payload: bytes, key: bytes | None) -> bytes:
    return payload if key is None else apply_mask(payload, key)


def split_http(buf: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest) once a full HTTP head has arrived."""
    i = buf.find(b"\r\n\r\n")
    return None if i < 0 else (buf[:i], buf[i + 4:])


class WsEndpoint(asyncio.Protocol):
    """Common base: a transport, a frame reader, pings answered, close handled.

    Subclasses implement `handshake(head)`, `on_open()` and `on_text(payload, key, now)`; `now` is the monotonic time
    the bytes were handed over by the event loop, shared by every message in that read.
    """

    masked = False  # True for client endpoints

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.open = False
        self.closed = asyncio.get_running_loop().create_future()
        self._head = b""

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = self.clock()
        if not self.open:
            got = split_http(self._head + data)
            if got is None:
                self._head += data
                return
            self._head = b""
            head, data = got
            if not self.handshake(head):
                return
            self.open = True
            self.on_open()
            if not data:
                return
        for op, payload, key in self.reader.feed(data):
            if op == OP_TEXT:
                self.on_text(payload, key, now)
            elif op == OP_PING:
                self.send_raw(unmask(payload, key), OP_PONG)
            elif op == OP_CLOSE:
                self.send_raw(unmask(payload, key)[:2], OP_CLOSE)
                self.close_transport()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_closed()

    # -- to implement --------------------------------------------------------------------------
    def handshake(self, head: bytes) -> bool:
        """Check (and for a server, answer) the HTTP upgrade; False closes the connection."""
        self.close_transport()
        return False

    def on_open(self) -> None:
        """The WebSocket is open."""

    def on_text(self, payload: bytes, key: bytes | None, now: float) -> None:
        """A text message (still masked when `key` is not None)."""

    def on_closed(self) -> None:
        """The TCP connection is gone."""

    # -- sending -------------------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(text.encode(), OP_TEXT, self.masked))

    def send_raw(self, payload: bytes, opcode: int) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(payload, opcode, self.masked))

    def close(self, code: int = 1000) -> None:
        """Send a close frame; the peer's echo (or our timeout) ends the connection."""
        self.send_raw(_pack_h(code), OP_CLOSE)

    def close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
