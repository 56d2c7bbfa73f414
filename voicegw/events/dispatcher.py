"""Turning what the call log stored into events, and delivering them in the background.

The dispatcher listens to the call log writer (`CallLogService.listeners`): after each batch it
is handed the messages of what this process stored, never those of other replicas, so each
process creates the events of its own calls. Nothing here runs on a call's audio path: `stored`
only appends to a bounded backlog, and two background tasks do the rest.

* The *builder* turns backlog messages into rows of the delivery table: `call.started` when a
  call's row is stored, `recording.ready` when that entry is, and `call.ended` once the call's end
  is stored, from the call record read back from the store (so post-call summaries, extraction and
  the recording, written before the end, are in it).
* The *sweeper* claims due rows (new ones, retries, and rows other processes left behind) and runs
  at most `concurrency` attempts at a time. It sleeps until the earliest row it could claim is due,
  woken early by new rows and finished attempts; no per-row timers are kept.

On close (the call log's own close, after its last batch) the backlog is built, attempts in flight
get a short grace, and this process's pending rows are released so that the next process to start
(or another one running) delivers them.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import urlparse

from voicegw.calllog.service import CallLogService
from voicegw.calllog.store import Store
from voicegw.config import Settings
from voicegw.events import payloads
from voicegw.events.sender import RETRY_DELAYS, Sender, verdict
from voicegw.events.signing import Signer, message_id
from voicegw.events.store import Delivery, DeliveryStore, deliveries_for

if TYPE_CHECKING:
    from voicegw.metrics import Metrics
    from voicegw.tools.loader import AgentEntry

log = logging.getLogger("voicegw.events")

BUILD_RETRIES = (0.2, 1.0, 3.0)  # a store that refuses a new row, as the call log writer retries
STORE_TIMEOUT_S = 30.0
RELEASE_TIMEOUT_S = 10.0  # at exit, handing pending rows back


@dataclass(frozen=True)
class EventOptions:
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    concurrency: int = 4  # attempts in flight per process
    max_backlog: int = 10000  # stored messages waiting to become events; beyond it they are dropped
    poll_s: float = 30.0  # the longest the sweeper sleeps (it also learns of rows other processes released)
    close_grace_s: float = 5.0  # on close: time for the backlog and the attempts in flight
    public_url: str | None = None  # makes the recording URL absolute


class EventDispatcher:
    def __init__(self, deliveries: DeliveryStore, calls: Store, sender: Sender,
                 options: EventOptions | None = None, metrics: Metrics | None = None,
                 redactions: payloads.ToolRedactions | None = None) -> None:
        self.deliveries = deliveries
        self.calls = calls
        self.sender = sender
        self.options = options or EventOptions()
        self.metrics = metrics
        self.redactions = redactions or {}
        self.dropped = 0
        self._backlog: collections.deque[dict[str, Any]] = collections.deque()
        self._built = asyncio.Event()  # the backlog is empty
        self._built.set()
        self._more = asyncio.Event()  # the backlog has messages
        self._wake = asyncio.Event()  # the sweeper should look again
        self._swept = asyncio.Event()  # the sweeper finished a pass
        self._inflight: dict[asyncio.Task[None], Delivery] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- the call log's listener: called by its writer, never waits ---------------------------

    def stored(self, msgs: list[dict[str, Any]]) -> None:
        for msg in msgs:
            if not _wanted(msg):
                continue
            if len(self._backlog) >= self.options.max_backlog:
                self.dropped += 1
                if self.metrics is not None:
                    self.metrics.c_events_dropped.inc()
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error("event backlog full: %d event(s) dropped so far", self.dropped,
                              extra={"call_sid": msg.get("call_sid")})
                continue
            self._backlog.append(msg)
            self._built.clear()
            self._more.set()

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._build_loop(), name="events-builder"),
                       asyncio.create_task(self._sweep_loop(), name="events-sweeper")]

    async def aclose(self) -> None:
        """Build the backlog, give due rows one more sweep and let attempts in flight finish (all
        within the grace), then stop and release this process's pending rows."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.close_grace_s):
                await self.settled()
                if self._tasks:  # started: one more sweep for rows that came due meanwhile
                    self._swept.clear()
                    self._wake.set()
                    await self._swept.wait()
                    await self.settled()
        for task in self._tasks:
            task.cancel()
        cut = list(self._inflight.values())
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._inflight, return_exceptions=True)
        self._tasks = []
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                released = await self.deliveries.release(time.time(), [d.id for d in cut])
            if released:
                log.info("%d pending event(s) left for the next gateway process to deliver", released)
        except Exception as exc:  # their leases run out instead; another process takes them then
            log.warning("could not release pending events: %s", exc)
        if self._backlog:
            log.error("%d event(s) not created before exit", len(self._backlog))
        await self.sender.aclose()

    async def settled(self) -> None:
        """Until every message handed over so far is an event row and no attempt is in flight
        (attempts due later do not count)."""
        while not self._built.is_set() or self._inflight:
            if not self._built.is_set():
                await self._built.wait()
            else:
                await asyncio.wait(list(self._inflight))

    # --- builder --------------------------------------------------------------------------------

    async def _build_loop(self) -> None:
        while True:
            await self._more.wait()
            self._more.clear()
            while self._backlog:
                msg = self._backlog[0]
                await self._build(msg)
                self._backlog.popleft()
            self._built.set()
            self._wake.set()

    async def _build(self, msg: dict[str, Any]) -> None:
        sid = str(msg.get("call_sid") or "")
        for delay in (*BUILD_RETRIES, None):
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    created = await self._create(msg, sid)
                if created:
                    self._wake.set()
                return
            except Exception as exc:
                if delay is None:
                    self.dropped += 1
                    if self.metrics is not None:
                        self.metrics.c_events_dropped.inc()
                    log.error("event %s lost: the store refused it: %s", _wanted(msg), exc, extra={"call_sid": sid})
                    return
                log.warning("could not store event %s (retrying in %.1fs): %s", _wanted(msg), delay, exc,
                            extra={"call_sid": sid})
                await asyncio.sleep(delay)

    async def _create(self, msg: dict[str, Any], sid: str) -> bool:
        kind = _wanted(msg)
        now = time.time()
        if kind == payloads.CALL_STARTED:
            at = float(msg.get("started_at") or now)
            text = payloads.body(kind, at, payloads.call_started(msg))
            ref = ""
        elif kind == payloads.RECORDING_READY:
            at = float(msg.get("t") or now)
            text = payloads.body(kind, at, payloads.recording_ready(sid, msg.get("data") or {},
                                                                    self.options.public_url))
            ref = str(msg.get("id") or "")
        else:
            record = await self.calls.get_call(sid)
            if record is None:
                log.warning("no call record for call.ended", extra={"call_sid": sid})
                return False
            at = float(record.get("ended_at") or msg.get("ended_at") or now)
            text = payloads.body(payloads.CALL_ENDED, at,
                                 payloads.call_ended(record, self.redactions, self.options.public_url))
            ref = ""
        return await self.deliveries.add(message_id(kind, sid, ref), sid, kind, text, now)

    # --- sweeper ------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            self._wake.clear()
            wait = self.options.poll_s
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    free = self.options.concurrency - len(self._inflight)
                    if free > 0:
                        for delivery in await self.deliveries.claim(time.time(), free):
                            self._launch(delivery)
                    if len(self._inflight) < self.options.concurrency:
                        due = await self.deliveries.next_due()
                        if due is not None:
                            wait = min(wait, max(0.0, due - time.time()))
            except Exception as exc:  # a database hiccup: look again later, never stop
                log.warning("event sweep failed: %s", exc)
                wait = min(wait, 2.0)
            self._swept.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _launch(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._attempt(delivery), name=f"event-{delivery.id}")
        self._inflight[task] = delivery
        task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()

    async def _attempt(self, d: Delivery) -> None:
        answer = await self.sender.send(d.id, d.body)
        attempt = answer.attempt
        n = d.attempts + 1
        outcome = verdict(n, attempt, self.options.retry_delays, answer.retry_after)
        extra = {"call_sid": d.call_sid}
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                if not await self.deliveries.finish(d, attempt, outcome):
                    log.warning("event %s (%s) was taken over by another process", d.id, d.type, extra=extra)
                    return
        except Exception as exc:  # the row stays leased; once the lease runs out it is tried again
            log.warning("could not record an attempt on event %s: %s", d.id, exc, extra=extra)
            return
        if outcome.status == "delivered":
            if self.metrics is not None:
                self.metrics.c_events_delivered.labels(d.type).inc()
            log.info("event %s delivered (attempt %d, HTTP %s)", d.type, n, attempt.status, extra=extra)
            return
        if outcome.status == "failed":
            if self.metrics is not None:
                self.metrics.c_events_failed.labels(d.type).inc()
            log.error("event %s failed after %d attempt(s): %s", d.type, n, attempt.error, extra=extra)
            return
        if self.metrics is not None:
            self.metrics.c_events_retried.labels(d.type).inc()
        log.warning("event %s attempt %d failed (%s); next in %g s", d.type, n, attempt.error,
                    (outcome.next_at or attempt.at) - attempt.at, extra=extra)


