"""Profile the gateway under load: `python -m bench.profile_gateway MODE CALLS [SECONDS [LOOP [DELTA_MS]]]`.

Runs one density level and samples the gateway process with py-spy (`pip install py-spy`)
during the measurement window, then prints the functions with the most samples, by own time and
by total time. This is how the hot path was found; see docs/BENCHMARKS.md.
"""
from __future__ import annotations

import asyncio
import collections
import shutil
import sys
import tempfile
from pathlib import Path

from bench.bench_density import DensityRun


def summarize(raw: Path, top: int = 30) -> str:
    """Own and total sample counts per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")") for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples", "", "own time:"]
    out += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "total time:"]
    out += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(top)]
    return "\n".join(out)


async def main(mode: str, calls: int, seconds: float, loop: str, delta_ms: int) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(tempfile.mkdtemp(prefix="voicegw-prof-")) / "gateway.txt"

    async def record(pid: int, window_s: float) -> None:
        proc = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pid), "--duration", str(int(window_s)), "--rate", "250",
            "--format", "raw", "--output", str(out), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(proc.wait(), window_s + 30)

    run = DensityRun(mode, window_s=seconds, warm_s=2.0, on_window=record, loop=loop,
                     delta_ms=delta_ms)
    [level] = await run.run([calls], set())
    print(f"{mode} {calls} calls, {delta_ms} ms deltas: gateway {level.gateway_busy:.0%} of a core, "
          f"{level.cpu_ms_per_call_s:.2f} ms CPU per call-second")
    print(summarize(out))


if __name__ == "__main__":
    import uvloop

    args = sys.argv[1:] + [""] * 5
    uvloop.run(main(args[0], int(args[1]), float(args[2] or 10), args[3] or "default", int(args[4] or 20)))
