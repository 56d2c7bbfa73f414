"""Call set-up under a burst: `python -m bench.bench_setup [CALLS] [OVER_S] [MODE]`.

CALLS callers arrive evenly over OVER_S seconds (200 over 10 s by default: a campaign start, a
busy minute's peak) at one gateway pinned to one core, each a real-time call from its stream's
start (20 ms frames both ways, so the load grows as the burst goes on). For each call: the voice
webhook's answer time, and the time from the webhook to the greeting's first audio at the caller
(the model peer answers `response.create` at once, so this is the gateway's set-up work under
load). A call is "set up" when its greeting audio arrives within SETUP_DEADLINE_S of its webhook.
Load goes to 127.0.0.1 only; every caller hangs up at the end.
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from bench.bench_density import load_side_gc_paused, pin_load_side
from bench.gwproc import AUTH_TOKEN, CpuWindow, running_gateway
from bench.loadcaller import LoadCaller
from bench.pacer import Pacer
from bench.peer import BenchPeer, PeerOptions, audio_chunks

SETUP_DEADLINE_S = 3.0  # webhook to first greeting audio: past this a caller hears dead air
HOLD_S = 2.0  # every call stays up this long after the last one arrived


@dataclass
class SetupResult:
    mode: str
    calls: int
    over_s: float
    webhook_ms: list[float] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)  # calls that heard their greeting
    failures: list[str] = field(default_factory=list)
    gateway_busy: float = 0.0

    @property
    def set_up(self) -> int:
        return sum(1 for ms in self.first_audio_ms if ms <= SETUP_DEADLINE_S * 1000)

    def pct(self, values: list[float], p: float) -> float:
        return float(np.percentile(values, p)) if values else float("nan")

    def line(self) -> str:
        return (f"{self.mode}: {self.set_up}/{self.calls} set up within {SETUP_DEADLINE_S:.0f} s over {self.over_s:.0f} s; "
                f"webhook p50/p99 {self.pct(self.webhook_ms, 50):.1f}/{self.pct(self.webhook_ms, 99):.1f} ms; "
                f"first greeting audio p50/p99/max {self.pct(self.first_audio_ms, 50):.0f}/"
                f"{self.pct(self.first_audio_ms, 99):.0f}/{max(self.first_audio_ms, default=float('nan')):.0f} ms; "
                f"gateway {self.gateway_busy:.0%} of its core; {len(self.failures)} failed")


async def _one(i: int, start_at: float, res: SetupResult, pacer: Pacer, payloads: list[str], base: str,
               http: httpx.AsyncClient, callers: list[LoadCaller], calls: int) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    caller = LoadCaller(pacer, payloads)
    callers.append(caller)
    t0 = time.monotonic()
    try:
        target = await caller.webhook(http, base, AUTH_TOKEN)
        res.webhook_ms.append((time.monotonic() - t0) * 1000)
        await caller.connect(target, 15, slot=(i * 20) // calls)
        deadline = t0 + 15
        while not caller.media_times and time.monotonic() < deadline:  # a benchmark may poll
            await asyncio.sleep(0.005)
        if caller.media_times:
            res.first_audio_ms.append((caller.media_times[0] - t0) * 1000)
        else:
            res.failures.append(f"call {i}: no greeting audio in 15 s")
    except Exception as exc:  # noqa: BLE001 - counted, the burst goes on
        res.failures.append(f"call {i}: {type(exc).__name__}: {exc}")


async def run(calls: int = 200, over_s: float = 10.0, mode: str = "g711_ulaw", log=print) -> SetupResult:  # type: ignore[no-untyped-def]
    pin_load_side()
    res = SetupResult(mode, calls, over_s)
    pacer = Pacer()
    pacer.start()
    callers: list[LoadCaller] = []
    payloads = audio_chunks("g711_ulaw", 20)
    try:
        async with BenchPeer(PeerOptions(audio_mode=mode, behaviour="stream"), pacer) as peer:
            async with running_gateway(peer.base_url, mode, core=0) as gw:
                limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
                async with httpx.AsyncClient(trust_env=False, timeout=15, limits=limits) as http:
                    window = CpuWindow(gw)
                    t0 = time.monotonic() + 0.2
                    with load_side_gc_paused():
                        await asyncio.gather(*(_one(i, t0 + i * over_s / calls, res, pacer, payloads, gw.url,
                                                    http, callers, calls) for i in range(calls)))
                        await asyncio.sleep(HOLD_S)
                    res.gateway_busy = window.shares().gateway
                    for caller in callers:
                        caller.hang_up()
                    await asyncio.gather(*(c.wait_closed(15) for c in callers), return_exceptions=True)
    finally:
        await pacer.stop()
    log("  " + res.line())
    return res


if __name__ == "__main__":
    import uvloop

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    over = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    m = sys.argv[3] if len(sys.argv) > 3 else "g711_ulaw"
    uvloop.run(run(n, over, m))
