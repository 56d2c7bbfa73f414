"""Leaving the call: after the agent's last words have been heard, perform the control (transfer,
hang-up) and end. One small state object instead of five interlocking flags."""
from __future__ import annotations

from dataclasses import dataclass

from voicegw.call.actions import Control


@dataclass
class ExitPlan:
    control: Control | None  # None: just end (closing the stream ends a <Connect><Stream> call)
    reason: str
    deadline: float  # leave by then whatever is still playing
    goodbye: str = "none"  # none | wanted (ask the model for it) | speaking (asked, not done yet)
    goodbye_rid: str | None = None  # the response carrying the goodbye, once it started
    hold_for_stream_s: float | None = None  # no stream yet: once it starts, leave by then + this

    @property
    def waiting_for_goodbye(self) -> bool:
        return self.goodbye != "none"

    def goodbye_started(self, response_id: str) -> None:
        if self.goodbye == "speaking" and self.goodbye_rid is None:
            self.goodbye_rid = response_id

    def response_done(self, response_id: str) -> None:
        if response_id == self.goodbye_rid:
            self.goodbye = "none"
