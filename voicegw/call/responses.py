"""Response bookkeeping for one call: which responses are in progress, which were abandoned (their
late deltas are dropped), how much audio each assistant item produced and how much of it went to
the caller, and what the agent said."""
from __future__ import annotations

from collections import OrderedDict

from voicegw.call.transcript import AgentUtterance

KEEP_ITEMS = 32  # finished items remembered (a barge-in only ever concerns the last few)

# response kinds voicegw asks for, carried in the response's metadata
OUT_OF_BAND = frozenset({"filler", "goodbye", "apology"})


class ResponseBook:
    __slots__ = ("active", "oob", "stale", "kinds", "produced", "emitted", "utterances", "oob_items",
                 "audio_done")

    def __init__(self) -> None:
        self.active: str | None = None  # the in-conversation response in progress
        self.oob: set[str] = set()  # out-of-band responses in progress (fillers, goodbyes, apologies)
        self.stale: set[str] = set()  # cancelled or abandoned responses: late deltas are dropped
        self.kinds: dict[str, str] = {}
        self.produced: dict[str, float] = {}  # item -> ms of model audio received
        self.emitted: dict[str, float] = {}  # item -> ms of that audio handed to the caller
        self.utterances: OrderedDict[str, AgentUtterance] = OrderedDict()
        self.oob_items: set[str] = set()  # items of out-of-band responses (not in the conversation)
        self.audio_done: set[str] = set()  # items whose audio is complete

    @property
    def in_progress(self) -> bool:
        return self.active is not None or bool(self.oob)

    def started(self, response_id: str, kind: str, out_of_band: bool) -> None:
        self.kinds[response_id] = kind
        if out_of_band:
            self.oob.add(response_id)
        else:
            self.active = response_id

    def done(self, response_id: str) -> None:
        if response_id == self.active:
            self.active = None
        self.oob.discard(response_id)
        self.kinds.pop(response_id, None)

    def item_added(self, response_id: str, item_id: str) -> None:
        self.utterances[item_id] = AgentUtterance(item_id, response_id)
        if response_id in self.oob:
            self.oob_items.add(item_id)
        while len(self.utterances) > KEEP_ITEMS:
            old, _ = self.utterances.popitem(last=False)
            for table in (self.produced, self.emitted):
                table.pop(old, None)
            self.oob_items.discard(old)
            self.audio_done.discard(old)

    def abandon(self) -> list[str]:
        """Every response in progress becomes stale (cancelled, or its session is gone)."""
        gone = [r for r in (self.active, *sorted(self.oob)) if r is not None]
        self.stale.update(gone)
        self.active = None
        self.oob.clear()
        if len(self.stale) > 4 * KEEP_ITEMS:  # old stale ids can no longer send deltas
            self.stale = set(list(self.stale)[-KEEP_ITEMS:])
        return gone

    def unheard_items(self, heard: dict[str, float]) -> list[str]:
        """Conversation items whose produced audio the caller has not fully heard, oldest first."""
        return [item for item, ms in self.produced.items()
                if item not in self.oob_items and ms - heard.get(item, 0.0) >= 1.0]

    def spoken_so_far(self, item_id: str) -> str:
        utt = self.utterances.get(item_id)
        return utt.text.strip() if utt is not None else ""
