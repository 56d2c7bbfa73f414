"""Where a call's memory goes: `python -m bench.mem_profile MODE CALLS [TOP]`.

Runs the density load (one warm-up call, then CALLS real-time calls) against a gateway started
with tracemalloc (bench.gw_launch, BENCH_TRACEMALLOC), takes a snapshot in each window and prints
the allocation sites that grew between them, per call, grouped by traceback. Tracing slows the
gateway; the figures are bytes held, not timings.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path

from bench.bench_density import DensityRun


async def main(mode: str, calls: int, top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="voicegw-mem-") as tmp:
        os.environ["BENCH_TRACEMALLOC"] = tmp

        async def snap(pid: int, _seconds: float) -> None:
            await asyncio.sleep(1.0)
            os.kill(pid, signal.SIGUSR2)
            await asyncio.sleep(1.0)  # the dump is written by the gateway's main thread

        await DensityRun(mode, 4.0, 2.0, on_window=snap).run([calls], {calls})
        one = tracemalloc.Snapshot.load(str(Path(tmp) / "snapshot-1"))
        many = tracemalloc.Snapshot.load(str(Path(tmp) / "snapshot-2"))
        stats = many.compare_to(one, "traceback")
        grown = sum(s.size_diff for s in stats)
        print(f"\n{mode}: {calls} calls against 1: {grown / 1024:.0f} KiB more traced, "
              f"{grown / 1024 / (calls - 1):.1f} KiB per call\n")
        for s in stats[:top]:
            print(f"{s.size_diff / 1024 / (calls - 1):7.2f} KiB/call  {s.count_diff / (calls - 1):6.1f} blocks/call")
            for line in s.traceback.format(limit=6)[-12:]:
                print("        " + line)


if __name__ == "__main__":
    import uvloop

    a = sys.argv[1:] + [""] * 3
    uvloop.run(main(a[0], int(a[1]), int(a[2] or 15)))
