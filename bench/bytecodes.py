"""Bytecodes the gateway executes per message: `python -m bench.bytecodes [MODE]`.

One call is assembled from the gateway's real parts as in `bench.hotpath` (picows' transports
replaced by counters) and a caller frame and a model delta are played through it with
`sys.settrace` counting every bytecode executed, per function. Unlike a time, the count does not
move with the machine's load: it is the yardstick for levers that cut Python work per message
when the CPU time under load is too noisy to show them (see bench/optimisations.md). The
counters' own functions (`Transport.send`, `Transport.write`, `Transport._frame`, `Clock.time`,
`Frame.*`) are bench fakes.
"""
from __future__ import annotations

import asyncio
import collections
import sys
from types import FrameType
from typing import Any, Callable

from bench.hotpath import RESPONSE_START, Frame, assemble, frames

WARM = 20  # frames played before counting (first audio, first marks)
COUNTED = 30


def count(play: Callable[[], None], n: int) -> tuple[float, collections.Counter[str]]:
    per_function: collections.Counter[str] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            per_function[frame.f_code.co_qualname] += 1
        return tracer

    for _ in range(n):
        sys.settrace(tracer)
        try:
            play()
        finally:
            sys.settrace(None)
    return sum(per_function.values()) / n, per_function


async def main(mode: str, top: int = 15) -> None:
    sock, caller_tx, wire, model_tx, _bridge = await assemble(mode)
    for text in RESPONSE_START:
        wire.on_ws_frame(model_tx, Frame(text))
    media, deltas = frames(mode, WARM + COUNTED)
    for m, d in zip(media[:WARM], deltas[:WARM]):
        sock.on_ws_frame(caller_tx, m)
        wire.on_ws_frame(model_tx, d)
    for what, tx, messages, listener in (("caller frame", caller_tx, iter(media[WARM:]), sock),
                                         ("model delta", model_tx, iter(deltas[WARM:]), wire)):
        total, per_function = count(lambda: listener.on_ws_frame(tx, next(messages)), COUNTED)
        print(f"{mode}, {what}: {total:.1f} bytecodes")
        for name, n in per_function.most_common(top):
            print(f"  {n / COUNTED:7.1f}  {name}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "g711_ulaw"))
