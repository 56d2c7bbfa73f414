"""Call timelines at the core: events in with explicit clock values, actions out.

Each test drives `CallCore` directly through one scripted call -- tools, every way of leaving the
call, reconnects, rollovers, barge-in with a dry playout, keypad input -- and asserts on the actions
it returns. No sockets, no sleeps: `Timeline` holds the core and a clock, plays the audio the core
sends the way Twilio would (in real time, returning each mark when playback reaches it) and ticks
the core at its own `next_deadline()` times.
"""
from __future__ import annotations

import base64
import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import pytest

from voicegw.audio.transcode import b64_decoded_len
from voicegw.call import core as core_mod
from voicegw.call.actions import (
    Action, CancelTools, CloseModel, Control, EndCall, Log, OpenModel, RunTool, ToCaller, ToModel, UseAgent,
)
from voicegw.call.callerin import MARK_IDLE_S
from voicegw.call.core import SAY_EXACTLY, CallCore, CoreOptions
from voicegw.call.modellink import BACKOFF_S
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel
from voicegw.tools.contract import HangUp, SwitchAgent, ToolOutcome, Transfer

SID = "MZ00000000000000000000000000000001"
CFG = ev.SessionConfig(instructions="You book tables for Chez Voice.", audio_format="g711_ulaw")


def ulaw(ms: float, fill: int = 0x7F) -> str:
    """`ms` of 8 kHz mu-law, base64 (what the model sends in g711_ulaw mode, and Twilio frames)."""
    return base64.b64encode(bytes([fill]) * int(ms * 8)).decode()


def pcm24(ms: float) -> str:
    """`ms` of 24 kHz PCM16 (a quiet ramp), base64 (what the model sends in pcm16 mode)."""
    n = int(ms * 24)
    return base64.b64encode(b"".join(((i % 200) - 100).to_bytes(2, "little", signed=True) for i in range(n))).decode()


def frame(i: int) -> str:
    """A distinct 20 ms caller frame."""
    return ulaw(20, fill=i % 256)


class Timeline:
    """One call driven through `CallCore`, with a Twilio-like playout and a clock.

    Every action the core returns is kept in `actions` (in order); the query helpers split them by
    kind. Audio sent to the caller plays in real time from when it was sent (or when the audio
    before it finished); `advance` returns each mark when playback reaches it (unless `auto_ack`
    is off: the caller's audio then never finishes) and ticks the core at its deadlines.
    """

    def __init__(self, *, connect: bool = True, stream: bool = True, **options: Any) -> None:
        """`connect`: the first model session opens at once; `stream`: then the stream starts."""
        options.setdefault("session_config", CFG)
        options.setdefault("audio_mode", "g711_ulaw")
        self.opts = CoreOptions(**options)
        self.now = 0.0
        self.core = CallCore(self.opts, now=0.0)
        self.actions: list[Action] = []
        self.auto_ack = True
        self._marks: deque[tuple[str, float]] = deque()  # (mark, when playback reaches it)
        self._returned: list[str] = []  # marks Twilio gives back at once (cleared)
        self._play_end = 0.0
        self._frames = 0
        self.sent_frames: list[str] = []
        assert self.feed(self.core.start(self.now)) == [OpenModel(1, 0.0, self.opts.connect_budget_s)]
        if connect:
            first = self.model(ev.SessionStarted("sess-1"), link=1)
            assert first[0] == ToModel(ev.UpdateSession(self.opts.session_config), 1)
        if connect and stream:
            self.stream(tel.StreamStarted(stream_sid=SID, call_sid="CA1"))

    # ---------------------------------------------------------------------- feeding the core
    def feed(self, acts: list[Action]) -> list[Action]:
        for a in acts:
            if isinstance(a, ToCaller):
                intent = a.intent
                if isinstance(intent, tel.PlayAudio):
                    start = max(self.now, self._play_end)
                    self._play_end = start + b64_decoded_len(intent.payload_b64) / 8 / 1000
                elif isinstance(intent, tel.PlayMark):
                    self._marks.append((intent.name, self._play_end))
                else:  # clear: queued audio dropped, every pending mark comes back at once
                    self._returned += [name for name, _ in self._marks]
                    self._marks.clear()
                    self._play_end = self.now
        self.actions += acts
        return acts

    def at(self, now: float) -> None:
        assert now >= self.now, "time runs forward"
        self.now = now

    def model(self, e: ev.ServerEvent, link: int | None = None) -> list[Action]:
        n = self.core.link.live if link is None else link
        if type(e) is ev.AudioDelta:  # the bridge's hot entry first, as the bridge does
            due = self.core.next_deadline()
            acts = self.core.on_live_audio(e, self.now, n)
            if acts is not None:
                assert self.core.next_deadline() == due, "a live audio delta moved a deadline"
                return self.feed(acts)
        return self.feed(self.core.on_model(e, self.now, n))

    def stream(self, e: tel.StreamEvent) -> list[Action]:
        if type(e) is tel.CallerAudio:  # the bridge's hot entries, which skip the deadline check
            due = self.core.next_deadline()
            audio = self.core.caller_audio(e.payload_b64, self.now)  # the steady state's lane first
            if audio is not None:
                acts: list[Action] = [ToModel(ev.AppendAudio(audio), self.core.link.live)] if audio else []
            else:
                acts = self.core.on_caller_audio(e, self.now)
            assert self.core.next_deadline() == due, "a caller frame moved a deadline"
            return self.feed(acts)
        return self.feed(self.core.on_stream(e, self.now))

    def caller_frames(self, n: int) -> list[Action]:
        acts: list[Action] = []
        for _ in range(n):
            payload = frame(self._frames)
            self._frames += 1
            self.sent_frames.append(payload)
            acts += self.stream(tel.CallerAudio(payload, timestamp_ms=20 * self._frames))
        return acts

    def tool_done(self, call_id: str, outcome: ToolOutcome) -> list[Action]:
        return self.feed(self.core.on_tool_done(call_id, outcome, self.now))

    def model_down(self, link: int, reason: str = "lost", retryable: bool = True) -> list[Action]:
        return self.feed(self.core.on_model_down(link, reason, self.now, retryable))

    def advance(self, seconds: float) -> list[Action]:
        """Let `seconds` pass: marks come back as playback reaches them, the core is ticked at
        its deadlines. Returns the actions taken meanwhile."""
        target = self.now + seconds
        start = len(self.actions)
        stuck = 0
        while not self.core.ended:
            if self._returned:
                for name in self._returned:
                    self.stream(tel.MarkPlayed(name))
                self._returned = []
                continue
            mark_at = self._marks[0][1] if self._marks and self.auto_ack else math.inf
            due = self.core.next_deadline()
            due = math.inf if due is None else due
            t = min(mark_at, due)
            if t > target + 1e-9:
                break
            self.now = max(self.now, t)
            if mark_at <= due:
                self.stream(tel.MarkPlayed(self._marks.popleft()[0]))
                continue
            before = len(self.actions)
            self.feed(self.core.tick(self.now))
            nxt = self.core.next_deadline()
            if len(self.actions) == before and nxt is not None and nxt <= self.now and not self.core.ended:
                stuck += 1
                assert stuck < 3, f"deadline {nxt} is due at {self.now} but tick() does nothing with it"
        self.now = max(self.now, target)
        return self.actions[start:]

    # ------------------------------------------------------------------- scripted exchanges
    def caller_says(self, item: str, text: str, frames: int = 5) -> list[Action]:
        start = len(self.actions)
        self.model(ev.SpeechStarted(audio_start_ms=int(self.now * 1000)))
        self.caller_frames(frames)
        self.model(ev.SpeechStopped(audio_end_ms=int(self.now * 1000)))
        self.model(ev.InputCommitted(item))
        self.model(ev.InputTranscript(item, text))
        return self.actions[start:]

    def agent_starts(self, rid: str, item: str, text: str, ms: float = 300, **meta: Any) -> list[Action]:
        """A response begins and produces all its audio and transcript, not yet done."""
        start = len(self.actions)
        self.model(ev.ResponseStarted(rid, **meta))
        self.model(ev.OutputItemAdded(rid, item, "message", "assistant"))
        self.model(ev.AudioDelta(rid, item, ulaw(ms)))
        self.model(ev.TranscriptDelta(rid, item, text))
        return self.actions[start:]

    def agent_says(self, rid: str, item: str, text: str, ms: float = 300, **meta: Any) -> list[Action]:
        start = len(self.actions)
        self.agent_starts(rid, item, text, ms, **meta)
        self.model(ev.AudioDone(rid, item))
        self.model(ev.TranscriptDone(rid, item, text))
        self.model(ev.ResponseDone(rid, "completed"))
        return self.actions[start:]

    def tool_call(self, rid: str, call_id: str, name: str, arguments: str = "{}", done: bool = True) -> list[Action]:
        start = len(self.actions)
        if rid not in self.core.responses.kinds:
            self.model(ev.ResponseStarted(rid))
        self.model(ev.OutputItemAdded(rid, "fc_" + call_id, "function_call"))
        self.model(ev.FunctionCall(rid, "fc_" + call_id, call_id, name, arguments))
        if done:
            self.model(ev.ResponseDone(rid, "completed"))
        return self.actions[start:]

    # ------------------------------------------------------------------------------ queries
    def index(self) -> int:
        return len(self.actions)

    def since(self, i: int) -> list[Action]:
        return self.actions[i:]


