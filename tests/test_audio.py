"""Audio core: G.711 codec, streaming resampler, per-call transcoders.

The resampler checks are signal measurements (gain of a tone, energy that leaks through) made on
the stream exactly as the gateway drives it: 20 ms frames through one long-lived instance.
libsoxr adds +-1 LSB TPDF dither to int16 output, so "equal" below means within 2 LSB.
"""
from __future__ import annotations

import base64

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegw.audio import g711
from voicegw.audio.resample import DEFAULT_QUALITY, StreamResampler
from voicegw.audio.transcode import (
    CallerToModel,
    ModelToCaller,
    b64_decoded_len,
    model_audio_ms,
    pcm24_ms,
    ulaw_ms,
)

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


# ----------------------------------------------------------------------------------- transcode

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def split_bytes(data: bytes, sizes: list[int]) -> list[bytes]:
    """Cut `data` into pieces of the given sizes, cycling through them."""
    out, i, k = [], 0, 0
    while i < len(data):
        out.append(data[i:i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


_ULAW_LEVELS = np.unique(np.frombuffer(g711.ulaw_to_pcm16(bytes(range(256))), dtype=np.int16))


def ulaw_level_index(ulaw: bytes) -> np.ndarray:
    """Position of each mu-law code on the ordered ladder of its 255 distinct levels."""
    pcm = np.frombuffer(g711.ulaw_to_pcm16(ulaw), dtype=np.int16)
    return np.searchsorted(_ULAW_LEVELS, pcm)


def model_to_caller_all(conv: ModelToCaller, deltas: list[bytes]) -> tuple[bytes, list[str]]:
    outs = [conv.convert(b64(d)) for d in deltas]
    outs.append(conv.flush())
    return b"".join(unb64(o) for o in outs), outs


def test_transcode_round_trip_keeps_speech() -> None:
    x = speechlike(24000, 2.0, seed=11)
    # Model deltas arrive in uneven sizes, odd byte counts included.
    deltas = split_bytes(x.tobytes(), [4801, 9599, 1203, 24000, 7])
    ulaw, _ = model_to_caller_all(ModelToCaller("pcm16"), deltas)
    assert len(ulaw) == len(x) // 3

    up = CallerToModel("pcm16")
    frames = [ulaw[i:i + 160] for i in range(0, len(ulaw), 160)]  # Twilio: 20 ms frames
    back = np.frombuffer(b"".join(unb64(up.convert(b64(f))) for f in frames), dtype=np.int16)
    # The upsampler still holds its latency's worth; everything it gave back lines up with x.
    assert len(back) == pytest.approx(len(x) - up.latency_ms * 24, abs=1)
    ref = x[:len(back)]
    err = steady(back.astype(np.float64) - ref, 24000)
    snr = 20 * np.log10(rms(steady(ref, 24000)) / rms(err))
    assert snr >= 34.0  # mu-law alone gives ~38 dB; the resamplers must cost little


def test_model_to_caller_matches_direct_conversion() -> None:
    x = speechlike(24000, 1.0, seed=12)
    ulaw, _ = model_to_caller_all(ModelToCaller("pcm16"), split_bytes(x.tobytes(), [960]))
    direct = g711.pcm16_to_ulaw(soxr.resample(x, 24000, 8000, quality=DEFAULT_QUALITY).tobytes())
    assert len(ulaw) == len(direct)
    # Dither may tip a sample across a quantisation boundary, never further.
    assert np.abs(ulaw_level_index(ulaw) - ulaw_level_index(direct)).max() <= 1


def test_caller_to_model_matches_direct_conversion() -> None:
    x = speechlike(8000, 1.0, seed=13)
    ulaw = g711.pcm16_to_ulaw(x.tobytes())
    up = CallerToModel("pcm16")
    got = np.frombuffer(
        b"".join(unb64(up.convert(b64(ulaw[i:i + 160]))) for i in range(0, len(ulaw), 160)),
        dtype=np.int16,
    )
    pcm8 = np.frombuffer(g711.ulaw_to_pcm16(ulaw), dtype=np.int16)
    direct = soxr.resample(pcm8, 8000, 24000, quality=DEFAULT_QUALITY)
    assert 0 < len(got) < len(direct)
    assert np.abs(got.astype(np.int32) - direct[:len(got)]).max() <= DITHER_LSB


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=3001), min_size=1, max_size=8))
def test_odd_length_deltas_are_carried(sizes: list[int]) -> None:
    x = speechlike(24000, 0.25, seed=5).tobytes()
    whole, _ = model_to_caller_all(ModelToCaller("pcm16"), [x])
    pieces, _ = model_to_caller_all(ModelToCaller("pcm16"), split_bytes(x, sizes))
    assert len(pieces) == len(whole)
    assert np.abs(ulaw_level_index(pieces) - ulaw_level_index(whole)).max() <= 1


def test_reset_drops_carried_byte_and_held_audio() -> None:
    x = speechlike(24000, 0.3, seed=6).tobytes()
    conv = ModelToCaller("pcm16")
    conv.convert(b64(tone(300, 24000, 0.2, amp=30000).tobytes() + b"\x55"))  # odd: carries
    conv.reset()
    after, _ = model_to_caller_all(conv, [x])
    fresh, _ = model_to_caller_all(ModelToCaller("pcm16"), [x])
    assert len(after) == len(fresh)  # a leftover byte would shift every sample
    assert np.abs(ulaw_level_index(after) - ulaw_level_index(fresh)).max() <= 1


def test_g711_mode_passes_payloads_through() -> None:
    payload = b64(bytes(range(256)) * 3 + b"\x01")
    down, up = ModelToCaller("g711_ulaw"), CallerToModel("g711_ulaw")
    assert down.convert(payload) is payload
    assert up.convert(payload) is payload
    assert down.flush() == ""
    down.reset()
    up.reset()
    assert down.convert(payload) == payload


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        CallerToModel("g711_alaw")
    with pytest.raises(ValueError):
        ModelToCaller("pcm")


@settings(max_examples=200)
@given(data=st.binary(max_size=4000))
def test_b64_decoded_len_matches_real_encodes(data: bytes) -> None:
    padded = base64.b64encode(data).decode("ascii")
    assert b64_decoded_len(padded) == len(data)
    assert b64_decoded_len(padded.rstrip("=")) == len(data)


def test_duration_helpers_against_real_payloads() -> None:
    assert ulaw_ms(160) == 20.0
    assert pcm24_ms(960) == 20.0
    pcm = tone(440, 24000, 0.37).tobytes()
    assert model_audio_ms(b64(pcm), "pcm16") == pytest.approx(370.0)
    assert ModelToCaller.duration_ms_of_model_audio(b64(pcm), "pcm16") == pytest.approx(370.0)
    assert model_audio_ms(b64(bytes(1234)), "g711_ulaw") == pytest.approx(154.25)


def test_caller_side_duration_adds_up_to_model_duration() -> None:
    # Playout accounting: what we send Twilio for a response lasts exactly as long as what the
    # model produced, once the resampler is flushed.
    x = speechlike(24000, 1.2, seed=9).tobytes()
    deltas = [b64(d) for d in split_bytes(x, [4800, 12000, 3600])]
    conv = ModelToCaller("pcm16")
    outs = [conv.convert(d) for d in deltas] + [conv.flush()]
    produced = sum(model_audio_ms(d, "pcm16") for d in deltas)
    sent = sum(ulaw_ms(b64_decoded_len(o)) for o in outs)
    assert produced == pytest.approx(1200.0)
    assert sent == pytest.approx(produced)
