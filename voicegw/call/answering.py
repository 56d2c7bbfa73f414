"""Outbound calls answered by a person or a machine (Twilio's asynchronous answering-machine
detection), part of the call core.

While the answer is being classified the agent says nothing and the model hears nothing (a
voicemail greeting must not start a conversation). A person -- or no verdict -- gets the greeting;
a machine gets the agent's `voicemail:` policy: a message said after the beep then hang up, or
hang up at once. A verdict that never comes is given up on after `answer_timeout_s`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from voicegw.call.actions import Action, Control

if TYPE_CHECKING:
    from voicegw.call.core import CallCore

HUMAN = frozenset({"human", "unknown"})
MACHINE_DONE = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})


class Answering:
    @property
    def awaiting_answer(self: CallCore) -> bool:
        return self.answer == "waiting"

    def on_answered_by(self: CallCore, answered_by: str, now: float, detection_ms: int | None = None) -> list[Action]:
        """Twilio's AnsweredBy for this (outbound) call."""
        if self.ended:
            return []
        acts: list[Action] = [self._log("amd", now, answered_by=answered_by, detection_ms=detection_ms,
                                        waited=self.awaiting_answer)]
        if not self.awaiting_answer and self.answer != "machine":
            return acts  # a late or unasked-for verdict: recorded, nothing changes
        if answered_by in HUMAN:
            self.answer = "human"
            self.gated = self.on_hold
            return acts + (self._greet() if self.link.ready else [])  # else: greeted once the model is up
        message = self.opts.voicemail_message
        if answered_by == "machine_start" and message is not None:
            self.answer = "machine"  # wait for the end of its greeting (machine_end_*) to speak
            return acts
        self.answer = "machine"
        self.gated = True
        if answered_by in MACHINE_DONE and message is not None:
            self.greeted = True
            return acts + self._leave_now(now, "voicemail", message, Control("hangup"), "voicemail_left")
        reason = "fax" if answered_by == "fax" else "voicemail"
        return acts + self._begin_exit(Control("hangup"), reason, now, goodbye=False) + self._maybe_exit(now)

    def _answer_overdue(self: CallCore, now: float) -> list[Action]:
        """No verdict in time: treat the answer as a person's (a machine would have been heard by now)."""
        self.answer_due = None
        if not self.awaiting_answer:
            return []
        return [self._log("error", now, source="telephony", code="amd_timeout",
                          message="no answering-machine verdict in time: greeting as for a person")] \
            + self.on_answered_by("unknown", now)
