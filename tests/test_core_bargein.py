"""Barge-in, exhaustively: the sans-I/O call core driven through generated timelines.

A faithful simulated world surrounds the session: a model peer that produces audio faster than
real time and keeps its own count of what it produced per item, and a Twilio playout buffer that
plays queued audio in real time and returns each mark when playback reaches it (after a network
delay), or at once on `clear`. Hypothesis generates the timelines; the invariants are checked on
every action the session takes.
"""
from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from voicegw.call.actions import ToCaller, ToModel
from voicegw.call.core import CallCore, CoreOptions
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel

SID = "MZ00000000000000000000000000000001"


def _frame(intent: tel.StreamIntent) -> dict:
    """What the Twilio adapter would put on the wire for an intent (as parsed JSON)."""
    if isinstance(intent, tel.PlayAudio):
        return {"event": "media", "media": {"payload": intent.payload_b64}}
    if isinstance(intent, tel.PlayMark):
        return {"event": "mark", "mark": {"name": intent.name}}
    assert isinstance(intent, tel.ClearPlayback)
    return {"event": "clear"}


@dataclass
class Twilio:
    """Plays queued media in real time; returns marks at playback (+delay) or at once on clear."""

    delay_ms: float
    queue: deque = field(default_factory=deque)  # ("media", ms, item) | ("mark", name)
    pos_ms: float = 0.0  # how far into the head media element playback is
    acks: list = field(default_factory=list)  # (due_ms, name)
    heard: dict = field(default_factory=dict)  # item -> ms truly played
    playing_item: str | None = None

    def receive(self, frame: dict, now_ms: float, item_of_next_media: str | None) -> None:
        if frame["event"] == "media":
            ms = len(base64.b64decode(frame["media"]["payload"])) / 8.0
            self.queue.append(["media", ms, item_of_next_media])
        elif frame["event"] == "mark":
            self.queue.append(["mark", frame["mark"]["name"]])
            self._drain_marks(now_ms)
        elif frame["event"] == "clear":
            for el in self.queue:
                if el[0] == "mark":
                    self.acks.append((now_ms, el[1]))  # cleared marks come back at once
            self.queue.clear()
            self.pos_ms = 0.0

    def _drain_marks(self, now_ms: float) -> None:
        while self.queue and self.queue[0][0] == "mark":
            self.acks.append((now_ms + self.delay_ms, self.queue.popleft()[1]))

    def advance(self, start_ms: float, dt_ms: float) -> None:
        t = start_ms
        left = dt_ms
        self._drain_marks(t)
        while left > 0 and self.queue:
            kind, ms, item = self.queue[0]
            step = min(left, ms - self.pos_ms)
            self.heard[item] = self.heard.get(item, 0.0) + step
            self.pos_ms += step
            left -= step
            t += step
            if self.pos_ms >= ms - 1e-9:
                self.queue.popleft()
                self.pos_ms = 0.0
                self._drain_marks(t)

    def due(self, now_ms: float) -> list[str]:
        out = [name for due, name in self.acks if due <= now_ms]
        self.acks = [(d, n) for d, n in self.acks if d > now_ms]
        return out


@dataclass
class Model:
    produced: dict = field(default_factory=dict)  # item -> ms of audio the model produced
    active: str | None = None  # response in progress
    item: str | None = None
    n: int = 0
    cancelled_pending: list = field(default_factory=list)
    items: set = field(default_factory=set)
    deleted: set = field(default_factory=set)


OPS = st.one_of(
    st.tuples(st.just("respond")),
    st.tuples(st.just("delta"), st.integers(min_value=1, max_value=60)),  # x 10 ms of audio
    st.tuples(st.just("done")),
    st.tuples(st.just("speech")),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=800)),
    st.tuples(st.just("dtmf"), st.sampled_from("12#")),
)

# Turn-shaped timelines: the model answers (several deltas, maybe finishing), time passes while the
# caller listens, the caller may talk over it; noise ops are interleaved. Most turns end in a barge-in.
TURN = st.tuples(
    st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=8),
    st.booleans(),
    st.integers(min_value=0, max_value=3000),
    st.booleans(),
    st.integers(min_value=0, max_value=600),
    st.lists(OPS, max_size=3),
)