def cmds(acts: Iterable[Action], link: int | None = None, kind: type | None = None) -> list[Any]:
    """Model commands in `acts` (for `link`, of type `kind`)."""
    return [a.command for a in acts if isinstance(a, ToModel) and (link is None or a.link == link)
            and (kind is None or isinstance(a.command, kind))]


def links(acts: Iterable[Action], kind: type | None = None) -> set[int]:
    return {a.link for a in acts if isinstance(a, ToModel) and (kind is None or isinstance(a.command, kind))}


def intents(acts: Iterable[Action], kind: type | None = None) -> list[Any]:
    return [a.intent for a in acts if isinstance(a, ToCaller) and (kind is None or isinstance(a.intent, kind))]


def logs(acts: Iterable[Action], kind: str | None = None) -> list[dict[str, Any]]:
    return [a.entry.data for a in acts if isinstance(a, Log) and (kind is None or a.entry.kind == kind)]


def of(acts: Iterable[Action], kind: type) -> list[Any]:
    return [a for a in acts if isinstance(a, kind)]


def pos(acts: list[Action], pred: Any) -> int:
    """Index of the first action matching `pred` (a type or a predicate)."""
    test = (lambda a: isinstance(a, pred)) if isinstance(pred, type) else pred
    for i, a in enumerate(acts):
        if test(a):
            return i
    raise AssertionError(f"no action matches {pred}")


def is_log(kind: str, **data: Any) -> Any:
    return lambda a: isinstance(a, Log) and a.entry.kind == kind and all(a.entry.data.get(k) == v
                                                                         for k, v in data.items())


def responses_created(acts: Iterable[Action], link: int | None = None) -> list[ev.CreateResponse]:
    return cmds(acts, link, ev.CreateResponse)


def oob_kind(c: ev.CreateResponse) -> str | None:
    return (c.metadata or {}).get("voicegw") if c.conversation == "none" else None


def in_conversation(acts: Iterable[Action], link: int | None = None) -> list[ev.CreateResponse]:
    return [c for c in responses_created(acts, link) if c.conversation != "none"]


def assert_call_over(t: Timeline, reason: str, agent_text: str | None = None) -> None:
    """EndCall is the last action; exactly one call.ended right before it; the agent's unfinished
    transcript logged before that; from then on every event is ignored."""
    acts = t.actions
    assert acts[-1] == EndCall(reason)
    assert len(of(acts, EndCall)) == 1
    ended = [i for i, a in enumerate(acts) if isinstance(a, Log) and a.entry.kind == "call.ended"]
    assert len(ended) == 1 and ended[0] < len(acts) - 1
    assert acts[ended[0]].entry.data["reason"] == reason  # type: ignore[union-attr]
    if agent_text is not None:
        spoken = [i for i, a in enumerate(acts) if isinstance(a, Log) and a.entry.kind == "transcript"
                  and a.entry.data["role"] == "agent" and a.entry.data["text"] == agent_text]
        assert spoken, f"the agent's words {agent_text!r} never reached the call log"
        assert spoken[0] < ended[0]
    c = t.core
    now = t.now + 1.0
    assert c.on_model(ev.AudioDelta("late", "late_item", ulaw(100)), now, c.link.live) == []
    assert c.on_model(ev.SessionStarted("late"), now, c.link.live + 1) == []
    assert c.on_stream(tel.CallerAudio(frame(1), 1), now) == []
    assert c.on_stream(tel.Dtmf("5"), now) == []
    assert c.on_stream(tel.StreamStopped(), now) == []
    assert c.on_tool_done("nope", ToolOutcome("{}"), now) == []
    assert c.on_model_down(c.link.live, "gone", now) == []
    assert c.on_telephony_lost("telephony_lost", now) == []
    assert c.tick(now + 3600) == []
    assert c.end("again", now) == []


