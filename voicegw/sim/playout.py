"""The caller's side of playout, simulated the way Twilio plays a bidirectional stream.

Outbound audio is queued and "played" in real time at 8 bytes per ms; a mark is acknowledged when
playout reaches it; ``clear`` drops what is queued and returns every pending mark at once. The
class is sans-I/O: it is given the time and returns the mark names to acknowledge, so tests drive
it with a fake clock and the caller drives it with the monotonic clock.

It also keeps the ground truth a barge-in benchmark needs: the audio actually heard (with its
wall-clock offsets) and, at each clear, how much of the segment being cut had played.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

BYTES_PER_S = 8000  # 8 kHz mu-law


@dataclass(frozen=True)
class ClearRecord:
    """What a ``clear`` cut. A segment is the audio between two marks (one gateway chunk)."""

    at_ms: float  # when the clear arrived, ms since stream start
    segment_played_ms: float  # audio of the cut segment that had played (since the last reached mark)
    next_mark: str | None  # the pending mark that followed the cut segment (None: no mark pending)
    last_played_mark: str | None  # the last mark playout reached before the clear
    heard_ms: float  # all agent audio heard in the call up to the clear
    dropped_ms: float  # queued audio thrown away unheard
    marks_returned: tuple[str, ...]  # pending marks acknowledged by the clear, in order


@dataclass(frozen=True)
class HeardSpan:
    offset_ms: float  # wall-clock position of the span, ms since stream start
    start: int  # byte index into Playout.heard
    length: int  # bytes (8 per ms)

    @property
    def end_ms(self) -> float:
        return self.offset_ms + self.length / 8


class Playout:
    """A simulated Twilio playout buffer; times are seconds on the caller's clock."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[float, bytes, int]] = deque()  # (start_s, audio, byte position)
        self._marks: deque[tuple[float, str, int]] = deque()  # (due_s, name, byte position)
        self._busy_until = 0.0
        self._queued = 0  # byte position at the end of the queue (call-wide, minus dropped audio)
        self._mark_pos = 0  # byte position of the last reached mark (or clear)
        self._any_audio = False
        self.last_mark: str | None = None
        self.heard = bytearray()
        self._spans: list[list[float]] = []  # [offset_s, start index, length]
        self.clears: list[ClearRecord] = []

    # -- events ---------------------------------------------------------------------------

    def audio(self, now: float, data: bytes) -> None:
        if not data:
            return
        start = max(now, self._busy_until)
        self._chunks.append((start, data, self._queued))
        self._queued += len(data)
        self._busy_until = start + len(data) / BYTES_PER_S
        self._any_audio = True

    def mark(self, now: float, name: str) -> list[str]:
        """Queue a mark; returns marks to acknowledge now (this one too if nothing is queued)."""
        acks = self.advance(now)
        if self._busy_until <= now:
            self._reach(name, self._queued)
            acks.append(name)
        else:
            self._marks.append((self._busy_until, name, self._queued))
        return acks

    def advance(self, now: float) -> list[str]:
        """Play up to ``now``; returns the marks playout reached."""
        chunks = self._chunks
        while chunks and chunks[0][0] + len(chunks[0][1]) / BYTES_PER_S <= now:
            start, data, _ = chunks.popleft()
            self._hear(start, data)
        acks: list[str] = []
        marks = self._marks
        while marks and marks[0][0] <= now:
            _, name, pos = marks.popleft()
            self._reach(name, pos)
            acks.append(name)
        return acks

    def clear(self, now: float) -> list[str]:
        """Drop queued audio; returns every pending mark (those reached first, then the rest)."""
        acks = self.advance(now)
        played = self._cut_head(now)
        returned = tuple(name for _, name, _ in self._marks)
        self.clears.append(ClearRecord(
            at_ms=now * 1000,
            segment_played_ms=(played - self._mark_pos) / 8,
            next_mark=self._marks[0][1] if self._marks else None,
            last_played_mark=self.last_mark,
            heard_ms=len(self.heard) / 8,
            dropped_ms=(self._queued - played) / 8,
            marks_returned=returned,
        ))
        self._chunks.clear()
        self._marks.clear()
        self._queued = self._mark_pos = played
        self._busy_until = now
        return acks + list(returned)

    def finish(self, now: float) -> None:
        """The call ended: count what played up to ``now``, including a partial chunk."""
        self.advance(now)
        self._cut_head(now)
        self._chunks.clear()
        self._marks.clear()
        self._busy_until = min(self._busy_until, now)

    # -- state ----------------------------------------------------------------------------

    def playing(self, now: float) -> bool:
        return self._busy_until > now

    @property
    def audio_end_s(self) -> float | None:
        """When the last agent audio finished (or will finish) playing; None before any audio."""
        return self._busy_until if self._any_audio else None

    @property
    def pending_marks(self) -> int:
        return len(self._marks)

    @property
    def heard_spans(self) -> list[HeardSpan]:
        return [HeardSpan(off * 1000, int(start), int(length)) for off, start, length in self._spans]

    # -- internals ------------------------------------------------------------------------

    def _reach(self, name: str, pos: int) -> None:
        self.last_mark = name
        self._mark_pos = pos

    def _cut_head(self, now: float) -> int:
        """Hear the part of the playing chunk before ``now``; returns the played byte position."""
        if not self._chunks:
            return self._queued
        start, data, pos = self._chunks[0]
        if start >= now:
            return pos
        n = min(len(data), int((now - start) * BYTES_PER_S + 1e-6))
        self._hear(start, data[:n])
        return pos + n

    def _hear(self, start: float, data: bytes) -> None:
        spans = self._spans
        if spans:
            last = spans[-1]
            if abs(last[0] + last[2] / BYTES_PER_S - start) < 1e-6:
                last[2] += len(data)
                self.heard += data
                return
        spans.append([start, len(self.heard), len(data)])
        self.heard += data
