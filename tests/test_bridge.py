"""CallBridge's guarantees, in-process: a fake media socket, fake model sessions, a recording call log.

What the bridge promises (DESIGN.md "The call core, precisely"):
  * every action list the core returns is performed to its end, in order, on every path;
  * a failed send never drops the actions after it, and every `Log` reaches the call log;
  * caller-bound and model-bound traffic have independent writers: backpressure on one side never
    delays the other, and Twilio marks keep being read;
  * the call ends exactly once on every path, releases every task it started, and a transfer
    reaches the provider before the media stream is closed.

Nothing here sleeps to synchronise: the fakes poke a `Pulse` whenever they record something, and
tests wait on it (or on the bridge's own events) under `asyncio.timeout` bounds.
"""
from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from voicegw.call import bridge as bridge_mod
from voicegw.call.actions import Action, Log, ToCaller, ToModel
from voicegw.call.bridge import CallBridge
from voicegw.call.callerin import MARK_IDLE_S
from voicegw.call.core import CoreOptions
from voicegw.call.probe import SAMPLE_EVERY
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.realtime import events as ev
from voicegw.realtime.connection import RealtimeClosed, RealtimeConnectError
from voicegw.telephony import base as tel
from voicegw.telephony.twilio import TwilioMediaCodec
from voicegw.tools.contract import ToolContext, ToolOutcome, Transfer

CALL_SID = "CA00000000000000000000000000000042"
STREAM_SID = "MZ00000000000000000000000000000042"
WAIT_S = 2.0  # bound on every wait for something the bridge does at once
CODEC = TwilioMediaCodec()


def ulaw(seed: int, n: int = 160) -> str:
    """A distinct 20 ms mu-law payload (base64), so order can be checked frame by frame."""
    return base64.b64encode(bytes((seed + i) % 256 for i in range(n))).decode("ascii")


def marker(i: int) -> Log:
    return Log(CallLogEntry("test.marker", 0.0, {"marker": i}))


def wire(intent: tel.StreamIntent) -> str:
    return CODEC.encode(STREAM_SID, intent)


# ------------------------------------------------------------------------------------- fakes
class Pulse:
    """Set whenever a fake records something; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def poke(self) -> None:
        self._changed.set()

    async def until(self, pred: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not pred():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g}s waiting for: {what}") from None


class FakeMediaSocket:
    """The provider's media WebSocket: records sent frames; fails on the Nth send, or blocks."""

    def __init__(self, pulse: Pulse, timeline: list[str]) -> None:
        self.pulse = pulse
        self.timeline = timeline
        self.frames: list[str] = []
        self.attempts = 0
        self.fail_on: int | None = None
        self.fail_with: Exception = ConnectionError("media socket gone")
        self.gate: asyncio.Event | None = None  # un-set: sends block (backpressure)
        self.stuck: list[str] = []
        self.closes: list[int] = []

    def block(self) -> None:
        self.gate = asyncio.Event()

    def unblock(self) -> None:
        assert self.gate is not None
        self.gate.set()

    async def send_text(self, data: str) -> None:
        self.attempts += 1
        if self.fail_on is not None and self.attempts == self.fail_on:
            self.pulse.poke()
            raise self.fail_with
        if self.gate is not None and not self.gate.is_set():
            self.stuck.append(data)
            self.pulse.poke()
            await self.gate.wait()
        self.frames.append(data)
        self.timeline.append("ws.send")
        self.pulse.poke()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closes.append(code)
        self.timeline.append("ws.close")
        self.pulse.poke()

    def marks(self) -> list[str]:
        return [json.loads(f)["mark"]["name"] for f in self.frames if json.loads(f)["event"] == "mark"]


class DirectMediaSocket(FakeMediaSocket):
    """picows' media socket (voicegw.telephony.fastmedia): writes without waiting, one frame or
    several at once; `writes` is what each write held (a write is a system call)."""

    def __init__(self, pulse: Pulse, timeline: list[str]) -> None:
        super().__init__(pulse, timeline)
        self.writes: list[list[str]] = []

    def send_now(self, text: str) -> None:
        self.send_many([text])

    def send_many(self, texts: list[str]) -> None:
        self.writes.append(list(texts))
        self.frames += texts
        self.pulse.poke()

    def buffered(self) -> int:
        return 0


