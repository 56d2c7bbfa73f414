"""The full record of a call, derived from its stored events.

Kept apart from the stores so both backends give the same record, and so the derived views can
change without a schema migration: the events are the source of truth.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

SNIPPET_CHARS = 80
# the event kinds the list view's per-call figures come from (`list_stats`)
STAT_KINDS = ("transcript", "turn.latency", "tool.call", "tool.result", "barge_in")


def build_record(summary: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Call fields + events + transcript by turn, per-turn latency, usage, barge-ins, tool calls."""
    record = dict(summary)
    record["events"] = events
    record["transcript"] = transcript_turns(events)
    record["latency"] = [
        {"item_id": e["data"].get("item_id"), "latency_ms": e["data"].get("latency_ms"), "t": e["t"]}
        for e in events
        if e["kind"] == "turn.latency"
    ]
    record["usage"] = usage_totals(events)
    record["barge_ins"] = barge_ins(events)
    record["tool_calls"] = tool_calls(events)
    record["errors"] = [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "error"]
    record["dtmf"] = [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "dtmf"]
    record["reconnects"] = [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "reconnect"]
    record["waterfall"] = waterfall(events)
    record["recording"] = recording(events)
    record.update(call_outcome(events))
    record.update(list_stats(events))
    return record


def recording(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The call's recording as `recording.ready` described it (url, mode, channels, duration_s,
    bytes, content_type), or None when the call was not recorded."""
    ready = [e for e in events if e["kind"] == "recording.ready"]
    return dict(ready[-1]["data"]) if ready else None


def call_outcome(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the call came to beyond its transcript: the post-call summary and extraction (with
    whether the extraction met its schema), the answering-machine verdict, warm transfer steps."""
    post = [e["data"] for e in events if e["kind"] == "post_call"]
    last = dict(post[-1]) if post else {}
    amd = [e["data"] for e in events if e["kind"] == "amd"]
    return {
        "summary": last.get("summary"),
        "extraction": last.get("extraction"),
        "post_call": last or None,
        "answered_by": amd[-1].get("answered_by") if amd else None,
        "transfers": [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "transfer"],
    }


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p of the values at or below it):
    always a value that was measured, and the same rule the stores' overview queries use."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[nearest_rank(p, len(ordered))]


def nearest_rank(p: float, n: int) -> int:
    """0-based index of the p-th percentile among n sorted values (n > 0)."""
    return min(n - 1, max(0, math.ceil(p * n) - 1))


