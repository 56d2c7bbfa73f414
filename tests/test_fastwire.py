"""The steady state's C helpers (voicegw/_fastwire.c) against their Python references.

`media_payload` must accept exactly the frames Twilio's media pattern accepts and return the same
payload; `delta_fields` must read a model audio delta as the dialect's pattern does;
`append_message` must give the bytes of `Dialect.append_json`. Each is held to its reference on
valid messages, on every single-character mutation of one, at each bound of the pattern, and on
arbitrary text.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegw.compiled import fastwire
from voicegw.realtime.dialects import APPEND_HEAD, GA, PREVIEW, Dialect, _append_message, append_message
from voicegw.telephony.twilio import TwilioMediaCodec, _media_payload

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
SID = B64[:62] + "_-"


def test_the_helpers_were_built_and_are_the_ones_in_use() -> None:
    assert fastwire is not None, "voicegw._fastwire was not built (setup.py; `make` installs a C compiler)"
    assert TwilioMediaCodec().media_payload is fastwire.media_payload
    assert append_message is fastwire.append_message


def test_without_the_helpers_the_references_run() -> None:
    """An install without a C compiler: importing `voicegw._fastwire` fails, the Python runs."""
    code = (
        "import sys; sys.modules['voicegw._fastwire'] = None\n"  # makes the import raise ImportError
        "from voicegw.compiled import fastwire; assert fastwire is None\n"
        "from voicegw.realtime import dialects as d; from voicegw.telephony import twilio as t\n"
        "assert d.append_message is d._append_message\n"
        "assert d.GA.audio_delta_fields == d.GA.pattern_fields\n"
        "assert t.TwilioMediaCodec().media_payload is t._media_payload\n"
        "f = '{\"event\":\"media\",\"sequenceNumber\":\"1\",\"media\":{\"track\":\"inbound\",\"chunk\":\"1\","
        "\"timestamp\":\"0\",\"payload\":\"AAAA\"},\"streamSid\":\"MZ1\"}'\n"
        "assert t.TwilioMediaCodec().media_payload(f) == 'AAAA'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def frame(seq: str = "3", track: str = "inbound", chunk: str = "2", ts: str = "40",
          payload: str = "f39/fw==", sid: str = "MZ0123") -> str:
    return ('{"event":"media","sequenceNumber":"%s","media":{"track":"%s","chunk":"%s","timestamp":"%s",'
            '"payload":"%s"},"streamSid":"%s"}' % (seq, track, chunk, ts, payload, sid))


def same(text: str) -> str | None:
    expected = _media_payload(text)
    assert fastwire.media_payload(text) == expected, text[:200]
    return expected


def test_a_twilio_frame_and_each_bound_of_the_pattern() -> None:
    assert same(frame()) == "f39/fw=="
    assert same(json.dumps(json.loads(frame()), separators=(",", ":"))) == "f39/fw=="
    for field, ok, bad in (("seq", "1" * 13, "1" * 14), ("chunk", "9" * 12, "9" * 13), ("ts", "0" * 12, "0" * 13),
                           ("track", "a_" * 8, "a" * 17), ("sid", "x" * 64, "x" * 65),
                           ("payload", "A" * 10668, "A" * 10672), ("payload", "AA==", "A==="),
                           ("payload", "AAA=", "AAAAA"), ("seq", "1", ""), ("track", "z", "Z"), ("sid", "-", "")):
        assert same(frame(**{field: ok})) is not None, (field, ok)
        assert same(frame(**{field: bad})) is None, (field, bad)
    assert same(frame(payload="A" * 10668 + "==")) is None  # 10670 characters
    assert same(frame() + " ") is None
    assert same(" " + frame()) is None
    assert same(frame(payload="AAA\u00e9")) is None  # non-ASCII
    assert same("") is None
    with pytest.raises(TypeError):
        fastwire.media_payload(frame().encode())


def test_every_single_character_mutation_of_a_frame() -> None:
    text = frame(seq="12", chunk="7", ts="140", payload="/+9aZz0A", sid="MZab_-")
    alphabet = sorted(set(text) | {"=", "\u00e9", "\\", "x", "9"})
    for i in range(len(text) + 1):
        same(text[:i] + text[i + 1:])  # deleted
        for c in alphabet:
            same(text[:i] + c + text[i:])  # inserted
            same(text[:i] + c + text[i + 1:])  # replaced


digits = st.text("0123456789", min_size=0, max_size=15)


@settings(max_examples=500, deadline=None)
@given(seq=digits, track=st.text("abcz_A-", max_size=18), chunk=digits, ts=digits,
       payload=st.text(B64 + "=", max_size=40), sid=st.text(SID + "\"", max_size=66))
def test_random_frames(seq: str, track: str, chunk: str, ts: str, payload: str, sid: str) -> None:
    same(frame(seq, track, chunk, ts, payload, sid))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    same(text)
    same(frame()[: len(text) % 120] + text)


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(0, 2**62), audio=st.text(B64 + "=", max_size=2000))
def test_append_message_is_append_json_encoded(seq: int, audio: str) -> None:
    data = fastwire.append_message(APPEND_HEAD, seq, audio)
    assert data == _append_message(APPEND_HEAD, seq, audio) == Dialect.append_json(audio, seq).encode()
    assert json.loads(data) == {"type": "input_audio_buffer.append", "event_id": f"aud_{seq}", "audio": audio}


def test_append_message_takes_any_text_the_long_way() -> None:
    for head, audio in (("h\u00e9", "abc"), (APPEND_HEAD, "\u20ac\U0001f600"), ("", "")):
        assert fastwire.append_message(head, 7, audio) == _append_message(head, 7, audio)
    with pytest.raises(TypeError):
        fastwire.append_message(APPEND_HEAD, "7", "abc")
    with pytest.raises(TypeError):
        fastwire.append_message(APPEND_HEAD, 7)
    with pytest.raises(OverflowError):
        fastwire.append_message(APPEND_HEAD, 2**70, "abc")


DELTA_TYPES = {GA: "response.output_audio.delta", PREVIEW: "response.audio.delta"}


def delta(kind: str = "response.output_audio.delta", eid: str = "event_B1", rid: str = "resp_C2", iid: str = "item_C3",
          out: str = "0", ci: str = "0", audio: str = "f39/fw==", sp: str = "") -> str:
    return ('{"type":%s"%s",%s"event_id":%s"%s",%s"response_id":%s"%s",%s"item_id":%s"%s",%s"output_index":%s%s,'
            '%s"content_index":%s%s,%s"delta":%s"%s"}' % (sp, kind, sp, sp, eid, sp, sp, rid, sp, sp, iid, sp, sp, out,
                                                          sp, sp, ci, sp, sp, audio))


def same_delta(dialect: Dialect, text: str) -> tuple[str, str, str, int] | None:
    expected = dialect.pattern_fields(text)
    assert dialect.audio_delta_fields(text) == expected, text[:200]
    return expected


def test_the_delta_reader_is_the_compiled_one() -> None:
    for dialect in DELTA_TYPES:
        assert dialect.audio_delta_fields.func is fastwire.delta_fields  # type: ignore[attr-defined]


def test_a_delta_and_each_bound_of_its_pattern() -> None:
    for dialect, kind in DELTA_TYPES.items():
        assert same_delta(dialect, delta(kind)) == ("resp_C2", "item_C3", "f39/fw==", 0)
        assert same_delta(dialect, delta(kind, sp=" ", ci="123456789")) == ("resp_C2", "item_C3", "f39/fw==", 123456789)
        assert same_delta(dialect, delta(kind, audio="")) == ("resp_C2", "item_C3", "", 0)
        assert same_delta(dialect, delta(kind, rid="", iid="\x7f~ ")) == ("", "\x7f~ ", "f39/fw==", 0)
        for bad in (delta(kind, sp="  "), delta(kind, ci="1234567890"), delta(kind, out=""), delta(kind, rid="a\\b"),
                    delta(kind, iid="a\x1fb"), delta(kind, audio='a"b'), delta(kind, audio="a\\/b"), delta(kind) + " ",
                    delta(kind)[:-1], delta(kind)[:-2], delta(kind + "x"), delta(kind[:-1]), "", "{"):
            assert same_delta(dialect, bad) is None, bad
        for other in (delta(kind, iid="it\u00e9m"), delta(kind, ci="\u0661"), delta(kind, audio="\u00e9")):  # not ASCII
            assert same_delta(dialect, other) is not None, other


def test_every_single_character_mutation_of_a_delta() -> None:
    for dialect, kind in DELTA_TYPES.items():
        text = delta(kind, ci="12", audio="/+9aZz0A")
        alphabet = sorted(set(text) | {" ", "\\", "\x00", "\u00e9", "7"})
        for i in range(len(text) + 1):
            same_delta(dialect, text[:i] + text[i + 1:])
            for c in alphabet:
                same_delta(dialect, text[:i] + c + text[i:])
                same_delta(dialect, text[:i] + c + text[i + 1:])


ids = st.text(st.characters(min_codepoint=0, max_codepoint=0x7f), max_size=12)


@settings(max_examples=500, deadline=None)
@given(eid=ids, rid=ids, iid=ids, out=st.text("0123456789", max_size=11), ci=st.text("0123456789 ", max_size=11),
       audio=st.text(B64 + "=\"\\ }", max_size=40), sp=st.sampled_from(["", " ", "  "]), ga=st.booleans())
def test_random_deltas(eid: str, rid: str, iid: str, out: str, ci: str, audio: str, sp: str, ga: bool) -> None:
    dialect = GA if ga else PREVIEW
    same_delta(dialect, delta(DELTA_TYPES[dialect], eid, rid, iid, out, ci, audio, sp))
    same_delta(dialect, delta(DELTA_TYPES[PREVIEW if ga else GA], eid, rid, iid, out, ci, audio, sp))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_as_a_delta(text: str) -> None:
    same_delta(GA, text)
    same_delta(GA, delta()[: len(text) % 160] + text)
