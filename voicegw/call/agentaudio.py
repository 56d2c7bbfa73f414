"""Agent audio on its way to the caller: model deltas checked, converted, bounded and queued.

Part of the call core (`CallCore` inherits it). The model is an edge too (DESIGN.md "Edges are
hostile"): one delta that is not base64, or that the converter chokes on, costs that delta -- it
is logged (the first `MAX_BAD_AUDIO_LOGS` of a call) and skipped -- never the model session,
which a reconnect and an apology would cost the caller.

Bounds:
* **Frame size.** Twilio plays a payload of any length, but one JSON frame per delta means a
  hostile or buggy 60 s delta is a 640 KB frame the caller writer must push in one go, and a
  `clear` cannot cut into it. Audio goes out in frames of at most `MAX_PLAY_BYTES` (just under
  1 s, 8000 mu-law bytes, a multiple of 3 so the base64 text splits on 4-character boundaries
  without a decode/encode round trip); they belong to one playout chunk, so the accounting
  is unchanged.
* **Marks.** One per ~100 ms of audio (`MARK_EVERY_MS`), not one per delta; see
  voicegw/call/playout.py.
* **Queued audio.** The model generates faster than real time; a model that never stops would
  queue unbounded audio at Twilio (and, before the stream starts, in this process). Beyond
  `MAX_QUEUED_AUDIO_MS` the rest of that response's audio is dropped and logged once. What the
  model *produced* still counts it (truncation compares with the model's own item), what was
  *emitted* and *heard* does not, so a later barge-in truncates at what the caller heard.
"""
from __future__ import annotations

import binascii
from typing import TYPE_CHECKING, Union

import pybase64

from voicegw.call.actions import Action, ToCaller
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel

if TYPE_CHECKING:
    from voicegw.call.core import CallCore

MAX_PLAY_BYTES = 7998  # per PlayAudio frame: 999.75 ms of 8 kHz mu-law, 3 * 2666 bytes
_MAX_PLAY_CHARS = MAX_PLAY_BYTES // 3 * 4  # 10664 base64 characters, no padding inside the batch
MAX_QUEUED_AUDIO_MS = 120_000  # agent audio queued at the provider (or before the stream) per call
MAX_BAD_AUDIO_LOGS = 5  # bad deltas logged per call; the rest are only counted


def split_b64(ulaw_b64: str) -> list[str]:
    """Valid base64 `ulaw_b64` as payloads of at most MAX_PLAY_BYTES each (no copy when it fits)."""
    if len(ulaw_b64) <= _MAX_PLAY_CHARS:
        return [ulaw_b64]
    return [ulaw_b64[i:i + _MAX_PLAY_CHARS] for i in range(0, len(ulaw_b64), _MAX_PLAY_CHARS)]


def _decode_strict(b64: str) -> tuple[bytes, str]:
    """The bytes `b64` holds, and why it is not clean base64 ("" when it is). Strict, because in
    passthrough the text goes to Twilio as it is: no whitespace, stray characters or misplaced or
    excess padding (pybase64's validating decoder takes exactly the canonical grammar, which
    binascii's strict mode did not: it let excess trailing padding through). It takes 0.4 us for a
    20 ms PCM16 delta where binascii took 2.3; the bytes spare the pcm16 converter a second decode."""
    if len(b64) & 3:
        return b"", "not valid base64 (length is not a multiple of 4)"
    try:
        return pybase64.b64decode(b64, validate=True), ""
    except (binascii.Error, ValueError) as exc:
        return b"", f"not valid base64 ({exc})"


# A piece of agent audio (`AgentAudio._emit_piece`): its actions, or one of the two steady outcomes
# as data -- the payload to play (`str`), or the payload and the mark that follows it (`tuple`).
Piece = Union[list[Action], str, tuple[str, str]]


def played(piece: Piece) -> list[Action]:
    """A piece of agent audio as actions: a steady piece is one PlayAudio, and its mark if it has one."""
    kind = type(piece)
    if kind is str:
        return [ToCaller(tel.PlayAudio(piece))]  # type: ignore[arg-type]
    if kind is tuple:
        return [ToCaller(tel.PlayAudio(piece[0])), ToCaller(tel.PlayMark(piece[1]))]  # type: ignore[index]
    return piece  # type: ignore[return-value]


