"""Audio core: G.711 codec, streaming resampler, per-call transcoders.

The resampler checks are signal measurements (gain of a tone, energy that leaks through) made on
the stream exactly as the gateway drives it: 20 ms frames through one long-lived instance.
libsoxr adds +-1 LSB TPDF dither to int16 output, so "equal" below means within 2 LSB.
"""
from __future__ import annotations

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegw.audio import g711
from voicegw.audio.resample import DEFAULT_QUALITY, StreamResampler

DITHER_LSB = 2  # two independent +-1 LSB TPDF dithers may differ by 2


# ----------------------------------------------------------------------------------- helpers

def tone(freq: float, rate: int, seconds: float, amp: float = 16000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def stream(rs: StreamResampler, x: np.ndarray, frame_ms: int = 20, flush: bool = True) -> np.ndarray:
    """Push `x` through `rs` in frames of `frame_ms`, the way a call does."""
    n = rs.in_rate * frame_ms // 1000
    raw = x.tobytes()
    step = 2 * n
    parts = [rs.process(raw[i:i + step]) for i in range(0, len(raw), step)]
    if flush:
        parts.append(rs.flush())
    return np.frombuffer(b"".join(parts), dtype=np.int16)


def amplitude_at(y: np.ndarray, freq: float, rate: int) -> float:
    """Least-squares amplitude of the `freq` component of `y` (immune to noise elsewhere)."""
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))


def steady(y: np.ndarray, rate: int, edge_ms: int = 50) -> np.ndarray:
    """Drop the filter's start-up and tail so measurements see the steady state."""
    e = rate * edge_ms // 1000
    return y[e:-e]


# ----------------------------------------------------------------------------------- G.711

def test_all_ulaw_codes_survive_decode_encode() -> None:
    codes = bytes(range(256))
    pcm = g711.ulaw_to_pcm16(codes)
    back = g711.pcm16_to_ulaw(pcm)
    # 0x7F and 0xFF are mu-law's negative and positive zero; both decode to 0, which encodes
    # as 0xFF. Every other code comes back as itself.
    changed = {i: back[i] for i in range(256) if back[i] != codes[i]}
    assert changed == {0x7F: 0xFF}
    assert g711.ulaw_to_pcm16(back) == pcm


def test_all_alaw_codes_survive_decode_encode() -> None:
    codes = bytes(range(256))
    assert g711.pcm16_to_alaw(g711.alaw_to_pcm16(codes)) == codes


@pytest.mark.parametrize(
    "encode, decode",
    [(g711.pcm16_to_ulaw, g711.ulaw_to_pcm16), (g711.pcm16_to_alaw, g711.alaw_to_pcm16)],
    ids=["ulaw", "alaw"],
)
def test_g711_error_is_bounded(encode, decode) -> None:
    x = np.arange(-32768, 32768, dtype=np.int16)
    y = np.frombuffer(decode(encode(x.tobytes())), dtype=np.int16)
    assert len(y) == len(x)
    err = np.abs(y.astype(np.int64) - x.astype(np.int64))
    # Half a quantisation step: 1/16 of the segment's range, so <= |x|/32, plus the finest step.
    assert np.all(err <= np.abs(x.astype(np.int64)) / 32 + 8)
    s = tone(1004, 8000, 1.0, amp=20000)
    ys = np.frombuffer(decode(encode(s.tobytes())), dtype=np.int16)
    snr = 20 * np.log10(rms(s) / rms(ys.astype(np.int64) - s))
    assert snr > 35.0


