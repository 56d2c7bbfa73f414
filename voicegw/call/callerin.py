"""Caller audio on its way to the model, part of the call core.

A caller frame arrives 50 times a second per call. In the call's steady state (answered, off
hold, the model session up, no agent audio idling with its mark unsent) its only effect is an
append on the live session: `caller_audio` does exactly that and returns the audio. Every other
state returns None, and `on_caller_audio` handles it; there is one rule for each case, here.

`steady_until` states the steady state as data: until when (absent any other event) a caller
frame's only effect is to be remembered for replay (`ModelLink.caller_frame`) and appended on
the live session. The I/O layer reads it after each call into the core and then takes such
frames without calling in (voicegw/call/callerlane.py); any other event makes it ask again.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from voicegw.call.actions import Action, ToModel
from voicegw.realtime import events as ev

if TYPE_CHECKING:
    from voicegw.call.core import CallCore
    from voicegw.call.playout import Playout
    from voicegw.telephony import base as tel

MARK_IDLE_S = 0.1  # an open playout chunk that got no audio this long is closed (its mark sent)
_FOREVER = float("inf")


def mark_due(playout: Playout) -> float:
    """When the open playout chunk's mark falls due (MARK_IDLE_S after its last audio); infinity
    when no chunk is open."""
    return playout.open_at + MARK_IDLE_S if playout.has_open else _FOREVER


class CallerAudioIn:
    def caller_audio(self: CallCore, payload_b64: str, now: float) -> str | None:
        """A caller frame (base64 mu-law) in the steady state: noted for replay and converted; returns
        the audio to append on the live session ("" when the resampler holds all of it). None when
        the frame has other effects: then nothing of it was done, and `on_caller_audio` takes it."""
        until = self.steady_until()
        if until is None or now >= until:
            return None
        self.link.caller_frame(payload_b64)
        return payload_b64 if self._passthrough else self.to_model.convert(payload_b64)

    def on_caller_audio(self: CallCore, e: tel.CallerAudio, now: float) -> list[Action]:
        """`on_stream` for a caller audio frame: the steady state's rule, or what else the frame needs."""
        payload = e.payload_b64
        audio = self.caller_audio(payload, now)
        if audio is None:
            if self.ended:
                return []
            link = self.link
            if not self.gated and not link.ready:
                link.caller_frame(payload)
                link.held.append(payload)
                return []
            # no agent audio for a while: the open chunk's mark goes out now (after the append)
            marks = self._close_chunk() if self._chunk_idle(now) else []
            if self.gated:
                return marks
            audio = self.caller_audio(payload, now)  # the steady state, now that the chunk is closed
            return ([ToModel(ev.AppendAudio(audio), link.live)] if audio else []) + marks
        return [ToModel(ev.AppendAudio(audio), self.link.live)] if audio else []

    def steady_until(self: CallCore) -> float | None:
        """Until when caller frames are in the steady state (`caller_audio`'s rule): None when they
        are not (ended, held back, no model session up); the time the open playout chunk's mark
        falls due when agent audio is playing; infinity otherwise."""
        if self.ended or self.gated or not self.link.ready:
            return None
        return mark_due(self.playout)

    def _chunk_idle(self: CallCore, now: float) -> bool:
        """Agent audio's open playout chunk got no audio for MARK_IDLE_S: its mark is due."""
        return now >= mark_due(self.playout)
