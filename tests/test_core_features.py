"""Call timelines for outbound answering-machine verdicts, the post-call summary and extraction, and
warm transfer, driven through the sans-I/O core with the `Timeline` of test_core_timelines."""
from __future__ import annotations

import json

from tests.test_core_timelines import (
    Timeline, assert_call_over, cmds, in_conversation, intents, logs, of, pos, responses_created,
)
from voicegw.call.actions import AsideDone, Control, EndCall, RunTool
from voicegw.call.asides import POST_CALL, RECORD_TOOL, TRANSFER_SUMMARY
from voicegw.call.core import SAY_EXACTLY
from voicegw.call.transfer import FALLBACK_SUMMARY
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel
from voicegw.tools.contract import ToolOutcome, Transfer

SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}, "resolved": {"type": "boolean"}},
          "required": ["order_id", "resolved"]}


def appended(acts: list) -> list:
    return cmds(acts, kind=ev.AppendAudio)


# ====================================================================== answering machine
def test_outbound_call_waits_for_the_verdict_then_greets_a_person() -> None:
    t = Timeline(await_answer=True, greeting_text="Hi, this is Acme calling.")
    assert responses_created(t.actions) == []  # the model is ready, the stream is up: still no greeting
    assert appended(t.caller_frames(10)) == []  # "Hello?" before the verdict never reaches the model
    t.at(2.5)
    acts = t.feed(t.core.on_answered_by("human", t.now, 2400))
    assert logs(acts, "amd") == [{"answered_by": "human", "detection_ms": 2400, "waited": True}]
    assert [c.instructions for c in responses_created(acts)] == [SAY_EXACTLY.format(text="Hi, this is Acme calling.")]
    assert len(appended(t.caller_frames(3))) == 3  # and from now on the caller is heard


def test_a_verdict_before_the_model_is_up_greets_once_it_is() -> None:
    t = Timeline(connect=False, await_answer=True, greeting_text="Hi!")
    assert t.feed(t.core.on_answered_by("human", t.now)) and responses_created(t.actions) == []
    t.model(ev.SessionStarted("sess-1"), link=1)
    assert [c.instructions for c in responses_created(t.actions)] == [SAY_EXACTLY.format(text="Hi!")]


def test_voicemail_gets_the_message_after_the_beep_then_the_call_hangs_up() -> None:
    t = Timeline(await_answer=True, greeting_text="Hi!", voicemail_message="Please call Acme back.")
    t.caller_frames(5)
    t.at(1.0)
    acts = t.feed(t.core.on_answered_by("machine_start", t.now))
    assert responses_created(acts) == [] and not t.core.ended  # the greeting is still playing: wait for the beep
    t.at(6.0)
    acts = t.feed(t.core.on_answered_by("machine_end_beep", t.now))
    said = responses_created(acts)
    assert [c.instructions for c in said] == [SAY_EXACTLY.format(text="Please call Acme back.")]
    assert said[0].conversation == "none"
    assert appended(t.caller_frames(5)) == []  # the machine is recording: nothing goes to the model
    t.agent_says("r1", "vm1", "Please call Acme back.", ms=2000, metadata={"voicegw": "goodbye"}, conversation="none")
    assert of(t.advance(1.0), EndCall) == []  # still being said
    acts = t.advance(2.0)
    assert acts[0] == Control("hangup")
    assert_call_over(t, "voicemail_left")
    assert not any(c.instructions == SAY_EXACTLY.format(text="Hi!") for c in responses_created(t.actions))


def test_voicemail_policy_hang_up_leaves_at_once() -> None:
    t = Timeline(await_answer=True, greeting_text="Hi!")
    acts = t.feed(t.core.on_answered_by("machine_end_silence", t.now))
    assert responses_created(acts) == []
    assert acts[pos(acts, Control)] == Control("hangup")
    assert_call_over(t, "voicemail")


def test_no_verdict_in_time_greets_as_for_a_person() -> None:
    t = Timeline(await_answer=True, greeting_text="Hi!", answer_timeout_s=8.0)
    assert responses_created(t.advance(7.9)) == []
    acts = t.advance(0.2)
    assert logs(acts, "error")[0]["code"] == "amd_timeout"
    assert logs(acts, "amd")[0]["answered_by"] == "unknown"
    assert [c.instructions for c in responses_created(acts)] == [SAY_EXACTLY.format(text="Hi!")]


