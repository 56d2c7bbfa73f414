"""The steady state's way for caller frames, 50 a second per call, without calling into the core.

In the call's steady state a caller frame's only effect is to be remembered for replay and
appended on the live model session (`CallCore.caller_audio`). The core says until when that
holds (`CallCore.steady_until`); the bridge reads it after every call into the core (`arm`),
together with what such a frame touches: the live link's replay buffers, the converter, the
live session's writer. A frame then costs one call here instead of a walk through the bridge,
the core and the link (under load, each object a frame touches costs cache misses: this is most
of what the gateway spends per caller frame beyond the socket work).

`take` declines (False, nothing done) whenever the frame may need more than that -- the lane is
not armed, the open chunk's mark fell due, or the latency probe wants this frame timed -- and the
frame then takes `CallBridge.on_frame`, which calls into the core and re-arms the lane. Disarming
is always safe; a stale arming is not, which is why every way into the core ends in `arm`.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from voicegw.call.callerin import mark_due
from voicegw.realtime import events as ev

if TYPE_CHECKING:
    from voicegw.call.core import CallCore
    from voicegw.call.playout import Playout
    from voicegw.call.probe import Sampler

_NEVER = float("-inf")


class CallerLane:
    __slots__ = ("until", "tail", "utterance", "convert", "append", "writer", "sampler", "clock", "playout")

    def __init__(self, clock: Callable[[], float], sampler: Sampler[Any] | None) -> None:
        self.until = _NEVER  # frames arriving before this time (on `clock`) are the lane's
        self.tail: deque[str] = deque()
        self.utterance: deque[str] | None = None  # the live link's, while the caller is speaking
        self.convert: Callable[[str], str] | None = None  # the caller->model converter (pcm16)
        self.append: Callable[[str], bool] | None = None  # the live session's `append_now`
        self.writer: Any = None  # the live session's writer (when `append` declines or is None)
        self.sampler = sampler  # the latency probe's caller->model sampler
        self.clock = clock
        self.playout: Playout | None = None  # the core's, for `retime`

    def arm(self, core: CallCore, link: Any) -> None:
        """After a call into `core`: take steady-state frames for `link` (the bridge's live link,
        None when there is none to write to) until the core's `steady_until`, or none."""
        until = core.steady_until() if link is not None else None
        if until is None:
            self.until = _NEVER
            return
        self.until = until
        ml = core.link
        self.tail = ml.tail
        self.utterance = ml.utterance if ml.speaking else None
        self.convert = None if core._passthrough else core.to_model.convert
        self.append = link.append
        self.writer = link.writer
        self.playout = core.playout

    def retime(self) -> None:
        """After a steady-state audio delta (`CallCore.live_audio`, which changes nothing else the
        lane depends on): an armed lane's `until` moves with the open chunk's mark."""
        if self.until != _NEVER:
            self.until = mark_due(self.playout)  # type: ignore[arg-type]  # set with `until`

    def take(self, payload_b64: str) -> bool:
        """A caller frame's payload (base64 mu-law): True when it was remembered and appended (as
        `CallCore.caller_audio` and the bridge would have done), False when it must take `on_frame`."""
        if self.clock() >= self.until:
            return False
        sampler = self.sampler
        if sampler is not None and sampler.due():
            return False  # a sampled frame is timed on `on_frame`'s way (due until one is tracked)
        self.tail.append(payload_b64)
        utterance = self.utterance
        if utterance is not None:
            utterance.append(payload_b64)
        convert = self.convert
        audio = payload_b64 if convert is None else convert(payload_b64)
        if audio:
            append = self.append  # at once, or through the writer when the socket is closed or backed up
            if append is None or not append(audio):
                self.writer.put(ev.AppendAudio(audio))
        return True
