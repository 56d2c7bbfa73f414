"""The thin asyncio layer around the sans-I/O call session.

One `Call` per phone call: it owns the model connection, the provider's media socket once the
stream is attached, a timer and the running tools. Every task it starts is cancelled when the call
ends, and every network await has a timeout. All decisions are made by `CallSession`; this file only
moves bytes and performs the actions the session returns.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from voicegw.call.actions import (
    Action,
    CallEvent,
    CallInfo,
    CallLogSink,
    CancelTools,
    Control,
    EndCall,
    Log,
    RunTool,
    SendModel,
    SendTelephony,
    SwitchAgent,
    ToolContext,
    ToolOutcome,
    ToolRunner,
)
from voicegw.call.session import CallSession, SessionOptions
from voicegw.realtime import events as ev
from voicegw.telephony import base as tel

if TYPE_CHECKING:
    from voicegw.realtime.connection import RealtimeConnection

log = logging.getLogger("voicegw.call")

SEND_TIMEOUT_S = 5.0
CONTROL_TIMEOUT_S = 15.0


class MediaSocket(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class CallHooks(Protocol):
    """Gateway services a call needs (implemented by voicegw.gateway.Gateway)."""

    def toolset_for(self, agent_key: str) -> ToolRunner: ...

    async def call_control(self, call_sid: str, control: Control) -> None: ...

    def call_finished(self, call: "Call") -> None: ...


class Call:
    def __init__(
        self,
        info: CallInfo,
        agent_key: str,
        options: SessionOptions,
        codec: tel.MediaStreamCodec,
        tools: ToolRunner,
        sink: CallLogSink,
        hooks: CallHooks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.info = info
        self.agent_key = agent_key
        self.clock = clock
        self.session = CallSession(codec, options, clock(), wall_offset=time.time() - clock())
        self.tools = tools
        self.sink = sink
        self.hooks = hooks
        self.conn: RealtimeConnection | None = None
        self.ws: MediaSocket | None = None
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.closed_code: int | None = None
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tool_tasks: dict[str, asyncio.Task[Any]] = {}
        self._timer_wake = asyncio.Event()
        self._timer_due: float | None = None  # the deadline the timer task is sleeping until
        self.claimed = False  # a media stream has taken this call (pre-warm no longer expires it)
        self._open_model: Callable[[], Awaitable[RealtimeConnection]] | None = None

    # ------------------------------------------------------------------------------ tasks
    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.info.call_sid}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------------- model side
    def begin(self, open_model: Callable[[], Awaitable["RealtimeConnection"]]) -> None:
        """Start opening the model session in the background (the call's first task)."""
        self._spawn(self.start_model(open_model), "start")

    async def start_model(self, open_model: Callable[[], Awaitable["RealtimeConnection"]]) -> None:
        """Open the model session (pre-warm: called from the webhook, before the stream)."""
        self._open_model = open_model
        try:
            self.conn = await open_model()
        except Exception as exc:  # connect failures are reported, the caller hears an apology
            log.warning("call %s: model connection failed: %s", self.info.call_sid, exc)
            await self.perform(self.session.on_model_closed(f"connect failed: {exc}", self.clock()))
            return
        if self.ended.is_set():
            await self._close_model()
            return
        created = getattr(self.conn, "session_created", None)
        await self.perform(self.session.on_model(created or ev.SessionStarted(session_id=""), self.clock()))
        self._spawn(self._model_reader(), "model")
        self._spawn(self._timer(), "timer")

    async def _model_reader(self) -> None:
        assert self.conn is not None
        reason = "closed by the model"
        try:
            async for event in self.conn.events():
                acts = self.session.on_model(event, self.clock())
                if acts:
                    await self.perform(acts)
                if self.ended.is_set():
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
        if self.ended.is_set():
            return
        if self.session.reconnects < self.session.opts.max_reconnects and self._open_model is not None:
            if await self._reconnect(reason):
                return
        await self.perform(self.session.on_model_closed(reason, self.clock()))

    async def _reconnect(self, reason: str) -> bool:
        """The model dropped mid-call (session expiry, network): open a new session and go on."""
        assert self._open_model is not None
        log.warning("call %s: model connection lost (%s); reconnecting", self.info.call_sid, reason)
        await self._close_model()
        for attempt in range(2):
            try:
                self.conn = await self._open_model()
            except Exception as exc:
                self.sink.event(self.info.call_sid, CallEvent("reconnect", time.time(), {
                    "attempt": attempt + 1, "ok": False, "error": str(exc)}))
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            await self.perform(self.session.on_model_reconnected(self.clock()))
            self._spawn(self._model_reader(), "model")
            return True
        return False

    # ------------------------------------------------------------------ telephony side
    async def attach(self, ws: MediaSocket, start: tel.StreamStarted) -> None:
        self.claimed = True
        self.ws = ws
        self.info = CallInfo(
            call_sid=self.info.call_sid, stream_sid=start.stream_sid, from_number=self.info.from_number,
            to_number=self.info.to_number, agent=self.info.agent, started_at=self.info.started_at,
        )
        await self.perform(self.session.on_stream(start, self.clock()))

    async def on_frame(self, event: tel.StreamEvent) -> None:
        acts = self.session.on_stream(event, self.clock())
        if acts:
            await self.perform(acts)

    # ------------------------------------------------------------------------- timer
    async def _timer(self) -> None:
        while not self.ended.is_set():
            due = self.session.next_deadline()
            delay = 3600.0 if due is None else max(0.0, due - self.clock())
            self._timer_due = due
            self._timer_wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout=min(delay, 3600.0))
            acts = self.session.tick(self.clock())
            if acts:
                await self.perform(acts)

    # ------------------------------------------------------------------------ actions
    async def perform(self, actions: list[Action]) -> None:
        async with self._send_lock:
            # consecutive telephony frames (an audio chunk and its mark) share one send deadline
            pending: list[str] = []
            for act in actions:
                if isinstance(act, SendTelephony):
                    pending.append(act.text)
                    continue
                if pending and not await self._send_telephony(pending):
                    return
                pending = []
                if isinstance(act, SendModel):
                    # RealtimeConnection.send bounds itself (send_timeout) and raises on failure
                    if self.conn is not None and not self.conn.closed:
                        try:
                            await self.conn.send(act.command)
                        except Exception as exc:
                            log.info("call %s: model send failed: %s", self.info.call_sid, exc)
                elif isinstance(act, Log):
                    self.sink.event(self.info.call_sid, act.event)
                elif isinstance(act, RunTool):
                    self._tool_tasks[act.call_id] = self._spawn(self._run_tool(act), f"tool:{act.name}")
                elif isinstance(act, CancelTools):
                    self._cancel_tools()
                elif isinstance(act, Control):
                    # awaited in order: a transfer must reach the provider before the stream closes,
                    # or closing the stream would end the call first
                    await self._control(act)
                elif isinstance(act, EndCall):
                    self._finish(act.reason)
            if pending and not await self._send_telephony(pending):
                return
        # Wake the timer only when the session's next deadline moved earlier than the one it
        # sleeps until: waking it on every frame cost a task and a timer per 20 ms of audio.
        due = self.session.next_deadline()
        if due is not None and (self._timer_due is None or due < self._timer_due):
            self._timer_due = due
            self._timer_wake.set()

    async def _send_telephony(self, texts: list[str]) -> bool:
        """Send frames to the provider within SEND_TIMEOUT_S; on failure the call ends (False)."""
        if self.ws is None:
            return True
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                for text in texts:
                    await self.ws.send_text(text)
        except Exception as exc:
            log.info("call %s: telephony send failed: %s", self.info.call_sid, exc)
            self.session.end("telephony_lost", self.clock())
            self._finish("telephony_lost")
            return False
        return True

    async def _run_tool(self, act: RunTool) -> None:
        ctx = ToolContext(self.info.call_sid, self.info.stream_sid, self.info.from_number, self.info.to_number, self.agent_key)
        try:
            outcome: ToolOutcome = await self.tools.run(ctx, act.name, act.arguments)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a tool runner must not raise; if it does, the model is told
            log.exception("call %s: tool %s crashed", self.info.call_sid, act.name)
            outcome = ToolOutcome(output='{"error": "the tool failed"}', ok=False, error=type(exc).__name__)
        finally:
            self._tool_tasks.pop(act.call_id, None)
        if isinstance(outcome.effect, SwitchAgent):
            self.tools = self.hooks.toolset_for(outcome.effect.agent)
            self.agent_key = outcome.effect.agent
        await self.perform(self.session.on_tool_done(act.call_id, outcome, self.clock()))

    async def _control(self, act: Control) -> None:
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT_S):
                await self.hooks.call_control(self.info.call_sid, act)
        except Exception as exc:
            log.warning("call %s: %s failed: %s", self.info.call_sid, act.kind, exc)
            self.sink.event(self.info.call_sid, CallEvent("error", time.time(), {
                "source": "gateway", "message": f"{act.kind} failed: {exc}", "code": "control_failed"}))

    # ----------------------------------------------------------------------- ending
    def end(self, reason: str) -> None:
        """End from outside (socket lost, shutdown, unclaimed pre-warm)."""
        acts = self.session.end(reason, self.clock())
        for act in acts:
            if isinstance(act, Log):
                self.sink.event(self.info.call_sid, act.event)
            elif isinstance(act, CancelTools):
                self._cancel_tools()
        self._finish(reason)

    def _cancel_tools(self) -> None:
        for task in self._tool_tasks.values():
            task.cancel()

    def _finish(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self._timer_wake.set()

    async def _close_model(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3.0):
                    await self.conn.close()

    async def aclose(self) -> None:
        """Release everything the call holds. Idempotent."""
        if not self.ended.is_set():
            self.end("gateway_shutdown")
        current = asyncio.current_task()
        tasks = [t for t in list(self._tasks) if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_model()
        self.sink.call_ended(self.info.call_sid, self.end_reason or "ended", time.time())
        self.hooks.call_finished(self)
