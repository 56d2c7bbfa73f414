"""Optional OpenTelemetry traces of calls (`pip install voicegw[otel]`).

One span per call, with child spans per caller turn (end of speech -> first agent audio), per tool
run and per model session connect, plus span events for barge-ins, errors, reconnects and
rollovers. They are built from the call-log entries the call writes anyway (voicegw.metrics.
CallObserver), with the entries' own timestamps, so the call core knows nothing of tracing.

When: `from_env()` returns a tracer only if the OpenTelemetry API is importable and either a
tracer provider is already installed globally (e.g. `opentelemetry-instrument voicegw serve`), or
the standard environment asks for an exporter: `OTEL_TRACES_EXPORTER` (console, otlp, ... any
exporter registered under the `opentelemetry_traces_exporter` entry point; the OTLP ones come with
`opentelemetry-exporter-otlp`), or `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
(then `otlp`). `OTEL_SERVICE_NAME` defaults to "voicegw"; the SDK reads the other `OTEL_*`
variables (resource attributes, batch processor, exporter settings) itself. Without the extra,
or without such configuration, nothing is imported and nothing happens.

Spans carry the CallSid, agent and end reason; never a phone number, transcript or tool argument.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voicegw.calllog.entries import CallInfo, CallLogEntry

log = logging.getLogger("voicegw.tracing")

EVENT_KINDS = ("barge_in", "error", "reconnect", "rollover", "agent.switched", "dtmf")


def _ns(t: float) -> int:
    return int(t * 1e9)


@dataclass
class _CallSpans:
    span: Any
    context: Any
    turn: tuple[Any, float] | None = None  # the open turn span and when it began
    tools: dict[str, Any] = field(default_factory=dict)  # call_id -> open tool span


class CallTracer:
    """Spans of the calls in progress, from their entries. `provider` is shut down by `close`."""

    def __init__(self, tracer: Any, provider: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._provider = provider
        self._calls: dict[str, _CallSpans] = {}

    def call_started(self, info: CallInfo) -> None:
        span = self._tracer.start_span("call", start_time=_ns(info.started_at), kind=self._trace.SpanKind.SERVER,
                                       attributes={"voicegw.call_sid": info.call_sid, "voicegw.agent": info.agent})
        self._calls[info.call_sid] = _CallSpans(span, self._trace.set_span_in_context(span))

    def _child(self, call: _CallSpans, name: str, t: float, attributes: Mapping[str, Any]) -> Any:
        return self._tracer.start_span(name, context=call.context, start_time=_ns(t), attributes=dict(attributes))

    def entry(self, call_sid: str, e: CallLogEntry) -> None:
        call = self._calls.get(call_sid)
        if call is None:
            return
        kind, d = e.kind, e.data
        if kind == "speech.stopped":
            if call.turn is not None:  # the caller spoke again before any answer
                call.turn[0].set_attribute("voicegw.answered", False)
                call.turn[0].end(end_time=_ns(e.t))
            call.turn = (self._child(call, "turn", e.t, {}), e.t)
        elif kind == "turn.latency" and call.turn is not None:
            span = call.turn[0]
            span.set_attributes({"voicegw.latency_ms": float(d.get("latency_ms", 0.0)), "voicegw.answered": True})
            span.end(end_time=_ns(e.t))
            call.turn = None
        elif kind == "tool.call":
            call.tools[str(d.get("call_id"))] = self._child(call, f"tool {d.get('name')}", e.t,
                                                            {"voicegw.tool": str(d.get("name"))})
        elif kind == "tool.result":
            span = call.tools.pop(str(d.get("call_id")), None)
            if span is not None:
                span.set_attributes({"voicegw.ok": bool(d.get("ok")), "voicegw.duration_ms": float(d.get("duration_ms", 0))})
                if not d.get("ok"):
                    span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(d.get("error"))))
                span.end(end_time=_ns(e.t))
        elif kind in EVENT_KINDS:
            attrs = {f"voicegw.{k}": v for k, v in d.items()
                     if k not in ("message", "digit") and isinstance(v, (str, bool, int, float))}
            call.span.add_event(kind, attributes=attrs, timestamp=_ns(e.t))
        elif kind == "call.ended":
            call.span.set_attributes({f"voicegw.{k}": v for k, v in d.items() if isinstance(v, (str, bool, int, float))})

    def model_connect(self, call_sid: str, started: float, ended: float, ok: bool, error: str = "") -> None:
        call = self._calls.get(call_sid)
        if call is None:
            return
        span = self._child(call, "model.connect", started, {"voicegw.ok": ok})
        if not ok:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end(end_time=_ns(ended))

    def call_ended(self, call_sid: str, reason: str, ended_at: float) -> None:
        call = self._calls.pop(call_sid, None)
        if call is None:
            return
        end = _ns(ended_at)
        if call.turn is not None:
            call.turn[0].set_attribute("voicegw.answered", False)
            call.turn[0].end(end_time=end)
        for span in call.tools.values():
            span.set_attribute("voicegw.cancelled", True)
            span.end(end_time=end)
        call.span.set_attribute("voicegw.end_reason", reason)
        call.span.end(end_time=end)

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()  # flushes the batch processor


def _exporter_name(env: Mapping[str, str]) -> str | None:
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if name:
        return None if name == "none" else name.split(",")[0].strip()
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return None


def from_env(env: Mapping[str, str] | None = None) -> CallTracer | None:
    """The call tracer the environment asks for, or None (see the module docstring)."""
    env = os.environ if env is None else env
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return CallTracer(trace.get_tracer("voicegw"))  # installed by whoever runs us
    name = _exporter_name(env)
    if name is None:
        return None
    try:
        from importlib.metadata import entry_points

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for traces but opentelemetry-sdk is not installed (pip install voicegw[otel])")
        return None
    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        log.warning("no OpenTelemetry trace exporter named %r is installed (for otlp: pip install "
                    "opentelemetry-exporter-otlp); no traces", name)
        return None
    try:
        exporter = found[0].load()()
    except Exception as exc:  # noqa: BLE001 - a broken exporter must not stop the gateway
        log.warning("OpenTelemetry exporter %r failed to start: %s; no traces", name, exc)
        return None
    attrs = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "voicegw"}
    own = TracerProvider(resource=Resource.create(attrs))
    own.add_span_processor(BatchSpanProcessor(exporter))
    log.info("traces: OpenTelemetry, exporter %s", name)
    return CallTracer(own.get_tracer("voicegw"), own)
