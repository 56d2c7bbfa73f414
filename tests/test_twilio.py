"""Twilio adapter: TwiML, webhook signatures, stream tokens, media codec, REST actions."""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fake_twilio_rest import FakeTwilioRest
from voicegw.telephony.base import (
    BadFrame,
    CallerAudio,
    Dtmf,
    MarkPlayed,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from voicegw.telephony.rest import TwilioRest, TwilioRestError, attach_command, run_rest
from voicegw.telephony.tokens import (
    StreamTokenError,
    mint_stream_token,
    verify_stream_token,
)
from voicegw.telephony.twilio import (
    TwilioMediaCodec,
    build_connect_twiml,
    build_dial_twiml,
    build_hangup_twiml,
    public_request_url,
    sign,
    validate_signature,
)

AC = "AC" + "a" * 32
TOKEN = "0123456789abcdef0123456789abcdef"
CALL = "CA" + "b" * 32
STREAM = "MZ" + "c" * 32


# ---------------------------------------------------------------------------------------------
# TwiML
# ---------------------------------------------------------------------------------------------

def test_connect_twiml_round_trips_stream_and_parameters() -> None:
    xml = build_connect_twiml("wss://gw.example.com/twilio/media", {"token": "v1.1.abc", "agent": "a&b<c>"},
                              status_callback="https://gw.example.com/twilio/status")
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    connect = root.find("Connect")
    assert connect is not None
    stream = connect.find("Stream")
    assert stream is not None
    assert stream.get("url") == "wss://gw.example.com/twilio/media"
    assert stream.get("statusCallback") == "https://gw.example.com/twilio/status"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"token": "v1.1.abc", "agent": "a&b<c>"}


def test_dial_twiml_number_and_sip() -> None:
    root = ET.fromstring(build_dial_twiml("+1 555-010-0200", "Connecting you now"))
    assert [c.tag for c in root] == ["Say", "Dial"]
    assert root.find("Say").text == "Connecting you now"  # type: ignore[union-attr]
    assert root.find("Dial/Number").text == "+15550100200"  # type: ignore[union-attr]
    root = ET.fromstring(build_dial_twiml("sip:desk@pbx.example.com", None))
    assert [c.tag for c in root] == ["Dial"]
    assert root.find("Dial/Sip").text == "sip:desk@pbx.example.com"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        build_dial_twiml("call my manager", None)


def test_hangup_twiml() -> None:
    root = ET.fromstring(build_hangup_twiml())
    assert [c.tag for c in root] == ["Hangup"]


# ---------------------------------------------------------------------------------------------
# Webhook signatures
# ---------------------------------------------------------------------------------------------