def _flatten(turns: list) -> list[tuple]:
    ops: list[tuple] = []
    for deltas, done, listen, speech, after, noise in turns:
        ops.append(("respond",))
        ops += [("delta", d) for d in deltas]
        if done:
            ops.append(("done",))
        ops.append(("advance", listen) if listen else ("advance", 1))
        if speech:
            ops.append(("speech",))
        ops += noise
        ops.append(("advance", after + 1))
        ops.append(("done",))
    return ops


TIMELINES = st.one_of(st.lists(OPS, min_size=1, max_size=80), st.lists(TURN, min_size=1, max_size=6).map(_flatten))


def run_timeline(ops: list[tuple], delay_ms: float, interrupt: bool = True) -> dict:
    cfg = ev.SessionConfig(audio_format="g711_ulaw", turn_detection=ev.TurnDetection(interrupt_response=interrupt))
    opts = CoreOptions(session_config=cfg, audio_mode="g711_ulaw", greeting_text=None, dtmf_flush_s=0.5)
    now_ms = 0.0
    s = CallCore(opts, now=0.0)
    tw = Twilio(delay_ms)
    m = Model()
    stats = {"clears": 0, "truncates": 0, "deletes": 0, "cancels": 0, "max_err_ms": 0.0, "stale_sent": 0}
    last_item_sent: list[str | None] = [None]
    cancelled: set[str] = set()

    def perform(acts: list) -> None:
        pending_media_item = None
        for a in acts:
            if isinstance(a, ToCaller):
                frame = _frame(a.intent)
                if frame["event"] == "clear":
                    stats["clears"] += 1
                    # audio still queued, or played but its mark not yet back over the network
                    assert tw.queue or tw.acks, "clear sent with no agent audio outstanding"
                if frame["event"] == "media":
                    pending_media_item = last_item_sent[0]
                    assert pending_media_item not in cancelled_items, "audio of a cancelled response reached the caller"
                tw.receive(frame, now_ms, pending_media_item)
            elif isinstance(a, ToModel):
                assert a.link == 1
                c = a.command
                if isinstance(c, ev.CancelResponse):
                    stats["cancels"] += 1
                    assert m.active is not None, "response.cancel sent with no response in progress"
                    cancelled.add(m.active)
                    cancelled_items.add(m.item)
                    m.cancelled_pending.append(m.active)
                    m.active = None
                elif isinstance(c, ev.TruncateItem):
                    stats["truncates"] += 1
                    assert c.item_id in m.items, "truncate of an unknown item"
                    assert c.audio_end_ms >= 1, "truncate to 0 ms (the service rejects it)"
                    assert c.audio_end_ms <= m.produced[c.item_id] + 1e-6, (
                        f"truncate beyond produced audio: {c.audio_end_ms} > {m.produced[c.item_id]}")
                    err = abs(c.audio_end_ms - tw.heard.get(c.item_id, 0.0))
                    stats["max_err_ms"] = max(stats["max_err_ms"], err)
                elif isinstance(c, ev.DeleteItem):
                    stats["deletes"] += 1
                    assert tw.heard.get(c.item_id, 0.0) <= delay_ms + 1.0, "deleted an item the caller had heard"
                    m.deleted.add(c.item_id)
                elif isinstance(c, ev.CreateResponse):
                    pass

    cancelled_items: set = set()
    perform(s.start(0.0))
    perform(s.on_model(ev.SessionStarted("sess"), 0.0, 1))
    perform(s.on_stream(tel.StreamStarted(stream_sid=SID, call_sid="CA1"), 0.0))
    def on_model(e: ev.ServerEvent) -> None:
        perform(s.on_model(e, now_ms / 1000, 1))

    for op in ops:
        kind = op[0]
        if kind == "respond" and m.active is None:
            m.n += 1
            m.active, m.item = f"resp{m.n}", f"item{m.n}"
            m.items.add(m.item)
            m.produced[m.item] = 0.0
            on_model(ev.ResponseStarted(m.active))
            on_model(ev.OutputItemAdded(m.active, m.item, "message", "assistant"))
        elif kind == "delta" and m.active is not None:
            ms = op[1] * 10
            m.produced[m.item] += ms
            last_item_sent[0] = m.item
            payload = base64.b64encode(bytes([0x7F]) * (ms * 8)).decode()
            on_model(ev.AudioDelta(m.active, m.item, payload))
        elif kind == "delta" and m.cancelled_pending:
            # a late delta of a cancelled response, still in flight when the cancel was sent
            rid = m.cancelled_pending[-1]
            payload = base64.b64encode(bytes([0x7F]) * 800).decode()
            on_model(ev.AudioDelta(rid, "item" + rid[4:], payload))
        elif kind == "done":
            for rid in m.cancelled_pending:
                on_model(ev.ResponseDone(rid, "cancelled"))
            m.cancelled_pending.clear()
            if m.active is not None:
                on_model(ev.ResponseDone(m.active, "completed"))
                m.active = None
        elif kind == "speech":
            queued_before = bool(tw.queue)
            clears_before = stats["clears"]
            on_model(ev.SpeechStarted(audio_start_ms=int(now_ms)))
            if interrupt and s.playout.busy is False and clears_before == stats["clears"]:
                assert not queued_before or all(el[0] == "mark" for el in tw.queue) or tw.queue == deque(), \
                    "caller spoke over queued agent audio and no clear was sent"
        elif kind == "dtmf":
            perform(s.on_stream(tel.Dtmf(op[1]), now_ms / 1000))
        elif kind == "advance":
            step = 5.0
            left = float(op[1])
            while left > 0:
                dt = min(step, left)
                tw.advance(now_ms, dt)
                now_ms += dt
                left -= dt
                for name in tw.due(now_ms):
                    perform(s.on_stream(tel.MarkPlayed(name), now_ms / 1000))
                perform(s.tick(now_ms / 1000))
    return stats


