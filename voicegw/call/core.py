"""The per-call state machine: a sans-I/O core.

`CallCore` takes telephony stream events, model events (tagged with the model link they came on),
tool outcomes and clock ticks, and returns the actions to perform (voicegw/call/actions.py). It never
awaits, never reads a clock and never touches a socket, so every timeline can be replayed
deterministically in tests. Every decision about the call lives here: barge-in, when to reconnect
and how often, when to roll the model session over, agent switches, leaving the call.

The core is split by concept: barge-in is `voicegw.call.bargein.BargeIn`, the model sessions
(first open, drop recovery, rollover, giving up) are `voicegw.call.sessions.ModelSessions`, agent
audio on its way to the caller (checked, bounded) is `voicegw.call.agentaudio.AgentAudio`, caller
audio on its way to the model `voicegw.call.callerin.CallerAudioIn`; small state objects hold the
rest (Playout, ResponseBook, ToolBook, History, ModelLink, ExitPlan, BadFrameMeter, Redactor).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from voicegw.audio.transcode import CallerToModel, ModelToCaller, model_bytes_per_ms
from voicegw.call.actions import (
    Action, CancelTools, Control, EndCall, Log, OpenModel, RunTool, ToCaller, ToModel, UseAgent,
)
from voicegw.call.agentaudio import AgentAudio, Piece
from voicegw.call.answering import Answering
from voicegw.call.asides import POST_CALL, Aside, Asides
from voicegw.call.badframes import FLOOD_PER_SECOND, FLOOD_SECONDS, BadFrameMeter
from voicegw.call.bargein import BargeIn
from voicegw.call.callerin import CallerAudioIn
from voicegw.call.history import History
from voicegw.call.leaving import ExitPlan
from voicegw.call.modellink import ModelLink
from voicegw.call.playout import Playout
from voicegw.call.redact import Redactor
from voicegw.call.responses import OUT_OF_BAND, ResponseBook
from voicegw.call.sessions import ModelSessions
from voicegw.call.tooling import ToolBook
from voicegw.call.transcript import Transcripts
from voicegw.call.transfer import WarmState, WarmTransfer
from voicegw.calllog.entries import CallLogEntry
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel
from voicegw.tools.contract import HangUp, SwitchAgent, ToolOutcome, Transfer
from voicegw.tools.paths import redact, redacted_values

SAY_EXACTLY = 'Say exactly this to the caller, and nothing else: "{text}"'
KEYPAD_PREFIX = "[keypad] "
BENIGN_ERRORS = frozenset({"response_cancel_not_active"})
MAX_BAD_FRAME_LOGS = 20


@dataclass(frozen=True)
class CoreOptions:
    session_config: ev.SessionConfig
    audio_mode: str = "pcm16"  # pcm16 (8k<->24k resampled) | g711_ulaw (passthrough)
    greeting_text: str | None = None
    greeting_instructions: str | None = None
    max_call_duration_s: float = 1800.0
    time_limit_message: str = "I'm sorry, we have reached the time limit for this call. Goodbye."
    drain_message: str = "I'm sorry, I have to end our call now. Please call us back. Goodbye."
    drain_transfer_message: str = "Please hold while I transfer your call."
    dtmf_flush_s: float = 1.5
    exit_grace_s: float = 20.0  # longest wait for goodbye audio before hanging up anyway
    fillers: dict[str, str] = field(default_factory=dict)
    reconnect_message: str = "Sorry, the line dropped for a moment."
    max_reconnects: int = 3  # outages per call that are recovered from
    model_session_max_s: float | None = None  # the service's session lifetime: roll over before it
    connect_budget_s: float = 4.0  # per outage: time to a usable model session, retries included
    overflow_number: str | None = None  # where a call goes when no model session can be had
    unavailable_audio_b64: str | None = None  # mu-law 8 kHz apology played when giving up
    redact_transcripts: tuple[str, ...] = ()  # phone | card | email, masked in logged transcripts
    await_answer: bool = False  # outbound with answering-machine detection: greet once it says "human"
    answer_timeout_s: float = 35.0  # no verdict by then (from the stream's start): greet anyway
    voicemail_message: str | None = None  # said to an answering machine after the beep; None: hang up
    post_call_summary: bool = False  # ask the model for a summary when the call ends
    post_call_schema: dict[str, Any] | None = None  # ... and to fill this JSON Schema from the call
    post_call_timeout_s: float = 15.0
    hold_loop_ulaw: bytes = b""  # hold music (8 kHz mu-law, >= 1 s, looped) during a warm transfer
    tool_redact: dict[str, Any] = field(default_factory=dict)  # tool name -> its `redact` paths


class CallCore(CallerAudioIn, BargeIn, ModelSessions, AgentAudio, Transcripts, Asides, Answering, WarmTransfer):
    def __init__(self, opts: CoreOptions, now: float, wall_offset: float = 0.0):
        self.opts = opts
        self.config = opts.session_config
        self.started_at = now
        self.wall_offset = wall_offset
        self.stream_sid: str | None = None
        self.greeted = False
        self.ended = False
        self.playout = Playout()
        self.to_model = CallerToModel(opts.audio_mode)
        self.to_caller = ModelToCaller(opts.audio_mode)
        self._model_bytes_per_ms = model_bytes_per_ms(opts.audio_mode)
        self._passthrough = opts.audio_mode == "g711_ulaw"  # the payloads go through as they are
        self.responses = ResponseBook()
        self.tools = ToolBook()
        self.history = History()
        self.link = ModelLink(opts.model_session_max_s, opts.max_reconnects)
        self.exit: ExitPlan | None = None
        self.barge_ins = 0
        self._pre_stream: list[tuple[str, str, float, float]] = []  # (item, b64, start, end) before the stream
        self._pre_stream_ms = 0.0
        self._capped: set[str] = set()  # responses over the queued-audio cap: the rest of their audio is dropped
        self._bad_audio_count = 0
        self._speech_stopped_at: float | None = None
        self._awaiting_first_audio = False
        self._want_response = False  # answer as soon as nothing else is in progress
        self._requested = 0  # responses asked for on the live link that have not started yet
        self._turn_open = False  # the caller's last turn has no completed answer yet
        self._cut_off = False  # the last drop cut the agent off mid-answer
        self._pending_transcripts: dict[str, float] = {}  # caller items awaiting their transcript
        self._dtmf: list[str] = []
        self._dtmf_due: float | None = None
        self.bad_frames = BadFrameMeter()
        self.redactor = Redactor(opts.redact_transcripts)
        self._transcripts: OrderedDict[str, tuple[str, str, bool]] = OrderedDict()  # item -> (role, text, cut)
        self._filler_sent_for: set[str] = set()
        self._standby_expires: float | None = None
        self.asides: dict[str, Aside] = {}  # side questions to the model awaiting their answer
        self.answer: str | None = "waiting" if opts.await_answer else None  # waiting | human | machine
        self.answer_due: float | None = None
        self.warm: WarmState | None = None
        self.hold_loop = opts.hold_loop_ulaw if len(opts.hold_loop_ulaw) >= 8000 else b""
        self.gated = opts.await_answer  # caller audio is kept from the model (unanswered, on hold)

    # ------------------------------------------------------------------------------ helpers
    def _log(self, kind: str, now: float, /, **data: object) -> Log:
        return Log(CallLogEntry(kind, now + self.wall_offset, data))

    def _to_model(self, command: ev.ClientCommand) -> ToModel:
        return ToModel(command, self.link.live)

    def _create_response(self, acts: list[Action], **kw: object) -> None:
        acts.append(self._to_model(ev.CreateResponse(**kw)))  # type: ignore[arg-type]
        self._want_response = False
        self._requested += 1

    def _request_response(self, acts: list[Action]) -> None:
        """Ask the model to answer now, or as soon as what is in progress has ended."""
        if self.link.ready and not self.responses.in_progress and not self.tools.running and not self.exit:
            self._create_response(acts)
        else:
            self._want_response = True

    def _say_out_of_band(self, text: str, kind: str) -> ToModel:
        """A verbatim line outside the conversation (fillers, goodbyes, apologies): the model's
        context is not changed by it, and barge-in never truncates it."""
        self._requested += 1
        return self._to_model(ev.CreateResponse(instructions=SAY_EXACTLY.format(text=text), conversation="none",
                                                metadata={"voicegw": kind}, input=()))

    # ------------------------------------------------------------------------------ start
    def start(self, now: float) -> list[Action]:
        """The call exists (webhook pre-warm or stream start): open its first model session,
        within the connect budget."""
        self.link.outage_began(now, self.opts.connect_budget_s)
        return [OpenModel(self.link.open_next("first"), 0.0, self.opts.connect_budget_s)]

    # ------------------------------------------------------------------------- stream events
    # The two hot entries (a caller frame, `CallerAudioIn`; the live session's audio delta: 50 a
    # second each) move no deadline: `next_deadline()` is the same after them, so the bridge does
    # not ask for it.
    def on_live_audio(self, e: ev.AudioDelta, now: float, link: int) -> list[Action] | None:
        """`on_model` for an audio delta, when it comes from the live session of a call in progress
        with nothing aside; None otherwise (then `on_model` takes it)."""
        return self.live_audio(e.response_id, e.item_id, e.audio_b64, now, link)

    def live_audio(self, response_id: str, item_id: str, audio_b64: str, now: float, link: int) -> list[Action] | None:
        """`on_live_audio` with the delta's fields, read off the wire (no event object)."""
        if self.ended or link != self.link.live or self.asides:
            return None
        return self._audio_delta(response_id, item_id, audio_b64, now)

    def live_piece(self, response_id: str, item_id: str, audio_b64: str, now: float,
                   link: int) -> Piece | None:
        """`live_audio`, with its commonest outcomes as data: the payload to play (`str`), or it and
        the mark after it (`tuple`), when that is all the delta asks for (`AgentAudio._emit_piece`)."""
        if self.ended or link != self.link.live or self.asides:
            return None
        return self._audio_piece(response_id, item_id, audio_b64, now)

    def on_stream(self, e: tel.StreamEvent, now: float) -> list[Action]:
        if self.ended:
            return []
        if type(e) is tel.CallerAudio:
            return self.on_caller_audio(e, now)  # type: ignore[arg-type]
        if type(e) is tel.MarkPlayed:
            self.playout.acked(e.name, now)
            if self.exit:
                return self._maybe_exit(now)
            if self.warm is not None:
                return self._warm_progress(now)
            return self._maybe_roll_over(now) if self.link.standby_ready else []
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
            return self._bad_frame(e.error, "bad_frame", now)
        return []

    def _bad_frame(self, message: str, code: str, now: float) -> list[Action]:
        """Counted, logged up to MAX_BAD_FRAME_LOGS, and a flood of them ends the call."""
        meter = self.bad_frames
        if meter.bad(now):
            return [self._log("error", now, source="telephony", code="bad_frames",
                              message=f"more than {FLOOD_PER_SECOND} bad frames a second for {FLOOD_SECONDS} s "
                                      f"({meter.total} in all): this is not a phone call, ending it")] \
                + self.end("bad_frames", now)
        if meter.total <= MAX_BAD_FRAME_LOGS:
            return [self._log("error", now, source="telephony", message=message, code=code)]
        return []

    def _stream_started(self, e: tel.StreamStarted, now: float) -> list[Action]:
        if self.stream_sid is not None:  # a bad frame like any other: counted, and its logs capped
            return self._bad_frame("a second start frame on this stream was ignored", "duplicate_start", now)
        self.stream_sid = e.stream_sid
        params = {k: v for k, v in e.custom_parameters.items() if k.lower() != "token"}
        acts: list[Action] = [self._log("stream.started", now, stream_sid=e.stream_sid, tracks=list(e.tracks),
                                        custom_parameters=params)]
        acts += self._flush_pre_stream(now)
        if self.awaiting_answer:
            self.answer_due = now + self.opts.answer_timeout_s
        if self.exit is not None and self.exit.hold_for_stream_s is not None:
            # given up before the stream started: the apology plays from now on
            self.exit.deadline = now + self.exit.hold_for_stream_s
            self.exit.hold_for_stream_s = None
        return acts

    def _flush_dtmf(self, now: float) -> list[Action]:
        digits = " ".join(d for d in self._dtmf if d != "#") or "#"
        self._dtmf.clear()
        self._dtmf_due = None
        acts = self._barge_in(now, cause="dtmf")
        text = KEYPAD_PREFIX + digits
        self.history.user_text(text)
        self._turn_open = True
        if self.link.ready:
            acts.append(self._to_model(ev.AddUserText(text)))  # else the replay carries it
        self._request_response(acts)
        return acts

    # -------------------------------------------------------------------------- model events
    def on_model(self, e: ev.ServerEvent, now: float, link: int) -> list[Action]:
        if self.ended:  # only the post-call answer is still awaited
            return (self._aside_event(e, now) or []) if link == self.link.live else []
        if link != self.link.live:
            return self._other_link_event(e, now, link)
        if self.asides:
            aside = self._aside_event(e, now)
            if aside is not None:
                return aside
        kind = type(e)
        if kind is ev.AudioDelta:
            return self._audio_delta(e.response_id, e.item_id, e.audio_b64, now)  # type: ignore[union-attr]
        if kind is ev.TranscriptDelta:
            if e.response_id not in self.responses.stale:  # type: ignore[union-attr]
                utt = self.responses.utterances.get(e.item_id)  # type: ignore[union-attr]
                if utt is not None and not utt.logged:
                    utt.parts.append(e.delta)  # type: ignore[union-attr]
            return []
        if isinstance(e, ev.SpeechStarted):
            self.link.speech_started()
            acts: list[Action] = [self._log("speech.started", now, audio_start_ms=e.audio_start_ms)]
            if self.config.turn_detection.interrupt_response:
                acts += self._barge_in(now, cause="speech")
            return acts
        if isinstance(e, ev.SpeechStopped):
            self.link.speech_stopped()
            self._speech_stopped_at = now
            self._awaiting_first_audio = True
            self._turn_open = True
            return [self._log("speech.stopped", now, audio_end_ms=e.audio_end_ms)]
        if isinstance(e, ev.InputCommitted):
            self.history.place(e.item_id, "user")
            if self.config.transcription_model:
                self._pending_transcripts[e.item_id] = now
            return []
        if isinstance(e, ev.ResponseStarted):
            return self._response_started(e, now)
        if isinstance(e, ev.OutputItemAdded):
            if e.item_type == "message":
                self.responses.item_added(e.response_id, e.item_id)
                if e.item_id not in self.responses.oob_items:
                    self.history.place(e.item_id, "assistant")
            return []
        if isinstance(e, ev.AudioDone):
            return self._audio_done(e, now) + self._close_chunk()
        if isinstance(e, ev.TranscriptDone):
            return self._transcript_done(e, now)
        if isinstance(e, ev.FunctionCall):
            return self._function_call(e, now)
        if isinstance(e, ev.ResponseDone):
            return self._close_chunk() + self._response_done(e, now)
        if isinstance(e, ev.InputTranscript):
            text = e.transcript.strip()
            self.history.text(e.item_id, "user", text)
            self._pending_transcripts.pop(e.item_id, None)
            self.link.transcribed()
            return [self._transcript(now, "caller", e.item_id, text, False)]
        if isinstance(e, ev.InputTranscriptFailed):
            self._pending_transcripts.pop(e.item_id, None)
            return [self._log("error", now, source="model", message=f"input transcription failed: {e.message}",
                              code="transcription_failed")]
        if isinstance(e, ev.SessionStarted):
            return self._link_opened(link, e, now)
        if isinstance(e, ev.ModelError):
            if e.code in BENIGN_ERRORS:
                return []
            return [self._log("error", now, source="model", message=e.message, code=e.code, event_id=e.event_id)]
        return []

    def _other_link_event(self, e: ev.ServerEvent, now: float, link: int) -> list[Action]:
        """Events of a session being opened (only its start and errors matter) or of an old one."""
        if link != self.link.opening:
            return []
        if isinstance(e, ev.SessionStarted):
            return self._link_opened(link, e, now)
        if isinstance(e, ev.ModelError) and e.code not in BENIGN_ERRORS:
            return [self._log("error", now, source="model", message=e.message, code=e.code, link=link)]
        return []

    def _response_started(self, e: ev.ResponseStarted, now: float) -> list[Action]:
        kind = str((e.metadata or {}).get("voicegw") or "turn")
        self._requested = max(0, self._requested - 1)
        self.responses.started(e.response_id, kind, out_of_band=e.conversation == "none" or kind in OUT_OF_BAND)
        if self.exit is not None and kind in ("turn", "goodbye"):
            self.exit.goodbye_started(e.response_id)
        return [self._log("response.started", now, response_id=e.response_id, kind=kind)]

    def _transcript_done(self, e: ev.TranscriptDone, now: float) -> list[Action]:
        utt = self.responses.utterances.get(e.item_id)
        if utt is None or utt.logged or e.response_id in self.responses.stale:
            return []
        utt.final = e.transcript
        utt.logged = True
        if e.item_id not in self.responses.oob_items:
            self.history.text(e.item_id, "assistant", utt.text.strip())
        return [self._transcript(now, "agent", e.item_id, utt.text.strip(), False)]

    def _function_call(self, e: ev.FunctionCall, now: float) -> list[Action]:
        if e.response_id in self.responses.stale or self.exit:
            return []
        self.tools.start(e.call_id, e.name, e.response_id, now)
        self.history.function_call(e.call_id, e.name, e.arguments)
        try:
            args: object = json.loads(e.arguments) if e.arguments else {}
        except ValueError:
            args = e.arguments
        acts: list[Action] = []
        paths = self.opts.tool_redact.get(e.name)
        if paths:  # the tool marks these fields: never logged, and masked in transcripts from now on
            acts = self._learn_redacted(redacted_values(args, paths), now)
            args = redact(args, paths)
        if self.redactor.active:
            args = self.redactor.mask_value(args)
        return [*acts, self._log("tool.call", now, call_id=e.call_id, name=e.name, arguments=args),
                RunTool(e.call_id, e.name, e.arguments, e.response_id)]

    def _response_done(self, e: ev.ResponseDone, now: float) -> list[Action]:
        r = self.responses
        acts: list[Action] = [self._log("response.done", now, response_id=e.response_id, status=e.status, usage=e.usage)]
        if e.status == "failed":
            detail = (e.status_details or {}).get("error") or e.status_details
            acts.append(self._log("error", now, source="model", message=f"response failed: {detail}",
                                  code="response_failed"))
        kind = r.kinds.get(e.response_id, "turn")
        if e.status == "completed" and e.response_id == r.active and kind != "greeting" \
                and e.response_id not in self.tools.waiting_responses:  # its tools' follow-up answers
            self._turn_open = False
        r.done(e.response_id)
        self._capped.discard(e.response_id)
        if self.warm is not None and kind != "filler":
            self._warm_response_done()
        if self.exit is not None:
            self.exit.response_done(e.response_id)
        self.tools.response_finished(e.response_id)
        if e.response_id in self.tools.waiting_responses and self.tools.running \
                and e.response_id not in self._filler_sent_for:
            acts += self._filler(e.response_id)
        acts += self._continue(now)
        return acts

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
        if self.link.ready and not self.responses.in_progress:
            if self.tools.ready_for_followup():
                self.tools.followup_sent()
                self._create_response(acts)
                if self.exit is not None and self.exit.goodbye == "wanted":
                    self.exit.goodbye = "speaking"
            elif self._want_response and not self.tools.running and not self.exit:
                self._create_response(acts)
        if self.exit:
            acts += self._maybe_exit(now)
        elif self.warm is not None:
            acts += self._warm_progress(now)
        elif self.link.standby_ready:
            acts += self._maybe_roll_over(now)
        return acts

    # --------------------------------------------------------------------------------- tools
    def on_tool_done(self, call_id: str, outcome: ToolOutcome, now: float) -> list[Action]:
        if self.ended:
            return []
        tool = self.tools.finish(call_id)
        if tool is None:
            return []
        result: dict[str, object] = {"ok": outcome.ok, "duration_ms": round(outcome.duration_ms, 1)}
        if outcome.ok:
            result["result"] = outcome.logged_result
        else:
            result["error"] = outcome.error
        self.history.function_output(call_id, outcome.output)
        acts: list[Action] = self._learn_redacted(outcome.redacted_values, now)
        acts.append(self._log("tool.result", now, call_id=call_id, name=tool.name, **result))
        if self.link.ready:
            acts.append(self._to_model(ev.AddFunctionOutput(call_id, outcome.output)))  # else the replay has it
        eff = outcome.effect
        if isinstance(eff, HangUp):
            self.tools.followup_sent()  # nothing more to say: leave once the queued audio played
            acts += self._begin_exit(Control("hangup"), "agent_hangup", now, goodbye=False)
        elif isinstance(eff, Transfer) and eff.mode == "warm":
            acts += self._warm_begin(eff, now)  # the follow-up response tells the caller
        elif isinstance(eff, Transfer):
            # the follow-up response is the goodbye; transfer once it has been heard
            acts += self._begin_exit(Control("transfer", eff.target, eff.announcement), "transferred", now, goodbye=True)
        elif isinstance(eff, SwitchAgent):
            self.config = eff.session
            if self.link.ready:
                acts.append(self._to_model(ev.UpdateSession(eff.session)))
            acts += [UseAgent(eff.agent), self._log("agent.switched", now, agent=eff.agent)]
        acts += self._continue(now)
        return acts

    # ----------------------------------------------------------------------------- leaving
    def _begin_exit(self, control: Control | None, reason: str, now: float, goodbye: bool) -> list[Action]:
        """Leave once the agent's last words have been heard (`goodbye`: ask for them first)."""
        if self.exit is None:
            self.exit = ExitPlan(control, reason, now + self.opts.exit_grace_s, "wanted" if goodbye else "none")
        return []

    def _maybe_exit(self, now: float) -> list[Action]:
        plan = self.exit
        if plan is None:
            return []
        idle = not plan.waiting_for_goodbye and not self.responses.in_progress and not self.playout.busy \
            and not self._pre_stream
        if not (idle or now >= plan.deadline):
            return []
        acts: list[Action] = [plan.control] if plan.control is not None else []
        return acts + self.end(plan.reason, now)

    def on_control_failed(self, kind: str, error: str, now: float) -> list[Action]:
        """A transfer or hang-up request to the provider failed (the call ends all the same; a warm
        transfer that could not be dialed returns the caller to the agent)."""
        acts: list[Action] = [self._log("error", now, source="gateway", message=f"{kind} failed: {error}",
                                        code="control_failed")]
        if kind == "warm_transfer" and self.on_hold:
            acts += self._warm_failed("failed", now)
        return acts

    def on_telephony_lost(self, reason: str, now: float) -> list[Action]:
        return self.end(reason, now)

    def end(self, reason: str, now: float) -> list[Action]:
        """End the call (idempotent). The last action is always EndCall."""
        if self.ended:
            return []
        self.ended = True
        acts: list[Action] = [CancelTools()] if self.tools.running else []
        for utt in self.responses.utterances.values():
            if not utt.logged and utt.text.strip() and utt.response_id not in self.responses.stale:
                utt.logged = True
                acts.append(self._transcript(now, "agent", utt.item_id, utt.text.strip(), False))
        acts.append(self._log("call.ended", now, reason=reason, duration_s=round(now - self.started_at, 3),
                              barge_ins=self.barge_ins, reconnects=self.link.reconnects,
                              rollovers=self.link.rollovers, bad_frames=self.bad_frames.total))
        self.asides.clear()  # side questions of the call itself are moot now
        asked = self._ask_post_call(now)
        acts += asked
        linger = self.opts.post_call_timeout_s if POST_CALL in self.asides else 0.0
        acts.append(EndCall(reason, linger))
        return acts

    # ------------------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        ml = self.link
        if self.exit is not None:  # leaving: tick() acts on nothing else, so nothing else is due
            times = [self._dtmf_due, self.exit.deadline, ml.connect_deadline]
        else:
            times = [self._dtmf_due, self.started_at + self.opts.max_call_duration_s, ml.connect_deadline,
                     self.answer_due, self._warm_due() if self.warm is not None else None,
                     (None if ml.overdue else ml.hard_at) if ml.standby_ready else
                     (ml.soft_at if not ml.opening else None)]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def on_model_down(self, link: int, reason: str, now: float, retryable: bool = True) -> list[Action]:
        """The live link's audio stopped mid-chunk: close the chunk (its mark out) first."""
        acts = self._close_chunk() if link == self.link.live and not self.ended else []
        return acts + super().on_model_down(link, reason, now, retryable)

    def tick(self, now: float) -> list[Action]:
        if self.ended:
            return []
        acts: list[Action] = self._close_chunk()
        if self._dtmf_due is not None and now >= self._dtmf_due:
            acts += self._flush_dtmf(now)
        connect_deadline = self.link.connect_deadline
        if connect_deadline is not None and now >= connect_deadline:
            acts += self._connect_overdue(now)
            if self.ended:
                return acts
        if self.answer_due is not None and now >= self.answer_due:
            acts += self._answer_overdue(now)
        if self.exit is None and now >= self.started_at + self.opts.max_call_duration_s:
            acts += self._time_limit(now)
        if self.warm is not None and self.exit is None:
            acts += self._warm_tick(now)
        if self.exit is not None:
            return acts + self._maybe_exit(now)
        ml = self.link
        if ml.ready and not ml.opening and ml.soft_at is not None and now >= ml.soft_at:
            acts.append(OpenModel(ml.open_next("rollover"), 0.0, self.opts.connect_budget_s))
        elif ml.standby_ready:
            acts += self._maybe_roll_over(now)
        return acts

    def _time_limit(self, now: float) -> list[Action]:
        return self._leave_now(now, "time_limit", self.opts.time_limit_message, Control("hangup"), "max_duration")

    def on_drain(self, now: float, transfer_to: str | None = None) -> list[Action]:
        """The gateway is shutting down and this call outlived the drain timeout: a short goodbye,
        then hang up -- or hand the caller to `transfer_to` (the overflow number)."""
        if self.ended or self.exit is not None:
            return []
        if self.stream_sid is None:  # nobody on the line yet
            return self.end("gateway_drain", now)
        if transfer_to:
            return self._leave_now(now, "drain", self.opts.drain_transfer_message, Control("transfer", transfer_to),
                                   "transferred")
        return self._leave_now(now, "drain", self.opts.drain_message, Control("hangup"), "gateway_drain")

    def _leave_now(self, now: float, cause: str, message: str, control: Control, reason: str) -> list[Action]:
        """Cut the agent off, say `message` out-of-band, then perform `control` and end."""
        acts = self._barge_in(now, cause=cause)
        r = self.responses
        if r.active is not None and r.active not in r.stale and self.link.ready:
            acts.append(self._to_model(ev.CancelResponse()))
            r.stale.add(r.active)
        self.exit = ExitPlan(control, reason, now + min(self.opts.exit_grace_s, 15.0), "speaking")
        if self.link.ready:
            acts.append(self._say_out_of_band(message, "goodbye"))
        else:
            self.exit.goodbye = "none"
        return acts + self._maybe_exit(now)

    def _greet(self) -> list[Action]:
        """Greet as soon as the model is ready: before the stream starts (pre-warm), the greeting's
        audio waits here and plays the moment the stream opens."""
        if self.greeted or self.awaiting_answer:
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
