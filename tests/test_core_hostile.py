"""Hostile input and faults at the call core, with explicit clocks (the Timeline driver of
tests/test_core_timelines.py): bad-frame floods, bad model audio, bounded agent audio, the model
connect budget and giving the call up, transcript redaction."""
from __future__ import annotations

import base64
import binascii
from pathlib import Path

import pytest

from tests.test_core_timelines import (
    SID, Timeline, assert_call_over, cmds, frame, intents, logs, of, pcm24, pos, ulaw,
)
from voicegw.audio.transcode import ModelToCaller, b64_decoded_len
from voicegw.call.actions import CloseModel, Control, EndCall, OpenModel, RunTool, ToCaller
from voicegw.call.agentaudio import MAX_BAD_AUDIO_LOGS, MAX_PLAY_BYTES, MAX_QUEUED_AUDIO_MS
from voicegw.call.redact import Redactor, digits_of, luhn_ok, mask_kinds
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel
from voicegw.tools.contract import ToolOutcome

APOLOGY = ulaw(1500, fill=0x55)  # 1.5 s of "we cannot take your call" (mu-law, base64)


def bad(t: Timeline, n: int, over_s: float = 1.0) -> None:
    """`n` bad frames spread evenly over the next `over_s` seconds; the clock ends there."""
    start = t.now
    for i in range(n):
        t.at(start + over_s * i / n)
        t.stream(tel.BadFrame("not JSON"))
    t.at(start + over_s)


def ended_at(t: Timeline) -> float:
    return [a.entry.t for a in t.actions if getattr(a, "entry", None) is not None and a.entry.kind == "call.ended"][0]


def played(acts: list) -> bytes:  # type: ignore[type-arg]
    return b"".join(base64.b64decode(p.payload_b64) for p in intents(acts, tel.PlayAudio))


# ======================================================================== 2. bad frames
def test_a_burst_of_bad_frames_is_logged_counted_and_survived() -> None:
    t = Timeline()
    bad(t, 2000, over_s=1.5)  # 1,333 a second, for 1.5 s
    t.at(t.now + 1.0)
    bad(t, 2000, over_s=1.0)  # and again a second later
    assert not t.core.ended
    assert len([d for d in logs(t.actions, "error") if d["code"] == "bad_frame"]) == 20  # the first 20 only
    t.stream(tel.StreamStopped())
    assert logs(t.actions, "call.ended")[0]["bad_frames"] == 4000
    assert_call_over(t, "caller_hangup")


def test_repeated_start_frames_are_bad_frames_counted_and_their_logs_capped() -> None:
    t = Timeline()  # its stream has started
    for i in range(500):
        t.at(1.0 + i / 1000)
        t.stream(tel.StreamStarted(stream_sid=f"MZ{i}", call_sid="CA1"))
    assert not t.core.ended and t.core.stream_sid == SID
    dup = [d for d in logs(t.actions, "error") if d["code"] == "duplicate_start"]
    assert len(dup) == 20 and "second start frame" in dup[0]["message"]
    t.stream(tel.StreamStopped())
    assert logs(t.actions, "call.ended")[0]["bad_frames"] == 500
    assert_call_over(t, "caller_hangup")


def test_a_sustained_flood_of_bad_frames_ends_the_call() -> None:
    t = Timeline()
    t.at(1.0)
    for second in range(30):
        bad(t, 60, over_s=1.0)  # 60 a second, every second
        if second < 29:
            assert not t.core.ended, f"ended after {second + 1} s"
    assert t.core.ended
    err = [d for d in logs(t.actions, "error") if d["code"] == "bad_frames"]
    assert len(err) == 1 and "30 s" in err[0]["message"]
    assert_call_over(t, "bad_frames")


@pytest.mark.parametrize("gap", ["quiet_second", "fifty_only"])
def test_a_flood_with_one_gap_second_starts_counting_again(gap: str) -> None:
    t = Timeline()
    t.at(1.0)
    for _ in range(29):
        bad(t, 60, over_s=1.0)
    bad(t, 0 if gap == "quiet_second" else 50, over_s=1.0)  # not over 50: the streak is broken
    for _ in range(29):
        bad(t, 60, over_s=1.0)
    assert not t.core.ended
    bad(t, 60, over_s=1.0)
    assert_call_over(t, "bad_frames")


