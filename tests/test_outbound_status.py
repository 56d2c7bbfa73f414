"""A placed call nobody answers gets a record from Twilio's status callback (busy, no answer,
failed): the voice webhook never comes for it, so without this it would leave no trace."""
from __future__ import annotations

import httpx
import pytest

from tests.harness import AUTH_TOKEN, OPERATOR_TOKEN
from tests.test_outbound import AUTH, CONTEXT, FROM, TO, outbound_gateway, place, twilio_post

pytestmark = pytest.mark.e2e


async def _record(base: str, sid: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await http.get(f"{base}/api/calls/{sid}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})


async def test_a_call_nobody_answers_is_recorded_with_twilios_final_status() -> None:
    async with outbound_gateway() as (gw, fake):
        busy = await place(gw, {"to": TO, "from": FROM, "context": CONTEXT})
        assert busy.status_code == 201, busy.text
        sent = fake.created[0]
        status_url = str(sent["StatusCallback"])
        assert status_url.startswith(gw.url + "/twilio/status?outbound=") and sent["StatusCallbackMethod"] == "POST"
        form = {"CallSid": sent["Sid"], "AccountSid": sent.get("AccountSid", ""), "CallStatus": "busy",
                "From": FROM, "To": TO, "SipResponseCode": "486"}
        assert (await twilio_post(status_url, form, token=AUTH_TOKEN[::-1])).status_code == 403  # not Twilio's
        forged = status_url.split("?")[0] + "?outbound=o1.x.y"
        assert (await twilio_post(forged, form)).status_code == 403
        assert (await twilio_post(status_url, form)).status_code == 200
        await gw.calllog.flush()
        rec = (await _record(gw.url, sent["Sid"])).json()
        assert rec["end_reason"] == "busy" and rec["status"] == "completed", rec
        assert (rec["from"], rec["to"], rec["agent"]) == (FROM, TO, "sales")
        ended = [e["data"] for e in rec["events"] if e["kind"] == "call.ended"]
        assert ended == [{"reason": "busy", "duration_s": 0.0, "answered": False, "sip_response_code": "486"}]
        # a call that was answered ends with its own record: its "completed" status adds nothing
        again = await place(gw, {"to": TO, "from": FROM, "context": CONTEXT}, headers=AUTH)
        second = fake.created[1]
        done = dict(form, CallSid=second["Sid"], CallStatus="completed")
        assert (await twilio_post(str(second["StatusCallback"]), done)).status_code == 200
        await gw.calllog.flush()
        assert again.status_code == 201 and (await _record(gw.url, second["Sid"])).status_code == 404
