"""Barge-in: how fast the caller's playout is cleared, and how exactly the model is told what
was heard, over many randomized interruptions.

The gateway runs as its own process on core 0. This process holds the callers and the model peer
in its ``bargein`` behaviour: each response (2.5-4.5 s of audio, generated at twice real time
like the real service) is interrupted by ``speech_started`` at a random point, and every
``conversation.item.truncate`` is checked as the service checks it. The callers are the density
benchmark's (`bench.loadcaller`: real-time playout, marks acknowledged when playout reaches it,
``clear`` accounted to the byte, a few microseconds per message); `light=False` runs
`voicegw.sim.SimulatedCaller`s instead, which also decode and keep every byte heard: at 100 calls
their load side used 65-77% of its core where the light callers' used 41-51%. A clear's latency
is read on the load side, so the load side's own lag is part of it: the lighter the callers, the
less of it.

Per barge-in k of a call:
* clear latency = arrival of the k-th ``clear`` at the caller - when the peer wrote the k-th
  ``speech_started`` (one clock: same process);
* truncation error = | audio_end_ms of the k-th truncate - audio of that item the caller heard |,
  where heard = the caller's heard total at clear k minus at clear k-1 (each response is heard
  between two clears). A delete counts as audio_end_ms = 0.

The callers' 20 ms frame clocks are spread over PHASES phases (1 ms apart), as calls that began at
different times are, and as the density load's pacer spreads its callers. With `phases=1` every
caller ticks at once: 100 frames reach the gateway in one burst every 20 ms and the callers' own
burst delays their reading of the clear, a worst case no call population produces.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.bench_density import load_side_gc_paused
from bench.gwproc import AUTH_TOKEN, CpuShares, CpuWindow, running_gateway
from bench.loadcaller import LoadCaller
from bench.pacer import SLOTS, Pacer
from bench.peer import BenchPeer, PeerConnection, PeerOptions, audio_chunks
from bench.stats import Dist
from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.clock import FrameClock
from voicegw.sim.result import CallResult

CLEAR_P99_TARGET_MS = 5.0
PHASES = SLOTS  # the density pacer's slots: both loads spread their callers alike
TRUNCATE_ERROR_TARGET_MS = 20.0


@dataclass
class BargeInResult:
    mode: str
    calls: int
    barge_ins: int  # interruptions the peer made
    clears: int  # clears the callers received
    clear_ms: Dist
    error_ms: Dist
    errors: np.ndarray  # per barge-in truncation error, ms (for the plot)
    bias_ms: float  # mean of audio_end_ms - heard: negative when the gateway truncates early
    truncates: int
    deletes: int
    rejected: int
    rejected_examples: list[str] = field(default_factory=list)
    unmatched_calls: int = 0  # calls whose clears and truncates could not be paired one to one
    gateway_busy: float | None = None  # fraction of a core while the barge-ins ran
    sim_busy: float | None = None  # the load side's (callers and model peer), likewise


async def run(mode: str, calls: int, per_call: int, log: Callable[[str], None] = print,
              source: Path | None = None, phases: int = PHASES, light: bool = True) -> BargeInResult:
    """`source`: run the gateway from another copy of the code (before/after comparisons);
    `phases`: how many frame-clock phases the callers are spread over (1: all in lockstep);
    `light`: the density benchmark's callers (`bench.loadcaller`), else `SimulatedCaller`s."""
    pacer = Pacer()
    conns: list[PeerConnection] = []
    clears: list[list[tuple[float, float]]] = []  # per call: (arrival, heard ms) of each clear
    cpu: CpuShares | None = None
    async with BenchPeer(PeerOptions(audio_mode=mode, behaviour="bargein", barge_ins=per_call), pacer) as peer:
        async with running_gateway(peer.base_url, mode, core=0, source=source) as gw:
            callers = _light_callers if light else _sim_callers
            async with callers(gw.url, peer, pacer, calls, phases, conns, clears):
                budget = per_call * 6.0 + 30
                with load_side_gc_paused():
                    window = CpuWindow(gw)
                    await asyncio.wait_for(asyncio.gather(*(conn.finished for conn in conns)), budget)
                    cpu = window.shares()
    out = _score(mode, conns, clears, log)
    if cpu is not None:
        out.gateway_busy, out.sim_busy = cpu.gateway, cpu.load_side
        log(f"  barge-in {mode}: gateway {cpu.gateway:.0%} of its core, load side {cpu.load_side:.0%} of its core")
    return out


