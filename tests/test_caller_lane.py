"""The caller lane (voicegw/call/callerlane.py) against the core's own rule for caller frames.

The lane takes steady-state caller frames without calling into the core, on the strength of what
the core said after its last entry (`CallCore.steady_until`). These tests play the same calls
twice -- once with every caller frame going through `CallCore.on_caller_audio`, once with the
lane first, re-armed after every call into the core as the bridge does -- and require the same
commands, audio and marks in the same order, and the same replay buffers, whatever happens
between the frames: agent audio starting, idling and finishing, the caller speaking, an
answering-machine verdict, a lost model session and its replacement, the end of the call.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_core_timelines import Timeline, frame, intents, pcm24, ulaw
from voicegw.call.actions import Action, OpenModel, ToModel
from voicegw.call.callerin import MARK_IDLE_S
from voicegw.call.callerlane import CallerLane
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel


class FullWay(Timeline):
    """Every caller frame takes `on_caller_audio`: the core's rule, nothing skipped."""

    def stream(self, e: tel.StreamEvent) -> list[Action]:
        if type(e) is tel.CallerAudio:
            return self.feed(self.core.on_caller_audio(e, self.now))
        return super().stream(e)


class LaneFirst(Timeline):
    """Caller frames try the lane first; the lane is re-armed after every call into the core."""

    def __init__(self, **options: Any) -> None:
        self.lane = CallerLane(lambda: self.now, None)
        self.live = SimpleNamespace(append=self._append, writer=None)
        self.taken = 0
        self._steady_delta = False
        super().__init__(**options)

    def model(self, e: ev.ServerEvent, link: int | None = None) -> list[Action]:
        """A steady audio delta only re-times the lane, as in the bridge (`CallBridge._run_audio`)."""
        if type(e) is ev.AudioDelta:
            acts = self.core.on_live_audio(e, self.now, self.core.link.live if link is None else link)
            if acts is not None:
                self._steady_delta = True
                try:
                    return self.feed(acts)
                finally:
                    self._steady_delta = False
        return super().model(e, link)

    def _append(self, audio: str) -> bool:
        self.actions.append(ToModel(ev.AppendAudio(audio), self.core.link.live))
        return True

    def feed(self, acts: list[Action]) -> list[Action]:
        out = super().feed(acts)
        if self._steady_delta:
            self.lane.retime()
        else:
            self.lane.arm(self.core, self.live)
        return out

    def stream(self, e: tel.StreamEvent) -> list[Action]:
        if type(e) is tel.CallerAudio and self.lane.take(e.payload_b64):
            self.taken += 1
            return []
        return super().stream(e)


FRAMES = st.tuples(st.just("frames"), st.integers(1, 8))
WAIT = st.tuples(st.just("wait"), st.sampled_from([0.0, 0.05, MARK_IDLE_S, 0.15, 0.4]))
AGENT = st.tuples(st.just("agent"), st.sampled_from([20, 60, 200]))
STEP = st.one_of(  # frames, waits and agent audio the most often: the lane's edges are between them
    FRAMES, FRAMES, FRAMES, FRAMES, WAIT, WAIT, AGENT, AGENT,
    st.tuples(st.just("delta"), st.sampled_from([20, 100])),
    st.tuples(st.just("done"), st.none()),
    st.tuples(st.just("speech_started"), st.none()),
    st.tuples(st.just("speech_stopped"), st.none()),
    st.tuples(st.just("lost"), st.none()),
    st.tuples(st.just("reopened"), st.none()),
    st.tuples(st.just("reopened"), st.none()),
)
VERDICT = st.sampled_from([None, "human", "human", "machine_start", "unknown"])  # None: not an outbound call