class AgentAudio:
    def _audio_delta(self: CallCore, response_id: str, item_id: str, b64: str, now: float) -> list[Action]:
        """An audio delta's fields (`ev.AudioDelta`'s), from the live session."""
        return played(self._audio_piece(response_id, item_id, b64, now))

    def _audio_piece(self: CallCore, response_id: str, item_id: str, b64: str, now: float) -> Piece:
        """`_audio_delta`, with its commonest outcomes as data (see `_emit_piece`)."""
        r = self.responses
        if response_id in r.stale:
            return []
        raw, problem = _decode_strict(b64)
        if problem:
            return self._bad_audio(item_id, problem, now)
        end = r.produced.get(item_id, 0.0) + len(raw) / self._model_bytes_per_ms
        r.produced[item_id] = end
        if response_id in self._capped:
            return []
        if self._passthrough:
            return self._emit_piece(item_id, b64, end, now, response_id)
        try:
            out = self.to_caller.convert(b64, raw)
        except Exception as exc:  # noqa: BLE001 - one delta the converter cannot take costs that delta only
            self.to_caller.reset()
            return self._bad_audio(item_id, f"could not be converted ({type(exc).__name__}: {exc})", now)
        # the resampler holds some audio back: what goes out now ends that much earlier
        return self._emit_piece(item_id, out, end - self.to_caller.latency_ms, now, response_id)

    def _audio_done(self: CallCore, e: ev.AudioDone, now: float) -> list[Action]:
        if e.response_id in self.responses.stale:
            return []
        self.responses.audio_done.add(e.item_id)
        if e.response_id in self._capped:
            self.to_caller.reset()
            return []
        try:
            tail = self.to_caller.flush()
        except Exception as exc:  # noqa: BLE001 - as for a delta: the tail is lost, the session is not
            self.to_caller.reset()
            return self._bad_audio(e.item_id, f"its tail could not be converted ({type(exc).__name__})", now)
        return self._emit(e.item_id, tail, self.responses.produced.get(e.item_id, 0.0), now, e.response_id)

    def _bad_audio(self: CallCore, item_id: str, why: str, now: float) -> list[Action]:
        self._bad_audio_count += 1
        if self._bad_audio_count > MAX_BAD_AUDIO_LOGS:
            return []
        return [self._log("error", now, source="model", code="bad_audio", item_id=item_id,
                          message=f"agent audio of item {item_id} skipped: {why}"
                          + (" (further bad audio is counted, not logged)"
                             if self._bad_audio_count == MAX_BAD_AUDIO_LOGS else ""))]

    def _emit(self: CallCore, item_id: str, ulaw_b64: str, end: float, now: float,
              response_id: str | None = None) -> list[Action]:
        """Queue converted audio covering the item's model audio up to `end` ms."""
        return played(self._emit_piece(item_id, ulaw_b64, end, now, response_id))

    def _emit_piece(self: CallCore, item_id: str, ulaw_b64: str, end: float, now: float,
                    response_id: str | None = None) -> Piece:
        """`_emit`, with its steady outcomes as data: the stream is up, no turn latency is pending,
        the payload fits one frame and no mark goes out before it (`Playout.push_steady`). Then
        `_send_audio` would return exactly one PlayAudio of it, and the PlayMark of the chunk it
        closes if it closes one: `ulaw_b64` itself, or `(ulaw_b64, mark)`; the bridge plays them as
        they are (`played` makes them actions)."""
        if not ulaw_b64:
            return []
        emitted = self.responses.emitted
        start = emitted.get(item_id, 0.0)
        end = max(start, end)
        if self.playout.queued_ms() + self._pre_stream_ms + (end - start) > MAX_QUEUED_AUDIO_MS \
                and response_id is not None:
            self._capped.add(response_id)
            return [self._log("error", now, source="model", code="audio_capped", item_id=item_id,
                              message=f"over {MAX_QUEUED_AUDIO_MS / 1000:g} s of agent audio queued for the caller: "
                                      f"the rest of response {response_id} is dropped")]
        emitted[item_id] = end
        if self.stream_sid is None:
            self._pre_stream.append((item_id, ulaw_b64, start, end))
            self._pre_stream_ms += end - start
            return []
        if len(ulaw_b64) <= _MAX_PLAY_CHARS and not self._awaiting_first_audio:
            mark = self.playout.push_steady(item_id, start, end, now)
            if mark is not None:
                return (ulaw_b64, mark) if mark else ulaw_b64
        return self._send_audio(item_id, ulaw_b64, start, end, now)

    def _send_audio(self: CallCore, item_id: str, ulaw_b64: str, start: float, end: float, now: float) -> list[Action]:
        """Audio out; its mark once the open chunk holds MARK_EVERY_MS (see voicegw/call/playout.py)."""
        before, after = self.playout.push(item_id, start, end, now)
        acts: list[Action] = [ToCaller(tel.PlayMark(before))] if before else []  # another item's mark first
        if len(ulaw_b64) <= _MAX_PLAY_CHARS:
            acts.append(ToCaller(tel.PlayAudio(ulaw_b64)))
        else:
            acts += [ToCaller(tel.PlayAudio(p)) for p in split_b64(ulaw_b64)]
        if after:
            acts.append(ToCaller(tel.PlayMark(after)))
        if self._awaiting_first_audio and self._speech_stopped_at is not None \
                and item_id not in self.responses.oob_items:
            self._awaiting_first_audio = False
            latency = (now - self._speech_stopped_at) * 1000.0
            acts.append(self._log("turn.latency", now, item_id=item_id, latency_ms=round(latency, 1)))
        return acts

    def _flush_pre_stream(self: CallCore, now: float) -> list[Action]:
        """The stream started: what was generated before it (greeting, apology) goes out now."""
        acts: list[Action] = []
        for item_id, b64, start, end in self._pre_stream:
            acts += self._send_audio(item_id, b64, start, end, now)
        self._pre_stream.clear()
        self._pre_stream_ms = 0.0
        return acts + self._close_chunk()

    def _close_chunk(self: CallCore) -> list[Action]:
        """The mark of the open chunk, now: its item's audio ended, the response or the link did,
        or no audio came for MARK_EVERY_MS (a response paused, a link switched)."""
        mark = self.playout.close()
        return [ToCaller(tel.PlayMark(mark))] if mark else []
