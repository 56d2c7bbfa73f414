"""Masking sensitive values in what the call log keeps of the conversation.

Two sources of sensitive text, one masker:

* **Values a tool marks `redact`** (`ToolOutcome.redacted_values`: the concrete strings at the
  tool's redact paths, in its arguments and its result). The caller usually says them before the
  tool runs, so the call's earlier transcripts are masked again once they are known.
* **Kinds the agent names** in `redact_transcripts`: ``phone`` (7+ digits, with spaces, dashes,
  dots, parentheses or a leading +), ``card`` (13-19 digits passing the Luhn check) and ``email``.

Transcripts are written by speech recognition and by the model, so numbers come as digits ("555
1234"), as digit words ("five five five one two three four"), or mixed; a run of digit tokens
separated by spaces, dashes, dots, commas or parentheses counts as one number. Masks name what was
hidden: ``[phone]``, ``[card]``, ``[email]``, ``[redacted]``.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
KINDS = frozenset({"phone", "card", "email"})
MIN_VALUE_CHARS = 4  # shorter tool values ("yes", "2") would mask ordinary words
MAX_VALUES = 64  # values remembered per call

_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
          "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_TOKEN = r"(?:\d|\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b)"
_SEP = r"[\s\-.,()/]*"
_RUN = re.compile(rf"\+?\(?{_TOKEN}(?:{_SEP}{_TOKEN})*\)?", re.IGNORECASE)
_TOKENS = re.compile(_TOKEN, re.IGNORECASE)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# as a transcript spells one out: "john dot smith at example dot com"
_SPOKEN_EMAIL = re.compile(r"\b[\w.\-]+(?: dot [\w\-]+)* at [\w\-]+(?: dot [\w\-]+)+\b", re.IGNORECASE)


def digits_of(text: str) -> str:
    """The digits a run of digit tokens spells: "five 5-5 one" -> "5551"."""
    return "".join(t if t.isdigit() else _WORDS[t.lower()] for t in _TOKENS.findall(text))


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_kinds(text: str, kinds: Iterable[str]) -> str:
    """`text` with the phone numbers, card numbers and email addresses (as asked) masked."""
    kinds = frozenset(kinds)
    if not kinds or not text:
        return text
    if "email" in kinds:
        text = _EMAIL.sub("[email]", text)
        text = _SPOKEN_EMAIL.sub("[email]", text)
    if "phone" in kinds or "card" in kinds:
        def number(m: re.Match[str]) -> str:
            n = len(digits_of(m.group(0)))
            if "card" in kinds and 13 <= n <= 19 and luhn_ok(digits_of(m.group(0))):
                return "[card]"
            if "phone" in kinds and n >= 7:
                return "[phone]"
            return m.group(0)
        text = _RUN.sub(number, text)
    return text


def value_pattern(value: str) -> re.Pattern[str] | None:
    """How `value` may appear in a transcript, or None when it is too short to mask safely.

    A value that is mostly digits ("+1 555-0100", "4111 1111 1111 1111") matches its digits in
    any spacing and as digit words; any other value matches as text, ignoring case.
    """
    value = value.strip()
    if len(value) < MIN_VALUE_CHARS:
        return None
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) >= MIN_VALUE_CHARS and re.fullmatch(r"[\d\s\-.()+/]+", value):
        words = {d: [w for w, v in _WORDS.items() if v == d] for d in set(digits)}
        parts = [f"(?:{d}|\\b(?:{'|'.join(words[d])})\\b)" for d in digits]
        return re.compile(r"(?<!\d)" + _SEP.join(parts) + r"(?!\d)", re.IGNORECASE)
    return re.compile(re.escape(value), re.IGNORECASE)


class Redactor:
    """One call's masks: the agent's kinds and the tool values learnt so far."""

    __slots__ = ("kinds", "_values", "_patterns")

    def __init__(self, kinds: Iterable[str] = ()) -> None:
        self.kinds = frozenset(k for k in kinds if k in KINDS)
        self._values: set[str] = set()
        self._patterns: list[re.Pattern[str]] = []

    def learn(self, values: Iterable[str]) -> list[re.Pattern[str]]:
        """Remember tool values to mask; returns the patterns that are new."""
        new: list[re.Pattern[str]] = []
        for v in values:
            if not isinstance(v, str) or v in self._values or len(self._values) >= MAX_VALUES:
                continue
            pattern = value_pattern(v)
            if pattern is not None:
                self._values.add(v)
                new.append(pattern)
        # longest first, so a value is not half-masked by a shorter one inside it
        self._patterns = sorted(self._patterns + new, key=lambda p: len(p.pattern), reverse=True)
        return new

    @property
    def active(self) -> bool:
        return bool(self.kinds or self._patterns)

    def mask(self, text: str) -> str:
        for p in self._patterns:
            text = p.sub(REDACTED, text)
        return mask_kinds(text, self.kinds)

    def mask_value(self, value: object) -> object:
        """A copy of a JSON-shaped value with every string in it masked (tool arguments)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, list):
            return [self.mask_value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.mask_value(v) for k, v in value.items()}
        return value


def matches_any(text: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    return any(p.search(text) for p in patterns)
