"""docs/BENCHMARKS.md and its plots, from the results of the benchmark modules."""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.bench_bargein import CLEAR_P99_TARGET_MS, PHASES, TRUNCATE_ERROR_TARGET_MS, BargeInResult  # noqa: E402
from bench.bench_density import DISTURBED, LATE_FRACTION_MAX, LATE_MS, P99_TARGET_MS, Level  # noqa: E402
from bench.bench_greeting import GreetingCase  # noqa: E402

CALLS_TARGET = 200
CPU_PASSTHROUGH_MS = 3.0  # per call-second at 100 calls
CPU_RESAMPLING_MS = 4.0
P50_TARGET_MS = 0.5
RSS_TARGET_KIB = 100
ALIAS_TARGET_DB = 60.0


@dataclass
class Results:
    quick: bool
    wall_s: float = 0.0
    density: dict[str, list[Level]] = field(default_factory=dict)  # mode -> ramp
    asyncio_loop: list[Level] = field(default_factory=list)  # the same load on the standard event loop
    slow_deltas: list[Level] = field(default_factory=list)  # 100 calls with 200 ms model deltas, per mode
    two_workers: list[Level] = field(default_factory=list)  # `serve --workers 2` on both cores, per mode
    saturated: dict[str, tuple[int | None, list[int]]] = field(default_factory=dict)  # ramp -> (level, skipped)
    greeting: list[GreetingCase] = field(default_factory=list)
    bargein: dict[str, BargeInResult] = field(default_factory=dict)
    bargein_lockstep: dict[str, BargeInResult] = field(default_factory=dict)  # every caller ticking at once
    bargein_sim: dict[str, BargeInResult] = field(default_factory=dict)  # SimulatedCaller callers
    alias_db: float | None = None
    audio_md: str = ""
    baseline: list[tuple[str, Level]] = field(default_factory=list)  # (who, level): sample bridge vs voicegw
    setup: list[Any] = field(default_factory=list)  # bench.bench_setup.SetupResult per mode
    soak: Any = None  # bench.bench_soak.Soak
    commit: str = ""  # the code measured (HEAD when the run started; a re-render keeps it)
    measured_at: str = ""


