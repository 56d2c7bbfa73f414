"""End to end over real sockets: uvicorn-served gateway, embedded local model, simulated Twilio caller."""
from __future__ import annotations

import pytest

from tests.harness import AUTH_TOKEN, LONG_GREETING, running_gateway
from tests.speech import speech_pcm8k
from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.source import AudioSchedule

pytestmark = pytest.mark.e2e



def agent_yaml(greeting: str = "Hello! How can I help you today?", audio_mode: str = "pcm16") -> str:
    return f"""
name: support
instructions: You are a friendly support agent for Acme.
greeting: "{greeting}"
audio_mode: {audio_mode}
turn_detection:
  type: server_vad
  threshold: 0.5
  silence_duration_ms: 500
"""


def texts(record: dict, role: str) -> list[str]:
    return [t["text"] for t in record["transcript"] if t["role"] == role]


@pytest.mark.parametrize("audio_mode", ["pcm16", "g711_ulaw"])
async def test_greeting_is_heard_and_caller_speech_is_answered(audio_mode: str) -> None:
    question = speech_pcm8k("Hello, what are your opening hours?")
    audio = AudioSchedule.from_segments([(4000, question)])
    async with running_gateway(agent_yaml=agent_yaml(audio_mode=audio_mode)) as gw:
        caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN)
        result = await caller.run(hangup_after_silence_ms=2500, timeout_s=40)
        record = await gw.call_record(result.call_sid)
    assert result.webhook_status == 200
    assert result.first_audio_ms is not None and result.first_audio_ms < 1500, result.summary()
    agent = texts(record, "agent")
    assert agent and agent[0] == "Hello! How can I help you today?", record["transcript"]
    assert len(agent) >= 2, f"the caller's question got no answer: {record['transcript']}"
    assert texts(record, "caller"), "no caller transcript turn"
    assert record["latency"], "no per-turn latency recorded"
    assert record["end_reason"] == "caller_hangup"
    # the caller heard the greeting and the answer: well over the greeting's length
    assert result.heard_ms > 2000, result.summary()
    assert not [e for e in record["errors"] if e.get("source") == "model"], record["errors"]


async def test_barge_in_clears_and_truncates_at_what_was_heard() -> None:
    interruption = speech_pcm8k("Wait, stop please, I have a question.")
    audio = AudioSchedule.from_segments([(2500, interruption)])
    async with running_gateway(agent_yaml=agent_yaml(greeting=LONG_GREETING)) as gw:
        caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN)
        result = await caller.run(hangup_after_silence_ms=2500, timeout_s=45)
        record = await gw.call_record(result.call_sid)
    assert result.clears, "the gateway never sent clear to Twilio"
    barge = record["barge_ins"]
    assert barge and barge[0]["action"] == "truncate", barge
    b = barge[0]
    assert 1 <= b["audio_end_ms"] <= b["produced_ms"]
    # what the gateway truncated to vs what the simulated caller had actually heard of the greeting
    # (the only agent audio before the interruption); the gap is the speech_started -> clear path
    truth = result.clears[0].heard_ms
    assert abs(b["audio_end_ms"] - truth) < 120, (b, result.clears[0])
    # the model accepted the truncation: no truncate error came back
    assert not [e for e in record["errors"] if "shorter" in str(e.get("message", ""))], record["errors"]
    greeting = [t for t in record["transcript"] if t["role"] == "agent"][0]
    assert greeting["cut"] and len(greeting["text"]) < len(LONG_GREETING), greeting


async def test_dtmf_reaches_the_model() -> None:
    async with running_gateway(agent_yaml=agent_yaml(greeting="Hi.")) as gw:
        caller = SimulatedCaller(gw.url, audio=AudioSchedule.from_segments([(1500, b"\x00\x00" * 8)]),
                                 auth_token=AUTH_TOKEN)
        result = await caller.run(dtmf="5", hangup_after_silence_ms=2500, timeout_s=40)
        record = await gw.call_record(result.call_sid)
    assert [d["digit"] for d in record["dtmf"]] == ["5"]
    assert any("5" in t and "press" in t.lower() for t in texts(record, "agent")), record["transcript"]


