"""Event bodies, built from what the call log stored.

Every body is the Standard Webhooks payload shape, `{"type", "timestamp", "data"}`, serialised
once when the event is created: the stored text is what every attempt sends and signs.

What the call log stores is already what may leave the gateway: transcripts masked as the agent
asks (`redact_transcripts`, values a tool marks `redact`), tool results with their `redact` paths
replaced and `${ENV}` secrets scrubbed. One gap is closed here: a tool call's arguments are logged
before the tool runs, when the values at its `redact` paths are not known yet, so those paths are
masked again in the body (`ToolRedactions`).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from voicegw.tools.paths import REDACTED, Segment, redact

CALL_STARTED = "call.started"
CALL_ENDED = "call.ended"
RECORDING_READY = "recording.ready"
EVENT_TYPES = (CALL_STARTED, CALL_ENDED, RECORDING_READY)

# A four-hour call is thousands of turns; a body stays a few hundred kilobytes at most.
MAX_TURNS = 2000
MAX_TOOL_CALLS = 500
MAX_TIMED = 2000  # barge-ins, turn latencies

if TYPE_CHECKING:
    from voicegw.tools.loader import AgentEntry

ToolRedactions = Mapping[str, tuple[tuple[Segment, ...], ...]]  # tool name -> its redact paths


def iso(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds: 2025-05-01T09:30:00.125Z."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(event_type: str, at: float, data: dict[str, Any]) -> str:
    """The request body: compact JSON, UTF-8 text."""
    envelope = {"type": event_type, "timestamp": iso(at), "data": data}
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), default=str)


def call_started(msg: Mapping[str, Any]) -> dict[str, Any]:
    """From the call log's `call.started` message (the call's row was stored)."""
    started = float(msg.get("started_at") or 0.0)
    return {
        "call_sid": msg.get("call_sid"),
        "from": msg.get("from") or "",
        "to": msg.get("to") or "",
        "agent": msg.get("agent") or "",
        "started_at": iso(started) if started else None,
    }


def recording_ready(call_sid: str, data: Mapping[str, Any], public_url: str | None) -> dict[str, Any]:
    """From a stored `recording.ready` entry."""
    return {"call_sid": call_sid, **recording(data, public_url)}


def recording(data: Mapping[str, Any], public_url: str | None) -> dict[str, Any]:
    """The recording's description; its URL made absolute with the gateway's public URL (fetching
    it takes an operator token)."""
    out = {k: data[k] for k in ("mode", "channels", "duration_s", "bytes", "content_type", "complete") if k in data}
    url = str(data.get("url") or "")
    if url.startswith("/") and public_url:
        url = public_url.rstrip("/") + url
    out["url"] = url or None
    return out


def call_ended(record: Mapping[str, Any], redactions: ToolRedactions | None = None,
               public_url: str | None = None) -> dict[str, Any]:
    """From the stored call record (`Store.get_call`) once the call log has written the call's end."""
    started = float(record.get("started_at") or 0.0)
    ended = record.get("ended_at")

    def offset(t: Any) -> float | None:
        return None if t is None else round(max(0.0, float(t) - started), 3)

    turns = [{"role": t.get("role"), "text": t.get("text"), "t": offset(t.get("t"))}
             for t in record.get("transcript") or [] if t.get("text")]
    tools = [_tool_call(c, offset, redactions or {}) for c in record.get("tool_calls") or []]
    barge_ins = [{"t": offset(b.get("t")), "cause": b.get("cause"), "action": b.get("action"),
                  "heard_ms": b.get("heard_ms"), "produced_ms": b.get("produced_ms")}
                 for b in record.get("barge_ins") or []]
    latencies = [{"t": offset(x.get("t")), "latency_ms": x.get("latency_ms")} for x in record.get("latency") or []]
    data: dict[str, Any] = {
        "call_sid": record.get("call_sid"),
        "from": record.get("from") or "",
        "to": record.get("to") or "",
        "agent": record.get("agent") or "",
        "started_at": iso(started) if started else None,
        "ended_at": iso(float(ended)) if ended is not None else None,
        "duration_s": None if record.get("duration_s") is None else round(float(record["duration_s"]), 3),
        "end_reason": record.get("end_reason"),
        "transcript": turns[:MAX_TURNS],
        "tool_calls": tools[:MAX_TOOL_CALLS],
        "barge_ins": barge_ins[:MAX_TIMED],
        "turn_latencies": latencies[:MAX_TIMED],
        "turn_latency_p50_ms": record.get("latency_p50_ms"),
        "usage": record.get("usage") or {},
    }
    cut = len(turns) > MAX_TURNS or len(tools) > MAX_TOOL_CALLS or max(len(barge_ins), len(latencies)) > MAX_TIMED
    if cut:
        data["truncated"] = True
    post = _last(record.get("events") or (), "post_call")
    if post is not None:
        for key in ("summary", "extraction", "extraction_valid", "extraction_errors"):
            if key in post:
                data[key] = post[key]
        if post.get("error"):
            data["post_call_error"] = post["error"]
    rec = _last(record.get("events") or (), RECORDING_READY)
    if rec is not None:
        data["recording"] = recording(rec, public_url)
    return data


def _tool_call(call: Mapping[str, Any], offset: Any, redactions: ToolRedactions) -> dict[str, Any]:
    name = str(call.get("name") or "")
    arguments = call.get("arguments")
    paths = redactions.get(name)
    if paths:
        arguments = _masked(arguments, paths)
    out: dict[str, Any] = {"name": name, "arguments": arguments, "ok": call.get("ok"),
                           "duration_ms": call.get("duration_ms"), "t": offset(call.get("t"))}
    if call.get("ok"):
        out["result"] = call.get("result")
    elif call.get("error") is not None:
        out["error"] = call.get("error")
    return out


def _masked(arguments: Any, paths: tuple[tuple[Segment, ...], ...]) -> Any:
    """Arguments with the tool's `redact` paths masked; arguments that are not JSON (the model
    sent bad JSON) cannot be masked by path, so they are withheld whole."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return REDACTED
    if isinstance(arguments, (dict, list)):
        return redact(arguments, paths)
    return REDACTED if arguments is not None else None


def _last(events: Iterable[Mapping[str, Any]], kind: str) -> dict[str, Any] | None:
    found = None
    for e in events:
        if e.get("kind") == kind and isinstance(e.get("data"), dict):
            found = e["data"]
    return found


def tool_redactions(entries: Iterable[AgentEntry]) -> dict[str, tuple[tuple[Segment, ...], ...]]:
    """Tool name -> the `redact` paths of every agent's tool of that name (an agent switch can
    put another agent's tool in a call, so paths of the same name are joined)."""
    out: dict[str, tuple[tuple[Segment, ...], ...]] = {}
    for entry in entries:
        for bound in entry.tools.tools:
            tool = bound.tool
            if tool.redact:
                out[tool.name] = tuple(dict.fromkeys(out.get(tool.name, ()) + tuple(tool.redact)))
    return out
