"""The per-call state machine: a sans-I/O core.

`CallSession` takes telephony stream events, model events, tool outcomes and clock ticks, and
returns the actions to perform (voicegw/call/actions.py). It never awaits, never reads a clock
and never touches a socket, so every timeline can be replayed deterministically in tests.

Barge-in follows DESIGN.md "Barge-in, precisely": on speech_started while agent audio is queued
at the provider, (1) clear at once, (2) cancel only a response still in progress, (3) truncate the
item being heard at min(heard, produced) or delete it when nothing was heard, (4) drop late deltas
of the cancelled response, (5) log the barge-in and cut the agent transcript to what was heard.
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

from voicegw.audio.transcode import CallerToModel, ModelToCaller, model_audio_ms
from voicegw.call.actions import (
    Action,
    CallEvent,
    CancelTools,
    Control,
    EndCall,
    HangUp,
    Log,
    RunTool,
    SendModel,
    SendTelephony,
    SwitchAgent,
    ToolOutcome,
    Transfer,
)
from voicegw.call.playout import Playout
from voicegw.call.tooling import ToolBook
from voicegw.call.transcript import AgentUtterance, cut_text
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel

SAY_EXACTLY = 'Say exactly this to the caller, and nothing else: "{text}"'
KEYPAD_PREFIX = "[keypad] "
BENIGN_ERRORS = frozenset({"response_cancel_not_active"})
MAX_BAD_FRAME_LOGS = 20


@dataclass(frozen=True)
class SessionOptions:
    session_config: ev.SessionConfig
    audio_mode: str = "pcm16"  # pcm16 (8k<->24k resampled) | g711_ulaw (passthrough)
    greeting_text: str | None = None
    greeting_instructions: str | None = None
    max_call_duration_s: float = 1800.0
    time_limit_message: str = "I'm sorry, we have reached the time limit for this call. Goodbye."
    dtmf_flush_s: float = 1.5
    preconnect_buffer_frames: int = 150  # 3 s of caller audio kept while the model connects
    exit_grace_s: float = 20.0  # longest wait for goodbye audio before hanging up anyway
    fillers: dict[str, str] = field(default_factory=dict)
    reconnect_message: str = "Sorry, I lost you for a moment. I'm back."
    max_reconnects: int = 2


class CallSession:
    def __init__(self, codec: tel.MediaStreamCodec, opts: SessionOptions, now: float, wall_offset: float = 0.0):
        self.codec = codec
        self.opts = opts
        self.config = opts.session_config
        self.started_at = now
        self.wall_offset = wall_offset
        self.stream_sid: str | None = None
        self.model_ready = False
        self.greeted = False
        self.ended = False
        self.playout = Playout()
        self.to_model = CallerToModel(opts.audio_mode)
        self.to_caller = ModelToCaller(opts.audio_mode)
        self.active_response: str | None = None  # the in-conversation response in progress
        self.oob_active: set[str] = set()  # out-of-band responses in progress (fillers, goodbyes)
        self.stale: set[str] = set()  # cancelled responses whose late deltas are dropped
        self.produced_ms: dict[str, float] = {}  # model audio received, per item
        self._emitted_ms: dict[str, float] = {}  # model audio converted and queued for the caller
        self.utterances: dict[str, AgentUtterance] = {}
        self.oob_items: set[str] = set()
        self._pre_model: deque[str] = deque(maxlen=opts.preconnect_buffer_frames)
        self._pre_stream: list[tuple[str, str, float, float]] = []  # (item, b64, start, end)
        self._speech_stopped_at: float | None = None
        self._awaiting_first_audio = False
        self._want_response = False
        self._dtmf: list[str] = []
        self._dtmf_due: float | None = None
        self._bad_frames = 0
        self.tools = ToolBook()
        self._filler_sent_for: set[str] = set()
        # leaving the call after the agent's last words: (control, reason)
        self._exit: tuple[Control | None, str] | None = None
        self._needs_goodbye = False  # a goodbye response must still be asked for
        self._goodbye_pending = False  # a goodbye response was asked for and is not done yet
        self._goodbye_rid: str | None = None
        self._exit_deadline: float | None = None
        self.barge_ins = 0
        self.reconnects = 0
        self._history: dict[str, tuple[str, str]] = {}  # item -> (role, text), for a model reconnect

    # ------------------------------------------------------------------------------ helpers
    def _log(self, event_kind: str, now: float, /, **data: object) -> Log:
        if event_kind == "transcript" and data.get("text"):
            self._history[str(data.get("item_id"))] = (str(data["role"]), str(data["text"]))
            if len(self._history) > 40:
                del self._history[next(iter(self._history))]
        return Log(CallEvent(event_kind, now + self.wall_offset, data))

    def _create_response(self, acts: list[Action], **kw: object) -> None:
        acts.append(SendModel(ev.CreateResponse(**kw)))  # type: ignore[arg-type]
        self._want_response = False

    def _request_response(self, acts: list[Action]) -> None:
        """Ask the model to answer now, or as soon as the response in progress ends."""
        if self.active_response is None and not self.tools.running and not self._exit:
            self._create_response(acts)
        else:
            self._want_response = True

    # ------------------------------------------------------------------------- stream events
    def on_stream(self, e: tel.StreamEvent, now: float) -> list[Action]:
        if self.ended:
            return []
        if isinstance(e, tel.CallerAudio):
            audio = self.to_model.convert(e.payload_b64)
            if not audio:  # the resampler is still filling up
                return []
            if not self.model_ready:
                self._pre_model.append(audio)
                return []
            return [SendModel(ev.AppendAudio(audio))]
        if isinstance(e, tel.MarkPlayed):
            self.playout.acked(e.name, now)
            return self._maybe_exit(now) if self._exit else []
        if isinstance(e, tel.StreamStarted):
            return self._stream_started(e, now)
        if isinstance(e, tel.Dtmf):
            acts: list[Action] = [self._log("dtmf", now, digit=e.digit)]
            self._dtmf.append(e.digit)
            if e.digit == "#":
                acts += self._flush_dtmf(now)
            else:
                self._dtmf_due = now + self.opts.dtmf_flush_s
            return acts
        if isinstance(e, tel.StreamStopped):
            return self.end("caller_hangup", now)
        if isinstance(e, tel.BadFrame):
            self._bad_frames += 1
            if self._bad_frames <= MAX_BAD_FRAME_LOGS:
                return [self._log("error", now, source="telephony", message=e.error, code="bad_frame")]
            return []
        return []

    def _stream_started(self, e: tel.StreamStarted, now: float) -> list[Action]:
        self.stream_sid = e.stream_sid
        params = {k: v for k, v in e.custom_parameters.items() if k.lower() != "token"}
        acts: list[Action] = [self._log("stream.started", now, stream_sid=e.stream_sid, tracks=list(e.tracks), custom_parameters=params)]
        for item_id, b64, start, end in self._pre_stream:
            acts += self._send_audio(item_id, b64, start, end, now)
        self._pre_stream.clear()
        acts += self._greet()
        return acts

    def _flush_dtmf(self, now: float) -> list[Action]:
        digits = " ".join(d for d in self._dtmf if d != "#") or "#"
        self._dtmf.clear()
        self._dtmf_due = None
        acts = self._barge_in(now, cause="dtmf")
        acts.append(SendModel(ev.AddUserText(KEYPAD_PREFIX + digits)))
        self._request_response(acts)
        return acts

    # -------------------------------------------------------------------------- model events
    def on_model(self, e: ev.ServerEvent, now: float) -> list[Action]:
        if self.ended:
            return []
        if isinstance(e, ev.AudioDelta):
            return self._audio_delta(e, now)
        if isinstance(e, ev.TranscriptDelta):
            if e.response_id not in self.stale:
                utt = self.utterances.get(e.item_id)
                if utt is not None and not utt.logged:
                    utt.parts.append(e.delta)
            return []
        if isinstance(e, ev.SpeechStarted):
            acts: list[Action] = [self._log("speech.started", now, audio_start_ms=e.audio_start_ms)]
            if self.config.turn_detection.interrupt_response:
                acts += self._barge_in(now, cause="speech")
            return acts
        if isinstance(e, ev.SpeechStopped):
            self._speech_stopped_at = now
            self._awaiting_first_audio = True
            return [self._log("speech.stopped", now, audio_end_ms=e.audio_end_ms)]
        if isinstance(e, ev.ResponseStarted):
            return self._response_started(e, now)
        if isinstance(e, ev.OutputItemAdded):
            if e.item_type == "message":
                self.utterances[e.item_id] = AgentUtterance(e.item_id, e.response_id)
                if e.response_id in self.oob_active:
                    self.oob_items.add(e.item_id)
            return []
        if isinstance(e, ev.AudioDone):
            return self._audio_done(e, now)
        if isinstance(e, ev.TranscriptDone):
            return self._transcript_done(e, now)
        if isinstance(e, ev.FunctionCall):
            return self._function_call(e, now)
        if isinstance(e, ev.ResponseDone):
            return self._response_done(e, now)
        if isinstance(e, ev.InputTranscript):
            return [self._log("transcript", now, role="caller", item_id=e.item_id, text=e.transcript.strip(), cut=False)]
        if isinstance(e, ev.InputTranscriptFailed):
            return [self._log("error", now, source="model", message=f"input transcription failed: {e.message}", code="transcription_failed")]
        if isinstance(e, ev.SessionStarted):
            return self._model_ready(now)
        if isinstance(e, ev.ModelError):
            if e.code in BENIGN_ERRORS:
                return []
            return [self._log("error", now, source="model", message=e.message, code=e.code, event_id=e.event_id)]
        return []

    def _model_ready(self, now: float) -> list[Action]:
        if self.model_ready:
            return []
        self.model_ready = True
        acts: list[Action] = [SendModel(ev.UpdateSession(self.config))]
        while self._pre_model:
            acts.append(SendModel(ev.AppendAudio(self._pre_model.popleft())))
        acts += self._greet()
        return acts

    def _greet(self) -> list[Action]:
        """Greet as soon as the model is ready: before the stream starts (pre-warm), the greeting's
        audio waits here and plays the moment the stream opens."""
        if self.greeted or not self.model_ready:
            return []
        self.greeted = True
        if self.opts.greeting_text:
            instructions = SAY_EXACTLY.format(text=self.opts.greeting_text)
        elif self.opts.greeting_instructions:
            instructions = self.opts.greeting_instructions
        else:
            return []
        acts: list[Action] = []
        self._create_response(acts, instructions=instructions, metadata={"voicegw": "greeting"})
        return acts

    def _response_started(self, e: ev.ResponseStarted, now: float) -> list[Action]:
        kind = (e.metadata or {}).get("voicegw")
        if e.conversation == "none" or kind in ("filler", "goodbye"):
            self.oob_active.add(e.response_id)
        else:
            self.active_response = e.response_id
        if self._goodbye_pending and self._goodbye_rid is None and kind in (None, "goodbye"):
            self._goodbye_rid = e.response_id
        return [self._log("response.started", now, response_id=e.response_id, kind=kind or "turn")]

    def _audio_delta(self, e: ev.AudioDelta, now: float) -> list[Action]:
        if e.response_id in self.stale:
            return []
        end = self.produced_ms.get(e.item_id, 0.0) + model_audio_ms(e.audio_b64, self.opts.audio_mode)
        self.produced_ms[e.item_id] = end
        out = self.to_caller.convert(e.audio_b64)
        # the resampler holds some audio back: what goes out now ends that much earlier
        return self._emit(e.item_id, out, end - self.to_caller.latency_ms, now)

    def _audio_done(self, e: ev.AudioDone, now: float) -> list[Action]:
        if e.response_id in self.stale:
            return []
        return self._emit(e.item_id, self.to_caller.flush(), self.produced_ms.get(e.item_id, 0.0), now)

    def _emit(self, item_id: str, ulaw_b64: str, end: float, now: float) -> list[Action]:
        """Queue converted audio covering the item's model audio up to `end` ms."""
        if not ulaw_b64:
            return []
        start = self._emitted_ms.get(item_id, 0.0)
        end = max(start, end)
        self._emitted_ms[item_id] = end
        if self.stream_sid is None:
            self._pre_stream.append((item_id, ulaw_b64, start, end))
            return []
        return self._send_audio(item_id, ulaw_b64, start, end, now)

    def _send_audio(self, item_id: str, ulaw_b64: str, start: float, end: float, now: float) -> list[Action]:
        assert self.stream_sid is not None
        mark = self.playout.sent(item_id, start, end, now)
        acts: list[Action] = [
            SendTelephony(self.codec.media(self.stream_sid, ulaw_b64)),
            SendTelephony(self.codec.mark(self.stream_sid, mark)),
        ]
        if self._awaiting_first_audio and self._speech_stopped_at is not None and item_id not in self.oob_items:
            self._awaiting_first_audio = False
            latency = (now - self._speech_stopped_at) * 1000.0
            acts.append(self._log("turn.latency", now, item_id=item_id, latency_ms=round(latency, 1)))
        return acts

    def _transcript_done(self, e: ev.TranscriptDone, now: float) -> list[Action]:
        utt = self.utterances.get(e.item_id)
        if utt is None or utt.logged or e.response_id in self.stale:
            return []
        utt.final = e.transcript
        utt.logged = True
        return [self._log("transcript", now, role="agent", item_id=e.item_id, text=utt.text.strip(), cut=False)]

    def _function_call(self, e: ev.FunctionCall, now: float) -> list[Action]:
        if e.response_id in self.stale or self._exit:
            return []
        self.tools.start(e.call_id, e.name, e.response_id, now)
        try:
            args: object = json.loads(e.arguments) if e.arguments else {}
        except ValueError:
            args = e.arguments
        return [
            self._log("tool.call", now, call_id=e.call_id, name=e.name, arguments=args),
            RunTool(e.call_id, e.name, e.arguments, e.response_id),
        ]

    def _response_done(self, e: ev.ResponseDone, now: float) -> list[Action]:
        acts: list[Action] = [self._log("response.done", now, response_id=e.response_id, status=e.status, usage=e.usage)]
        if e.status == "failed":
            detail = (e.status_details or {}).get("error") or e.status_details
            acts.append(self._log("error", now, source="model", message=f"response failed: {detail}", code="response_failed"))
        if e.response_id == self.active_response:
            self.active_response = None
        if e.response_id == self._goodbye_rid:
            self._goodbye_pending = False
        self.oob_active.discard(e.response_id)
        self.tools.response_finished(e.response_id)
        if e.response_id in self.tools.waiting_responses and self.tools.running and e.response_id not in self._filler_sent_for:
            acts += self._filler(e.response_id)
        acts += self._continue(now)
        return acts

    @staticmethod
    def _say_out_of_band(text: str, kind: str) -> SendModel:
        """A verbatim line spoken outside the conversation (fillers, goodbyes): the model's context
        is not changed by it, and barge-in never truncates it."""
        return SendModel(ev.CreateResponse(instructions=SAY_EXACTLY.format(text=text), conversation="none",
                                           metadata={"voicegw": kind}, input=()))

    def _filler(self, response_id: str) -> list[Action]:
        for name in self.tools.names_running():
            line = self.opts.fillers.get(name)
            if line:
                self._filler_sent_for.add(response_id)
                return [self._say_out_of_band(line, "filler")]
        return []

    def _continue(self, now: float) -> list[Action]:
        """After a response or a tool finishes: follow up on tool outputs, pending requests, or exit."""
        acts: list[Action] = []
        if self.active_response is None and not self.oob_active:
            if self.tools.ready_for_followup():
                self.tools.followup_sent()
                self._create_response(acts)
                if self._needs_goodbye:
                    self._needs_goodbye = False
                    self._goodbye_pending = True
            elif self._want_response and not self.tools.running and not self._exit:
                self._create_response(acts)
        if self._exit:
            acts += self._maybe_exit(now)
        return acts

    # ------------------------------------------------------------------------------ barge-in
    def _barge_in(self, now: float, cause: str) -> list[Action]:
        if not self.playout.busy or self.stream_sid is None:
            return []
        self.barge_ins += 1
        items = self.playout.pending_items()
        heard = {item: self.playout.heard_ms(item, now) for item in items}
        # 1. stop the caller hearing more, at once
        acts: list[Action] = [SendTelephony(self.codec.clear(self.stream_sid))]
        self.playout.clear()
        self.to_caller.reset()
        # 2. cancel only what is still being generated
        cancelled = False
        if self.active_response is not None:
            acts.append(SendModel(ev.CancelResponse()))
            self.stale.add(self.active_response)
            cancelled = True
        for rid in sorted(self.oob_active):
            acts.append(SendModel(ev.CancelResponse(response_id=rid)))
            self.stale.add(rid)
        # 3 + 5. truncate (or delete) each item the caller did not hear in full; log; cut transcript
        for item in items:
            produced = self.produced_ms.get(item, 0.0)
            end_ms = int(min(heard[item], produced))
            in_conversation = item not in self.oob_items
            action = "none"
            if in_conversation:
                if end_ms >= 1:
                    acts.append(SendModel(ev.TruncateItem(item, end_ms)))
                    action = "truncate"
                else:
                    acts.append(SendModel(ev.DeleteItem(item)))
                    action = "delete"
            acts.append(self._log("barge_in", now, item_id=item, heard_ms=round(heard[item], 1),
                                  produced_ms=round(produced, 1), audio_end_ms=end_ms, action=action,
                                  cancelled=cancelled, cause=cause))
            utt = self.utterances.get(item)
            if utt is not None and in_conversation and not utt.cut:
                # replaces the full text if it was already logged: the record keeps what was heard
                utt.logged = utt.cut = True
                acts.append(self._log("transcript", now, role="agent", item_id=item,
                                      text=cut_text(utt.text.strip(), end_ms, produced) or "…", cut=True))
        # 4. late deltas of the cancelled response are dropped by `stale`
        return acts

    # --------------------------------------------------------------------------------- tools
    def on_tool_done(self, call_id: str, outcome: ToolOutcome, now: float) -> list[Action]:
        if self.ended:
            return []
        tool = self.tools.finish(call_id)
        if tool is None:
            return []
        result = {"ok": outcome.ok, "duration_ms": round(outcome.duration_ms, 1)}
        if outcome.ok:
            result["result"] = outcome.logged_result
        else:
            result["error"] = outcome.error
        acts: list[Action] = [
            self._log("tool.result", now, call_id=call_id, name=tool.name, **result),
            SendModel(ev.AddFunctionOutput(call_id, outcome.output)),
        ]
        eff = outcome.effect
        if isinstance(eff, HangUp):
            self.tools.followup_sent()  # nothing more to say: leave once the queued audio played
            acts += self._begin_exit(Control("hangup"), "agent_hangup", now, goodbye=False)
        elif isinstance(eff, Transfer):
            # the follow-up response is the goodbye; transfer once it has been heard
            acts += self._begin_exit(Control("transfer", eff.target, eff.announcement), "transferred", now, goodbye=True)
        elif isinstance(eff, SwitchAgent):
            self.config = eff.session
            acts.append(SendModel(ev.UpdateSession(eff.session)))
            acts.append(self._log("agent.switched", now, agent=eff.agent))
        acts += self._continue(now)
        return acts

    # ----------------------------------------------------------------------------- leaving
    def _begin_exit(self, control: Control | None, reason: str, now: float, goodbye: bool) -> list[Action]:
        """Leave once the agent's last words have been heard (`goodbye`: ask for them first)."""
        if self._exit is None:
            self._exit = (control, reason)
            self._needs_goodbye = goodbye
            self._exit_deadline = now + self.opts.exit_grace_s
        return []

    def _maybe_exit(self, now: float) -> list[Action]:
        if self._exit is None:
            return []
        forced = self._exit_deadline is not None and now >= self._exit_deadline
        idle = (not self._needs_goodbye and not self._goodbye_pending and self.active_response is None
                and not self.oob_active and not self.playout.busy)
        if not (idle or forced):
            return []
        control, reason = self._exit
        acts: list[Action] = []
        if control is not None:
            acts.append(control)
        return acts + self.end(reason, now)

    def end(self, reason: str, now: float) -> list[Action]:
        """End the call (idempotent). The last action is always EndCall."""
        if self.ended:
            return []
        self.ended = True
        acts: list[Action] = []
        if self.tools.running:
            acts.append(CancelTools())
        for utt in self.utterances.values():
            if not utt.logged and utt.text.strip() and utt.response_id not in self.stale:
                utt.logged = True
                acts.append(self._log("transcript", now, role="agent", item_id=utt.item_id, text=utt.text.strip(), cut=False))
        acts.append(self._log("call.ended", now, reason=reason, duration_s=round(now - self.started_at, 3), barge_ins=self.barge_ins))
        acts.append(EndCall(reason))
        return acts

    def on_model_reconnected(self, now: float) -> list[Action]:
        """A fresh model session replaced a lost one: give it the call so far and carry on.

        Audio already queued for the caller keeps playing; nothing of the old session (responses,
        items, running tools) exists on the new one, so none of it is cancelled or truncated there.
        """
        self.reconnects += 1
        self.stale.update(r for r in (self.active_response, *self.oob_active) if r)
        self.active_response = None
        self.oob_active.clear()
        self.oob_items.update(self.produced_ms)
        acts: list[Action] = [CancelTools()] if self.tools.running else []
        self.tools = ToolBook()
        history = "\n".join(f"{'Caller' if r == 'caller' else 'Agent'}: {t}" for r, t in self._history.values())
        config = self.config
        if history:
            from dataclasses import replace

            config = replace(config, instructions=f"{config.instructions}\n\nThe call so far (your connection "
                             f"was interrupted and restored; continue from here):\n{history}")
        acts += [self._log("reconnect", now, attempt=self.reconnects, ok=True), SendModel(ev.UpdateSession(config))]
        if not self._exit:
            self._create_response(acts, instructions=SAY_EXACTLY.format(text=self.opts.reconnect_message),
                                  metadata={"voicegw": "reconnect"})
        return acts

    def on_model_closed(self, reason: str, now: float) -> list[Action]:
        if self.ended:
            return []
        return [self._log("error", now, source="model", message=f"model connection closed: {reason}", code="model_closed")] + self.end("model_closed", now)

    # ------------------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        times = [t for t in (self._dtmf_due, self._exit_deadline, self.started_at + self.opts.max_call_duration_s) if t is not None]
        return min(times) if times else None

    def tick(self, now: float) -> list[Action]:
        if self.ended:
            return []
        acts: list[Action] = []
        if self._dtmf_due is not None and now >= self._dtmf_due:
            acts += self._flush_dtmf(now)
        if self._exit is None and now >= self.started_at + self.opts.max_call_duration_s:
            acts += self._time_limit(now)
        if self._exit is not None:
            acts += self._maybe_exit(now)
        return acts

    def _time_limit(self, now: float) -> list[Action]:
        acts = self._barge_in(now, cause="time_limit")
        if self.active_response is not None and self.active_response not in self.stale:
            acts.append(SendModel(ev.CancelResponse()))
            self.stale.add(self.active_response)
        self.active_response = None
        acts.append(self._say_out_of_band(self.opts.time_limit_message, "goodbye"))
        acts += self._begin_exit(Control("hangup"), "max_duration", now, goodbye=False)
        self._goodbye_pending = True
        self._exit_deadline = now + min(self.opts.exit_grace_s, 15.0)
        return acts
