"""Timing samples the bridge takes for metrics, at a bounded cost on the audio path.

* **Gateway-added latency**, per direction: one frame in `SAMPLE_EVERY` (a caller frame to the
  model, a model audio delta to the caller) is timed from the moment the bridge is handed it
  (after the socket read and parse) to the completion of its send on the other socket -- the
  call core's work, the writer's queue and the send itself. A writer that queues has its `send`
  wrapped by a plain function that compares one reference (not a coroutine layer); a writer that
  sends at once (`sync`) costs nothing: the bridge `settle`s the sample when its work returns.
* **Model first audio**: a response's `response.started` -> its first audio delta, by the kind
  of response voicegw asked for (turn, greeting, filler, goodbye, apology).

`CallProbe` only measures; what it measures goes to a `LatencySink` (voicegw.metrics.Metrics).
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Generic, Protocol, TypeVar

from voicegw.realtime import events as ev

SAMPLE_EVERY = 50  # one frame a second per direction at 20 ms frames
KINDS = frozenset({"turn", "greeting", "filler", "goodbye", "apology"})
MAX_STARTED = 16  # responses awaiting their first audio (a few at most in a healthy call)

T = TypeVar("T")


class LatencySink(Protocol):
    def added_latency(self, direction: str, seconds: float) -> None: ...

    def model_first_audio(self, kind: str, seconds: float) -> None: ...


class Sampler(Generic[T]):
    """Times one item in `every` from its arrival to the completion of its send."""

    __slots__ = ("_every", "_seen", "_item", "_t0", "_clock", "_observe", "sync")

    def __init__(self, observe: Callable[[float], None], clock: Callable[[], float], every: int = SAMPLE_EVERY):
        self._every = every
        self._seen = 0
        self._item: object = None
        self._t0 = 0.0
        self._clock = clock
        self._observe = observe
        self.sync = False  # the items are sent by a writer that sends at once: see `settle`

    def due(self) -> bool:
        """Count an arriving item; True when it should be timed (until one is `track`ed)."""
        self._seen += 1
        return self._seen >= self._every

    def track(self, item: T, t0: float) -> None:
        """`item` (queued on a writer wrapped by `wrap`) arrived at `t0`: time its send."""
        self._seen = 0
        self._item = item
        self._t0 = t0

    def wrap(self, send: Callable[[T], Awaitable[None]]) -> Callable[[T], Awaitable[None]]:
        def send_sampled(item: T) -> Awaitable[None]:
            if item is not self._item:
                return send(item)
            self._item = None
            return self._timed(send(item), self._t0)
        return send_sampled

    def settle(self) -> None:
        """The work that sent the tracked item returned: with a `sync` writer its send is complete."""
        if self.sync and self._item is not None:
            self._item = None
            self._observe(self._clock() - self._t0)

    async def _timed(self, sending: Awaitable[None], t0: float) -> None:
        await sending
        self._observe(self._clock() - t0)


class CallProbe:
    """The samples of one call."""

    __slots__ = ("up", "down", "_sink", "_started")

    def __init__(self, sink: LatencySink, clock: Callable[[], float], every: int = SAMPLE_EVERY) -> None:
        self._sink = sink
        self.up: Sampler[Any] = Sampler(lambda s: sink.added_latency("to_model", s), clock, every)
        self.down: Sampler[str] = Sampler(lambda s: sink.added_latency("to_caller", s), clock, every)
        self._started: dict[str, tuple[float, str]] = {}

    def plain_audio(self) -> bool:
        """Whether the next audio delta needs nothing of `model_event`: no response awaits its first
        audio, and the delta is not one to time (counted as `model_event` counts it)."""
        return not self._started and not self.down.due()

    def model_event(self, e: ev.ServerEvent, now: float) -> bool:
        """Note a model event; True when the caller frames it produces should be timed."""
        kind = type(e)
        if kind is ev.AudioDelta:
            if self._started:
                started = self._started.pop(e.response_id, None)  # type: ignore[union-attr]
                if started is not None:
                    self._sink.model_first_audio(started[1], now - started[0])
            return self.down.due()
        if kind is ev.ResponseStarted and len(self._started) < MAX_STARTED:
            label = str((e.metadata or {}).get("voicegw") or "turn")  # type: ignore[union-attr]
            self._started[e.response_id] = (now, label if label in KINDS else "other")  # type: ignore[union-attr]
        elif kind is ev.ResponseDone:
            self._started.pop(e.response_id, None)  # type: ignore[union-attr]
        return False