class FakeModelConnection:
    """The RealtimeConnection surface the bridge uses; events come from a queue the test feeds."""

    def __init__(self, n: int, pulse: Pulse) -> None:
        self.n = n
        self.pulse = pulse
        self.session_created = ev.SessionStarted(session_id=f"sess_{n}", session={})
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: list[ev.ClientCommand] = []
        self.attempts = 0
        self.fail_on: int | None = None
        self.fail_with: Exception = RealtimeClosed(1006, "send failed")
        self.gate: asyncio.Event | None = None
        self.stuck: list[ev.ClientCommand] = []
        self.closes = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def block(self) -> None:
        self.gate = asyncio.Event()

    def unblock(self) -> None:
        assert self.gate is not None
        self.gate.set()

    async def send(self, cmd: ev.ClientCommand) -> None:
        if self._closed:
            raise RealtimeClosed(None, "already closed")
        self.attempts += 1
        if self.fail_on is not None and self.attempts == self.fail_on:
            self.pulse.poke()
            raise self.fail_with
        if self.gate is not None and not self.gate.is_set():
            self.stuck.append(cmd)
            self.pulse.poke()
            await self.gate.wait()
        self.sent.append(cmd)
        self.pulse.poke()

    async def events(self):  # type: ignore[no-untyped-def]
        while True:
            item = await self.inbox.get()
            if item is None:
                return  # the model closed the session
            if isinstance(item, BaseException):
                raise item  # the connection was lost
            yield item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closes += 1
        self._closed = True
        self.inbox.put_nowait(None)
        self.pulse.poke()

    # --- test side
    def feed(self, *events: Any) -> None:
        for e in events:
            self.inbox.put_nowait(e)

    def appended(self) -> list[str]:
        return [c.audio_b64 for c in self.sent if type(c) is ev.AppendAudio]

    def configured(self) -> bool:
        return any(type(c) is ev.UpdateSession for c in self.sent)


class ListeningModelConnection(FakeModelConnection):
    """A connection with `listen`, as RealtimeConnection has: audio deltas go to the bridge's
    `on_audio` first (the steady state's way), the rest and the deltas it declines to `on_event`."""

    async def listen(self, on_event: Callable[[Any], None],
                     on_audio: Callable[[str, str, str, int], bool] | None = None) -> None:
        async for e in self.events():
            if type(e) is ev.AudioDelta and on_audio is not None \
                    and on_audio(e.response_id, e.item_id, e.audio_b64, e.content_index):
                continue
            on_event(e)


class FakeModelService:
    """`open_model`: hands out a new fake connection per call, or raises what it was told to."""

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        self.conns: list[FakeModelConnection] = []
        self.opens = 0
        self.failures: list[Exception] = []
        self.hang: asyncio.Event | None = None  # un-set: opening never completes (a slow connect)
        self.timeouts: list[float | None] = []  # the per-attempt timeout each open was given
        self.kind: type[FakeModelConnection] = FakeModelConnection

    async def open(self, timeout_s: float | None) -> FakeModelConnection:
        self.opens += 1
        self.timeouts.append(timeout_s)
        self.pulse.poke()
        if self.hang is not None:
            await self.hang.wait()
        if self.failures:
            raise self.failures.pop(0)
        conn = self.kind(len(self.conns) + 1, self.pulse)
        self.conns.append(conn)
        return conn


class RecordingSink:
    """CallLogSink that records everything; can be told to raise on given markers (after recording)."""

    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        self.started: list[CallInfo] = []
        self.entries: list[CallLogEntry] = []
        self.ended: list[tuple[str, str]] = []
        self.entries_at_end: int | None = None  # how many entries had arrived when the record closed
        self.raise_on: set[int] = set()

    def call_started(self, info: CallInfo) -> None:
        self.started.append(info)

    def event(self, call_sid: str, event: CallLogEntry) -> None:
        assert call_sid == CALL_SID
        self.entries.append(event)
        self.pulse.poke()
        if event.kind == "test.marker" and event.data["marker"] in self.raise_on:
            raise RuntimeError(f"call log refused marker {event.data['marker']}")

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None:
        self.ended.append((call_sid, reason))
        self.entries_at_end = len(self.entries)
        self.pulse.poke()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.entries]

    def markers(self) -> list[int]:
        return [e.data["marker"] for e in self.entries if e.kind == "test.marker"]

    def codes(self) -> list[str]:
        return [e.data.get("code", "") for e in self.entries if e.kind == "error"]

    def of(self, kind: str) -> list[CallLogEntry]:
        return [e for e in self.entries if e.kind == kind]


class FakeTools:
    def __init__(self, outcome: ToolOutcome | None = None) -> None:
        self.outcome = outcome or ToolOutcome(output='{"ok": true}')
        self.runs: list[tuple[ToolContext, str, str]] = []

    def declarations(self) -> tuple[ev.ToolDecl, ...]:
        return ()

    def filler(self, name: str) -> str | None:
        return None

    async def run(self, ctx: ToolContext, name: str, arguments: str) -> ToolOutcome:
        self.runs.append((ctx, name, arguments))
        return self.outcome


