"""The event delivery table in the SQLite call log, on the store's own connections.

Writes run in the store's writer thread, each a `BEGIN IMMEDIATE` transaction: SQLite lets one
writer in at a time across every process on the file, which is what makes a claim atomic between
the workers of `serve --workers`.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from voicegw.calllog.sqlite import SqliteStore
from voicegw.events.store import (
    LIST_COLUMNS,
    Attempt,
    Delivery,
    Verdict,
    check_list_args,
    claimed_row,
    history_text,
    list_row,
)


class SqliteDeliveries:
    def __init__(self, store: SqliteStore, lease_s: float = 60.0) -> None:
        self._store = store
        self.owner = store.owner
        self.lease_s = lease_s

    async def add(self, id: str, call_sid: str, type: str, body: str, now: float) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT INTO event_deliveries (id, call_sid, type, body, created_at, next_attempt_at, owner, "
                "lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (id, call_sid, type, body, now, now, self.owner, now + self.lease_s),
            )
            return cur.rowcount == 1

        return await self._store.write(op)

    async def claim(self, now: float, limit: int) -> list[Delivery]:
        until = now + self.lease_s

        def op(db: sqlite3.Connection) -> list[Delivery]:
            rows = db.execute(
                "SELECT id, call_sid, type, body, attempts, history FROM event_deliveries "
                "WHERE status = 'pending' AND next_attempt_at <= ? AND (owner = ? OR lease_until <= ?) "
                "ORDER BY next_attempt_at LIMIT ?",
                (now, self.owner, now, max(1, limit)),
            ).fetchall()
            db.executemany(
                "UPDATE event_deliveries SET owner = ?, lease_until = ?, next_attempt_at = ? WHERE id = ?",
                [(self.owner, until, until, r[0]) for r in rows],
            )
            return [claimed_row(r) for r in rows]

        return await self._store.write(op)

    async def finish(self, delivery: Delivery, attempt: Attempt, verdict: Verdict) -> bool:
        next_at = verdict.next_at if verdict.next_at is not None else attempt.at
        lease = next_at + self.lease_s if verdict.status == "pending" else 0.0
        delivered = attempt.at if verdict.status == "delivered" else None

        def op(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE event_deliveries SET status = ?, attempts = attempts + 1, last_attempt_at = ?, "
                "last_status = ?, last_error = ?, delivered_at = ?, next_attempt_at = ?, lease_until = ?, "
                "history = ? WHERE id = ? AND owner = ? AND status = 'pending'",
                (verdict.status, attempt.at, attempt.status, attempt.error, delivered, next_at, lease,
                 history_text(delivery, attempt), delivery.id, self.owner),
            )
            return cur.rowcount == 1

        return await self._store.write(op)

    async def next_due(self) -> float | None:
        row = await self._store.read(lambda db: db.execute(
            "SELECT MIN(CASE WHEN owner = ? THEN next_attempt_at ELSE MAX(next_attempt_at, lease_until) END) "
            "FROM event_deliveries WHERE status = 'pending'", (self.owner,)).fetchone())
        return None if row is None or row[0] is None else float(row[0])

    async def release(self, now: float, due_now: list[str]) -> int:
        def op(db: sqlite3.Connection) -> int:
            db.executemany(
                "UPDATE event_deliveries SET next_attempt_at = ? WHERE id = ? AND owner = ? AND status = 'pending'",
                [(now, i, self.owner) for i in due_now],
            )
            return db.execute(
                "UPDATE event_deliveries SET lease_until = 0 WHERE owner = ? AND status = 'pending'", (self.owner,)
            ).rowcount

        return await self._store.write(op)

    async def list(self, status: str | None = None, call_sid: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        limit = check_list_args(status, limit)
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("status = ?", status), ("call_sid = ?", call_sid)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {LIST_COLUMNS} FROM event_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit)
        rows = await self._store.read(lambda db: db.execute(sql, params).fetchall())
        return [list_row(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._store.read(
            lambda db: db.execute("SELECT status, COUNT(*) FROM event_deliveries GROUP BY status").fetchall())
        return {str(r[0]): int(r[1]) for r in rows}
