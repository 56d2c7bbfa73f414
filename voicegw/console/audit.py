"""The audit trail of operator authentication, in the application log.

Every successful console login is logged, and every failed credential and every refusal during a
lockout, with the client address and the outcome. Lines never carry the offered secret or a
configured token: the callers pass only the client key, the route kind and counts.

Failure lines come from whoever sends requests, so a flood of them could bury everything else
in the log: at most `burst` of them are written per `period_s`, and the first line after a quiet
spell says how many were left out.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger("voicegw.console.auth")


class AuthAudit:
    def __init__(self, clock: Callable[[], float] = time.monotonic, burst: int = 20, period_s: float = 60.0) -> None:
        self.clock = clock
        self.burst = burst
        self.period_s = period_s
        self._window_start = float("-inf")
        self._written = 0
        self.suppressed = 0  # failure lines left out in the current period

    def success(self, msg: str, *args: Any) -> None:
        log.info(msg, *args)

    def failure(self, msg: str, *args: Any) -> None:
        now = self.clock()
        if now - self._window_start >= self.period_s:
            self._window_start, self._written = now, 0
        if self._written >= self.burst:
            self.suppressed += 1
            return
        self._written += 1
        if self.suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        log.warning(msg, *args)
