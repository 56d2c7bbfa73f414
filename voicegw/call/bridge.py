"""The thin asyncio shell around the sans-I/O call core.

One `CallBridge` per phone call. It feeds the core what happens (stream frames, model events, tool
outcomes, timer ticks, lost sockets) and performs the actions the core returns. It decides nothing.

How nothing is lost: `perform` is a plain function, not a coroutine. Each action is a non-blocking
step -- queue a frame on the caller's writer, queue a command on a model link's writer, hand an
entry to the call log, start a task -- so an action list is always performed to its end, in order,
whatever path produced it (normal traffic, a lost socket, shutdown, an unclaimed pre-warm). A send
that fails fails in its writer's task and comes back to the core as an event (telephony lost,
model link down), whose actions are performed the same way. Each action is guarded on its own, so a
failure performing one never skips the ones after it.

Every task the call starts is cancelled when the call ends, and every network await has a timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from voicegw.call.actions import (
    Action, AsideDone, CancelTools, CloseModel, Control, EndCall, Log, OpenModel, RunTool, ToCaller, ToModel,
    UseAgent,
)
from voicegw.call.agentaudio import played
from voicegw.call.callerlane import CallerLane
from voicegw.call.core import CallCore, CoreOptions
from voicegw.call.probe import CallProbe, LatencySink
from voicegw.call.writer import DirectWriter, Writer
from voicegw.calllog.entries import CallInfo, CallLogSink
from voicegw.realtime import events as ev
from voicegw.recording.recorder import Recorder
from voicegw.telephony import base as tel
from voicegw.tools.contract import ToolContext, ToolOutcome, ToolRunner

if TYPE_CHECKING:
    from voicegw.realtime.connection import RealtimeConnection

log = logging.getLogger("voicegw.call")

SEND_TIMEOUT_S = 5.0  # a batch of frames to the provider
CONTROL_TIMEOUT_S = 15.0  # a REST call-control request
CLOSE_TIMEOUT_S = 3.0  # closing a socket
DRAIN_TIMEOUT_S = 2.0  # frames still queued for the caller when the call ends
MODEL_QUEUE_MAX = 500  # commands waiting for a model link (10 s of caller audio): more means it is stuck


class MediaSocket(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class CallHooks(Protocol):
    """Gateway services a call needs (implemented by voicegw.gateway.Gateway)."""

    def toolset_for(self, agent_key: str) -> ToolRunner: ...

    async def call_control(self, call_sid: str, control: Control) -> None: ...

    def call_finished(self, call: "CallBridge") -> None: ...


@dataclass
class _Link:
    """One model session of the call: its connection once open, its writer, its reader task."""

    n: int
    task: asyncio.Task[Any] | None = None
    conn: "RealtimeConnection | None" = None
    writer: Writer[ev.ClientCommand] | DirectWriter[ev.ClientCommand] | None = None
    append: Callable[[str], bool] | None = None  # a direct writer's connection's `append_now`
    closing: bool = field(default=False)

    def writable(self) -> bool:
        """Commands can be written: the session is open and not being closed."""
        return self.writer is not None and not self.closing


def _no_stream(payload_b64: str) -> str:
    raise RuntimeError("no media stream is attached")


class CallBridge:
    def __init__(
        self,
        info: CallInfo,
        agent_key: str,
        options: CoreOptions,
        codec: tel.MediaStreamCodec,
        tools: ToolRunner,
        sink: CallLogSink,
        hooks: CallHooks,
        open_model: Callable[[float | None], Awaitable["RealtimeConnection"]],
        clock: Callable[[], float] = time.monotonic,
        latency: LatencySink | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.info = info
        self.agent_key = agent_key
        self.clock = clock
        self.core = CallCore(options, clock(), wall_offset=time.time() - clock())
        self.codec = codec
        self.tools = tools
        self.sink = sink
        self.hooks = hooks
        self._open_model = open_model
        self.ws: MediaSocket | None = None
        self._caller: Writer[str] | DirectWriter[str] | None = None
        self._stream_sid = ""
        self._encode_audio: Callable[[str], str] = _no_stream  # the stream's, once it is attached
        self._encode_mark: Callable[[str], str] = _no_stream
        self._links: dict[int, _Link] = {}
        self.ended = asyncio.Event()  # the core ended the call
        self.closed = asyncio.Event()  # everything is released
        self.end_reason: str | None = None
        self.claimed = False  # a media stream has taken this call (pre-warm no longer expires it)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tool_tasks: dict[str, asyncio.Task[Any]] = {}
        self._control_tasks: set[asyncio.Task[Any]] = set()
        self._closers: set[asyncio.Task[Any]] = set()  # closing model links: not cancelled at the end
        self._timer_wake = asyncio.Event()
        self._timer_due: float | None = None  # the deadline the timer task sleeps until
        # metrics samples (voicegw.call.probe): None costs nothing; `_caller_t0` is set while the
        # frames of a sampled model event are being queued for the caller
        self._probe = CallProbe(latency, clock) if latency is not None else None
        self._lane = CallerLane(clock, self._probe.up if self._probe is not None else None)
        self._caller_t0: float | None = None
        self._recorder = recorder  # the call's recording (voicegw.recording), None when off
        self._linger_s = 0.0  # after the call: how long the model link may stay for the post-call answer
        self._aside_done = asyncio.Event()

    # ------------------------------------------------------------------------------ tasks
    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.info.call_sid}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn_closer(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.info.call_sid}:{name}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def begin(self) -> None:
        """Start the call: the core opens its first model session (pre-warm), the timer runs."""
        self._spawn(self._timer(), "timer")
        self.perform(self.core.start(self.clock()))

    # ------------------------------------------------------------------------ interpreter
    def perform(self, actions: list[Action]) -> None:
        """After a call into the core: perform every action, in order (never awaits, never stops
        early), then re-arm the caller lane and the timer for the state the core is now in."""
        self._run(actions)
        # Wake the timer only when the core's next deadline moved earlier than the one it sleeps
        # until: waking it on every frame cost a task switch and a timer per 20 ms of audio.
        due = self.core.next_deadline()
        if due is not None and (self._timer_due is None or due < self._timer_due):
            self._timer_due = due
            self._timer_wake.set()

    def _run(self, actions: list[Action]) -> None:
        """`perform` without the deadline check: for the core's hot entries, which move none."""
        self._act(actions)
        self._arm()

    def _run_audio(self, actions: list[Action]) -> None:
        """`_run` for a steady-state audio delta (`CallCore.live_audio`), which moves no deadline and
        changes nothing the caller lane holds but the time its open playout chunk's mark falls due."""
        self._act(actions)
        self._lane.retime()

    def _arm(self) -> None:
        """The caller lane (voicegw/call/callerlane.py) for the core's state and the live link."""
        link = self._links.get(self.core.link.live)
        if link is not None and not link.writable():
            link = None
        self._lane.arm(self.core, link)

    def _act(self, actions: list[Action]) -> None:
        caller = self._caller  # several frames for the caller (audio and its mark): one write
        if len(actions) > 1 and caller is not None and caller.hold():
            try:
                self._act_each(actions)
            finally:
                caller.release()
        else:
            self._act_each(actions)

    def _act_each(self, actions: list[Action]) -> None:
        for act in actions:
            kind = type(act)
            try:
                if kind is ToModel:
                    link = self._links.get(act.link)  # type: ignore[union-attr]
                    if link is not None and link.writable():
                        link.writer.put(act.command)  # type: ignore[union-attr]
                    else:
                        self._dropped(act)  # type: ignore[arg-type]
                elif kind is ToCaller:
                    intent = act.intent  # type: ignore[union-attr]
                    if type(intent) is tel.PlayAudio:
                        self._play(intent.payload_b64)
                    else:
                        self._to_caller(intent)
                elif kind is Log:
                    self.sink.event(self.info.call_sid, act.entry)  # type: ignore[union-attr]
                else:
                    self._perform_other(act)
            except Exception:  # noqa: BLE001 - one failed action must not skip the others
                log.exception("call %s: performing %s failed", self.info.call_sid, kind.__name__)

    def _play(self, payload_b64: str) -> None:
        """`ToCaller(PlayAudio(payload_b64))`: plain agent audio (no recording, not a timed sample)
        is written here, 50 times a second per talking call; the rest takes `_to_caller`."""
        caller = self._caller
        try:
            if caller is not None and self._recorder is None and self._caller_t0 is None:
                caller.put(self._encode_audio(payload_b64))
            else:
                self._to_caller(tel.PlayAudio(payload_b64))
        except Exception:  # noqa: BLE001 - as in `_act`: the call goes on
            log.exception("call %s: performing ToCaller failed", self.info.call_sid)

    def _play_marked(self, piece: tuple[str, str]) -> None:
        """`played(piece)`: agent audio and the mark of the playout chunk it closes, both written
        here in one write (a delta of 100 ms or more closes a chunk each time)."""
        caller = self._caller
        if caller is None or self._recorder is not None or self._caller_t0 is not None:
            self._act(played(piece))
            return
        try:
            caller.put_many([self._encode_audio(piece[0]), self._encode_mark(piece[1])])
        except Exception:  # noqa: BLE001 - as in `_act`: the call goes on
            log.exception("call %s: performing ToCaller failed", self.info.call_sid)

    def _perform_other(self, act: Action) -> None:
        if isinstance(act, RunTool):
            self._tool_tasks[act.call_id] = self._spawn(self._run_tool(act), f"tool:{act.name}")
        elif isinstance(act, CancelTools):
            for task in self._tool_tasks.values():
                task.cancel()
        elif isinstance(act, UseAgent):
            self.tools = self.hooks.toolset_for(act.agent)
            self.agent_key = act.agent
        elif isinstance(act, Control):
            task = self._spawn(self._control(act), f"control:{act.kind}")
            self._control_tasks.add(task)
        elif isinstance(act, OpenModel):
            link = _Link(act.link)
            self._links[act.link] = link
            link.task = self._spawn(self._run_link(link, act.delay_s, act.timeout_s), f"model:{act.link}")
        elif isinstance(act, CloseModel):
            self._close_link(act.link)
        elif isinstance(act, AsideDone):
            self._aside_done.set()
        elif isinstance(act, EndCall):
            if not self.ended.is_set():
                self.end_reason = act.reason
                self._linger_s = act.linger_s
                self.ended.set()
                self._timer_wake.set()
                self._spawn(self._finish(), "finish")
        else:
            raise TypeError(f"not an action: {act!r}")

    def _to_caller(self, intent: tel.StreamIntent) -> None:
        writer = self._caller
        if writer is None:
            return  # no stream yet: the core holds audio until the stream starts
        if type(intent) is tel.PlayAudio:
            if self._recorder is not None:
                self._record_to_caller(intent)
            text = self._encode_audio(intent.payload_b64)
            if self._caller_t0 is not None:
                self._probe.down.track(text, self._caller_t0)  # type: ignore[union-attr]
        else:
            if type(intent) is tel.ClearPlayback:
                writer.purge()  # frames not yet sent are part of what is being cleared
            if self._recorder is not None:
                self._record_to_caller(intent)
            text = self.codec.encode(self._stream_sid, intent)
        writer.put(text)

    def _record_to_caller(self, intent: tel.StreamIntent) -> None:
        """What the caller is about to hear (or no longer will), for the recording."""
        rec = self._recorder
        assert rec is not None
        if type(intent) is tel.PlayAudio:
            rec.agent(self.clock(), intent.payload_b64)
        elif type(intent) is tel.ClearPlayback:
            rec.clear(self.clock())

    def _dropped(self, act: ToModel) -> None:
        log.debug("call %s: %s for model link %d dropped (link gone)", self.info.call_sid,
                  type(act.command).__name__, act.link)

    # ---------------------------------------------------------------------- model links
    async def _run_link(self, link: _Link, delay_s: float, timeout_s: float | None) -> None:
        """Open model link `link.n` within `timeout_s`, then feed its events to the core until it
        closes. (The core also holds the deadline: it gives up on an attempt that outlives it.)"""
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        try:
            conn = await self._open_model(timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connect failures are the core's to handle
            self._links.pop(link.n, None)
            reason = str(exc) or type(exc).__name__
            log.warning("call %s: model link %d failed to open: %s", self.info.call_sid, link.n, reason)
            self.perform(self.core.on_model_down(link.n, reason, self.clock(),
                                                 retryable=bool(getattr(exc, "retryable", True))))
            return
        link.conn = conn
        if self.ended.is_set() or link.closing:
            await _close_quietly(conn)
            return
        probe = self._probe
        failed = lambda exc: self._link_failed(link, exc)  # noqa: E731
        send_now = getattr(conn, "send_now", None)
        if send_now is not None:  # a connection that writes without waiting (voicegw.realtime.connection)
            if probe is not None:
                probe.up.sync = True
            link.writer = DirectWriter(send_now, conn.buffered, failed, name=f"{self.info.call_sid}:model-out:{link.n}")
            link.append = getattr(conn, "append_now", None)
        else:
            send = conn.send if probe is None else probe.up.wrap(conn.send)
            link.writer = Writer(send, failed, name=f"{self.info.call_sid}:model-out:{link.n}", max_queued=MODEL_QUEUE_MAX)

        core, n = self.core, link.n

        def on_event(event: ev.ServerEvent) -> None:
            now = self.clock()
            timed = probe is not None and probe.model_event(event, now)
            if type(event) is ev.AudioDelta and not timed:
                acts = core.on_live_audio(event, now, n)  # type: ignore[arg-type]
                if acts is not None:
                    self._run_audio(acts)
                    return
            acts = core.on_model(event, now, n)
            if not (timed and acts):
                self.perform(acts)
                return
            self._caller_t0 = now
            self.perform(acts)
            self._caller_t0 = None
            probe.down.settle()  # type: ignore[union-attr]

        def on_audio(response_id: str, item_id: str, audio_b64: str, content_index: int) -> bool:
            """An audio delta's fields, read off the wire: the steady state's way (no event object);
            False for the deltas `on_event` must take (sampled ones, a response's first audio)."""
            if probe is not None and not probe.plain_audio():
                return False
            piece = core.live_piece(response_id, item_id, audio_b64, self.clock(), n)
            if piece is None:
                return False
            kind = type(piece)
            if kind is str:  # one PlayAudio of it, as data
                self._play(piece)  # type: ignore[arg-type]
            elif kind is tuple:  # and the mark after it
                self._play_marked(piece)  # type: ignore[arg-type]
            else:
                self._act(piece)  # type: ignore[arg-type]
            self._lane.retime()  # as `_run_audio`
            return True

        reason = "closed by the model"
        try:
            self.perform(self.core.on_model(conn.session_created, self.clock(), link.n))
            listen = getattr(conn, "listen", None)
            if listen is not None:  # events handed over as each frame is read: no task switch per event
                await listen(on_event, on_audio)
            else:
                async for event in conn.events():
                    on_event(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost link is the core's to handle
            reason = str(exc) or type(exc).__name__
        finally:
            link.writer.close()
        if self._links.get(link.n) is link and not link.closing:
            del self._links[link.n]
            self._spawn_closer(_close_quietly(conn), f"model-close:{link.n}")  # the core hears of it now
            log.warning("call %s: model link %d lost: %s", self.info.call_sid, link.n, reason)
            self.perform(self.core.on_model_down(link.n, reason, self.clock()))

    def _link_failed(self, link: _Link, exc: Exception) -> None:
        """A send on the link failed or its queue overflowed: the link is down."""
        if self._links.get(link.n) is not link or link.closing:
            return
        del self._links[link.n]
        link.closing = True
        if link.task is not None:
            link.task.cancel()
        if link.conn is not None:
            self._spawn_closer(_close_quietly(link.conn), f"model-close:{link.n}")
        self.perform(self.core.on_model_down(link.n, f"send failed: {exc}", self.clock()))

    def _close_link(self, n: int) -> None:
        link = self._links.pop(n, None)
        if link is None:
            return
        link.closing = True
        if link.writer is not None:
            writer = link.writer

            async def close_after_drain() -> None:
                await writer.drain(CLOSE_TIMEOUT_S)  # e.g. a last truncate on the old session
                writer.close()
                if link.task is not None:
                    link.task.cancel()
                if link.conn is not None:
                    await _close_quietly(link.conn)
            self._spawn_closer(close_after_drain(), f"model-close:{n}")
        elif link.task is not None:
            link.task.cancel()

    # ------------------------------------------------------------------ telephony side
    async def attach(self, ws: MediaSocket, start: tel.StreamStarted) -> None:
        self.claimed = True
        self.ws = ws
        self._stream_sid = start.stream_sid
        self._encode_audio = self.codec.audio_encoder(start.stream_sid)
        self._encode_mark = self.codec.mark_encoder(start.stream_sid)
        self.info = CallInfo(
            call_sid=self.info.call_sid, stream_sid=start.stream_sid, from_number=self.info.from_number,
            to_number=self.info.to_number, agent=self.info.agent, started_at=self.info.started_at,
        )
        send_now = getattr(ws, "send_now", None)
        if send_now is not None:  # a socket that writes without waiting (voicegw.telephony.fastmedia)
            if self._probe is not None:
                self._probe.down.sync = True
            self._caller = DirectWriter(send_now, ws.buffered, self._caller_failed,  # type: ignore[attr-defined]
                                        name=f"{self.info.call_sid}:caller-out", send_many=getattr(ws, "send_many", None))
        else:
            send = ws.send_text if self._probe is None else self._probe.down.wrap(ws.send_text)
            self._caller = Writer(send, self._caller_failed, name=f"{self.info.call_sid}:caller-out",
                                  timeout_s=SEND_TIMEOUT_S)
        if self._recorder is not None:  # stream time 0: before the held greeting is sent
            self._recorder.start(self.clock())
        self.perform(self.core.on_stream(start, self.clock()))

    def caller_lane(self) -> Callable[[str], bool] | None:
        """The steady-state way for caller frames' payloads (`CallerLane.take`: True when the frame
        was appended, False when it must take `on_frame`), or None when every frame must take
        `on_frame` (the call is being recorded: the recorder takes each frame with its time)."""
        return self._lane.take if self._recorder is None else None

    def on_frame(self, event: tel.StreamEvent) -> None:
        probe = self._probe
        if type(event) is tel.CallerAudio:
            if self._recorder is not None:
                self._recorder.caller(self.clock(), event.timestamp_ms, event.payload_b64)
            if probe is not None and probe.up.due():
                return self._on_frame_timed(event, probe)
            self._run(self.core.on_caller_audio(event, self.clock()))  # a caller frame moves no deadline
            return
        if probe is not None and probe.up.due():
            return self._on_frame_timed(event, probe)
        self.perform(self.core.on_stream(event, self.clock()))

    def _on_frame_timed(self, event: tel.StreamEvent, probe: CallProbe) -> None:
        """A sampled frame: the model command it produces is timed until its send completes."""
        t0 = self.clock()
        acts = self.core.on_stream(event, t0)
        for act in acts:
            if type(act) is ToModel:
                probe.up.track(act.command, t0)  # type: ignore[union-attr]
        self.perform(acts)
        if acts:
            probe.up.settle()

    def _caller_failed(self, exc: Exception) -> None:
        log.info("call %s: telephony send failed: %s", self.info.call_sid, exc)
        self.perform(self.core.on_telephony_lost("telephony_lost", self.clock()))

    def telephony_lost(self, reason: str) -> None:
        """The media stream ended without the core knowing (socket closed, silence timeout)."""
        self.perform(self.core.on_telephony_lost(reason, self.clock()))

    # ------------------------------------------------------------------------- timer
    async def _timer(self) -> None:
        while not self.ended.is_set():
            due = self.core.next_deadline()
            delay = 3600.0 if due is None else max(0.0, due - self.clock())
            self._timer_due = due
            self._timer_wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout=min(delay, 3600.0))
            self.perform(self.core.tick(self.clock()))

    # ------------------------------------------------------------------------ tools, control
    async def _run_tool(self, act: RunTool) -> None:
        ctx = ToolContext(self.info.call_sid, self.info.stream_sid, self.info.from_number, self.info.to_number,
                          self.agent_key)
        try:
            outcome: ToolOutcome = await self.tools.run(ctx, act.name, act.arguments)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a tool runner must not raise; if it does, the model is told
            log.exception("call %s: tool %s crashed", self.info.call_sid, act.name)
            outcome = ToolOutcome(output='{"error": "the tool failed"}', ok=False, error=type(exc).__name__)
        finally:
            self._tool_tasks.pop(act.call_id, None)
        self.perform(self.core.on_tool_done(act.call_id, outcome, self.clock()))

    async def _control(self, act: Control) -> None:
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT_S):
                await self.hooks.call_control(self.info.call_sid, act)
        except Exception as exc:  # noqa: BLE001 - reported in the call log, the call still ends
            log.warning("call %s: %s failed: %s", self.info.call_sid, act.kind, exc)
            self.perform(self.core.on_control_failed(act.kind, str(exc), self.clock()))

    # ----------------------------------------------------------------------- ending
    def answered_by(self, answered_by: str, detection_ms: int | None = None) -> None:
        """Twilio's answering-machine verdict for this outbound call."""
        self.perform(self.core.on_answered_by(answered_by, self.clock(), detection_ms))

    def transfer_status(self, status: str) -> None:
        """The provider's report on the human's leg of a warm transfer."""
        self.perform(self.core.on_transfer_status(status, self.clock()))

    def drain(self, transfer_to: str | None = None) -> None:
        """The gateway is draining and this call outlived it: goodbye, then hang up or transfer."""
        self.perform(self.core.on_drain(self.clock(), transfer_to))

    def shutdown(self, reason: str) -> None:
        """End from outside (gateway shutdown, unclaimed pre-warm). Idempotent."""
        self.perform(self.core.end(reason, self.clock()))

    async def _finish(self) -> None:
        """After EndCall: let control reach the provider, then close everything and report."""
        ended = self.clock()  # the recording ends here, not after the sockets have closed
        try:
            if self._control_tasks:  # a transfer must reach the provider before the stream closes
                await asyncio.wait(self._control_tasks, timeout=CONTROL_TIMEOUT_S + 1)
            if self._caller is not None:
                await self._caller.drain(DRAIN_TIMEOUT_S)
                self._caller.close()
            if self.ws is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await self.ws.close(code=1000)
            if self._linger_s > 0:  # the post-call summary/extraction, off the caller's time
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_s):
                        await self._aside_done.wait()
                if not self._aside_done.is_set():
                    self.perform(self.core.post_call_timed_out(self.clock()))
            for n in list(self._links):
                self._close_link(n)
        finally:
            current = asyncio.current_task()
            tasks = [t for t in list(self._tasks) if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._closers:  # model sockets closing (bounded each by CLOSE_TIMEOUT_S)
                await asyncio.wait(self._closers, timeout=CLOSE_TIMEOUT_S + 1)
            if self._recorder is not None:
                self._finish_recording(ended)
            self.sink.call_ended(self.info.call_sid, self.end_reason or "ended", time.time())
            self.closed.set()
            self.hooks.call_finished(self)

    def _finish_recording(self, ended: float) -> None:
        """Close the recording and tell the call log about it (before the call's end)."""
        try:
            summary = self._recorder.close(ended)  # type: ignore[union-attr]
            if summary is not None:
                for entry in summary.log_entries(self.info.call_sid, time.time()):
                    self.sink.event(self.info.call_sid, entry)
        except Exception:  # noqa: BLE001 - the call's end is reported whatever happens here
            log.exception("call %s: finishing the recording failed", self.info.call_sid)

    async def aclose(self, reason: str = "gateway_shutdown", timeout_s: float = 30.0) -> None:
        """End the call if it is still going and wait until everything is released."""
        self.shutdown(reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.closed.wait()


async def _close_quietly(conn: "RealtimeConnection") -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await conn.close()