class RecordingHooks:
    """CallHooks: call control takes a while (a REST round trip, simulated by yielding)."""

    def __init__(self, pulse: Pulse, timeline: list[str], tools: FakeTools) -> None:
        self.pulse = pulse
        self.timeline = timeline
        self.tools = tools
        self.controls: list[Any] = []
        self.finished: list[CallBridge] = []
        self.control_yields = 50
        self.control_error: Exception | None = None

    def toolset_for(self, agent_key: str) -> FakeTools:
        return self.tools

    async def call_control(self, call_sid: str, control: Any) -> None:
        self.timeline.append(f"control.start:{control.kind}")
        for _ in range(self.control_yields):
            await asyncio.sleep(0)
        self.controls.append(control)
        self.timeline.append(f"control.done:{control.kind}")
        self.pulse.poke()
        if self.control_error is not None:
            raise self.control_error

    def call_finished(self, call: CallBridge) -> None:
        self.finished.append(call)
        self.pulse.poke()


class Call:
    """One CallBridge wired to the fakes."""

    def __init__(self, tools: FakeTools | None = None, clock: Callable[[], float] | None = None, **options: Any) -> None:
        self.pulse = Pulse()
        self.timeline: list[str] = []
        self.ws = FakeMediaSocket(self.pulse, self.timeline)
        self.model = FakeModelService(self.pulse)
        self.sink = RecordingSink(self.pulse)
        self.tools = tools or FakeTools()
        self.hooks = RecordingHooks(self.pulse, self.timeline, self.tools)
        opts = CoreOptions(session_config=ev.SessionConfig(audio_format="g711_ulaw"), audio_mode="g711_ulaw", **options)
        info = CallInfo(call_sid=CALL_SID, from_number="+15550001", to_number="+15550002", agent="front")
        self.bridge = CallBridge(info, "front", opts, TwilioMediaCodec(), self.tools, self.sink,  # type: ignore[arg-type]
                                 self.hooks, self.model.open, **({} if clock is None else {"clock": clock}))  # type: ignore[arg-type]

    @property
    def conn(self) -> FakeModelConnection:
        return self.model.conns[-1]

    async def start(self, attach: bool = True) -> None:
        self.bridge.begin()
        await self.pulse.until(lambda: self.model.conns and self.model.conns[0].configured(),
                               "model link 1 open and configured")
        if attach:
            await self.bridge.attach(self.ws, tel.StreamStarted(STREAM_SID, CALL_SID))

    async def wait_closed(self, timeout: float = WAIT_S) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.bridge.closed.wait()
        except TimeoutError:
            raise AssertionError(f"the call did not close within {timeout:g}s") from None
        await self.pulse.until(lambda: self.hooks.finished, "hooks.call_finished")
        await assert_no_call_tasks()

    def ended_entries(self) -> list[CallLogEntry]:
        return self.sink.of("call.ended")


async def assert_no_call_tasks() -> None:
    """No task named after the call is left running (cancelled ones get a moment to unwind)."""
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and t.get_name().startswith(CALL_SID)]
    if left:
        await asyncio.wait(left, timeout=0.5)
    running = sorted(t.get_name() for t in left if not t.done())
    assert not running, f"tasks still running after the call closed: {running}"


def assert_ended_once(call: Call, reason: str) -> None:
    assert call.sink.ended == [(CALL_SID, reason)]
    assert call.sink.entries_at_end == len(call.sink.entries)  # nothing logged after the record closed
    assert [e.data["reason"] for e in call.ended_entries()] == [reason]
    assert call.bridge.end_reason == reason
    assert call.bridge.closed.is_set()
    assert call.hooks.finished == [call.bridge]


# --------------------------------------------------------------- 1. a failed caller send
async def test_failed_caller_send_drops_no_action_after_it() -> None:
    call = Call()
    await call.start()
    conn = call.conn
    # an agent answer in progress whose transcript is not final: ending the call must log it
    conn.feed(ev.ResponseStarted("r1"), ev.OutputItemAdded("r1", "i1", "message"),
              ev.TranscriptDelta("r1", "i1", "Your table for two is booked"),
              ev.ModelError("events above were read", code="test_sync"))
    await call.pulse.until(lambda: "test_sync" in call.sink.codes(), "model events read")
    call.ws.fail_on = 1  # the very first frame to the caller fails

    acts: list[Action] = [ToCaller(tel.PlayAudio(ulaw(1))), marker(1), ToCaller(tel.PlayMark("t1")), marker(2),
                          ToModel(ev.AppendAudio(ulaw(2)), 1), marker(3)]
    call.bridge.perform(acts)
    await call.wait_closed()

    kinds = call.sink.kinds()
    assert call.sink.markers() == [1, 2, 3]
    after = kinds[kinds.index("test.marker"):]
    assert after[-2:] == ["transcript", "call.ended"], after
    agent = [e.data for e in call.sink.of("transcript") if e.data["role"] == "agent"]
    assert agent == [{"role": "agent", "item_id": "i1", "text": "Your table for two is booked", "cut": False}]
    assert_ended_once(call, "telephony_lost")
    assert call.ws.frames == []  # the dead socket took the frame; the mark behind it went nowhere
    assert call.ws.closes == [1000]
    assert conn.appended() == [ulaw(2)]  # the model-bound action after the failed send still went out
    assert conn.closed