PARAMS = {"CallSid": CALL, "AccountSid": AC, "From": "+15550100001", "To": "+15550100002",
          "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}


def test_signature_valid_forged_and_tampered() -> None:
    url = "https://gw.example.com/twilio/voice"
    sig = sign(TOKEN, url, PARAMS)
    assert validate_signature(TOKEN, url, PARAMS, sig)
    assert not validate_signature(TOKEN, url, PARAMS, sign("f" * 32, url, PARAMS))
    assert not validate_signature(TOKEN, url, {**PARAMS, "From": "+15559999999"}, sig)
    assert not validate_signature(TOKEN, url + "?x=1", PARAMS, sig)
    assert not validate_signature(TOKEN, url, PARAMS, None)
    assert not validate_signature(TOKEN, url, PARAMS, "")


def test_signature_accepts_default_port_variant() -> None:
    sig = sign(TOKEN, "https://gw.example.com:443/twilio/voice", PARAMS)
    assert validate_signature(TOKEN, "https://gw.example.com/twilio/voice", PARAMS, sig)


def test_proxied_url_rebuilt_from_forwarded_headers() -> None:
    public = "https://gw.example.com/twilio/voice?tenant=1"
    sig = sign(TOKEN, public, PARAMS)
    internal = "http://10.0.0.5:8080/twilio/voice?tenant=1"
    headers = {"x-forwarded-proto": "https", "X-Forwarded-Host": "gw.example.com", "X-Forwarded-Port": "443"}
    rebuilt = public_request_url(internal, headers, None)
    assert rebuilt == public
    assert validate_signature(TOKEN, rebuilt, PARAMS, sig)
    assert not validate_signature(TOKEN, internal, PARAMS, sig)


def test_public_url_forms() -> None:
    req = "http://127.0.0.1:8080/twilio/voice?a=1"
    assert public_request_url(req, {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "h.io",
                                    "X-Forwarded-Port": "8443"}, None) == "https://h.io:8443/twilio/voice?a=1"
    assert public_request_url(req, {}, "https://pub.example.com/") == "https://pub.example.com/twilio/voice?a=1"
    assert public_request_url(req, {}, None) == req


# ---------------------------------------------------------------------------------------------
# Stream tokens
# ---------------------------------------------------------------------------------------------

SECRET = b"s" * 32


def test_stream_token_valid_and_compact() -> None:
    tok = mint_stream_token(SECRET, CALL, 300, now=1_000_000.0)
    verify_stream_token(SECRET, tok, CALL, now=1_000_299.0)
    assert len(tok) < 64 and all(c.isalnum() or c in "._-" for c in tok)


@pytest.mark.parametrize("case, reason", [
    ("expired", "expired"), ("forged", "invalid"), ("other_call", "invalid"),
    ("malformed", "malformed"), ("missing", "missing"), ("tampered_expiry", "invalid"),
])
def test_stream_token_refusals(case: str, reason: str) -> None:
    now = 1_000_000.0
    tok = mint_stream_token(SECRET, CALL, 60, now)
    check = {"secret": SECRET, "token": tok, "call_sid": CALL, "now": now}
    if case == "expired":
        check["now"] = now + 61
    elif case == "forged":
        check["token"] = mint_stream_token(b"x" * 32, CALL, 60, now)
    elif case == "other_call":
        check["call_sid"] = "CA" + "d" * 32
    elif case == "malformed":
        check["token"] = "not-a-token"
    elif case == "missing":
        check["token"] = ""
    elif case == "tampered_expiry":
        parts = tok.split(".")
        check["token"] = ".".join([parts[0], str(int(parts[1]) + 3600), *parts[2:]])
    with pytest.raises(StreamTokenError) as err:
        verify_stream_token(**check)  # type: ignore[arg-type]
    assert reason in err.value.reason


# ---------------------------------------------------------------------------------------------
# Media stream codec
# ---------------------------------------------------------------------------------------------

codec = TwilioMediaCodec()


def test_parse_real_twilio_frames() -> None:
    connected = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
    assert codec.parse(connected) == StreamConnected("Call", "1.0.0")
    start = json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM,
        "start": {"accountSid": AC, "streamSid": STREAM, "callSid": CALL, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"token": "v1.x.y"}},
    })
    ev = codec.parse(start)
    assert isinstance(ev, StreamStarted)
    assert (ev.stream_sid, ev.call_sid, ev.account_sid) == (STREAM, CALL, AC)
    assert ev.custom_parameters == {"token": "v1.x.y"} and ev.tracks == ("inbound",)
    assert (ev.encoding, ev.sample_rate, ev.channels) == ("audio/x-mulaw", 8000, 1)
    media = ('{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"2",'
             '"timestamp":"5120","payload":"//////8="},"streamSid":"' + STREAM + '"}')
    assert codec.parse(media) == CallerAudio("//////8=", 5120, 2)
    mark = json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": "a7"}})
    assert codec.parse(mark) == MarkPlayed("a7")
    dtmf = json.dumps({"event": "dtmf", "streamSid": STREAM, "sequenceNumber": "5",
                       "dtmf": {"track": "inbound_track", "digit": "1"}})
    assert codec.parse(dtmf) == Dtmf("1")
    stop = json.dumps({"event": "stop", "sequenceNumber": "6", "streamSid": STREAM,
                       "stop": {"accountSid": AC, "callSid": CALL}})
    assert isinstance(codec.parse(stop), StreamStopped)


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"event": "selfdestruct"}', "unknown event"),
    ('{"event": "media", "media": {}}', "missing"),
    ('{"event": "media", "media": {"payload": "AA==", "timestamp": "soon"}}', "bad number"),
    ('{"event": "start", "streamSid": "MZ\\"x", "start": {"callSid": "CA1"}}', "streamSid"),
    ('{"event": "mark"}', "missing"),
    # hostile shapes: each is one BadFrame with a reason, never an exception
    ("null", "not a JSON object"),
    ('"media"', "not a JSON object"),
    ("[" * 70_000, "over the"),  # bounded before parsing (a deep nest would be a RecursionError)
    ("[" * 30_000, "nested too deeply"),
    ('{"media": {"payload": "AA=="}}', "no event"),
    ('{"event": {"nested": "object"}}', "unknown event"),
    ('{"event": "media", "media": "AA=="}', "no media object"),
    ('{"event": "media", "media": {"payload": 12}}', "not a string"),
    ('{"event": "media", "media": {"payload": ""}}', "empty"),
    ('{"event": "media", "media": {"payload": "AA=A"}}', "not valid base64"),
    ('{"event": "media", "media": {"payload": "AAA"}}', "not valid base64"),
    ('{"event": "media", "media": {"payload": "AAAA===="}}', "excess padding"),
    ('{"event": "media", "media": {"payload": "AA\\nA=="}}', "not valid base64"),
    ('{"event": "media", "media": {"payload": "//8=//8="}}', "not valid base64"),
    ('{"event": "media", "media": {"payload": "' + "A" * 10_672 + '"}}', "over 1 s of audio"),
    ('{"event": "media", "media": {"payload": "AA==", "timestamp": 1e999}}', "bad number"),
    ('{"event": "media", "media": {"payload": "AA==", "timestamp": 12.5}}', "bad number"),
    ('{"event": "media", "media": {"payload": "AA==", "timestamp": -20}}', "out of range"),
    ('{"event": "media", "media": {"payload": "AA==", "chunk": "-3"}}', "bad number"),
    ('{"event": "media", "media": {"payload": "AA==", "chunk": "99999999999999999999"}}', "bad number"),
    ('{"event": "media", "media": {"payload": "AA==", "chunk": "\u0661"}}', "bad number"),
    ('{"event": "media", "media": {"payload": "AA==", "chunk": true}}', "bad number"),
    ('{"event": "media", "media": {"payload": "AA==", "timestamp": ' + "9" * 5000 + "}}", "not JSON"),
    ('{"event": "dtmf", "dtmf": {"digit": "12"}}', "bad digit"),
    ('{"event": "dtmf", "dtmf": {"digit": "E"}}', "bad digit"),
    ('{"event": "dtmf", "dtmf": {"digit": 5}}', "bad digit"),
    ('{"event": "dtmf", "dtmf": {}}', "bad digit"),
    ('{"event": "mark", "mark": {"name": ""}}', "no name"),
    ('{"event": "mark", "mark": {"name": ["m1"]}}', "no name"),
    ('{"event": "mark", "mark": {"name": "' + "m" * 129 + '"}}', "over 128"),
    ('{"event": "start", "streamSid": "MZ1\\n", "start": {"callSid": "CA1"}}', "streamSid"),
    ('{"event": "start", "streamSid": "MZ1", "start": {"callSid": 7}}', "callSid"),
    ('{"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", "tracks": "inbound"}}', "tracks"),
    ('{"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", "customParameters": {"a": {}}}}',
     "customParameters"),
    ('{"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", "mediaFormat": {"sampleRate": 1e999}}}',
     "bad number"),
    ('{"event": "start", "streamSid": "MZ1", "start": []}', "missing"),
    ('{"event": "connected", "protocol": {"x": 1}}', "expected a string"),
])
def test_parse_bad_frames(text: str, fragment: str) -> None:
    ev = codec.parse(text)
    assert isinstance(ev, BadFrame)
    assert fragment in ev.error