def list_stats(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The list view's figures for one call: a snippet (the caller's first words, else the
    agent's), transcript turns, median turn latency, tool calls and failures, barge-ins."""
    turns = transcript_turns(events)
    first_caller = next((t for t in turns if t["role"] == "caller" and t["text"]), None)
    first = first_caller or next((t for t in turns if t["text"]), None)
    snippet = ""
    if first is not None:
        text = " ".join(str(first["text"]).split())
        snippet = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"
    latencies = [float(e["data"]["latency_ms"]) for e in events
                 if e["kind"] == "turn.latency" and isinstance(e["data"].get("latency_ms"), (int, float))]
    p50 = percentile(latencies, 0.5)
    return {
        "snippet": snippet,
        "snippet_role": first["role"] if first else "",
        "turns": len(turns),
        "latency_p50_ms": None if p50 is None else round(p50, 1),
        "tools": sum(1 for e in events if e["kind"] == "tool.call"),
        "tool_errors": sum(1 for e in events if e["kind"] == "tool.result" and not e["data"].get("ok")),
        "barge_in_count": sum(1 for e in events if e["kind"] == "barge_in"),
    }


def waterfall(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per answered turn: the caller's end of speech, the model's response start and the first
    agent audio sent to the caller (a `turn.latency` event, which measures from the end of
    speech, so the end of speech is recovered from it exactly even when events are missing), and
    what the caller said in it (transcripts arrive after the end of speech, often after the answer
    started: each belongs to the last turn whose speech ended before it)."""
    out: list[dict[str, Any]] = []
    for i, e in enumerate(events):
        latency = e["data"].get("latency_ms")
        if e["kind"] != "turn.latency" or not isinstance(latency, (int, float)):
            continue
        first_audio = float(e["t"])
        stopped = first_audio - float(latency) / 1000.0
        started = next((float(r["t"]) for r in events[:i]
                        if r["kind"] == "response.started" and stopped - 0.001 <= float(r["t"]) <= first_audio),
                       None)
        out.append({
            "item_id": e["data"].get("item_id"),
            "speech_stopped_t": stopped,
            "response_started_t": started,
            "first_audio_t": first_audio,
            "model_ms": None if started is None else round((started - stopped) * 1000.0, 1),
            "audio_ms": None if started is None else round((first_audio - started) * 1000.0, 1),
            "latency_ms": float(latency),
            "caller_text": "",
        })
    for e in events:
        if e["kind"] == "transcript" and e["data"].get("role") == "caller" and e["data"].get("text"):
            turn = next((w for w in reversed(out) if w["speech_stopped_t"] <= float(e["t"]) + 0.001), None)
            if turn is not None:
                turn["caller_text"] = f"{turn['caller_text']} {e['data']['text']}".strip()
    return out


def barge_ins(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each barge-in with the agent's text as generated (`generated`, the last uncut transcript
    of the interrupted item) and as the caller heard it (`heard`, the cut one; empty when the
    item was deleted because nothing had played)."""
    texts: dict[str, dict[str, str]] = {}
    for e in events:
        if e["kind"] == "transcript" and e["data"].get("item_id"):
            slot = texts.setdefault(str(e["data"]["item_id"]), {})
            slot["heard" if e["data"].get("cut") else "generated"] = str(e["data"].get("text") or "")
    out = []
    for e in events:
        if e["kind"] != "barge_in":
            continue
        entry = dict(e["data"], t=e["t"])
        slot = texts.get(str(e["data"].get("item_id") or ""), {})
        entry["generated"] = slot.get("generated")
        entry["heard"] = slot.get("heard", "" if e["data"].get("action") == "delete" else None)
        out.append(entry)
    return out


def transcript_turns(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per transcript item, in first-seen order; a later event for the same item
    (the agent's text cut at a barge-in) replaces the earlier text."""
    turns: list[dict[str, Any]] = []
    by_item: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["kind"] != "transcript":
            continue
        d = e["data"]
        item_id = d.get("item_id")
        entry = {
            "item_id": item_id,
            "role": d.get("role", ""),
            "text": d.get("text", ""),
            "cut": bool(d.get("cut", False)),
            "t": e["t"],
        }
        if item_id and item_id in by_item:
            by_item[item_id].update(text=entry["text"], cut=entry["cut"] or by_item[item_id]["cut"])
            continue
        turns.append(entry)
        if item_id:
            by_item[item_id] = entry
    return turns


def usage_totals(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Token usage summed over every response.done (nested detail counters included)."""
    total: dict[str, Any] = {}
    responses = 0
    for e in events:
        if e["kind"] == "response.done":
            responses += 1
            usage = e["data"].get("usage")
            if isinstance(usage, dict):
                _add_numbers(total, usage)
    total["responses"] = responses
    return total


def _add_numbers(into: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            into[key] = into.get(key, 0) + value
        elif isinstance(value, dict):
            sub = into.setdefault(key, {})
            if isinstance(sub, dict):
                _add_numbers(sub, value)


def tool_calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """tool.call joined with its tool.result by call_id."""
    calls: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for e in events:
        d = e["data"]
        if e["kind"] == "tool.call":
            entry = {
                "call_id": d.get("call_id"),
                "name": d.get("name"),
                "arguments": d.get("arguments"),
                "t": e["t"],
                "ok": None,
                "result": None,
                "error": None,
                "duration_ms": None,
            }
            calls.append(entry)
            if d.get("call_id"):
                by_id[d["call_id"]] = entry
        elif e["kind"] == "tool.result":
            entry = by_id.get(d.get("call_id") or "")
            if entry is None:
                entry = {"call_id": d.get("call_id"), "name": d.get("name"), "arguments": None, "t": e["t"]}
                calls.append(entry)
            entry.update(
                ok=d.get("ok"),
                result=d.get("result"),
                error=d.get("error"),
                duration_ms=d.get("duration_ms"),
                result_t=e["t"],
            )
    return calls
