"""One 1 ms slot scheduler for every real-time paced stream in the load process.

Each stream (a caller's 20 ms frames, the model peer's 20 ms deltas) owns one of 20 slots, so N
streams are spread evenly over the 20 ms period instead of all firing at once: real phone calls
are not phase-aligned, and a synchronized burst of N frames would measure queueing the bench
itself created. A late wake-up runs every slot it missed, so no stream drifts or skips a frame.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Hashable

SLOTS = 20
SLOT_S = 0.001


class Pacer:
    def __init__(self) -> None:
        self._slots: list[dict[Hashable, Callable[[], None]]] = [{} for _ in range(SLOTS)]
        self._where: dict[Hashable, int] = {}  # stream -> its slot
        self._task: asyncio.Task[None] | None = None
        self.max_lag_s = 0.0  # worst lateness of a wake-up since `reset_lag`
        self._next = 0

    def add(self, key: Hashable, tick: Callable[[], None], slot: int | None = None) -> None:
        """Call `tick` every 20 ms in `slot` (round-robin when None). `key` names the stream for
        `remove`: the stream's own object, so streams of different kinds never share a key."""
        if slot is None:
            slot, self._next = self._next, (self._next + 7) % SLOTS  # 7 is coprime with 20
        slot %= SLOTS
        self._slots[slot][key] = tick
        self._where[key] = slot

    def remove(self, key: Hashable) -> None:
        slot = self._where.pop(key, None)
        if slot is not None:
            self._slots[slot].pop(key, None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def reset_lag(self) -> None:
        self.max_lag_s = 0.0

    async def _run(self) -> None:
        epoch = time.monotonic()
        done = 0  # slots run so far
        slots = self._slots
        while True:
            now = time.monotonic()
            upto = int((now - epoch) / SLOT_S)
            if upto > done:
                lag = now - (epoch + (done + 1) * SLOT_S)
                if lag > self.max_lag_s:
                    self.max_lag_s = lag
                for s in range(done + 1, upto + 1):
                    for tick in list(slots[s % SLOTS].values()):
                        tick()
                done = upto
            await asyncio.sleep(max(0.0, epoch + (done + 1) * SLOT_S - time.monotonic()))
