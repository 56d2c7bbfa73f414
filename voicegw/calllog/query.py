"""SQL for the call list, shared by both backends (they differ in placeholders and ILIKE)."""
from __future__ import annotations

from typing import Any, Callable

from voicegw.calllog.store import CALL_COLUMNS, decode_cursor, like_pattern


def list_calls_sql(
    *,
    placeholder: Callable[[int], str],
    like: str,
    status: str | None,
    number: str | None,
    agent: str | None,
    since: float | None,
    until: float | None,
    q: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[str, list[Any]]:
    """Newest first, keyset-paginated on (started_at, call_sid); fetches limit + 1 rows so the
    caller knows whether there is a next page."""
    params: list[Any] = []

    def p(value: Any) -> str:
        params.append(value)
        return placeholder(len(params))

    where: list[str] = []
    if status:
        where.append(f"status = {p(status)}")
    if number:
        pat = like_pattern(number.strip())
        where.append(f"(from_number {like} {p(pat)} ESCAPE '\\' OR to_number {like} {p(pat)} ESCAPE '\\')")
    if agent:
        where.append(f"agent = {p(agent)}")
    if since is not None:
        where.append(f"started_at >= {p(float(since))}")
    if until is not None:
        where.append(f"started_at < {p(float(until))}")
    if q:
        where.append(f"transcript {like} {p(like_pattern(q.strip()))} ESCAPE '\\'")
    if cursor:
        c_started, c_sid = decode_cursor(cursor)
        a, b, c = p(c_started), p(c_started), p(c_sid)
        where.append(f"(started_at < {a} OR (started_at = {b} AND call_sid < {c}))")
    sql = f"SELECT {CALL_COLUMNS} FROM calls"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY started_at DESC, call_sid DESC LIMIT {p(limit + 1)}"
    return sql, params


def mark_interrupted_sql(
    *,
    placeholder: Callable[[int], str],
    older_than_start: float | None,
    owner: str | None,
    stale_before: float | None,
) -> tuple[str, list[Any]]:
    """Active calls matching the filters become interrupted, ended at their last event."""
    params: list[Any] = []

    def p(value: Any) -> str:
        params.append(value)
        return placeholder(len(params))

    last = "COALESCE((SELECT MAX(e.t) FROM call_events e WHERE e.call_sid = calls.call_sid), started_at)"
    where = ["status = 'active'"]
    if older_than_start is not None:
        where.append(f"started_at < {p(float(older_than_start))}")
    if owner is not None:
        where.append(f"owner = {p(owner)}")
    if stale_before is not None:
        where.append(f"heartbeat_at < {p(float(stale_before))}")
    sql = (
        f"UPDATE calls SET status = 'interrupted', end_reason = 'interrupted', "
        f"ended_at = {last}, duration_s = {last} - started_at WHERE " + " AND ".join(where)
    )
    return sql, params
