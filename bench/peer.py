"""A light, protocol-faithful Realtime (GA dialect) model peer for the benchmarks.

It speaks the wire events the gateway reads (session.created/updated, response.created,
response.output_item.added, response.output_audio.delta/done, response.done,
input_audio_buffer.speech_started/stopped, conversation.item.truncated/deleted, error) and
checks `conversation.item.truncate` the way the service does: the item must be assistant audio,
and `audio_end_ms` an integer from 1 up to the audio produced for that item, else an
`invalid_value` error (counted as a rejected truncate).

It runs no recognition and no synthesis: deltas are slices of one precomputed signal, so the
peer's cost per call is a few microseconds per message and hundreds of calls fit beside the
callers on the load core. Two behaviours:

* ``stream`` (density): a response.create starts a response whose 20 ms deltas are paced in
  real time (the `Pacer`) until it is cancelled or the connection closes;
* ``bargein``: responses of 2.5-4.5 s generated at twice real time in 100 ms deltas, with
  ``speech_started`` at a random point of each one, a pause, ``speech_stopped`` and the next
  response, until the connection has done its share of barge-ins.

Every time is `time.monotonic()`, the clock the in-process callers use too.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import time
from array import array
from dataclasses import dataclass
from typing import Any

from bench.pacer import Pacer
from bench.wsraw import WsEndpoint, accept_key, frame, unmask
from voicegw.audio.g711 import pcm16_to_ulaw

_APPEND = (b'{"type":"input_audio_buffer.append"', b'{"type": "input_audio_buffer.append"')  # compact, or json.dumps
_ids = itertools.count(1)
_clock = time.monotonic


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


def speech_like(rate: int, seconds: float) -> bytes:
    """PCM16 harmonics of a gliding voice with a syllable envelope (content does not matter to
    the gateway, but silence would flatter a codec)."""
    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    f0 = 150 + 40 * np.sin(2 * np.pi * 0.9 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 190 < min(rate / 2, 3400))
    y = y * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (y / np.abs(y).max() * 12000).astype("<i2").tobytes()


def audio_chunks(audio_mode: str, chunk_ms: int, seconds: float = 1.0) -> list[str]:
    """Base64 model audio in `chunk_ms` pieces: 24 kHz PCM16, or 8 kHz mu-law for g711_ulaw."""
    if audio_mode == "pcm16":
        pcm, per_ms = speech_like(24000, seconds), 48
    else:
        pcm, per_ms = pcm16_to_ulaw(speech_like(8000, seconds)), 8
    step = per_ms * chunk_ms
    return [base64.b64encode(pcm[i:i + step]).decode() for i in range(0, len(pcm) - step + 1, step)]


@dataclass
class PeerOptions:
    audio_mode: str = "pcm16"
    behaviour: str = "stream"  # stream | bargein
    barge_ins: int = 20  # per connection, bargein behaviour
    burst: int = 1  # stream behaviour: deltas written at once when a response starts (the service
    #                 sends its first audio faster than real time), then one per `delta_ms`
    delta_ms: int = 20  # stream behaviour: the audio per delta, a multiple of the pacer's 20 ms
    seed: int = 1


@dataclass
class Truncate:
    item_id: str
    audio_end_ms: int | None  # None: the item was deleted
    produced_ms: float
    rejected: str | None  # the error message when the truncate was refused


@dataclass
class Barge:
    sent_at: float  # monotonic time speech_started was written
    item_id: str  # the assistant item being played


@dataclass
class _Response:
    rid: str
    iid: str
    conversation: bool
    target_ms: float = 0.0
    produced_ms: float = 0.0
    generating: bool = True
    handle: asyncio.TimerHandle | None = None


class PeerConnection(WsEndpoint):
    """One model session."""

    def __init__(self, server: "BenchPeer") -> None:
        super().__init__(_clock)
        self.server = server
        self.opts = server.opts
        self.key = next(_ids)
        self.append_times = array("d")  # arrival of each input_audio_buffer.append
        self.delta_times = array("d")  # write time of each audio delta
        self.barges: list[Barge] = []
        self.truncates: list[Truncate] = []
        self.produced: dict[str, float] = {}  # assistant item -> audio ms produced
        self.errors: list[str] = []
        self.finished = asyncio.get_running_loop().create_future()  # bargein: its share is done
        self._resp: _Response | None = None
        self._frames: list[bytes] = []
        self._k = 0
        self._ticks = 0  # pacer ticks of the streamed response (a delta every delta_ms / 20)
        self._rng = random.Random(self.opts.seed * 100_003 + self.key)
        self._input_ms = 0.0

    # -- WebSocket -----------------------------------------------------------------------------
    def handshake(self, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if not lines[0].startswith("GET /v1/realtime") or "sec-websocket-key" not in headers:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            self.close_transport()
            return False
        assert self.transport is not None
        self.transport.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n\r\n").encode())
        return True

    def on_open(self) -> None:
        self.event({"type": "session.created", "session": {
            "type": "realtime", "object": "realtime.session", "id": _id("sess_"), "model": "bench-peer",
            "output_modalities": ["audio"]}})
        self.server.accepted.put_nowait(self)

    def on_closed(self) -> None:
        self._stop_response()
        if not self.finished.done():
            self.finished.set_result(None)

    def event(self, body: dict[str, Any]) -> None:
        self.send_text(json.dumps({"type": body.pop("type"), "event_id": _id("event_"), **body}))

    def on_text(self, payload: bytes, key: bytes | None, now: float) -> None:
        if unmask(payload[:36], key).startswith(_APPEND):
            self.append_times.append(now)
            return
        try:
            msg = json.loads(unmask(payload, key))
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            self.errors.append("unreadable client event")
            return
        if kind == "session.update":
            self.event({"type": "session.updated", "session": msg.get("session") or {}})
        elif kind == "response.create":
            self._on_response_create(msg.get("response") or {})
        elif kind == "response.cancel":
            self._on_cancel()
        elif kind == "conversation.item.truncate":
            self._on_truncate(msg)
        elif kind == "conversation.item.delete":
            item = str(msg.get("item_id"))
            self.truncates.append(Truncate(item, None, self.produced.get(item, 0.0), None))
            self.event({"type": "conversation.item.deleted", "item_id": item})

    # -- responses -----------------------------------------------------------------------------
    def _on_response_create(self, r: dict[str, Any]) -> None:
        if self._resp is not None and self._resp.generating:
            self.event({"type": "error", "error": {
                "type": "invalid_request_error", "code": "conversation_already_has_active_response",
                "message": "Conversation already has an active response in progress"}})
            return
        self._start_response(conversation=r.get("conversation") != "none", metadata=r.get("metadata"))

    def _start_response(self, conversation: bool = True, metadata: Any = None) -> None:
        resp = _Response(_id("resp_"), _id("item_"), conversation)
        self._resp = resp
        self.produced[resp.iid] = 0.0
        self.event({"type": "response.created", "response": {
            "id": resp.rid, "object": "realtime.response", "status": "in_progress", "output": [],
            "conversation_id": "conv_bench" if conversation else None, "metadata": metadata}})
        self.event({"type": "response.output_item.added", "response_id": resp.rid, "output_index": 0, "item": {
            "id": resp.iid, "object": "realtime.item", "type": "message", "status": "in_progress",
            "role": "assistant", "content": []}})
        if self.opts.behaviour == "stream":
            self._frames = [frame(self._delta_text(resp, b64).encode()) for b64 in self.server.chunks]
            for _ in range(self.opts.burst):  # the first audio at once, the rest paced
                self._stream_tick()
            self.server.pacer.add(self, self._stream_tick)
        else:
            resp.target_ms = self._rng.uniform(2500, 4500)
            self._generate()
            barge_s = self._rng.uniform(0.2, resp.target_ms / 1000 - 0.6)
            asyncio.get_running_loop().call_later(barge_s, self._barge, resp)

    @staticmethod
    def _delta_text(resp: _Response, b64: str) -> str:
        return ('{"type":"response.output_audio.delta","event_id":"event_delta","response_id":"' + resp.rid
                + '","item_id":"' + resp.iid + '","output_index":0,"content_index":0,"delta":"' + b64 + '"}')

    def _stream_tick(self) -> None:
        """Density: one delta every `delta_ms` (20 ms: every tick), from the pacer's slot for this connection."""
        resp, transport = self._resp, self.transport
        if resp is None or transport is None or transport.is_closing():
            return
        self._ticks += 1
        if (self._ticks - 1) % self.server.ticks_per_delta:
            return
        transport.write(self._frames[self._k % len(self._frames)])
        self.delta_times.append(_clock())
        self._k += 1
        resp.produced_ms += self.server.chunk_ms
        self.produced[resp.iid] = resp.produced_ms

    def _generate(self) -> None:
        """Barge-in: one 100 ms delta every 50 ms (twice real time) until the response is complete."""
        resp = self._resp
        if resp is None or not resp.generating or not self.open:
            return
        chunks = self.server.chunks
        self.send_text(self._delta_text(resp, chunks[self._k % len(chunks)]))
        self._k += 1
        resp.produced_ms += self.server.chunk_ms
        self.produced[resp.iid] = resp.produced_ms
        if resp.produced_ms >= resp.target_ms:
            self._complete(resp, "completed")
            return
        resp.handle = asyncio.get_running_loop().call_later(self.server.chunk_ms / 2000, self._generate)

    def _complete(self, resp: _Response, status: str) -> None:
        resp.generating = False
        if resp.handle is not None:
            resp.handle.cancel()
        self.server.pacer.remove(self)
        if status == "completed":
            self.event({"type": "response.output_audio.done", "response_id": resp.rid, "item_id": resp.iid,
                        "output_index": 0, "content_index": 0})
        self.event({"type": "response.done", "response": {
            "id": resp.rid, "object": "realtime.response", "status": status, "output": [], "usage": None,
            "conversation_id": "conv_bench" if resp.conversation else None}})

    def _stop_response(self) -> None:
        if self._resp is not None:
            self._resp.generating = False
            if self._resp.handle is not None:
                self._resp.handle.cancel()
        self.server.pacer.remove(self)

    def _on_cancel(self) -> None:
        resp = self._resp
        if resp is None or not resp.generating:
            self.event({"type": "error", "error": {"type": "invalid_request_error", "code":
                        "response_cancel_not_active", "message": "Cancellation failed: no active response found"}})
            return
        self._complete(resp, "cancelled")

    def _on_truncate(self, msg: dict[str, Any]) -> None:
        item, end = str(msg.get("item_id")), msg.get("audio_end_ms")
        produced = self.produced.get(item)
        problem = None
        if produced is None:
            problem = f"Item with item_id '{item}' not found"
        elif msg.get("content_index") != 0:
            problem = "Only content index 0 of model output audio can be truncated"
        elif isinstance(end, bool) or not isinstance(end, int) or end < 1:
            problem = f"Invalid 'audio_end_ms': {end!r}"
        elif end > int(produced):
            problem = f"Audio content of {int(produced)}ms is already shorter than {end}ms"
        self.truncates.append(Truncate(item, end if isinstance(end, int) else None, produced or 0.0, problem))
        if problem:
            self.event({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value",
                                                   "message": problem, "param": "audio_end_ms"}})
            return
        self.produced[item] = float(end)  # type: ignore[arg-type]
        self.event({"type": "conversation.item.truncated", "item_id": item, "content_index": 0, "audio_end_ms": end})

    # -- barge-in behaviour --------------------------------------------------------------------
    def _barge(self, resp: _Response) -> None:
        if not self.open:
            return
        self._input_ms += 1000
        user_item = _id("item_")
        self.send_text(json.dumps({"type": "input_audio_buffer.speech_started", "event_id": _id("event_"),
                                   "audio_start_ms": int(self._input_ms), "item_id": user_item}))
        self.barges.append(Barge(_clock(), resp.iid))
        asyncio.get_running_loop().call_later(self._rng.uniform(0.3, 0.7), self._user_done, user_item)

    def _user_done(self, user_item: str) -> None:
        if not self.open:
            return
        self._input_ms += 500
        self.event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(self._input_ms),
                    "item_id": user_item})
        if len(self.barges) >= self.opts.barge_ins:
            if not self.finished.done():
                self.finished.set_result(None)
            return
        self._start_response()  # turn detection's create_response


class BenchPeer:
    """The model server: `async with BenchPeer(opts, pacer) as peer:` then `peer.url`."""

    def __init__(self, opts: PeerOptions, pacer: Pacer) -> None:
        self.opts = opts
        self.pacer = pacer
        self.chunk_ms = opts.delta_ms if opts.behaviour == "stream" else 100
        self.ticks_per_delta = max(1, self.chunk_ms // 20)
        self.chunks = audio_chunks(opts.audio_mode, self.chunk_ms)
        self.accepted: asyncio.Queue[PeerConnection] = asyncio.Queue()
        self.connections: list[PeerConnection] = []
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> "BenchPeer":
        loop = asyncio.get_running_loop()

        def make() -> PeerConnection:
            conn = PeerConnection(self)
            self.connections.append(conn)
            return conn

        self._server = await loop.create_server(make, "127.0.0.1", 0, backlog=1024)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for conn in self.connections:
                conn.close_transport()

    async def next_connection(self, timeout: float) -> PeerConnection:
        async with asyncio.timeout(timeout):
            return await self.accepted.get()