def test_inbound_calls_are_never_gated() -> None:
    t = Timeline(greeting_text="Hi!")
    assert len(responses_created(t.actions)) == 1
    assert len(appended(t.caller_frames(3))) == 3
    acts = t.core.on_answered_by("human", t.now)  # a verdict nobody waited for is recorded, nothing more
    assert len(acts) == 1 and logs(acts, "amd") == [{"answered_by": "human", "detection_ms": None, "waited": False}]


# ==================================================================== post-call answers
def _conversation(t: Timeline) -> None:
    t.caller_says("u1", "Where is my order 4417?")
    t.agent_says("r1", "a1", "Order 4417 ships tomorrow.")


def test_post_call_summary_and_extraction_are_asked_after_the_call_and_logged_validated() -> None:
    t = Timeline(post_call_summary=True, post_call_schema=SCHEMA, post_call_timeout_s=12.0)
    _conversation(t)
    t.at(5.0)
    acts = t.stream(tel.StreamStopped())
    ask = responses_created(acts)
    assert len(ask) == 1 and ask[0].conversation == "none" and ask[0].modalities == ("text",)
    assert ask[0].tool_choice == RECORD_TOOL and ask[0].metadata == {"voicegw": POST_CALL}
    params = ask[0].tools[0].parameters
    assert params["properties"]["extraction"] == SCHEMA and set(params["required"]) == {"summary", "extraction"}
    assert acts[-1] == EndCall("caller_hangup", 12.0)  # the model link lingers for the answer
    t.at(6.0)
    t.model(ev.ResponseStarted("rs", metadata={"voicegw": POST_CALL}, conversation="none"))
    args = {"summary": "Caller asked about order 4417; it ships tomorrow.",
            "extraction": {"order_id": "4417", "resolved": True}}
    t.model(ev.FunctionCall("rs", "fc", "c1", RECORD_TOOL, json.dumps(args)))
    acts = t.model(ev.ResponseDone("rs", "completed"))
    assert logs(acts, POST_CALL) == [{"duration_ms": 1000, "summary": args["summary"],
                                      "extraction": args["extraction"], "extraction_valid": True}]
    assert acts[-1] == AsideDone(POST_CALL)
    assert of(t.actions, RunTool) == []  # the record function is never run as a tool


def test_an_extraction_that_breaks_the_schema_is_kept_and_flagged() -> None:
    t = Timeline(post_call_schema=SCHEMA)
    _conversation(t)
    t.stream(tel.StreamStopped())
    t.model(ev.ResponseStarted("rs", metadata={"voicegw": POST_CALL}, conversation="none"))
    t.model(ev.FunctionCall("rs", "fc", "c1", RECORD_TOOL, json.dumps({"extraction": {"order_id": 4417}})))
    entry = logs(t.model(ev.ResponseDone("rs", "completed")), POST_CALL)[0]
    assert entry["extraction"] == {"order_id": 4417} and entry["extraction_valid"] is False
    assert "summary" not in entry  # not asked for
    assert any("resolved" in e for e in entry["extraction_errors"]) and any("order_id" in e for e in entry["extraction_errors"])


def test_post_call_answer_that_never_comes_is_logged_as_such() -> None:
    t = Timeline(post_call_summary=True)
    _conversation(t)
    t.stream(tel.StreamStopped())
    acts = t.core.post_call_timed_out(t.now + 15)
    assert "no answer" in logs(acts, POST_CALL)[0]["error"]
    assert t.core.post_call_timed_out(t.now + 16) == []


def test_no_post_call_question_without_a_conversation_or_without_a_model() -> None:
    t = Timeline(post_call_summary=True)
    acts = t.stream(tel.StreamStopped())
    assert responses_created(acts) == [] and acts[-1] == EndCall("caller_hangup")
    t = Timeline(post_call_summary=True)
    _conversation(t)
    t.model_down(1, retryable=False)  # the apology plays; the caller hangs up meanwhile
    t.stream(tel.StreamStopped())
    assert t.core.ended
    assert logs(t.actions, POST_CALL) == [{"error": "no model session at the end of the call"}]


