"""Counting bad telephony frames, and telling a burst from a flood.

A bad frame is logged and skipped, never the end of a call (DESIGN.md "Edges are hostile"): a
glitching proxy or a buggy provider can send a few thousand at once, and the caller is still
there. Only a *sustained* flood -- every one of `FLOOD_SECONDS` consecutive seconds with more than
`FLOOD_PER_SECOND` bad frames (Twilio sends 50 good ones a second) -- ends the call: that is no
longer a phone call but someone spending our CPU and the call's model session. A burst of 2,000
bad frames in one or two seconds does not come near it.

O(1) per frame: one counter for the current second and the length of the current streak.
"""
from __future__ import annotations

import math

FLOOD_PER_SECOND = 50
FLOOD_SECONDS = 30


class BadFrameMeter:
    __slots__ = ("total", "_second", "_in_second", "_streak", "_last_flooded")

    def __init__(self) -> None:
        self.total = 0
        self._second = -math.inf  # the whole second being counted (clock seconds, floored)
        self._in_second = 0
        self._streak = 0  # consecutive flooded seconds, up to and including `_last_flooded`
        self._last_flooded = -math.inf

    def bad(self, now: float) -> bool:
        """Count one bad frame at `now`; True when the flood has been sustained long enough."""
        self.total += 1
        second = math.floor(now)
        if second != self._second:
            self._second = second
            self._in_second = 0
        self._in_second += 1
        if self._in_second == FLOOD_PER_SECOND + 1:  # this second just became a flooded one
            self._streak = self._streak + 1 if self._last_flooded == second - 1 else 1
            self._last_flooded = second
            return self._streak >= FLOOD_SECONDS
        return False

    @property
    def streak_s(self) -> int:
        return self._streak
