"""Model sessions of a call: the first one, recovery from a drop, rollover before the lifetime,
and giving the call up when no session can be had within the connect budget.

Part of the call core (`CallCore` inherits it): the decisions about model links -- when a new
session becomes live, what it is given (the conversation as items, the caller audio it missed),
whether an answer or an apology is due, when to give up -- live here; `voicegw.call.modellink`
holds their state and timing. Like the rest of the core it returns actions and never awaits.
"""
from __future__ import annotations

import binascii
from collections.abc import Iterable
from typing import TYPE_CHECKING

from voicegw.audio.transcode import CallerToModel, b64_decoded_len
from voicegw.call.actions import Action, CloseModel, Control, OpenModel, ToModel
from voicegw.call.leaving import ExitPlan
from voicegw.realtime import events as ev

if TYPE_CHECKING:
    from voicegw.call.core import CallCore

TRANSCRIPT_WAIT_S = 3.0  # a rollover waits this long at most for the caller's last transcript
UNAVAILABLE_ITEM = "voicegw-unavailable"  # the apology played when the call is given up
APOLOGY_SLACK_S = 2.0  # past the apology's length, leave even if its mark never comes back
STREAM_WAIT_S = 10.0  # given up before the stream started: how long it may still take to start


class ModelSessions:
    def _link_opened(self: CallCore, link: int, e: ev.SessionStarted, now: float) -> list[Action]:
        ml = self.link
        expires = e.session.get("expires_at")
        expires_at = (float(expires) - self.wall_offset) if isinstance(expires, (int, float)) \
            and not isinstance(expires, bool) and expires > 0 else None
        if ml.purpose == "rollover":
            ml.standby_ready = True
            self._standby_expires = expires_at
            # quiet already: switch now (no later event need come to trigger it)
            return [ToModel(ev.UpdateSession(self.config), link),
                    self._log("rollover", now, phase="started", link=link, session_age_s=round(now - ml.opened_at, 1)),
                    *self._maybe_roll_over(now)]
        purpose = ml.purpose
        ml.became_live(link, now, expires_at)
        acts: list[Action] = [self._to_model(ev.UpdateSession(self.config))]
        if purpose == "first":
            acts += self._append_caller_audio(ml.held)
            ml.held.clear()
            return acts + self._greet()
        acts.insert(0, self._log("reconnect", now, attempt=ml.reconnects, ok=True, link=link, items=len(self.history)))
        return acts + self._resume(now, after_drop=True)

    def _resume(self: CallCore, now: float, after_drop: bool) -> list[Action]:
        """Give the live link the call so far, the caller audio it missed, and an answer if one is due."""
        ml = self.link
        acts: list[Action] = [self._to_model(c) for c in self.history.replay()]
        untranscribed = [i for i in self._pending_transcripts if not self.history.has_text(i)]
        if untranscribed and ml.utterance and not ml.speaking:
            # the caller's last words never got a transcript: give them as audio
            audio = _joined(CallerToModel(self.opts.audio_mode), ml.utterance)
            if audio:
                acts.append(self._to_model(ev.AddUserAudio(audio)))
        self._pending_transcripts.clear()
        # what the new session's input buffer must hear: the utterance in progress, or the pre-roll
        frames = list(ml.utterance) if ml.speaking else list(ml.tail if not after_drop else ml.held)
        ml.held.clear()
        self.to_model.reset()
        acts += self._append_caller_audio(frames)
        if self.exit is not None:
            return acts + self._maybe_exit(now)
        if self._cut_off:
            self._cut_off = False
            acts.append(self._say_out_of_band(self.opts.reconnect_message, "apology"))
            # then finish the answer that was cut off, once the apology is done (_continue): an
            # out-of-band response asked for now would be spoken over it
            self._want_response = True
            return acts
        elif self._turn_open and not self.tools.running:
            self._request_response(acts)
        acts += self._continue(now)
        return acts

    def _append_caller_audio(self: CallCore, frames: Iterable[str]) -> list[Action]:
        """Caller frames (as the provider sent them) through the live converter, appended to the
        live session's input buffer."""
        acts: list[Action] = []
        for frame in frames:
            audio = self.to_model.convert(frame)
            if audio:
                acts.append(self._to_model(ev.AppendAudio(audio)))
        return acts

    def on_model_down(self: CallCore, link: int, reason: str, now: float, retryable: bool = True) -> list[Action]:
        """Link `link` could not be opened, or closed under the call."""
        if self.ended:
            return []
        ml = self.link
        if link == ml.opening:
            ml.opening = 0
            if ml.purpose == "rollover":
                ml.standby_ready = False
                if ml.soft_at is not None and ml.hard_at is not None:  # try again in a moment
                    ml.soft_at = min(now + 2.0, ml.hard_at)
                return [self._log("rollover", now, phase="failed", link=link, error=reason)]
            delay = ml.next_backoff() if retryable else None
            timeout = ml.attempt_timeout(now, delay) if delay is not None else None
            acts: list[Action] = [self._log("reconnect" if ml.purpose == "reconnect" else "error", now,
                                            **({"attempt": ml.reconnects, "ok": False, "error": reason}
                                               if ml.purpose == "reconnect" else
                                               {"source": "model", "message": f"model connection failed: {reason}",
                                                "code": "model_connect_failed"}))]
            if timeout is None:
                why = (reason if not retryable else f"every attempt failed, the last with: {reason}" if delay is None
                       else f"the {self.opts.connect_budget_s:g} s connect budget is used up; last: {reason}")
                return acts + self._give_up(why, now)
            return acts + [OpenModel(ml.open_next(ml.purpose), delay, timeout)]
        if link != ml.live:
            return []
        # the live session is gone: recover on a new one (the standby, when one is ready)
        r = self.responses
        self._cut_off = r.active is not None and r.active not in r.stale and any(
            r.produced.get(i, 0.0) > 0 and i not in r.audio_done
            for i, u in r.utterances.items() if u.response_id == r.active)
        if r.active is not None:
            for i, u in r.utterances.items():
                if u.response_id == r.active and u.text.strip():
                    self.history.text(i, "assistant", u.text.strip())
        acts = []
        for i, u in r.utterances.items():
            if (u.response_id == r.active or u.response_id in r.oob) and not u.logged and u.text.strip():
                # its audio was sent and plays on: the record keeps what the agent said (end()
                # skips abandoned responses)
                u.logged = True
                acts.append(self._transcript(now, "agent", i, u.text.strip(), False))
        r.abandon()
        r.oob_items.update(r.produced)  # items of the old session cannot be truncated on the new one
        self.tools.link_lost()
        self._requested = 0
        ml.lost()
        acts.append(self._log("error", now, source="model", message=f"model connection lost: {reason}",
                              code="model_lost", link=link))
        if ml.standby_ready:
            return acts + self._switch(now, forced=True)
        if ml.reconnects >= ml.max_reconnects:
            return acts + self._give_up(f"lost {ml.reconnects + 1} times: {reason}", now)
        ml.reconnects += 1
        ml.outage_began(now, self.opts.connect_budget_s)
        if ml.opening:  # a rollover was opening: it becomes the reconnect
            ml.purpose = "reconnect"
            return acts
        delay = ml.next_backoff() or 0.0
        return acts + [OpenModel(ml.open_next("reconnect"), delay, ml.attempt_timeout(now, delay))]

    def _connect_overdue(self: CallCore, now: float) -> list[Action]:
        """The attempt in flight outlived the outage's budget (a server that accepts the connection
        and never answers): stop waiting for it."""
        return self._give_up(f"no model session within the {self.opts.connect_budget_s:g} s connect budget "
                             f"(an attempt is still waiting for an answer)", now)

    def _give_up(self: CallCore, reason: str, now: float) -> list[Action]:
        """No model session to be had: the caller hears the apology, then is transferred to the
        overflow number if there is one, else the call ends once the apology has played.

        "model_unavailable" when the call never had a session; "model_closed" when its session was
        lost and could not be replaced."""
        ml = self.link
        first = not ml.live
        code = "model_unavailable" if first else "model_closed"
        acts: list[Action] = []
        if ml.opening:
            acts.append(CloseModel(ml.opening))
            ml.opening = 0
            ml.standby_ready = False
        ml.outage_deadline = None
        overflow = self.opts.overflow_number
        control = self.exit.control if self.exit is not None and self.exit.control is not None else \
            Control("transfer", overflow) if overflow else None
        then = f"transferring to {control.target}" if control is not None and control.kind == "transfer" \
            else "ending the call"
        acts.append(self._log("error", now, source="model", code=code,
                              message=f"model {'unavailable' if first else 'connection closed'}: {reason}; {then}"))
        audio = self.opts.unavailable_audio_b64
        if not audio or UNAVAILABLE_ITEM in self.responses.emitted:  # no apology, or it already played
            return acts + ([control] if control is not None else []) + self.end(code, now)
        self.responses.oob_items.add(UNAVAILABLE_ITEM)
        self.responses.abandon()
        length_s = b64_decoded_len(audio) / 8000.0
        hold = length_s + APOLOGY_SLACK_S
        waiting = self.stream_sid is None
        self.exit = ExitPlan(control, code, now + hold + (STREAM_WAIT_S if waiting else 0.0),
                             hold_for_stream_s=hold if waiting else None)
        acts += self._emit(UNAVAILABLE_ITEM, audio, length_s * 1000.0, now)
        return acts

    # ------------------------------------------------------------------------------ rollover
    def _quiet(self: CallCore, now: float) -> bool:
        """Nobody speaks and nothing is being generated or run. Agent audio may still be playing:
        it was generated on the old session and plays out whatever session serves the call."""
        pending = any(now - t < TRANSCRIPT_WAIT_S for t in self._pending_transcripts.values())
        return not (self.link.speaking or self.responses.in_progress or self._requested or self.tools.running
                    or self.exit or self._want_response or self._dtmf or pending)

    def _maybe_roll_over(self: CallCore, now: float) -> list[Action]:
        ml = self.link
        if not ml.standby_ready:
            return []
        if self._quiet(now):
            return self._switch(now, forced=False)
        if ml.hard_at is not None and now >= ml.hard_at:
            ml.overdue = True
            # past the hard deadline: switch even while the caller speaks (their audio goes along),
            # never in the middle of an answer (if the service ends the session first, the ready
            # standby takes over at once, as after a drop)
            if not self.responses.in_progress:
                return self._switch(now, forced=True)
        return []

    def _switch(self: CallCore, now: float, forced: bool) -> list[Action]:
        """The standby link becomes live: context, pre-roll, then the old link is closed."""
        ml = self.link
        new = ml.opening
        was_ready = ml.ready
        self.responses.oob_items.update(self.responses.produced)  # the old session's items stay there
        old = ml.became_live(new, now, self._standby_expires)
        if was_ready:
            ml.rollovers += 1
        acts: list[Action] = [self._log("rollover", now, phase="switched", link=new, forced=forced,
                                        items=len(self.history))]
        self._requested = 0  # asked of the old session: it is being closed (a due answer is asked again)
        acts += self._resume(now, after_drop=not was_ready)
        if old:
            acts.append(CloseModel(old))
        return acts


def _joined(conv: CallerToModel, frames: Iterable[str]) -> str:
    """Caller frames converted to the model's input format and joined into one base64 payload."""
    raw = b"".join(binascii.a2b_base64(conv.convert(f)) for f in frames)
    return binascii.b2a_base64(raw, newline=False).decode("ascii")
