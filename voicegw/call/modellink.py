"""Which model session serves the call, and when to replace it.

A call's model sessions are numbered links (1, 2, ...). `ModelLink` holds the decisions the call
core makes about them:

* **Reconnect policy.** An unplanned drop (network, server close) is retried at once, then with a
  short backoff (`BACKOFF_S`); each outage has that many attempts, each call `max_reconnects`
  outages. A reconnect on loopback takes a few ms; a cloud one a few hundred.
* **Connect budget.** Each outage -- the call's first session included -- has a time budget
  (`VOICEGW_MODEL_CONNECT_BUDGET`, 4 s): each attempt may take what is left of it, and when it is
  used up the call is given up (apology, overflow or hang-up) instead of leaving the caller in
  silence for a 10 s connect timeout plus retries. A healthy cloud connect takes 0.3-1 s.
* **Rollover.** The service ends every session after a fixed lifetime (60 min GA/OpenAI, 30 min
  preview). From `SOFT_FRACTION` of the lifetime a replacement is opened in the background and
  configured; the switch happens at the first quiet moment (nobody speaking, no response being
  generated, no tool in flight; agent audio already generated may still be playing), and is forced
  `HARD_MARGIN_S` before the end unless an answer is being generated.
* **Caller audio across a switch.** While no session is usable, caller frames are held (bounded);
  the last `TAIL_FRAMES` frames and the frames of an utterance in progress are kept so a new
  session hears what the old one was hearing. Frames are kept as they came from the provider
  (mu-law, base64 references, no copies) and converted when replayed.
"""
from __future__ import annotations

from collections import deque

BACKOFF_S = (0.0, 0.25, 0.75)  # delays before each attempt of one outage
SOFT_FRACTION = 0.9
HARD_MARGIN_S = 1.0
TAIL_FRAMES = 25  # 500 ms of pre-roll, more than the default 300 ms VAD prefix padding
MAX_UTTERANCE_FRAMES = 750  # 15 s: a longer utterance is replayed from its last 15 s
MAX_HELD_FRAMES = 250  # 5 s of caller audio held while no session is usable
MIN_ATTEMPT_S = 0.2  # an attempt with less budget left than this is not worth starting


class ModelLink:
    __slots__ = ("live", "ready", "opening", "purpose", "standby_ready", "attempt", "reconnects", "rollovers",
                 "opened_at", "soft_at", "hard_at", "overdue", "lifetime_s", "held", "tail", "utterance", "speaking", "max_reconnects",
                 "outage_deadline")

    def __init__(self, lifetime_s: float | None, max_reconnects: int) -> None:
        self.live = 0  # link serving the call (0: none yet)
        self.ready = False  # the live link is configured and takes audio
        self.opening = 0  # link being opened (0: none)
        self.purpose = ""  # why `opening` is being opened: first | reconnect | rollover
        self.standby_ready = False  # `opening` answered and was configured (rollover)
        self.attempt = 0  # attempts made in the current outage
        self.reconnects = 0
        self.rollovers = 0
        self.opened_at = 0.0  # when the live link became ready (clock)
        self.soft_at: float | None = None  # from then on, roll over at the first quiet moment
        self.hard_at: float | None = None  # roll over by then, unless an answer is being generated
        self.overdue = False  # past hard_at: the switch waits for the answer in progress to end
        self.lifetime_s = lifetime_s
        self.max_reconnects = max_reconnects
        self.held: deque[str] = deque(maxlen=MAX_HELD_FRAMES)
        self.tail: deque[str] = deque(maxlen=TAIL_FRAMES)
        self.utterance: deque[str] = deque(maxlen=MAX_UTTERANCE_FRAMES)
        self.speaking = False  # the live session reported speech_started and not yet speech_stopped
        self.outage_deadline: float | None = None  # a usable session by then, or the call is given up

    # --- caller audio -----------------------------------------------------------------------
    def caller_frame(self, ulaw_b64: str) -> None:
        """Remember a frame for replay (hot path: two deque appends; the caller lane,
        voicegw/call/callerlane.py, does the same with the deques it was armed with)."""
        self.tail.append(ulaw_b64)
        if self.speaking:
            self.utterance.append(ulaw_b64)

    def speech_started(self) -> None:
        self.speaking = True
        self.utterance.clear()
        self.utterance.extend(self.tail)  # the VAD's prefix padding

    def speech_stopped(self) -> None:
        self.speaking = False

    def transcribed(self) -> None:
        """The last utterance has its transcript: its audio is no longer needed."""
        if not self.speaking:
            self.utterance.clear()

    # --- opening ------------------------------------------------------------------------------
    def open_next(self, purpose: str) -> int:
        self.opening = max(self.live, self.opening) + 1
        self.purpose = purpose
        self.standby_ready = False
        return self.opening

    def became_live(self, link: int, now: float, expires_at: float | None) -> int:
        """`link` now serves the call; returns the link it replaces (0 if none).

        `expires_at` is when the service said it will end the session (clock time), if it did;
        the configured lifetime applies too, whichever comes first.
        """
        old = self.live
        self.live = link
        self.ready = True
        self.opening = 0
        self.standby_ready = False
        self.attempt = 0
        self.outage_deadline = None
        self.opened_at = now
        self.overdue = False
        ends = [t for t in (expires_at, now + self.lifetime_s if self.lifetime_s else None) if t is not None]
        if ends:
            span = max(0.0, min(ends) - now)
            margin = max(HARD_MARGIN_S, 0.01 * span)
            self.hard_at = now + max(0.0, span - margin)
            # short lifetimes (tests, previews) still leave a window between the two
            self.soft_at = now + max(0.0, min(SOFT_FRACTION * span, span - 2 * margin))
        else:
            self.soft_at = self.hard_at = None
        return old if old != link else 0

    def lost(self) -> None:
        """The live link is gone: nothing serves the call until another link becomes live."""
        self.ready = False
        self.soft_at = self.hard_at = None

    def outage_began(self, now: float, budget_s: float) -> None:
        """No usable session from now on (call start, or the live one was lost)."""
        self.attempt = 0
        self.outage_deadline = now + budget_s

    def attempt_timeout(self, now: float, delay_s: float) -> float | None:
        """How long an attempt starting after `delay_s` may take, or None when the budget is spent."""
        if self.outage_deadline is None:
            return None
        left = self.outage_deadline - (now + delay_s)
        return round(left, 3) if left >= MIN_ATTEMPT_S else None

    @property
    def connect_deadline(self) -> float | None:
        """When the attempt in flight for the call (not a rollover standby) runs out of budget."""
        return self.outage_deadline if self.opening and self.purpose in ("first", "reconnect") else None

    def next_backoff(self) -> float | None:
        """Delay before the next attempt of this outage, or None when the outage has used them all."""
        if self.attempt >= len(BACKOFF_S):
            return None
        delay = BACKOFF_S[self.attempt]
        self.attempt += 1
        return delay
