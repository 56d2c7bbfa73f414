"""End to end over real sockets: uvicorn-served gateway, embedded local model, simulated Twilio caller."""
from __future__ import annotations

import pytest

from tests.harness import AUTH_TOKEN, running_gateway
from tests.speech import speech_pcm8k
from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.source import AudioSchedule

pytestmark = pytest.mark.e2e

LONG_GREETING = (
    "Hello and welcome to Acme support. I can help you check an order, book an appointment, "
    "or answer questions about our opening hours. Please tell me what you need today."
)


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