def test_g711_encoders_reject_half_samples() -> None:
    with pytest.raises(ValueError):
        g711.pcm16_to_ulaw(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        g711.pcm16_to_alaw(b"\x00")


# ----------------------------------------------------------------------------------- resampler

DIRECTIONS = [(8000, 24000), (24000, 8000)]


def speechlike(rate: int, seconds: float, seed: int = 1) -> np.ndarray:
    """Harmonics of a gliding 120-220 Hz voice up to 3.4 kHz, with a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = np.zeros_like(t)
    for k in range(1, 20):
        mask = k * f0 < 3400
        y += mask * rng.uniform(0.3, 1.0) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    y *= env
    return np.round(y / np.abs(y).max() * 20000).astype(np.int16)


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_streamed_equals_one_shot(in_rate: int, out_rate: int) -> None:
    x = speechlike(in_rate, 1.5)
    streamed = stream(StreamResampler(in_rate, out_rate), x)
    whole = soxr.resample(x, in_rate, out_rate, quality=DEFAULT_QUALITY)
    assert len(streamed) == len(whole) == len(x) * out_rate // in_rate
    assert np.abs(streamed.astype(np.int32) - whole).max() <= DITHER_LSB


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2400), min_size=1, max_size=12))
def test_any_chunking_gives_the_same_stream(cuts: list[int]) -> None:
    x = speechlike(8000, 0.3, seed=3)
    bounds = sorted({0, len(x), *[min(c, len(x)) for c in cuts]})
    rs = StreamResampler(8000, 24000)
    parts = [rs.process(x[a:b].tobytes()) for a, b in zip(bounds, bounds[1:])]
    parts.append(rs.flush())
    got = np.frombuffer(b"".join(parts), dtype=np.int16)
    whole = soxr.resample(x, 8000, 24000, quality=DEFAULT_QUALITY)
    assert len(got) == len(whole)
    assert np.abs(got.astype(np.int32) - whole).max() <= DITHER_LSB


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_no_clicks_at_frame_boundaries(in_rate: int, out_rate: int) -> None:
    x = tone(1000, in_rate, 1.0)
    streamed = stream(StreamResampler(in_rate, out_rate), x)
    whole = soxr.resample(x, in_rate, out_rate, quality=DEFAULT_QUALITY)
    jump_streamed = np.abs(np.diff(streamed.astype(np.int32))).max()
    jump_whole = np.abs(np.diff(whole.astype(np.int32))).max()
    assert jump_streamed <= jump_whole + DITHER_LSB


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_passband_is_flat_to_3400_hz(in_rate: int, out_rate: int) -> None:
    gains = []
    for f in range(100, 3401, 100):
        x = tone(f, in_rate, 0.5)
        y = steady(stream(StreamResampler(in_rate, out_rate), x), out_rate)
        ref = steady(x, in_rate)
        gains.append(20 * np.log10(amplitude_at(y, f, out_rate) / amplitude_at(ref, f, in_rate)))
    assert max(gains) - min(gains) <= 1.0
    assert max(abs(g) for g in gains) <= 1.0


def test_downsampling_rejects_aliases_by_60_db() -> None:
    # Anything between 5 and 11 kHz folds into 0-4 kHz at 8 kHz; it must be filtered out.
    for f in range(5000, 11001, 250):
        x = tone(f, 24000, 0.5)
        y = steady(stream(StreamResampler(24000, 8000), x), 8000)
        assert 20 * np.log10(max(rms(y), 1e-9) / rms(x)) <= -60.0, f


def test_upsampling_rejects_images_by_60_db() -> None:
    for f in (300, 1000, 2500, 3400):
        y = steady(stream(StreamResampler(8000, 24000), tone(f, 8000, 0.5)), 24000)
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        freqs = np.fft.rfftfreq(len(y), 1 / 24000)
        wanted = spectrum[np.abs(freqs - f) < 50].max()
        images = spectrum[freqs > 4600].max()
        assert 20 * np.log10(images / wanted) <= -60.0, f


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_reset_drops_held_audio(in_rate: int, out_rate: int) -> None:
    loud = tone(440, in_rate, 0.2, amp=30000).tobytes()
    silence = bytes(len(loud))

    kept = StreamResampler(in_rate, out_rate)
    kept.process(loud)
    tail = np.frombuffer(kept.process(silence) + kept.flush(), dtype=np.int16)
    assert np.abs(tail).max() > 1000  # without reset the interrupted audio leaks out

    rs = StreamResampler(in_rate, out_rate)
    rs.process(loud)
    rs.reset()
    assert rs.latency_ms == 0.0
    after = np.frombuffer(rs.process(silence) + rs.flush(), dtype=np.int16)
    assert len(after) == len(silence) // 2 * out_rate // in_rate
    assert np.abs(after).max() <= DITHER_LSB


def test_reset_behaves_like_a_fresh_instance() -> None:
    x = speechlike(8000, 0.5, seed=7)
    used = StreamResampler(8000, 24000)
    stream(used, speechlike(8000, 0.3, seed=8), flush=False)
    used.reset()
    a = stream(used, x)
    b = stream(StreamResampler(8000, 24000), x)
    assert len(a) == len(b)
    assert np.abs(a.astype(np.int32) - b).max() <= DITHER_LSB


def test_flush_emits_held_audio_and_rearms() -> None:
    rs = StreamResampler(24000, 8000)
    x = speechlike(24000, 0.2).tobytes()
    first = rs.process(x)
    assert rs.latency_ms > 0.0
    assert len(first) // 2 + rs.latency_ms * 8 == pytest.approx(len(x) // 2 / 3)
    rest = rs.flush()
    assert (len(first) + len(rest)) // 2 == len(x) // 2 // 3
    assert rs.latency_ms == 0.0
    again = rs.process(x) + rs.flush()  # usable again after a flush
    assert len(again) == len(first) + len(rest)


def test_resampler_rejects_half_samples() -> None:
    with pytest.raises(ValueError):
        StreamResampler(8000, 24000).process(b"\x01\x02\x03")
