"""Python functions per frame under load: `python -m bench.call_counts MODE CALLS [SECONDS [DELTA_MS]]`.

Runs one density level with cProfile switched on in the gateway for the measurement window
(`BENCH_CPROFILE`, see bench.gw_launch) and prints, per function, the calls per caller frame
(a call-second carries 50 caller frames and, in this load, 50 model deltas) and its share of the
profiled time. cProfile slows every Python call down alike, so the shares overstate Python
against C; the counts are exact. A sampling profiler (py-spy, perf) gives the true split.
"""
from __future__ import annotations

import asyncio
import os
import pstats
import signal
import sys
import tempfile
from pathlib import Path

from bench.bench_density import DensityRun


def table(stats_path: Path, frames: float, top: int = 40) -> str:
    st = pstats.Stats(str(stats_path))
    total = sum(v[2] for v in st.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    out = [f"{'calls/frame':>11} {'own %':>6}  function"]
    for (file, line, name), (_cc, ncalls, tottime, _ct, _callers) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        out.append(f"{ncalls / frames:11.2f} {100 * tottime / total:6.1f}  {name} ({where})")
    return "\n".join(out)


async def main(mode: str, calls: int, seconds: float, delta_ms: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="voicegw-cprof-")) / "gateway.pstats"
    os.environ["BENCH_CPROFILE"] = str(out)

    async def window(pid: int, window_s: float) -> None:
        os.kill(pid, signal.SIGUSR1)
        await asyncio.sleep(window_s)
        os.kill(pid, signal.SIGUSR1)
        for _ in range(100):
            if out.exists():
                return
            await asyncio.sleep(0.1)

    [level] = await DensityRun(mode, window_s=seconds, warm_s=2.0, on_window=window, delta_ms=delta_ms).run([calls], set())
    frames = calls * 50 * level.window_s
    print(f"{mode} {calls} calls, {delta_ms} ms deltas, {level.window_s:.1f} s profiled: {frames:.0f} caller frames")
    print(table(out, frames))


if __name__ == "__main__":
    import uvloop

    args = sys.argv[1:] + [""] * 4
    uvloop.run(main(args[0], int(args[1]), float(args[2] or 6), int(args[3] or 20)))
