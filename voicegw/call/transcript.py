"""Per-call transcript bookkeeping: the agent's words, cut to what the caller heard."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class AgentUtterance:
    item_id: str
    response_id: str
    parts: list[str] = field(default_factory=list)
    final: str | None = None
    logged: bool = False
    cut: bool = False

    @property
    def text(self) -> str:
        return self.final if self.final is not None else "".join(self.parts)


def cut_text(text: str, heard_ms: float, produced_ms: float) -> str:
    """The part of `text` spoken in the first `heard_ms` of `produced_ms` of audio.

    Speech rate is roughly uniform over an utterance, so the heard fraction of the audio is the
    heard fraction of the characters; the cut backs off to a word boundary so no half-words are
    logged, and an ellipsis marks the interruption.
    """
    if produced_ms <= 0 or heard_ms <= 0:
        return ""
    if heard_ms >= produced_ms:
        return text
    n = int(len(text) * heard_ms / produced_ms)
    if n >= len(text):
        return text
    cut = text[:n]
    if n < len(text) and not text[n].isspace():
        space = cut.rfind(" ")
        cut = cut[:space] if space > 0 else ""
    cut = cut.rstrip(" ,;:")
    return (cut + "…") if cut else ""
