"""Failed-credential throttling per client, for the operator console and API.

Operator tokens should be long random strings that no amount of guessing finds; the throttle is
for the tokens that are not, and for keeping a guessing client cheap to turn away. The defaults:

- 5 failures within 60 s lock the client out for 60 s. Five is enough for an operator who mistypes
  a pasted token a few times; a minute is short enough that they are not locked out of a live call
  for long.
- Each further failure before the client has been quiet for 15 minutes locks it again at once,
  for twice as long as last time (60, 120, 240 s), capped at 300 s. A persistent guesser is thus
  held to one attempt per five minutes (under 300 a day), while an operator who typed a token
  wrong waits at most a few minutes.
- A success from the client forgets its failures.
- At most 10 000 clients are tracked (a few MB). The table is ordered by last failure; clients
  quiet for 15 minutes are dropped from its front, and when it is full of recent failures the
  least recently failing client is evicted, so a flood of addresses costs bounded memory. Such an
  attacker gets a few attempts per address whatever the table size; the bound is about memory.

The class is a plain object driven by a clock, with no I/O, so that tests can move time.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Limits:
    max_failures: int = 5  # within window_s, before the first lockout
    window_s: float = 60.0
    lockout_s: float = 60.0  # the first lockout; each further one doubles
    max_lockout_s: float = 300.0
    forget_s: float = 900.0  # quiet time after which a client's failures and lockouts are forgotten
    max_clients: int = 10_000

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_clients < 1 or self.lockout_s <= 0:
            raise ValueError("max_failures, max_clients and lockout_s must be positive")
        if self.max_lockout_s < self.lockout_s:
            raise ValueError("max_lockout_s must be at least lockout_s")
        if self.forget_s < max(self.window_s, self.max_lockout_s):
            # an entry must outlive its window and its lockout, or forgetting it would free the client
            raise ValueError("forget_s must be at least window_s and max_lockout_s")


@dataclass(frozen=True)
class Failure:
    failures: int  # failures counted in the current window (max_failures when this one locked)
    locked_for: int  # seconds of lockout this failure started; 0 when it did not


class _Client:
    __slots__ = ("failures", "locked_until", "lockouts", "last_failure")

    def __init__(self) -> None:
        self.failures: list[float] = []
        self.locked_until = 0.0
        self.lockouts = 0
        self.last_failure = 0.0


class AuthThrottle:
    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self.evicted = 0  # clients dropped while still remembered, because the table was full

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, key: str) -> int:
        """Whole seconds until `key` may try a credential again; 0 when it may now."""
        now = self.clock()
        client = self._clients.get(key)
        if client is None:
            return 0
        if self._forgotten(client, now):
            del self._clients[key]
            return 0
        return math.ceil(client.locked_until - now) if client.locked_until > now else 0

    def failure(self, key: str) -> Failure:
        now = self.clock()
        lim = self.limits
        self._prune(now)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= lim.max_clients:
                self._clients.popitem(last=False)
                self.evicted += 1
            client = self._clients[key] = _Client()
        else:
            self._clients.move_to_end(key)
        client.last_failure = now
        client.failures = [t for t in client.failures if now - t < lim.window_s]
        client.failures.append(now)
        count = len(client.failures)
        if count < lim.max_failures and client.lockouts == 0:
            return Failure(count, 0)
        locked_for = min(lim.lockout_s * 2 ** min(client.lockouts, 32), lim.max_lockout_s)
        client.locked_until = now + locked_for
        client.lockouts += 1
        client.failures.clear()
        return Failure(max(count, lim.max_failures), math.ceil(locked_for))

    def success(self, key: str) -> bool:
        """Forget `key`'s failures; True when there were any to forget."""
        return self._clients.pop(key, None) is not None

    def _forgotten(self, client: _Client, now: float) -> bool:
        return now >= client.locked_until and now - client.last_failure >= self.limits.forget_s

    def _prune(self, now: float) -> None:
        # ordered by last failure, and forget_s covers every lockout: the forgotten ones are in front
        while self._clients:
            key, client = next(iter(self._clients.items()))
            if not self._forgotten(client, now):
                return
            del self._clients[key]