# ------------------------------------------------------ 2. any list, any failure: property
FAILURES = {
    "closed": lambda: RealtimeClosed(1006, "connection lost"),
    "reset": lambda: ConnectionResetError("connection reset by peer"),
    "timeout": lambda: TimeoutError(),  # e.g. a send that gave up on flow control
}


async def _perform_with_failure(kinds: list[str], fail_side: str | None, fail_at: int, fail_kind: str,
                                raise_on: set[int]) -> None:
    call = Call()
    await call.start()
    conn1 = call.conn
    actions: list[Action] = []
    intents: list[tel.StreamIntent] = []
    appends: list[str] = []
    markers: list[int] = []
    for i, kind in enumerate(kinds):
        if kind == "audio":
            intents.append(tel.PlayAudio(ulaw(i)))
            actions.append(ToCaller(intents[-1]))
        elif kind == "mark":
            intents.append(tel.PlayMark(f"mark-{i}"))
            actions.append(ToCaller(intents[-1]))
        elif kind == "append":
            appends.append(ulaw(100 + i))
            actions.append(ToModel(ev.AppendAudio(appends[-1]), 1))
        else:
            markers.append(i)
            actions.append(marker(i))
    ws_fails = fail_side == "ws" and fail_at <= len(intents)
    model_fails = fail_side == "model" and fail_at <= len(appends)
    if fail_side == "ws":
        call.ws.fail_on, call.ws.fail_with = fail_at, FAILURES[fail_kind]()
    elif fail_side == "model":
        conn1.fail_on, conn1.fail_with = conn1.attempts + fail_at, FAILURES[fail_kind]()
    call.sink.raise_on = {m for m in markers if m in raise_on}

    call.bridge.perform(actions)  # never raises, whatever fails

    if model_fails:  # the lost link comes back to the core as an event, and the call goes on
        await call.pulse.until(lambda: "model_lost" in call.sink.codes(), "the failed model send reported")
        await call.pulse.until(lambda: len(call.model.conns) == 2 and call.conn.configured(), "model link 2")
    if not ws_fails:
        call.bridge.shutdown("gateway_shutdown")
    await call.wait_closed()

    assert call.sink.markers() == markers
    kinds_logged = call.sink.kinds()
    assert kinds_logged[-1] == "call.ended"
    sent = fail_at - 1 if ws_fails else len(intents)
    assert call.ws.frames == [wire(i) for i in intents[:sent]]
    taken = fail_at - 1 if model_fails else len(appends)
    assert conn1.appended() == appends[:taken]
    assert_ended_once(call, "telephony_lost" if ws_fails else "gateway_shutdown")
    assert all(c.closed for c in call.model.conns)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(["audio", "mark", "append", "log"]), min_size=1, max_size=24),
       fail_side=st.sampled_from([None, "ws", "model"]),
       fail_at=st.integers(min_value=1, max_value=12),
       fail_kind=st.sampled_from(sorted(FAILURES)),
       raise_on=st.sets(st.integers(min_value=0, max_value=23), max_size=3))
# the cases that matter most, always run: a failure with actions of every kind behind it
@example(["audio", "log", "mark", "append", "log"], "ws", 1, "reset", set())
@example(["append", "log", "audio", "append", "log"], "model", 1, "closed", set())
@example(["append", "log", "append", "audio"], "model", 1, "timeout", set())
@example(["log", "audio", "log", "append", "log"], None, 1, "closed", {0, 2})
def test_every_action_performed_whatever_fails(kinds: list[str], fail_side: str | None, fail_at: int,
                                               fail_kind: str, raise_on: set[int]) -> None:
    asyncio.run(_perform_with_failure(kinds, fail_side, fail_at, fail_kind, raise_on))


async def test_model_send_raising_timeout_error_is_a_lost_link() -> None:
    """The model writer has no batch deadline of its own: a TimeoutError out of `send` is a failed
    send like any other (reported at once), not a crash of the writer task."""
    call = Call()
    await call.start()
    conn1 = call.conn
    conn1.fail_on, conn1.fail_with = conn1.attempts + 1, TimeoutError()
    call.bridge.on_frame(tel.CallerAudio(ulaw(1), 20))
    await call.pulse.until(lambda: "model_lost" in call.sink.codes(), "the failed model send reported")
    await call.pulse.until(lambda: len(call.model.conns) == 2 and call.conn.configured(), "model link 2")
    call.bridge.on_frame(tel.CallerAudio(ulaw(2), 40))
    await call.pulse.until(lambda: ulaw(2) in call.conn.appended(), "caller audio on link 2")
    call.bridge.shutdown("gateway_shutdown")
    await call.wait_closed()


