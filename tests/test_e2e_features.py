"""End to end over real sockets: the post-call summary and extraction, and a warm transfer (the
Twilio REST side faked through the twilio SDK's HTTP client, the human played by the test)."""
from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fake_twilio_rest import FakeTwilioRest
from tests.harness import AUTH_TOKEN, running_gateway
from tests.speech import speech_pcm8k
from voicegw.sim.caller import SimulatedCaller
from voicegw.sim.source import AudioSchedule
from voicegw.telephony.rest import TwilioRest
from voicegw.telephony.twilio import sign

pytestmark = pytest.mark.e2e
AC = "AC" + "1" * 32

POST_CALL_AGENT = """
name: support
instructions: You are a friendly support agent for Acme.
greeting: "Hello! How can I help you today?"
audio_mode: g711_ulaw
post_call:
  summary: true
  extract:
    type: object
    properties:
      question: {type: string, description: what the caller asked}
      callback_requested: {type: boolean}
    required: [question, callback_requested]
"""

WARM_AGENT = """
name: front
instructions: You are the phone assistant of Acme.
greeting: "Hello, Acme here."
audio_mode: g711_ulaw
tools:
  - name: transfer_to_person
    description: Transfer the caller to a person, a human colleague, when they ask for one.
    builtin: {name: transfer_call, target: "+15550100999", mode: warm, timeout: 20s}
"""


async def test_post_call_summary_and_extraction_land_in_the_record() -> None:
    audio = AudioSchedule.from_segments([(2500, speech_pcm8k("Hello, what are your opening hours?"))])
    async with running_gateway(agent_yaml=POST_CALL_AGENT) as gw:
        caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN)
        result = await caller.run(hangup_after_silence_ms=2500, timeout_s=40)
        record = await gw.call_record(result.call_sid, timeout=30)
    asked = [t["text"] for t in record["transcript"] if t["role"] == "caller"]
    assert asked, record["transcript"]
    post = record["post_call"]
    assert post is not None and "error" not in post, post
    assert record["summary"] and asked[0] in record["summary"], record["summary"]
    assert post["extraction_valid"] is True, post
    assert record["extraction"]["question"] == asked[0] and record["extraction"]["callback_requested"] is False
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("post_call") > kinds.index("call.ended")  # asked once the caller had gone


async def _post_signed(url: str, params: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, data=params, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)})


async def _wait_for(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not (found := predicate()):
            await asyncio.sleep(0.05)
        return found


class SimulatedHuman:
    """The colleague at the transfer target, as Twilio would connect them: their call runs the
    TwiML the gateway gave it -- <Say> the summary, then the conference -- and they hear the
    caller once the caller's call joins the same conference."""

    def __init__(self, twiml: str) -> None:
        said = re.search(r"<Say>(.*?)</Say>", twiml, re.S)
        room = re.search(r"<Conference[^>]*>(.*?)</Conference>", twiml, re.S)
        assert said and room, twiml
        self.heard: list[tuple[str, str]] = [("say", said.group(1)), ("conference", room.group(1))]
        self.room = room.group(1)

    def caller_joins(self, caller_twiml: str) -> None:
        room = re.search(r"<Conference[^>]*>(.*?)</Conference>", caller_twiml, re.S)
        if room and room.group(1) == self.room:
            self.heard.append(("caller", room.group(1)))


@pytest.mark.parametrize("answered", [True, False])
async def test_warm_transfer_briefs_the_human_then_bridges_or_returns_to_the_agent(answered: bool) -> None:
    fake = FakeTwilioRest(AC, AUTH_TOKEN)
    ask = speech_pcm8k("Please transfer me to a person.")
    after = speech_pcm8k("Okay, thank you.")
    audio = AudioSchedule.from_segments([(2500, ask)] + ([] if answered else [(17000, after)]))
    async with running_gateway(agent_yaml=WARM_AGENT, public_url=True,
                               rest=TwilioRest(AC, AUTH_TOKEN, http_client=fake)) as gw:
        caller = SimulatedCaller(gw.url, audio=audio, auth_token=AUTH_TOKEN, to_number="+15550100002")
        fake.add_call(caller.call_sid)
        run = asyncio.ensure_future(caller.run(hangup_after_silence_ms=6000, timeout_s=60))
        try:
            leg = await _wait_for(lambda: next(iter(fake.created), None))
            human = SimulatedHuman(str(leg["Twiml"]))
            assert leg["To"] == "+15550100999" and leg["From"] == "+15550100002"
            assert str(leg.get("Timeout")) == "20"
            status_url = str(leg["StatusCallback"])
            assert urlsplit(status_url).path == "/twilio/transfer"
            assert (await _post_signed(status_url, {"CallSid": leg["Sid"], "CallStatus": "ringing"})).status_code == 200
            forged = await _post_signed(status_url.split("?")[0] + "?" + "outbound=o1.x.y",
                                        {"CallSid": leg["Sid"], "CallStatus": "in-progress"})
            assert forged.status_code == 403
            status = "in-progress" if answered else "no-answer"
            assert (await _post_signed(status_url, {"CallSid": leg["Sid"], "CallStatus": status})).status_code == 200
            if answered:
                await _wait_for(lambda: "Conference" in str(fake.calls[caller.call_sid].get("twiml", "")))
                human.caller_joins(str(fake.calls[caller.call_sid]["twiml"]))
            result = await run
        finally:
            run.cancel()
        record = await gw.call_record(caller.call_sid, timeout=20)
    caller_said = [t["text"] for t in record["transcript"] if t["role"] == "caller"]
    summary = human.heard[0][1]
    assert caller_said and caller_said[0].lower() in summary.lower(), (summary, caller_said)
    phases = [t["phase"] for t in record["transfers"]]
    agent = [t["text"] for t in record["transcript"] if t["role"] == "agent"]
    if answered:
        assert [k for k, _ in human.heard] == ["say", "conference", "caller"]  # the summary, then the caller
        assert phases == ["started", "dialing", "bridged"] and record["end_reason"] == "transferred"
        assert parse_qs(urlsplit(status_url).query)["outbound"]
    else:
        assert phases == ["started", "dialing", "not_answered"], phases
        assert record["end_reason"] == "caller_hangup"
        assert len(agent) >= 3, agent  # greeting, "connecting you", then "nobody answered"
        assert result.heard_ms > 4000
