"""Matching a caller's words to declared tools, and filling arguments from a JSON schema.

Good enough for demonstrating tool flows offline: word overlap picks the tool (name words
count double), numbers and digit words fill id/number fields, "today"/"tomorrow"/weekdays fill
dates, enums take the value mentioned or their first, defaults are used as given.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Any

_STOP = frozenset(
    "a an the of to for my me i you your we our is are was be by its it this that these those "
    "and or in on at with from please can could would will like want need get check look up find "
    "set do does did have has tool function caller user call calls calling caller's about what "
    "where when which who how some any".split()
)
DIGIT_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
# Words a recogniser writes for a digit it heard; trusted only between two digits ("one to three").
DIGIT_HOMOPHONES = {"to": "2", "too": "2", "for": "4", "fore": "4", "won": "1", "ate": "8", "free": "3"}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_NUMERIC_HINTS = ("id", "number", "num", "digits", "code", "pin", "phone", "account", "zip", "quantity", "count")
_TEXT_HINTS = ("reason", "query", "question", "message", "text", "summary", "description", "details",
               "topic", "note", "notes", "request", "utterance")
_DATE_HINTS = ("date", "day", "when")


def stem(word: str) -> str:
    """A crude suffix stripper: enough to match "orders"/"ordered"/"order" and "closing"/"closes"."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w]


def tool_score(text: str, tool: dict[str, Any]) -> int:
    said = {stem(w) for w in words_of(text) if w not in _STOP}
    name = {stem(w) for w in _name_words(str(tool.get("name") or "")) if w not in _STOP}
    desc = {stem(w) for w in words_of(str(tool.get("description") or "")) if w not in _STOP} - name
    return 2 * len(said & name) + len(said & desc)


def numbers_in(text: str) -> list[str]:
    """Digit runs, joining single digits and digit words said one by one ("1 2 3" -> "123").

    "double five" is "55"; a homophone ("one to three") counts only between two digits.
    """
    tokens = re.findall(r"[a-z]+|\d+", text.lower())
    digits: list[str | None] = [tok if tok.isdigit() else DIGIT_WORDS.get(tok) for tok in tokens]
    runs: list[str] = []
    current = ""
    for i, token in enumerate(tokens):
        digit = digits[i]
        following = digits[i + 1] if i + 1 < len(tokens) else None
        if digit is None and token in DIGIT_HOMOPHONES and current and following:
            digit = DIGIT_HOMOPHONES[token]
        if digit is None and token in ("double", "triple") and following:
            current += following * (1 if token == "double" else 2)
            continue
        if digit is None:
            if current:
                runs.append(current)
            current = ""
            continue
        if current and len(digit) > 1 and len(current) > 1:
            runs.append(current)
            current = digit
        else:
            current += digit
    if current:
        runs.append(current)
    return runs


def date_in(text: str, today: _dt.date) -> str | None:
    words = words_of(text)
    if "today" in words:
        return today.isoformat()
    if "tomorrow" in words:
        return (today + _dt.timedelta(days=1)).isoformat()
    iso = re.search(r"\b(\d{4}-\d{2}-\d{2})\b", text)
    if iso:
        return iso.group(1)
    for i, day in enumerate(_WEEKDAYS):
        if day in words:
            ahead = (i - today.weekday()) % 7 or 7
            return (today + _dt.timedelta(days=ahead)).isoformat()
    return None


def time_in(text: str) -> str | None:
    match = re.search(r"\b(\d{1,2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)", text.lower())
    if not match:
        return None
    hour = int(match.group(1)) % 12 + (12 if match.group(3).startswith("p") else 0)
    return f"{hour:02d}:{int(match.group(2) or 0):02d}"


def _clean(text: str) -> str:
    return re.sub(r"^\s*\[keypad\]\s*", "", text, flags=re.IGNORECASE).strip()


def fill_arguments(schema: dict[str, Any], text: str, today: _dt.date) -> tuple[dict[str, Any], list[str]]:
    """Return (arguments, names of required arguments that could not be filled)."""
    props: dict[str, Any] = schema.get("properties") or {}
    required = [str(r) for r in schema.get("required") or []]
    numbers = numbers_in(text)
    words = set(words_of(text))
    args: dict[str, Any] = {}
    missing: list[str] = []
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {}
        value = _value_for(name, spec, text, words, numbers, today, name in required)
        if value is not None:
            args[name] = value
        elif name in required:
            missing.append(name)
    return args, missing


def _value_for(
    name: str, spec: dict[str, Any], text: str, words: set[str], numbers: list[str],
    today: _dt.date, required: bool,
) -> Any:
    kind = spec.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    lname = name.lower()
    parts = set(_name_words(name))
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        for option in spec["enum"]:
            if str(option).lower() in words:
                return option
        return spec["enum"][0]
    if "default" in spec:
        return spec["default"]
    if spec.get("format") in ("date", "date-time") or parts & set(_DATE_HINTS) or "date" in lname:
        return date_in(text, today)
    if spec.get("format") == "time" or "time" in parts:
        return time_in(text)
    if kind in ("integer", "number") or parts & set(_NUMERIC_HINTS):
        if not numbers:
            return None
        raw = numbers.pop(0)
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw) if "." in raw else int(raw)
        return raw
    if kind == "boolean":
        return True if required else None
    if kind in (None, "string") and parts & set(_TEXT_HINTS):
        cleaned = _clean(text)
        return cleaned or None
    return None
