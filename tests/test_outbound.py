"""Outbound calls: Twilio's Calls create, POST /api/calls, the outbound voice webhook and the
answering-machine verdict, over real sockets with the fake Twilio REST API."""
from __future__ import annotations

import pytest

from tests.fake_twilio_rest import FakeTwilioRest
from voicegw.telephony.rest import TwilioRest, TwilioRestError

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