def test_parse_accepts_numbers_as_strings_or_integers_and_full_second_payloads() -> None:
    one_second = base64.b64encode(b"\xff" * 8000).decode()
    assert codec.parse(json.dumps({"event": "media", "media": {"payload": one_second, "timestamp": 40,
                                                               "chunk": "3"}})) == CallerAudio(one_second, 40, 3)
    assert codec.parse('{"event": "dtmf", "dtmf": {"digit": "#"}}') == Dtmf("#")
    assert codec.parse('{"event": "dtmf", "dtmf": {"digit": "D"}}') == Dtmf("D")


@given(st.one_of(
    st.text(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                 max_leaves=20).map(json.dumps),
    st.fixed_dictionaries({"event": st.sampled_from(["media", "mark", "dtmf", "start", "stop", "connected"])},
                          optional={"media": st.dictionaries(st.sampled_from(["payload", "timestamp", "chunk"]),
                                                             st.none() | st.integers() | st.text(max_size=30)
                                                             | st.floats()),
                                    "mark": st.dictionaries(st.just("name"), st.integers() | st.text()),
                                    "dtmf": st.dictionaries(st.just("digit"), st.integers() | st.text(max_size=3)),
                                    "start": st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=12)
                                                             | st.lists(st.integers(), max_size=2)),
                                    "streamSid": st.text(max_size=70)}).map(json.dumps),
))
@settings(max_examples=400, deadline=None)
def test_parse_never_raises(text: str) -> None:
    event = codec.parse(text)
    if isinstance(event, CallerAudio):
        assert base64.b64decode(event.payload_b64, validate=True)
        assert len(base64.b64decode(event.payload_b64)) <= 8000
    if isinstance(event, Dtmf):
        assert event.digit in "0123456789*#ABCD" and len(event.digit) == 1
    if isinstance(event, BadFrame):
        assert len(event.error) < 300