# =============================================================================== 1. tools
def test_one_tool_call_runs_logs_and_gets_exactly_one_followup_after_the_response_is_done() -> None:
    t = Timeline()
    t.caller_says("u1", "Is there a table for two at eight?")
    t.model(ev.ResponseStarted("r1"))
    acts = t.model(ev.FunctionCall("r1", "fc1", "call_1", "check_availability", '{"party": 2, "time": "20:00"}'))
    assert of(acts, RunTool) == [RunTool("call_1", "check_availability", '{"party": 2, "time": "20:00"}', "r1")]
    assert logs(acts, "tool.call") == [{"call_id": "call_1", "name": "check_availability",
                                        "arguments": {"party": 2, "time": "20:00"}}]
    # the tool finishes before the model closes the response that called it: no follow-up yet
    t.at(0.4)
    acts = t.tool_done("call_1", ToolOutcome('{"free": true}', duration_ms=120.0, logged_result={"free": True}))
    assert logs(acts, "tool.result") == [{"call_id": "call_1", "name": "check_availability", "ok": True,
                                          "duration_ms": 120.0, "result": {"free": True}}]
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", '{"free": true}')]
    assert links(acts) == {1}
    t.at(0.5)
    acts = t.model(ev.ResponseDone("r1", "completed"))
    assert responses_created(acts) == [ev.CreateResponse()]
    # the follow-up answers; nothing asks for another response
    t.at(0.6)
    t.agent_says("r2", "a2", "Yes, we have a table at eight.")
    t.advance(2.0)
    assert len(responses_created(t.actions)) == 1
    assert len(of(t.actions, RunTool)) == 1


def test_one_tool_call_finishing_after_the_response_is_done_is_followed_up_once() -> None:
    t = Timeline()
    t.caller_says("u1", "Any table tonight?")
    acts = t.tool_call("r1", "call_1", "check_availability", "{}")
    assert len(of(acts, RunTool)) == 1 and responses_created(acts) == []
    t.at(1.0)
    acts = t.tool_done("call_1", ToolOutcome('{"free": false}'))
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", '{"free": false}'), ev.CreateResponse()]
    assert t.tool_done("call_1", ToolOutcome('{"free": false}')) == []  # a second outcome is ignored


def test_two_parallel_tool_calls_get_one_followup_after_both_finish() -> None:
    t = Timeline()
    t.caller_says("u1", "Book for two and text me the confirmation.")
    t.model(ev.ResponseStarted("r1"))
    t.tool_call("r1", "call_a", "book_table", '{"party": 2}', done=False)
    t.tool_call("r1", "call_b", "send_sms", '{"to": "+15550100"}', done=False)
    t.model(ev.ResponseDone("r1", "completed"))
    assert [r.call_id for r in of(t.actions, RunTool)] == ["call_a", "call_b"]
    t.at(0.5)
    acts = t.tool_done("call_b", ToolOutcome('{"sent": true}'))
    assert cmds(acts) == [ev.AddFunctionOutput("call_b", '{"sent": true}')]
    assert responses_created(acts) == []
    t.at(0.9)
    acts = t.tool_done("call_a", ToolOutcome('{"booked": true}'))
    assert cmds(acts) == [ev.AddFunctionOutput("call_a", '{"booked": true}'), ev.CreateResponse()]
    assert [d["call_id"] for d in logs(t.actions, "tool.result")] == ["call_b", "call_a"]
    assert len(responses_created(t.actions)) == 1


def test_a_filler_line_is_spoken_out_of_band_while_a_tool_runs() -> None:
    t = Timeline(fillers={"check_availability": "One moment while I check."})
    t.caller_says("u1", "Is Friday free?")
    acts = t.tool_call("r1", "call_1", "check_availability", '{"day": "friday"}')
    filler = [c for c in responses_created(acts) if oob_kind(c) == "filler"]
    assert filler == [ev.CreateResponse(instructions=SAY_EXACTLY.format(text="One moment while I check."),
                                        conversation="none", metadata={"voicegw": "filler"}, input=())]
    assert in_conversation(acts) == []
    # the filler is spoken; the tool finishes while it plays
    t.at(0.2)
    acts = t.agent_starts("f1", "fi1", "One moment while I check.", ms=800,
                          metadata={"voicegw": "filler"}, conversation="none")
    assert len(intents(acts, tel.PlayAudio)) == 1
    t.at(0.3)
    acts = t.tool_done("call_1", ToolOutcome('{"free": true}'))
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", '{"free": true}')]  # the filler is still speaking
    t.at(0.4)
    t.model(ev.AudioDone("f1", "fi1"))
    acts = t.model(ev.ResponseDone("f1", "completed"))
    assert in_conversation(acts) == [ev.CreateResponse()]
    # the filler is not part of the conversation: a later replay would not contain it
    assert "One moment" not in repr(t.core.history.replay())
    # one filler per tool-calling response
    assert len([c for c in responses_created(t.actions) if oob_kind(c) == "filler"]) == 1


def test_a_tool_timeout_still_gives_the_model_an_output_and_a_followup() -> None:
    t = Timeline()
    t.caller_says("u1", "Cancel my booking.")
    t.tool_call("r1", "call_1", "cancel_booking", '{"id": "B7"}')
    t.at(10.0)
    out = '{"error": "the tool timed out"}'
    acts = t.tool_done("call_1", ToolOutcome(out, ok=False, error="timeout", duration_ms=10000.0))
    assert logs(acts, "tool.result") == [{"call_id": "call_1", "name": "cancel_booking", "ok": False,
                                          "duration_ms": 10000.0, "error": "timeout"}]
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", out), ev.CreateResponse()]


def test_caller_hangs_up_while_a_tool_runs() -> None:
    t = Timeline()
    t.caller_says("u1", "Book it.")
    t.tool_call("r1", "call_1", "book_table")
    t.at(1.0)
    acts = t.stream(tel.StreamStopped())
    assert isinstance(acts[0], CancelTools)
    assert pos(acts, CancelTools) < pos(acts, is_log("call.ended")) < pos(acts, EndCall) == len(acts) - 1
    assert_call_over(t, "caller_hangup")
    assert t.tool_done("call_1", ToolOutcome('{"booked": true}')) == []


def test_agent_switch_reconfigures_the_session_and_swaps_the_tools() -> None:
    billing = ev.SessionConfig(instructions="You handle billing questions.", audio_format="g711_ulaw",
                               voice="verse")
    t = Timeline()
    t.caller_says("u1", "I have a question about my bill.")
    t.tool_call("r1", "call_1", "transfer_to_billing")
    t.at(0.3)
    acts = t.tool_done("call_1", ToolOutcome('{"switched": true}', effect=SwitchAgent("billing", billing)))
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", '{"switched": true}'), ev.UpdateSession(billing),
                          ev.CreateResponse()]
    assert of(acts, UseAgent) == [UseAgent("billing")]
    assert logs(acts, "agent.switched") == [{"agent": "billing"}]
    assert pos(acts, lambda a: isinstance(a, ToModel) and isinstance(a.command, ev.UpdateSession)) \
        < pos(acts, UseAgent) < pos(acts, is_log("agent.switched"))
    # the new agent's configuration is what a replacement session gets
    t.agent_says("r2", "a2", "Billing here, how can I help?")
    t.advance(1.0)
    t.model_down(1)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    assert cmds(acts, 2, ev.UpdateSession) == [ev.UpdateSession(billing)]


