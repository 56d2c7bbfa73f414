"""Before/after CPU and latency of a hot-path change:
`python -m bench.ab_compare COMMIT MODE CALLS [ROUNDS [LOOP [WORKERS]]]`.

Exports COMMIT with `git archive` into a temporary directory (and builds its C extensions there)
and runs one density level against the gateway built from it and against the working tree,
alternating (so drifting machine load hits both alike), and prints the median of each. The
working tree is not touched. With WORKERS
above 1 the gateway runs `serve --workers WORKERS` on every core instead of one process pinned to
core 0, and its CPU is summed over its processes.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_density import DensityRun, Level

ROOT = Path(__file__).resolve().parent.parent


def export(commit: str, into: Path) -> Path:
    """COMMIT's tree in `into`, with its C extensions built (an archive has none, and without them
    the older gateway would run its Python fallbacks)."""
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    if (into / "setup.py").exists():
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=into, capture_output=True,
                       check=True, timeout=600)
    return into


def describe(name: str, levels: list[Level]) -> str:
    med = lambda xs: statistics.median(xs)  # noqa: E731
    return (f"{name:>6}: CPU {med([lv.cpu_ms_per_call_s for lv in levels]):.2f} ms per call-second "
            f"(runs: {', '.join(f'{lv.cpu_ms_per_call_s:.2f}' for lv in levels)}), "
            f"p50 c2m/m2c {med([lv.c2m.p50 for lv in levels]):.2f}/{med([lv.m2c.p50 for lv in levels]):.2f} ms, "
            f"p99 {med([lv.c2m.p99 for lv in levels]):.2f}/{med([lv.m2c.p99 for lv in levels]):.2f} ms, "
            f"RSS per call {med([lv.rss_per_call_kib for lv in levels]):.0f} KiB, "
            f"other processes {med([lv.other_busy for lv in levels]):.0%}")


async def main(commit: str, mode: str, calls: int, rounds: int, loop: str, workers: int = 1) -> None:
    with tempfile.TemporaryDirectory(prefix="voicegw-before-") as tmp:
        before_src = export(commit, Path(tmp))
        before: list[Level] = []
        after: list[Level] = []
        for _ in range(rounds):
            before += await DensityRun(mode, 6.0, 1.5, source=before_src, loop=loop, workers=workers).run([calls], {calls})
            after += await DensityRun(mode, 6.0, 1.5, loop=loop, workers=workers).run([calls], {calls})
        print(f"{mode}, {calls} calls, {rounds} alternating rounds, {loop} loop, {workers} worker(s), before = {commit}")
        print(describe("before", before))
        print(describe("after", after))


if __name__ == "__main__":
    import uvloop

    a = sys.argv[1:] + [""] * 6
    uvloop.run(main(a[0], a[1], int(a[2]), int(a[3] or 3), a[4] or "default", int(a[5] or 1)))
