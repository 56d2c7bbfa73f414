"""What the caller has heard: playout accounting from Twilio mark acknowledgements.

Agent audio goes to the provider in chunks, each closed by a mark. The provider returns a mark
when playback reaches it (or when a `clear` discards it). A chunk spans several model deltas: the
core closes it once it holds `MARK_EVERY_MS` of audio (or its item's audio ends), so with 20 ms
deltas the gateway sends one mark per 100 ms instead of one per delta and gets a fifth of the
acknowledgements back: 120 Twilio messages a second per talking call instead of 200 (-18% CPU per
call-second at 50 calls, docs/BENCHMARKS.md). Accounting stays
exact by time: within the chunk at the head of the queue, heard audio is interpolated from when it
started playing, and a piece that arrives after the caller ran dry moves the chunk's start later. From that we know, at any instant, how
much of each assistant item the caller has actually heard:

    heard = end of the last acknowledged chunk of the item
            + wall-clock time the following chunk has been playing, capped at that chunk's length

The chunk at the head of the queue started playing when the chunk before it was acknowledged, or
when it was sent, whichever was later. Times are the session's clock (seconds, monotonic); audio
offsets are milliseconds of *model* audio within the item, so they compare directly with what the
model produced (and with `conversation.item.truncate`'s `audio_end_ms`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

KEEP_ITEMS = 64
MARK_EVERY_MS = 100.0  # audio in one chunk before its mark goes out


@dataclass(slots=True)
class Chunk:
    mark: str  # "" while the chunk is open (its mark not sent yet)
    item_id: str
    start_ms: float  # offset of the chunk's first sample within its item
    end_ms: float
    sent_at: float  # earliest time it can have started playing (later when a piece came late)

    @property
    def length_ms(self) -> float:
        return self.end_ms - self.start_ms


class Playout:
    """Chunks sent to the caller that have not been acknowledged yet, in order."""

    __slots__ = ("_pending", "_by_mark", "_seq", "_head_since", "_heard_end", "_prefix", "_queued_ms", "_open",
                 "open_at")

    def __init__(self, mark_prefix: str = "m") -> None:
        self._pending: deque[Chunk] = deque()
        self._by_mark: set[str] = set()
        self._seq = 0
        self._head_since: float | None = None  # when the head chunk was released for playback
        self._heard_end: dict[str, float] = {}  # item -> end of its last acknowledged chunk
        self._prefix = mark_prefix
        self._queued_ms = 0.0  # sum of the pending chunks' lengths (O(1) for the queued-audio cap)
        self._open: Chunk | None = None  # the last pending chunk while its mark is not sent yet
        self.open_at = 0.0  # when audio was last added to the open chunk

    # --- sending -----------------------------------------------------------------------------
    def add(self, item_id: str, start_ms: float, end_ms: float, now: float) -> None:
        """Record audio just sent: it extends the open chunk when it continues that chunk's item,
        else (close the open chunk first) it opens a new one."""
        chunk = self._open
        if chunk is not None and chunk.item_id == item_id and chunk.end_ms == start_ms:  # `extends`, inline
            self._grow(chunk, start_ms, end_ms, now)
            return
        if chunk is not None:
            raise ValueError("close the open chunk before starting another")
        chunk = Chunk("", item_id, start_ms, end_ms, now)
        if not self._pending:
            self._head_since = now
        self._pending.append(chunk)
        self._queued_ms += end_ms - start_ms
        self._open = chunk
        self.open_at = now

    def push_steady(self, item_id: str, start_ms: float, end_ms: float, now: float) -> str | None:
        """`push` when no mark goes out before the audio: the audio continues the open chunk, or
        opens one when none is open. Returns the mark to send after it (the chunk now holds
        MARK_EVERY_MS and is closed), or "" for none. None, and nothing done, when `push` would
        close the open chunk first (it is another item's, or does not end where this piece starts)."""
        chunk = self._open
        if chunk is None:
            self.add(item_id, start_ms, end_ms, now)
            return self.close() if end_ms - start_ms >= MARK_EVERY_MS else ""
        if chunk.item_id != item_id or chunk.end_ms != start_ms:
            return None
        self._grow(chunk, start_ms, end_ms, now)
        return self.close() if end_ms - chunk.start_ms >= MARK_EVERY_MS else ""

    def _grow(self, chunk: Chunk, start_ms: float, end_ms: float, now: float) -> None:
        """The open `chunk` takes the audio from its end (`start_ms`) to `end_ms`."""
        # the chunk cannot finish playing before this piece arrived and played: if the caller ran
        # dry meanwhile, the chunk effectively started playing that much later
        earliest = now - (chunk.end_ms - chunk.start_ms) / 1000.0
        if earliest > chunk.sent_at:
            chunk.sent_at = earliest
            if len(self._pending) == 1 and self._head_since is not None and earliest > self._head_since:
                self._head_since = earliest
        chunk.end_ms = end_ms
        self._queued_ms += end_ms - start_ms
        self.open_at = now

    def push(self, item_id: str, start_ms: float, end_ms: float, now: float) -> tuple[str, str]:
        """`add`, closing what must be closed around it: returns the mark to send before the audio
        (the open chunk was of another item, or did not end where this piece starts) and the mark
        to send after it (the chunk now holds MARK_EVERY_MS); "" for none."""
        chunk = self._open  # 50 a second per talking call: `extends` and `open_ms` inline
        before = "" if chunk is None or (chunk.item_id == item_id and chunk.end_ms == start_ms) else self.close()
        self.add(item_id, start_ms, end_ms, now)
        chunk = self._open  # open after `add`, always
        after = self.close() if chunk is not None and chunk.end_ms - chunk.start_ms >= MARK_EVERY_MS else ""
        return before, after

    def extends(self, item_id: str, start_ms: float) -> bool:
        """Audio of `item_id` from `start_ms` on continues the open chunk."""
        chunk = self._open
        return chunk is not None and chunk.item_id == item_id and chunk.end_ms == start_ms

    def open_ms(self) -> float:
        """Audio in the open chunk (0 when none is open)."""
        chunk = self._open
        return 0.0 if chunk is None else chunk.end_ms - chunk.start_ms

    @property
    def has_open(self) -> bool:
        return self._open is not None

    def close(self) -> str:
        """Close the open chunk; returns the mark name to send now ("" when no chunk is open)."""
        chunk = self._open
        if chunk is None:
            return ""
        self._open = None
        self._seq += 1
        chunk.mark = mark = f"{self._prefix}{self._seq}"
        self._by_mark.add(mark)
        return mark

    # --- acknowledgements ----------------------------------------------------------------------
    def acked(self, mark: str, now: float) -> Chunk | None:
        """A mark came back. Returns the chunk it closed, or None for an unknown/stale mark.

        Marks come back in order; an acknowledgement for a later mark implies the earlier ones
        finished too (a lost ack must not freeze the accounting).
        """
        if mark not in self._by_mark:
            return None
        # when playback of the acknowledged chunks should have ended: an ack arrives a network
        # delay after the fact, and the next chunk started playing at that predicted end
        ended = self._head_since if self._head_since is not None else now
        while self._pending:
            chunk = self._pending.popleft()
            self._by_mark.discard(chunk.mark)
            self._queued_ms = self._queued_ms - chunk.length_ms if self._pending else 0.0
            if chunk is self._open:  # unreachable: an open chunk is last and has no mark yet
                self._open = None
            ended = max(ended, chunk.sent_at) + chunk.length_ms / 1000.0
            prev = self._heard_end.get(chunk.item_id, 0.0)
            self._heard_end[chunk.item_id] = max(prev, chunk.end_ms)
            if len(self._heard_end) > KEEP_ITEMS:  # old items are never asked about again
                del self._heard_end[next(iter(self._heard_end))]
            if chunk.mark == mark:
                if self._pending:
                    head = self._pending[0]
                    self._head_since = max(min(now, ended), head.sent_at)
                else:
                    self._head_since = None
                return chunk
        return None  # unreachable: the mark was pending

    def clear(self, now: float) -> list[Chunk]:
        """The provider's buffer was cleared at `now`: every pending chunk is discarded, and what
        the caller heard of each item up to now is kept as heard."""
        for item in self.pending_items():
            self._heard_end[item] = self.heard_ms(item, now)
        dropped = list(self._pending)
        self._pending.clear()
        self._by_mark.clear()
        self._head_since = None
        self._queued_ms = 0.0
        self._open = None
        return dropped

    # --- queries -------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Audio is queued at the provider that the caller has not finished hearing."""
        return bool(self._pending)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def pending_items(self) -> list[str]:
        """Items with audio still queued, in play order, each once."""
        seen: list[str] = []
        for c in self._pending:
            if c.item_id not in seen:
                seen.append(c.item_id)
        return seen

    def current_item(self) -> str | None:
        """The item the caller is hearing now (head of the queue)."""
        return self._pending[0].item_id if self._pending else None

    def heard_ms(self, item_id: str, now: float) -> float:
        """How many ms of `item_id` the caller has heard by `now`."""
        heard = self._heard_end.get(item_id, 0.0)
        if self._pending and self._head_since is not None:
            head = self._pending[0]
            if head.item_id == item_id:
                playing = max(0.0, (now - self._head_since) * 1000.0)
                heard = max(heard, head.start_ms + min(playing, head.length_ms))
        return heard

    def queued_ms(self) -> float:
        """Audio sent and not yet acknowledged, ms (a running sum: asked once per model delta)."""
        return self._queued_ms
