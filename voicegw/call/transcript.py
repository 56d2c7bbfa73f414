"""Per-call transcript bookkeeping: the agent's words, cut to what the caller heard, and the
transcript log entries of both sides, masked (voicegw.call.redact) before they are logged."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voicegw.call.actions import Action, Log
from voicegw.call.redact import matches_any

if TYPE_CHECKING:
    from voicegw.call.core import CallCore

KEEP_TRANSCRIPTS = 256  # transcripts of a call remembered, to mask again when a tool reveals a value


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


class Transcripts:
    """Part of the call core (`CallCore` inherits it): every transcript entry goes through here."""

    def _transcript(self: CallCore, now: float, role: str, item_id: str, text: str, cut: bool) -> Log:
        """A transcript log entry, masked (tool values, the agent's redact kinds). The unmasked
        text is remembered so it can be masked again when a later tool reveals a value in it."""
        ts = self._transcripts
        ts[item_id] = (role, text, cut)
        ts.move_to_end(item_id)
        if len(ts) > KEEP_TRANSCRIPTS:
            ts.popitem(last=False)
        if self.redactor.active:
            text = self.redactor.mask(text)
        return self._log("transcript", now, role=role, item_id=item_id, text=text, cut=cut)

    def _learn_redacted(self: CallCore, values: tuple[str, ...], now: float) -> list[Action]:
        """A tool marked these values `redact`: mask them from now on, and log again (replacing:
        same item, the record keeps the latest text) every earlier transcript that held one."""
        new = self.redactor.learn(values)
        if not new:
            return []
        return [self._log("transcript", now, role=role, item_id=item, text=self.redactor.mask(text), cut=cut)
                for item, (role, text, cut) in self._transcripts.items() if matches_any(text, new)]
