"""Forced function calls over the whole conversation: what the gateway's side questions (post-call
summary and extraction, a warm transfer's summary) get from the local model.

A real model reads the call and fills the function's schema; this fills it the way the rest of the
local model works -- from the words said: a `summary` string is built from the caller's requests and
the agent's last answer, other fields are filled from the caller's words (numbers, dates, enum
values mentioned), nested objects field by field.
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from voicegw.localmodel.toolfill import fill_arguments, stem, words_of

SUMMARY_NAMES = frozenset({"summary", "synopsis", "recap"})
MAX_SUMMARY = 400


def summarize(turns: list[Any]) -> str:
    """'The caller asked: "...". The agent answered: "...".' from the call's turns."""
    asked = [t.text.strip() for t in turns if t.kind == "user" and t.text.strip()]
    answered = [t.text.strip() for t in turns if t.kind == "assistant" and t.text.strip()]
    tools = [t.text for t in turns if t.kind == "tool_call"]
    if not asked:
        return "The caller did not say anything."
    out = "The caller asked: " + "; ".join(f'"{a}"' for a in asked[-3:]) + "."
    if tools:
        out += " Tools used: " + ", ".join(dict.fromkeys(tools)) + "."
    if len(answered) > 1 or (answered and len(asked) > 0):
        out += f' The agent answered: "{answered[-1]}".'
    return out[:MAX_SUMMARY]


def _fill(schema: dict[str, Any], said: str, summary: str, today: _dt.date) -> dict[str, Any]:
    args, _missing = fill_arguments(schema, said, today)
    for name, spec in (schema.get("properties") or {}).items():
        if not isinstance(spec, dict):
            continue
        kind = spec.get("type")
        if kind == "string" and name.lower() in SUMMARY_NAMES:
            args[name] = summary
        elif kind == "object":
            args[name] = _fill(spec, said, summary, today)
        elif kind == "boolean":  # true when the caller said the field's words ("callback", "requested")
            said_words = {stem(w) for w in words_of(said)}
            args[name] = all(stem(w) in said_words for w in words_of(name.replace("_", " ")))
    return args


def forced_call(name: str, tools: list[dict[str, Any]], turns: list[Any], today: _dt.date) -> str | None:
    """The arguments (JSON text) of a call to the function `name`; None when no such tool exists."""
    tool = next((t for t in tools if t.get("name") == name), None)
    if tool is None:
        return None
    said = " ".join(t.text for t in turns if t.kind == "user")
    schema = tool.get("parameters") or {"type": "object", "properties": {}}
    return json.dumps(_fill(schema, said, summarize(turns), today))