async def test_forged_signature_is_refused_with_403() -> None:
    async with running_gateway(agent_yaml=agent_yaml()) as gw:
        caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN, forge_signature=True)
        with pytest.raises(Exception):
            await caller.run(duration_s=1, timeout_s=10)
        assert caller.result.webhook_status == 403
        assert gw.gateway.metrics.calls_started == 0


async def test_forged_stream_token_is_closed_1008_before_any_model_session() -> None:
    def forge(params: dict[str, str]) -> dict[str, str]:
        return {**params, "token": params["token"][:-4] + "AAAA"}

    async with running_gateway(agent_yaml=agent_yaml()) as gw:
        # a stream for a call that never went through the webhook: no model session may open
        caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN, tamper_parameters=forge,
                                 stream_call_sid="CA" + "f" * 32)
        result = await caller.run(duration_s=3, timeout_s=10)
        assert result.close_code == 1008, result.summary()
        assert gw.gateway.metrics.calls_refused == 1
        # only the webhook's own (signed) pre-warm opened a session; the forged stream added none
        assert gw.gateway.metrics.calls_started == 1
        assert "CA" + "f" * 32 not in gw.gateway.calls


async def test_unsigned_webhooks_refused_without_token_unless_dev_mode() -> None:
    async with running_gateway(agent_yaml=agent_yaml(), signed=False, dev_mode=False) as gw:
        caller = SimulatedCaller(gw.url)
        with pytest.raises(Exception):
            await caller.run(duration_s=1, timeout_s=10)
        assert caller.result.webhook_status == 403


@pytest.mark.parametrize("dialect", ["azure-preview", "azure-ga", "openai"])
async def test_cloud_model_paths_with_api_keys_against_a_local_peer(dialect: str) -> None:
    """The gateway's Azure (preview and GA, api-key) and OpenAI (Bearer) paths, end to end, against a
    separately started local model that checks the key like the real services."""
    from voicegw.localmodel.server import LocalModelServer

    async with LocalModelServer(api_key="peer-key-123") as peer:
        base = f"http://127.0.0.1:{peer.port}"
        env = {
            "azure-preview": {"AZURE_OPENAI_ENDPOINT": base, "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-realtime-preview",
                              "AZURE_OPENAI_API_KEY": "peer-key-123", "AZURE_OPENAI_API_VERSION": "2024-10-01-preview"},
            "azure-ga": {"AZURE_OPENAI_ENDPOINT": base, "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
                         "AZURE_OPENAI_API_KEY": "peer-key-123"},
            "openai": {"OPENAI_API_KEY": "peer-key-123", "OPENAI_BASE_URL": base + "/v1"},
        }[dialect]
        async with running_gateway(agent_yaml=agent_yaml(greeting="Welcome to Acme."), env=env) as gw:
            assert gw.gateway.local_model is None
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            result = await caller.run(hangup_after_silence_ms=800, timeout_s=30)
            record = await gw.call_record(result.call_sid)
    assert texts(record, "agent") == ["Welcome to Acme."], record
    assert result.heard_ms > 500


async def test_wrong_model_key_ends_the_call_cleanly_and_is_logged() -> None:
    from voicegw.localmodel.server import LocalModelServer

    async with LocalModelServer(api_key="right-key") as peer:
        env = {"OPENAI_API_KEY": "wrong-key", "OPENAI_BASE_URL": f"http://127.0.0.1:{peer.port}/v1"}
        async with running_gateway(agent_yaml=agent_yaml(), env=env) as gw:
            caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
            result = await caller.run(duration_s=10, timeout_s=20)
            record = await gw.call_record(result.call_sid)
    assert result.closed_by == "gateway"
    # a 401 at the first connect cannot heal: the call never had a model session
    assert record["end_reason"] == "model_unavailable"
    unavailable = [e for e in record["errors"] if e.get("code") == "model_unavailable"]
    assert unavailable and "401" in unavailable[0]["message"], record["errors"]
    assert "wrong-key" not in str(record)


