"""Observability: Prometheus metrics after real calls (in process, and aggregated over the workers of
a real `voicegw serve --workers 2`), the per-call log lines with their CallSid, OpenTelemetry spans
through the SDK's in-memory exporter, and the Grafana dashboard against the exposed series."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import AUTH_TOKEN, LONG_GREETING, SUPPORT_AGENT, running_gateway
from tests.proc import serve_process
from tests.speech import speech_pcm8k
from voicegw.call.probe import CallProbe, Sampler
from voicegw.realtime import events as ev
from voicegw.sim.caller import SimulatedCaller

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "voicegw.json"

# the local model calls a tool the caller names: a keypad press ("[keypad] 5") names `keypad`
AGENT = f"""
name: support
instructions: You are a friendly support agent for Acme.
greeting: "{LONG_GREETING}"
audio_mode: pcm16
turn_detection:
  type: server_vad
  threshold: 0.5
  silence_duration_ms: 500
tools:
  - name: keypad
    description: Note what the caller typed.
    python: {{entry: "voicegw_metrics_test_tools:keypad"}}
"""

SERIES = [
    "voicegw_turn_latency_seconds", "voicegw_model_first_audio_seconds", "voicegw_gateway_added_latency_seconds",
    "voicegw_tool_duration_seconds", "voicegw_model_connect_seconds", "voicegw_barge_ins_total",
    "voicegw_truncates_total", "voicegw_model_errors_total", "voicegw_reconnects_total", "voicegw_rollovers_total",
    "voicegw_calls_rejected_total", "voicegw_streams_refused_total", "voicegw_bad_frames_total",
    "voicegw_calls_started_total", "voicegw_calls_ended_total", "voicegw_streams_relayed_total",
    "voicegw_prewarm_unclaimed_total", "voicegw_model_connect_failures_total", "voicegw_calls_active",
    "voicegw_prewarms_active",
]
SUFFIXES = ("", "_bucket", "_sum", "_count")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series (0 when absent); labels given must all match."""
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{(.*?)}})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def check_help_and_type(text: str, every_series: bool = True) -> None:
    helped = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert helped == set(typed), helped ^ set(typed)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)  # type: ignore[union-attr]
            assert any(name == t + s for t in typed for s in SUFFIXES), f"no HELP/TYPE for {line!r}"
    for name in SERIES if every_series else ():
        assert name in typed, f"{name} is not exposed"
    assert typed["voicegw_turn_latency_seconds"] == "histogram"
    assert typed["voicegw_calls_started_total"] == "counter" and typed["voicegw_calls_active"] == "gauge"


@pytest.fixture
def keypad_tool(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    ran = asyncio.Event()
    mod = types.ModuleType("voicegw_metrics_test_tools")

    async def keypad(arguments: dict[str, Any], context: Any) -> dict[str, Any]:
        ran.set()
        return {"noted": True}

    mod.keypad = keypad  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "voicegw_metrics_test_tools", mod)
    return ran


async def barge_in_and_tool_call(url: str, tool_ran: asyncio.Event) -> Any:
    """A call whose caller talks over the long greeting, and once the answer to that has begun
    (so the speech turn is over) presses 5 and # (the keypad tool); hangs up after the tool's answer."""
    caller = SimulatedCaller(url, auth_token=AUTH_TOKEN)
    await caller.start()
    try:
        await caller.wait_for_audio(20)  # the greeting plays (for about 10 s)
        caller.speak(speech_pcm8k("Wait, stop please, I have a question."))
        await caller.wait_for_silence(300, 20)  # the greeting was cleared
        await caller.wait_for_audio(30, len(caller.result.media_times_ms) + 1)  # the answer begins
        for key in "5#":
            await caller.send_dtmf(key)
        async with asyncio.timeout(20):
            await tool_ran.wait()
        await caller.wait_for_audio(30, len(caller.result.media_times_ms) + 1)  # what the tool found
        await caller.wait_for_silence(1000, 40)
    finally:
        result = await caller.hang_up()
    return result