# ------------------------------------------------------------------- 3. independent writers
async def test_stuck_model_never_delays_the_caller_or_mark_reading() -> None:
    call = Call()
    await call.start()
    conn = call.conn
    conn.block()
    call.bridge.on_frame(tel.CallerAudio(ulaw(1), 20))
    await call.pulse.until(lambda: conn.stuck, "a model send stuck on flow control")

    # the model speaks meanwhile: its audio reaches the caller, the chunk followed by its mark
    # (one mark per ~100 ms of audio, or when the item's audio ends)
    conn.feed(ev.ResponseStarted("r1"), ev.OutputItemAdded("r1", "i1", "message"),
              ev.AudioDelta("r1", "i1", ulaw(10)), ev.AudioDelta("r1", "i1", ulaw(11)), ev.AudioDone("r1", "i1"))
    await call.pulse.until(lambda: len(call.ws.frames) == 3, "agent audio and its mark reach the caller")
    marks = call.ws.marks()
    assert call.ws.frames == [wire(tel.PlayAudio(ulaw(10))), wire(tel.PlayAudio(ulaw(11))),
                              wire(tel.PlayMark(marks[0]))]
    # marks coming back are taken at once: the playout is acknowledged while the model is stuck
    assert call.bridge.core.playout.busy
    call.bridge.on_frame(tel.MarkPlayed(marks[-1]))
    assert not call.bridge.core.playout.busy
    # caller audio keeps being taken, and actions performed directly still reach the caller
    call.bridge.on_frame(tel.CallerAudio(ulaw(2), 40))
    call.bridge.perform([ToCaller(tel.PlayMark("direct"))])
    await call.pulse.until(lambda: len(call.ws.frames) == 4, "a direct ToCaller while the model is stuck")
    assert call.ws.frames[-1] == wire(tel.PlayMark("direct"))
    assert conn.appended() == []

    conn.unblock()  # flow control lifts: what waited goes out, in order
    await call.pulse.until(lambda: conn.appended() == [ulaw(1), ulaw(2)], "queued caller audio sent in order")
    call.bridge.shutdown("gateway_shutdown")
    await call.wait_closed()


async def test_stuck_caller_never_delays_the_model() -> None:
    call = Call()
    await call.start()
    conn = call.conn
    call.ws.block()
    call.bridge.perform([ToCaller(tel.PlayAudio(ulaw(10))), ToCaller(tel.PlayMark("t1"))])
    await call.pulse.until(lambda: call.ws.stuck, "a caller send stuck on flow control")

    frames = [ulaw(i) for i in range(1, 6)]
    for i, f in enumerate(frames):
        call.bridge.on_frame(tel.CallerAudio(f, 20 * (i + 1)))
    await call.pulse.until(lambda: conn.appended() == frames, "caller audio reaches the model")
    # model events keep being read and logged while the caller's socket is stuck
    conn.feed(ev.AudioDelta("r1", "i1", ulaw(11)), ev.AudioDone("r1", "i1"),
              ev.ModelError("still reading", code="test_sync"))
    await call.pulse.until(lambda: "test_sync" in call.sink.codes(), "model events read")

    call.ws.unblock()
    await call.pulse.until(lambda: len(call.ws.frames) == 4, "queued caller frames sent")
    assert call.ws.frames[:2] == [wire(tel.PlayAudio(ulaw(10))), wire(tel.PlayMark("t1"))]
    assert call.ws.frames[2] == wire(tel.PlayAudio(ulaw(11)))
    call.bridge.shutdown("gateway_shutdown")
    await call.wait_closed()


async def test_ending_with_both_peers_stuck_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge_mod, "DRAIN_TIMEOUT_S", 0.05)
    monkeypatch.setattr(bridge_mod, "CLOSE_TIMEOUT_S", 0.05)
    call = Call()
    await call.start()
    conn = call.conn
    call.ws.block()
    conn.block()
    call.bridge.perform([ToCaller(tel.PlayAudio(ulaw(10))), ToModel(ev.AppendAudio(ulaw(1)), 1), marker(1)])
    await call.pulse.until(lambda: call.ws.stuck and conn.stuck, "both directions stuck")
    call.bridge.shutdown("gateway_shutdown")
    await call.wait_closed(timeout=WAIT_S)
    assert_ended_once(call, "gateway_shutdown")
    assert call.sink.markers() == [1]
    assert conn.closed and call.ws.closes == [1000]


