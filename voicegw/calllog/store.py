"""The call log store interface, shared by the SQLite and PostgreSQL implementations.

A call is one row in `calls` (the columns list views filter on, plus a denormalised transcript
text for search) and its events in `call_events`, stored as written. Everything derived
(transcript by turn, latency, usage, barge-ins, tool calls) is computed from the events when a
call is read (`voicegw.calllog.record`), so the write path stays a plain append.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from voicegw.calllog.entries import CallInfo, CallLogEntry

STATUSES = ("active", "completed", "interrupted")
MAX_LIMIT = 500


class Store(Protocol):
    """Async persistence of calls and their events. One writer task appends; many readers."""

    async def migrate(self) -> None: ...

    async def open_call(self, info: CallInfo) -> None: ...

    async def append_events(self, call_sid: str, events: list[CallLogEntry]) -> list[int]:
        """Append events in order; returns their ids (ascending)."""
        ...

    async def close_call(self, call_sid: str, reason: str, ended_at: float) -> None: ...

    async def heartbeat(self, call_sids: list[str], at: float) -> None:
        """Note that this process still serves these calls (see `mark_interrupted`)."""
        ...

    async def mark_interrupted(
        self,
        older_than_start: float | None = None,
        *,
        owner: str | None = None,
        stale_before: float | None = None,
    ) -> int:
        """Mark active calls left open by a crash as interrupted; returns how many.

        Filters combine with AND: started before `older_than_start`, opened by `owner`, last
        heartbeat before `stale_before`. With none given every active call is marked.
        """
        ...

    async def reclaim_orphans(self) -> int:
        """Mark interrupted the active calls of gateway processes that are gone; returns how many.

        Each store instance has a unique `owner`; a process that crashed can no longer prove it
        is alive (a PostgreSQL advisory lock it held, or its pid on this host for SQLite).
        """
        ...

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
        """Call summaries, newest first, each with the list view's figures (`record.list_stats`:
        snippet, turns, latency_p50_ms, tools, tool_errors, barge_in_count), and the next cursor."""
        ...

    async def overview(self, since: float, until: float) -> dict[str, Any]:
        """Calls per hour, p50/p95 turn latency, tool error rate and end reasons over [since, until)
        (`query.overview`)."""
        ...

    async def get_call(self, call_sid: str, with_events: bool = True) -> dict[str, Any] | None: ...

    async def get_event(self, event_id: int) -> dict[str, Any] | None: ...

    async def events_after(
        self, after_id: int = 0, call_sid: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]: ...

    async def prune(self, older_than_s: float) -> int: ...

    async def aclose(self) -> None: ...


def default_owner() -> str:
    """A name unique to this process: `host:pid:random` (see `Store.reclaim_orphans`)."""
    return f"{socket.gethostname() or 'voicegw'}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead_here(owner: str) -> bool:
    """True when `owner` names a process on this host that no longer runs."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != (socket.gethostname() or "voicegw") or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return owner not in _THIS_PROCESS_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_THIS_PROCESS_OWNERS: set[str] = set()


def register_owner(owner: str) -> None:
    """Owners created by this process are alive as long as it runs."""
    _THIS_PROCESS_OWNERS.add(owner)


def open_store(url: str, *, owner: str | None = None) -> Store:
    """A store for `sqlite:///path` (or `sqlite://:memory:`) or `postgresql://...`."""
    if url.startswith("sqlite:"):
        from voicegw.calllog.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url), owner=owner or default_owner())
    if url.startswith(("postgresql://", "postgres://")):
        from voicegw.calllog.postgres import PostgresStore

        return PostgresStore(url, owner=owner or default_owner())
    raise ValueError(f"unsupported call log database URL scheme: {url.split(':', 1)[0]!r}")


def sqlite_path(url: str) -> str:
    """`sqlite:///relative/x.db` -> relative/x.db, `sqlite:////abs/x.db` -> /abs/x.db."""
    rest = url[len("sqlite:"):]
    if rest in ("", "//", "//:memory:", ":memory:"):
        return ":memory:"
    if rest.startswith("///"):
        return rest[3:]
    if rest.startswith("//"):
        return rest[2:]
    return rest


# --- helpers shared by both implementations -----------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(backend: str) -> list[Migration]:
    """Numbered SQL files shipped in voicegw/calllog/migrations/<backend>/, in order."""
    folder = resources.files("voicegw.calllog") / "migrations" / backend
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = entry.name.split("_", 1)[0]
            out.append(Migration(int(number), entry.name, entry.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    return out


def encode_data(data: dict[str, Any]) -> str:
    """Event data as JSON; anything not JSON-native is stored as its string form."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def transcript_text(events: list[CallLogEntry]) -> str:
    """The searchable text these events add to a call: one `role: text` line per transcript."""
    lines = []
    for ev in events:
        if ev.kind == "transcript":
            text = str(ev.data.get("text") or "").strip()
            if text:
                lines.append(f"{ev.data.get('role', '')}: {text}\n")
    return "".join(lines)


def encode_cursor(started_at: float, call_sid: str) -> str:
    raw = json.dumps([started_at, call_sid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, call_sid = json.loads(raw)
        return float(started_at), str(call_sid)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with wildcards in it taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def check_list_args(status: str | None, limit: int) -> int:
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    return max(1, min(int(limit), MAX_LIMIT))


CALL_COLUMNS = (
    "call_sid, stream_sid, from_number, to_number, agent, status, started_at, ended_at, "
    "duration_s, end_reason, event_count"
)


def call_row(row: Any) -> dict[str, Any]:
    """A calls row (selected with CALL_COLUMNS) as the API's call summary."""
    return {
        "call_sid": row[0],
        "stream_sid": row[1],
        "from": row[2],
        "to": row[3],
        "agent": row[4],
        "status": row[5],
        "started_at": row[6],
        "ended_at": row[7],
        "duration_s": row[8],
        "end_reason": row[9],
        "event_count": row[10],
    }


def event_row(row: Any, data: Any) -> dict[str, Any]:
    """A call_events row (id, call_sid, t, kind, data) as a dict; `data` already decoded."""
    return {"id": int(row[0]), "call_sid": row[1], "t": row[2], "kind": row[3], "data": data}
