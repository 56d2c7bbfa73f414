"""The production runtime: drain on SIGTERM/SIGINT against a real `voicegw serve` process, admission
control, one call per CallSid and single-use stream tokens."""
from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import httpx
import pytest
import websockets

from tests.harness import AUTH_TOKEN, SUPPORT_AGENT, running_gateway
from tests.proc import ServeProcess, serve_process
from voicegw.calllog.store import open_store
from voicegw.localmodel.server import LocalModelServer
from voicegw.sim.caller import SimulatedCaller
from voicegw.telephony.twilio import sign

pytestmark = pytest.mark.e2e

AGENT = SUPPORT_AGENT


async def record_of(sp: ServeProcess, call_sid: str) -> dict[str, Any]:
    store = open_store(f"sqlite:///{sp.data_dir / 'voicegw.db'}")
    try:
        rec = await store.get_call(call_sid)
    finally:
        await store.aclose()
    assert rec is not None, f"no record for {call_sid}"
    return rec


async def post_webhook(url: str, call_sid: str, http: httpx.AsyncClient) -> httpx.Response:
    params = {"CallSid": call_sid, "From": "+15550001", "To": "+15550002", "AccountSid": "AC" + "0" * 32}
    hook = url + "/twilio/voice"
    return await http.post(hook, data=params, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, hook, params)})


async def readiness_after_signal(sp: ServeProcess, http: httpx.AsyncClient) -> float:
    """Seconds from the signal to the first /readyz answering 503 (polled back to back)."""
    t0 = time.monotonic()
    async with asyncio.timeout(5):
        while (await http.get(sp.url + "/readyz")).status_code != 503:
            pass
    return time.monotonic() - t0


async def live_calls(sp: ServeProcess, n: int, duration_s: float) -> tuple[list[SimulatedCaller], list[asyncio.Task[Any]]]:
    callers = [SimulatedCaller(sp.url, auth_token=AUTH_TOKEN) for _ in range(n)]
    tasks = [asyncio.ensure_future(c.run(duration_s=duration_s, timeout_s=60)) for c in callers]
    for c in callers:  # every call is live: its greeting reached the caller
        await c.wait_for_audio(timeout=20)
    return callers, tasks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_drains_live_calls_to_their_end_and_exits_cleanly(sig: int) -> None:
    async with serve_process({"VOICEGW_DRAIN_TIMEOUT": "60s"}, agent_yaml=AGENT) as sp:
        callers, tasks = await live_calls(sp, 5, duration_s=6.0)
        async with httpx.AsyncClient(timeout=5) as http:
            sp.signal(sig)
            turned = await readiness_after_signal(sp, http)
            assert (await http.get(sp.url + "/healthz")).status_code == 200  # the listener stays open
            late = await post_webhook(sp.url, "CA" + "9" * 32, http)
        assert late.status_code == 200 and "<Hangup" in late.text and "<Stream" not in late.text, late.text
        results = await asyncio.gather(*tasks)
        code = await sp.wait_exit(30)
        print(f"readiness turned {turned * 1000:.0f} ms after {signal.Signals(sig).name}")
        assert turned < 0.3
        assert code == 0, sp.lines[-10:]
        for r in results:
            assert r.closed_by == "caller" and r.duration_ms > 5500, r.summary()  # nobody was cut
            rec = await record_of(sp, r.call_sid)
            assert rec["end_reason"] == "caller_hangup", rec["end_reason"]
            assert [e for e in rec["events"] if e["kind"] == "call.ended"], "no call.ended event"
            assert rec["transcript"] and rec["transcript"][0]["text"] == "Hello! How can I help you today?"
        assert any("call log flushed" in str(line.get("msg")) for line in sp.lines)


async def test_calls_outliving_the_drain_timeout_hear_a_goodbye_and_end_cleanly() -> None:
    async with serve_process({"VOICEGW_DRAIN_TIMEOUT": "1s"}, agent_yaml=AGENT) as sp:
        callers, tasks = await live_calls(sp, 3, duration_s=30.0)
        heard_before = [c.result.heard_ms for c in callers]
        sp.signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        code = await sp.wait_exit(30)
        assert code == 0
        for r, before in zip(results, heard_before):
            assert r.closed_by == "gateway" and r.duration_ms < 15_000, r.summary()
            assert r.heard_ms > before + 1000, "the goodbye was not heard"
            rec = await record_of(sp, r.call_sid)
            assert rec["end_reason"] == "gateway_drain"
            agent = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
            assert "I'm sorry, I have to end our call now. Please call us back. Goodbye." in agent, agent


