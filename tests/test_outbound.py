"""Outbound calls: Twilio's Calls create, POST /api/calls, the outbound voice webhook and the
answering-machine verdict, over real sockets with the fake Twilio REST API and a simulated callee."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fake_twilio_rest import FakeTwilioRest
from tests.harness import AUTH_TOKEN, OPERATOR_TOKEN, GatewayHandle, running_gateway
from voicegw.realtime.events import UpdateSession
from voicegw.sim.callee import SimulatedCallee, person_audio, voicemail_audio
from voicegw.telephony.grants import verify_grant
from voicegw.telephony.rest import TwilioRest, TwilioRestError
from voicegw.telephony.twilio import sign

pytestmark = pytest.mark.e2e

AC = "AC" + "a" * 32
TOKEN = "0123456789abcdef0123456789abcdef"


def test_create_call_asks_for_async_detection_and_accepts_twiml_instead_of_a_url() -> None:
    fake = FakeTwilioRest(AC, TOKEN)
    rest = TwilioRest(AC, TOKEN, http_client=fake)
    placed = rest.create_call("+15550100002", "+15550100001", url="https://gw.example.com/twilio/voice?outbound=g",
                              machine_detection="DetectMessageEnd", amd_callback="https://gw.example.com/twilio/amd")
    assert placed.sid.startswith("CA") and placed.status == "queued"
    sent = fake.created[0]
    assert sent["Url"] == "https://gw.example.com/twilio/voice?outbound=g" and sent["Method"] == "POST"
    assert (sent["MachineDetection"], sent["AsyncAmd"]) == ("DetectMessageEnd", "true")
    assert sent["AsyncAmdStatusCallback"] == "https://gw.example.com/twilio/amd"
    assert sent["AsyncAmdStatusCallbackMethod"] == "POST"
    rest.create_call("+15550100003", "+15550100001", twiml="<Response><Dial>+15550100009</Dial></Response>")
    assert fake.created[1]["Twiml"].startswith("<Response>") and "MachineDetection" not in fake.created[1]
    with pytest.raises(ValueError):
        rest.create_call("+15550100003", "+15550100001")
    fake.refuse_create = (400, 21211, "Invalid 'To' Phone Number")
    with pytest.raises(TwilioRestError, match="400.*Invalid 'To'") as err:
        rest.create_call("+15550100004", "+15550100001", url="https://gw.example.com/twilio/voice")
    assert err.value.status == 400 and TOKEN not in str(err.value)


# ---------------------------------------------------------------------------------------------
# POST /api/calls
# ---------------------------------------------------------------------------------------------

AGENT = """
name: sales
instructions: "You call {{customer_name}} for Acme about order {{order_id}}. Be brief."
greeting: "Hello {{customer_name}}, this is Acme calling about your order."
audio_mode: g711_ulaw
voicemail:
  leave_message: "Hi {{customer_name}}, this is Acme about your order. Please call us back."
