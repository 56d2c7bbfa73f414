"""The Python cost of one frame each way, without sockets: `python -m bench.hotpath [MODE [FRAMES [CALLS]]]`.

One call is assembled in this process from the gateway's real parts -- the media socket's frame
callback (`voicegw.telephony.fastmedia.PicoMediaSocket`), the Twilio codec, the call bridge and
core, the model link's frame callback and connection (`voicegw.realtime.wire`, `connection`) --
with picows' transports replaced by counters. It then plays frames through them the way the
density benchmark does (a 20 ms caller frame in, a 20 ms model delta in, a mark acknowledged
for every mark the gateway sent) and reports the time per frame pair: what the gateway's Python
costs per 20 ms of full-duplex audio, with no event loop, framing or system call in it.

On a shared machine the CPU time of a loaded gateway moves by 10-20% between runs; this number
moves by about 1%, which makes it the yardstick for levers that take a few microseconds off the
path (compare two trees with `python -m bench.hotpath` run in each). The best of `REPEATS` runs
is reported.
"""
from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

from picows import WSMsgType

from bench.peer import audio_chunks
from voicegw.call.bridge import CallBridge
from voicegw.call.core import CoreOptions
from voicegw.calllog.entries import CallInfo
from voicegw.metrics import Metrics
from voicegw.realtime import events as ev
from voicegw.realtime.connection import RealtimeConnection
from voicegw.realtime.dialects import GA
from voicegw.realtime.wire import Wire
from voicegw.telephony import fastmedia
from voicegw.telephony.twilio import TwilioMediaCodec

REPEATS = 7
# a response starts on each call's model link before its audio deltas come
RESPONSE_START = (
    '{"type":"response.created","event_id":"e","response":{"id":"resp_1","object":"realtime.response",'
    '"status":"in_progress","output":[]}}',
    '{"type":"response.output_item.added","event_id":"e","response_id":"resp_1","output_index":0,"item":{'
    '"id":"item_1","object":"realtime.item","type":"message","status":"in_progress","role":"assistant",'
    '"content":[]}}')
SID = "MZ" + "0" * 32


class Transport:
    """picows' WSTransport, counting what would be written; remembers the last mark sent."""

    is_close_frame_sent = False

    def __init__(self) -> None:
        self.underlying_transport = self
        self.frames = 0
        self.writes = 0  # system calls the writes would have been
        self.marks: list[str] = []

    def send(self, kind: Any, data: bytes) -> None:
        self.writes += 1
        self._frame(data)

    def write(self, data: bytes) -> None:
        """The TCP transport's write: several unmasked frames at once (`PicoMediaSocket.send_many`)."""
        self.writes += 1
        i = 0
        while i < len(data):
            n, i = data[i + 1] & 0x7F, i + 2
            if n >= 126:
                width = 2 if n == 126 else 8
                n, i = int.from_bytes(data[i:i + width], "big"), i + width
            self._frame(data[i:i + n])
            i += n

    def _frame(self, data: bytes) -> None:
        self.frames += 1
        if data.startswith(b'{"event":"mark"'):
            self.marks.append(data.split(b'"name":"')[1].split(b'"')[0].decode())

    def get_write_buffer_size(self) -> int:
        return 0


class Frame:
    msg_type = WSMsgType.TEXT
    fin = True

    def __init__(self, text: str) -> None:
        self.text = text
        self.payload_size = len(text)

    def get_payload_as_utf8_text(self) -> str:
        return self.text


class Clock:
    """The media socket's loop, as far as the steady state uses it: each frame a new turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.now = 0.0

    def time(self) -> float:
        self.now += 0.01
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


class _Quiet:
    """The call log, tools and hooks: nothing of them is on the steady-state path."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