@settings(max_examples=400, deadline=None)
@given(ops=TIMELINES, delay=st.sampled_from([0.0, 5.0, 20.0, 60.0]))
def test_bargein_invariants_over_generated_timelines(ops: list, delay: float) -> None:
    stats = run_timeline(ops, delay)
    # heard is estimated from acks that arrive `delay` late; the estimate is never off by more
    # than that delay plus the 5 ms simulation step
    assert stats["max_err_ms"] <= delay + 5.0 + 1.0, stats


@settings(max_examples=100, deadline=None)
@given(ops=TIMELINES)
def test_interrupt_response_false_never_cuts_the_agent_off_on_speech(ops: list) -> None:
    ops = [op for op in ops if op[0] != "dtmf"]
    stats = run_timeline(ops, 0.0, interrupt=False)
    assert stats["clears"] == 0 and stats["truncates"] == 0 and stats["deletes"] == 0


def test_scripted_bargein_truncates_at_heard_and_leaves_the_cancel_to_server_vad() -> None:
    # 2 s of agent audio arrives at once; the caller interrupts 700 ms into playback. Server VAD
    # with interrupt_response cancels the response itself: a client cancel would be an error.
    ops = [("respond",), ("delta", 100), ("delta", 100), ("advance", 700), ("speech",)]
    stats = run_timeline(ops, 0.0)
    assert stats == {**stats, "clears": 1, "truncates": 1, "cancels": 0, "deletes": 0}
    assert stats["max_err_ms"] <= 5.0


def test_scripted_bargein_after_response_done_truncates_without_cancel() -> None:
    ops = [("respond",), ("delta", 50), ("done",), ("advance", 200), ("speech",)]
    stats = run_timeline(ops, 0.0)
    assert stats["cancels"] == 0 and stats["truncates"] == 1 and stats["clears"] == 1


def test_scripted_bargein_before_any_playback_deletes_instead_of_truncating_to_zero() -> None:
    ops = [("respond",), ("delta", 50), ("speech",)]
    stats = run_timeline(ops, 0.0)
    assert stats["deletes"] == 1 and stats["truncates"] == 0 and stats["cancels"] == 0


def test_keypad_bargein_cancels_the_response_in_progress_itself() -> None:
    # the server's VAD did not see the keypad press: the gateway must cancel
    ops = [("respond",), ("delta", 100), ("advance", 300), ("dtmf", "#")]
    stats = run_timeline(ops, 0.0)
    assert stats == {**stats, "clears": 1, "truncates": 1, "cancels": 1, "deletes": 0}


def test_speech_with_nothing_queued_does_nothing() -> None:
    ops = [("respond",), ("delta", 10), ("done",), ("advance", 500), ("speech",)]
    stats = run_timeline(ops, 0.0)
    assert stats["clears"] == 0 and stats["truncates"] == 0 and stats["cancels"] == 0