# ============================================================================ 2. every exit
def test_hang_up_effect_waits_for_the_queued_goodbye_to_play() -> None:
    t = Timeline()
    t.caller_says("u1", "That's all, thanks.")
    t.agent_starts("r1", "a1", "You're welcome, goodbye!", ms=1200)
    t.model(ev.AudioDone("r1", "a1"))
    t.tool_call("r1", "call_1", "hang_up")
    t.at(0.1)
    acts = t.tool_done("call_1", ToolOutcome('{"ok": true}', effect=HangUp()))
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", '{"ok": true}')]  # no follow-up: nothing more to say
    assert of(acts, Control) == [] and of(acts, EndCall) == []
    acts = t.advance(1.0)  # the goodbye is still playing
    assert of(acts, Control) == [] and of(acts, EndCall) == [] and t.core.playout.busy
    acts = t.advance(0.5)
    assert t.core.ended and not t.core.playout.busy
    assert acts[0] == Control("hangup")
    assert pos(acts, Control) < pos(acts, is_log("call.ended"))
    assert_call_over(t, "agent_hangup", agent_text="You're welcome, goodbye!")


def test_transfer_effect_says_goodbye_then_transfers_once_it_was_heard() -> None:
    t = Timeline()
    t.caller_says("u1", "Can I talk to a person?")
    t.tool_call("r1", "call_1", "transfer")
    t.at(0.2)
    acts = t.tool_done("call_1", ToolOutcome('{"transferring": true}', effect=Transfer("+15550100")))
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", '{"transferring": true}'), ev.CreateResponse()]
    assert of(acts, Control) == []
    # the follow-up is the goodbye
    t.at(0.3)
    t.agent_starts("r2", "a2", "I'm putting you through now.", ms=1500)
    t.model(ev.AudioDone("r2", "a2"))
    acts = t.model(ev.ResponseDone("r2", "completed"))
    assert of(acts, Control) == []  # generated, not yet heard
    acts = t.advance(1.0)
    assert of(acts, Control) == [] and not t.core.ended
    acts = t.advance(1.0)
    assert acts[0] == Control("transfer", "+15550100")
    assert_call_over(t, "transferred", agent_text="I'm putting you through now.")


def test_exit_grace_forces_the_exit_when_the_audio_never_finishes() -> None:
    t = Timeline(exit_grace_s=5.0)
    t.auto_ack = False  # Twilio never reports the goodbye as played
    t.caller_says("u1", "Bye.")
    t.agent_starts("r1", "a1", "Goodbye!", ms=600)
    t.model(ev.AudioDone("r1", "a1"))
    t.tool_call("r1", "call_1", "hang_up")
    t.at(1.0)
    t.tool_done("call_1", ToolOutcome('{"ok": true}', effect=HangUp()))
    acts = t.advance(4.9)
    assert of(acts, Control) == [] and not t.core.ended
    acts = t.advance(0.2)
    assert t.now >= 6.0 and t.core.ended
    assert acts[0] == Control("hangup")
    assert logs(acts, "call.ended")[0]["duration_s"] == 6.0
    assert_call_over(t, "agent_hangup", agent_text="Goodbye!")


def test_time_limit_says_goodbye_out_of_band_then_hangs_up() -> None:
    t = Timeline(max_call_duration_s=10.0, time_limit_message="Time is up, goodbye.")
    t.caller_says("u1", "Tell me everything on the menu.")
    t.agent_says("r1", "a1", "We have soups, salads and steaks.", ms=2000)
    acts = t.advance(9.0)
    assert responses_created(acts) == []
    acts = t.advance(1.0)
    assert t.now == 10.0
    assert responses_created(acts) == [ev.CreateResponse(instructions=SAY_EXACTLY.format(text="Time is up, goodbye."),
                                                         conversation="none", metadata={"voicegw": "goodbye"},
                                                         input=())]
    assert of(acts, Control) == []
    t.at(10.1)
    t.agent_starts("g1", "gi1", "Time is up, goodbye.", ms=1500, metadata={"voicegw": "goodbye"},
                   conversation="none")
    t.model(ev.AudioDone("g1", "gi1"))
    acts = t.model(ev.ResponseDone("g1", "completed"))
    assert of(acts, Control) == []  # not heard yet
    acts = t.advance(1.0)
    assert of(acts, Control) == []
    acts = t.advance(1.0)
    assert acts[0] == Control("hangup")
    assert_call_over(t, "max_duration", agent_text="Time is up, goodbye.")


def test_time_limit_mid_answer_cuts_the_agent_off_and_still_leaves() -> None:
    t = Timeline(max_call_duration_s=10.0)
    t.caller_says("u1", "Tell me everything on the menu.")
    t.at(9.0)
    t.agent_starts("r1", "a1", "We have soups, salads, steaks and a long list of desserts.", ms=3000)
    acts = t.advance(1.0)
    assert intents(acts, tel.ClearPlayback) == [tel.ClearPlayback()]
    assert cmds(acts) == [ev.CancelResponse(), ev.TruncateItem("a1", 1000),
                          ev.CreateResponse(instructions=SAY_EXACTLY.format(text=t.opts.time_limit_message),
                                            conversation="none", metadata={"voicegw": "goodbye"}, input=())]
    # the cancelled answer's late audio never reaches the caller
    assert intents(t.model(ev.AudioDelta("r1", "a1", ulaw(500))), tel.PlayAudio) == []
    t.model(ev.ResponseDone("r1", "cancelled"))
    t.agent_says("g1", "gi1", "Goodbye.", ms=500, metadata={"voicegw": "goodbye"}, conversation="none")
    t.advance(1.0)
    assert_call_over(t, "max_duration")
    cut = [d for d in logs(t.actions, "transcript") if d["item_id"] == "a1"]
    assert cut == [{"role": "agent", "item_id": "a1", "text": "We have soups…", "cut": True}]


def test_model_loss_beyond_the_reconnect_budget_ends_the_call() -> None:
    t = Timeline(max_reconnects=1)
    t.caller_says("u1", "Where is my order?")
    t.at(1.0)
    t.model_down(1)
    t.model(ev.SessionStarted("sess-2"), link=2)  # the one allowed reconnect
    t.at(2.0)
    t.caller_says("u2", "Hello?")
    t.agent_starts("r2", "a2", "Your order left the kitchen", ms=2000)
    t.at(2.5)
    acts = t.model_down(2, "connection reset")
    assert of(acts, OpenModel) == []
    assert logs(acts, "error")[-1]["code"] == "model_closed"
    assert pos(acts, is_log("error", code="model_closed")) < pos(acts, is_log("call.ended"))
    assert logs(acts, "call.ended")[0]["reconnects"] == 1
    assert_call_over(t, "model_closed", agent_text="Your order left the kitchen")


def test_telephony_loss_ends_the_call_with_its_reason() -> None:
    t = Timeline()
    t.caller_says("u1", "What time do you open?")
    t.agent_starts("r1", "a1", "We open at noon", ms=1000)
    t.at(0.5)
    acts = t.feed(t.core.on_telephony_lost("telephony_lost", t.now))
    assert of(acts, Control) == [] and of(acts, CancelTools) == []
    assert_call_over(t, "telephony_lost", agent_text="We open at noon")


