"""The gateway's shared services: the calls in progress, pre-warm, the model connector, agents and
tools, call control and the call log. Calls share nothing else (DESIGN.md principle 3)."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from voicegw.call.actions import Control
from voicegw.call.bridge import CallBridge
from voicegw.call.core import CoreOptions
from voicegw.calllog.entries import CallInfo, CallLogSink, NullSink
from voicegw.config import Settings
from voicegw.logs import set_call_sid
from voicegw.realtime.auth import NoAuth, auth_for
from voicegw.realtime.connection import RealtimeConnection
from voicegw.realtime.dialects import dialect_for
from voicegw.telephony.rest import TwilioRest, run_rest
from voicegw.telephony.twilio import TwilioMediaCodec
from voicegw.tools.contract import ToolRunner

log = logging.getLogger("voicegw.gateway")

LOCAL_MODEL_NAME = "voicegw-local"


@dataclass
class Metrics:
    calls_started: int = 0
    calls_ended: int = 0
    calls_refused: int = 0
    prewarm_unclaimed: int = 0
    model_connect_failures: int = 0
    end_reasons: dict[str, int] = field(default_factory=dict)

    def render(self, active: int) -> str:
        lines = [
            "# TYPE voicegw_calls_active gauge", f"voicegw_calls_active {active}",
            "# TYPE voicegw_calls_started_total counter", f"voicegw_calls_started_total {self.calls_started}",
            "# TYPE voicegw_calls_ended_total counter", f"voicegw_calls_ended_total {self.calls_ended}",
            "# TYPE voicegw_streams_refused_total counter", f"voicegw_streams_refused_total {self.calls_refused}",
            "# TYPE voicegw_prewarm_unclaimed_total counter", f"voicegw_prewarm_unclaimed_total {self.prewarm_unclaimed}",
            "# TYPE voicegw_model_connect_failures_total counter",
            f"voicegw_model_connect_failures_total {self.model_connect_failures}",
            "# TYPE voicegw_call_end_reason_total counter",
        ]
        lines += [f'voicegw_call_end_reason_total{{reason="{r}"}} {n}' for r, n in sorted(self.end_reasons.items())]
        return "\n".join(lines) + "\n"


class Gateway:
    def __init__(self, settings: Settings, registry: Any, calllog: CallLogSink | None = None,
                 rest: TwilioRest | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.calllog: CallLogSink = calllog or NullSink()
        self.codec = TwilioMediaCodec()
        self.calls: dict[str, CallBridge] = {}
        self.metrics = Metrics()
        self.local_model: Any = None
        self._rest = rest
        if rest is None and settings.twilio_account_sid and settings.twilio_auth_token:
            self._rest = TwilioRest(settings.twilio_account_sid, settings.twilio_auth_token)
        self._prewarm_timers: dict[str, asyncio.TimerHandle] = {}
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
        close = getattr(self._auth, "close", None)
        if close is not None:  # Entra ID credential sessions
            await close()

    # --------------------------------------------------------------------------- model
    async def open_model(self, timeout_s: float | None = None) -> RealtimeConnection:
        """One attempt to open a model session, within `timeout_s` (what is left of the call's
        connect budget) and never longer than the per-attempt timeout. Retries are the call core's
        decision (voicegw.call.modellink)."""
        timeout = self.settings.model_connect_timeout if timeout_s is None else min(
            max(0.1, timeout_s), self.settings.model_connect_timeout)
        try:
            return await RealtimeConnection.open(self._url, self._auth, self._dialect, open_timeout=timeout, retries=0)
        except Exception:
            self.metrics.model_connect_failures += 1
            raise

    # --------------------------------------------------------------------------- calls
    def create_call(self, call_sid: str, from_number: str, to_number: str) -> CallBridge:
        """Create the call and start opening its model session (pre-warm)."""
        set_call_sid(call_sid)  # every task of the call inherits it: its log lines carry the CallSid
        entry = self.registry.for_number(to_number)
        agent = entry.agent.config
        tools: ToolRunner = entry.tools
        fillers = {}
        for decl in tools.declarations():
            line = tools.filler(decl.name)
            if line:
                fillers[decl.name] = line
        opts = CoreOptions(
            session_config=entry.session_config(),
            audio_mode=agent.audio_mode,
            greeting_text=agent.greeting.text if agent.greeting else None,
            greeting_instructions=agent.greeting.instructions if agent.greeting else None,
            max_call_duration_s=agent.max_call_duration,
            fillers=fillers,
            model_session_max_s=self.settings.model_session_lifetime,
        )
        info = CallInfo(call_sid=call_sid, from_number=from_number, to_number=to_number, agent=entry.key,
                        started_at=time.time())
        call = CallBridge(info, entry.key, opts, self.codec, tools, self.calllog, self, self.open_model)
        self.calls[call_sid] = call
        self.metrics.calls_started += 1
        self.calllog.call_started(info)
        call.begin()
        return call

    def prewarm(self, call_sid: str, from_number: str, to_number: str) -> CallBridge:
        existing = self.calls.get(call_sid)
        if existing is not None:
            return existing  # a retried webhook: keep the session already warming
        call = self.create_call(call_sid, from_number, to_number)
        loop = asyncio.get_running_loop()
        self._prewarm_timers[call_sid] = loop.call_later(self.settings.prewarm_timeout, self._expire, call_sid)
        return call

    def claim(self, call_sid: str) -> CallBridge | None:
        timer = self._prewarm_timers.pop(call_sid, None)
        if timer is not None:
            timer.cancel()
        call = self.calls.get(call_sid)
        if call is None or call.ended.is_set() or call.claimed:
            return None
        call.claimed = True
        return call

    def _expire(self, call_sid: str) -> None:
        self._prewarm_timers.pop(call_sid, None)
        call = self.calls.get(call_sid)
        if call is not None and not call.claimed:
            self.metrics.prewarm_unclaimed += 1
            log.info("call %s: pre-warmed model session not claimed in %.0fs; closing", call_sid, self.settings.prewarm_timeout)
            task = asyncio.ensure_future(call.aclose("stream_never_started"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

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
            self.metrics.calls_ended += 1
            reason = call.end_reason or "ended"
            self.metrics.end_reasons[reason] = self.metrics.end_reasons.get(reason, 0) + 1