_B64ISH = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=40)


@given(seq=st.text(alphabet="0123456789", min_size=1, max_size=14), chunk=st.text(alphabet="0123456789", max_size=14),
       ts=st.text(alphabet="0123456789", max_size=14), track=st.sampled_from(["inbound", "outbound", "x"]),
       payload=st.one_of(_B64ISH, st.binary(min_size=1, max_size=200).map(lambda b: base64.b64encode(b).decode()),
                         st.just(base64.b64encode(b"\xff" * 8001).decode())),
       sid=st.sampled_from(["MZ" + "a" * 32, "MZ-1_x", "M" * 65]))
@settings(max_examples=400, deadline=None)
def test_media_fast_path_agrees_with_the_full_parse(seq: str, chunk: str, ts: str, track: str, payload: str,
                                                    sid: str) -> None:
    """Twilio's exact media-frame shape is sliced, not parsed: the event (or the BadFrame's error)
    must be the one the full JSON parse gives for the same frame in another key order."""
    exact = ('{"event":"media","sequenceNumber":"' + seq + '","media":{"track":"' + track + '","chunk":"' + chunk
             + '","timestamp":"' + ts + '","payload":"' + payload + '"},"streamSid":"' + sid + '"}')
    reordered = json.dumps({"streamSid": sid, "media": {"payload": payload, "timestamp": ts, "chunk": chunk,
                                                        "track": track}, "sequenceNumber": seq, "event": "media"})
    fast, slow = codec.parse(exact), codec.parse(reordered)
    if isinstance(slow, BadFrame):
        assert isinstance(fast, BadFrame) and fast.error == slow.error
    else:
        assert fast == slow


def test_outbound_frames_are_valid_json() -> None:
    assert json.loads(codec.media(STREAM, "f/8=")) == {"event": "media", "streamSid": STREAM,
                                                      "media": {"payload": "f/8="}}
    name = 'say "hi" \\ ünïcode\n'
    assert json.loads(codec.mark(STREAM, name)) == {"event": "mark", "streamSid": STREAM, "mark": {"name": name}}
    assert json.loads(codec.clear(STREAM)) == {"event": "clear", "streamSid": STREAM}


@pytest.mark.parametrize("name", ["m1", "m12345", "a.b-c_d", "", "ü1", "m²", "٣", 'say "hi"', "back\\slash", "new\nline"])
def test_a_streams_mark_encoder_writes_what_mark_does(name: str) -> None:
    """Names are ours ("m<n>"), told plain by `str` methods; anything else is escaped as JSON."""
    text = codec.mark_encoder(STREAM)(name)
    assert text == codec.mark(STREAM, name)
    assert json.loads(text) == {"event": "mark", "streamSid": STREAM, "mark": {"name": name}}


# ---------------------------------------------------------------------------------------------
# REST actions against the fake HTTP client
# ---------------------------------------------------------------------------------------------

def _rest() -> tuple[TwilioRest, FakeTwilioRest]:
    fake = FakeTwilioRest(AC, TOKEN)
    return TwilioRest(AC, TOKEN, http_client=fake), fake


def test_rest_transfer_posts_dial_twiml() -> None:
    rest, fake = _rest()
    fake.add_call(CALL)
    rest.transfer(CALL, "+15550100200", "Please hold")
    [req] = fake.requests
    assert req.method == "POST"
    assert req.url == f"https://api.twilio.com/2010-04-01/Accounts/{AC}/Calls/{CALL}.json"
    root = ET.fromstring(req.data["Twiml"])
    assert root.find("Say").text == "Please hold"  # type: ignore[union-attr]
    assert root.find("Dial/Number").text == "+15550100200"  # type: ignore[union-attr]
    assert req.auth == (AC, TOKEN)