def head_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine(r: Results) -> list[tuple[str, str]]:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1].strip('"')
        except OSError:
            pass
        return "unknown"

    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    libs = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in
                     ("uvicorn", "starlette", "websockets", "soxr", "numpy", "uvloop"))
    return [
        ("CPU", first("/proc/cpuinfo", "model name")),
        ("cores", str(os.cpu_count())),
        ("memory", f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else mem_kib),
        ("OS", f"{first('/etc/os-release', 'PRETTY_NAME=')}, Linux {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("libraries", libs),
        ("voicegw commit", getattr(r, "commit", "") or head_commit()),
        ("date", getattr(r, "measured_at", "") or now_utc()),
    ]


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _final(levels: list[Level]) -> list[Level]:
    """One result per level: a level that ran twice (disturbed, failed, run once more) counts by its second run."""
    return list({lv.calls: lv for lv in levels}.values())


def _max_calls(levels: list[Level]) -> int:
    best = 0
    for lv in _final(levels):
        if not lv.passed:
            break
        best = lv.calls
    return best


def _at(levels: list[Level], n: int) -> Level | None:
    return next((lv for lv in _final(levels) if lv.calls == n), None)


def summary(r: Results) -> list[str]:
    rows = ["| metric | target | measured | |", "| --- | --- | --- | --- |"]
    for mode, levels in r.density.items():
        n = _max_calls(levels)
        rows.append(f"| calls per core with p99 ≤ {P99_TARGET_MS:g} ms, {mode} | ≥ {CALLS_TARGET} | {n} | "
                    f"{_mark(n >= CALLS_TARGET)} |")
    for mode, levels in r.density.items():
        lv = _at(levels, 50)
        if lv is not None:
            for name, d in (("caller → model", lv.c2m), ("model → caller", lv.m2c)):
                rows.append(f"| p50 per frame at 50 calls, {name}, {mode} | ≤ {P50_TARGET_MS} ms | {d.p50:.2f} ms | "
                            f"{_mark(d.p50 <= P50_TARGET_MS)} |")
    for mode, b in r.bargein.items():
        rows.append(f"| speech_started → clear at the caller, p99, {b.calls} calls, {mode} | ≤ {CLEAR_P99_TARGET_MS:g} ms | "
                    f"{b.clear_ms.p99:.2f} ms | {_mark(b.clear_ms.p99 <= CLEAR_P99_TARGET_MS)} |")
        rows.append(f"| truncation vs. audio heard, p99 (max), {mode} | ≤ {TRUNCATE_ERROR_TARGET_MS:g} ms | "
                    f"{b.error_ms.p99:.1f} ms ({b.error_ms.max:.1f}) | "
                    f"{_mark(b.error_ms.p99 <= TRUNCATE_ERROR_TARGET_MS)} |")
        rows.append(f"| truncates rejected by the model, {mode} | 0 | {b.rejected} of {b.truncates} | "
                    f"{_mark(b.rejected == 0)} |")
    if r.alias_db is not None:
        rows.append(f"| resampler alias rejection | ≥ {ALIAS_TARGET_DB:g} dB | {r.alias_db:.1f} dB | "
                    f"{_mark(r.alias_db >= ALIAS_TARGET_DB)} |")
    for mode, limit in (("g711_ulaw", CPU_PASSTHROUGH_MS), ("pcm16", CPU_RESAMPLING_MS)):
        lv = _at(r.density.get(mode, []), 100)
        if lv is not None:
            rows.append(f"| CPU per call-second at 100 calls, {mode}, 20 ms model deltas | ≤ {limit:g} ms | "
                        f"{lv.cpu_ms_per_call_s:.2f} ms | {_mark(lv.cpu_ms_per_call_s <= limit)} |")
        for lv in getattr(r, "slow_deltas", []):
            if lv.mode == mode:
                rows.append(f"| CPU per call-second at 100 calls, {mode}, 200 ms model deltas | ≤ {limit:g} ms | "
                            f"{lv.cpu_ms_per_call_s:.2f} ms | {_mark(lv.cpu_ms_per_call_s <= limit)} |")
    base = _baseline_medians(r)
    for delta_ms in DELTA_SIZES:
        for ref_who, ref_name in (("sample", "the minimal sample bridge"), ("twilio sample", "Twilio's sample")):
            ref = base.get(bridge_label(ref_who, delta_ms))
            for mode in ("g711_ulaw", "pcm16"):
                mine = base.get(bridge_label(f"voicegw {mode}", delta_ms))
                if ref is None or mine is None:
                    continue
                ratio = mine[0] / ref[0]
                rows.append(f"| CPU per call-second at 50 calls vs. {ref_name}, {mode}, {delta_ms} ms model deltas "
                            f"| ≤ 0.5× | {ratio:.2f}× ({mine[0]:.2f} vs {ref[0]:.2f} ms) | {_mark(ratio <= 0.5)} |")
    pcm = base.get(bridge_label("voicegw pcm16", 20))
    if pcm is not None:
        p50, p99 = pcm[1], pcm[2]
        rows.append(f"| caller audio to the model at 50 calls, pcm16, p50 / p99 | ≤ 10 / 20 ms | "
                    f"{p50:.2f} / {p99:.2f} ms | {_mark(p50 <= 10 and p99 <= 20)} |")
    for s in r.setup:
        rows.append(f"| {s.calls} calls arriving within {s.over_s:g} s all set up, greeting audio at each, {s.mode} | "
                    f"{s.calls} of {s.calls} | {s.set_up} (first audio p99 {s.pct(s.first_audio_ms, 99):.0f} ms) | "
                    f"{_mark(s.set_up == s.calls)} |")
    # RSS per call is the soak's target: a fresh gateway holding 100 calls for 10 minutes. The density
    # levels' RSS per call is a high-water mark after every earlier level's calls (memory the
    # allocator keeps), shown in their tables, not judged here.
    return rows + soak_rows(r)


DELTA_SIZES = (20, 200)  # model audio per delta in the comparisons with the sample bridges


def _baseline_medians(r: Results) -> dict[str, tuple[float, float, float, float, float]]:
    """who -> median (CPU ms per call-second, c2m p50, c2m p99, m2c p50, m2c p99) over the rounds."""
    import statistics

    out = {}
    for who in dict.fromkeys(w for w, _ in r.baseline):
        lvs = [lv for w, lv in r.baseline if w == who]
        med = lambda xs: statistics.median(xs)  # noqa: E731
        out[who] = (med([lv.cpu_ms_per_call_s for lv in lvs]), med([lv.c2m.p50 for lv in lvs]),
                    med([lv.c2m.p99 for lv in lvs]), med([lv.m2c.p50 for lv in lvs]), med([lv.m2c.p99 for lv in lvs]))
    return out


def bridge_label(who: str, delta_ms: int) -> str:
    """The name a bridge's rounds are kept under (20 ms deltas keep the plain name)."""
    return who if delta_ms == 20 else f"{who}, {delta_ms} ms deltas"


def delta_of(label: str) -> int:
    """`bridge_label`'s delta size back from the name."""
    return int(label.rsplit(", ", 1)[1].split()[0]) if label.endswith(" ms deltas") else 20


def baseline_section(r: Results) -> list[str]:
    base = _baseline_medians(r)
    if "sample" not in base:
        return []
    rounds = sum(1 for w, _ in r.baseline if w == "sample")
    rows = ["## Against the sample bridges", "", BASELINE_NOTE.format(rounds=rounds), ""]
    for delta_ms in DELTA_SIZES:
        ref, tw = base.get(bridge_label("sample", delta_ms)), base.get(bridge_label("twilio sample", delta_ms))
        if ref is None:
            continue
        rows += [f"Model audio in {delta_ms} ms deltas "
                 f"({sum(1 for w, _ in r.baseline if w == bridge_label('sample', delta_ms))} rounds):", "",
                 "| bridge | CPU ms per call-second | caller → model p50 / p99 (ms) | model → caller p50 / p99 (ms) "
                 "| CPU ratio to the minimal sample | to Twilio's sample | p50 ratio to the minimal sample (c2m / m2c) |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for who, (cpu, c50, c99, m50, m99) in base.items():
            if delta_of(who) != delta_ms:
                continue
            to_tw = f"{cpu / tw[0]:.2f}×" if tw is not None else "—"
            rows.append(f"| {who} | {cpu:.2f} | {c50:.2f} / {c99:.2f} | {m50:.2f} / {m99:.2f} | {cpu / ref[0]:.2f}× | "
                        f"{to_tw} | {c50 / ref[1]:.2f}× / {m50 / ref[3]:.2f}× |")
        rows.append("")
    import dataclasses

    every = [dataclasses.replace(lv, mode=who) for who, lv in r.baseline]
    rows += ["Every round, in the order run (the mode column names the bridge):", "",
             *density_table(every, with_mode=True), ""]
    return rows


def density_table(levels: list[Level], with_mode: bool = False) -> list[str]:
    rows = [("| mode " if with_mode else "") + "| calls | caller → model p50 / p95 / p99 / max (ms) | model → caller p50 / p95 / p99 / max (ms) | "
            f"frames > {LATE_MS:g} ms | worst gap at a caller (ms) | gateway CPU (% of a core) | "
            "CPU ms per call-second | RSS per call (KiB) | GC in window (worst ms) | load side CPU | "
            "other processes | result |",
            "| " + " | ".join(["---"] * (13 if with_mode else 12)) + " |"]
    for lv in levels:
        flag = "pass" if lv.passed else ("**fail**" if lv.valid else "invalid")
        if lv.disturbed:
            flag += " (disturbed)"
        if lv.problems:
            flag += " — " + "; ".join(lv.problems)
        rows.append(
            (f"| {lv.mode} " if with_mode else "") + f"| {lv.calls} | {lv.c2m.cells()} | {lv.m2c.cells()} | {lv.late_fraction:.3%} | {lv.worst_gap_ms:.0f} "
            f"(nominal {lv.nominal_gap_ms:.0f}) | {lv.gateway_busy:.0%} | {lv.cpu_ms_per_call_s:.2f} | "
            f"{lv.rss_per_call_kib:.0f} | {lv.gc_collections} ({lv.gc_worst_ms:.1f}) | {lv.sim_busy:.0%} | "
            f"{lv.other_busy:.0%} | {flag} |")
    return rows


def _conditions(r: Results) -> list[str]:
    others = [lv.other_busy for levels in r.density.values() for lv in levels] + [lv.other_busy for lv in r.asyncio_loop]
    if not others:
        return []
    lo, hi, mean = min(others), max(others), sum(others) / len(others)
    text = (f"During the density windows other processes on this machine used {lo:.0%}–{hi:.0%} of a core "
            f"(mean {mean:.0%}; column \"other processes\").")
    if mean > DISTURBED:
        text += (" The machine was shared with other work during this run, so the gateway competed for its "
                 "core and its caches: latencies and CPU per call-second here are pessimistic, and a quiet "
                 "machine will do better. Compare levels by that column.")
    return [text, ""]


def _share(busy: float | None) -> str:
    """A fraction of a core as a table cell; results saved before it was measured lack it."""
    return "—" if busy is None else f"{busy:.0%}"


def soak_rows(r: Results) -> list[str]:
    s = r.soak
    if s is None or s.level is None:
        return []
    first, last = s.per_call(s.first_minute_kib), s.per_call(s.last_minute_kib)
    drift = last - first
    return [f"| RSS per call over a {s.minutes:g}-minute soak at {s.calls} calls, {s.mode}: first minute → last "
            f"(worst GC pause) | ≤ {RSS_TARGET_KIB} KiB, flat | {first:.0f} → {last:.0f} KiB ({drift:+.0f}), "
            f"trend {s.slope_kib_per_min / s.calls:+.2f} KiB per call per minute ({s.level.gc_worst_ms:.1f} ms) | "
            f"{_mark(last <= RSS_TARGET_KIB and abs(drift) <= 0.1 * max(first, 1.0))} |"]


def soak_section(r: Results) -> list[str]:
    s = r.soak
    if s is None or s.level is None:
        return []
    lv = s.level
    rows = ["## Memory over a soak", "", SOAK_NOTE, "",
            "| minute | gateway RSS (MiB) | RSS per call (KiB) |", "| --- | --- | --- |"]
    for minute in range(int(s.minutes) + 1):
        inside = [k for t, k in s.rss if minute * 60 <= t < (minute + 1) * 60]
        if inside:
            mean = sum(inside) / len(inside)
            rows.append(f"| {minute} | {mean / 1024:.1f} | {s.per_call(mean):.0f} |")
    rows += ["", f"Trend after the first minute: {s.slope_kib_per_min:+.0f} KiB per minute for the process "
             f"({s.slope_kib_per_min / s.calls:+.2f} KiB per call). Over the whole window: "
             f"{lv.gc_collections} garbage collections, the worst {lv.gc_worst_ms:.1f} ms; latency caller → model "
             f"{lv.c2m.cells()} ms, model → caller {lv.m2c.cells()} ms, {lv.late_fraction:.3%} of frames later than "
             f"{LATE_MS:g} ms; gateway CPU {lv.cpu_ms_per_call_s:.2f} ms per call-second; other processes "
             f"{lv.other_busy:.0%} of a core.", ""]
    return rows


def _skipped(r: Results, ramp: str) -> list[str]:
    at, skipped = r.saturated.get(ramp, (None, []))
    if not skipped:
        return []
    return [f"Not run ({ramp}): {', '.join(map(str, skipped))} calls — the gateway used its whole core and fell "
            f"behind at {at} calls, so more calls would only have queued.", ""]


def latency_table(r: Results) -> list[str]:
    rows = ["| mode | calls | caller → model p50 / p95 / p99 / max (ms) | model → caller p50 / p95 / p99 / max (ms) |",
            "| --- | --- | --- | --- |"]
    for mode, levels in r.density.items():
        for n in (1, 50, 200):
            lv = _at(levels, n)
            if lv is not None:
                rows.append(f"| {mode} | {n} | {lv.c2m.cells()} | {lv.m2c.cells()} |")
            elif n in r.saturated.get(mode, (None, []))[1]:
                rows.append(f"| {mode} | {n} | not run: saturated at {r.saturated[mode][0]} calls | — |")
    return rows


def plot_density(r: Results, path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, levels in r.density.items():
        calls = [lv.calls for lv in levels]
        ax1.plot(calls, [lv.c2m.p99 for lv in levels], "o-", label=f"{mode} caller→model")
        ax1.plot(calls, [lv.m2c.p99 for lv in levels], "s--", label=f"{mode} model→caller")
        ax2.plot(calls, [100 * lv.gateway_busy for lv in levels], "o-", label=mode)
    ax1.axhline(P99_TARGET_MS, color="grey", lw=1, ls=":")
    ax1.set(xlabel="concurrent calls", ylabel="p99 gateway-added latency (ms)", yscale="log",
            title="Per-frame latency, p99")
    ax1.legend(fontsize=8)
    ax2.axhline(100, color="grey", lw=1, ls=":")
    ax2.set(xlabel="concurrent calls", ylabel="gateway CPU (% of one core)", title="Gateway CPU")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bargein(r: Results, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for mode, b in r.bargein.items():
        if b.errors.size:
            ax.hist(b.errors, bins=40, alpha=0.6, label=f"{mode} ({b.errors.size} barge-ins)")
    ax.axvline(TRUNCATE_ERROR_TARGET_MS, color="grey", lw=1, ls=":")
    ax.set(xlabel="|audio_end_ms − audio the caller heard| (ms)", ylabel="barge-ins",
           title="Truncation accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(r: Results, docs: Path) -> str:
    """The whole Markdown document; writes the plots into `docs`."""
    out = ["# voicegw benchmarks", "",
           "Generated by `make bench` (`python -m bench.run_all" + (" --quick" if r.quick else "") + "`) on the "
           "machine below; every number here was measured in that run. Load goes to 127.0.0.1 only.", "",
           "| machine | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in machine(r)], "",
           f"_Benchmark wall time: {r.wall_s / 60:.1f} min._", "", *_conditions(r),
           "## Targets", "", *summary(r), ""]
    out += HOW_DENSITY
    for mode, levels in r.density.items():
        out += [f"### {mode}", "", *density_table(levels), "", *_skipped(r, mode)]
    if r.asyncio_loop:
        out += ASYNCIO_NOTE + density_table(r.asyncio_loop, with_mode=True) + [""]
        for mode in r.density:
            out += _skipped(r, f"{mode} on asyncio")
    if getattr(r, "slow_deltas", []):
        out += SLOW_DELTAS_NOTE + density_table(r.slow_deltas, with_mode=True) + [""]
    if getattr(r, "two_workers", []):
        out += TWO_WORKERS_NOTE + density_table(r.two_workers, with_mode=True) + [""]
    out += baseline_section(r)
    out += soak_section(r)
    if r.density:
        plot_density(r, docs / "bench_density.png")
        out += ["![p99 latency and gateway CPU against concurrent calls](bench_density.png)", ""]
    out += ["## Per-frame latency at 1, 50 and 200 calls", "", *latency_table(r), "",
            "Each number is the gateway's processing time for one frame plus two loopback hops and the "
            "receiving side's wake-up, measured on one clock in the load process.", ""]
    if r.greeting:
        out += ["## Greeting latency", "", GREETING_NOTE, "",
                "| case | samples | stream start → first greeting audio p50 / p95 / p99 / max (ms) | "
                "pre-warmed sessions expired |", "| --- | --- | --- | --- |"]
        out += [f"| {c.label} | {c.first_audio_ms.n} | {c.first_audio_ms.cells(1)} | {c.unclaimed} |"
                for c in r.greeting]
        out.append("")
    if r.bargein:
        out += ["## Barge-in", "", BARGEIN_NOTE, "",
                "| mode | calls | barge-ins | clears received | speech_started → clear p50 / p95 / p99 / max (ms) | "
                "truncation error p50 / p95 / p99 / max (ms) | bias (ms) | truncates / deletes | rejected | calls unpaired | "
                "gateway CPU | load side CPU |",
                "| " + " | ".join(["---"] * 12) + " |"]
        lockstep = getattr(r, "bargein_lockstep", {})  # results saved before it was measured lack it
        sim = getattr(r, "bargein_sim", {})
        for label, b in [*r.bargein.items(), *((f"{m}, callers in lockstep", b) for m, b in lockstep.items()),
                         *((f"{m}, SimulatedCaller callers", b) for m, b in sim.items())]:
            out.append(f"| {label} | {b.calls} | {b.barge_ins} | {b.clears} | {b.clear_ms.cells()} | "
                       f"{b.error_ms.cells(1)} | {b.bias_ms:+.1f} | {b.truncates} / {b.deletes} | {b.rejected} | {b.unmatched_calls} | "
                       f"{_share(b.gateway_busy)} | {_share(b.sim_busy)} |")
        if any(b.rejected_examples for b in r.bargein.values()):
            out += ["", "Rejections: " + "; ".join(e for b in r.bargein.values() for e in b.rejected_examples)]
        plot_bargein(r, docs / "bench_bargein.png")
        out += ["", "![truncation error histogram](bench_bargein.png)", ""]
    if r.setup:
        out += ["## Call set-up under a burst", "", SETUP_NOTE, "",
                "| mode | calls / seconds | set up within 3 s | webhook p50 / p99 (ms) | "
                "webhook → first greeting audio p50 / p99 / max (ms) | gateway CPU | failed |",
                "| " + " | ".join(["---"] * 7) + " |"]
        for s in r.setup:
            out.append(f"| {s.mode} | {s.calls} / {s.over_s:g} | {s.set_up} | {s.pct(s.webhook_ms, 50):.1f} / "
                       f"{s.pct(s.webhook_ms, 99):.1f} | {s.pct(s.first_audio_ms, 50):.0f} / "
                       f"{s.pct(s.first_audio_ms, 99):.0f} / {max(s.first_audio_ms, default=float('nan')):.0f} | "
                       f"{s.gateway_busy:.0%} | {len(s.failures)} |")
        out.append("")
    if r.audio_md:
        out += [r.audio_md.strip(), ""]
    notes = Path(__file__).with_name("optimisations.md")
    if notes.exists():
        out += [notes.read_text().strip(), ""]
    return "\n".join(out)


SOAK_NOTE = (
    "`bench/bench_soak.py`: the density load (real-time 20 ms frames both ways, marks acknowledged at playout) "
    "held at a constant number of calls against one gateway pinned to one core, with the gateway's RSS sampled "
    "every 5 s. RSS per call is the RSS minus the gateway's RSS after one warm-up call, divided by the calls. "
    "A leak of anything per frame or per event would climb steadily here; the collector's pauses come from "
    "the gateway's own gc callbacks."
)

SETUP_NOTE = (
    "`bench/bench_setup.py`: the calls arrive evenly over the window at one gateway pinned to one core; "
    "each is a real-time call from its stream's start (20 ms frames both ways), so the load grows to all "
    "of them by the end. Per call: the voice webhook's answer, and webhook → the greeting's first audio "
    "at the caller (the model peer answers at once: this is the gateway's set-up work under that load).")


HOW_DENSITY = [
    "## Density", "",
    "N simulated calls against one `voicegw serve` process pinned to core 0 (`taskset`). Core 1 runs one "
    "load process holding the N callers and the model peer (`bench/loadcaller.py`, `bench/peer.py`), so "
    "the model's cost is not charged to the gateway and caller and model times share one clock. Both "
    "directions carry real-time 20 ms frames for the whole call (the caller's media; the model's audio "
    "from the greeting on, in 20 ms deltas), spread evenly over the 20 ms period; marks are acknowledged "
    "when the caller's playout reaches them. That is the worst case: in a real call the model is silent "
    "about half of the time and sends larger deltas.", "",
    "The model peer is a light, protocol-faithful Realtime (GA) server written for the benchmark: it "
    "speaks the events the gateway reads and checks truncates as the service does, but runs no speech "
    "recognition or synthesis (its audio is a precomputed signal), so hundreds of calls fit beside the "
    "callers on one core. The callers speak the Twilio Media Streams protocol of `voicegw.sim` on a bare "
    "asyncio protocol for the same reason.", "",
    "Each forwarded message is paired with the message that produced it (per call, in order: the model "
    "connection of a call is the one the peer accepts right after that call's webhook; for the sample bridge, "
    "which opens it at stream start, the one accepted right after the stream opened). Pairing replays the "
    "gateway's converters offline, so in pcm16 mode the latency is the processing time of the frame that "
    "produced the output; the resampler's own group delay (a few ms, see the audio section) is on top. "
    "Marks go out once per ~100 ms of agent audio (voicegw/call/playout.py), each in the same write as the audio "
    "it follows. A level passes when both directions have "
    f"p99 ≤ {P99_TARGET_MS:g} ms and at most {LATE_FRACTION_MAX:.1%} of frames take longer than one frame "
    f"period ({LATE_MS:g} ms). CPU is utime + stime of the gateway process from /proc over a 10 s window "
    "after every call is up and warm; RSS is VmRSS, minus the gateway's RSS after one warm-up call. "
    "\"Other processes\" is the CPU used by everything else on the machine during the window: a level "
    f"marked disturbed (over {DISTURBED:.0%} of a core) shared the machine with other work and its latencies are "
    "pessimistic; such a level that fails runs once more, both runs are listed and the second counts.", "",
]

ASYNCIO_NOTE = [
    "### The same load on the standard asyncio loop", "",
    "`voicegw serve` runs on uvloop when it is installed (voicegw/server.py). These levels start the same "
    "CLI with uvloop hidden (`bench/gw_launch.py --asyncio`), so it falls back to the standard event loop, "
    "to show what the event loop is worth:", "",
]

SLOW_DELTAS_NOTE = [
    "### 100 calls with 200 ms model deltas", "",
    "The ramps above send the model's audio in 20 ms deltas, a message for every caller frame: the "
    "costliest load a gateway can get. The Realtime service's deltas are larger and vary, and the local "
    "model sends 200 ms; with those the caller's 50 frames a second are most of the work. The same "
    "100 calls with 200 ms deltas (the sample bridges are compared at both sizes below):", "",
]

TWO_WORKERS_NOTE = [
    "### Two workers on both cores", "",
    "`voicegw serve --workers 2`, as a 2-CPU pod runs it, not pinned: the load process shares core 1 "
    "with one of the workers, so latencies here are pessimistic. CPU time and RSS are summed over the "
    "supervisor and its workers (\"gateway CPU\" can pass 100%). The kernel gives each connection to "
    "either worker, so most streams reach another worker than the one whose webhook pre-warmed their "
    "call; each such stream's connection is passed to that worker before it opens "
    "(voicegw/telephony/handoff.py), so a call costs what it costs in one process:", "",
]

GREETING_NOTE = (
    "Stream start (the caller's media socket open) to the first greeting audio at the caller, pcm16, "
    "`VOICEGW_PREWARM_TIMEOUT=1`. The model peer answers `response.create` at once with 200 ms of audio, "
    "so this is the gateway's part. Without pre-warm the gateway connects to the model, waits for "
    "`session.created`, updates the session and asks for the greeting after the stream has started.")

BARGEIN_NOTE = (
    "The density benchmark's callers (`bench.loadcaller`: real-time playout, marks acknowledged when playout "
    "reaches them, `clear` accounted to the byte) against the gateway on core 0, with a model peer that "
    "generates each response (2.5–4.5 s) at twice real time and interrupts it with `speech_started` at a "
    "random point. Clear latency is from the peer writing `speech_started` to the `clear` arriving at the "
    "caller (same process, same clock). Truncation error compares each `audio_end_ms` (a delete counts as "
    "0) with the audio of that response the caller actually heard before the clear; the bias is the mean "
    "signed difference (negative: the model is told less than was heard). The callers acknowledge marks on "
    "their 20 ms tick, so the gateway learns of playout progress up to 20 ms late. "
    f"The callers' 20 ms clocks are spread over {PHASES} phases, {20 / PHASES:g} ms apart, as calls that "
    "began at different times are (the density load spreads its callers the same way). The \"callers in "
    "lockstep\" rows tick every caller at once: 100 frames reach the gateway in one burst every 20 ms, "
    "and the callers' own burst delays their reading of the clear. No call population does that; the "
    "rows show what bursts cost. The CPU columns cover the barge-ins (every call up until the last "
    "response is interrupted). Both latencies are read on the load side, so its own lag is part of them: "
    "the \"SimulatedCaller callers\" rows run the same barge-ins with `voicegw.sim.SimulatedCaller` (which "
    "also decodes and keeps every byte heard), whose load side nears its core at 100 calls and shows it in "
    "the clear's tail and the truncation error.")

BASELINE_NOTE = (
    "`bench/baseline.py` is the few dozen lines every Twilio + Realtime sample has: a Starlette WebSocket "
    "endpoint served by `uvicorn.run` with its defaults, `json.loads` of every Twilio frame, the payload "
    "forwarded as `input_audio_buffer.append`, every audio delta forwarded back as a media frame (passthrough, "
    "no marks, no barge-in, no validation, no call log). \"Twilio sample\" (`bench/twilio_sample.py`) is "
    "Twilio's published speech-assistant bridge as it behaves on the wire: the same, plus each frame's "
    "timestamp kept, every delta base64-decoded and re-encoded and followed by a mark, the marks that come "
    "back popped from a queue, the logged event types printed, and truncate plus clear on speech_started "
    "(its FastAPI app is Starlette underneath; per message the two are the same code). Every bridge carries "
    "the same 50 calls as the gateway, on the same core, model peer and callers; the bridges and voicegw in "
    "both modes alternate, {rounds} rounds at 20 ms deltas, medians shown. The service sends deltas of many "
    "sizes: 20 ms deltas are the costliest load for every bridge (as many model messages as caller frames); "
    "with 200 ms deltas, the local model's size, the caller's 50 frames a second are most of the work. The "
    "sample bridges carry mu-law both ways; voicegw's pcm16 rows resample both directions. "
    "The floor (`bench/floor.py`) is the sample's work written for the least CPU this stack allows: both "
    "sockets on picows, each frame handled in the read callback, payloads sliced out of the text and "
    "messages built by concatenation, no JSON. It is not a gateway (no validation, marks, barge-in, "
    "timeouts or call log); it is the cost of the event loop, the framing and the kernel per message, "
    "which no Python gateway can go below, and voicegw's distance to it is what its features cost.")