@pytest.mark.e2e
async def test_a_call_moves_the_histograms_and_counters_and_logs_its_lines(
        keypad_tool: asyncio.Event, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voicegw.calls")
    async with running_gateway(agent_yaml=AGENT) as gw, httpx.AsyncClient(timeout=10) as http:
        before = (await http.get(gw.url + "/metrics")).text
        result = await barge_in_and_tool_call(gw.url, keypad_tool)
        record = await gw.call_record(result.call_sid)
        reply = await http.get(gw.url + "/metrics")
    text = reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    check_help_and_type(before)
    check_help_and_type(text)
    assert record["barge_ins"] and record["tool_calls"], record

    assert sample(before, "voicegw_calls_started_total") == 0 and sample(before, "voicegw_barge_ins_total") == 0
    assert sample(text, "voicegw_calls_started_total") == 1
    assert sample(text, "voicegw_calls_ended_total", reason="caller_hangup") == 1
    assert sample(text, "voicegw_calls_active") == 0 and sample(text, "voicegw_prewarms_active") == 0
    assert sample(text, "voicegw_turn_latency_seconds_count") == len(record["latency"]) >= 1
    assert sample(text, "voicegw_turn_latency_seconds_bucket", le="+Inf") == len(record["latency"])
    assert sample(text, "voicegw_barge_ins_total", cause="speech") == 1
    assert sample(text, "voicegw_barge_ins_total") == len({(b["t"], b["cause"]) for b in record["barge_ins"]})
    assert sample(text, "voicegw_truncates_total", action="truncate") == \
        len([b for b in record["barge_ins"] if b["action"] == "truncate"]) >= 1
    assert sample(text, "voicegw_tool_duration_seconds_count", tool="keypad", outcome="ok") == 1
    assert sample(text, "voicegw_model_first_audio_seconds_count", kind="greeting") == 1
    assert sample(text, "voicegw_model_first_audio_seconds_count", kind="turn") >= 1
    assert sample(text, "voicegw_model_connect_seconds_count", ok="true") == 1
    # 50 caller frames a second, one in 50 timed
    assert sample(text, "voicegw_gateway_added_latency_seconds_count", direction="to_model") >= 3
    assert "process_cpu_seconds_total" in text  # one process: its own collectors

    lines = [r for r in caplog.records if r.name == "voicegw.calls"]
    assert lines and all(getattr(r, "call_sid", None) == result.call_sid for r in lines)
    msgs = [r.getMessage() for r in lines]
    assert msgs[0].startswith("call started") and msgs[-1].startswith("call ended: caller_hangup")
    assert any(m.startswith("barge-in (speech): truncate") for m in msgs), msgs
    assert any(m.startswith("tool keypad ok") for m in msgs), msgs


@pytest.mark.e2e
async def test_workers_serve_the_aggregate_of_every_worker_and_log_json_lines_with_the_call_sid() -> None:
    async with serve_process(workers=2, agent_yaml=SUPPORT_AGENT) as sp:
        sids: list[str] = []
        workers: set[str] = set()
        for _ in range(6):  # until the kernel has given calls to both workers
            callers = [SimulatedCaller(sp.url, auth_token=AUTH_TOKEN) for _ in range(3)]
            results = await asyncio.gather(*(c.run(duration_s=1.0, timeout_s=30) for c in callers))
            sids += [r.call_sid for r in results]
            await sp.wait_for_line("call ended", count=len(sids), timeout=20)
            workers = {ln.get("worker") for ln in sp.lines if str(ln.get("msg", "")).startswith("call started")}
            if len(workers) == 2:
                break
        assert len(workers) == 2, f"every call went to one worker: {workers}"
        texts = []
        for _ in range(8):  # fresh connections: the kernel hands them to either worker
            async with httpx.AsyncClient(timeout=5) as http:
                texts.append((await http.get(sp.url + "/metrics")).text)
        lines = list(sp.lines)
    for text in texts:
        assert sample(text, "voicegw_calls_started_total") == len(sids), text
        assert sample(text, "voicegw_calls_ended_total") == len(sids)
        assert sample(text, "voicegw_calls_active") == 0
        assert sample(text, "voicegw_model_first_audio_seconds_count", kind="greeting") == len(sids)
        check_help_and_type(text, every_series=False)  # workers: a family shows once observed
    assert [ln for ln in lines if ln.get("level") == "RAW"] == [], "a log line is not JSON"
    for sid in sids:
        mine = [ln for ln in lines if ln.get("call_sid") == sid]
        assert [ln for ln in mine if ln["msg"].startswith("call started")], sid
        ended = [ln for ln in mine if ln["msg"].startswith("call ended")]
        assert len(ended) == 1 and ended[0]["end_reason"] == "caller_hangup" and ended[0]["duration_s"] > 0
    assert AUTH_TOKEN not in json.dumps(lines)


@pytest.mark.e2e
async def test_opentelemetry_spans_of_a_call(keypad_tool: asyncio.Event) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from voicegw.tracing import CallTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running_gateway(agent_yaml=AGENT) as gw:
        gw.gateway.observer.tracer = CallTracer(provider.get_tracer("test"), provider)
        result = await barge_in_and_tool_call(gw.url, keypad_tool)
        record = await gw.call_record(result.call_sid)
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name == "call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.attributes["voicegw.call_sid"] == result.call_sid
    assert call.attributes["voicegw.end_reason"] == "caller_hangup"
    children = [s for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id]
    assert len(children) == len(spans) - 1, "a span outside the call"
    names = [s.name for s in children]
    assert names.count("model.connect") == 1 and names.count("tool keypad") == 1, names
    turns = [s for s in children if s.name == "turn" and s.attributes.get("voicegw.answered")]
    assert len(turns) == len(record["latency"]) >= 1
    for s in turns:  # timestamps come from the entries: the span lasts the logged latency
        assert abs((s.end_time - s.start_time) / 1e6 - s.attributes["voicegw.latency_ms"]) < 5
    assert any(e.name == "barge_in" for e in call.events)
    assert all(call.start_time <= s.start_time <= s.end_time <= call.end_time for s in children)


def test_tracing_is_off_without_configuration_or_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicegw import tracing

    assert tracing.from_env({}) is None
    assert tracing.from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
    tracer = tracing.from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert tracer is not None
    tracer.close()
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # not installed: import fails
    assert tracing.from_env({"OTEL_TRACES_EXPORTER": "console"}) is None


class _Sink:
    def __init__(self) -> None:
        self.added: list[tuple[str, float]] = []
        self.first: list[tuple[str, float]] = []

    def added_latency(self, direction: str, seconds: float) -> None:
        self.added.append((direction, seconds))

    def model_first_audio(self, kind: str, seconds: float) -> None:
        self.first.append((kind, seconds))


async def test_the_sampler_times_the_tracked_item_only_until_its_send_completes() -> None:
    now = [10.0]
    got: list[float] = []
    sampler: Sampler[str] = Sampler(got.append, lambda: now[0], every=3)
    sent: list[str] = []

    async def send(item: str) -> None:
        now[0] += 0.5
        sent.append(item)

    wrapped = sampler.wrap(send)
    assert [sampler.due() for _ in range(3)] == [False, False, True]
    assert sampler.due()  # still due: nothing was tracked
    a, b = "frame a", "frame b"
    sampler.track(b, 9.0)
    for item in (a, b, b):
        await wrapped(item)
    assert sent == [a, b, b] and got == [2.0]  # b's send completed at 11.0, it arrived at 9.0; timed once
    assert not sampler.due()


def test_model_first_audio_per_response_kind() -> None:
    sink = _Sink()
    probe = CallProbe(sink, lambda: 0.0, every=1000)
    probe.model_event(ev.ResponseStarted("r1", metadata={"voicegw": "greeting"}), 1.0)
    probe.model_event(ev.ResponseStarted("r2", metadata={"voicegw": "something odd"}), 1.0)
    probe.model_event(ev.AudioDelta("r1", "i1", "AAAA"), 1.25)
    probe.model_event(ev.AudioDelta("r1", "i1", "AAAA"), 1.5)  # not the first
    probe.model_event(ev.AudioDelta("r2", "i2", "AAAA"), 2.0)
    assert sink.first == [("greeting", 0.25), ("other", 1.0)]


def test_the_grafana_dashboard_queries_only_exposed_series() -> None:
    from voicegw.metrics import Metrics

    dashboard = json.loads(DASHBOARD.read_text())
    exposed = Metrics().render().decode()
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposed, re.M))
    names = {t + s for t, kind in typed.items() for s in (SUFFIXES if kind == "histogram" else ("",))}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 9
    for expr in exprs:
        used = set(re.findall(r"\b(voicegw_[a-z_]+)", expr))
        assert used and used <= names, f"{expr}: {used - names} not exposed"
    covered = {m for e in exprs for m in re.findall(r"\b(voicegw_[a-z_]+?)(?:_bucket|_count|_sum)?\b", e)}
    for wanted in ("voicegw_calls_active", "voicegw_calls_ended_total", "voicegw_turn_latency_seconds",
                   "voicegw_gateway_added_latency_seconds", "voicegw_tool_duration_seconds", "voicegw_barge_ins_total",
                   "voicegw_model_errors_total", "voicegw_reconnects_total", "voicegw_rollovers_total",
                   "voicegw_calls_rejected_total"):
        assert wanted in covered, f"no panel for {wanted}"