# ------------------------------------------------------------------------ 4. model link loss
@pytest.mark.parametrize("loss", ["lost", "closed_by_model"])
async def test_lost_model_link_is_reopened_and_the_call_goes_on(loss: str) -> None:
    call = Call()
    await call.start()
    conn1 = call.conn
    call.bridge.on_frame(tel.CallerAudio(ulaw(1), 20))
    await call.pulse.until(lambda: conn1.appended() == [ulaw(1)], "caller audio on link 1")

    conn1.feed(RealtimeClosed(1006, "connection lost") if loss == "lost" else None)
    await call.pulse.until(lambda: len(call.model.conns) == 2 and call.conn.configured(), "model link 2 configured")
    conn2 = call.conn
    assert call.model.opens == 2
    assert conn1.closed
    lost = [e.data for e in call.sink.of("error") if e.data.get("code") == "model_lost"]
    assert len(lost) == 1 and lost[0]["link"] == 1
    assert [(e.data["ok"], e.data["link"]) for e in call.sink.of("reconnect")] == [(True, 2)]

    call.bridge.on_frame(tel.CallerAudio(ulaw(2), 40))
    await call.pulse.until(lambda: ulaw(2) in conn2.appended(), "caller audio on link 2")
    assert ulaw(2) not in conn1.appended()
    conn2.feed(ev.AudioDelta("r9", "i9", ulaw(12)))
    await call.pulse.until(lambda: wire(tel.PlayAudio(ulaw(12))) in call.ws.frames, "link 2 audio to the caller")

    call.bridge.shutdown("gateway_shutdown")
    await call.wait_closed()
    assert_ended_once(call, "gateway_shutdown")
    assert conn2.closed
    assert call.sink.of("call.ended")[0].data["reconnects"] == 1


@pytest.mark.parametrize("retryable", [True, False])
async def test_model_that_fails_to_open(retryable: bool) -> None:
    call = Call()
    call.model.failures.append(RealtimeConnectError("HTTP 503", url="wss://model.test", retryable=retryable))
    call.bridge.begin()
    if retryable:  # the core retries at once; the next session serves the call
        await call.pulse.until(lambda: call.model.conns and call.conn.configured(), "model link 2 configured")
        assert call.model.opens == 2
        await call.bridge.attach(call.ws, tel.StreamStarted(STREAM_SID, CALL_SID))
        call.bridge.on_frame(tel.CallerAudio(ulaw(1), 20))
        await call.pulse.until(lambda: call.conn.appended() == [ulaw(1)], "caller audio on link 2")
        call.bridge.shutdown("gateway_shutdown")
        await call.wait_closed()
        assert_ended_once(call, "gateway_shutdown")
    else:  # a first-connect failure that cannot heal: the model is unavailable for this call
        await call.wait_closed()
        assert_ended_once(call, "model_unavailable")
        assert call.model.opens == 1
        assert "model_unavailable" in call.sink.codes()
    assert "model_connect_failed" in call.sink.codes()
    # each attempt was given what was left of the 4 s connect budget
    assert call.model.timeouts[0] == 4.0 and all(t is not None and 0 < t <= 4.0 for t in call.model.timeouts)


# ----------------------------------------------------------------- 5. every way out, once
@pytest.mark.parametrize("path", ["gateway_shutdown", "telephony_lost", "caller_hangup", "stream_never_started"])
async def test_call_ends_once_on_every_outside_path(path: str) -> None:
    call = Call()
    await call.start(attach=path != "stream_never_started")
    conn = call.conn
    if path == "gateway_shutdown":
        call.bridge.shutdown("gateway_shutdown")
        call.bridge.shutdown("gateway_shutdown")
    elif path == "telephony_lost":
        call.bridge.telephony_lost("telephony_lost")
        call.bridge.shutdown("gateway_shutdown")  # the gateway stopping meanwhile changes nothing
    elif path == "caller_hangup":
        call.bridge.on_frame(tel.StreamStopped())
        call.bridge.telephony_lost("telephony_lost")  # the socket closes right after the stop frame
    else:
        await call.bridge.aclose("stream_never_started", timeout_s=WAIT_S)
    await call.wait_closed()

    reason = {"caller_hangup": "caller_hangup"}.get(path, path)
    assert_ended_once(call, reason)
    assert conn.closes >= 1 and conn.closed
    if path == "stream_never_started":
        assert call.ws.closes == [] and call.ws.attempts == 0
    else:
        assert call.ws.closes == [1000]
    assert call.model.opens == 1
    # after the end, a late event changes nothing and raises nothing
    call.bridge.telephony_lost("telephony_lost")
    call.bridge.on_frame(tel.CallerAudio(ulaw(1), 20))
    assert call.sink.ended == [(CALL_SID, reason)]
    await assert_no_call_tasks()


