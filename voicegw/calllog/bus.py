"""Live call events for operators: an in-process bus, and PostgreSQL fan-out across replicas.

Messages are JSON-ready dicts with a `type` (`call.started`, `event`, `call.ended`) and a
`call_sid`. Publishing never waits: each subscriber has a bounded queue, and a subscriber that
falls behind is dropped (its stream ends; an SSE client reconnects and catches up from the
store) rather than slowing the calls that publish.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any, Awaitable, Callable

import asyncpg

log = logging.getLogger("voicegw.calllog.bus")

CHANNEL = "voicegw_calllog"
NOTIFY_LIMIT = 7000  # bytes; PostgreSQL refuses payloads of 8000 bytes or more
CONNECT_TIMEOUT = 10.0


class SubscriptionDropped(Exception):
    """The subscriber fell behind and was removed from the bus."""


class Subscription:
    def __init__(self, bus: "Bus", call_sid: str | None, maxsize: int) -> None:
        self._bus = bus
        self.call_sid = call_sid
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.dropped = False

    def offer(self, msg: dict[str, Any]) -> bool:
        """Queue a message; False when the queue is full (the bus then drops us)."""
        if self.call_sid is not None and msg.get("call_sid") != self.call_sid:
            return True
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            return False
        return True

    async def get(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after `timeout` seconds without one."""
        if self.dropped and self.queue.empty():
            raise SubscriptionDropped()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.dropped_subscribers = 0

    def subscribe(self, call_sid: str | None = None, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, call_sid, maxsize)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(self, msg: dict[str, Any]) -> None:
        for sub in list(self._subs):
            if not sub.offer(msg):
                sub.dropped = True
                self._subs.discard(sub)
                self.dropped_subscribers += 1
                log.warning("live subscriber fell behind and was dropped (call=%s)", sub.call_sid or "*")


FetchEvent = Callable[[int], Awaitable[dict[str, Any] | None]]


class PgFanout:
    """Carries bus messages between replicas through LISTEN/NOTIFY on one PostgreSQL database.

    A message too large for a NOTIFY payload travels as a pointer (the event id) that the
    receiving replica reads back from the store. A replica ignores its own notifications: it
    already published them locally.
    """

    def __init__(self, dsn: str, bus: Bus, fetch_event: FetchEvent) -> None:
        self.dsn = dsn
        self.bus = bus
        self.origin = uuid.uuid4().hex
        self._fetch = fetch_event
        self._conn: asyncpg.Connection | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(10000)
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._closing = False

    async def start(self) -> None:
        await self._connect()
        self._tasks.append(asyncio.create_task(self._deliver(), name="calllog-fanout-deliver"))

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=CONNECT_TIMEOUT, server_settings={"application_name": "voicegw-calllog"}
        )
        await conn.add_listener(CHANNEL, self._on_notify)
        conn.add_termination_listener(self._on_lost)
        self._conn = conn

    def _on_lost(self, conn: asyncpg.Connection) -> None:
        if not self._closing and conn is self._conn:
            self._conn = None
            log.warning("live fan-out connection lost; reconnecting")
            self._tasks.append(asyncio.create_task(self._reconnect(), name="calllog-fanout-reconnect"))

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self._closing and self._conn is None:
            try:
                async with self._lock:
                    await self._connect()
                log.info("live fan-out reconnected")
                return
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                log.warning("live fan-out reconnect failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if note.get("o") == self.origin:
            return
        try:
            self._inbox.put_nowait(note)
        except asyncio.QueueFull:
            log.warning("live fan-out inbox full; a notification was dropped")

    async def _deliver(self) -> None:
        """In arrival order, so a fetched (large) event does not fall behind later ones."""
        while True:
            note = await self._inbox.get()
            msg = note.get("m")
            if msg is None and "ref" in note:
                try:
                    ev = await asyncio.wait_for(self._fetch(int(note["ref"])), CONNECT_TIMEOUT)
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                    log.warning("could not fetch a large live event: %s", exc)
                    continue
                msg = dict(ev, type="event") if ev else None
            if isinstance(msg, dict):
                self.bus.publish(msg)

    def payloads(self, msgs: list[dict[str, Any]]) -> list[str]:
        out = []
        for msg in msgs:
            text = json.dumps({"o": self.origin, "m": msg}, separators=(",", ":"), default=str)
            if len(text.encode()) > NOTIFY_LIMIT:
                if msg.get("type") != "event" or "id" not in msg:
                    log.warning("live message too large to fan out (type=%s)", msg.get("type"))
                    continue
                text = json.dumps({"o": self.origin, "ref": msg["id"], "call_sid": msg.get("call_sid")})
            out.append(text)
        return out

    async def notify(self, msgs: list[dict[str, Any]]) -> None:
        """One round trip for a batch; delivery to other replicas follows in order."""
        payloads = self.payloads(msgs)
        if not payloads:
            return
        async with self._lock:
            conn = self._conn
            if conn is None:
                log.warning("live fan-out is reconnecting; %d messages not fanned out", len(payloads))
                return
            await conn.execute(
                "SELECT pg_notify($1, s.p) FROM "
                "(SELECT u.p FROM unnest($2::text[]) WITH ORDINALITY AS u(p, n) ORDER BY u.n) AS s",
                CHANNEL, payloads, timeout=CONNECT_TIMEOUT,
            )

    async def aclose(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)
