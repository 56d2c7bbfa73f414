"""The gateway's shared services: the calls in progress, pre-warm, the model connector, agents and
tools, call control and the call log. Calls share nothing else (DESIGN.md principle 3)."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from voicegw.call.actions import Control
from voicegw.call.bridge import CallBridge
from voicegw.call.core import CoreOptions
from voicegw.calllog.entries import CallInfo, CallLogEntry, CallLogSink, NullSink
from voicegw.audio.hold import hold_loop
from voicegw.config import Settings, fill_placeholders, placeholders
from voicegw.logs import set_call_sid
from voicegw.metrics import CallObserver, Metrics
from voicegw.realtime.auth import NoAuth, auth_for
from voicegw.realtime.connection import RealtimeConnection
from voicegw.realtime.dialects import dialect_for
from voicegw.recording.files import UnsafeCallSid, recording_path
from voicegw.recording.recorder import Recorder
from voicegw.telephony.rest import TwilioRest, run_rest
from voicegw.telephony.warm import warm_control
from voicegw.telephony.twilio import TwilioMediaCodec
from voicegw.tracing import from_env as tracer_from_env
from voicegw.tools.contract import ToolRunner

log = logging.getLogger("voicegw.gateway")

LOCAL_MODEL_NAME = "voicegw-local"
STREAM_TOKEN_REUSED = "token_reused"  # why take_stream refuses a stream (also its metric label)
GATEWAY_FULL = "full"
UNAVAILABLE_MESSAGE = "Sorry, our line is unavailable. Please call back later."  # 3.3 s at 175 wpm


async def _synthesize_apology(text: str) -> str | None:
    """The apology a call plays when no model session can be had, synthesized once at start-up with
    the project's own TTS (8 kHz mu-law, base64). None when eSpeak NG is unavailable: calls then
    transfer or end without it. Kept short: it plays after the whole connect budget has run out."""
    try:
        from voicegw.localmodel.tts import Synthesizer

        ulaw = await Synthesizer().synthesize_async(text, "g711_ulaw")
    except Exception as exc:  # noqa: BLE001 - TtsUnavailable or anything else: run without it
        log.warning("no apology audio for an unavailable model: %s", exc)
        return None
    return base64.b64encode(ulaw).decode("ascii") if ulaw else None


def _fill_optional(text: str | None, context: Mapping[str, str]) -> str | None:
    return fill_placeholders(text, context) if text else text


class Gateway:
    def __init__(self, settings: Settings, registry: Any, calllog: CallLogSink | None = None,
                 rest: TwilioRest | None = None, worker: str = "w0", peers_dir: str | None = None) -> None:
        self.settings = settings
        # who owns the calls this process pre-warms: stream tokens carry it, so a stream that lands
        # on another worker or replica is relayed here (voicegw.telephony.relay)
        self.worker = worker
        self.owner = f"{settings.replica_url or ''}|{worker}"
        self.peers_dir = peers_dir  # where the other workers of this replica listen (Unix sockets)
        self.draining = False
        self._spent: dict[str, float] = {}  # call sid -> until when its stream token stays refused
        self._idle = asyncio.Event()  # no call in progress (drain waits on it)
        self._idle.set()
        self.unavailable_audio_b64: str | None = None
        self.registry = registry
        self.tool_redact = _tool_redact(registry)  # the same for every call: the agents are loaded once
        self.calllog: CallLogSink = calllog or NullSink()
        self.codec = TwilioMediaCodec()
        self.calls: dict[str, CallBridge] = {}
        # metrics and per-call log lines (and spans, with voicegw[otel]) from every entry a call
        # writes: its call log sink is wrapped by the observer (voicegw.metrics)
        self.metrics = Metrics()
        self.observer = CallObserver(self.metrics, tracer_from_env(), worker)
        self._sink = self.observer.wrap(self.calllog)
        self.local_model: Any = None
        self._rest = rest
        if rest is None and settings.twilio_account_sid and settings.twilio_auth_token:
            self._rest = TwilioRest(settings.twilio_account_sid, settings.twilio_auth_token)
        self._prewarm_timers: dict[str, asyncio.TimerHandle] = {}
        self.our_numbers: dict[str, str] = {}  # call sid -> this side's number (a warm transfer calls from it)
        self.warm_legs: dict[str, str] = {}  # call sid -> the human's call of its warm transfer
        self.hold_loop = hold_loop()
        self._finished_waiters: dict[str, asyncio.Event] = {}
        self._closing: set[asyncio.Task[Any]] = set()
        if settings.model is None:
            self._url, self._dialect, self._auth = "", dialect_for("ga"), NoAuth()
        else:
            self._url, self._dialect = settings.model.url, dialect_for(settings.model.dialect)
            self._auth = auth_for(settings.model)

    # ----------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.settings.model is None:
            from voicegw.localmodel.server import LocalModelServer

            self.local_model = LocalModelServer()
            await self.local_model.start()
            self._url = f"{self.local_model.base_url}/v1/realtime?model={LOCAL_MODEL_NAME}"
            log.info("model: embedded local model at %s", self.local_model.base_url)
        else:
            log.info("model: %s", self.settings.model.describe())
        self.unavailable_audio_b64 = await _synthesize_apology(UNAVAILABLE_MESSAGE)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking calls and let the live ones finish, for at most `timeout_s`; then each
        remaining call hears a goodbye (or is transferred to the overflow number) and ends."""
        self.draining = True
        log.warning("draining: %d live call(s), new calls get the overflow answer; up to %.0fs", len(self.calls), timeout_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        if self.calls:
            log.warning("drain timeout: ending %d call(s) with a goodbye", len(self.calls))
            for call in list(self.calls.values()):
                call.drain(self.settings.overflow_number)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30.0):  # the goodbye, then the call ends (bounded)
                    await self._idle.wait()
        log.warning("drained: %d call(s) left", len(self.calls))

    async def stop(self) -> None:
        calls = list(self.calls.values())
        for call in calls:
            call.shutdown("gateway_shutdown")
        if calls:
            await asyncio.gather(*(call.aclose("gateway_shutdown") for call in calls))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self.local_model is not None:
            await self.local_model.close()
        if self.observer.tracer is not None:
            self.observer.tracer.close()
        close = getattr(self._auth, "close", None)
        if close is not None:  # Entra ID credential sessions
            await close()

    # --------------------------------------------------------------------------- model
    async def open_model(self, timeout_s: float | None = None, call_sid: str | None = None) -> RealtimeConnection:
        """One attempt to open a model session, within `timeout_s` (what is left of the call's
        connect budget) and never longer than the per-attempt timeout. Retries are the call core's
        decision (voicegw.call.modellink)."""
        timeout = self.settings.model_connect_timeout if timeout_s is None else min(
            max(0.1, timeout_s), self.settings.model_connect_timeout)
        started = time.time()
        try:
            conn = await RealtimeConnection.open(self._url, self._auth, self._dialect, open_timeout=timeout, retries=0)
        except Exception as exc:
            self.observer.model_connect(call_sid, started, time.time(), False, str(exc) or type(exc).__name__)
            raise
        self.observer.model_connect(call_sid, started, time.time(), True)
        return conn

    # --------------------------------------------------------------------------- calls
    def create_call(self, call_sid: str, from_number: str, to_number: str, *, agent_key: str | None = None,
                    context: Mapping[str, str] | None = None, await_answer: bool = False,
                    outbound: bool = False) -> CallBridge:
        """Create the call and start opening its model session (pre-warm).

        Inbound calls get the agent of the number dialed; outbound calls the agent named
        (`agent_key`) or that of the number calling out. `context` fills the agent's `{{name}}`
        placeholders; `await_answer`: no greeting until answering-machine detection says "human".
        """
        set_call_sid(call_sid)  # every task of the call inherits it: its log lines carry the CallSid
        if agent_key is not None:
            entry = self.registry.get(agent_key)
        else:
            entry = self.registry.for_number(from_number if outbound else to_number)
        agent = entry.agent.config
        ctx = dict(context or {})
        session_config = entry.session_config()
        greeting = agent.greeting
        voicemail = None if agent.voicemail == "hang_up" else agent.voicemail.leave_message
        if ctx or placeholders(session_config.instructions):
            session_config = dataclasses.replace(session_config,
                                                 instructions=fill_placeholders(session_config.instructions, ctx))
        fill = functools.partial(_fill_optional, context=ctx)
        tools: ToolRunner = entry.tools
        fillers = {}
        for decl in tools.declarations():
            line = tools.filler(decl.name)
            if line:
                fillers[decl.name] = line
        opts = CoreOptions(
            session_config=session_config,
            audio_mode=agent.audio_mode,
            greeting_text=fill(greeting.text) if greeting else None,
            greeting_instructions=fill(greeting.instructions) if greeting else None,
            max_call_duration_s=agent.max_call_duration,
            fillers=fillers,
            model_session_max_s=self.settings.model_session_lifetime,
            connect_budget_s=self.settings.model_connect_budget,
            overflow_number=self.settings.overflow_number,
            unavailable_audio_b64=self.unavailable_audio_b64,
            redact_transcripts=tuple(agent.redact_transcripts),
            await_answer=await_answer,
            voicemail_message=fill(voicemail),
            post_call_summary=agent.post_call.summary,
            post_call_schema=agent.post_call.extract,
            post_call_timeout_s=agent.post_call.timeout,
            hold_loop_ulaw=self.hold_loop,
            tool_redact=self.tool_redact,
        )
        info = CallInfo(call_sid=call_sid, from_number=from_number, to_number=to_number, agent=agent.name,
                        started_at=time.time())
        call = CallBridge(info, entry.key, opts, self.codec, tools, self._sink, self,
                          functools.partial(self.open_model, call_sid=call_sid), latency=self.metrics,
                          recorder=self._recorder(call_sid, agent.recording))
        self.calls[call_sid] = call
        self.our_numbers[call_sid] = from_number if outbound else to_number
        self._idle.clear()
        self.metrics.call_started()
        self._count_active()
        self._sink.call_started(info)
        call.begin()
        return call

    def _recorder(self, call_sid: str, mode: str) -> Recorder | None:
        """The call's recorder when its agent records calls (`recording: mixed | dual`)."""
        if mode == "off":
            return None
        try:
            path = recording_path(self.settings.recordings_path, call_sid)
        except UnsafeCallSid:
            log.warning("call %r: not recorded: the CallSid cannot name a file", call_sid)
            return None
        return Recorder(path, "dual" if mode == "dual" else "mixed", call_sid)

    # ------------------------------------------------------------------------ admission
    @property
    def full(self) -> bool:
        return len(self.calls) >= self.settings.max_calls

    def readiness(self) -> tuple[bool, str]:
        """Ready for new calls? A load balancer prefers replicas that are (/readyz)."""
        if self.draining:
            return False, "draining"
        if self.full:
            return False, "full"
        return True, "ready"

    def admit(self, call_sid: str) -> str | None:
        """None when the webhook may pre-warm a call; else why not (the caller gets the overflow
        answer and no model session is opened)."""
        if call_sid in self.calls or call_sid in self._spent:
            return None  # a retried webhook for a call that exists: answered as before
        ready, why = self.readiness()
        if ready:
            return None
        self.metrics.rejected(why)
        log.warning("call %s refused: %s (%d calls, max %d)", call_sid, why, len(self.calls), self.settings.max_calls)
        return why

    def prewarm(self, call_sid: str, from_number: str, to_number: str, *, agent_key: str | None = None,
                context: Mapping[str, str] | None = None, await_answer: bool = False,
                outbound: bool = False) -> CallBridge | None:
        """Pre-warm the call's model session (once per CallSid, ever: a retried webhook keeps the
        session already warming, and a call whose stream was taken is never created again).
        The keyword arguments are those of `create_call` (outbound calls)."""
        existing = self.calls.get(call_sid)
        if existing is not None or call_sid in self._spent:
            return existing
        call = self.create_call(call_sid, from_number, to_number, agent_key=agent_key, context=context,
                                await_answer=await_answer, outbound=outbound)
        loop = asyncio.get_running_loop()
        self._prewarm_timers[call_sid] = loop.call_later(self.settings.prewarm_timeout, self._expire, call_sid)
        self._count_active()
        return call

    def take_stream(self, call_sid: str, from_number: str, to_number: str) -> CallBridge | str:
        """The call a media stream belongs to, or why the stream is refused (STREAM_TOKEN_REUSED,
        GATEWAY_FULL).

        A stream token opens one stream: the call's entry is marked spent for the token's lifetime,
        so a replayed `start` -- while the call is live or after it ended -- opens nothing. A stream
        whose pre-warm is gone (expired, or pre-warmed by a process that is no more) gets a new call.
        """
        self._forget_spent()
        if call_sid in self._spent:
            return STREAM_TOKEN_REUSED
        timer = self._prewarm_timers.pop(call_sid, None)
        if timer is not None:
            timer.cancel()
            self._count_active()
        call = self.calls.get(call_sid)
        if call is None:
            if self.full:
                self.metrics.rejected("full")
                return GATEWAY_FULL
            call = self.create_call(call_sid, from_number, to_number)
        elif call.claimed:
            return STREAM_TOKEN_REUSED
        call.claimed = True
        self._spent[call_sid] = time.monotonic() + self.settings.stream_token_ttl + 60
        return call

    def _forget_spent(self) -> None:
        if len(self._spent) > 4 * self.settings.max_calls + 64:
            now = time.monotonic()
            for sid in [sid for sid, until in self._spent.items() if until < now]:
                del self._spent[sid]

    def _expire(self, call_sid: str) -> None:
        self._prewarm_timers.pop(call_sid, None)
        self._count_active()
        call = self.calls.get(call_sid)
        if call is not None and not call.claimed:
            self.metrics.prewarm_expired()
            log.info("call %s: pre-warmed model session not claimed in %.0fs; closing", call_sid, self.settings.prewarm_timeout)
            task = asyncio.ensure_future(call.aclose("stream_never_started"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _count_active(self) -> None:
        self.metrics.active(len(self.calls), len(self._prewarm_timers))

    # --------------------------------------------------------------------- CallHooks
    def toolset_for(self, agent_key: str) -> ToolRunner:
        return self.registry.get(agent_key).tools

    async def call_control(self, call_sid: str, control: Control) -> None:
        if self._rest is None:
            if control.kind == "hangup":
                return  # closing the media stream ends a <Connect><Stream> call
            raise RuntimeError("call transfer needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        if control.kind == "transfer" and control.target:
            await run_rest(self._rest.transfer, call_sid, control.target, control.announcement, timeout_s=10)
        elif control.kind == "hangup":
            await run_rest(self._rest.hang_up, call_sid, timeout_s=10)
        elif control.kind in ("warm_transfer", "join_transfer", "cancel_transfer"):
            await warm_control(self, self._rest, call_sid, control)

    def our_number(self, call_sid: str) -> str:
        """This side's number on the call (the one dialed, or the one calling out)."""
        return self.our_numbers.get(call_sid, "")

    def call_not_answered(self, call_sid: str, from_number: str, to_number: str, agent: str, reason: str,
                          sip_code: str | None = None) -> bool:
        """A placed call that never connected (busy, no answer, failed, canceled): its record, with
        no conversation. False when the call is live here after all (its own end is recorded)."""
        if call_sid in self.calls:
            return False
        now = time.time()
        self._sink.call_started(CallInfo(call_sid=call_sid, from_number=from_number, to_number=to_number,
                                         agent=agent, started_at=now))
        data: dict[str, Any] = {"reason": reason, "duration_s": 0.0, "answered": False}
        if sip_code:
            data["sip_response_code"] = sip_code
        self._sink.event(call_sid, CallLogEntry("call.ended", now, data))
        self._sink.call_ended(call_sid, reason, now)
        log.info("outbound call %s to %s not answered: %s", call_sid, to_number, reason)
        return True

    def answered_by(self, call_sid: str, answered_by: str, detection_ms: int | None = None) -> bool:
        """Twilio's answering-machine verdict for an outbound call; False when the call is not here."""
        call = self.calls.get(call_sid)
        if call is None:
            return False
        call.answered_by(answered_by, detection_ms)
        return True

    def transfer_status(self, call_sid: str, status: str) -> bool:
        """The human's leg of the call's warm transfer changed (Twilio CallStatus); False when the
        call is not here."""
        call = self.calls.get(call_sid)
        if call is None:
            return False
        call.transfer_status(status)
        return True

    async def wait_finished(self, call_sid: str, timeout: float) -> None:
        """Wait until the call has ended and released everything (for tools and tests)."""
        if call_sid not in self.calls:
            return
        waiter = self._finished_waiters.setdefault(call_sid, asyncio.Event())
        async with asyncio.timeout(timeout):
            await waiter.wait()

    def call_finished(self, call: CallBridge) -> None:
        waiter = self._finished_waiters.pop(call.info.call_sid, None)
        if waiter is not None:
            waiter.set()
        if self.calls.get(call.info.call_sid) is call:
            del self.calls[call.info.call_sid]
            self.our_numbers.pop(call.info.call_sid, None)
            self.warm_legs.pop(call.info.call_sid, None)
            self.metrics.call_ended(call.end_reason or "ended")
            self._count_active()
            if not self.calls:
                self._idle.set()


def _tool_redact(registry: Any) -> dict[str, Any]:
    """Every agent's tools' `redact` paths by tool name (a call may switch agents; a name two
    agents share is masked at the paths of both)."""
    out: dict[str, Any] = {}
    for entry in registry.entries.values():
        for name, paths in entry.tools.redact_paths().items():
            out[name] = tuple(dict.fromkeys([*out.get(name, ()), *paths]))
    return out
