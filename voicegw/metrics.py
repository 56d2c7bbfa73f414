"""What a gateway process tells Prometheus, and the per-call log lines.

Two sources feed the metrics:

* the gateway's own counts (calls started and ended, admission, streams refused, relayed or
  handed over, pre-warms, model connects), counted where they happen (voicegw.gateway);
* every call-log entry a call performs (voicegw.calllog.entries): `CallObserver` wraps the call
  log sink, so turn latency, barge-ins, tools, model errors, reconnects and rollovers are derived
  from the record the call writes anyway. The call core never hears of metrics; the bridge only
  times a sample of frames (voicegw.call.probe).

The same observer writes one INFO line per call start, end, tool call, barge-in, error, reconnect
and rollover switch, each with the call's `call_sid` (and no argument, result or transcript text:
those may hold what the caller said).

Registries. Each `Metrics` has its own `CollectorRegistry`, so several gateways in one process
(the test harness) count apart and never collide on registration. With `PROMETHEUS_MULTIPROC_DIR`
set (`voicegw serve --workers N` sets a private one, voicegw.workers), prometheus_client keeps
every value in a file per process in that directory and `render` aggregates all of them with a
`MultiProcessCollector`: whichever worker answers a scrape reports the sum of all workers. Gauges
are `livesum` there (the workers alive now), counters and histograms add up over every worker that
ever ran. The process_* and python_* collectors are per process and are exposed only when there is
one process; with workers, watch the container's CPU and memory instead (cAdvisor, kubelet).

Cardinality is bounded: no label carries a CallSid; tool names and model error codes are free text
coming from the model, so beyond `MAX_LABEL_VALUES` distinct values per label they count as "other".
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

from voicegw.calllog.entries import CallInfo, CallLogEntry, CallLogSink

if TYPE_CHECKING:
    from voicegw.tracing import CallTracer

log = logging.getLogger("voicegw.calls")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
MAX_LABEL_VALUES = 64  # distinct tool names / model error codes per label; the rest count as "other"

# The `_created` series double the series count and no dashboard reads them; multiprocess mode has
# none, so disabling them keeps single- and multi-process output alike. Process-wide, like
# prometheus_client's own default.
prometheus_client.disable_created_metrics()

# Turn latency (caller end of speech -> first agent audio sent): 300 ms-1.5 s is the usual range.
TURN_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# Gateway-added latency per frame: tens to hundreds of microseconds when healthy.
ADDED_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
TOOL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONNECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus_client runs in multiprocess mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class _Bounded:
    """Label values from a bounded vocabulary: the first `limit` distinct ones, then "other"."""

    __slots__ = ("_seen", "_limit")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: object) -> str:
        text = str(value or "none")[:64]
        if text in self._seen:
            return text
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(text)
        return text


class Metrics:
    """Every series a gateway process exposes (see docs/OBSERVABILITY.md for the list).

    The plain int attributes (`calls_started`, `calls_ended`, ...) are this process's own counts,
    for tests and logs; the exposition is prometheus_client's."""

    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        reg = self.registry = CollectorRegistry(auto_describe=True)
        if self.multiprocess_dir is None:
            prometheus_client.ProcessCollector(registry=reg)
            prometheus_client.PlatformCollector(registry=reg)
            prometheus_client.GCCollector(registry=reg)
        self.calls_started = 0
        self.calls_ended = 0
        self.prewarm_unclaimed = 0
        self.model_connect_failures = 0
        self._calls_refused = 0
        self._streams_relayed = 0
        self.streams_handed_over = 0

        # calls
        self.c_calls_started = Counter("voicegw_calls_started", "Calls created (webhook pre-warm or stream start).",
                                       registry=reg)
        self.c_calls_ended = Counter("voicegw_calls_ended", "Calls ended, by end reason.", ["reason"], registry=reg)
        self.g_calls_active = Gauge("voicegw_calls_active", "Calls in progress (pre-warmed ones included).",
                                    registry=reg, multiprocess_mode="livesum")
        self.g_prewarms_active = Gauge("voicegw_prewarms_active",
                                       "Pre-warmed model sessions whose media stream has not started yet.",
                                       registry=reg, multiprocess_mode="livesum")
        self.c_rejected = Counter("voicegw_calls_rejected", "Webhooks answered with the overflow TwiML, by reason "
                                  "(full, draining).", ["reason"], registry=reg)
        self.c_streams_refused = Counter("voicegw_streams_refused", "Media streams refused, by reason "
                                         "(invalid_token, token_reused, full).", ["reason"], registry=reg)
        self.c_streams_relayed = Counter("voicegw_streams_relayed", "Media streams relayed to the worker or replica "
                                         "that pre-warmed their call.", registry=reg)
        self.c_streams_handed_over = Counter("voicegw_streams_handed_over", "Media stream connections passed, before "
                                             "they opened, to the worker that pre-warmed their call.", registry=reg)
        self.c_prewarm_unclaimed = Counter("voicegw_prewarm_unclaimed", "Pre-warmed calls whose stream never came.",
                                           registry=reg)
        # model
        self.c_connect_failures = Counter("voicegw_model_connect_failures", "Model session connects that failed.",
                                          registry=reg)
        self.h_connect = Histogram("voicegw_model_connect_seconds", "Time to open a model session, by outcome.",
                                   ["ok"], buckets=CONNECT_BUCKETS, registry=reg)
        self.c_model_errors = Counter("voicegw_model_errors", "Model errors logged by calls, by code.", ["code"],
                                      registry=reg)
        self.c_reconnects = Counter("voicegw_reconnects", "Reconnects after a lost model session, by outcome.",
                                    ["ok"], registry=reg)
        self.c_rollovers = Counter("voicegw_rollovers", "Model sessions rolled over to a new one.", registry=reg)
        self.h_first_audio = Histogram("voicegw_model_first_audio_seconds", "Model response started -> its first "
                                       "audio delta, by response kind.", ["kind"], buckets=TURN_BUCKETS, registry=reg)
        # conversation
        self.h_turn = Histogram("voicegw_turn_latency_seconds", "Caller end of speech -> first agent audio sent to "
                                "the caller.", buckets=TURN_BUCKETS, registry=reg)
        self.c_barge_ins = Counter("voicegw_barge_ins", "Barge-ins (the caller cut the agent off), by cause.",
                                   ["cause"], registry=reg)
        self.c_truncates = Counter("voicegw_truncates", "Agent items settled at a barge-in, by action "
                                   "(truncate, delete, none).", ["action"], registry=reg)
        self.h_tool = Histogram("voicegw_tool_duration_seconds", "Tool run time, by tool and outcome.",
                                ["tool", "outcome"], buckets=TOOL_BUCKETS, registry=reg)
        self.c_bad_frames = Counter("voicegw_bad_frames", "Bad frames skipped, by source (telephony: every bad "
                                    "frame; model: the bad audio deltas logged, at most 5 a call).", ["source"],
                                    registry=reg)
        # the gateway itself
        self.h_added = Histogram("voicegw_gateway_added_latency_seconds", "A sampled frame's arrival -> its send "
                                 "completing on the other socket, by direction.", ["direction"],
                                 buckets=ADDED_BUCKETS, registry=reg)
        self._added = {d: self.h_added.labels(d) for d in ("to_model", "to_caller")}
        # post-call events (voicegw.events), by event type
        self.c_events_delivered = Counter("voicegw_events_delivered", "Webhook events delivered (a 2xx answer), "
                                          "by type.", ["type"], registry=reg)
        self.c_events_failed = Counter("voicegw_events_failed", "Webhook events given up on (the last attempt "
                                       "failed, or 410 Gone), by type.", ["type"], registry=reg)
        self.c_events_retried = Counter("voicegw_events_retried", "Webhook delivery attempts that failed and "
                                        "will be tried again, by type.", ["type"], registry=reg)
        self.c_events_dropped = Counter("voicegw_events_dropped", "Webhook events never stored (backlog full or "
                                        "the database refused them).", registry=reg)
        self._tool_label = _Bounded()
        self._code_label = _Bounded()

    # ------------------------------------------------------------------------- exposition
    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's aggregate."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        reg = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(reg, path=self.multiprocess_dir)
        return generate_latest(reg)

    # ----------------------------------------------------------------- gateway counts
    def call_started(self) -> None:
        self.calls_started += 1
        self.c_calls_started.inc()

    def call_ended(self, reason: str) -> None:
        self.calls_ended += 1
        self.c_calls_ended.labels(reason).inc()

    def active(self, calls: int, prewarms: int) -> None:
        self.g_calls_active.set(calls)
        self.g_prewarms_active.set(prewarms)

    def rejected(self, reason: str) -> None:
        self.c_rejected.labels(reason).inc()

    def stream_refused(self, reason: str) -> None:
        self._calls_refused += 1
        self.c_streams_refused.labels(reason).inc()

    @property
    def calls_refused(self) -> int:
        return self._calls_refused

    def stream_relayed(self) -> None:
        self._streams_relayed += 1
        self.c_streams_relayed.inc()

    @property
    def streams_relayed(self) -> int:
        return self._streams_relayed

    def stream_handed_over(self) -> None:
        self.streams_handed_over += 1
        self.c_streams_handed_over.inc()

    def prewarm_expired(self) -> None:
        self.prewarm_unclaimed += 1
        self.c_prewarm_unclaimed.inc()

    def model_connect(self, seconds: float, ok: bool) -> None:
        self.h_connect.labels("true" if ok else "false").observe(seconds)
        if not ok:
            self.model_connect_failures += 1
            self.c_connect_failures.inc()

    # ------------------------------------------------------- bridge samples (voicegw.call.probe)
    def added_latency(self, direction: str, seconds: float) -> None:
        self._added[direction].observe(seconds)

    def model_first_audio(self, kind: str, seconds: float) -> None:
        self.h_first_audio.labels(kind).observe(seconds)

    # ------------------------------------------------------------------- call-log entries
    def entry(self, e: CallLogEntry, new_barge_in: bool) -> None:
        kind, d = e.kind, e.data
        if kind == "turn.latency":
            self.h_turn.observe(float(d.get("latency_ms", 0.0)) / 1000.0)
        elif kind == "barge_in":
            if new_barge_in:
                self.c_barge_ins.labels(str(d.get("cause", "speech"))).inc()
            self.c_truncates.labels(str(d.get("action", "none"))).inc()
        elif kind == "tool.result":
            outcome = "ok" if d.get("ok") else "error"
            self.h_tool.labels(self._tool_label(d.get("name")), outcome).observe(float(d.get("duration_ms", 0.0)) / 1000)
        elif kind == "error":
            code = d.get("code")
            if d.get("source") == "model":
                if code == "bad_audio":
                    self.c_bad_frames.labels("model").inc()
                self.c_model_errors.labels(self._code_label(code)).inc()
            elif code == "bad_frame":
                self.c_bad_frames.labels("telephony").inc()
        elif kind == "reconnect":
            self.c_reconnects.labels("true" if d.get("ok") else "false").inc()
        elif kind == "rollover":
            if d.get("phase") == "switched":
                self.c_rollovers.inc()