async def test_unclaimed_prewarm_while_the_model_is_still_opening() -> None:
    call = Call()
    call.model.hang = asyncio.Event()
    call.bridge.begin()
    await call.pulse.until(lambda: call.model.opens == 1, "model link 1 opening")
    await call.bridge.aclose("stream_never_started", timeout_s=WAIT_S)
    await call.wait_closed()
    assert_ended_once(call, "stream_never_started")
    assert call.model.conns == [] and call.ws.attempts == 0


# ---------------------------------------------------------------------------- 6. transfer
@pytest.mark.parametrize("control_fails", [False, True])
async def test_transfer_reaches_the_provider_before_the_stream_closes(control_fails: bool) -> None:
    tools = FakeTools(ToolOutcome(output='{"transferring": true}', effect=Transfer("+15550100", "Connecting you")))
    call = Call(tools=tools)
    if control_fails:
        call.hooks.control_error = RuntimeError("provider said 500")
    await call.start()
    conn = call.conn
    conn.feed(ev.ResponseStarted("r1"),
              ev.FunctionCall("r1", "fc1", "call1", "transfer_to_reception", "{}"),
              ev.ResponseDone("r1", "completed"))
    # the tool runs; the core asks the model for the goodbye, which the model then gives
    await call.pulse.until(lambda: any(type(c) is ev.CreateResponse for c in conn.sent), "goodbye requested")
    assert [r[1] for r in tools.runs] == ["transfer_to_reception"]
    conn.feed(ev.ResponseStarted("r2"), ev.ResponseDone("r2", "completed"))
    await call.wait_closed()

    assert_ended_once(call, "transferred")
    assert [(c.kind, c.target) for c in call.hooks.controls] == [("transfer", "+15550100")]
    tl = call.timeline
    assert "ws.close" in tl and "control.done:transfer" in tl
    assert tl.index("control.start:transfer") < tl.index("control.done:transfer") < tl.index("ws.close"), tl
    if control_fails:  # the failure lands in the call log before the call's record is closed
        failed = [e.data["message"] for e in call.sink.of("error") if e.data.get("code") == "control_failed"]
        assert failed == ["transfer failed: provider said 500"]
        assert call.sink.entries_at_end == len(call.sink.entries)


# ----------------------------------------------------- caller frames in the call's steady state
class LatencySamples:
    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        self.added: list[str] = []

    def added_latency(self, direction: str, seconds: float) -> None:
        self.added.append(direction)
        self.pulse.poke()

    def model_first_audio(self, kind: str, seconds: float) -> None:
        pass


async def test_the_caller_lane_writes_steady_state_frames_in_order_and_declines_the_rest() -> None:
    """The lane (the media socket's way for a media payload) appends in order on the live session.
    It is re-armed after every call into the core: it declines an outbound call's frames until the
    answering-machine verdict (they take `on_frame` and reach no model), takes them after a human
    answered, and declines them again once the call ended."""
    call = Call(await_answer=True)
    await call.start()
    lane = call.bridge.caller_lane()
    assert lane is not None
    held = ulaw(99)
    assert lane(held) is False  # "Hello?" before the verdict
    call.bridge.on_frame(tel.CallerAudio(held, 20))
    call.bridge.answered_by("human")
    sent = [ulaw(i) for i in range(5)]
    assert all(lane(p) for p in sent)
    await call.pulse.until(lambda: call.conn.appended() == sent, "the lane's frames appended in order")
    call.bridge.telephony_lost("caller_hangup")
    assert lane(ulaw(6)) is False
    await call.wait_closed()
    assert call.model.conns[0].appended() == sent


async def test_the_caller_lane_is_rearmed_by_agent_audio_and_leaves_the_due_mark_to_the_core() -> None:
    """Agent audio opens a playout chunk whose mark falls due after MARK_IDLE_S without audio: the
    lane takes frames until then and declines the first frame after, which takes `on_frame`; the
    core sends the mark, and the lane takes the frames after that again."""
    now = [1000.0]
    call = Call(clock=lambda: now[0])
    await call.start()
    lane = call.bridge.caller_lane()
    assert lane is not None
    call.conn.feed(ev.ResponseStarted("r1"), ev.OutputItemAdded("r1", "i1", "message", "assistant"),
                   ev.AudioDelta("r1", "i1", ulaw(1, 480)))  # 60 ms: under MARK_EVERY_MS, no mark yet
    await call.pulse.until(lambda: len(call.ws.frames) == 1, "the agent's audio at the caller")
    assert lane(ulaw(2)) is True
    now[0] += MARK_IDLE_S
    idle = ulaw(3)
    assert lane(idle) is False and call.ws.marks() == []
    call.bridge.on_frame(tel.CallerAudio(idle, 40))
    await call.pulse.until(lambda: len(call.ws.marks()) == 1, "the chunk's mark, sent by the core")
    assert lane(ulaw(4)) is True
    await call.pulse.until(lambda: call.conn.appended() == [ulaw(2), idle, ulaw(4)], "every frame appended, in order")
    call.bridge.telephony_lost("caller_hangup")
    await call.wait_closed()


