"""Stream start to first greeting audio, with and without pre-warm.

The voice webhook pre-warms the call: the gateway opens the model session and asks for the
greeting before Twilio opens the media stream, so the greeting can play the moment the stream
starts. Without pre-warm (the stream opens after the pre-warmed session expired, as when the
webhook ran on another replica), the gateway must connect to the model, wait for
``session.created``, ask for the greeting and forward its first audio after the stream starts.

The gateway runs with ``VOICEGW_PREWARM_TIMEOUT=1``; the model peer answers ``response.create``
with 200 ms of audio at once (the service, too, sends its first audio faster than real time), so
what is measured is the gateway's part (plus two loopback hops). In pcm16 mode that includes the
resampler filling up, which a real-time trickle of 20 ms deltas would stretch to 40-60 ms.
Latency = the caller's first outbound media frame - the moment its media socket opened.
"""
from __future__ import annotations

import asyncio
from typing import Callable
from dataclasses import dataclass

from bench.gwproc import AUTH_TOKEN, running_gateway
from bench.pacer import Pacer
from bench.peer import BenchPeer, PeerOptions
from bench.stats import Dist
from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.twiml import StreamTarget

PREWARM_TIMEOUT_S = 1
BURST = 10  # the peer's first 200 ms of greeting audio arrive at once, as from the real service


class _GapCaller(SimulatedCaller):
    """Opens the media stream `gap_s` after the webhook answered, as Twilio does some time later."""

    def __init__(self, url: str, gap_s: float) -> None:
        super().__init__(url, auth_token=AUTH_TOKEN)
        self.gap_s = gap_s

    async def _webhook(self) -> StreamTarget:
        target = await super()._webhook()
        await asyncio.sleep(self.gap_s)  # the scenario: how long Twilio takes to open the stream
        return target


@dataclass
class GreetingCase:
    label: str
    gap_s: float
    first_audio_ms: Dist
    unclaimed: int  # pre-warmed sessions the gateway expired (should equal the samples without pre-warm)


async def _sample(url: str, gap_s: float) -> float:
    caller = _GapCaller(url, gap_s)
    await caller.start()
    try:
        await caller.wait_for_audio(timeout=15)
    finally:
        result = await caller.hang_up()
    assert result.first_audio_ms is not None
    return result.first_audio_ms


async def run(samples: int, log: Callable[[str], None] = print) -> list[GreetingCase]:
    import httpx

    pacer = Pacer()
    pacer.start()
    cases = [("pre-warmed, stream opens right after the webhook", 0.0),
             ("pre-warmed, stream opens 250 ms after the webhook", 0.25),
             ("no pre-warm (session expired before the stream opened)", PREWARM_TIMEOUT_S + 0.5)]
    out: list[GreetingCase] = []
    try:
        async with BenchPeer(PeerOptions(audio_mode="pcm16", behaviour="stream", burst=BURST), pacer) as peer:
            async with running_gateway(peer.base_url, "pcm16", core=0, prewarm_timeout_s=PREWARM_TIMEOUT_S) as gw:
                async with httpx.AsyncClient(trust_env=False) as http:
                    await _sample(gw.url, 0.0)  # warm-up: first-call imports and connections
                    for label, gap in cases:
                        before = await gw.metric(http, "voicegw_prewarm_unclaimed_total")
                        values: list[float] = []
                        for start in range(0, samples, 5):  # five at a time: the waits overlap
                            batch = min(5, samples - start)
                            values += await asyncio.gather(*(_sample(gw.url, gap) for _ in range(batch)))
                        unclaimed = int(await gw.metric(http, "voicegw_prewarm_unclaimed_total") - before)
                        case = GreetingCase(label, gap, Dist.of(values), unclaimed)
                        out.append(case)
                        log(f"  greeting, {label}: p50 {case.first_audio_ms.p50:.1f} ms, "
                            f"p95 {case.first_audio_ms.p95:.1f} ms")
    finally:
        await pacer.stop()
    return out