def test_caller_hang_up_ends_the_call() -> None:
    t = Timeline()
    t.caller_says("u1", "What time do you open?")
    t.agent_starts("r1", "a1", "We open at", ms=1000)
    t.at(0.3)
    acts = t.stream(tel.StreamStopped())
    assert of(acts, Control) == []
    assert_call_over(t, "caller_hangup", agent_text="We open at")


# ========================================================================= 3. reconnect
def _conversation(t: Timeline) -> list[ev.ClientCommand]:
    """A call so far: a caller turn, a tool round, a complete answer. Returns its replay."""
    t.caller_says("u1", "Book a table for two.")
    t.tool_call("r1", "call_1", "check_availability", '{"party": 2}')
    t.tool_done("call_1", ToolOutcome('{"free": true}'))
    t.agent_says("r2", "a2", "We have a table at eight.", ms=400)
    t.advance(1.0)
    return [ev.AddUserText("Book a table for two."),
            ev.AddFunctionCall("call_1", "check_availability", '{"party": 2}'),
            ev.AddFunctionOutput("call_1", '{"free": true}'),
            ev.AddAssistantText("We have a table at eight.")]


def _drop_and_hold(t: Timeline, held: int = 4) -> list[str]:
    """Link 1 drops; link 2 is opened at once; caller audio meanwhile goes nowhere."""
    acts = t.model_down(1, "lost")
    assert of(acts, OpenModel) == [OpenModel(2, 0.0, 4.0)]
    assert logs(acts, "error") == [{"source": "model", "message": "model connection lost: lost",
                                    "code": "model_lost", "link": 1}]
    before = len(t.sent_frames)
    assert t.caller_frames(held) == []  # nowhere to send it
    return t.sent_frames[before:]


def test_reconnect_answers_the_callers_unanswered_turn_without_apology() -> None:
    t = Timeline()
    replay = _conversation(t)
    t.caller_says("u3", "Actually, make it three people.")
    t.at(3.0)
    held = _drop_and_hold(t)
    t.at(3.2)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    assert links(acts) == {2}
    assert logs(acts, "reconnect") == [{"attempt": 1, "ok": True, "link": 2, "items": 5}]
    commands = cmds(acts)
    assert commands[0] == ev.UpdateSession(CFG)  # the context is not folded into the instructions
    items = [c for c in commands if not isinstance(c, (ev.UpdateSession, ev.AppendAudio, ev.CreateResponse))]
    assert items == replay + [ev.AddUserText("Actually, make it three people.")]
    assert [c.audio_b64 for c in cmds(acts, 2, ev.AppendAudio)] == held
    assert commands[-1] == ev.CreateResponse()
    assert responses_created(acts) == [ev.CreateResponse()]  # no apology
    assert intents(acts) == []
    # link 2 now serves the call
    assert links(t.caller_frames(2)) == {2}


def test_reconnect_after_the_agent_was_cut_apologises_then_finishes_the_answer() -> None:
    t = Timeline()
    replay = _conversation(t)
    t.caller_says("u3", "When is it booked for?")
    t.at(3.0)
    t.agent_starts("r3", "a3", "Your table is booked for", ms=1500)
    t.at(3.1)
    _drop_and_hold(t)
    # a late event of the dead link changes nothing
    assert t.model(ev.AudioDelta("r3", "a3", ulaw(500)), link=1) == []
    t.at(3.3)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    items = [c for c in cmds(acts) if not isinstance(c, (ev.UpdateSession, ev.AppendAudio, ev.CreateResponse))]
    assert items == replay + [ev.AddUserText("When is it booked for?"), ev.AddAssistantText("Your table is booked for")]
    created = responses_created(acts)
    assert created == [ev.CreateResponse(instructions=SAY_EXACTLY.format(text=t.opts.reconnect_message),
                                         conversation="none", metadata={"voicegw": "apology"}, input=())], \
        "the apology goes alone: the rest of the answer comes after it"
    # the apology plays; once it is done the model finishes the answer
    t.at(3.4)
    acts = t.agent_starts("ap", "api", t.opts.reconnect_message, ms=800, metadata={"voicegw": "apology"},
                          conversation="none")
    assert responses_created(acts) == []
    t.model(ev.AudioDone("ap", "api"))
    acts = t.model(ev.ResponseDone("ap", "completed"))
    assert responses_created(acts, 2) == [ev.CreateResponse()]
    t.agent_says("r4", "a4", "Your table is booked for eight o'clock.")
    t.advance(3.0)
    assert len(in_conversation(t.actions, 2)) == 1


def test_reconnect_with_nothing_pending_asks_for_no_response() -> None:
    t = Timeline()
    replay = _conversation(t)
    t.at(3.0)
    held = _drop_and_hold(t, held=3)
    t.at(3.1)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    items = [c for c in cmds(acts) if not isinstance(c, (ev.UpdateSession, ev.AppendAudio))]
    assert items == replay
    assert [c.audio_b64 for c in cmds(acts, 2, ev.AppendAudio)] == held
    assert responses_created(acts) == [] and intents(acts) == []
    t.advance(5.0)
    assert responses_created(t.actions, 2) == []


def test_reconnect_gives_an_untranscribed_caller_turn_as_audio() -> None:
    t = Timeline()
    t.model(ev.SpeechStarted(audio_start_ms=0))
    t.caller_frames(10)
    t.model(ev.SpeechStopped(audio_end_ms=200))
    t.model(ev.InputCommitted("u1"))  # its transcript never comes
    spoken = list(t.sent_frames)
    t.at(0.5)
    _drop_and_hold(t, held=0)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    audio = cmds(acts, 2, ev.AddUserAudio)
    assert len(audio) == 1 and base64.b64decode(audio[0].audio_b64) == b"".join(base64.b64decode(f)
                                                                                 for f in spoken)
    assert responses_created(acts) == [ev.CreateResponse()]


def test_reconnect_after_a_tool_followup_was_asked_for_asks_the_new_link_again() -> None:
    t = Timeline()
    t.caller_says("u1", "Is the terrace open?")
    t.tool_call("r1", "call_1", "terrace")
    t.at(0.5)
    assert responses_created(t.tool_done("call_1", ToolOutcome('{"open": true}')), 1) == [ev.CreateResponse()]
    t.model_down(1)  # before link 1 answered it
    t.at(0.6)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    assert cmds(acts, 2, ev.AddFunctionOutput) == [ev.AddFunctionOutput("call_1", '{"open": true}')]
    assert responses_created(acts) == [ev.CreateResponse()], "the caller's question would go unanswered"


def test_reconnect_while_a_tool_runs_follows_up_on_the_new_link_when_it_finishes() -> None:
    t = Timeline()
    t.caller_says("u1", "Is the terrace open?")
    t.tool_call("r1", "call_1", "terrace")
    t.at(0.5)
    t.model_down(1)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    assert cmds(acts, 2, ev.AddFunctionCall) == [ev.AddFunctionCall("call_1", "terrace", "{}")]
    assert responses_created(acts) == []  # the tool still runs
    t.at(1.0)
    acts = t.tool_done("call_1", ToolOutcome('{"open": true}'))
    assert cmds(acts) == [ev.AddFunctionOutput("call_1", '{"open": true}'), ev.CreateResponse()]
    assert links(acts) == {2}


