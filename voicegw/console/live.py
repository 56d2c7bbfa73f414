"""The live event stream (Server-Sent Events) of the operator API.

`GET /api/live` sends a snapshot of the active calls and then every call's messages;
`GET /api/live?call=SID` first replays that call's stored events (after `Last-Event-ID` when the
browser reconnects) and then its live ones, so a page opened mid-call misses nothing and a
subscriber dropped for being slow catches up by reconnecting.
"""
from __future__ import annotations

import json
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from voicegw.calllog.bus import SubscriptionDropped
from voicegw.calllog.service import CallLogService

KEEPALIVE_S = 15.0
BACKLOG_PAGE = 1000


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One SSE frame; JSON never contains a raw newline, so one data line suffices."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    return int(raw) if raw.isdigit() else 0


async def live_stream(calllog: CallLogService, call_sid: str | None, after_id: int) -> AsyncIterator[str]:
    sub = calllog.bus.subscribe(call_sid=call_sid, maxsize=2000)  # before the backlog: no gap
    try:
        yield "retry: 2000\n\n"
        seen = after_id
        if call_sid is not None:
            summary = await calllog.store.get_call(call_sid, with_events=False)
            yield sse("call", summary)
            while True:
                events = await calllog.store.events_after(seen, call_sid, BACKLOG_PAGE)
                for ev in events:
                    yield sse("call.event", dict(ev, type="event"), ev["id"])
                    seen = ev["id"]
                if len(events) < BACKLOG_PAGE:
                    break
        else:
            active, _ = await calllog.store.list_calls(status="active", limit=500)
            yield sse("snapshot", {"calls": active})
        while True:
            try:
                msg = await sub.get(KEEPALIVE_S)
            except SubscriptionDropped:
                return  # the browser reconnects and replays from Last-Event-ID
            if msg is None:
                yield ": keepalive\n\n"
            elif msg.get("type") == "event":
                if call_sid is not None and msg["id"] <= seen:
                    continue
                yield sse("call.event", msg, msg["id"] if call_sid is not None else None)
            else:
                yield sse(str(msg.get("type")), msg)
    finally:
        sub.close()


def live_response(request: Request, calllog: CallLogService, headers: dict[str, str]) -> StreamingResponse:
    call_sid = request.query_params.get("call") or None
    return StreamingResponse(
        live_stream(calllog, call_sid, last_event_id(request)),
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