def _wanted(msg: dict[str, Any]) -> str | None:
    """The event type a stored call log message makes, None for the rest."""
    kind = msg.get("type")
    if kind in (payloads.CALL_STARTED, payloads.CALL_ENDED):
        return str(kind)
    if kind == "event" and msg.get("kind") == payloads.RECORDING_READY:
        return payloads.RECORDING_READY
    return None


async def attach_events(calllog: CallLogService, settings: Settings, metrics: Metrics | None = None,
                        agents: Iterable[AgentEntry] = ()) -> EventDispatcher | None:
    """With VOICEGW_EVENTS_URL set: a started dispatcher listening to `calllog`, else None. `agents`
    are the gateway's agents (their tools' `redact` paths are masked in tool call arguments)."""
    if not settings.events_url or not settings.events_secret:
        return None
    host = urlparse(settings.events_url).hostname or ""
    if settings.events_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        log.warning("VOICEGW_EVENTS_URL is plain http: call transcripts cross the network unencrypted")
    sender = Sender(settings.events_url, Signer(settings.events_secret))
    options = EventOptions(retry_delays=settings.events_retry or RETRY_DELAYS, public_url=settings.public_url)
    dispatcher = EventDispatcher(deliveries_for(calllog.store), calllog.store, sender, options, metrics,
                                 payloads.tool_redactions(agents))
    await dispatcher.start()
    calllog.listeners.append(dispatcher)
    return dispatcher
