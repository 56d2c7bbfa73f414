"""A small JSONPath subset for picking parts of a tool result and for redacting fields.

Accepted forms: `data.order.status`, `$.data.items[0].status`, `items[*].name`, `$['odd key']`.
That is enough to hand the model the one field it needs from a verbose API response, and small
enough to validate completely at start-up.
"""
from __future__ import annotations

import copy
import re
from typing import Any

Segment = str | int  # a key, an index, or "*" for every element
_TOKEN = re.compile(r"""\.?([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+|\*)\]|\[(?:'([^']*)'|"([^"]*)")\]|\.(\*)""")

REDACTED = "[redacted]"
_MISSING = object()


def parse_path(text: str) -> tuple[Segment, ...]:
    """Parse a path; raises ValueError naming the offending part."""
    s = text.strip()
    s = s.removeprefix("$")
    if not s:
        if text.strip() == "$":
            return ()
        raise ValueError("empty path")
    segments: list[Segment] = []
    pos = 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse path {text!r} at {s[pos:]!r}")
        name, index, q1, q2, star = m.groups()
        if name is not None:
            segments.append(name)
        elif index is not None:
            segments.append("*" if index == "*" else int(index))
        elif star is not None:
            segments.append("*")
        else:
            segments.append(q1 if q1 is not None else q2)
        pos = m.end()
    return tuple(segments)


def _select(value: Any, segs: tuple[Segment, ...]) -> Any:
    if not segs:
        return value
    head, rest = segs[0], segs[1:]
    if head == "*":
        items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else None
        if items is None:
            return _MISSING
        picked = [_select(v, rest) for v in items]
        return [p for p in picked if p is not _MISSING]
    if isinstance(head, int):
        if isinstance(value, list) and -len(value) <= head < len(value):
            return _select(value[head], rest)
        return _MISSING
    if isinstance(value, dict) and head in value:
        return _select(value[head], rest)
    return _MISSING


def select(value: Any, segs: tuple[Segment, ...]) -> tuple[bool, Any]:
    """(found, selected value)."""
    out = _select(value, segs)
    return (out is not _MISSING), (None if out is _MISSING else out)


def _redact(value: Any, segs: tuple[Segment, ...]) -> None:
    head, rest = segs[0], segs[1:]
    if head == "*":
        keys = range(len(value)) if isinstance(value, list) else list(value) if isinstance(value, dict) else []
    elif isinstance(head, int):
        keys = [head] if isinstance(value, list) and -len(value) <= head < len(value) else []
    else:
        keys = [head] if isinstance(value, dict) and head in value else []
    for k in keys:
        if rest:
            _redact(value[k], rest)
        else:
            value[k] = REDACTED


def redact(value: Any, paths: tuple[tuple[Segment, ...], ...]) -> Any:
    """A copy of `value` with every field named by `paths` replaced by "[redacted]"."""
    if not paths:
        return value
    out = copy.deepcopy(value)
    for segs in paths:
        if not segs:
            return REDACTED
        _redact(out, segs)
    return out


def redacted_values(value: Any, paths: tuple[tuple[Segment, ...], ...]) -> tuple[str, ...]:
    """The concrete values (strings and numbers, as text) at `paths` in `value`."""
    out: list[str] = []

    def collect(v: Any) -> None:
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, (str, int, float)):
            text = str(v).strip()
            if text:
                out.append(text)
        elif isinstance(v, list):
            for x in v:
                collect(x)
        elif isinstance(v, dict):
            for x in v.values():
                collect(x)

    for segs in paths:
        found, picked = select(value, segs)
        if found:
            collect(picked)
    return tuple(out)