@contextlib.asynccontextmanager
async def _light_callers(url: str, peer: BenchPeer, pacer: Pacer, calls: int, phases: int, conns: list[PeerConnection],
                         clears: list[list[tuple[float, float]]]) -> AsyncIterator[None]:
    """`calls` light callers, each call's model connection in `conns`; on exit, hung up, and
    each call's clears in `clears`."""
    callers: list[LoadCaller] = []
    payloads = audio_chunks("g711_ulaw", 20)
    pacer.start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=15) as http:
            for i in range(calls):
                caller = LoadCaller(pacer, payloads)
                target = await caller.webhook(http, url, AUTH_TOKEN)
                callers.append(caller)
                conns.append(await peer.next_connection(15))  # pre-warmed at the webhook
                await caller.connect(target, 15, slot=(i % phases) * SLOTS // phases)
        yield
    finally:
        for caller in callers:
            caller.hang_up()
        await asyncio.gather(*(c.wait_closed(15) for c in callers))
        await pacer.stop()
        clears += [c.clear_log for c in callers]


@contextlib.asynccontextmanager
async def _sim_callers(url: str, peer: BenchPeer, pacer: Pacer, calls: int, phases: int, conns: list[PeerConnection],
                       clears: list[list[tuple[float, float]]]) -> AsyncIterator[None]:
    """As `_light_callers`, with `SimulatedCaller`s (the bargein behaviour paces itself; the peer
    wants a pacer all the same)."""
    base, period = time.monotonic(), FrameClock().period_s
    clocks = [FrameClock(period, base + k * period / phases) for k in range(phases)]
    callers: list[SimulatedCaller] = []
    try:
        for i in range(calls):
            caller = SimulatedCaller(url, auth_token=AUTH_TOKEN, clock=clocks[i % phases])
            await caller.start()
            callers.append(caller)
            conns.append(await peer.next_connection(15))
        yield
    finally:
        results: list[CallResult] = list(await asyncio.gather(*(caller.hang_up() for caller in callers)))
        # the caller's times are ms since its stream start (`_t0`, on the shared monotonic clock)
        clears += [[(c._t0 + r.at_ms / 1000, r.heard_ms) for r in res.clears] for c, res in zip(callers, results)]


def _score(mode: str, conns: list[PeerConnection], clears: list[list[tuple[float, float]]],
           log: Callable[[str], None]) -> BargeInResult:
    clear_ms: list[float] = []
    errors: list[float] = []
    signed: list[float] = []
    barges = n_clears = truncates = deletes = unmatched = 0
    rejected: list[str] = []
    for conn, got in zip(conns, clears):
        barges += len(conn.barges)
        n_clears += len(got)
        rejected += [t.rejected for t in conn.truncates if t.rejected]
        truncates += sum(1 for t in conn.truncates if t.audio_end_ms is not None)
        deletes += sum(1 for t in conn.truncates if t.audio_end_ms is None)
        n = min(len(conn.barges), len(got), len(conn.truncates))
        if not (len(conn.barges) == len(got) == len(conn.truncates)) or any(
                conn.truncates[k].item_id != conn.barges[k].item_id for k in range(n)):
            unmatched += 1
            continue
        before = 0.0
        for barge, (at, heard_total), trunc in zip(conn.barges, got, conn.truncates):
            clear_ms.append((at - barge.sent_at) * 1000)
            heard = heard_total - before
            before = heard_total
            signed.append((trunc.audio_end_ms or 0) - heard)
            errors.append(abs(signed[-1]))
    out = BargeInResult(
        mode=mode, calls=len(conns), barge_ins=barges, clears=n_clears, clear_ms=Dist.of(clear_ms),
        error_ms=Dist.of(errors), errors=np.asarray(errors),
        bias_ms=float(np.mean(signed)) if signed else float("nan"), truncates=truncates, deletes=deletes,
        rejected=len(rejected), rejected_examples=rejected[:3], unmatched_calls=unmatched)
    log(f"  barge-in {mode}: {barges} barge-ins, clear p99 {out.clear_ms.p99:.2f} ms, "
        f"truncation error p99 {out.error_ms.p99:.1f} ms (bias {out.bias_ms:+.1f} ms), {len(rejected)} rejected, {unmatched} calls unmatched")
    return out
