"""Barge-in: the caller talks over the agent (DESIGN.md "Barge-in, precisely").

Part of the call core (`CallCore` inherits it). On speech_started, or a keypad press, while the
model holds agent audio the caller has not heard -- queued at the provider, held in the resampler,
or not yet sent -- (1) clear the provider's queue if anything is queued, (2) cancel a response still
in progress, unless the server's VAD cancels it itself (server/semantic VAD with interrupt_response;
a client cancel would only earn a response_cancel_not_active error), (3) truncate each such item at
min(heard, produced), or delete it when nothing was heard (a 0 ms truncate is an error), (4) drop the
interrupted responses' late deltas, (5) log the barge-in and cut the agent transcript to what was heard.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from voicegw.call.actions import Action, ToCaller
from voicegw.call.transcript import cut_text
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel

if TYPE_CHECKING:
    from voicegw.call.core import CallCore


class BargeIn:
    def _barge_in(self: CallCore, now: float, cause: str) -> list[Action]:
        if self.stream_sid is None:
            return []
        r, playout = self.responses, self.playout
        heard = {item: playout.heard_ms(item, now) for item in r.produced}
        unheard = r.unheard_items(heard)
        if not playout.busy and not unheard:
            return []
        self.barge_ins += 1
        queued = playout.pending_items()
        acts: list[Action] = []
        # 1. stop the caller hearing more, at once; nothing held in the resampler goes out later
        if playout.busy:
            acts.append(ToCaller(tel.ClearPlayback()))
            playout.clear(now)
        self.to_caller.reset()
        # 2. cancel what is still being generated, unless the server's VAD already does
        td = self.config.turn_detection
        server_cancels = cause == "speech" and td.type != "none" and td.interrupt_response
        cancelled = r.active is not None and r.active not in r.stale
        if self.link.ready:
            if cancelled and not server_cancels:
                acts.append(self._to_model(ev.CancelResponse()))
            acts += [self._to_model(ev.CancelResponse(response_id=rid)) for rid in sorted(r.oob - r.stale)]
        r.stale.update(rid for rid in (r.active, *r.oob) if rid)  # 4. late deltas are dropped
        # 3 + 5. truncate (or delete) each item the caller did not hear in full; log; cut transcript
        for item in dict.fromkeys([*queued, *unheard]):
            produced = r.produced.get(item, 0.0)
            end_ms = int(min(heard.get(item, 0.0), produced))
            action = "none"
            if item in unheard:
                # settled: the model's item now holds exactly what the caller heard
                r.produced.pop(item, None)
                cmd: ev.ClientCommand = ev.TruncateItem(item, end_ms) if end_ms >= 1 else ev.DeleteItem(item)
                action = "truncate" if end_ms >= 1 else "delete"
                if self.link.ready:
                    acts.append(self._to_model(cmd))
            acts.append(self._log("barge_in", now, item_id=item, heard_ms=round(heard.get(item, 0.0), 1),
                                  produced_ms=round(produced, 1), audio_end_ms=end_ms, action=action,
                                  cancelled=cancelled, cause=cause))
            utt = r.utterances.get(item)
            if utt is not None and item not in r.oob_items and not utt.cut:
                # replaces the full text if it was already logged: the record keeps what was heard
                utt.logged = utt.cut = True
                text = cut_text(utt.text.strip(), end_ms, produced)
                if text:
                    self.history.text(item, "assistant", text)
                else:
                    self.history.forget(item)
                acts.append(self._transcript(now, "agent", item, text or "…", True))
        return acts