def test_failed_reconnect_attempts_back_off_then_end_the_call() -> None:
    t = Timeline()
    t.caller_says("u1", "Hi.")
    t.at(1.0)
    acts = t.model_down(1)
    opened = of(acts, OpenModel)
    link = opened[0].link
    for _ in range(len(BACKOFF_S) - 1):
        acts = t.model_down(link, "connection refused")
        assert logs(acts, "reconnect") == [{"attempt": 1, "ok": False, "error": "connection refused"}]
        opened += of(acts, OpenModel)
        link = opened[-1].link
    assert [o.delay_s for o in opened] == list(BACKOFF_S)
    assert all(o.link > 1 for o in opened)
    acts = t.model_down(link, "connection refused")  # the outage used every attempt
    assert of(acts, OpenModel) == []
    assert_call_over(t, "model_closed")


def test_a_non_retryable_failure_ends_the_call() -> None:
    t = Timeline()
    t.at(1.0)
    t.model_down(1)
    acts = t.model_down(2, "401 unauthorized", retryable=False)
    assert of(acts, OpenModel) == []
    assert logs(acts, "error")[-1]["code"] == "model_closed"
    assert_call_over(t, "model_closed")


def test_the_reconnect_budget_is_enforced() -> None:
    t = Timeline(max_reconnects=2)
    for n in (1, 2):
        t.at(t.now + 1.0)
        acts = t.model_down(n)
        assert of(acts, OpenModel) == [OpenModel(n + 1, 0.0, 4.0)]
        acts = t.model(ev.SessionStarted(f"sess-{n + 1}"), link=n + 1)
        assert logs(acts, "reconnect") == [{"attempt": n, "ok": True, "link": n + 1, "items": 0}]
    t.at(t.now + 1.0)
    acts = t.model_down(3)
    assert of(acts, OpenModel) == []
    assert logs(acts, "call.ended")[0]["reconnects"] == 2
    assert_call_over(t, "model_closed")


# =========================================================================== 4. rollover
def _to_soft_deadline(t: Timeline) -> None:
    """Link 1 serves from 0 s with a 24 s lifetime: its replacement is opened at 90 % (21.6 s)."""
    acts = t.advance(21.5 - t.now)
    assert of(acts, OpenModel) == [] and links(t.actions) == {1}
    acts = t.advance(0.1)
    assert t.now == pytest.approx(21.6)
    assert of(acts, OpenModel) == [OpenModel(2, 0.0, 4.0)]


def test_rollover_waits_for_the_first_quiet_moment_then_switches_silently() -> None:
    t = Timeline(model_session_max_s=24.0)
    replay = _conversation(t)
    t.caller_frames(30)
    _to_soft_deadline(t)
    # the caller is talking when the standby answers
    t.model(ev.SpeechStarted(audio_start_ms=21_600))
    t.caller_frames(5)
    t.at(21.65)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    assert cmds(acts) == [ev.UpdateSession(CFG)] and links(acts) == {2}
    assert [d["phase"] for d in logs(acts, "rollover")] == ["started"]
    assert intents(acts) == [] and of(acts, CloseModel) == []
    assert links(t.caller_frames(3)) == {1}  # the live link still hears the caller
    t.at(21.7)
    t.model(ev.SpeechStopped(audio_end_ms=21_700))
    t.model(ev.InputCommitted("u4"))
    t.model(ev.InputTranscript("u4", "Can I bring a dog?"))
    # an answer in progress that calls a tool: no switch while it runs
    t.at(21.75)
    t.agent_starts("r4", "a4", "Let me check the dog policy.", ms=150)
    t.model(ev.AudioDone("r4", "a4"))
    t.model(ev.TranscriptDone("r4", "a4", "Let me check the dog policy."))
    t.tool_call("r4", "call_4", "dog_policy")
    t.advance(0.2)  # its audio played (a mark came back) while the tool runs
    assert not t.core.playout.busy
    assert [d["phase"] for d in logs(t.actions, "rollover")] == ["started"]
    # the tool finishes: the follow-up is asked of the live link, and answered there
    t.at(22.0)
    acts = t.tool_done("call_4", ToolOutcome('{"dogs": "welcome"}'))
    assert cmds(acts) == [ev.AddFunctionOutput("call_4", '{"dogs": "welcome"}'), ev.CreateResponse()]
    assert links(acts) == {1} and logs(acts, "rollover") == [] and of(acts, CloseModel) == []
    t.at(22.05)
    t.agent_starts("r5", "a5", "Dogs are welcome.", ms=100)
    t.model(ev.AudioDelta("r5", "a5", ulaw(300)))
    acts = t.advance(0.11)  # a mark comes back while the response is still in progress
    assert logs(acts, "rollover") == [] and t.core.playout.busy
    t.model(ev.AudioDone("r5", "a5"))
    t.model(ev.TranscriptDone("r5", "a5", "Dogs are welcome."))
    # the first quiet moment: nothing generated, no tool, nobody speaking. The answer's audio,
    # generated by the old session, plays on whichever session serves the call.
    i = t.index()
    acts = t.model(ev.ResponseDone("r5", "completed"))
    switched = logs(acts, "rollover")
    assert switched and switched[0]["phase"] == "switched" and switched[0]["forced"] is False
    after = t.since(pos(acts, is_log("rollover")) + i)
    items = [c for c in cmds(after) if not isinstance(c, ev.AppendAudio)]
    assert items == replay + [ev.AddUserText("Can I bring a dog?"), ev.AddAssistantText("Let me check the dog policy."),
                              ev.AddFunctionCall("call_4", "dog_policy", "{}"),
                              ev.AddFunctionOutput("call_4", '{"dogs": "welcome"}'),
                              ev.AddAssistantText("Dogs are welcome.")]
    assert links(after) == {2}
    preroll = [c.audio_b64 for c in cmds(after, 2, ev.AppendAudio)]
    assert preroll and preroll == t.sent_frames[-len(preroll):]
    assert after[-1] == CloseModel(1)
    assert intents(after) == [] and responses_created(after) == []  # nothing audible, nothing cut
    assert t.core.playout.busy
    # afterwards: caller audio to link 2 only, events of link 1 ignored, nothing said
    assert links(t.caller_frames(5)) == {2}
    assert t.model(ev.AudioDelta("r9", "a9", ulaw(300)), link=1) == []
    assert t.model(ev.SpeechStarted(audio_start_ms=1), link=1) == []
    assert t.model(ev.ResponseStarted("r9"), link=1) == []
    t.advance(10.0)
    assert responses_created(t.actions, 2) == [] and intents(t.since(i), tel.ClearPlayback) == []
    assert t.core.link.rollovers == 1 and not t.core.ended