async def test_the_caller_lane_leaves_sampled_frames_to_the_timed_way_and_recorded_calls_to_on_frame() -> None:
    call = Call()
    samples = LatencySamples(call.pulse)
    call.bridge = CallBridge(call.bridge.info, "front", call.bridge.core.opts, TwilioMediaCodec(), call.tools,
                             call.sink, call.hooks, call.model.open, latency=samples)  # type: ignore[arg-type]
    await call.start()
    lane = call.bridge.caller_lane()
    assert lane is not None
    declined = []
    for second in (1, 2):  # one sample in flight at a time: the first is sent before the next is taken
        for i in range((second - 1) * SAMPLE_EVERY, second * SAMPLE_EVERY):
            if not lane(ulaw(i)):
                declined.append(i)
                call.bridge.on_frame(tel.CallerAudio(ulaw(i), 20 * i))
        await call.pulse.until(lambda: samples.added.count("to_model") == second, f"sample {second} timed")
    assert declined == [SAMPLE_EVERY - 1, 2 * SAMPLE_EVERY - 1]  # one frame in SAMPLE_EVERY is timed
    await call.pulse.until(lambda: len(call.conn.appended()) == 2 * SAMPLE_EVERY, "every frame appended")
    assert call.conn.appended() == [ulaw(i) for i in range(2 * SAMPLE_EVERY)]
    call.bridge.telephony_lost("caller_hangup")
    await call.wait_closed()
    recorded = CallBridge(call.bridge.info, "front", call.bridge.core.opts, TwilioMediaCodec(), call.tools,
                          call.sink, call.hooks, call.model.open, recorder=object())  # type: ignore[arg-type]
    assert recorded.caller_lane() is None  # the recorder takes every caller frame with its timestamp


async def answered_on_picows(deltas: list[str], listening: bool = False) -> tuple[Call, DirectMediaSocket]:
    """A started call on a picows-like caller socket whose model answers with `deltas`; `listening`:
    the model link hands deltas to the bridge's `on_audio` first, as the real link does."""
    call = Call()
    if listening:
        call.model.kind = ListeningModelConnection
    ws = call.ws = DirectMediaSocket(call.pulse, call.timeline)
    await call.start()
    call.conn.feed(ev.ResponseStarted("r1"), ev.OutputItemAdded("r1", "i1", "message", "assistant"),
                   *[ev.AudioDelta("r1", "i1", d) for d in deltas])
    return call, ws


async def test_an_action_lists_frames_for_the_caller_go_out_in_one_write() -> None:
    """Audio and the mark that closes its chunk are written together: one system call, one TCP
    segment. Audio alone is written as it comes, and the order of frames is the core's."""
    call, ws = await answered_on_picows([ulaw(i, 320) for i in range(5)])  # 40 ms each
    await call.pulse.until(lambda: sum(map(len, ws.writes)) == 6, "five pieces of audio and a mark")
    kinds = [[json.loads(f)["event"] for f in write] for write in ws.writes]
    assert kinds == [["media"], ["media"], ["media", "mark"], ["media"], ["media"]]  # 120 ms: the chunk's mark
    assert [json.loads(f)["media"]["payload"] for f in ws.frames if "media" in f] == [ulaw(i, 320) for i in range(5)]
    call.bridge.telephony_lost("caller_hangup")
    await call.wait_closed()


async def test_a_delta_that_closes_its_chunk_goes_out_with_its_mark_in_one_write() -> None:
    """The steady state's way (`on_audio`): 200 ms deltas each close a playout chunk; each is one
    write of its audio and its mark, the marks come back and the accounting follows them."""
    call, ws = await answered_on_picows([ulaw(i, 1600) for i in range(4)], listening=True)  # 200 ms each
    await call.pulse.until(lambda: sum(map(len, ws.writes)) == 8, "four deltas and their marks")
    kinds = [[json.loads(f)["event"] for f in write] for write in ws.writes]
    assert kinds == [["media", "mark"]] * 4
    assert [json.loads(w[0])["media"]["payload"] for w in ws.writes] == [ulaw(i, 1600) for i in range(4)]
    marks = [json.loads(w[1])["mark"]["name"] for w in ws.writes]
    assert len(set(marks)) == 4
    assert call.bridge.core.playout.queued_ms() == 800.0
    for m in marks[:2]:
        call.bridge.on_frame(tel.MarkPlayed(m))
    assert call.bridge.core.playout.queued_ms() == 400.0  # two chunks acknowledged
    call.bridge.telephony_lost("caller_hangup")
    await call.wait_closed()
