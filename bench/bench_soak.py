"""Memory over a long run: `python -m bench.bench_soak [MODE] [CALLS] [MINUTES]`.

The density load (real-time 20 ms frames both ways, one gateway pinned to core 0) held at CALLS
calls for MINUTES. The gateway's RSS is sampled every few seconds through the whole window; what
is reported is the RSS per call at the start and at the end, the trend (least-squares slope over
the window, per minute), the collector's worst pause and the latency of the whole window. A leak
of one object per frame would show as a steady climb; memory that settles after the first minute
(allocator arenas, socket buffers reaching their working size) as a flat line.
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from bench.bench_density import DensityRun, Level, pin_load_side
from bench.gwproc import rss_kib

SAMPLE_S = 5.0


@dataclass
class Soak:
    mode: str
    calls: int
    minutes: float
    level: Level | None
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the window, KiB)
    baseline_kib: int = 0  # after one warm-up call, before the load

    def per_call(self, kib: float) -> float:
        return (kib - self.baseline_kib) / max(1, self.calls)

    @property
    def first_minute_kib(self) -> float:
        return float(np.mean([k for t, k in self.rss if t < 60])) if self.rss else 0.0

    @property
    def last_minute_kib(self) -> float:
        end = self.rss[-1][0] if self.rss else 0.0
        return float(np.mean([k for t, k in self.rss if t >= end - 60])) if self.rss else 0.0

    @property
    def slope_kib_per_min(self) -> float:
        """Least-squares trend of the RSS after the first minute (the working set settling)."""
        pts = [(t, k) for t, k in self.rss if t >= 60]
        if len(pts) < 3:
            return 0.0
        t, k = np.array(pts, dtype=float).T
        return float(np.polyfit(t / 60.0, k, 1)[0])


async def run(mode: str = "g711_ulaw", calls: int = 100, minutes: float = 10.0,
              log: object = print) -> Soak:
    window_s = minutes * 60.0
    soak = Soak(mode, calls, minutes, None)

    async def sample(pid: int, seconds: float) -> None:
        if seconds < window_s:  # the warm-up call's short window
            soak.baseline_kib = rss_kib(pid)
            return
        t0 = time.monotonic()
        while (at := time.monotonic() - t0) < seconds:
            soak.rss.append((at, rss_kib(pid)))
            await asyncio.sleep(SAMPLE_S)

    frames = int((window_s + 120) * 50)  # every frame of the call gets its latency paired
    ramp = DensityRun(mode, window_s, 5.0, max_frames=frames, on_window=sample)
    levels = await ramp.run([calls], {calls}, log)  # type: ignore[arg-type]
    soak.level = levels[0] if levels else None
    return soak


def describe(s: Soak) -> str:
    lv = s.level
    lat = f"p99 {lv.c2m.p99:.2f} / {lv.m2c.p99:.2f} ms, worst GC pause {lv.gc_worst_ms:.1f} ms " \
          f"({lv.gc_collections} collections)" if lv else "no level"
    return (f"{s.mode}, {s.calls} calls, {s.minutes:g} min: RSS per call {s.per_call(s.first_minute_kib):.0f} KiB "
            f"in the first minute, {s.per_call(s.last_minute_kib):.0f} KiB in the last; trend "
            f"{s.slope_kib_per_min:+.0f} KiB/min for the process; {lat}")


if __name__ == "__main__":
    import uvloop

    a = sys.argv[1:] + [""] * 3
    pin_load_side()
    result = uvloop.run(run(a[0] or "g711_ulaw", int(a[1] or 100), float(a[2] or 10)))
    print(describe(result))