# ---------------------------------------------------------------------------------------------
# The call observer: metrics, log lines and spans from the entries a call performs
# ---------------------------------------------------------------------------------------------

@dataclass
class _CallView:
    info: CallInfo
    turns: int = 0
    tools: int = 0
    errors: int = 0
    bad_frames_logged: int = 0
    last_barge_in: tuple[float, str] | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the call.ended entry's data


class CallObserver:
    """Fed every entry of every call (`wrap` a call log sink); keeps a small view per call."""

    def __init__(self, metrics: Metrics, tracer: CallTracer | None = None, worker: str = "") -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.worker = worker  # which worker of `serve --workers` has the call (on its start line)
        self._calls: dict[str, _CallView] = {}

    def wrap(self, sink: CallLogSink) -> CallLogSink:
        return ObservedSink(sink, self)

    def call_started(self, info: CallInfo) -> None:
        self._calls[info.call_sid] = _CallView(info)
        log.info("call started (agent %s, to %s)", info.agent or "-", info.to_number or "-",
                 extra={"call_sid": info.call_sid, "agent": info.agent, "worker": self.worker})
        if self.tracer is not None:
            self.tracer.call_started(info)

    def event(self, call_sid: str, e: CallLogEntry) -> None:
        view = self._calls.get(call_sid)
        if view is None:
            return
        new_barge_in = False
        kind, d = e.kind, e.data
        extra = {"call_sid": call_sid}
        if kind == "barge_in":
            # one barge-in settles each unheard item, each with an entry of the same instant
            key = (e.t, str(d.get("cause")))
            new_barge_in = key != view.last_barge_in
            view.last_barge_in = key
            log.info("barge-in (%s): %s item at %s of %s ms", d.get("cause"), d.get("action"), d.get("audio_end_ms"),
                     d.get("produced_ms"), extra=extra)
        elif kind == "turn.latency":
            view.turns += 1
        elif kind == "tool.result":
            view.tools += 1
            log.info("tool %s %s in %.0f ms", d.get("name"), "ok" if d.get("ok") else f"failed ({d.get('error')})",
                     float(d.get("duration_ms", 0.0)), extra=extra)
        elif kind == "error":
            view.errors += 1
            if d.get("code") == "bad_frame":
                view.bad_frames_logged += 1
            log.info("error (%s, %s): %s", d.get("source"), d.get("code"), d.get("message"), extra=extra)
        elif kind == "reconnect":
            log.info("model reconnect %s (attempt %s)%s", "ok" if d.get("ok") else "failed", d.get("attempt"),
                     f": {d.get('error')}" if d.get("error") else "", extra=extra)
        elif kind == "rollover" and d.get("phase") in ("switched", "failed"):
            log.info("model session rollover %s", d.get("phase"), extra=extra)
        elif kind == "call.ended":
            view.summary = dict(d)
        self.metrics.entry(e, new_barge_in)
        if self.tracer is not None:
            self.tracer.entry(call_sid, e)

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None:
        view = self._calls.pop(call_sid, None)
        if view is None:
            return
        s = view.summary
        duration = s.get("duration_s", round(ended_at - view.info.started_at, 3))
        unlogged = int(s.get("bad_frames", 0) or 0) - view.bad_frames_logged  # only the first 20 are entries
        if unlogged > 0:
            self.metrics.c_bad_frames.labels("telephony").inc(unlogged)
        log.info("call ended: %s after %.1f s, %d turns, %d tool calls, %s barge-ins, %s reconnects, %s rollovers, "
                 "%d errors", reason, float(duration), view.turns, view.tools, s.get("barge_ins", 0),
                 s.get("reconnects", 0), s.get("rollovers", 0), view.errors,
                 extra={"call_sid": call_sid, "end_reason": reason, "duration_s": duration, "turns": view.turns})
        if self.tracer is not None:
            self.tracer.call_ended(call_sid, reason, ended_at)

    def model_connect(self, call_sid: str | None, started: float, ended: float, ok: bool, error: str = "") -> None:
        """A model session connect attempt (wall-clock times)."""
        self.metrics.model_connect(ended - started, ok)
        if self.tracer is not None and call_sid:
            self.tracer.model_connect(call_sid, started, ended, ok, error)


class ObservedSink:
    """A call log sink that shows every entry to a `CallObserver` first, then passes it on."""

    __slots__ = ("inner", "observer")

    def __init__(self, inner: CallLogSink, observer: CallObserver) -> None:
        self.inner = inner
        self.observer = observer

    def call_started(self, info: CallInfo) -> None:
        self._observe(self.observer.call_started, info)
        self.inner.call_started(info)

    def event(self, call_sid: str, event: CallLogEntry) -> None:
        self._observe(self.observer.event, call_sid, event)
        self.inner.event(call_sid, event)

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None:
        self._observe(self.observer.call_ended, call_sid, reason, ended_at)
        self.inner.call_ended(call_sid, reason, ended_at)

    @staticmethod
    def _observe(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - observing must never cost the call or its record
            log.exception("call observer failed")
