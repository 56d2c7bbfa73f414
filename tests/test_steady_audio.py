"""A model delta's steady outcome as data (`CallCore.live_piece`, `AgentAudio._emit_piece`).

Most deltas of a talking call ask for one thing: play this payload, which continues the open
playout chunk (or opens one) and no mark goes out around it. The core then returns the payload itself, and
the bridge plays it without an action in between. These tests play the same calls twice -- once
with that case switched off (every delta takes `_send_audio` and `Playout.push`), once taking
deltas as the bridge does (`live_piece` first) -- and require the same commands, audio and marks
in the same order, the same playout accounting and the same record of what each item produced,
emitted and was heard, whatever happens between the deltas.
"""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_caller_lane import STEP, VERDICT, play
from tests.test_core_timelines import Timeline, intents, pcm24, ulaw
from voicegw.call.actions import Action, ToCaller
from voicegw.call.playout import MARK_EVERY_MS, Playout
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel


class NoSteadyCase(Playout):
    __slots__ = ()

    def push_steady(self, item_id: str, start_ms: float, end_ms: float, now: float) -> str | None:
        return None


class GeneralWay(Timeline):
    """Every delta takes `_send_audio`: the steady case is switched off."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.core.playout.__class__ = NoSteadyCase


class PieceFirst(Timeline):
    """Deltas take `live_piece` first, as the bridge's `on_audio` does."""

    def __init__(self, **options: Any) -> None:
        self.pieces = 0
        self.marked = 0  # pieces that closed their playout chunk
        super().__init__(**options)

    def model(self, e: ev.ServerEvent, link: int | None = None) -> list[Action]:
        if type(e) is ev.AudioDelta:
            n = self.core.link.live if link is None else link
            due = self.core.next_deadline()
            piece = self.core.live_piece(e.response_id, e.item_id, e.audio_b64, self.now, n)
            if piece is not None:
                assert self.core.next_deadline() == due, "a live audio delta moved a deadline"
                if type(piece) is str:
                    self.pieces += 1
                    assert piece, "a steady piece has audio"
                    return self.feed([ToCaller(tel.PlayAudio(piece))])
                if type(piece) is tuple:
                    self.marked += 1
                    payload, mark = piece
                    assert payload and mark, "a marked piece has audio and a mark"
                    return self.feed([ToCaller(tel.PlayAudio(payload)), ToCaller(tel.PlayMark(mark))])
                return self.feed(piece)  # type: ignore[arg-type]
        return super().model(e, link)


def state(t: Timeline) -> tuple[Any, ...]:
    p, r = t.core.playout, t.core.responses
    chunks = [(c.mark, c.item_id, c.start_ms, c.end_ms, c.sent_at) for c in p._pending]
    heard = {item: p.heard_ms(item, t.now) for item in r.produced}
    return (t.actions, chunks, p._open is None, p.queued_ms(), p.open_at, p._head_since, dict(r.produced),
            dict(r.emitted), heard, t.core.ended)


@given(verdict=VERDICT, steps=st.lists(STEP, min_size=3, max_size=40), mode=st.sampled_from(["g711_ulaw", "pcm16"]))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_steady_piece_is_exactly_what_the_general_way_does(verdict: str | None, steps: list[tuple[str, Any]],
                                                               mode: str) -> None:
    audio = ulaw if mode == "g711_ulaw" else pcm24
    opts = {"audio_mode": mode, "await_answer": verdict is not None}
    general, pieces = GeneralWay(**opts), PieceFirst(**opts)
    play(general, verdict, steps, audio)
    play(pieces, verdict, steps, audio)
    assert state(pieces) == state(general)


def answered(mode: str, delta_ms: int, deltas: int) -> PieceFirst:
    """A call whose model answers with `deltas` deltas of `delta_ms`, taken as the bridge takes them."""
    audio = ulaw if mode == "g711_ulaw" else pcm24
    t = PieceFirst(audio_mode=mode)
    t.model(ev.ResponseStarted("r1"))
    t.model(ev.OutputItemAdded("r1", "i1", "message", "assistant"))
    for _ in range(deltas):
        t.model(ev.AudioDelta("r1", "i1", audio(delta_ms)))
    return t


def test_a_talking_call_is_mostly_steady_pieces_and_marks_still_go_out() -> None:
    """Not vacuous: 20 ms deltas of one answer are steady pieces except every one that brings the
    open chunk to MARK_EVERY_MS (its mark follows the audio)."""
    for mode in ("g711_ulaw", "pcm16"):
        t = answered(mode, 20, 50)
        marks = intents(t.actions, tel.PlayMark)
        assert len(marks) >= 50 * 20 / MARK_EVERY_MS - 1, mode
        assert t.pieces >= 50 - len(marks) - 1, (mode, t.pieces, len(marks))
        assert len(intents(t.actions, tel.PlayAudio)) >= 49, mode
        assert t.marked >= len(marks) - 1, (mode, t.marked, len(marks))  # the delta that closes a chunk


def test_deltas_of_a_chunk_or_more_are_each_a_piece_with_its_mark() -> None:
    """200 ms deltas (the local model's): each closes its own chunk, so each is a marked piece, and
    the marks go out right after their audio."""
    for mode in ("g711_ulaw", "pcm16"):
        t = answered(mode, 200, 10)
        assert t.marked >= 9 and t.pieces == 0, (mode, t.marked, t.pieces)
        kinds = [type(a.intent).__name__ for a in t.actions if type(a) is ToCaller]  # type: ignore[union-attr]
        assert kinds[-18:] == ["PlayAudio", "PlayMark"] * 9, (mode, kinds)