def test_rest_hang_up_and_unknown_call() -> None:
    rest, fake = _rest()
    fake.add_call(CALL)
    rest.hang_up(CALL)
    assert fake.requests[-1].data == {"Status": "completed"}
    assert fake.calls[CALL]["status"] == "completed"
    with pytest.raises(TwilioRestError) as err:
        rest.hang_up("CA" + "0" * 32)
    assert err.value.status == 404


def test_rest_attach_number() -> None:
    rest, fake = _rest()
    fake.add_number("PN" + "1" * 32, "+15550100300")
    fake.add_number("PN" + "2" * 32, "+15550100399")
    sid = rest.attach_number("+15550100300", "https://gw.example.com/twilio/voice")
    assert sid == "PN" + "1" * 32
    lookup, update = fake.requests
    assert lookup.method == "GET" and lookup.params["PhoneNumber"] == "+15550100300"
    assert update.method == "POST"
    assert update.url.endswith(f"/IncomingPhoneNumbers/{sid}.json")
    assert update.data == {"VoiceUrl": "https://gw.example.com/twilio/voice", "VoiceMethod": "POST"}
    with pytest.raises(TwilioRestError, match="not a phone number on this Twilio account"):
        rest.attach_number("+15550100777", "https://gw.example.com/twilio/voice")


def test_attach_command(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeTwilioRest(AC, TOKEN)
    fake.add_number("PN" + "1" * 32, "+15550100300")
    settings = SimpleNamespace(public_url="https://gw.example.com/", twilio_account_sid=AC, twilio_auth_token=TOKEN)
    assert attach_command("+15550100300", settings, http_client=fake) == 0
    assert fake.numbers["PN" + "1" * 32]["voice_url"] == "https://gw.example.com/twilio/voice"
    assert attach_command("+15550100999", settings, http_client=fake) == 1
    assert "not a phone number" in capsys.readouterr().err
    bare = SimpleNamespace(public_url=None, twilio_account_sid=AC, twilio_auth_token=None)
    assert attach_command("+15550100300", bare, http_client=fake) == 2
    err = capsys.readouterr().err
    assert "VOICEGW_PUBLIC_URL" in err and "TWILIO_AUTH_TOKEN" in err and TOKEN not in err


async def test_run_rest_runs_in_thread_with_timeout() -> None:
    loop_thread = threading.get_ident()
    assert await run_rest(lambda a: (a, threading.get_ident() != loop_thread), 7, timeout_s=5) == (7, True)
    release = threading.Event()
    with pytest.raises(asyncio.TimeoutError):
        await run_rest(release.wait, 5, timeout_s=0.05)
    release.set()


@given(seq=st.text(alphabet="0123456789", min_size=1, max_size=14),
       name=st.one_of(st.text(alphabet="m0123456789_.-aZ", max_size=130), st.text(max_size=8)),
       sid=st.sampled_from(["MZ" + "a" * 32, "MZ-1_x", "M" * 65]))
@settings(max_examples=300, deadline=None)
def test_mark_fast_path_agrees_with_the_full_parse(seq: str, name: str, sid: str) -> None:
    """A mark coming back in Twilio's key order is matched, not parsed: same event (or error) as
    the full JSON parse of the same frame in another key order."""
    exact = ('{"event":"mark","sequenceNumber":"' + seq + '","streamSid":"' + sid + '","mark":{"name":'
             + json.dumps(name) + "}}")
    reordered = json.dumps({"mark": {"name": name}, "streamSid": sid, "event": "mark", "sequenceNumber": seq})
    fast, slow = codec.parse(exact), codec.parse(reordered)
    if isinstance(slow, BadFrame):
        assert isinstance(fast, BadFrame) and fast.error == slow.error
    else:
        assert fast == slow


def test_twilios_mark_frame_takes_the_fast_path() -> None:
    from voicegw.telephony.twilio import _MARK_FRAME

    frame = '{"event":"mark","sequenceNumber":"4","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","mark":{"name":"m12"}}'
    assert _MARK_FRAME(frame) is not None and codec.parse(frame) == MarkPlayed("m12")
