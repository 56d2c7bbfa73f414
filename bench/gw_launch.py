"""Start `voicegw serve` with two optional measurement hooks (used by bench.gwproc).

    python -m bench.gw_launch [--gc-log PATH] [--asyncio] serve --agent ... --port ...

`--gc-log` appends one line per garbage collection (monotonic time, generation, pause in ms),
so the density benchmark can report the collector's pauses inside its window. `voicegw serve`
runs on uvloop when it can import it; `--asyncio` hides uvloop so it falls back to the standard
event loop, to measure what the event loop is worth. Everything after the options is the
ordinary `voicegw` command line.

With `BENCH_STALLS=PATH`, a watchdog thread appends the main thread's stack to PATH whenever the
event loop has not come round for `BENCH_STALL_MS` (default 25 ms): where a stall comes from.
With `BENCH_TRACEMALLOC=DIR` in the environment, tracemalloc traces every allocation and each
SIGUSR2 writes a snapshot to DIR/snapshot-N (see bench.mem_profile).
With `BENCH_CPROFILE=PATH`, SIGUSR1 starts cProfile and the next SIGUSR1 stops it and writes its
stats to PATH (see bench.call_counts): which Python functions run per frame, and how often.
"""
from __future__ import annotations

import gc
import os
import signal
import sys
import time
from typing import Any, TextIO


def log_gc_pauses(out: TextIO) -> None:
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            out.write(f"{time.monotonic():.4f} {info['generation']} {(time.perf_counter() - started[0]) * 1000:.3f}\n")

    gc.callbacks.append(on_gc)


def snapshots_on_signal(directory: str) -> None:
    import tracemalloc

    tracemalloc.start(6)
    taken = [0]

    def dump(_signum: int, _frame: Any) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(os.path.join(directory, f"snapshot-{taken[0]}"))

    signal.signal(signal.SIGUSR2, dump)


def profile_on_signal(path: str) -> None:
    import cProfile

    state: dict[str, Any] = {}

    def toggle(_signum: int, _frame: Any) -> None:
        prof = state.pop("prof", None)
        if prof is None:
            state["prof"] = prof = cProfile.Profile()
            prof.enable()
        else:
            prof.disable()
            prof.dump_stats(path)

    signal.signal(signal.SIGUSR1, toggle)


def watch_stalls(path: str, stall_ms: float) -> None:
    """A loop callback stamps a heartbeat every 5 ms; a thread checks it and, when it is older than
    `stall_ms`, writes what the main thread is executing (once per stall)."""
    import asyncio
    import threading
    import traceback

    main_id = threading.get_ident()
    beat = [time.monotonic()]
    out = open(path, "a", buffering=1)

    async def heartbeat() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(0.005)

    def watchdog() -> None:
        reported = 0.0
        while True:
            time.sleep(stall_ms / 4000)
            late = time.monotonic() - beat[0]
            if late * 1000 >= stall_ms and beat[0] != reported:
                reported = beat[0]
                frame = sys._current_frames().get(main_id)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
                out.write(f"--- {time.monotonic():.3f} loop late {late * 1000:.0f} ms\n{stack}")

    def on_loop_start() -> None:
        beat[0] = time.monotonic()
        asyncio.ensure_future(heartbeat())
        threading.Thread(target=watchdog, daemon=True, name="stall-watchdog").start()

    import voicegw.server as server

    original = server.tune_gc

    def tune_gc_and_watch() -> None:  # called once the loop runs, at start-up
        original()
        on_loop_start()

    server.tune_gc = tune_gc_and_watch


def main(argv: list[str]) -> int:
    if os.environ.get("BENCH_STALLS"):
        watch_stalls(os.environ["BENCH_STALLS"], float(os.environ.get("BENCH_STALL_MS", "25")))
    if os.environ.get("BENCH_TRACEMALLOC"):
        snapshots_on_signal(os.environ["BENCH_TRACEMALLOC"])
    if os.environ.get("BENCH_CPROFILE"):
        profile_on_signal(os.environ["BENCH_CPROFILE"])
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)
        if opt == "--gc-log":
            log_gc_pauses(open(argv.pop(0), "w", buffering=1))
        elif opt == "--asyncio":
            sys.modules["uvloop"] = None  # type: ignore[assignment]  # `import uvloop` now fails
        else:
            print(f"unknown option {opt}", file=sys.stderr)
            return 2
    from voicegw.cli import main as voicegw_main

    return voicegw_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