async def test_unclaimed_prewarm_is_closed_and_no_call_task_outlives_its_call() -> None:
    import asyncio

    import httpx

    from voicegw.telephony.twilio import sign

    async with running_gateway(agent_yaml=agent_yaml(), prewarm_timeout=0.5) as gw:
        params = {"CallSid": "CA" + "1" * 32, "From": "+15550001", "To": "+15550002", "AccountSid": "AC1"}
        url = gw.url + "/twilio/voice"
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(url, data=params, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)})
        assert resp.status_code == 200 and "<Stream" in resp.text
        assert params["CallSid"] in gw.gateway.calls  # pre-warming
        await gw.gateway.wait_finished(params["CallSid"], timeout=10)
        assert gw.gateway.metrics.prewarm_unclaimed == 1
        record = await gw.call_record(params["CallSid"])
        assert record["end_reason"] == "stream_never_started"
        # a normal call, then no task of either call is left running
        caller = SimulatedCaller(gw.url, auth_token=AUTH_TOKEN)
        result = await caller.run(hangup_after_silence_ms=500, timeout_s=30)
        await gw.gateway.wait_finished(result.call_sid, timeout=10)
        leftovers = [t.get_name() for t in asyncio.all_tasks()
                     if t.get_name().startswith((params["CallSid"], result.call_sid)) and not t.done()]
        assert leftovers == []


async def test_model_session_rolls_over_before_the_service_ends_it() -> None:
    """The services end sessions after 30/60 minutes; here both sides say 6 s. The call moves to a
    new session at a quiet moment: the caller hears no apology and every question is answered."""
    from voicegw.localmodel.server import LocalModelServer

    first = speech_pcm8k("Hello, what are your opening hours?")
    second = speech_pcm8k("What are your opening hours?")
    audio = AudioSchedule.from_segments([(1200, first), (8500, second)])
    async with LocalModelServer(api_key="k", max_session_s=6.0) as peer:
        env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{peer.port}/v1",
               "VOICEGW_MODEL_SESSION_MAX": "6s"}
        async with running_gateway(agent_yaml=agent_yaml(greeting="Hi."), env=env) as gw:
            caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN)
            result = await caller.run(hangup_after_silence_ms=2500, timeout_s=40)
            record = await gw.call_record(result.call_sid)
    assert result.closed_by == "caller", result.summary()
    assert record["end_reason"] == "caller_hangup"
    rollovers = [e["data"] for e in record["events"] if e["kind"] == "rollover"]
    assert any(r["phase"] == "switched" for r in rollovers), rollovers
    assert record["reconnects"] == [], "the session was rolled over, not lost"
    assert not [e for e in record["errors"] if e.get("source") == "model"], record["errors"]
    agent = texts(record, "agent")
    assert "Sorry, the line dropped for a moment." not in agent
    assert len(agent) >= 3 and len(texts(record, "caller")) >= 2, record["transcript"]


async def test_model_drop_mid_answer_recovers_with_context_and_finishes_the_answer() -> None:
    """The model's socket is cut while it speaks its answer: the gateway reconnects at once, gives
    the new session the call so far as items, apologises once and answers."""
    from voicegw.localmodel.server import LocalModelServer

    seen = {"responses": 0, "deltas": 0, "dropped": False}

    def cut_mid_answer(event: dict) -> bool:
        if seen["dropped"]:
            return False
        if event["type"] == "response.created":
            seen["responses"] += 1
        elif event["type"] == "response.output_audio.delta" and seen["responses"] == 2:
            seen["deltas"] += 1
            seen["dropped"] = seen["deltas"] == 2
            return seen["dropped"]
        return False

    question = speech_pcm8k("Hello, what are your opening hours?")
    audio = AudioSchedule.from_segments([(1200, question)])
    async with LocalModelServer(api_key="k", fault=cut_mid_answer) as peer:
        env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{peer.port}/v1"}
        async with running_gateway(agent_yaml=agent_yaml(greeting="Hi."), env=env) as gw:
            caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN)
            result = await caller.run(hangup_after_silence_ms=3000, timeout_s=40)
            record = await gw.call_record(result.call_sid)
    assert seen["dropped"], "the fault never fired"
    assert record["end_reason"] == "caller_hangup", result.summary()
    assert [r["ok"] for r in record["reconnects"]] == [True], record["reconnects"]
    assert record["reconnects"][0]["items"] >= 2  # greeting, question (and the cut answer)
    agent = texts(record, "agent")
    assert agent.count("Sorry, the line dropped for a moment.") == 1, record["transcript"]
    assert any("Monday" in t for t in agent[agent.index("Sorry, the line dropped for a moment."):]), agent
