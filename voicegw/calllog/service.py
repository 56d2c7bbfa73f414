"""The call log as the gateway sees it: a non-blocking sink in front of a batching writer.

The audio path calls `call_started`, `event` and `call_ended`; each appends to an in-memory
queue and returns. One writer task drains the queue every `batch_window` seconds (or sooner
when `batch_max` items wait), writes each batch as it happens, and then publishes the stored
events to the live bus (and, with PostgreSQL, to the other replicas). A killed process loses at
most the batch window; its open calls are marked interrupted by the next start.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable, Protocol, Union

from voicegw.calllog.bus import Bus, PgFanout
from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.store import Store, open_store

log = logging.getLogger("voicegw.calllog")

_Open = tuple[str, CallInfo]
_Event = tuple[str, str, CallLogEntry]
_Close = tuple[str, str, str, float]
_Item = Union[_Open, _Event, _Close]

RETRY_DELAYS = (0.2, 1.0, 3.0)


class StoredListener(Protocol):
    """Told after each batch what this process stored (the live bus messages of its own calls,
    never those fanned out from other replicas); closed after the last batch, before the store."""

    def stored(self, msgs: list[dict[str, Any]]) -> None: ...

    async def aclose(self) -> None: ...


class CallLogService:
    """Implements `voicegw.calllog.entries.CallLogSink`. Use from the event loop's thread."""

    def __init__(
        self,
        store: Store,
        *,
        bus: Bus | None = None,
        fanout: PgFanout | None = None,
        max_queue: int = 20000,
        batch_window: float = 0.1,
        batch_max: int = 500,
        heartbeat_s: float = 30.0,
        stale_after_s: float = 600.0,
    ) -> None:
        self.store = store
        self.bus = bus or Bus()
        self.fanout = fanout
        self.max_queue = max_queue
        self.batch_window = batch_window
        self.batch_max = batch_max
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.dropped = 0  # events refused because the queue was full
        self.lost = 0  # items the store kept refusing
        self._queue: collections.deque[_Item] = collections.deque()
        self._events_queued = 0
        self._open: dict[str, float] = {}  # call_sid -> started_at
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._progress = asyncio.Event()
        self._enqueued = 0
        self._written = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._last_heartbeat = time.monotonic()
        self.listeners: list[StoredListener] = []  # e.g. voicegw.events

    # --- CallLogSink: called from the audio path, never wait -------------------------------

    def call_started(self, info: CallInfo) -> None:
        self._open[info.call_sid] = info.started_at or time.time()
        self._push(("open", info))

    def event(self, call_sid: str, event: CallLogEntry) -> None:
        if self._events_queued >= self.max_queue:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("call log queue full: %d events dropped so far (call %s)", self.dropped, call_sid)
            return
        self._events_queued += 1
        self._push(("event", call_sid, event))

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None:
        self._push(("close", call_sid, reason, ended_at))

    def _push(self, item: _Item) -> None:
        self._queue.append(item)
        self._enqueued += 1
        self._wake.set()
        if len(self._queue) >= self.batch_max:
            self._full.set()

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate, mark calls cut off by a previous crash as interrupted, start the writer."""
        await self.store.migrate()
        orphans = await self.store.reclaim_orphans()
        stale = await self.store.mark_interrupted(stale_before=time.time() - self.stale_after_s)
        if orphans or stale:
            log.warning("marked %d call(s) interrupted (left open by a stopped gateway)", orphans + stale)
        if self.fanout is not None:
            await self.fanout.start()
        self._task = asyncio.create_task(self._run(), name="calllog-writer")

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written and published."""
        target = self._enqueued
        deadline = time.monotonic() + timeout
        while self._written < target:
            if self._task is None or self._task.done():
                raise RuntimeError("the call log writer is not running")
            self._progress.clear()
            self._wake.set()
            self._full.set()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("call log flush timed out")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except asyncio.TimeoutError:
                log.error("call log writer did not finish within %.0fs; %d items unwritten", timeout, len(self._queue))
            self._task = None
        for listener in self.listeners:
            try:
                await listener.aclose()
            except Exception:  # the store must still close
                log.exception("call log listener failed to close")
        if self.fanout is not None:
            await self.fanout.aclose()
        await self.store.aclose()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- writer -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            if self._queue and not self._closing and len(self._queue) < self.batch_max:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.batch_window)
            self._wake.clear()
            self._full.clear()
            batch = list(self._queue)
            self._queue.clear()
            self._events_queued = 0
            if batch:
                try:
                    await self._write(batch)
                except Exception:  # the writer must outlive any one bad batch
                    log.exception("call log batch failed")
                self._written += len(batch)
                self._progress.set()
            await self._maybe_heartbeat()
            if self._closing and not self._queue:
                return

    async def _write(self, batch: list[_Item]) -> None:
        msgs: list[dict[str, Any]] = []
        pending: dict[str, list[CallLogEntry]] = {}
        for item in batch:
            if item[0] == "event":
                pending.setdefault(item[1], []).append(item[2])  # type: ignore[misc, arg-type]
                continue
            await self._append(pending, msgs)
            pending = {}
            if item[0] == "open":
                info: CallInfo = item[1]  # type: ignore[assignment]
                if await self._retry(lambda: self.store.open_call(info), 1):
                    msgs.append(_started_msg(info))
            else:
                _, sid, reason, ended_at = item  # type: ignore[misc]
                started = self._open.pop(sid, None)
                if await self._retry(lambda: self.store.close_call(sid, reason, ended_at), 1):
                    msgs.append({
                        "type": "call.ended", "call_sid": sid, "status": "completed", "reason": reason,
                        "ended_at": ended_at, "duration_s": None if started is None else max(0.0, ended_at - started),
                    })
        await self._append(pending, msgs)
        for msg in msgs:
            self.bus.publish(msg)
        for listener in self.listeners:
            try:
                listener.stored(msgs)
            except Exception:  # a listener never costs the call log its batch
                log.exception("call log listener failed")
        if self.fanout is not None and msgs:
            try:
                await self.fanout.notify(msgs)
            except Exception as exc:  # live fan-out is best effort; the store has the record
                log.warning("live fan-out failed: %s", exc)

    async def _append(self, pending: dict[str, list[CallLogEntry]], msgs: list[dict[str, Any]]) -> None:
        for sid, events in pending.items():
            ids: list[int] = []

            async def op(sid: str = sid, events: list[CallLogEntry] = events) -> None:
                ids[:] = await self.store.append_events(sid, events)

            if await self._retry(op, len(events)):
                msgs.extend(
                    {"type": "event", "id": i, "call_sid": sid, "t": e.t, "kind": e.kind, "data": e.data}
                    for i, e in zip(ids, events)
                )

    async def _retry(self, op: Callable[[], Awaitable[Any]], count: int) -> bool:
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                await op()
                return True
            except Exception as exc:
                if delay is None:
                    self.lost += count
                    log.error("call log write failed %d times, %d item(s) lost: %s", attempt + 1, count, exc)
                    return False
                log.warning("call log write failed (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)
        return False

    async def _maybe_heartbeat(self) -> None:
        if time.monotonic() - self._last_heartbeat < self.heartbeat_s:
            return
        self._last_heartbeat = time.monotonic()
        if self._open:
            with contextlib.suppress(Exception):
                await self.store.heartbeat(list(self._open), time.time())


def _started_msg(info: CallInfo) -> dict[str, Any]:
    return {
        "type": "call.started", "call_sid": info.call_sid, "stream_sid": info.stream_sid,
        "from": info.from_number, "to": info.to_number, "agent": info.agent,
        "started_at": info.started_at, "status": "active",
    }


async def open_calllog(url: str, **options: Any) -> CallLogService:
    """A started service on the store at `url`; PostgreSQL adds cross-replica live fan-out."""
    store = open_store(url, owner=options.pop("owner", None))
    fanout = None
    bus = options.pop("bus", None) or Bus()
    if url.startswith(("postgresql://", "postgres://")):
        fanout = PgFanout(url, bus, store.get_event)
    service = CallLogService(store, bus=bus, fanout=fanout, **options)
    try:
        await service.start()
    except BaseException:
        if fanout is not None:
            await fanout.aclose()
        await store.aclose()
        raise
    return service
