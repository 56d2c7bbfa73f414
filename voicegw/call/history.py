"""The conversation so far, as items a new model session can be given.

When a model session is replaced (rollover before the service's lifetime runs out, or recovery
from a drop), the new session gets the call's context as conversation items: what the caller said
(transcripts, keypad input), what the agent said as far as the caller heard it, and the function
calls with their outputs. Items keep their conversation order; the replay is bounded so a long
call does not send an unbounded context.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from voicegw.realtime import events as ev

MAX_ITEMS = 60
MAX_CHARS = 24_000  # about 6k tokens of context


@dataclass
class Entry:
    kind: str  # user | assistant | function_call | function_output
    text: str = ""
    call_id: str = ""
    name: str = ""


class History:
    __slots__ = ("_items", "_seq")

    def __init__(self) -> None:
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def _put(self, key: str, entry: Entry) -> None:
        if key in self._items:
            self._items[key] = entry
        else:
            self._items[key] = entry
            while len(self._items) > MAX_ITEMS:
                self._items.popitem(last=False)

    def place(self, key: str, kind: str) -> None:
        """Reserve the item's place in the conversation before its text is known."""
        if key not in self._items:
            self._put(key, Entry(kind))

    def text(self, key: str, kind: str, text: str) -> None:
        entry = self._items.get(key)
        if entry is None:
            self._put(key, Entry(kind, text))
        else:
            entry.text = text

    def user_text(self, text: str) -> None:
        self._seq += 1
        self._put(f"_user{self._seq}", Entry("user", text))

    def function_call(self, call_id: str, name: str, arguments: str) -> None:
        self._put(f"call:{call_id}", Entry("function_call", arguments, call_id, name))

    def function_output(self, call_id: str, output: str) -> None:
        self._put(f"out:{call_id}", Entry("function_output", output, call_id))

    def forget(self, key: str) -> None:
        self._items.pop(key, None)

    def has_text(self, key: str) -> bool:
        entry = self._items.get(key)
        return entry is not None and bool(entry.text)

    def replay(self) -> list[ev.ClientCommand]:
        """Commands that rebuild the conversation on a fresh session, newest context kept first
        when the bound applies; a function output never goes without its call."""
        chosen: list[Entry] = []
        size = 0
        calls = {e.call_id for e in self._items.values() if e.kind == "function_call"}
        for entry in reversed(self._items.values()):
            if not entry.text and entry.kind != "function_call":
                continue
            if entry.kind == "function_output" and entry.call_id not in calls:
                continue
            size += len(entry.text)
            if size > MAX_CHARS and chosen:
                break
            chosen.append(entry)
        chosen.reverse()
        # an output whose call was cut off by the bound goes too
        kept_calls = {e.call_id for e in chosen if e.kind == "function_call"}
        out: list[ev.ClientCommand] = []
        for e in chosen:
            if e.kind == "user":
                out.append(ev.AddUserText(e.text))
            elif e.kind == "assistant":
                out.append(ev.AddAssistantText(e.text))
            elif e.kind == "function_call":
                out.append(ev.AddFunctionCall(e.call_id, e.name, e.text or "{}"))
            elif e.call_id in kept_calls:
                out.append(ev.AddFunctionOutput(e.call_id, e.text))
        return out
