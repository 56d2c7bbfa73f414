"""Audio core benchmark: resampler fidelity and per-frame CPU cost.

Run `python -m bench.bench_audio`. `run()` returns a Markdown section for docs/BENCHMARKS.md.

Everything is measured the way a call drives the code: one long-lived object per direction fed
20 ms frames. Fidelity numbers come from pure tones (gain by least-squares fit, leakage by RMS)
and from synthesized speech (espeak-ng, taken to 8 kHz with sox). CPU numbers are the median of
several timed passes over 10 s of audio, bytes in and bytes out for every method, so conversions
each method needs are counted.
"""
from __future__ import annotations

import base64
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import wave
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import soxr
from scipy.signal import resample_poly

from voicegw.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voicegw.audio.resample import DEFAULT_QUALITY, StreamResampler
from voicegw.audio.transcode import CallerToModel, ModelToCaller

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PASSBAND_HZ = list(range(100, 3401, 100))
ALIAS_HZ = list(range(5000, 11001, 250))
TARGET_RIPPLE_DB = 1.0
TARGET_ALIAS_DB = 60.0
SPEECH_TEXT = (
    "Thank you for calling. Your appointment is confirmed for Tuesday at three thirty in the "
    "afternoon. If you need to change it, say reschedule, or press one to speak with someone."
)


class Converter(Protocol):
    in_rate: int
    out_rate: int

    def process(self, pcm16: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class RatecvConverter:
    """audioop.ratecv with its state carried between frames (the stdlib's streaming option)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._state: Any = None

    def process(self, pcm16: bytes) -> bytes:
        out, self._state = audioop.ratecv(pcm16, 2, 1, self.in_rate, self.out_rate, self._state)
        return out

    def flush(self) -> bytes:
        return b""


class PolyChunkConverter:
    """scipy.signal.resample_poly applied to each frame on its own (no state between frames)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        g = np.gcd(in_rate, out_rate)
        self._up, self._down = out_rate // g, in_rate // g

    def process(self, pcm16: bytes) -> bytes:
        x = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
        y = resample_poly(x, self._up, self._down)
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16).tobytes()

    def flush(self) -> bytes:
        return b""


METHODS: dict[str, Callable[[int, int], Converter]] = {
    f"StreamResampler (soxr {DEFAULT_QUALITY}, stateful)": StreamResampler,
    "audioop.ratecv (stateful)": RatecvConverter,
    "scipy resample_poly per chunk": PolyChunkConverter,
}


# ------------------------------------------------------------------------------- signals

def tone(freq: float, rate: int, seconds: float, amp: float = 16000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def harmonic_speech(rate: int, seconds: float) -> np.ndarray:
    """Stand-in for speech: harmonics of a gliding voice up to 3.4 kHz, syllable envelope."""
    rng = np.random.default_rng(1)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = sum((k * f0 < 3400) * rng.uniform(0.3, 1) / k * np.sin(k * phase) for k in range(1, 20))
    y = y * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2)
    return np.round(y / np.abs(y).max() * 20000).astype(np.int16)


