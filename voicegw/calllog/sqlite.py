"""SQLite call log store: the embedded default.

sqlite3 runs in two dedicated threads (one writer connection, one reader connection) so the
event loop never waits on disk and readers do not queue behind the writer. WAL mode lets them
run together; every batch is one committed transaction, so a killed process loses at most the
batch it was writing.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from voicegw.calllog.entries import CallInfo, CallLogEntry
from voicegw.calllog.query import SQLITE, add_list_stats, list_calls_sql, mark_interrupted_sql, overview
from voicegw.calllog.record import build_record
from voicegw.calllog.store import (
    CALL_COLUMNS,
    call_row,
    check_list_args,
    encode_cursor,
    encode_data,
    event_row,
    migrations,
    owner_is_dead_here,
    register_owner,
    transcript_text,
)

T = TypeVar("T")

WAL_WAIT_S = 30.0  # how long a starting worker retries the switch to WAL while another holds the file


def set_wal(execute: Callable[[str], object], pause: Callable[[float], None] = time.sleep,
            wait_s: float = WAL_WAIT_S) -> None:
    """Put the database in WAL mode. Workers that start together on a new file race for the switch,
    and the loser can be told "database is locked" despite the connection's busy timeout (seen
    with two workers): retry that (this runs on the connection's own thread) until `wait_s` has
    passed; any other error is raised."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        pause(0.05)


class _Conn:
    """One sqlite3 connection confined to its own thread."""

    def __init__(self, path: str, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._path = path
        self._db: sqlite3.Connection | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._db = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
            set_wal(self._db.execute)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")
        return fn(self._db)

    async def aclose(self) -> None:
        def close(_: sqlite3.Connection) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await self.run(close)
        finally:
            self._pool.shutdown(wait=False)


def _tx(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        out = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return out


class SqliteStore:
    def __init__(self, path: str, *, owner: str) -> None:
        self.path = path
        self.owner = owner
        register_owner(owner)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = _Conn(path, "calllog-sqlite-w")
        # an in-memory database exists once per connection: read through the writer then
        self._reader = self._writer if path == ":memory:" else _Conn(path, "calllog-sqlite-r")

    # --- schema -----------------------------------------------------------------------------

    async def migrate(self) -> None:
        await self._writer.run(self._migrate)

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for m in migrations("sqlite"):
            def apply(db: sqlite3.Connection, m: Any = m) -> None:
                done = db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (m.version,)).fetchone()
                if done:
                    return
                for stmt in _statements(m.sql):
                    db.execute(stmt)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (m.version, m.name, time.time()),
                )

            _tx(db, apply)

    # --- writes -----------------------------------------------------------------------------

    async def open_call(self, info: CallInfo) -> None:
        def op(db: sqlite3.Connection) -> None:
            started = info.started_at or time.time()
            db.execute(
                "INSERT INTO calls (call_sid, stream_sid, from_number, to_number, agent, status, "
                "started_at, owner, heartbeat_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?) "
                "ON CONFLICT (call_sid) DO UPDATE SET "
                "stream_sid = COALESCE(NULLIF(excluded.stream_sid, ''), stream_sid), "
                "from_number = COALESCE(NULLIF(excluded.from_number, ''), from_number), "
                "to_number = COALESCE(NULLIF(excluded.to_number, ''), to_number), "
                "agent = COALESCE(NULLIF(excluded.agent, ''), agent), "
                "started_at = MIN(started_at, excluded.started_at), owner = excluded.owner",
                (info.call_sid, info.stream_sid, info.from_number, info.to_number, info.agent,
                 started, self.owner, time.time()),
            )

        await self._writer.run(op)

    async def append_events(self, call_sid: str, events: list[CallLogEntry]) -> list[int]:
        if not events:
            return []

        def op(db: sqlite3.Connection) -> list[int]:
            now = time.time()
            db.execute(
                "INSERT OR IGNORE INTO calls (call_sid, status, started_at, owner, heartbeat_at) "
                "VALUES (?, 'active', ?, ?, ?)",
                (call_sid, events[0].t, self.owner, now),
            )
            ids = []
            for ev in events:
                cur = db.execute(
                    "INSERT INTO call_events (call_sid, t, kind, data) VALUES (?, ?, ?, ?)",
                    (call_sid, ev.t, ev.kind, encode_data(ev.data)),
                )
                ids.append(int(cur.lastrowid or 0))
                if ev.kind == "call.started":
                    _fill_from_started(db, call_sid, ev.data)
            db.execute(
                "UPDATE calls SET event_count = event_count + ?, transcript = transcript || ?, "
                "heartbeat_at = ? WHERE call_sid = ?",
                (len(events), transcript_text(events), now, call_sid),
            )
            return ids

        return await self._writer.run(lambda db: _tx(db, op))

    async def close_call(self, call_sid: str, reason: str, ended_at: float) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO calls (call_sid, status, started_at, owner, heartbeat_at) "
                "VALUES (?, 'completed', ?, ?, ?) ON CONFLICT (call_sid) DO NOTHING",
                (call_sid, ended_at, self.owner, ended_at),
            )
            db.execute(
                "UPDATE calls SET status = 'completed', end_reason = ?, ended_at = ?, "
                "duration_s = MAX(0, ? - started_at) WHERE call_sid = ?",
                (reason, ended_at, ended_at, call_sid),
            )

        await self._writer.run(lambda db: _tx(db, op))

    async def heartbeat(self, call_sids: list[str], at: float) -> None:
        if call_sids:
            await self._writer.run(
                lambda db: db.executemany(
                    "UPDATE calls SET heartbeat_at = ? WHERE call_sid = ?", [(at, s) for s in call_sids]
                )
            )

    async def mark_interrupted(
        self,
        older_than_start: float | None = None,
        *,
        owner: str | None = None,
        stale_before: float | None = None,
    ) -> int:
        sql, params = mark_interrupted_sql(
            placeholder=lambda _: "?", older_than_start=older_than_start, owner=owner, stale_before=stale_before
        )
        return await self._writer.run(lambda db: _tx(db, lambda d: d.execute(sql, params).rowcount))

    async def reclaim_orphans(self) -> int:
        owners = await self._writer.run(
            lambda db: [r[0] for r in db.execute("SELECT DISTINCT owner FROM calls WHERE status = 'active'")]
        )
        total = 0
        for owner in owners:
            if owner != self.owner and owner_is_dead_here(owner):
                total += await self.mark_interrupted(owner=owner)
        return total

    async def prune(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s

        def op(db: sqlite3.Connection) -> int:
            old = "SELECT call_sid FROM calls WHERE status != 'active' AND COALESCE(ended_at, started_at) < ?"
            db.execute(f"DELETE FROM call_events WHERE call_sid IN ({old})", (cutoff,))
            return db.execute(
                "DELETE FROM calls WHERE status != 'active' AND COALESCE(ended_at, started_at) < ?", (cutoff,)
            ).rowcount

        return await self._writer.run(lambda db: _tx(db, op))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one transaction on the writer connection (for tables of other packages in
        this database: voicegw.events)."""
        return await self._writer.run(lambda db: _tx(db, fn))

    # --- reads ------------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the reader connection (see `write`)."""
        return await self._reader.run(fn)

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
            placeholder=lambda _: "?", like="LIKE", status=status, number=number, agent=agent,
            since=since, until=until, q=q, limit=limit, cursor=cursor,
        )
        rows = await self._reader.run(lambda db: db.execute(sql, params).fetchall())
        calls = [call_row(r) for r in rows[:limit]]
        nxt = encode_cursor(calls[-1]["started_at"], calls[-1]["call_sid"]) if len(rows) > limit else None
        return await add_list_stats(self._fetch, SQLITE, calls), nxt

    async def overview(self, since: float, until: float) -> dict[str, Any]:
        return await overview(self._fetch, SQLITE, since, until)

    async def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        return await self._reader.run(lambda db: db.execute(sql, params).fetchall())

    async def get_call(self, call_sid: str, with_events: bool = True) -> dict[str, Any] | None:
        def op(db: sqlite3.Connection) -> tuple[Any, list[Any]]:
            row = db.execute(f"SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = ?", (call_sid,)).fetchone()
            if row is None or not with_events:
                return row, []
            evs = db.execute(
                "SELECT id, call_sid, t, kind, data FROM call_events WHERE call_sid = ? ORDER BY id", (call_sid,)
            ).fetchall()
            return row, evs

        row, evs = await self._reader.run(op)
        if row is None:
            return None
        summary = call_row(row)
        if not with_events:
            return summary
        return build_record(summary, [event_row(e, json.loads(e[4])) for e in evs])

    async def get_event(self, event_id: int) -> dict[str, Any] | None:
        row = await self._reader.run(
            lambda db: db.execute(
                "SELECT id, call_sid, t, kind, data FROM call_events WHERE id = ?", (event_id,)
            ).fetchone()
        )
        return event_row(row, json.loads(row[4])) if row else None

    async def events_after(
        self, after_id: int = 0, call_sid: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        sql = "SELECT id, call_sid, t, kind, data FROM call_events WHERE id > ?"
        params: list[Any] = [after_id]
        if call_sid is not None:
            sql += " AND call_sid = ?"
            params.append(call_sid)
        sql += " ORDER BY id LIMIT ?"
        params.append(max(1, limit))
        rows = await self._reader.run(lambda db: db.execute(sql, params).fetchall())
        return [event_row(r, json.loads(r[4])) for r in rows]

    async def aclose(self) -> None:
        if self._reader is not self._writer:
            await self._reader.aclose()
        await self._writer.aclose()


def _fill_from_started(db: sqlite3.Connection, call_sid: str, data: dict[str, Any]) -> None:
    """A call.started event fills call fields the row does not have yet."""
    db.execute(
        "UPDATE calls SET stream_sid = CASE WHEN stream_sid = '' THEN ? ELSE stream_sid END, "
        "from_number = CASE WHEN from_number = '' THEN ? ELSE from_number END, "
        "to_number = CASE WHEN to_number = '' THEN ? ELSE to_number END, "
        "agent = CASE WHEN agent = '' THEN ? ELSE agent END WHERE call_sid = ?",
        (str(data.get("stream_sid") or ""), str(data.get("from") or ""), str(data.get("to") or ""),
         str(data.get("agent") or ""), call_sid),
    )


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements (comments dropped)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
