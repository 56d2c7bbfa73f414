"""The steady-state lanes on and off, in one process: `python -m bench.lanes [MODE [CALLS]]`.

Calls are assembled as `bench.hotpath` does (the gateway's real parts, picows' transports replaced
by counters), then each lever is switched off and on in alternating runs over the same calls, so
a drifting machine hits both alike; the minimum and median of the runs are printed, in µs of
Python per message:

- caller frames: the lane (`CallBridge.caller_lane`) against `on_frame`'s way (event and action
  objects), and the lane's append written by the connection (`append_now`) against the writer;
- model audio deltas, with the marks that follow: the lane (`listen`'s `on_audio`) against the
  `AudioDelta` event's way.
"""
from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from typing import Any, Callable

from bench.hotpath import RESPONSE_START, SID, Frame, assemble, frames

RUNS = 11


async def compare(calls: list[Any], play: Callable[[], int], switch: Callable[[bool], None]) -> dict[bool, list[float]]:
    """µs per message of `play()` (which returns how many it played) with the lever on and off."""
    out: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(RUNS):
        for on in (True, False):
            switch(on)
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                n = play()
                out[on].append((time.perf_counter() - t0) / n * 1e6)
            finally:
                gc.enable()
            await asyncio.sleep(0)  # what the messages scheduled runs between runs, not inside them
    switch(True)
    return out


def show(what: str, on: str, off: str, res: dict[bool, list[float]]) -> None:
    for flag, name in ((True, on), (False, off)):
        print(f"{what}, {name}: min {min(res[flag]):.2f}, median {statistics.median(res[flag]):.2f} µs")


async def main(mode: str, ncalls: int, per_call: int = 40) -> None:
    calls = [await assemble(mode) for _ in range(ncalls)]
    media, deltas = frames(mode, per_call)
    for _, _, wire, model_tx, _ in calls:
        for text in RESPONSE_START:
            wire.on_ws_frame(model_tx, Frame(text))

    def caller_frames() -> int:
        sent = sum(c[3].frames for c in calls)
        for m in media:
            for sock, caller_tx, *_ in calls:
                sock.on_ws_frame(caller_tx, m)
        n = len(media) * len(calls)
        if sum(c[3].frames for c in calls) - sent < n:
            raise RuntimeError("a call did not forward every caller frame: the runs would measure something else")
        return n

    lanes = [c[0]._lane for c in calls]
    live = [c[4]._links[c[4].core.link.live] for c in calls]
    appends = [link.append for link in live]

    def lane(on: bool) -> None:
        for c, fn in zip(calls, lanes):
            c[0]._lane = fn if on else None

    def append_now(on: bool) -> None:
        for link, fn in zip(live, appends):
            link.append = fn if on else None

    show(f"{mode}, caller frame", "lane", "event and actions", await compare(calls, caller_frames, lane))
    show(f"{mode}, caller frame in the lane", "append_now", "writer", await compare(calls, caller_frames, append_now))

    ack_head = '{"event":"mark","sequenceNumber":"1","streamSid":"' + SID + '","mark":{"name":"'

    def model_deltas() -> int:
        sent = sum(c[1].frames for c in calls)
        for d in deltas:
            for sock, caller_tx, wire, model_tx, _ in calls:
                wire.on_ws_frame(model_tx, d)
                if caller_tx.marks:  # the caller played a chunk: its mark comes back
                    sock.on_ws_frame(caller_tx, Frame(ack_head + caller_tx.marks.pop(0) + '"}}'))
        n = len(deltas) * len(calls)
        if sum(c[1].frames for c in calls) - sent < n:
            raise RuntimeError("a call did not forward every delta: the runs would measure something else")
        return n

    handlers = [c[2].audio_handler for c in calls]

    def audio_lane(on: bool) -> None:
        for c, fn in zip(calls, handlers):
            c[2].audio_handler = fn if on else None

    show(f"{mode}, model delta and its marks", "lane", "event", await compare(calls, model_deltas, audio_lane))
    for *_, call in calls:
        call.telephony_lost("bench over")


if __name__ == "__main__":
    args = sys.argv[1:] + [""] * 2
    asyncio.run(main(args[0] or "g711_ulaw", int(args[1] or 50)))
