"""Density and per-frame latency: N concurrent calls against one gateway process on one core.

The gateway (`voicegw serve`) runs pinned to core 0. This process, pinned to core 1, holds the
N light callers (`bench.loadcaller`) and the model peer (`bench.peer`, ``stream`` behaviour), so
caller and model times come from one clock. Both directions carry real-time 20 ms frames for the
whole call: the caller's media, and the model's audio from the greeting on (the worst case: in a
real call the model is silent about half of the time).

Latency pairs are exact, per call: the model connection a call uses is the one the peer accepts
right after that call's webhook (calls are set up one after another), and each message the
gateway forwards is produced by one message it received, in order. In pcm16 mode the resampler
emits audio in blocks (one output per three 20 ms inputs); the pairing follows the same converter
run offline, so the latency measured is the gateway's processing time from the frame that
released the audio. The audio the resampler holds back is an algorithmic delay, reported with the
audio benchmark. Only frames sent inside the measurement window (after every call is up and warm)
count.

A level passes when the p99 of both directions is <= 10 ms and no more than 0.1% of frames take
longer than one frame period (20 ms) to get through.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import httpx
import numpy as np

from bench.gwproc import AUTH_TOKEN, CpuWindow, GatewayProcess, running_gateway
from bench.loadcaller import LoadCaller
from bench.pacer import Pacer
from bench.peer import BenchPeer, PeerConnection, PeerOptions, audio_chunks
from bench.stats import Dist
from voicegw.audio.transcode import CallerToModel, ModelToCaller

P99_TARGET_MS = 10.0
LATE_MS = 20.0
LATE_FRACTION_MAX = 0.001
TAIL_SLACK = 10
SIM_BUSY_MAX = 0.85  # above this the load generator's own queueing would show up as latency
SATURATED = 0.9  # gateway CPU share at which a failing level stops the ramp
DISTURBED = 0.25  # other processes using more than this share of a core during a window
SETUP_BUDGET_S = 30.0  # a gateway that cannot set up the calls of a level in this time is far past capacity


@dataclass
class Level:
    mode: str
    calls: int
    window_s: float
    c2m: Dist
    m2c: Dist
    late_fraction: float
    worst_gap_ms: float
    nominal_gap_ms: float
    cpu_ms_per_call_s: float
    gateway_busy: float  # fraction of one core
    rss_per_call_kib: float
    rss_mib: float
    sim_busy: float
    other_busy: float  # cores used by processes outside the benchmark during the window
    pacer_lag_ms: float
    setup_ms: float  # mean webhook + model connect + stream open per call
    unmatched: int = 0
    gc_collections: int = 0  # in the gateway, during the window
    gc_worst_ms: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def disturbed(self) -> bool:
        """Other processes used more than DISTURBED of a core during the window."""
        return self.other_busy > DISTURBED

    @property
    def valid(self) -> bool:
        return self.sim_busy <= SIM_BUSY_MAX and not self.problems

    @property
    def passed(self) -> bool:
        return (self.valid and self.c2m.p99 <= P99_TARGET_MS and self.m2c.p99 <= P99_TARGET_MS
                and self.late_fraction <= LATE_FRACTION_MAX)


@contextlib.contextmanager
def load_side_gc_paused() -> Iterator[None]:
    """No collector pauses in this process (the load side) while it measures. Its latencies are
    read on its own loop, so a full collection here (25 ms at 150 calls, more once a long run has
    built up results) was booked as gateway latency: late frames at one level, none at the next.
    Garbage is still freed by reference counting; cycles wait for the end of the block."""
    if not gc.isenabled():  # inside another such block: no collection in the middle of it
        yield
        return
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def pin_load_side() -> None:
    """This process (callers and model peer) on core 1; the gateway gets core 0 to itself."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})


def nonempty_outputs(convert: Callable[[str], str], inputs: list[str], count: int) -> np.ndarray:
    """Indices of the inputs whose conversion produced output, replaying the gateway's converter."""
    out = [i for i in range(count) if convert(inputs[i % len(inputs)])]
    return np.asarray(out, dtype=np.int64)