def test_rollover_does_not_switch_under_a_follow_up_that_was_asked_for_but_not_started() -> None:
    t = Timeline(model_session_max_s=24.0)
    t.caller_says("u1", "Is the terrace open?")
    t.tool_call("r1", "call_1", "terrace")
    _to_soft_deadline(t)
    t.at(21.7)
    t.model(ev.SessionStarted("sess-2"), link=2)  # a tool runs: no switch
    t.at(21.8)
    acts = t.tool_done("call_1", ToolOutcome('{"open": true}'))
    assert responses_created(acts, 1) == [ev.CreateResponse()]
    assert logs(acts, "rollover") == [], "switching now would lose the answer asked of link 1"
    t.at(21.9)
    t.agent_says("r2", "a2", "Yes, the terrace is open.")
    assert logs(t.actions, "rollover")[-1]["phase"] == "switched"
    assert responses_created(t.since(pos(t.actions, is_log("rollover", phase="switched"))), 2) == []


def test_rollover_standby_ready_in_a_quiet_moment_switches_at_once() -> None:
    t = Timeline(model_session_max_s=24.0)
    _conversation(t)
    _to_soft_deadline(t)
    t.at(21.7)
    acts = t.model(ev.SessionStarted("sess-2"), link=2)
    assert [d["phase"] for d in logs(acts, "rollover")] == ["started", "switched"]
    assert logs(acts, "rollover")[1]["forced"] is False
    assert acts[-1] == CloseModel(1)
    assert intents(acts) == [] and responses_created(acts) == []


def test_rollover_is_forced_at_the_hard_deadline_when_never_quiet() -> None:
    t = Timeline(model_session_max_s=24.0)
    _conversation(t)
    _to_soft_deadline(t)
    t.model(ev.SpeechStarted(audio_start_ms=21_600))
    utterance_start = len(t.sent_frames)
    t.caller_frames(5)
    t.at(21.65)
    t.model(ev.SessionStarted("sess-2"), link=2)
    acts = t.advance(1.3)
    assert logs(acts, "rollover") == [] and t.now == pytest.approx(22.95)
    t.caller_frames(5)  # still talking
    acts = t.advance(0.1)
    assert t.now == pytest.approx(23.05)
    switched = logs(acts, "rollover")
    assert [d["phase"] for d in switched] == ["switched"] and switched[0]["forced"] is True
    at = pos(t.actions, is_log("rollover", phase="switched"))
    # the switch happened at the hard deadline: lifetime minus the margin
    assert t.actions[at].entry.t == pytest.approx(23.0)  # type: ignore[union-attr]
    # the new session hears the utterance in progress (with its pre-roll)
    preroll = [c.audio_b64 for c in cmds(acts, 2, ev.AppendAudio)]
    assert preroll[-10:] == t.sent_frames[utterance_start:utterance_start + 10]
    assert CloseModel(1) in acts and intents(acts) == [] and responses_created(acts) == []


def test_rollover_past_the_hard_deadline_waits_for_the_answer_in_progress() -> None:
    t = Timeline(model_session_max_s=24.0)
    t.caller_says("u1", "Tell me about the wine list.")
    _to_soft_deadline(t)
    t.at(22.9)
    t.agent_starts("r1", "a1", "We have reds from Bordeaux and whites from", ms=3000)
    t.model(ev.SessionStarted("sess-2"), link=2)
    acts = t.advance(0.2)  # past the hard deadline (23 s) mid-answer: it is not cut
    assert logs(acts, "rollover") == [] and t.core.link.live == 1
    t.model(ev.AudioDone("r1", "a1"))
    acts = t.model(ev.ResponseDone("r1", "completed"))
    assert [d["phase"] for d in logs(acts, "rollover")] == ["switched"]
    assert CloseModel(1) in acts and intents(acts) == [] and responses_created(acts) == []


def test_a_rollover_standby_that_fails_is_logged_and_retried_while_the_live_link_serves() -> None:
    t = Timeline(model_session_max_s=24.0)
    _to_soft_deadline(t)
    t.at(21.7)
    acts = t.model_down(2, "503 service unavailable")
    assert logs(acts, "rollover") == [{"phase": "failed", "link": 2, "error": "503 service unavailable"}]
    assert of(acts, OpenModel) == [] and of(acts, EndCall) == []
    assert links(t.caller_frames(3)) == {1}
    # retried 2 s later, or at the hard deadline if that comes first (23 s here)
    acts = t.advance(1.2)
    assert of(acts, OpenModel) == [] and t.core.link.live == 1
    acts = t.advance(0.1)
    retry = of(acts, OpenModel)
    assert len(retry) == 1 and retry[0].link > 1 and t.core.link.live == 1
    acts = t.model(ev.SessionStarted("sess-retry"), link=retry[0].link)
    assert logs(acts, "rollover")[-1]["phase"] == "switched"
    assert links(t.caller_frames(2)) == {retry[0].link}


# ================================================================ 5. barge-in, dry playout
PCM = ev.SessionConfig(audio_format="pcm16")


def _dry_playout(t: Timeline, first_ms: float) -> None:
    t.caller_says("u1", "What are your hours?")
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "a1", "message", "assistant"))
    t.model(ev.TranscriptDelta("r1", "a1", "We are open from noon until late."))
    t.model(ev.AudioDelta("r1", "a1", pcm24(first_ms)))
    t.advance(1.0)  # everything sent has played: Twilio's buffer is empty
    assert not t.core.playout.busy


def test_dry_playout_bargein_truncates_audio_held_in_the_resampler() -> None:
    t = Timeline(audio_mode="pcm16", session_config=PCM)
    _dry_playout(t, 200)
    sent_ms = sum(b64_decoded_len(i.payload_b64) for i in intents(t.actions, tel.PlayAudio)) / 8
    assert 0 < sent_ms < 200  # the resampler holds the rest
    acts = t.model(ev.SpeechStarted(audio_start_ms=1500))
    assert intents(acts) == []  # nothing queued: nothing to clear
    assert cmds(acts) == [ev.TruncateItem("a1", int(sent_ms))]  # server VAD cancels the response itself
    assert logs(acts, "barge_in")[0]["action"] == "truncate"
    # the rest of the interrupted response never reaches the caller
    assert t.model(ev.AudioDelta("r1", "a1", pcm24(500))) == []
    assert t.model(ev.AudioDone("r1", "a1")) == []
    t.model(ev.ResponseDone("r1", "cancelled"))
    assert intents(t.since(pos(t.actions, is_log("barge_in")))) == []


def test_dry_playout_bargein_deletes_an_item_nothing_of_which_was_heard() -> None:
    t = Timeline(audio_mode="pcm16", session_config=PCM)
    _dry_playout(t, 2)  # all of it still inside the resampler
    assert intents(t.actions, tel.PlayAudio) == []
    acts = t.model(ev.SpeechStarted(audio_start_ms=1500))
    assert intents(acts) == []
    assert cmds(acts) == [ev.DeleteItem("a1")]
    assert t.model(ev.AudioDelta("r1", "a1", pcm24(300))) == []