def play(t: Timeline, verdict: str | None, steps: list[tuple[str, Any]], audio: Any) -> None:
    """One call: (an outbound call's first words, then the verdict), the steps, the end, and two
    frames after it. Caller frames come 20 ms apart, as from Twilio."""
    if verdict is not None:
        t.caller_frames(3)
        t.feed(t.core.on_answered_by(verdict, t.now))
    rid = 0
    for kind, arg in steps:
        if kind == "frames":
            for _ in range(arg):
                t.caller_frames(1)
                t.at(t.now + 0.02)
        elif kind == "wait":
            t.advance(arg)
        elif kind == "agent":
            rid += 1
            t.model(ev.ResponseStarted(f"r{rid}"))
            t.model(ev.OutputItemAdded(f"r{rid}", f"i{rid}", "message", "assistant"))
            t.model(ev.AudioDelta(f"r{rid}", f"i{rid}", audio(arg)))
        elif kind == "delta" and rid:
            t.model(ev.AudioDelta(f"r{rid}", f"i{rid}", audio(arg)))
        elif kind == "done" and rid:
            t.model(ev.AudioDone(f"r{rid}", f"i{rid}"))
            t.model(ev.ResponseDone(f"r{rid}", "completed"))
        elif kind == "speech_started":
            t.model(ev.SpeechStarted(audio_start_ms=int(t.now * 1000)))
        elif kind == "speech_stopped":
            t.model(ev.SpeechStopped(audio_end_ms=int(t.now * 1000)))
        elif kind == "lost":
            t.model_down(t.core.link.live)
        elif kind == "reopened":
            opened = [a for a in t.actions if isinstance(a, OpenModel)]
            if opened and not t.core.link.ready and not t.core.ended:
                t.model(ev.SessionStarted(f"sess-{opened[-1].link}"), link=opened[-1].link)
        if t.core.ended:
            break
    t.feed(t.core.end("caller_hangup", t.now))
    t.caller_frames(2)  # frames after the end are dropped the same way


def state(t: Timeline) -> tuple[Any, ...]:
    ml = t.core.link
    return (t.actions, list(ml.tail), list(ml.utterance), list(ml.held), ml.speaking, t.core.ended)


@given(verdict=VERDICT, steps=st.lists(STEP, min_size=3, max_size=40), mode=st.sampled_from(["g711_ulaw", "pcm16"]))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_lane_does_exactly_what_the_core_would_have_done(verdict: str | None, steps: list[tuple[str, Any]],
                                                            mode: str) -> None:
    audio = ulaw if mode == "g711_ulaw" else pcm24
    opts = {"audio_mode": mode, "await_answer": verdict is not None}
    full, lane = FullWay(**opts), LaneFirst(**opts)
    play(full, verdict, steps, audio)
    play(lane, verdict, steps, audio)
    assert state(lane) == state(full)


def test_the_lane_takes_the_steady_state_and_declines_everything_else() -> None:
    """Not vacuous: the lane takes most frames of an ordinary call, and declines the one where the
    agent's audio idled (its mark is due), frames on hold, and frames after the end."""
    t = LaneFirst(await_answer=True)
    t.caller_frames(3)
    assert t.taken == 0  # an outbound call before the answering-machine verdict: held back
    t.feed(t.core.on_answered_by("human", t.now))
    t.caller_frames(10)
    assert t.taken == 10
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "i1", "message", "assistant"))
    t.model(ev.AudioDelta("r1", "i1", ulaw(60)))
    t.caller_frames(4)  # 80 ms: the chunk is fresh
    assert t.taken == 14
    t.at(t.now + MARK_IDLE_S)
    marks = len(intents(t.actions, tel.PlayMark))
    t.caller_frames(1)  # the chunk idled: this frame takes the core's way, which sends the mark
    assert t.taken == 14 and len(intents(t.actions, tel.PlayMark)) == marks + 1
    assert t.lane.until == float("inf")  # no chunk open: nothing to fall due
    t.caller_frames(2)
    assert t.taken == 16
    t.model(ev.SpeechStarted(audio_start_ms=int(t.now * 1000)))
    t.caller_frames(3)
    assert t.taken == 19 and list(t.core.link.utterance)[-3:] == [frame(i) for i in (20, 21, 22)]
    t.feed(t.core.end("caller_hangup", t.now))
    t.caller_frames(2)
    assert t.taken == 19
