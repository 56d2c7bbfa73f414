"""One 20 ms clock shared by every simulated call in a process.

A load run holds hundreds of calls; one timer waking them all per frame costs far less than one
timer per call, and frame times are derived from the monotonic clock (frame n is due at
``epoch + n * period``), so a late wake-up is caught up, never accumulated as drift.
"""
from __future__ import annotations

import asyncio
import time


class FrameClock:
    """Ticks every ``period_s`` while anyone waits on it; idle, it stops its task."""

    def __init__(self, period_s: float = 0.02, epoch: float | None = None) -> None:
        """`epoch`: the monotonic time of tick 0 (now by default). Clocks whose epochs differ by a
        fraction of the period tick in different phases, as calls that started at different times."""
        self.period_s = period_s
        self._epoch = time.monotonic() if epoch is None else epoch
        self._waiters = 0
        self._tick: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def now() -> float:
        return time.monotonic()

    async def wait_tick(self) -> int:
        """Wait for the next tick; returns the tick number since the clock's epoch."""
        if self._tick is None or self._tick.done():
            self._tick = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="voicegw-sim-clock")
        tick = self._tick
        self._waiters += 1
        try:
            return await asyncio.shield(tick)
        finally:
            self._waiters -= 1

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            n = int((now - self._epoch) / self.period_s) + 1
            await asyncio.sleep(self._epoch + n * self.period_s - now)
            tick, self._tick = self._tick, None
            if tick is not None and not tick.done():
                tick.set_result(n)
            if self._waiters == 0:
                self._task = None
                return


_clocks: dict[asyncio.AbstractEventLoop, FrameClock] = {}


def shared_clock() -> FrameClock:
    """The process-wide clock for the running event loop."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        for old in [lp for lp in _clocks if lp.is_closed()]:
            del _clocks[old]
        clock = _clocks[loop] = FrameClock()
    return clock