# ============================================================== 3. model audio, bounded
@pytest.mark.parametrize("audio_mode", ["g711_ulaw", "pcm16"])
@pytest.mark.parametrize("junk", ["not base64!", "AAA", "AA=A", "AAAA====", "QUJD\nREVG", "=" * 8])
def test_bad_audio_delta_is_logged_and_skipped_never_a_reconnect(audio_mode: str, junk: str) -> None:
    t = Timeline(audio_mode=audio_mode)
    good = ulaw(100) if audio_mode == "g711_ulaw" else pcm24(100)
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "a1", "message"))
    acts = t.model(ev.AudioDelta("r1", "a1", junk))  # would raise binascii.Error in the converter
    assert intents(acts) == [] and of(acts, OpenModel) == []
    assert [d["code"] for d in logs(acts, "error")] == ["bad_audio"]
    assert t.core.responses.produced.get("a1", 0.0) == 0.0  # nothing was produced by it
    acts = t.model(ev.AudioDelta("r1", "a1", good))  # the next delta plays
    assert len(intents(acts, tel.PlayAudio)) == 1 and not t.core.ended


def test_bad_audio_logs_are_rate_limited() -> None:
    t = Timeline()
    t.model(ev.ResponseStarted("r1"))
    for _ in range(50):
        t.model(ev.AudioDelta("r1", "a1", "%%%%"))
    assert len(logs(t.actions, "error")) == MAX_BAD_AUDIO_LOGS
    assert "counted, not logged" in logs(t.actions, "error")[-1]["message"]


def test_a_converter_failure_costs_the_delta_only(monkeypatch: pytest.MonkeyPatch) -> None:
    t = Timeline(audio_mode="pcm16")
    t.model(ev.ResponseStarted("r1"))

    def boom(self: ModelToCaller, b64: str) -> str:
        raise ValueError("resampler state")

    monkeypatch.setattr(ModelToCaller, "convert", boom)
    acts = t.model(ev.AudioDelta("r1", "a1", pcm24(100)))
    assert [d["code"] for d in logs(acts, "error")] == ["bad_audio"] and intents(acts) == []
    monkeypatch.undo()
    assert intents(t.model(ev.AudioDelta("r1", "a1", pcm24(100))), tel.PlayAudio)


@pytest.mark.parametrize("audio_mode, delta", [("g711_ulaw", ulaw(3500)), ("pcm16", pcm24(3500))])
def test_a_large_delta_goes_out_in_frames_of_at_most_a_second_with_one_mark(audio_mode: str, delta: str) -> None:
    t = Timeline(audio_mode=audio_mode)
    t.model(ev.ResponseStarted("r1"))
    acts = t.model(ev.AudioDelta("r1", "a1", delta))
    sent = [a.intent for a in acts if isinstance(a, ToCaller)]
    plays = [i for i in sent if isinstance(i, tel.PlayAudio)]
    assert len(plays) == 4 and isinstance(sent[-1], tel.PlayMark) and len(sent) == 5
    pieces = [base64.b64decode(p.payload_b64, validate=True) for p in plays]
    assert all(len(p) <= MAX_PLAY_BYTES <= 8000 for p in pieces)
    total = b"".join(pieces)
    if audio_mode == "g711_ulaw":
        assert total == base64.b64decode(delta)  # passthrough: the same bytes, re-framed
    assert len(total) == sum(b64_decoded_len(p.payload_b64) for p in plays)
    # playout accounting covers the batch: its one mark closes all of it
    assert t.core.playout.queued_ms() == pytest.approx(len(total) / 8, abs=5)


