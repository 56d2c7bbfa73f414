"""Fuzzing both hostile edges, bounded to well under a minute.

1. Telephony: Hypothesis-generated Twilio frames (JSON of wrong shapes, random text, huge numbers,
   bad base64, bad DTMF, binary) sent on an authenticated media stream of a real gateway
   (uvicorn, embedded local model), next to a healthy simulated call that is listening to a long
   greeting. Nothing escapes, neither call ends or reconnects, no task outlives its call, and the
   healthy caller's audio keeps its pace.
2. Model: Hypothesis-generated server events, through the real dialects into the call core: no
   exception, no reconnect, the call goes on, and what reaches the caller is valid and bounded.

Hypothesis is used as the generator for the socket test (examples are collected first, then sent
in one go: the gateway must face them together, as it would a hostile peer).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import statistics
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.harness import AUTH_TOKEN, running_gateway
from tests.test_core_timelines import Timeline
from voicegw.call.actions import CloseModel, EndCall, OpenModel, ToModel
from voicegw.realtime import events as ev
from voicegw.realtime.dialects import GA, PREVIEW
from voicegw.sim.caller import SimulatedCaller, new_sid
from voicegw.sim.twiml import parse_stream_twiml
from voicegw.telephony import base as tel
from voicegw.telephony.twilio import TwilioMediaCodec, sign

GREETING = (
    "Hello and welcome to Acme support. I can help you check an order, book an appointment, "
    "or answer questions about our opening hours, our delivery areas and our returns policy. "
    "Please tell me what you need today, and I will do my best to help you quickly."
)
AGENT = f"""
name: support
instructions: You are a friendly support agent for Acme.
greeting: "{GREETING}"
audio_mode: g711_ulaw
"""
JUNK_FRAMES = 2000
MAX_EXCESS_GAP_MS = 40.0  # beyond the model's own pacing of its deltas
CODEC = TwilioMediaCodec()

# --------------------------------------------------------------------------- frame strategies
_numbers = st.one_of(st.integers(min_value=-10**30, max_value=10**30), st.floats(allow_nan=True),
                     st.just(1e308), st.text(max_size=12), st.just("9" * 40), st.none(), st.booleans())
_b64ish = st.one_of(st.text(alphabet="ABCDEFab+/=\n ", max_size=40), st.binary(max_size=30).map(
    lambda b: base64.b64encode(b).decode()[:-1]), st.just("A" * 11_000), st.integers(), st.none())
_events = st.sampled_from(["media", "mark", "dtmf", "start", "connected", "clear", "", "MEDIA", "stopp"])
_json = st.recursive(st.none() | st.booleans() | _numbers | st.text(max_size=16),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=12)
_shaped = st.fixed_dictionaries({"event": _events}, optional={
    "media": st.fixed_dictionaries({}, optional={"payload": _b64ish, "timestamp": _numbers, "chunk": _numbers,
                                                 "track": st.text(max_size=8)}) | _json,
    "mark": st.fixed_dictionaries({}, optional={"name": st.text(max_size=300) | _json}) | _json,
    "dtmf": st.fixed_dictionaries({}, optional={"digit": st.text(max_size=3) | _numbers}) | _json,
    "start": st.dictionaries(st.sampled_from(["streamSid", "callSid", "tracks", "customParameters",
                                              "mediaFormat"]), _json, max_size=5),
    "streamSid": st.text(max_size=80) | _json,
}).map(json.dumps)
FRAMES = st.one_of(
    _shaped, _shaped, _shaped,
    _json.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),  # binary frames (Twilio sends text only)
    # deeper than the JSON decoder's recursion limit; frames up to the 64 KiB cap are covered in
    # tests/test_twilio.py (here a 2 MB burst of them stalls the WebSocket server layer ~300 ms:
    # measured 14 ms for parsing and core handling of all 2,000, the rest is outside the codec)
    st.integers(min_value=1, max_value=2_000).map(lambda n: "[" * n),
)


def collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` examples of `strategy`, generated (not shrunk) by Hypothesis."""
    out: list[Any] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def gather(x: Any) -> None:
        out.append(x)

    gather()
    return out