"""
HANGUP_AGENT = AGENT.replace('voicemail:\n  leave_message: "Hi {{customer_name}}, this is Acme about your order. '
                             'Please call us back."', "voicemail: hang_up")
TO, FROM = "+15550100002", "+15550100001"
CONTEXT = {"customer_name": "Ada", "order_id": "A17"}
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@contextlib.asynccontextmanager
async def outbound_gateway(agent: str = AGENT, **kw: Any) -> AsyncIterator[tuple[GatewayHandle, FakeTwilioRest]]:
    fake = FakeTwilioRest(AC, AUTH_TOKEN)
    rest = TwilioRest(AC, AUTH_TOKEN, http_client=fake)
    async with running_gateway(agent_yaml=agent, env={"TWILIO_ACCOUNT_SID": AC}, public_url=True, rest=rest,
                               **kw) as gw:
        yield gw, fake


async def place(gw: GatewayHandle, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await http.post(gw.url + "/api/calls", json=body, headers=AUTH if headers is None else headers)


async def twilio_post(url: str, form: dict[str, str], token: str | None = AUTH_TOKEN) -> httpx.Response:
    """A webhook as Twilio sends it: the form, signed together with the whole URL."""
    headers = {"X-Twilio-Signature": sign(token, url, form)} if token else {}
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await http.post(url, data=form, headers=headers)


def answered_form(placed: dict[str, Any]) -> dict[str, str]:
    return {"CallSid": placed["Sid"], "AccountSid": AC, "From": placed["From"], "To": placed["To"],
            "CallStatus": "in-progress", "Direction": "outbound-api"}


def texts(record: dict[str, Any], role: str) -> list[str]:
    return [t["text"] for t in record["transcript"] if t["role"] == role]


def amd_entries(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["data"] for e in record["events"] if e["kind"] == "amd"]


async def test_placing_a_call_asks_twilio_for_signed_urls_with_async_detection() -> None:
    async with outbound_gateway() as (gw, fake):
        r = await place(gw, {"to": "+1 (555) 010-0002", "from": FROM, "context": CONTEXT})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["call_sid"] == fake.created[0]["Sid"] and body["status"] == "queued"
        assert body["agent"] == "sales" and body["machine_detection"] is True and body["missing_context"] == []
        sent = fake.created[0]
        assert (sent["To"], sent["From"], sent["Method"]) == (TO, FROM, "POST")
        assert sent["Url"].startswith(f"{gw.url}/twilio/voice?outbound=o1.")
        assert (sent["MachineDetection"], sent["AsyncAmd"], sent["AsyncAmdStatusCallbackMethod"]) == \
            ("DetectMessageEnd", "true", "POST")
        assert sent["AsyncAmdStatusCallback"].startswith(f"{gw.url}/twilio/amd?outbound=o1.")
        secret = gw.settings.stream_secret
        grant = verify_grant(secret, parse_qs(urlsplit(sent["Url"]).query)["outbound"][0], "voice", time.time())
        assert (grant.context, grant.await_answer, grant.owner) == (CONTEXT, True, gw.gateway.owner)
        assert grant.agent is not None and gw.gateway.registry.get(grant.agent).agent.config.name == "sales"
        amd = verify_grant(secret, parse_qs(urlsplit(sent["AsyncAmdStatusCallback"]).query)["outbound"][0], "amd",
                           time.time())
        assert amd.owner == gw.gateway.owner and not amd.context

        r = await place(gw, {"to": TO, "from": FROM, "agent": "sales", "machine_detection": False})
        assert r.status_code == 201 and r.json()["missing_context"] == ["customer_name", "order_id"]
        assert "MachineDetection" not in fake.created[1] and "AsyncAmdStatusCallback" not in fake.created[1]
        assert verify_grant(secret, parse_qs(urlsplit(fake.created[1]["Url"]).query)["outbound"][0], "voice",
                            time.time()).await_answer is False


@pytest.mark.parametrize("body, status, field", [
    ({"to": "5550100002", "from": FROM}, 422, "to"),
    ({"to": TO, "from": "+1555abc"}, 422, "from"),
    ({"from": FROM}, 422, "to"),
    ({"to": TO, "from": FROM, "agent": "nobody"}, 422, "agent"),
    ({"to": TO, "from": FROM, "context": {"name": 7}}, 422, "context"),
    ({"to": TO, "from": FROM, "context": {"big": "x" * 3000}}, 422, "context"),
    ({"to": TO, "from": FROM, "machine_detection": "yes"}, 422, "machine_detection"),
    ({"to": TO, "from": FROM, "url": "https://evil.example.com/twiml"}, 422, "url"),
    (["not", "an", "object"], 400, None),
])
async def test_a_bad_request_names_what_is_wrong_and_dials_nobody(body: Any, status: int, field: str | None) -> None:
    async with outbound_gateway() as (gw, fake):
        r = await place(gw, body)
        assert r.status_code == status, r.text
        assert r.json().get("field") == field and r.json()["error"]
        assert fake.created == []


async def test_only_operators_place_calls_and_only_as_json() -> None:
    async with outbound_gateway() as (gw, fake):
        assert (await place(gw, {"to": TO, "from": FROM}, headers={})).status_code == 401
        assert (await place(gw, {"to": TO, "from": FROM}, headers={"Authorization": "Bearer nope"})).status_code == 403
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            r = await http.post(gw.url + "/api/calls", data={"to": TO, "from": FROM}, headers=AUTH)
            assert r.status_code == 415
            r = await http.post(gw.url + "/api/calls", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
            assert r.status_code == 400
            r = await http.post(gw.url + "/api/calls", content=b"[" * 9000, headers={**AUTH, "Content-Type": "application/json"})
            assert r.status_code == 413
            assert (await http.get(gw.url + "/api/calls", headers=AUTH)).status_code == 200  # the list is still there
        assert fake.created == []


async def test_no_call_is_placed_while_draining_or_without_twilio_credentials() -> None:
    async with outbound_gateway() as (gw, fake):
        gw.gateway.draining = True
        r = await place(gw, {"to": TO, "from": FROM})
        assert r.status_code == 503 and "draining" in r.json()["error"] and r.headers["retry-after"]
        gw.gateway.draining = False
        fake.refuse_create = (400, 21210, "'From' phone number not verified")
        r = await place(gw, {"to": TO, "from": FROM})
        assert r.status_code == 502 and "not verified" in r.json()["error"] and r.json()["twilio_status"] == 400
    async with running_gateway(agent_yaml=AGENT) as gw:  # no account SID, no public URL
        r = await place(gw, {"to": TO, "from": FROM})
        assert r.status_code == 503
        assert "TWILIO_ACCOUNT_SID" in r.json()["error"] and "VOICEGW_PUBLIC_URL" in r.json()["error"]


# ---------------------------------------------------------------------------------------------
# The outbound voice webhook and the verdict callback
# ---------------------------------------------------------------------------------------------

def spy_session_updates(gw: GatewayHandle) -> tuple[list[UpdateSession], asyncio.Event]:
    """Record the session.update commands the gateway sends the model from now on."""
    sent: list[UpdateSession] = []
    seen = asyncio.Event()
    open_model = gw.gateway.open_model

    async def opening(*args: Any, **kw: Any) -> Any:
        conn = await open_model(*args, **kw)
        send_now = conn.send_now  # what the bridge writes with (`send` waits on flow control first)

        def recording(cmd: Any) -> None:
            if isinstance(cmd, UpdateSession):
                sent.append(cmd)
                seen.set()
            send_now(cmd)

        conn.send_now = recording  # type: ignore[method-assign]
        return conn

    gw.gateway.open_model = opening  # type: ignore[method-assign]
    return sent, seen


async def test_the_webhook_of_a_placed_call_prewarms_its_agent_with_the_context_filled_in() -> None:
    async with outbound_gateway() as (gw, fake):
        assert (await place(gw, {"to": TO, "from": FROM, "context": CONTEXT})).status_code == 201
        placed = fake.created[0]
        sent, seen = spy_session_updates(gw)
        r = await twilio_post(placed["Url"], answered_form(placed))
        assert r.status_code == 200 and "<Connect><Stream" in r.text, r.text
        assert placed["Sid"] in gw.gateway.calls
        async with asyncio.timeout(10):
            await seen.wait()
        assert sent[0].config.instructions == "You call Ada for Acme about order A17. Be brief."


async def test_a_webhook_with_a_forged_or_missing_grant_opens_nothing() -> None:
    async with outbound_gateway() as (gw, fake):
        assert (await place(gw, {"to": TO, "from": FROM, "context": CONTEXT})).status_code == 201
        placed = fake.created[0]
        form = answered_form(placed)
        assert (await twilio_post(placed["Url"], form, token=None)).status_code == 403  # unsigned
        base, _, grant = placed["Url"].partition("?outbound=")
        version, part, mac = grant.split(".")
        forged = f"{base}?outbound={version}.{part[:-2]}{'AA' if part[-2:] != 'AA' else 'BB'}.{mac}"
        assert (await twilio_post(forged, form)).status_code == 403  # signed (dev mode, a leaked token)
        assert (await twilio_post(f"{base}?outbound=", form)).status_code == 403
        amd_url = placed["AsyncAmdStatusCallback"]
        assert (await twilio_post(amd_url.replace("/twilio/amd", "/twilio/voice"), form)).status_code == 403
        assert gw.gateway.calls == {}


async def test_the_verdict_callback_is_signed_granted_and_for_a_call_in_progress() -> None:
    async with outbound_gateway() as (gw, fake):
        assert (await place(gw, {"to": TO, "from": FROM})).status_code == 201
        placed = fake.created[0]
        amd_url = placed["AsyncAmdStatusCallback"]
        verdict = {"CallSid": placed["Sid"], "AccountSid": AC, "AnsweredBy": "human", "MachineDetectionDuration": "900"}
        assert (await twilio_post(amd_url, verdict, token=None)).status_code == 403
        assert (await twilio_post(amd_url.split("?")[0], verdict)).status_code == 403
        assert (await twilio_post(placed["Url"].replace("/twilio/voice", "/twilio/amd"), verdict)).status_code == 403
        assert (await twilio_post(amd_url, {**verdict, "AnsweredBy": "robot"})).status_code == 400
        assert (await twilio_post(amd_url, verdict)).status_code == 404  # not answered yet: no such call here
        assert (await twilio_post(placed["Url"], answered_form(placed))).status_code == 200
        assert (await twilio_post(amd_url, verdict)).status_code == 200


# ---------------------------------------------------------------------------------------------
# Whole calls: a simulated person or voicemail box answers
# ---------------------------------------------------------------------------------------------

async def test_a_person_hears_the_greeting_only_after_twilio_says_human() -> None:
    async with outbound_gateway() as (gw, fake):
        assert (await place(gw, {"to": TO, "from": FROM, "context": CONTEXT})).status_code == 201
        person = await person_audio()
        callee = SimulatedCallee(fake.created[0], dataclasses.replace(person, verdict_at_ms=1500), auth_token=AUTH_TOKEN)
        await callee.answer()
        assert await callee.classify() == 200
        await callee.caller.wait_for_audio(10)
        await callee.caller.wait_for_silence(800, 20)
        result = await callee.caller.hang_up()
        record = await gw.call_record(callee.call_sid)
    assert result.first_audio_ms is not None and result.first_audio_ms >= 1500, result.summary()
    assert texts(record, "agent")[:1] == ["Hello Ada, this is Acme calling about your order."], record["transcript"]
    assert result.heard_ms > 1500, result.summary()
    assert [(e["answered_by"], e["detection_ms"]) for e in amd_entries(record)] == [("human", 1500)]


async def test_a_voicemail_box_gets_the_message_after_the_beep_then_the_call_hangs_up() -> None:
    async with outbound_gateway() as (gw, fake):
        assert (await place(gw, {"to": TO, "from": FROM, "context": CONTEXT})).status_code == 201
        box = await voicemail_audio()
        assert box.beep_ms is not None and box.beep_ms[0] >= 2500  # the greeting is ~3 s of speech
        callee = SimulatedCallee(fake.created[0], box, auth_token=AUTH_TOKEN)
        result = await callee.run(duration_s=40)
        record = await gw.call_record(callee.call_sid)
        sid = callee.call_sid
    assert callee.verdict_status == 200
    # nothing during the greeting or the beep: the agent spoke only once the box was recording
    assert result.first_audio_ms is not None and result.first_audio_ms >= box.beep_ms[1], result.summary()
    assert result.heard_spans and result.heard_spans[0].offset_ms >= box.beep_ms[1]
    assert texts(record, "agent") == ["Hi Ada, this is Acme about your order. Please call us back."], record["transcript"]
    assert result.heard_ms > 2000, result.summary()  # the whole message was played before the hang-up
    assert result.closed_by == "gateway", result.summary()
    assert fake.calls[sid]["status"] == "completed"  # hung up through Twilio's REST API
    assert [e["answered_by"] for e in amd_entries(record)] == ["machine_end_beep"]
    assert record["end_reason"] == "voicemail_left"


async def test_with_the_hang_up_policy_a_voicemail_box_hears_nothing() -> None:
    async with outbound_gateway(agent=HANGUP_AGENT) as (gw, fake):
        assert (await place(gw, {"to": TO, "from": FROM, "context": CONTEXT})).status_code == 201
        box = await voicemail_audio()
        callee = SimulatedCallee(fake.created[0], box, auth_token=AUTH_TOKEN)
        result = await callee.run(duration_s=30)
        record = await gw.call_record(callee.call_sid)
    assert result.heard_ms == 0 and result.closed_by == "gateway", result.summary()
    assert texts(record, "agent") == []
    assert [e["answered_by"] for e in amd_entries(record)] == ["machine_end_beep"]
    assert record["end_reason"] == "voicemail"