async def assemble(mode: str) -> tuple[Any, Transport, Wire, Transport, CallBridge]:
    model_tx, caller_tx = Transport(), Transport()
    wire = Wire(GA, 5.0)
    wire.transport = model_tx  # type: ignore[assignment]
    wire.writable = True  # what `on_ws_connected` sets
    conn = RealtimeConnection(wire, GA, ev.SessionStarted("sess_1"), url="ws://bench")

    async def open_model(timeout_s: float | None) -> RealtimeConnection:
        return conn

    opts = CoreOptions(session_config=ev.SessionConfig(instructions="A benchmark agent.", audio_format=mode),
                       audio_mode=mode)
    quiet: Any = _Quiet()
    call = CallBridge(CallInfo("CA" + "0" * 32), "bench", opts, TwilioMediaCodec(), quiet, quiet, quiet,
                      open_model, latency=Metrics())
    call.begin()
    for _ in range(20):  # the model link opens (a task)
        await asyncio.sleep(0)
    sock = fastmedia.PicoMediaSocket(None, type("Request", (), {"headers": {}})(), type("S", (), {"connections": set()})())
    sock.transport = caller_tx  # type: ignore[assignment]
    sock._loop = Clock(asyncio.get_running_loop())  # type: ignore[assignment]
    gw: Any = type("Gw", (), {"codec": TwilioMediaCodec()})()
    from voicegw.telephony import base as tel

    await call.attach(sock, tel.StreamStarted(stream_sid=SID, call_sid=call.info.call_sid))
    sock.dispatch_to(call, gw, 30.0)
    return sock, caller_tx, wire, model_tx, call


def frames(mode: str, n: int) -> tuple[list[Frame], list[Frame]]:
    caller = audio_chunks("g711_ulaw", 20)
    model = audio_chunks(mode, 20)
    media = [Frame('{"event":"media","sequenceNumber":"' + str(i + 2) + '","media":{"track":"inbound","chunk":"'
                   + str(i + 1) + '","timestamp":"' + str(20 * i) + '","payload":"' + caller[i % len(caller)]
                   + '"},"streamSid":"' + SID + '"}') for i in range(n)]
    deltas = [Frame('{"type":"response.output_audio.delta","event_id":"event_' + str(i) + '","response_id":"resp_1",'
                    '"item_id":"item_1","output_index":0,"content_index":0,"delta":"' + model[i % len(model)] + '"}')
              for i in range(n)]
    return media, deltas


async def measure(mode: str, n: int, calls: int) -> float:
    """Seconds per frame pair, `n` frame pairs spread over `calls` calls taking turns (as on a
    loaded gateway, where each call's state is touched once per 20 ms between the others')."""
    assembled = [await assemble(mode) for _ in range(calls)]
    for _, _, wire, model_tx, _ in assembled:
        for text in RESPONSE_START:
            wire.on_ws_frame(model_tx, Frame(text))
    per_call = n // calls
    media, deltas = frames(mode, per_call)
    ack_head = '{"event":"mark","sequenceNumber":"1","streamSid":"' + SID + '","mark":{"name":"'
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for i in range(per_call):
            m, d = media[i], deltas[i]
            for sock, caller_tx, wire, model_tx, _ in assembled:
                sock.on_ws_frame(caller_tx, m)
                wire.on_ws_frame(model_tx, d)
                if caller_tx.marks:  # the caller played a chunk: its mark comes back
                    sock.on_ws_frame(caller_tx, Frame(ack_head + caller_tx.marks.pop(0) + '"}}'))
            await asyncio.sleep(0)  # a loop turn per 20 ms of every call: what the frames scheduled runs
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    for _, caller_tx, _, model_tx, call in assembled:
        if caller_tx.frames < per_call or model_tx.frames < per_call:
            raise RuntimeError(f"a call did not forward every frame: {caller_tx.frames}, {model_tx.frames} "
                               f"for {per_call} each way")
        call.telephony_lost("bench over")
    return elapsed / (per_call * calls)


async def main(mode: str, n: int, calls: int) -> None:
    best = min([await measure(mode, n, calls) for _ in range(REPEATS)])
    print(f"{mode}, {calls} calls taking turns: {best * 1e6:.2f} us of Python per frame pair (a caller frame "
          f"and a model delta, marks included), best of {REPEATS} runs of {n}")


if __name__ == "__main__":
    args = sys.argv[1:] + [""] * 3
    asyncio.run(main(args[0] or "g711_ulaw", int(args[1] or 20000), int(args[2] or 1)))