def speech_8k() -> tuple[np.ndarray, str]:
    """Synthesized speech at 8 kHz and a note on how it was made."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None:
        return harmonic_speech(8000, 8.0), "harmonic tones (espeak-ng not installed)"
    with tempfile.TemporaryDirectory() as tmp:
        raw, narrow = Path(tmp) / "speech.wav", Path(tmp) / "speech8k.wav"
        subprocess.run([espeak, "-w", str(raw), SPEECH_TEXT], check=True, timeout=30)
        if sox is not None:
            subprocess.run(
                [sox, str(raw), "-r", "8000", "-b", "16", "-c", "1", str(narrow)],
                check=True, timeout=30,
            )
            how = "espeak-ng speech, taken to 8 kHz with sox"
        else:
            narrow, how = raw, "espeak-ng speech, taken to 8 kHz with soxr (sox not installed)"
        with wave.open(str(narrow), "rb") as w:
            rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if rate != 8000:
        x = soxr.resample(x, rate, 8000, quality="VHQ")
    return x, how


# ------------------------------------------------------------------------------- measuring

def stream(conv: Converter, x: np.ndarray, frame_ms: int = 20) -> np.ndarray:
    step = 2 * conv.in_rate * frame_ms // 1000
    raw = x.tobytes()
    parts = [conv.process(raw[i:i + step]) for i in range(0, len(raw), step)]
    parts.append(conv.flush())
    return np.frombuffer(b"".join(parts), dtype=np.int16)


def steady(y: np.ndarray, rate: int) -> np.ndarray:
    edge = rate // 20  # 50 ms of start-up and tail
    return y[edge:-edge]


def amplitude_at(y: np.ndarray, freq: float, rate: int) -> float:
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


def passband_dev_db(make: Callable[[int, int], Converter], in_rate: int, out_rate: int) -> float:
    """Largest deviation from unity gain (dB) for tones 100 Hz - 3.4 kHz."""
    worst = 0.0
    for f in PASSBAND_HZ:
        x = tone(f, in_rate, 0.4)
        y = steady(stream(make(in_rate, out_rate), x), out_rate)
        gain = amplitude_at(y, f, out_rate) / amplitude_at(steady(x, in_rate), f, in_rate)
        worst = max(worst, abs(20 * np.log10(max(gain, 1e-9))))
    return worst


def alias_rejection_db(make: Callable[[int, int], Converter]) -> float:
    """Weakest attenuation (dB, positive) of 5-11 kHz tones when going 24 kHz -> 8 kHz."""
    worst = np.inf
    for f in ALIAS_HZ:
        x = tone(f, 24000, 0.4)
        y = steady(stream(make(24000, 8000), x), 8000)
        worst = min(worst, -20 * np.log10(max(rms(y), 1e-3) / rms(x)))
    return round(float(worst), 1) + 0.0  # no "-0.0" in the table


def boundary_error_lsb(make: Callable[[int, int], Converter]) -> int:
    """Largest difference between 20 ms framed output and the same method fed all at once."""
    x = harmonic_speech(8000, 1.0)
    framed = stream(make(8000, 24000), x)
    whole = stream(make(8000, 24000), x, frame_ms=1000)
    n = min(len(framed), len(whole))
    return int(np.abs(framed[:n].astype(np.int32) - whole[:n]).max())


def hold_back_ms(quality: str) -> tuple[float, float]:
    """Mean and worst audio held inside the resampler while streaming 20 ms frames, 24k -> 8k."""
    rs = StreamResampler(24000, 8000, quality)
    x = harmonic_speech(24000, 5.0).tobytes()
    held = []
    for i in range(0, len(x), 960):
        rs.process(x[i:i + 960])
        held.append(rs.latency_ms)
    return statistics.fmean(held), max(held)


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    n = min(len(ref), len(got))
    ref, got = steady(ref[:n], 8000), steady(got[:n], 8000)
    return 20 * np.log10(rms(ref) / rms(got.astype(np.float64) - ref))


def band_limit(x: np.ndarray, rate: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(x.astype(np.float64))
    f = np.fft.rfftfreq(len(x), 1 / rate)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, len(x))


def per_frame_us(fn: Callable[[Any], object], frames: Sequence[Any], passes: int = 5) -> float:
    """Median over `passes` of the mean wall time per frame, in microseconds."""
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for fr in frames:
            fn(fr)
        times.append((time.perf_counter() - t0) / len(frames) * 1e6)
    return statistics.median(times)


def frames_of(x: np.ndarray, rate: int) -> list[bytes]:
    step = 2 * rate // 50
    raw = x.tobytes()
    return [raw[i:i + step] for i in range(0, len(raw) - step + 1, step)]


def cpu_us(make: Callable[[int, int], Converter], in_rate: int, out_rate: int) -> float:
    frames = frames_of(harmonic_speech(in_rate, 10.0), in_rate)
    return per_frame_us(make(in_rate, out_rate).process, frames)


# ------------------------------------------------------------------------------- report

def _quality_rows() -> list[str]:
    rows = []
    for q in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
        def make(i: int, o: int, q: str = q) -> StreamResampler:
            return StreamResampler(i, o, q)
        dev = max(passband_dev_db(make, 8000, 24000), passband_dev_db(make, 24000, 8000))
        alias = alias_rejection_db(make)
        mean_ms, max_ms = hold_back_ms(q)
        us = cpu_us(make, 24000, 8000)
        ok = dev <= TARGET_RIPPLE_DB and alias >= TARGET_ALIAS_DB
        mark = " (chosen)" if q == DEFAULT_QUALITY else ""
        rows.append(
            f"| {q}{mark} | {dev:.2f} | {alias:.1f} | {mean_ms:.1f} / {max_ms:.1f} | {us:.1f} | "
            f"{'yes' if ok else 'no'} |"
        )
    return rows


def _speech_rows(speech: np.ndarray) -> list[str]:
    up = stream(StreamResampler(8000, 24000), speech)
    back = stream(StreamResampler(24000, 8000), up)
    band_ref = band_limit(speech, 8000, 300, 3400)
    band_got = band_limit(back[:len(speech)], 8000, 300, 3400)

    # The full call path: caller mu-law -> model PCM16 24k -> (model) -> caller mu-law.
    ulaw = pcm16_to_ulaw(speech.tobytes())
    c2m, m2c = CallerToModel("pcm16"), ModelToCaller("pcm16")
    model_side = [c2m.convert(base64.b64encode(ulaw[i:i + 160]).decode()) for i in
                  range(0, len(ulaw), 160)]
    caller_side = [m2c.convert(p) for p in model_side if p] + [m2c.flush()]
    sent = np.frombuffer(ulaw_to_pcm16(ulaw), dtype=np.int16)
    heard = np.frombuffer(ulaw_to_pcm16(b"".join(base64.b64decode(p) for p in caller_side)),
                          dtype=np.int16)
    n = min(len(sent), len(heard))
    call_snr = snr_db(band_limit(sent[:n], 8000, 300, 3400), band_limit(heard[:n], 8000, 300, 3400))
    return [
        f"| 8k → 24k → 8k round-trip SNR, speech, full band | {snr_db(speech, back):.1f} dB | — |",
        f"| 8k → 24k → 8k round-trip SNR, speech, 300–3400 Hz | "
        f"{snr_db(band_ref, band_got):.1f} dB | — |",
        f"| mu-law → PCM16 24k → mu-law (both converters) SNR, 300–3400 Hz | {call_snr:.1f} dB | "
        "— |",
    ]


def _cpu_rows() -> list[str]:
    rows = []
    for name, make in METHODS.items():
        rows.append(
            f"| {name} | {cpu_us(make, 8000, 24000):.1f} | {cpu_us(make, 24000, 8000):.1f} | "
            f"{max(passband_dev_db(make, 8000, 24000), passband_dev_db(make, 24000, 8000)):.2f} | "
            f"{alias_rejection_db(make):.1f} | {boundary_error_lsb(make)} |"
        )
    return rows


def _converter_rows() -> list[str]:
    ulaw = pcm16_to_ulaw(harmonic_speech(8000, 10.0).tobytes())
    caller = [base64.b64encode(ulaw[i:i + 160]).decode() for i in range(0, len(ulaw), 160)]
    model = [base64.b64encode(f).decode() for f in frames_of(harmonic_speech(24000, 10.0), 24000)]
    rows = []
    for mode in ("pcm16", "g711_ulaw"):
        c2m = per_frame_us(CallerToModel(mode).convert, caller)
        payload = model if mode == "pcm16" else caller
        m2c = per_frame_us(ModelToCaller(mode).convert, payload)
        rows.append(f"| {mode} | {c2m:.2f} | {m2c:.2f} |")
    return rows


def run() -> str:
    """Measure everything and return the Markdown section."""
    started = time.perf_counter()
    speech, how = speech_8k()
    make = StreamResampler
    ripple_up = passband_dev_db(make, 8000, 24000)
    ripple_down = passband_dev_db(make, 24000, 8000)
    alias = alias_rejection_db(make)
    mean_ms, max_ms = hold_back_ms(DEFAULT_QUALITY)
    lines = [
        "## Audio core (voicegw.audio)",
        "",
        f"`python -m bench.bench_audio` on {platform.machine()}, Python "
        f"{platform.python_version()}, soxr {soxr.__version__} (libsoxr "
        f"{soxr.__libsoxr_version__}). Every stream is fed 20 ms frames. Speech: {how}.",
        "",
        f"### StreamResampler ({DEFAULT_QUALITY})",
        "",
        "| metric | measured | target |",
        "| --- | --- | --- |",
        f"| passband deviation 100–3400 Hz, 8k → 24k | {ripple_up:.2f} dB | ≤ {TARGET_RIPPLE_DB} dB |",
        f"| passband deviation 100–3400 Hz, 24k → 8k | {ripple_down:.2f} dB | "
        f"≤ {TARGET_RIPPLE_DB} dB |",
        f"| alias rejection, 5–11 kHz tones, 24k → 8k | {alias:.1f} dB | ≥ {TARGET_ALIAS_DB:.0f} dB |",
        f"| audio held in the resampler (24k → 8k), mean / worst | {mean_ms:.1f} / {max_ms:.1f} ms | — |",
        *_speech_rows(speech),
        "",
        "Alias rejection is measured on the int16 output, so it bottoms out near the 16-bit noise "
        "floor (dither included, about 86 dB below a half-scale tone); the filter itself rejects "
        "more. The full-band round trip loses the 3.6–4 kHz edge of the 8 kHz band, which the "
        "filters treat as transition band; inside the telephone band the round trip is "
        "transparent. The converter round trip's error is the second mu-law quantisation at the "
        "far end.",
        "",
        "### Why this quality: libsoxr settings compared",
        "",
        "| quality | worst passband deviation to 3.4 kHz (dB) | alias rejection (dB) | "
        "held audio mean / worst, 24k → 8k (ms) | µs per 20 ms frame, 24k → 8k | meets targets |",
        "| --- | --- | --- | --- | --- | --- |",
        *_quality_rows(),
        "",
        "The default is the lowest-delay setting that meets both targets. The held audio is "
        "set by libsoxr's block size, not by the filter length, so MQ and HQ hold about the same.",
        "",
        "### CPU per 20 ms frame, side by side",
        "",
        "| method | µs 8k → 24k | µs 24k → 8k | worst passband deviation (dB) | "
        "alias rejection (dB) | frame-boundary error vs. one call (LSB) |",
        "| --- | --- | --- | --- | --- | --- |",
        *_cpu_rows(),
        "",
        "A per-chunk `resample_poly` restarts its filter on every frame: the boundary error is "
        "an audible click 50 times a second. `audioop.ratecv` is cheap but barely filters.",
        "",
        "### Per-call converters (base64 in, base64 out, G.711 included), µs per 20 ms frame",
        "",
        "| mode | CallerToModel.convert | ModelToCaller.convert |",
        "| --- | --- | --- |",
        *_converter_rows(),
        "",
        f"_Benchmark wall time: {time.perf_counter() - started:.1f} s._",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