async def test_a_second_signal_ends_every_call_now_and_still_completes_the_records() -> None:
    async with serve_process({"VOICEGW_DRAIN_TIMEOUT": "60s"}, agent_yaml=AGENT) as sp:
        callers, tasks = await live_calls(sp, 2, duration_s=30.0)
        sp.signal(signal.SIGINT)
        await sp.wait_for_line("draining", timeout=5)
        sp.signal(signal.SIGINT)
        results = await asyncio.gather(*tasks)
        assert await sp.wait_exit(20) == 0
        for r in results:
            assert r.closed_by == "gateway" and r.duration_ms < 15_000
            rec = await record_of(sp, r.call_sid)
            assert rec["end_reason"] == "gateway_shutdown"
            assert [e for e in rec["events"] if e["kind"] == "call.ended"]


async def test_admission_caps_pre_warmed_model_sessions_and_answers_the_rest_with_overflow() -> None:
    async with LocalModelServer(api_key="k") as peer:
        env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{peer.port}/v1",
               "VOICEGW_MAX_CALLS": "4", "VOICEGW_OVERFLOW_NUMBER": "+15559990000"}
        async with running_gateway(agent_yaml=AGENT, env=env, prewarm_timeout=1.0) as gw:
            sids = [f"CA{i:032d}" for i in range(12)]
            async with httpx.AsyncClient(timeout=10) as http:
                answers = await asyncio.gather(*(post_webhook(gw.url, sid, http) for sid in sids))
                ready = await http.get(gw.url + "/readyz")
                metrics = (await http.get(gw.url + "/metrics")).text
                retried = await post_webhook(gw.url, sids[0], http)  # Twilio retries a webhook
            streams = [a for a in answers if "<Stream" in a.text]
            overflow = [a for a in answers if "<Dial>" in a.text]
            assert len(streams) == 4 and len(overflow) == 8, [a.text for a in answers]
            assert all("+15559990000" in a.text for a in overflow)
            assert "<Stream" in retried.text  # the call that exists is answered as before
            assert ready.status_code == 503 and json.loads(ready.text)["status"] == "full"
            assert 'voicegw_calls_rejected_total{reason="full"} 8' in metrics
            for sid in sids:  # the pre-warms expire unclaimed
                await gw.gateway.wait_finished(sid, timeout=15)
            assert gw.gateway.metrics.calls_started == gw.gateway.metrics.calls_ended == 4
    assert peer.sessions_opened == 4


async def test_a_stream_token_opens_one_stream_while_live_and_after_hang_up() -> None:
    async with LocalModelServer(api_key="k") as peer:
        env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{peer.port}/v1"}
        async with running_gateway(agent_yaml=AGENT, env=env) as gw:
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            run = asyncio.ensure_future(caller.run(duration_s=4, timeout_s=30))
            await caller.wait_for_audio(timeout=20)
            start = caller.start_frame
            ws_url = gw.url.replace("http", "ws") + "/twilio/media"

            async def replay() -> int | None:
                async with websockets.connect(ws_url) as ws:
                    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                    await ws.send(json.dumps(start))
                    with pytest.raises(websockets.ConnectionClosed):
                        async with asyncio.timeout(10):
                            while True:
                                await ws.recv()
                    return ws.close_code

            assert await replay() == 1008  # while the call is live
            assert gw.gateway.calls[caller.call_sid].claimed and not gw.gateway.calls[caller.call_sid].ended.is_set()
            result = await run
            record = await gw.call_record(result.call_sid)
            assert await replay() == 1008  # after hang-up
    assert result.closed_by == "caller" and record["end_reason"] == "caller_hangup"
    assert peer.sessions_opened == 1
    assert len([e for e in record["events"] if e["kind"] == "stream.started"]) == 1