def test_dry_playout_keypad_bargein_cancels_the_response_itself() -> None:
    t = Timeline(audio_mode="pcm16", session_config=PCM)
    _dry_playout(t, 200)
    acts = t.stream(tel.Dtmf("#"))
    assert intents(acts) == []
    commands = cmds(acts)
    assert commands[0] == ev.CancelResponse()
    assert isinstance(commands[1], ev.TruncateItem) and commands[1].item_id == "a1"
    assert commands[2:] == [ev.AddUserText("[keypad] #")]  # answered once the cancelled response is done
    assert t.model(ev.AudioDelta("r1", "a1", pcm24(300))) == []
    acts = t.model(ev.ResponseDone("r1", "cancelled"))
    assert responses_created(acts) == [ev.CreateResponse()]


# ============================================================================== 6. keypad
def test_keypad_digits_are_collected_and_flushed_after_the_pause() -> None:
    t = Timeline(dtmf_flush_s=1.5)
    t.at(1.0)
    assert logs(t.stream(tel.Dtmf("1")), "dtmf") == [{"digit": "1"}]
    t.at(1.5)
    t.stream(tel.Dtmf("2"))
    acts = t.advance(1.4)
    assert cmds(acts) == []
    acts = t.advance(0.2)
    assert t.now == pytest.approx(3.1)
    assert cmds(acts) == [ev.AddUserText("[keypad] 1 2"), ev.CreateResponse()]
    assert t.core.next_deadline() != pytest.approx(3.0)
    assert cmds(t.advance(5.0)) == []


def test_keypad_hash_flushes_at_once() -> None:
    t = Timeline(dtmf_flush_s=1.5)
    t.at(1.0)
    t.stream(tel.Dtmf("4"))
    t.at(1.2)
    acts = t.stream(tel.Dtmf("#"))
    assert cmds(acts) == [ev.AddUserText("[keypad] 4"), ev.CreateResponse()]
    assert cmds(t.advance(5.0)) == []


# ===================================================== the tests fail when the core is wrong
def test_timeline_catches_a_core_that_sends_the_followup_too_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard on the guards: a core that follows up as soon as any output is ready must fail the
    parallel-tools timeline."""
    from voicegw.call.tooling import ToolBook

    monkeypatch.setattr(ToolBook, "ready_for_followup", lambda self: self.outputs_ready > 0)
    with pytest.raises(AssertionError):
        test_two_parallel_tool_calls_get_one_followup_after_both_finish()


def test_timeline_catches_a_core_that_exits_before_the_goodbye_played(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicegw.call.playout import Playout

    monkeypatch.setattr(Playout, "busy", property(lambda self: False))
    with pytest.raises(AssertionError):
        test_hang_up_effect_waits_for_the_queued_goodbye_to_play()


def test_timeline_catches_a_core_that_forgets_held_caller_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    original = core_mod.CallCore._resume

    def forgetful(self: CallCore, now: float, after_drop: bool) -> list[Action]:
        self.link.held.clear()
        return original(self, now, after_drop)

    monkeypatch.setattr(core_mod.CallCore, "_resume", forgetful)
    with pytest.raises(AssertionError):
        test_reconnect_with_nothing_pending_asks_for_no_response()


def test_one_mark_per_100_ms_of_small_deltas_and_heard_stays_exact_after_an_underrun() -> None:
    """20 ms deltas: a mark per 100 ms of audio, the item's last one at audio.done; a delta that
    arrives after the caller ran dry moves the chunk's start, so the heard estimate does not run ahead."""
    t = Timeline()
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "i1", "message"))
    for _ in range(7):
        t.model(ev.AudioDelta("r1", "i1", ulaw(20)))
        t.at(t.now + 0.02)
    marks = [a for a in t.actions if isinstance(a, ToCaller) and isinstance(a.intent, tel.PlayMark)]
    assert len(marks) == 1  # 100 ms closed one chunk, 40 ms are open
    t.advance(0.2)  # the first mark comes back; the caller ran dry 40 ms after the last delta
    t.model(ev.AudioDelta("r1", "i1", ulaw(20)))  # 160 ms produced; this piece starts playing now
    t.at(t.now + 0.01)
    assert t.core.playout.heard_ms("i1", t.now) == pytest.approx(150.0)
    t.model(ev.AudioDone("r1", "i1"))
    marks = [a for a in t.actions if isinstance(a, ToCaller) and isinstance(a.intent, tel.PlayMark)]
    assert len(marks) == 2


def test_the_caller_audio_lane_takes_only_the_steady_state_and_declined_frames_leave_no_trace() -> None:
    """`caller_audio` is the bridge's way for a caller frame whose only effect is an append: it
    declines (None, nothing done) before the model is up, with agent audio idling with its mark
    unsent, on hold and after the end, and `on_caller_audio` then does what the frame needs."""
    t = Timeline(connect=False)
    assert t.core.caller_audio(frame(1), t.now) is None and list(t.core.link.tail) == []
    t.model(ev.SessionStarted("sess-1"), link=1)
    t.stream(tel.StreamStarted(stream_sid=SID, call_sid="CA1"))
    assert t.core.caller_audio(frame(2), t.now) == frame(2)  # passthrough: the payload as it came
    assert list(t.core.link.tail)[-1] == frame(2)  # kept for a replay after a reconnect
    # agent audio: while its chunk is open and fresh the lane takes frames; once it idles, it declines
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "i1", "message"))
    t.model(ev.AudioDelta("r1", "i1", ulaw(40)))
    assert t.core.caller_audio(frame(3), t.now) == frame(3)
    t.at(t.now + MARK_IDLE_S)
    tail = list(t.core.link.tail)
    assert t.core.caller_audio(frame(4), t.now) is None and list(t.core.link.tail) == tail
    acts = t.core.on_caller_audio(tel.CallerAudio(frame(4), 80), t.now)
    assert cmds(acts, kind=ev.AppendAudio) == [ev.AppendAudio(frame(4))] and intents(acts, tel.PlayMark)
    assert t.core.caller_audio(frame(5), t.now) == frame(5)  # the mark went out: steady again
    t.core.gated = True  # on hold, or an outbound call's answer not yet classified
    assert t.core.caller_audio(frame(6), t.now) is None
    t.core.gated = False
    t.feed(t.core.end("caller_hangup", t.now))
    assert t.core.caller_audio(frame(7), t.now) is None


def test_the_caller_audio_lane_converts_exactly_as_the_full_way_in_pcm16() -> None:
    lane, full = Timeline(audio_mode="pcm16"), Timeline(audio_mode="pcm16")
    ours: list[str] = []
    theirs: list[str] = []
    for i in range(12):
        audio = lane.core.caller_audio(frame(i), lane.now)
        assert audio is not None
        ours += [audio] if audio else []
        theirs += [c.audio_b64 for c in cmds(full.core.on_caller_audio(tel.CallerAudio(frame(i), 20 * i), full.now),
                                             kind=ev.AppendAudio)]
    assert ours == theirs and len(ours) >= 11  # the resampler holds back its filter delay at the start
