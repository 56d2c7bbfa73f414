"""What the local model says: a small, predictable rule set instead of a language model.

Order of the rules (first match wins):
1. response instructions asking for verbatim speech ("Say exactly ...: \"<text>\"") -> <text>;
2. the latest turn is a tool result -> "Here is what I found: <key facts>";
3. the caller names a declared tool -> call it, with the arguments the words can fill
   (or ask for the required ones it cannot);
4. keypad digits ("[keypad] 1 2 3") -> "You pressed 1 2 3." plus a menu answer for one digit;
5. keyword answers (bye, person, hours, order, appointment, repeat, thanks, hello, yes, no), matched
   by word stem and short phrases so that recognition near-misses still land;
6. "Sorry, could you repeat that?".
Session instructions are stored by the protocol but deliberately not "understood" here.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from typing import Any

from voicegw.localmodel.recall import forced_call
from voicegw.localmodel.toolfill import fill_arguments, stem, tool_score, words_of

FALLBACK = "Sorry, could you repeat that?"
GREETING = "Hello! How can I help you today?"

_VERBATIM = re.compile(
    r"\b(?:say|speak|read|repeat)\b[^:\"“]*?\b(?:exactly|verbatim|word for word)\b[^:\"“]*[:]?\s*[\"“](?P<q>.+)[\"”]\s*\.?\s*$"
    r"|\b(?:say|speak|read|repeat)\b[^:\"“]*?\b(?:exactly|verbatim|word for word)\b[^:\"“]*:\s*(?P<u>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_KEYPAD = re.compile(r"^\s*\[keypad\]\s+(?P<digits>[0-9*#](?:[\s,]*[0-9*#])*)\s*$", re.IGNORECASE)

DIGIT_ANSWERS = {
    "1": "We are open Monday to Friday, 9 am to 5 pm.",
    "2": "For your order status, please tell me your order number.",
    "3": "To book an appointment, tell me which day suits you.",
    "0": "I will connect you to a person.",
    "9": "Goodbye, and thank you for calling.",
    "*": "Let me repeat the menu: press 1 for opening hours, 2 for order status, or 0 for a person.",
}



@dataclass(frozen=True)
class Intent:
    """A keyword answer. Words match by stem, so recognition near-misses ("closing", "ordered") count."""

    name: str
    words: frozenset[str]
    answer: str
    phrases: tuple[str, ...] = ()


# First match wins: leaving and a person outrank topics; yes/no come last because
# they ride along in longer turns ("yes, where is my order").
INTENTS: tuple[Intent, ...] = (
    Intent("bye", frozenset({"bye", "goodbye", "farewell"}), "Thank you for calling. Goodbye!",
           ("hang up", "see you", "that is all", "that's all")),
    Intent("person", frozenset({"person", "human", "agent", "operator", "representative", "someone", "somebody",
                                "staff", "people"}), "I will connect you to a person.", ("real person",)),
    Intent("hours", frozenset({"hours", "hour", "open", "opening", "opens", "close", "closing", "closes",
                               "closed"}), "We are open Monday to Friday, 9 am to 5 pm.", ("what time",)),
    Intent("order", frozenset({"order", "orders", "ordered", "delivery", "deliver", "package", "parcel",
                               "shipping", "shipment", "tracking", "track"}),
           "I can help with your order. What is your order number?"),
    Intent("appointment", frozenset({"appointment", "appointments", "book", "booking", "schedule", "reschedule",
                                     "reservation", "reserve"}),
           "I can book an appointment for you. Which day works best?"),
    Intent("repeat", frozenset({"repeat", "again", "pardon"}), FALLBACK, ("come again", "say that")),
    Intent("thanks", frozenset({"thanks", "thank", "cheers"}), "You're welcome. Is there anything else?"),
    Intent("hello", frozenset({"hello", "hi", "hey", "morning", "afternoon", "evening"}), GREETING),
    Intent("yes", frozenset({"yes", "yeah", "yep", "yup", "sure", "correct", "okay", "ok", "right", "affirmative"}),
           "Great. What would you like to do next?"),
    Intent("no", frozenset({"no", "nope", "nah", "negative"}), "Alright. Is there anything else I can help with?",
           ("not really",)),
)
KEYWORD_ANSWERS: tuple[tuple[frozenset[str], str], ...] = tuple((i.words, i.answer) for i in INTENTS)
_INTENT_STEMS = tuple(frozenset(stem(w) for w in i.words) for i in INTENTS)


def keywords() -> frozenset[str]:
    """Every word some intent listens for (the recogniser's vocabulary must cover them)."""
    words: set[str] = set()
    for intent in INTENTS:
        words |= intent.words
        for phrase in intent.phrases:
            words |= set(words_of(phrase))
    return frozenset(words)


def intent_of(text: str) -> Intent | None:
    """The first intent whose words (by stem) or phrases occur in `text`."""
    said = words_of(text)
    stems = {stem(w) for w in said}
    joined = f" {' '.join(said)} "
    for intent, wanted in zip(INTENTS, _INTENT_STEMS):
        if stems & wanted or any(f" {p} " in joined for p in intent.phrases):
            return intent
    return None


@dataclass(frozen=True)
class Speech:
    text: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text


Reply = Speech | ToolCall


@dataclass(frozen=True)
class Turn:
    """One conversation item reduced to what the rules look at."""

    kind: str  # user | assistant | tool_output | tool_call | system
    text: str


def turns_of(items: list[dict[str, Any]]) -> list[Turn]:
    """Reduce items of either dialect's shape to turns."""
    turns: list[Turn] = []
    for item in items:
        kind = item.get("type")
        if kind == "function_call_output":
            turns.append(Turn("tool_output", str(item.get("output") or "")))
        elif kind == "function_call":
            turns.append(Turn("tool_call", str(item.get("name") or "")))
        elif kind == "message":
            parts = []
            for part in item.get("content") or []:
                text = part.get("text") if part.get("text") is not None else part.get("transcript")
                if text:
                    parts.append(str(text))
            role = str(item.get("role") or "user")
            turns.append(Turn(role if role in ("user", "assistant", "system") else "user", " ".join(parts)))
    return turns


def verbatim_request(instructions: str | None) -> str | None:
    if not instructions:
        return None
    match = _VERBATIM.search(instructions.strip())
    if not match:
        return None
    text = (match.group("q") or match.group("u") or "").strip()
    return text or None


def decide(
    *,
    instructions: str | None,
    items: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    tool_choice: Any = "auto",
    today: _dt.date | None = None,
) -> Reply:
    exact = verbatim_request(instructions)
    if exact is not None:
        return Speech(exact)
    turns = [t for t in turns_of(items) if t.kind != "system"]
    if isinstance(tool_choice, dict):  # {"type": "function", "name": ...}: that function, now
        name = str(tool_choice.get("name"))
        arguments = forced_call(name, tools, turns, today or _dt.date.today())
        return ToolCall(name, arguments) if arguments is not None else Speech(FALLBACK)
    if turns and turns[-1].kind == "tool_output":
        return Speech(summarize_tool_output(turns[-1].text))
    last_user = next((t for t in reversed(turns) if t.kind == "user"), None)
    if last_user is None:
        return Speech(GREETING)
    today = today or _dt.date.today()
    usable_tools = [] if tool_choice == "none" else [t for t in tools if t.get("type", "function") == "function"]
    call = _tool_reply(last_user.text, turns, usable_tools, today)
    if call is not None:
        return call
    keypad = _KEYPAD.match(last_user.text)
    if keypad:
        digits = re.findall(r"[0-9*#]", keypad.group("digits"))
        said = f"You pressed {' '.join(digits)}."
        if len(digits) == 1 and digits[0] in DIGIT_ANSWERS:
            said = f"{said} {DIGIT_ANSWERS[digits[0]]}"
        return Speech(said)
    intent = intent_of(last_user.text)
    if intent is None:
        return Speech(FALLBACK)
    if intent.name == "repeat":
        before = next((t.text for t in reversed(turns[:-1]) if t.kind == "assistant" and t.text.strip()), None)
        return Speech(f"Of course. {before}" if before else FALLBACK)
    return Speech(intent.answer)


def _tool_reply(text: str, turns: list[Turn], tools: list[dict[str, Any]], today: _dt.date) -> Reply | None:
    """Call the tool the caller names; keypad/number-only turns continue an earlier request."""
    if not tools:
        return None
    best = _best_tool(text, tools)
    source = text
    if best is None and _is_number_only(text):
        # "[keypad] 1 2 3 4" after "where is my order?": the digits answer our question.
        earlier = [t for t in turns if t.kind == "user"][:-1]
        for turn in reversed(earlier[-3:]):
            best = _best_tool(turn.text, tools)
            if best is not None:
                source = f"{turn.text} {text}"
                break
    if best is None:
        return None
    args, missing = fill_arguments(best.get("parameters") or {}, source, today)
    if missing:
        wanted = " and ".join(m.replace("_", " ") for m in missing)
        return Speech(f"I can do that. Could you tell me the {wanted}?")
    return ToolCall(str(best.get("name")), json.dumps(args))


def _best_tool(text: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [(tool_score(text, t), i, t) for i, t in enumerate(tools)]
    scored = [s for s in scored if s[0] >= 2]
    if not scored:
        return None
    scored.sort(key=lambda s: (-s[0], s[1]))
    return scored[0][2]


def _is_number_only(text: str) -> bool:
    body = _KEYPAD.match(text)
    if body:
        return True
    return bool(re.fullmatch(r"[\s0-9,.-]+", text)) and any(c.isdigit() for c in text)


def summarize_tool_output(output: str) -> str:
    """A sentence of key facts from a tool's output (JSON or plain text)."""
    try:
        data = json.loads(output)
    except (ValueError, TypeError):
        data = output
    facts = _facts(data)[:6]
    if not facts:
        return "Here is what I found: nothing to report."
    return "Here is what I found: " + "; ".join(facts) + "."


def _facts(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        out: list[str] = []
        for key, value in data.items():
            label = f"{prefix}{str(key).replace('_', ' ')}"
            if isinstance(value, (dict, list)):
                out.extend(_facts(value, f"{label} "))
            elif value is not None and value != "":
                out.append(f"{label} {_spoken(value)}")
        return out
    if isinstance(data, list):
        out = []
        for value in data:
            out.extend(_facts(value, prefix))
        return out
    text = _spoken(data).strip()
    if not text:
        return []
    return [f"{prefix}{text[:200]}".strip()]


def _spoken(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
