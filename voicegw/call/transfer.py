"""Warm transfer, part of the call core.

1. The transfer tool returns `Transfer(mode="warm")`: the agent tells the caller they are being
   connected (the tool's follow-up answer) while a summary of the call is asked for on the side
   (voicegw.call.asides).
2. Once both are done -- told and heard, summary in hand (or a plain fallback line) -- the caller is
   on hold: hold music from the gateway on the same media stream, the model hears nothing, and
   `Control("warm_transfer")` has the provider dial the human, who hears the summary before joining.
3. The provider reports the human's leg: answered -> `Control("join_transfer")` bridges the caller
   to the human and the agent leaves the call; not answered (busy, no-answer, failed, or nothing
   within the ring time + slack) -> the hold ends and the agent tells the caller and goes on.

The caller stays on the media stream until the human has answered, so a transfer nobody takes
returns the caller to the same conversation, with its context, without a new stream.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicegw.call.actions import Action, Control, ToCaller
from voicegw.call.asides import TRANSFER_INSTRUCTIONS, TRANSFER_SUMMARY, record_tool
from voicegw.telephony import base as tel
from voicegw.tools.contract import Transfer

if TYPE_CHECKING:
    from voicegw.call.core import CallCore

TELL_LIMIT_S = 12.0  # longest wait for "connecting you" to be said and heard, and for the summary
RING_SLACK_S = 15.0  # past the ring time, a transfer the provider never reported is given up
HOLD_CHUNK_S = 1.0  # hold music is queued this far ahead
FALLBACK_SUMMARY = "A caller is being transferred to you by the phone assistant."
ANSWERED = frozenset({"answered", "in-progress"})
NOT_ANSWERED = frozenset({"busy", "no-answer", "failed", "canceled", "completed"})
NO_ANSWER_INSTRUCTIONS = (
    "The transfer to a colleague did not go through: {why}. Tell the caller so in one short sentence, "
    "and offer to help further or to take a message.")


@dataclass
class WarmState:
    target: str
    timeout_s: float
    began_at: float
    phase: str = "telling"  # telling | ringing | bridging
    summary: str | None = None
    summary_ready: bool = False
    told: bool = False  # the "connecting you" answer has finished (and is then heard)
    deadline: float = 0.0
    hold_until: float = 0.0  # hold music queued up to here
    hold_pos: int = 0  # position in the hold loop (bytes)


class WarmTransfer:
    @property
    def on_hold(self: CallCore) -> bool:
        return self.warm is not None and self.warm.phase == "ringing"

    def _warm_begin(self: CallCore, eff: Transfer, now: float) -> list[Action]:
        if self.warm is not None:
            return [self._log("error", now, source="tool", code="transfer_in_progress",
                              message="a warm transfer is already in progress")]
        self.warm = WarmState(eff.target, eff.timeout_s, now, deadline=now + TELL_LIMIT_S)
        acts: list[Action] = [self._log("transfer", now, mode="warm", phase="started", target=eff.target)]
        asked = self._ask_aside(TRANSFER_SUMMARY, now, TRANSFER_INSTRUCTIONS, record_tool(True, None))
        if not asked:
            self.warm.summary_ready = True
        return acts + asked

    def _warm_response_done(self: CallCore) -> None:
        """An in-conversation answer ended: during `telling` it is the "connecting you" line."""
        warm = self.warm
        if warm is not None and warm.phase == "telling" and not self.tools.ready_for_followup():
            warm.told = True

    def _transfer_summary_ready(self: CallCore, summary: str | None, problem: str | None,
                                now: float) -> list[Action]:
        warm = self.warm
        if warm is None or warm.phase != "telling":
            return []
        warm.summary = self.redactor.mask(summary.strip()) if summary and summary.strip() else None
        warm.summary_ready = True
        acts: list[Action] = []
        if problem:
            acts.append(self._log("error", now, source="model", code="transfer_summary", message=problem))
        return acts + self._warm_progress(now)

    def _warm_progress(self: CallCore, now: float) -> list[Action]:
        """Telling -> ringing once the caller heard the line and the summary is in (or time ran out)."""
        warm = self.warm
        if warm is None or warm.phase != "telling":
            return []
        heard = warm.told and not self.responses.in_progress and not self.playout.busy
        if not ((heard and warm.summary_ready) or now >= warm.deadline):
            return []
        warm.phase = "ringing"
        warm.deadline = now + warm.timeout_s + RING_SLACK_S
        self.gated = True
        summary = warm.summary or FALLBACK_SUMMARY
        return [self._log("transfer", now, mode="warm", phase="dialing", target=warm.target, summary=summary),
                Control("warm_transfer", warm.target, summary, warm.timeout_s)] + self._hold_music(now)

    def _hold_music(self: CallCore, now: float) -> list[Action]:
        warm, loop = self.warm, self.hold_loop
        if warm is None or warm.phase != "ringing" or not loop or self.stream_sid is None:
            return []
        acts: list[Action] = []
        warm.hold_until = max(now, warm.hold_until)
        n = int(8000 * HOLD_CHUNK_S)  # 8 kHz mu-law: a byte a sample
        while warm.hold_until < now + HOLD_CHUNK_S:
            chunk = (loop[warm.hold_pos:] + loop)[:n]
            warm.hold_pos = (warm.hold_pos + n) % len(loop)
            acts.append(ToCaller(tel.PlayAudio(base64.b64encode(chunk).decode("ascii"))))
            warm.hold_until += HOLD_CHUNK_S
        return acts

    def on_transfer_status(self: CallCore, status: str, now: float) -> list[Action]:
        """The provider's report on the human's leg of a warm transfer (Twilio CallStatus)."""
        warm = self.warm
        if self.ended or warm is None or warm.phase != "ringing":
            return []
        if status in ANSWERED:
            warm.phase = "bridging"
            acts: list[Action] = [ToCaller(tel.ClearPlayback()),
                                  self._log("transfer", now, mode="warm", phase="bridged", target=warm.target)]
            return acts + self._begin_exit(Control("join_transfer", warm.target), "transferred", now, goodbye=False) \
                + self._maybe_exit(now)
        if status in NOT_ANSWERED:
            return self._warm_failed(status, now)
        return []

    def _warm_failed(self: CallCore, status: str, now: float) -> list[Action]:
        warm = self.warm
        assert warm is not None
        self.warm = None
        self.gated = self.answer in ("waiting", "machine")
        why = {"busy": "the line was busy", "no-answer": "nobody answered", "timeout": "nobody answered in time",
               "canceled": "the call was cancelled"}.get(status, "the call could not be connected")
        acts: list[Action] = [ToCaller(tel.ClearPlayback()),
                              self._log("transfer", now, mode="warm", phase="not_answered", status=status,
                                        target=warm.target)]
        if status == "timeout":
            acts.append(Control("cancel_transfer", warm.target))
        if self.link.ready and not self.responses.active:
            self._create_response(acts, instructions=NO_ANSWER_INSTRUCTIONS.format(why=why))
        return acts

    def _warm_tick(self: CallCore, now: float) -> list[Action]:
        warm = self.warm
        if warm is None:
            return []
        if warm.phase == "telling":
            return self._warm_progress(now)
        if warm.phase == "ringing":
            if now >= warm.deadline:
                return self._warm_failed("timeout", now)
            return self._hold_music(now)
        return []

    def _warm_due(self: CallCore) -> float | None:
        warm = self.warm
        if warm is None or warm.phase == "bridging":
            return None
        if warm.phase == "ringing" and self.hold_loop:
            return min(warm.deadline, warm.hold_until - HOLD_CHUNK_S / 2)
        return warm.deadline

