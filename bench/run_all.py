"""Every benchmark, then docs/BENCHMARKS.md: `python -m bench.run_all [--quick]` (`make bench`).

Load goes to 127.0.0.1 only, every run is bounded in calls and time, and each gateway process is
stopped at the end. The full run takes about twenty-five minutes on a 2-core machine (ten of them the
memory soak); --quick about five.
It needs two cores: the gateway is pinned to core 0 and the load to core 1.
"""
from __future__ import annotations

import argparse
import asyncio
import pickle
import sys
import time
from pathlib import Path

from bench import bench_audio, bench_bargein, bench_greeting, bench_setup, bench_soak
from bench.bench_density import DensityRun, pin_load_side
from bench.report import Results, bridge_label, head_commit, now_utc, render
from voicegw.audio.resample import StreamResampler

DOCS = Path(__file__).resolve().parent.parent / "docs"
FULL_LEVELS = [1, 25, 50, 100, 150, 200, 250, 300, 400, 500]
QUICK_LEVELS = [1, 50, 200]
MUST = {1, 50, 100, 200}  # reported whatever happens at other levels (100: the CPU targets)


# the bridges compared at 50 calls: (who, audio mode, DensityRun's `baseline`)
BRIDGES = (("sample", "g711_ulaw", True), ("twilio sample", "g711_ulaw", "twilio"), ("floor", "g711_ulaw", "floor"),
           ("voicegw g711_ulaw", "g711_ulaw", False), ("voicegw pcm16", "pcm16", False))
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {msg}", flush=True)


async def run(quick: bool, only: set[str]) -> Results:
    pin_load_side()
    res = Results(quick=quick, commit=head_commit(), measured_at=now_utc())
    started = time.monotonic()
    window, warm = (4.0, 1.0) if quick else (10.0, 2.0)
    if "density" in only:
        for mode in ("pcm16", "g711_ulaw"):
            log(f"density, {mode}")
            ramp = DensityRun(mode, window, warm)
            res.density[mode] = await ramp.run(QUICK_LEVELS if quick else FULL_LEVELS, MUST, log)
            res.saturated[mode] = (ramp.saturated_at, ramp.skipped)
        if not quick:
            for mode in ("pcm16", "g711_ulaw"):
                log(f"density on the standard asyncio loop, {mode}")
                ramp = DensityRun(mode, window, warm, loop="asyncio")
                res.asyncio_loop += await ramp.run([50, 100], {50, 100}, log)
                res.saturated[f"{mode} on asyncio"] = (ramp.saturated_at, ramp.skipped)
            for mode in ("pcm16", "g711_ulaw"):
                log(f"density with 200 ms model deltas, {mode}")
                res.slow_deltas += await DensityRun(mode, window, warm, delta_ms=200).run([100], {100}, log)
        levels = [25, 50] if quick else [50, 100]  # the first: both workers warm
        for mode in ("pcm16", "g711_ulaw"):
            log(f"density through two workers, {mode}")
            res.two_workers += await DensityRun(mode, window, warm, workers=2).run(levels, set(levels), log)
    if "baseline" in only:
        # 20 ms deltas: every message the service could send, the costliest load; 200 ms deltas: the
        # local model's size, where the caller's 50 frames a second are most of the work
        for delta_ms, rounds in ((20, 2 if quick else 5), (200, 1 if quick else 3)):
            for i in range(rounds):  # alternating, so drifting machine load hits every bridge alike
                for who, mode, baseline in BRIDGES:
                    if who == "floor" and delta_ms != 20:
                        continue
                    log(f"against the sample bridges, {delta_ms} ms deltas, round {i + 1}: {who}")
                    run_ = DensityRun(mode, 6.0, 1.5, baseline=baseline, delta_ms=delta_ms)
                    res.baseline += [(bridge_label(who, delta_ms), lv) for lv in await run_.run([50], {50}, log)]
    if "greeting" in only:
        log("greeting latency")
        res.greeting = await bench_greeting.run(5 if quick else 20, log)
    if "bargein" in only:
        calls, per_call = (10, 10) if quick else (100, 10)  # the clear target is set at 100 calls
        for mode in ("pcm16", "g711_ulaw"):
            log(f"barge-in, {mode}")
            res.bargein[mode] = await bench_bargein.run(mode, calls, per_call, log)
            if not quick:
                log(f"barge-in, {mode}, callers in lockstep")
                res.bargein_lockstep[mode] = await bench_bargein.run(mode, calls, per_call, log, phases=1)
                log(f"barge-in, {mode}, SimulatedCaller callers")
                res.bargein_sim[mode] = await bench_bargein.run(mode, calls, per_call, log, light=False)
    if "setup" in only:
        for mode in ("g711_ulaw", "pcm16"):
            log(f"set-up burst, {mode}")
            res.setup.append(await bench_setup.run(50 if quick else 200, 5.0 if quick else 10.0, mode, log))
    if "soak" in only:
        minutes = 1.0 if quick else 10.0
        log(f"soak, g711_ulaw, 100 calls, {minutes:g} min")
        res.soak = await bench_soak.run("g711_ulaw", 100, minutes, log)
        log(bench_soak.describe(res.soak))
    if "audio" in only:
        log("audio")
        res.alias_db = bench_audio.alias_rejection_db(StreamResampler)
        res.audio_md = await asyncio.to_thread(bench_audio.run)
    res.wall_s = time.monotonic() - started
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer levels and samples, shorter windows")
    parser.add_argument("--only", default="density,baseline,greeting,setup,bargein,soak,audio",
                        help="comma-separated subset of density,baseline,greeting,setup,bargein,soak,audio")
    parser.add_argument("--out", type=Path, default=DOCS / "BENCHMARKS.md")
    parser.add_argument("--save", type=Path, help="also pickle the raw results here")
    parser.add_argument("--render", type=Path, metavar="PICKLE", help="only re-render saved results")
    args = parser.parse_args(argv)
    if args.render:
        results = pickle.loads(args.render.read_bytes())
    else:
        import uvloop  # the load side needs a fast loop so its own queueing stays small

        results = uvloop.run(run(args.quick, set(args.only.split(","))))
        if args.save:
            args.save.write_bytes(pickle.dumps(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, args.out.parent))
    log(f"wrote {args.out} ({results.wall_s / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
