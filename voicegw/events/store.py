"""Where events wait until they are delivered: the `event_deliveries` table of the call log's
database (migration 0003), beside the calls they are about.

A row is `pending` until an attempt gets a 2xx answer (`delivered`) or the last attempt fails
(`failed`). Each row has an owner, the gateway process working on it, and a lease: other
processes leave a row alone while its lease runs. The creating process owns a new row; a row is
*claimed* (atomically: one transaction, `FOR UPDATE SKIP LOCKED` on PostgreSQL) by its owner when
it is due, or by any process once its lease has run out, which is how a restarted or surviving
process resumes the rows of one that stopped (`release`) or died. A claimed row is not due again
until its lease ends, so an attempt in flight is never sent twice by two processes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicegw.calllog.store import Store

STATUSES = ("pending", "delivered", "failed")
MAX_LIST = 500
MAX_HISTORY = 12  # attempts remembered per row (more than the retry schedule makes)
LIST_COLUMNS = (
    "id, call_sid, type, status, attempts, created_at, next_attempt_at, last_attempt_at, last_status, "
    "last_error, delivered_at, history"
)


@dataclass(frozen=True)
class Delivery:
    """A claimed row: what an attempt needs."""

    id: str
    call_sid: str
    type: str
    body: str
    attempts: int = 0
    history: tuple[dict[str, Any], ...] = field(default=())


@dataclass(frozen=True)
class Attempt:
    """What one attempt got: an HTTP status, or an error without one."""

    at: float
    status: int | None
    error: str | None
    ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "error": self.error, "ms": round(self.ms, 1)}


@dataclass(frozen=True)
class Verdict:
    """Where a row goes after an attempt: `delivered`, `failed`, or `pending` again at `next_at`."""

    status: str
    next_at: float | None = None


class DeliveryStore(Protocol):
    owner: str

    async def add(self, id: str, call_sid: str, type: str, body: str, now: float) -> bool:
        """Store a new pending event owned by this process, due now; False if it exists already."""
        ...

    async def claim(self, now: float, limit: int) -> list[Delivery]:
        """Up to `limit` due rows that are this process's or whose lease has run out, now leased
        to this process until `now` + the lease."""
        ...

    async def finish(self, delivery: Delivery, attempt: Attempt, verdict: Verdict) -> bool:
        """Record an attempt on a row this process claimed; False when another process has taken
        it over meanwhile (this process's lease ran out) and nothing was written."""
        ...

    async def next_due(self) -> float | None:
        """The earliest time a pending row becomes claimable by this process, None without any."""
        ...

    async def release(self, now: float, due_now: list[str]) -> int:
        """Hand this process's pending rows back (a stopping process), `due_now` ones due at once."""
        ...

    async def list(self, status: str | None = None, call_sid: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        """Rows newest first, without their bodies."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows by status."""
        ...


def deliveries_for(store: Store, lease_s: float = 60.0) -> DeliveryStore:
    """The delivery table of this call log store's database, worked on as the store's owner."""
    from voicegw.calllog.postgres import PostgresStore
    from voicegw.calllog.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        from voicegw.events.sqlite import SqliteDeliveries

        return SqliteDeliveries(store, lease_s)
    if isinstance(store, PostgresStore):
        from voicegw.events.postgres import PostgresDeliveries

        return PostgresDeliveries(store, lease_s)
    raise TypeError(f"no event delivery table for {type(store).__name__}")


def check_list_args(status: str | None, limit: int) -> int:
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    return max(1, min(int(limit), MAX_LIST))


def history_text(delivery: Delivery, attempt: Attempt) -> str:
    """The row's attempt history with this attempt added (the oldest dropped beyond MAX_HISTORY)."""
    return json.dumps([*delivery.history, attempt.as_dict()][-MAX_HISTORY:], separators=(",", ":"))


def list_row(row: Any) -> dict[str, Any]:
    """A row selected with LIST_COLUMNS, as the API shows it."""
    pending = row[3] == "pending"
    return {
        "id": row[0],
        "call_sid": row[1],
        "type": row[2],
        "status": row[3],
        "attempts": int(row[4]),
        "created_at": row[5],
        "next_attempt_at": row[6] if pending else None,
        "last_attempt_at": row[7],
        "last_status": row[8],
        "last_error": row[9],
        "delivered_at": row[10],
        "history": json.loads(row[11] or "[]"),
    }


def claimed_row(row: Any) -> Delivery:
    """A row selected as (id, call_sid, type, body, attempts, history)."""
    return Delivery(row[0], row[1], row[2], row[3], int(row[4]), tuple(json.loads(row[5] or "[]")))