def test_queued_agent_audio_is_capped_and_accounting_stays_true() -> None:
    t = Timeline()
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "a1", "message"))
    for _ in range(130):  # 130 s of audio, far faster than real time
        t.model(ev.AudioDelta("r1", "a1", ulaw(1000)))
    played_ms = sum(b64_decoded_len(i.payload_b64) for i in intents(t.actions, tel.PlayAudio)) / 8
    assert played_ms == MAX_QUEUED_AUDIO_MS
    capped = [d for d in logs(t.actions, "error") if d["code"] == "audio_capped"]
    assert len(capped) == 1  # logged once for the response
    assert t.core.responses.produced["a1"] == 130_000  # what the model made, dropped audio included
    t.model(ev.AudioDone("r1", "a1"))
    t.model(ev.ResponseDone("r1", "completed"))
    # the caller talks over it 2 s in: truncated at what was heard, not at what was produced
    t.advance(2.0)  # played in real time: two chunks acknowledged
    acts = t.model(ev.SpeechStarted(audio_start_ms=2000))
    assert intents(acts) == [tel.ClearPlayback()]
    trunc = cmds(acts, kind=ev.TruncateItem)
    assert len(trunc) == 1 and 1900 <= trunc[0].audio_end_ms <= 2000
    # the next answer plays again: the cap was for that response
    t.agent_starts("r2", "a2", "Sure.", ms=500)
    assert t.core.playout.queued_ms() == 500


# =============================================================== 4. model connect budget
def test_connect_attempts_share_the_budget_then_the_call_is_given_up_with_the_apology() -> None:
    t = Timeline(connect=False, unavailable_audio_b64=APOLOGY)
    t.stream(tel.StreamStarted(stream_sid=SID, call_sid="CA1"))
    opened = [OpenModel(1, 0.0, 4.0)]
    for at in (1.0, 2.0, 3.0):  # each attempt fails after a while (HTTP 500, slowly)
        t.at(at)
        acts = t.model_down(opened[-1].link, "HTTP 500")
        opened += of(acts, OpenModel)
    delays = [o.delay_s for o in opened[1:]]
    assert [o.timeout_s for o in opened[1:]] == [pytest.approx(4.0 - at - d) for at, d in zip((1.0, 2.0, 3.0), delays)]
    assert logs(t.actions, "call.ended") == []
    t.at(3.9)
    acts = t.model_down(opened[-1].link, "HTTP 500")  # nothing left of the budget
    assert of(acts, OpenModel) == []
    err = [d for d in logs(acts, "error") if d["code"] == "model_unavailable"]
    assert len(err) == 1 and "HTTP 500" in err[0]["message"]
    assert played(acts) == base64.b64decode(APOLOGY) and len(intents(acts, tel.PlayMark)) == 1
    assert not t.core.ended  # the apology plays first
    t.advance(1.49)
    assert not t.core.ended
    t.advance(0.02)
    assert ended_at(t) == pytest.approx(5.4)
    assert_call_over(t, "model_unavailable")
    assert of(t.actions, Control) == []


def test_an_attempt_that_never_answers_is_abandoned_at_the_budget() -> None:
    t = Timeline(connect=False, unavailable_audio_b64=APOLOGY, overflow_number="+15550100")
    t.stream(tel.StreamStarted(stream_sid=SID, call_sid="CA1"))
    assert t.core.next_deadline() == 4.0
    acts = t.advance(4.0)
    assert t.now == 4.0 and CloseModel(1) in acts
    assert pos(acts, CloseModel) < pos(acts, lambda a: isinstance(a, ToCaller))
    assert not t.core.ended
    assert t.model(ev.SessionStarted("late"), link=1) == []  # the late answer is ignored
    acts = t.advance(2.0)
    assert pos(acts, Control) < pos(acts, EndCall)
    assert of(acts, Control) == [Control("transfer", "+15550100")]
    assert_call_over(t, "model_unavailable")
    assert ended_at(t) == pytest.approx(5.5)


def test_given_up_before_the_stream_started_the_apology_waits_for_it() -> None:
    t = Timeline(connect=False, unavailable_audio_b64=APOLOGY)
    acts = t.model_down(1, "HTTP 401 (check the API key)", retryable=False)  # cannot heal: at once
    assert intents(acts) == [] and not t.core.ended
    t.advance(9.0)  # the stream is slow to start (a pre-warm): still waiting with the apology held
    t.stream(tel.MarkPlayed("stray"))  # anything that asks "may we leave now?" must find the apology held
    assert not t.core.ended
    acts = t.stream(tel.StreamStarted(stream_sid=SID, call_sid="CA1"))
    assert played(acts) == base64.b64decode(APOLOGY)
    t.advance(1.6)
    assert_call_over(t, "model_unavailable")
    assert ended_at(t) == pytest.approx(10.5)


