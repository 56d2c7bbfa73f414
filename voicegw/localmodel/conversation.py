"""The default conversation: ordered items plus what the server knows about assistant audio.

Items are kept in the connection's wire shape (ids, `object`, `status`, content parts), so they
can be echoed back as they are. For assistant audio the server also remembers how much audio
it produced and where each transcript word falls, which is what `conversation.item.truncate`
is checked against and how truncation cuts the transcript.
"""
from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """Ids shaped like the real service's (`item_` + 21 characters)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(21))


@dataclass
class SpokenAudio:
    """Assistant audio for one content part: produced length and a word timeline."""

    produced_ms: float = 0.0
    words: list[tuple[float, str]] = field(default_factory=list)  # (start ms, word with spacing)

    def transcript_until(self, ms: float) -> str:
        return "".join(word for start, word in self.words if start < ms).strip()


class Conversation:
    def __init__(self) -> None:
        self.id = new_id("conv_")
        self._order: list[str] = []
        self._items: dict[str, dict[str, Any]] = {}
        self.audio: dict[str, SpokenAudio] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> dict[str, Any] | None:
        return self._items.get(item_id)

    @property
    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def items(self) -> list[dict[str, Any]]:
        return [self._items[i] for i in self._order]

    def add(self, item: dict[str, Any], previous_item_id: str | None = None) -> str | None:
        """Insert after `previous_item_id` ("root" = at the start; None = at the end).

        Returns the id of the item now before it (the event's `previous_item_id`).
        """
        item_id = item["id"]
        if previous_item_id is None:
            before = self.last_id
            self._order.append(item_id)
        elif previous_item_id == "root":
            before = None
            self._order.insert(0, item_id)
        else:
            index = self._order.index(previous_item_id)
            self._order.insert(index + 1, item_id)
            before = previous_item_id
        self._items[item_id] = item
        return before

    def delete(self, item_id: str) -> None:
        self._order.remove(item_id)
        del self._items[item_id]
        self.audio.pop(item_id, None)