# ======================================================================== warm transfer
def _warm(t: Timeline, timeout_s: float = 20.0) -> None:
    t.caller_says("u1", "Can I talk to a person about my refund?")
    t.tool_call("r1", "call_1", "transfer_call")
    t.at(0.2)
    acts = t.tool_done("call_1", ToolOutcome('{"status": "connecting"}',
                                             effect=Transfer("+15550100", None, "warm", timeout_s)))
    asked = [c for c in responses_created(acts) if (c.metadata or {}).get("voicegw") == TRANSFER_SUMMARY]
    assert len(asked) == 1 and asked[0].tool_choice == RECORD_TOOL and asked[0].conversation == "none"
    assert len(in_conversation(acts)) == 1  # the follow-up: "I'm connecting you"
    assert of(acts, Control) == []


def _ringing(t: Timeline, summary: str | None = "Refund question for order 4417.") -> list:
    t.model(ev.ResponseStarted("rs", metadata={"voicegw": TRANSFER_SUMMARY}, conversation="none"))
    if summary is not None:
        t.model(ev.FunctionCall("rs", "fc", "c9", RECORD_TOOL, json.dumps({"summary": summary})))
    acts = t.model(ev.ResponseDone("rs", "completed" if summary is not None else "failed"))
    assert of(acts, Control) == []  # the caller has not heard "connecting you" yet
    t.at(0.5)
    t.agent_says("r2", "a2", "I'm connecting you to a colleague now.", ms=1500)
    assert of(t.advance(1.0), Control) == []
    return t.advance(1.0)


def test_warm_transfer_briefs_the_human_holds_the_caller_then_bridges() -> None:
    t = Timeline(hold_loop_ulaw=bytes(range(256)) * 40)
    _warm(t)
    acts = _ringing(t)
    control = acts[pos(acts, Control)]
    assert control == Control("warm_transfer", "+15550100", "Refund question for order 4417.", 20.0)
    assert logs(acts, "transfer")[-1]["phase"] == "dialing"
    assert intents(acts, tel.PlayAudio)  # hold music
    assert appended(t.caller_frames(10)) == []  # on hold: the model hears nothing
    more = t.advance(3.0)
    assert len(intents(more, tel.PlayAudio)) >= 2 and not t.core.ended  # the music goes on
    acts = t.feed(t.core.on_transfer_status("in-progress", t.now))
    assert intents(acts, tel.ClearPlayback)
    assert Control("join_transfer", "+15550100") in acts
    assert pos(acts, Control) < pos(acts, EndCall)
    assert_call_over(t, "transferred")


def test_warm_transfer_nobody_answers_returns_the_caller_to_the_agent() -> None:
    t = Timeline(hold_loop_ulaw=b"\xff" * 8000)
    _warm(t)
    _ringing(t, summary=None)  # no summary: the human hears the fallback line
    dialed = [a for a in t.actions if isinstance(a, Control) and a.kind == "warm_transfer"]
    assert dialed[0].announcement == FALLBACK_SUMMARY
    t.at(t.now + 5)
    acts = t.feed(t.core.on_transfer_status("no-answer", t.now))
    assert intents(acts, tel.ClearPlayback)
    assert logs(acts, "transfer")[-1] == {"mode": "warm", "phase": "not_answered", "status": "no-answer",
                                          "target": "+15550100"}
    told = in_conversation(acts)
    assert len(told) == 1 and "nobody answered" in (told[0].instructions or "")
    assert len(appended(t.caller_frames(3))) == 3 and not t.core.ended  # back with the agent
    assert t.core.on_transfer_status("in-progress", t.now) == []  # a late answer changes nothing


def test_warm_transfer_the_provider_never_reports_gives_up_and_cancels_the_leg() -> None:
    t = Timeline(hold_loop_ulaw=b"\xff" * 8000)
    _warm(t, timeout_s=10.0)
    _ringing(t)
    acts = t.advance(30.0)
    assert Control("cancel_transfer", "+15550100") in acts
    assert logs(acts, "transfer")[-1]["status"] == "timeout"
    assert not t.core.ended


def test_warm_transfer_that_cannot_be_dialed_returns_the_caller() -> None:
    t = Timeline(hold_loop_ulaw=b"\xff" * 8000)
    _warm(t)
    _ringing(t)
    acts = t.feed(t.core.on_control_failed("warm_transfer", "Twilio answered 400", t.now))
    assert logs(acts, "error")[0]["code"] == "control_failed"
    assert logs(acts, "transfer")[-1]["status"] == "failed"
    assert len(in_conversation(acts)) == 1