@pytest.mark.parametrize("overflow", [None, "+15550100"])
def test_without_apology_audio_the_call_is_given_up_at_once(overflow: str | None) -> None:
    t = Timeline(connect=False, overflow_number=overflow)
    acts = t.model_down(1, "HTTP 404", retryable=False)
    assert of(acts, Control) == ([Control("transfer", overflow)] if overflow else [])
    assert_call_over(t, "model_unavailable")


def test_a_reconnect_outage_has_its_own_budget_and_gives_up_as_model_closed() -> None:
    t = Timeline(unavailable_audio_b64=APOLOGY)
    t.caller_says("u1", "Hello?")
    t.at(30.0)
    acts = t.model_down(1, "connection reset")
    assert of(acts, OpenModel) == [OpenModel(2, 0.0, 4.0)]
    assert t.core.next_deadline() == 34.0
    acts = t.advance(4.0)  # the reconnect hangs
    assert CloseModel(2) in acts
    err = [d for d in logs(acts, "error") if d["code"] == "model_closed"]
    assert len(err) == 1 and "4 s connect budget" in err[0]["message"]
    t.advance(2.0)
    assert_call_over(t, "model_closed")


# ====================================================================== 5. redaction
def test_redact_kinds_phone_card_email() -> None:
    kinds = ("phone", "card", "email")
    assert mask_kinds("call me on +1 (555) 010-0199 please", kinds) == "call me on [phone] please"
    assert mask_kinds("it's five five five, one two three four", kinds) == "it's [phone]"
    assert mask_kinds("my card is 4111 1111 1111 1111.", kinds) == "my card is [card]."
    assert mask_kinds("4111-1111-1111-1112", kinds) == "[phone]"  # not Luhn-valid: a long number
    assert mask_kinds("mail ada.l@example.co.uk or ada dot l at example dot com", kinds) == "mail [email] or [email]"
    # ordinary numbers and words stay
    assert mask_kinds("order 1234 for two at 8 on the 21st", kinds) == "order 1234 for two at 8 on the 21st"
    assert mask_kinds("one table for two", kinds) == "one table for two"
    assert mask_kinds("+1 555 0100", ("email",)) == "+1 555 0100"
    assert digits_of("Five 5-five") == "555"
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_tool_values_are_masked_in_any_spacing_and_as_digit_words() -> None:
    r = Redactor()
    r.learn(["+1 555-0100", "Ada Lovelace", "42", "yes"])  # too-short values are not masks
    assert r.mask("that's 1 555 0100, right?") == "that's [redacted], right?"
    assert r.mask("one five five five zero one zero zero") == "[redacted]"
    assert r.mask("ada lovelace speaking about 42") == "[redacted] speaking about 42"
    assert r.mask("15550100123") == "15550100123"  # part of a longer number: not this value


def test_a_tools_redact_paths_keep_its_arguments_out_of_the_log_from_the_first_call() -> None:
    t = Timeline(tool_redact={"charge": (("card",), ("holder", "email"))})
    t.caller_says("u1", "My card is 4242 4242 4242 4242.")
    acts = t.tool_call("r1", "call_1", "charge",
                       '{"card": "4242424242424242", "holder": {"email": "ada@example.com", "name": "Ada"}}')
    call = logs(acts, "tool.call")[0]
    assert call["arguments"] == {"card": "[redacted]", "holder": {"email": "[redacted]", "name": "Ada"}}
    # the values are known from this moment: the earlier transcript is logged again, masked
    assert {d["item_id"]: d["text"] for d in logs(acts, "transcript")} == {"u1": "My card is [redacted]."}
    run = [a for a in acts if isinstance(a, RunTool)][0]
    assert "4242424242424242" in run.arguments  # the tool itself gets the real value
    t.caller_says("u2", "ada@example.com is my email")
    assert logs(t.actions, "transcript")[-1]["text"] == "[redacted] is my email"
    t.tool_call("r2", "call_2", "other", '{"card": "4242424242424242"}')  # a tool without redact paths
    assert logs(t.actions, "tool.call")[-1]["arguments"] == {"card": "[redacted]"}  # the learned value