class DensityRun:
    def __init__(self, mode: str, window_s: float, warm_s: float, max_frames: int = 20000,
                 on_window: Callable[[int, float], Awaitable[None]] | None = None, loop: str = "default",
                 source: Path | None = None, baseline: bool | str = False, delta_ms: int = 20,
                 workers: int = 1) -> None:
        # True: the minimal sample bridge (bench.baseline); "floor": the cheapest relay (bench.floor);
        # "twilio": Twilio's published sample (bench.twilio_sample); all passthrough only
        self.baseline = baseline
        if baseline:
            mode = "g711_ulaw"
        self.mode = mode
        self.workers = workers  # > 1: `serve --workers N` on every core (not pinned), CPU summed over them
        self.source = source
        self.loop = loop
        self.on_window = on_window  # e.g. a profiler attached to the gateway (pid, seconds)
        self.window_s = window_s
        self.warm_s = warm_s
        self.caller_payloads = audio_chunks("g711_ulaw", 20)  # what Twilio sends: 20 ms of mu-law
        self.c2m_map = nonempty_outputs(CallerToModel(mode).convert, self.caller_payloads, max_frames)
        self.delta_ms = delta_ms  # the model's audio per delta (the service's vary; 20 ms is the costliest)
        self.peer_chunks = audio_chunks(mode, delta_ms)
        self.m2c_map = nonempty_outputs(ModelToCaller(mode).convert, self.peer_chunks, max_frames)
        self.nominal_gap_ms = float(delta_ms) * max_frames / max(1, len(self.m2c_map))
        self.saturated_at: int | None = None  # the level that used the whole core and failed
        self.skipped: list[int] = []  # levels not run because of that

    async def run(self, levels: list[int], must: set[int], log: Callable[[str], None] = print) -> list[Level]:
        """Ramp through `levels`; after the first failure only the levels in `must` still run."""
        pin_load_side()
        pacer = Pacer()
        pacer.start()
        results: list[Level] = []
        try:
            async with BenchPeer(PeerOptions(audio_mode=self.mode, behaviour="stream", delta_ms=self.delta_ms), pacer) as peer:
                async with running_gateway(peer.base_url, self.mode, core=0 if self.workers == 1 else None,
                                           loop=self.loop, source=self.source, baseline=self.baseline,
                                           workers=self.workers) as gw:
                    async with httpx.AsyncClient(trust_env=False, timeout=15) as http:
                        await self._level(1, gw, peer, pacer, http, window_s=2.0, baseline=None)  # warm-up
                        baseline = gw.rss_kib()
                        failed = False
                        for n in levels:
                            if failed and n not in must:
                                continue
                            if self.saturated_at is not None:
                                self.skipped.append(n)
                                continue
                            for _ in range(2):  # a level other work disturbed and failed runs once more
                                res = await self._level(n, gw, peer, pacer, http, self.window_s, baseline)
                                results.append(res)
                                log(f"  {self.mode} {n:4d} calls: c2m p99 {res.c2m.p99:.2f} ms, m2c p99 "
                                    f"{res.m2c.p99:.2f} ms, late {res.late_fraction:.4%}, gateway "
                                    f"{res.gateway_busy:.0%}, load side {res.sim_busy:.0%}, other processes {res.other_busy:.0%}, "
                                    f"{'pass' if res.passed else 'FAIL'} {' '.join(res.problems)}")
                                if res.passed or not res.disturbed or res.gateway_busy >= SATURATED:
                                    break
                            failed = failed or not res.passed
                            if not res.passed and res.gateway_busy >= SATURATED:
                                self.saturated_at = n  # more calls would only queue: set-up crawls
        finally:
            await pacer.stop()
        return results

    async def _level(self, n: int, gw: GatewayProcess, peer: BenchPeer, pacer: Pacer, http: httpx.AsyncClient,
                     window_s: float, baseline: int | None) -> Level:
        pairs: list[tuple[LoadCaller, PeerConnection]] = []
        problems: list[str] = []
        t_setup = time.monotonic()
        try:
            for i in range(n):
                if time.monotonic() - t_setup > SETUP_BUDGET_S:
                    problems.append(f"set-up stopped after {len(pairs)} calls: the gateway answered too slowly")
                    break
                caller = LoadCaller(pacer, self.caller_payloads)
                target = await caller.webhook(http, gw.url, AUTH_TOKEN)
                if self.baseline:  # no pre-warm: the sample opens the model socket at stream start
                    await caller.connect(target, 15, slot=(i * 20) // n)
                    conn = await peer.next_connection(15)
                else:
                    conn = await peer.next_connection(15)
                    await caller.connect(target, 15, slot=(i * 20) // n)
                pairs.append((caller, conn))
        except Exception as exc:  # report what the gateway refused, keep the level's partial data
            problems.append(f"set-up failed after {len(pairs)} calls: {type(exc).__name__}: {exc}")
        setup_ms = (time.monotonic() - t_setup) * 1000 / max(1, len(pairs))
        with load_side_gc_paused():
            await asyncio.sleep(self.warm_s)
            pacer.reset_lag()
            window = CpuWindow(gw)
            rss = gw.rss_kib()
            watcher = asyncio.ensure_future(self.on_window(gw.pid, window_s)) if self.on_window else None
            for _ in range(int(window_s)):
                await asyncio.sleep(window_s / int(window_s))
                rss = max(rss, gw.rss_kib())
            cpu = window.shares()
        t0, t1 = cpu.t0, cpu.t1
        lag = pacer.max_lag_s
        if watcher is not None:
            await watcher
        for caller, _ in pairs:
            caller.hang_up()
        await asyncio.gather(*(c.wait_closed(15) for c, _ in pairs))
        await asyncio.gather(*(asyncio.wait_for(asyncio.shield(conn.closed), 15) for _, conn in pairs),
                             return_exceptions=True)
        for _ in range(200):
            if await gw.active_calls(http) == 0:
                break
            await asyncio.sleep(0.1)
        else:
            problems.append("calls still active 20 s after hang-up")
        c2m, m2c, gaps, unmatched = self._latencies(pairs, t0, t1)
        pauses = gw.gc_pauses(t0, t1)
        all_lat = np.concatenate([c2m, m2c]) if len(c2m) + len(m2c) else np.zeros(0)
        late = float(np.mean(all_lat > LATE_MS)) if all_lat.size else 1.0
        calls = max(1, len(pairs))
        return Level(
            mode=self.mode, calls=n, window_s=t1 - t0, c2m=Dist.of(c2m), m2c=Dist.of(m2c), late_fraction=late,
            worst_gap_ms=float(max(gaps, default=0.0)), nominal_gap_ms=self.nominal_gap_ms,
            cpu_ms_per_call_s=cpu.gateway * 1000 / calls, gateway_busy=cpu.gateway,
            rss_per_call_kib=(rss - baseline) / calls if baseline is not None else 0.0, rss_mib=rss / 1024,
            sim_busy=cpu.load_side, other_busy=cpu.other,
            pacer_lag_ms=lag * 1000, setup_ms=setup_ms,
            unmatched=unmatched, problems=problems, gc_collections=len(pauses),
            gc_worst_ms=max((ms for _, ms in pauses), default=0.0),
        )

    def _latencies(self, pairs: list[tuple[LoadCaller, PeerConnection]], t0: float,
                   t1: float) -> tuple[np.ndarray, np.ndarray, list[float], int]:
        c2m_all: list[np.ndarray] = []
        m2c_all: list[np.ndarray] = []
        gaps: list[float] = []
        unmatched = 0
        for caller, conn in pairs:
            sends = np.frombuffer(caller.send_times, dtype=np.float64)
            appends = np.frombuffer(conn.append_times, dtype=np.float64)
            expected = int(np.searchsorted(self.c2m_map, len(sends)))  # frames sent that produce an append
            # the last few frames before a hang-up may never be forwarded (the call ends as the
            # caller's close arrives); anything else means the pairing cannot be trusted
            if len(appends) > expected or expected - len(appends) > TAIL_SLACK:
                unmatched += 1
                continue
            src = sends[self.c2m_map[:len(appends)]]
            keep = (src >= t0) & (src < t1)
            c2m_all.append((appends[keep] - src[keep]) * 1000)
            deltas = np.frombuffer(conn.delta_times, dtype=np.float64)
            media = np.frombuffer(caller.media_times, dtype=np.float64)
            idx = self.m2c_map[:len(media)]
            if len(idx) < len(media) or (len(idx) and idx[-1] >= len(deltas)):
                unmatched += 1
                continue
            src = deltas[idx]
            keep = (src >= t0) & (src < t1)
            m2c_all.append((media[keep] - src[keep]) * 1000)
            inside = media[(media >= t0) & (media < t1)]
            if inside.size > 1:
                gaps.append(float(np.diff(inside).max() * 1000))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
        return cat(c2m_all), cat(m2c_all), gaps, unmatched
