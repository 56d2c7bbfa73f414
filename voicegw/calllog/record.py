"""The full record of a call, derived from its stored events.

Kept apart from the stores so both backends give the same record, and so the derived views can
change without a schema migration: the events are the source of truth.
"""
from __future__ import annotations

from typing import Any


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
    record["barge_ins"] = [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "barge_in"]
    record["tool_calls"] = tool_calls(events)
    record["errors"] = [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "error"]
    record["dtmf"] = [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "dtmf"]
    record["reconnects"] = [dict(e["data"], t=e["t"]) for e in events if e["kind"] == "reconnect"]
    return record


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
