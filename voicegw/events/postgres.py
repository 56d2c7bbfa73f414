"""The event delivery table in the PostgreSQL call log, on the store's connection pool.

A claim is one statement: the due rows are picked `FOR UPDATE SKIP LOCKED` and leased in the same
UPDATE, so replicas and workers claiming at the same moment never get the same row.
"""
from __future__ import annotations

from typing import Any

from voicegw.calllog.postgres import PostgresStore
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


class PostgresDeliveries:
    def __init__(self, store: PostgresStore, lease_s: float = 60.0) -> None:
        self._store = store
        self.owner = store.owner
        self.lease_s = lease_s

    async def add(self, id: str, call_sid: str, type: str, body: str, now: float) -> bool:
        pool = await self._store.pool()
        status = await pool.execute(
            "INSERT INTO event_deliveries (id, call_sid, type, body, created_at, next_attempt_at, owner, "
            "lease_until) VALUES ($1, $2, $3, $4, $5, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            id, call_sid, type, body, now, self.owner, now + self.lease_s,
        )
        return status.split()[-1] == "1"

    async def claim(self, now: float, limit: int) -> list[Delivery]:
        pool = await self._store.pool()
        rows = await pool.fetch(
            "UPDATE event_deliveries AS d SET owner = $1, lease_until = $2, next_attempt_at = $2 "
            "FROM (SELECT id FROM event_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 "
            "AND (owner = $1 OR lease_until <= $3) ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) AS due "
            "WHERE d.id = due.id RETURNING d.id, d.call_sid, d.type, d.body, d.attempts, d.history",
            self.owner, now + self.lease_s, now, max(1, limit),
        )
        return [claimed_row(r) for r in rows]

    async def finish(self, delivery: Delivery, attempt: Attempt, verdict: Verdict) -> bool:
        next_at = verdict.next_at if verdict.next_at is not None else attempt.at
        lease = next_at + self.lease_s if verdict.status == "pending" else 0.0
        delivered = attempt.at if verdict.status == "delivered" else None
        pool = await self._store.pool()
        status = await pool.execute(
            "UPDATE event_deliveries SET status = $1, attempts = attempts + 1, last_attempt_at = $2, "
            "last_status = $3, last_error = $4, delivered_at = $5, next_attempt_at = $6, lease_until = $7, "
            "history = $8 WHERE id = $9 AND owner = $10 AND status = 'pending'",
            verdict.status, attempt.at, attempt.status, attempt.error, delivered, next_at, lease,
            history_text(delivery, attempt), delivery.id, self.owner,
        )
        return status.split()[-1] == "1"

    async def next_due(self) -> float | None:
        pool = await self._store.pool()
        value = await pool.fetchval(
            "SELECT MIN(CASE WHEN owner = $1 THEN next_attempt_at ELSE GREATEST(next_attempt_at, lease_until) END) "
            "FROM event_deliveries WHERE status = 'pending'", self.owner,
        )
        return None if value is None else float(value)

    async def release(self, now: float, due_now: list[str]) -> int:
        pool = await self._store.pool()
        async with pool.acquire() as conn, conn.transaction():
            if due_now:
                await conn.execute(
                    "UPDATE event_deliveries SET next_attempt_at = $1 WHERE id = ANY($2::text[]) AND owner = $3 "
                    "AND status = 'pending'", now, due_now, self.owner,
                )
            status = await conn.execute(
                "UPDATE event_deliveries SET lease_until = 0 WHERE owner = $1 AND status = 'pending'", self.owner,
            )
        return int(status.split()[-1])

    async def list(self, status: str | None = None, call_sid: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        limit = check_list_args(status, limit)
        where: list[str] = []
        params: list[Any] = []
        for column, op, value in (("status", "=", status), ("call_sid", "=", call_sid)):
            if value is not None:
                params.append(value)
                where.append(f"{column} {op} ${len(params)}")
        sql = f"SELECT {LIST_COLUMNS} FROM event_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        params.append(limit)
        sql += f" ORDER BY created_at DESC, id DESC LIMIT ${len(params)}"
        pool = await self._store.pool()
        return [list_row(r) for r in await pool.fetch(sql, *params)]

    async def counts(self) -> dict[str, int]:
        pool = await self._store.pool()
        rows = await pool.fetch("SELECT status, COUNT(*) FROM event_deliveries GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}