def test_a_tool_redact_value_masks_later_and_earlier_transcripts() -> None:
    t = Timeline()
    t.caller_says("u1", "My card is 4242 4242 4242 4242.")
    t.agent_says("r1", "a1", "Thanks, 4242 4242 4242 4242, one moment.")
    t.tool_call("r2", "call_1", "charge", '{"card": "4242424242424242"}')
    assert logs(t.actions, "tool.call")[0]["arguments"] == {"card": "4242424242424242"}  # not known yet
    t.at(1.0)
    acts = t.tool_done("call_1", ToolOutcome('{"ok": true}', redacted_values=("4242424242424242",)))
    again = logs(acts, "transcript")
    assert {d["item_id"]: d["text"] for d in again} == {"u1": "My card is [redacted].",
                                                        "a1": "Thanks, [redacted], one moment."}
    assert pos(acts, lambda a: getattr(a, "entry", None) is not None and a.entry.kind == "transcript") \
        < pos(acts, lambda a: getattr(a, "entry", None) is not None and a.entry.kind == "tool.result")
    t.caller_says("u2", "Was 4242-4242-4242-4242 charged?")
    t.agent_says("r3", "a3", "Yes, card four two four two four two four two four two four two four two four two.")
    later = {d["item_id"]: d["text"] for d in logs(t.actions, "transcript")}
    assert later["u2"] == "Was [redacted] charged?"
    assert later["a3"] == "Yes, card [redacted]."
    t.tool_call("r4", "call_2", "refund", '{"card": "4242424242424242", "note": "x"}')
    assert logs(t.actions, "tool.call")[-1]["arguments"] == {"card": "[redacted]", "note": "x"}


def test_agent_redact_kinds_mask_both_sides_and_cut_transcripts() -> None:
    t = Timeline(redact_transcripts=("phone", "email"))
    t.caller_says("u1", "Reach me at ada@example.com or 555 010 0199.")
    t.agent_starts("r1", "a1", "I will call 555 010 0199 and write to ada@example.com today", ms=2000)
    t.at(1.5)
    t.model(ev.SpeechStarted(audio_start_ms=1500))  # barge-in: the cut transcript is masked too
    texts = [d["text"] for d in logs(t.actions, "transcript")]
    assert texts[0] == "Reach me at [email] or [phone]."
    assert texts[1].startswith("I will call [phone]") and texts[1].endswith("…")
    assert "555" not in str(logs(t.actions)) and "ada@" not in str(logs(t.actions))


def test_the_runner_reports_the_values_at_its_redact_paths(tmp_path: Path) -> None:
    import asyncio
    import textwrap

    from voicegw.config import Settings, load_agent
    from voicegw.tools.contract import ToolContext
    from voicegw.tools.runner import load_toolset

    path = tmp_path / "agent.yaml"
    path.write_text("name: t\ntools:\n" + textwrap.indent(textwrap.dedent("""
        - name: lookup_customer
          description: find a customer by phone
          parameters: {type: object, properties: {phone: {type: string}}, required: [phone]}
          redact: [phone, customer.email, customer.cards]
          static:
            result: {customer: {name: Ada, email: ada@example.com, cards: ["4242", "1881"]}}
        """).strip("\n"), "  ") + "\n")
    tools = load_toolset(load_agent(path), Settings())
    ctx = ToolContext("CA1", "MZ1", "+15550001111", "+15550002222", "t")
    out = asyncio.run(tools.run(ctx, "lookup_customer", '{"phone": "+1 555 0100"}'))
    assert out.ok, out.output
    assert out.redacted_values == ("+1 555 0100", "ada@example.com", "4242", "1881")
    assert out.logged_result["customer"] == {"name": "Ada", "email": "[redacted]", "cards": "[redacted]"}


def test_frames_sent_by_the_timeline_are_valid() -> None:  # guards the helpers used above
    assert binascii.a2b_base64(frame(3), strict_mode=True)