def junk(frame: str | bytes) -> bool:
    """Keep frames that are junk or inert. Valid `stop`, `media` and `dtmf` frames (rarely
    generated) are dropped: they legitimately end the call, or make its model answer, whose speech
    synthesis shares one thread with the healthy call's in the embedded test model."""
    return isinstance(frame, bytes) or isinstance(CODEC.parse(frame), (tel.BadFrame, tel.StreamConnected,
                                                                      tel.StreamStarted, tel.MarkPlayed))


async def drain(ws: Any, media: asyncio.Event) -> None:
    """Read what the gateway sends on a stream (its greeting); set `media` at the first audio."""
    with contextlib.suppress(Exception):
        async for text in ws:
            if isinstance(text, str) and '"media"' in text:
                media.set()


async def open_stream(url: str) -> tuple[Any, str]:
    """A signed webhook for a new call, then its media stream with connected + a valid start."""
    call_sid, webhook = new_sid("CA"), url + "/twilio/voice"
    form = {"CallSid": call_sid, "AccountSid": new_sid("AC"), "From": "+15550100007", "To": "+15550100002"}
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        resp = await http.post(webhook, data=form, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, webhook, form)})
    assert resp.status_code == 200, resp.text
    target = parse_stream_twiml(resp.text)
    ws = await connect(target.url, compression=None, proxy=None, max_size=2 ** 22)
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(json.dumps({"event": "start", "streamSid": new_sid("MZ"), "start": {
        "callSid": call_sid, "streamSid": "x", "accountSid": form["AccountSid"], "tracks": ["inbound"],
        "customParameters": target.parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    return ws, call_sid


def gaps_ms(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


async def test_junk_frames_next_to_a_healthy_call() -> None:
    frames = [f for f in collect(FRAMES, JUNK_FRAMES + 300) if junk(f)][:JUNK_FRAMES]
    assert len(frames) == JUNK_FRAMES
    # Hypothesis leaves ~160k objects of cyclic garbage behind; a full collection of them takes
    # 300+ ms and, left to the collector's thresholds, lands inside the measured window (it did:
    # one 564 ms gap). Collect it now, as `voicegw serve` collects and freezes its start-up objects.
    gc.collect()
    pauses: list[float] = []
    gc.callbacks.append(gc_timer := _gc_timer(pauses))
    try:
        await _junk_beside_healthy(frames, pauses)
    finally:
        gc.callbacks.remove(gc_timer)


def _gc_timer(pauses: list[float]) -> Any:
    started = [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - started[0]) * 1000)
    return on_gc


async def _junk_beside_healthy(frames: list[Any], gc_pauses: list[float]) -> None:
    async with running_gateway(agent_yaml=AGENT) as gw:
        # the junk stream's call first, until its greeting is synthesized (the embedded model's
        # one speech thread is then free for the healthy call: what is measured is the junk)
        ws, junk_sid = await open_stream(gw.url)
        junk_heard = asyncio.Event()
        reader = asyncio.ensure_future(drain(ws, junk_heard))
        await asyncio.wait_for(junk_heard.wait(), 10)
        healthy = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
        run = asyncio.ensure_future(healthy.run(hangup_after_silence_ms=500, timeout_s=45))
        await healthy.wait_for_audio(timeout=10, min_frames=3)
        started = time.monotonic()
        for frame in frames:
            await ws.send(frame)
        sent_s = time.monotonic() - started
        # the junk stream is still up: a clean stop ends it
        await ws.send(json.dumps({"event": "stop"}))
        await ws.close()
        await reader
        result = await run
        healthy_rec = await gw.call_record(result.call_sid)
        junk_rec = await gw.call_record(junk_sid)
        await asyncio.sleep(0)  # let cancelled tasks unwind (bounded by the check below)
        left = [t.get_name() for t in asyncio.all_tasks()
                if t.get_name().startswith((result.call_sid, junk_sid)) and not t.done()]
    times = list(result.media_times_ms)
    gaps = gaps_ms(times)
    pace = statistics.median(gaps)
    worst = max(gaps)
    print(f"\nfuzz/telephony: {len(frames)} junk frames sent in {sent_s:.2f}s; healthy call: {len(times)} media "
          f"frames, pace {pace:.1f} ms, worst gap {worst:.1f} ms (excess {worst - pace:.1f} ms); "
          f"worst GC pause {max(gc_pauses, default=0):.1f} ms")
    assert left == [], left
    assert junk_rec["end_reason"] == "caller_hangup", junk_rec["end_reason"]
    assert junk_rec["reconnects"] == [] and healthy_rec["reconnects"] == []
    bad = [e for e in junk_rec["errors"] if e.get("code") == "bad_frame"]
    assert len(bad) == 20  # logged: the first 20; counted: all of them
    ended = [e for e in junk_rec["events"] if e["kind"] == "call.ended"][0]["data"]
    assert ended["bad_frames"] >= JUNK_FRAMES * 0.9, ended
    assert healthy_rec["end_reason"] == "caller_hangup"
    assert not [e for e in healthy_rec["errors"] if e.get("source") == "model"], healthy_rec["errors"]
    # the healthy caller's audio kept its pace while the junk was being handled: one media frame
    # per model delta, paced by the model; no gap more than MAX_EXCESS_GAP_MS beyond that pace
    assert len(times) >= 20, result.summary()
    assert worst - pace <= MAX_EXCESS_GAP_MS, (pace, worst, gaps, f"worst GC pause {max(gc_pauses, default=0):.1f} ms")


# ------------------------------------------------------------------------------ model events
_ids = st.sampled_from(["r1", "r2", "a1", "a2", "", "i" * 200])
_model_values = st.one_of(_ids, _numbers, _b64ish, st.just("f39/fw=="), st.just("//8=" * 3000),
                          st.dictionaries(st.text(max_size=8), _json, max_size=3), st.lists(_json, max_size=3))
_TYPES = sorted({*GA._handlers, *PREVIEW._handlers, "unknown.event"})  # type: ignore[attr-defined]
MODEL_EVENT = st.fixed_dictionaries({"type": st.sampled_from(_TYPES)}, optional={
    k: _model_values for k in ("response_id", "item_id", "delta", "transcript", "call_id", "name", "arguments",
                               "audio_start_ms", "audio_end_ms", "content_index", "error", "response",
                               "item", "session", "rate_limits")})


@given(st.lists(MODEL_EVENT, min_size=1, max_size=40), st.sampled_from([GA, PREVIEW]),
       st.sampled_from(["g711_ulaw", "pcm16"]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_model_events_never_cost_the_call_or_its_session(wire: list[dict[str, Any]], dialect: Any,
                                                                 audio_mode: str) -> None:
    t = Timeline(audio_mode=audio_mode)
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "a1", "message"))
    start = t.index()
    for i, msg in enumerate(wire):
        t.at(t.now + 0.01)
        t.model(dialect.decode(json.loads(json.dumps(msg))))
        if i % 7 == 0:
            t.caller_frames(1)
    acts = t.since(start)
    assert not t.core.ended and not [a for a in acts if isinstance(a, (OpenModel, CloseModel, EndCall))]
    assert {a.link for a in acts if isinstance(a, ToModel)} <= {1}
    for intent in [a.intent for a in acts if hasattr(a, "intent")]:
        if isinstance(intent, tel.PlayAudio):
            raw = base64.b64decode(intent.payload_b64, validate=True)
            assert 0 < len(raw) <= 8000
    for cmd in [a.command for a in acts if isinstance(a, ToModel)]:
        if isinstance(cmd, ev.TruncateItem):
            assert cmd.audio_end_ms >= 1
    t.advance(2.0)
    assert not t.core.ended


@pytest.mark.parametrize("delta", ["not base64!", "A" * 10_001, "QUJD\nREVG"])
def test_one_bad_delta_among_good_ones_only_costs_itself(delta: str) -> None:
    t = Timeline()
    t.model(ev.ResponseStarted("r1"))
    good = base64.b64encode(b"\x7f" * 1600).decode()
    for d in (good, delta, good):
        t.model(GA.decode({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1", "delta": d}))
    plays = [a.intent for a in t.actions if hasattr(a, "intent") and isinstance(a.intent, tel.PlayAudio)]
    assert len(plays) == 2 and not t.core.ended
