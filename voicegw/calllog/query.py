"""SQL shared by both backends: the call list (they differ in placeholders and ILIKE), the list
view's per-call figures and the overview (they differ in reading JSON and binding lists)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from voicegw.calllog.record import STAT_KINDS, list_stats, nearest_rank
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


# --- the list view's per-call figures and the overview ----------------------------------------
#
# Both read events through SQL that differs between the backends only in how a JSON field is
# read and how a list is bound; `SqlDialect` holds those differences, the rest is shared.

Fetch = Callable[[str, list[Any]], Awaitable[list[Any]]]


@dataclass(frozen=True)
class SqlDialect:
    placeholder: Callable[[int], str]
    number: Callable[[str], str]  # a numeric field of call_events.data as SQL
    is_true: Callable[[str], str]  # a boolean field of call_events.data is true
    hour: Callable[[str], str]  # epoch seconds column -> the start of its hour
    array_params: bool  # bind a list as one array parameter (= ANY) instead of IN (...)
    decode: Callable[[Any], Any]  # call_events.data as read -> dict


SQLITE = SqlDialect(
    placeholder=lambda _: "?",
    number=lambda f: f"CAST(json_extract(data, '$.{f}') AS REAL)",
    is_true=lambda f: f"json_extract(data, '$.{f}') = 1",
    hour=lambda col: f"(CAST({col} / 3600 AS INTEGER) * 3600)",
    array_params=False,
    decode=json.loads,
)
POSTGRES = SqlDialect(
    placeholder=lambda n: f"${n}",
    number=lambda f: f"(data->>'{f}')::float8",
    is_true=lambda f: f"(data->>'{f}') = 'true'",
    hour=lambda col: f"(FLOOR({col} / 3600) * 3600)",
    array_params=True,
    decode=lambda v: v,
)


class _Params:
    def __init__(self, dialect: SqlDialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self.dialect.placeholder(len(self.values))

    def among(self, column: str, values: list[str]) -> str:
        if self.dialect.array_params:
            return f"{column} = ANY({self(list(values))}::text[])"
        return f"{column} IN ({', '.join(self(v) for v in values)})"


async def add_list_stats(fetch: Fetch, dialect: SqlDialect, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds each call's snippet, turns, median turn latency, tool calls and barge-ins (one query
    over the page's calls, only the event kinds those come from)."""
    if not calls:
        return calls
    p = _Params(dialect)
    sql = (f"SELECT call_sid, t, kind, data FROM call_events WHERE {p.among('call_sid', [c['call_sid'] for c in calls])} "
           f"AND {p.among('kind', list(STAT_KINDS))} ORDER BY id")
    by_sid: dict[str, list[dict[str, Any]]] = {}
    for row in await fetch(sql, p.values):
        by_sid.setdefault(row[0], []).append({"t": row[1], "kind": row[2], "data": dialect.decode(row[3])})
    for call in calls:
        call.update(list_stats(by_sid.get(call["call_sid"], [])))
    return calls


async def overview(fetch: Fetch, dialect: SqlDialect, since: float, until: float) -> dict[str, Any]:
    """Calls per hour, p50/p95 turn latency, tool error rate and end reasons for calls started
    (events written) in [since, until)."""
    p = _Params(dialect)
    hour = dialect.hour("started_at")
    rows = await fetch(
        f"SELECT {hour} AS h, COUNT(*) FROM calls WHERE started_at >= {p(since)} AND started_at < {p(until)} "
        f"GROUP BY {hour} ORDER BY {hour}", p.values)
    per_hour = [{"hour": float(r[0]), "calls": int(r[1])} for r in rows]

    p = _Params(dialect)
    rows = await fetch(
        f"SELECT COALESCE(end_reason, status), COUNT(*) FROM calls WHERE started_at >= {p(since)} "
        f"AND started_at < {p(until)} GROUP BY COALESCE(end_reason, status) ORDER BY COUNT(*) DESC, "
        f"COALESCE(end_reason, status)", p.values)
    end_reasons = [{"reason": r[0], "calls": int(r[1])} for r in rows]

    value = dialect.number("latency_ms")

    def latency_where(p: _Params) -> str:
        return f"kind = {p('turn.latency')} AND t >= {p(since)} AND t < {p(until)} AND {value} IS NOT NULL"

    p = _Params(dialect)
    n = int((await fetch(f"SELECT COUNT(*) FROM call_events WHERE {latency_where(p)}", p.values))[0][0])
    latency: dict[str, Any] = {"turns": n, "p50_ms": None, "p95_ms": None}
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95)):
        if n:
            p = _Params(dialect)
            where = latency_where(p)
            rows = await fetch(f"SELECT {value} AS v FROM call_events WHERE {where} ORDER BY v "
                               f"LIMIT 1 OFFSET {p(nearest_rank(q, n))}", p.values)
            latency[name] = round(float(rows[0][0]), 1) if rows else None

    p = _Params(dialect)
    rows = await fetch(
        f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {dialect.is_true('ok')} THEN 0 ELSE 1 END), 0) FROM call_events "
        f"WHERE kind = {p('tool.result')} AND t >= {p(since)} AND t < {p(until)}", p.values)
    tool_calls, tool_errors = int(rows[0][0]), int(rows[0][1])
    return {
        "since": since,
        "until": until,
        "calls": sum(h["calls"] for h in per_hour),
        "calls_per_hour": per_hour,
        "latency": latency,
        "tools": {"calls": tool_calls, "errors": tool_errors,
                  "error_rate": round(tool_errors / tool_calls, 4) if tool_calls else None},
        "end_reasons": end_reasons,
    }
