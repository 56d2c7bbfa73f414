"""PostgreSQL call log store (asyncpg), for production and several gateway replicas.

Each batch is one transaction of two round trips (the call row update, then one multi-row
insert through unnest), so the writer keeps up with many concurrent calls.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.query import POSTGRES, add_list_stats, list_calls_sql, mark_interrupted_sql, overview
from voicegw.calllog.record import build_record
from voicegw.calllog.store import (
    CALL_COLUMNS,
    call_row,
    check_list_args,
    encode_cursor,
    encode_data,
    event_row,
    migrations,
    transcript_text,
)

CONNECT_TIMEOUT = 10.0
QUERY_TIMEOUT = 30.0
_MIGRATION_LOCK = 0x766F6963  # advisory lock key: one replica migrates at a time
APP_NAME = {"application_name": "voicegw-calllog"}


def _pg(n: int) -> str:
    return f"${n}"


async def _init_conn(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=lambda v: v, decoder=json.loads, schema="pg_catalog")


class PostgresStore:
    def __init__(self, dsn: str, *, owner: str, min_size: int = 1, max_size: int = 8) -> None:
        self.dsn = dsn
        self.owner = owner
        self._min, self._max = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._alive: asyncpg.Connection | None = None  # holds this owner's advisory lock
        self._alive_lock = asyncio.Lock()

    async def _p(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncio.wait_for(
                    asyncpg.create_pool(
                        self.dsn, min_size=self._min, max_size=self._max, init=_init_conn, server_settings=APP_NAME,
                        timeout=CONNECT_TIMEOUT, command_timeout=QUERY_TIMEOUT,
                    ),
                    CONNECT_TIMEOUT * 2,
                )
            return self._pool

    async def pool(self) -> asyncpg.Pool:
        """The connection pool (for tables of other packages in this database: voicegw.events)."""
        return await self._p()

    async def migrate(self) -> None:
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for m in migrations("postgres"):
                if m.version in done:
                    continue
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    m.version, m.name, time.time(),
                )

    async def _hold_liveness(self) -> None:
        if self._alive is not None:
            return
        async with self._alive_lock:
            if self._alive is None:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT, server_settings=APP_NAME)
                await conn.execute(
                    "SELECT pg_advisory_lock(hashtextextended($1, 0))", self.owner, timeout=QUERY_TIMEOUT
                )
                self._alive = conn

    async def open_call(self, info: CallInfo) -> None:
        await self._hold_liveness()
        pool = await self._p()
        await pool.execute(
            "INSERT INTO calls (call_sid, stream_sid, from_number, to_number, agent, status, "
            "started_at, owner, heartbeat_at) VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8) "
            "ON CONFLICT (call_sid) DO UPDATE SET "
            "stream_sid = COALESCE(NULLIF(excluded.stream_sid, ''), calls.stream_sid), "
            "from_number = COALESCE(NULLIF(excluded.from_number, ''), calls.from_number), "
            "to_number = COALESCE(NULLIF(excluded.to_number, ''), calls.to_number), "
            "agent = COALESCE(NULLIF(excluded.agent, ''), calls.agent), "
            "started_at = LEAST(calls.started_at, excluded.started_at), owner = excluded.owner",
            info.call_sid, info.stream_sid, info.from_number, info.to_number, info.agent,
            info.started_at or time.time(), self.owner, time.time(),
        )

    async def append_events(self, call_sid: str, events: list[CallLogEntry]) -> list[int]:
        if not events:
            return []
        pool = await self._p()
        now = time.time()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO calls (call_sid, status, started_at, owner, heartbeat_at, event_count, transcript) "
                "VALUES ($1, 'active', $2, $3, $4, $5, $6) ON CONFLICT (call_sid) DO UPDATE SET "
                "event_count = calls.event_count + excluded.event_count, "
                "transcript = calls.transcript || excluded.transcript, heartbeat_at = excluded.heartbeat_at",
                call_sid, events[0].t, self.owner, now, len(events), transcript_text(events),
            )
            rows = await conn.fetch(
                "INSERT INTO call_events (call_sid, t, kind, data) "
                "SELECT $1, u.t, u.kind, u.data::jsonb FROM unnest($2::float8[], $3::text[], $4::text[]) "
                "WITH ORDINALITY AS u(t, kind, data, n) ORDER BY u.n RETURNING id",
                call_sid, [e.t for e in events], [e.kind for e in events], [encode_data(e.data) for e in events],
            )
            for ev in events:
                if ev.kind == "call.started":
                    d = ev.data
                    await conn.execute(
                        "UPDATE calls SET stream_sid = CASE WHEN stream_sid = '' THEN $2 ELSE stream_sid END, "
                        "from_number = CASE WHEN from_number = '' THEN $3 ELSE from_number END, "
                        "to_number = CASE WHEN to_number = '' THEN $4 ELSE to_number END, "
                        "agent = CASE WHEN agent = '' THEN $5 ELSE agent END WHERE call_sid = $1",
                        call_sid, str(d.get("stream_sid") or ""), str(d.get("from") or ""),
                        str(d.get("to") or ""), str(d.get("agent") or ""),
                    )
        # ids come from one sequence in this session, assigned in insertion order
        return sorted(int(r[0]) for r in rows)

    async def close_call(self, call_sid: str, reason: str, ended_at: float) -> None:
        pool = await self._p()
        await pool.execute(
            "INSERT INTO calls (call_sid, status, started_at, owner, heartbeat_at, ended_at, end_reason, duration_s) "
            "VALUES ($1, 'completed', $3, $4, $3, $3, $2, 0) ON CONFLICT (call_sid) DO UPDATE SET "
            "status = 'completed', end_reason = $2, ended_at = $3, "
            "duration_s = GREATEST(0, $3 - calls.started_at)",
            call_sid, reason, ended_at, self.owner,
        )

    async def heartbeat(self, call_sids: list[str], at: float) -> None:
        if call_sids:
            pool = await self._p()
            await pool.execute(
                "UPDATE calls SET heartbeat_at = $1 WHERE call_sid = ANY($2::text[])", at, call_sids
            )

    async def mark_interrupted(
        self,
        older_than_start: float | None = None,
        *,
        owner: str | None = None,
        stale_before: float | None = None,
    ) -> int:
        sql, params = mark_interrupted_sql(
            placeholder=_pg, older_than_start=older_than_start, owner=owner, stale_before=stale_before
        )
        pool = await self._p()
        status = await pool.execute(sql, *params)
        return int(status.split()[-1])

    async def reclaim_orphans(self) -> int:
        """Every live store holds a session advisory lock on its owner name; an owner whose lock
        can be taken is gone, and its active calls were cut off."""
        await self._hold_liveness()
        pool = await self._p()
        total = 0
        async with pool.acquire() as conn:
            owners = [r[0] for r in await conn.fetch("SELECT DISTINCT owner FROM calls WHERE status = 'active'")]
            for owner in owners:
                if owner == self.owner:
                    continue
                if await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", owner):
                    try:
                        total += await self.mark_interrupted(owner=owner)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", owner)
        return total

    async def prune(self, older_than_s: float) -> int:
        pool = await self._p()
        status = await pool.execute(
            "DELETE FROM calls WHERE status != 'active' AND COALESCE(ended_at, started_at) < $1",
            time.time() - older_than_s,
        )
        return int(status.split()[-1])

    async def list_calls(
        self,
        status: str | None = None,
        number: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        limit = check_list_args(status, limit)
        sql, params = list_calls_sql(
            placeholder=_pg, like="ILIKE", status=status, number=number, agent=agent,
            since=since, until=until, q=q, limit=limit, cursor=cursor,
        )
        pool = await self._p()
        rows = await pool.fetch(sql, *params)
        calls = [call_row(r) for r in rows[:limit]]
        nxt = encode_cursor(calls[-1]["started_at"], calls[-1]["call_sid"]) if len(rows) > limit else None
        return await add_list_stats(self._fetch, POSTGRES, calls), nxt

    async def overview(self, since: float, until: float) -> dict[str, Any]:
        return await overview(self._fetch, POSTGRES, since, until)

    async def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        pool = await self._p()
        return list(await pool.fetch(sql, *params))

    async def get_call(self, call_sid: str, with_events: bool = True) -> dict[str, Any] | None:
        pool = await self._p()
        async with pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = $1", call_sid)
            if row is None:
                return None
            summary = call_row(row)
            if not with_events:
                return summary
            evs = await conn.fetch(
                "SELECT id, call_sid, t, kind, data FROM call_events WHERE call_sid = $1 ORDER BY id", call_sid
            )
        return build_record(summary, [event_row(e, e[4]) for e in evs])

    async def get_event(self, event_id: int) -> dict[str, Any] | None:
        pool = await self._p()
        row = await pool.fetchrow("SELECT id, call_sid, t, kind, data FROM call_events WHERE id = $1", event_id)
        return event_row(row, row[4]) if row else None

    async def events_after(
        self, after_id: int = 0, call_sid: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        pool = await self._p()
        if call_sid is None:
            rows = await pool.fetch(
                "SELECT id, call_sid, t, kind, data FROM call_events WHERE id > $1 ORDER BY id LIMIT $2",
                after_id, max(1, limit),
            )
        else:
            rows = await pool.fetch(
                "SELECT id, call_sid, t, kind, data FROM call_events WHERE id > $1 AND call_sid = $2 "
                "ORDER BY id LIMIT $3",
                after_id, call_sid, max(1, limit),
            )
        return [event_row(r, r[4]) for r in rows]

    async def aclose(self) -> None:
        if self._alive is not None:
            alive, self._alive = self._alive, None
            await asyncio.wait_for(alive.close(), CONNECT_TIMEOUT)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
