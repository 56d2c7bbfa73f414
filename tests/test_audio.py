"""Audio core: G.711 codec, streaming resampler, per-call transcoders.

The resampler checks are signal measurements (gain of a tone by FFT, energy that leaks through,
where an impulse comes out and when) made on the stream exactly as the gateway drives it: 20 ms
frames through one long-lived instance. The resampler's arithmetic is exact integer arithmetic,
so a stream cut anywhere must equal the whole signal resampled at once bit for bit.
"""
from __future__ import annotations

import base64
import contextlib
import platform
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import voicegw.compiled
from voicegw.audio import g711, resample
from voicegw.audio.resample import DELAY_MS, StreamResampler
from voicegw.audio.transcode import (
    CallerToModel,
    ModelToCaller,
    b64_decoded_len,
    model_audio_ms,
    pcm24_ms,
    ulaw_ms,
)


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


def one_shot(in_rate: int, out_rate: int, x: np.ndarray) -> np.ndarray:
    """The whole signal in one call, then the tail."""
    rs = StreamResampler(in_rate, out_rate)
    return np.frombuffer(rs.process(x.tobytes()) + rs.flush(), dtype=np.int16)


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))


def steady(y: np.ndarray, rate: int, edge_ms: int = 50) -> np.ndarray:
    """Drop the filter's start-up and tail so measurements see the steady state."""
    e = rate * edge_ms // 1000
    return y[e:-e]


def spectrum(y: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and amplitudes of `y`: a tone on an exact bin shows its amplitude, no leakage."""
    amp = np.abs(np.fft.rfft(y.astype(np.float64))) * 2 / len(y)
    return np.fft.rfftfreq(len(y), 1 / rate), amp


def db(ratio: float) -> float:
    return 20 * np.log10(max(ratio, 1e-12))


# ----------------------------------------------------------------------------------- G.711
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
PASSBAND_HZ = range(100, 3401, 100)


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


def chirp(rate: int, seconds: float = 0.5, f0: float = 200.0, f1: float = 3400.0) -> np.ndarray:
    """A Hann-tapered linear chirp, sampled at `rate` (the same waveform at every rate)."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return np.round(16000 * np.hanning(len(t)) * np.sin(phase)).astype(np.int16)


def test_the_compiled_filter_was_built() -> None:
    """`make` installs with a C compiler at hand (the project's own sysdeps): the filter must be
    there, or every pcm16 call pays numpy's overhead per frame without anyone noticing."""
    assert resample.COMPILED, "voicegw.audio._fir was not built (see setup.py)"


def _kernels() -> list[str]:
    """The C filter's kernels this machine runs: the portable one, and AVX2 where the CPU has it."""
    fir = voicegw.compiled.fir
    if fir is None:
        return []
    try:
        fir.use_kernel(fir.use_kernel("avx2"))
    except ValueError:
        return ["portable"]
    return ["avx2", "portable"]


@contextlib.contextmanager
def running(kernel: str) -> Iterator[None]:
    before = voicegw.compiled.fir.use_kernel(kernel)
    try:
        yield
    finally:
        voicegw.compiled.fir.use_kernel(before)


@pytest.mark.parametrize("kernel", _kernels())
@given(direction=st.sampled_from(DIRECTIONS), seed=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.integers(0, 700), min_size=1, max_size=12), scale=st.sampled_from([50, 8000, 60000]),
       reset_at=st.integers(-1, 11))
@settings(max_examples=150, deadline=None)
def test_the_compiled_filter_equals_the_numpy_one_bit_for_bit(kernel: str, direction: tuple[int, int], seed: int,
                                                              cuts: list[int], scale: int, reset_at: int) -> None:
    """Any stream, cut anywhere (odd pieces, empty ones, a reset in the middle, loud enough to
    clip), gives the same bytes, the same held audio and the same flush from both, with either
    of the C filter's kernels."""
    rng = np.random.default_rng(seed)
    with running(kernel):
        c, n = StreamResampler(*direction, compiled=True), StreamResampler(*direction, compiled=False)
        for i, size in enumerate(cuts):
            piece = (rng.standard_normal(size) * scale).clip(-32768, 32767).astype(np.int16).tobytes()
            assert c.process(piece) == n.process(piece)
            assert c.latency_ms == n.latency_ms
            if i == reset_at:
                c.reset()
                n.reset()
        assert c.flush() == n.flush()


def test_the_filter_runs_its_fastest_kernel_here() -> None:
    """Where the CPU has AVX2, that kernel is the one the module picked when it loaded."""
    cpu_has_avx2 = platform.machine() == "x86_64" and " avx2" in Path("/proc/cpuinfo").read_text()
    loaded_with = voicegw.compiled.fir.use_kernel("portable")
    voicegw.compiled.fir.use_kernel(loaded_with)
    assert loaded_with == ("avx2" if cpu_has_avx2 else "portable")


def _shift(direction: tuple[int, int]) -> int:
    return resample._UP_SHIFT if direction[0] < direction[1] else resample._DOWN_SHIFT


def _tie_stream(coefs: np.ndarray, direction: tuple[int, int]) -> np.ndarray:
    """Two adjacent samples whose weighted sum lands exactly halfway between two output values
    (half a step modulo the coefficients' scale), placed where one output of the numpy path takes
    them: random streams seldom round a tie, and both paths must send it the same way (up)."""
    m, a = 1 << _shift(direction), np.arange(-32768, 32768, dtype=np.int64)
    for c1, c2 in zip(coefs[:-1].astype(np.int64), coefs[1:].astype(np.int64)):
        if c2 % 2:  # invertible modulo 2**shift: b = (half - a c1) / c2
            b = (m // 2 - a * int(c1)) * pow(int(c2), -1, m) % m
            b = np.where(b >= m // 2, b - m, b)
            ok = np.flatnonzero((b >= -32768) & (b <= 32767))
            for k in ok[np.argsort(np.maximum(abs(a[ok]), abs(b[ok])))][:3]:  # the quietest: not clipped
                va, vb = int(a[k]), int(b[k])
                for pos in range(0, 130):
                    x = np.zeros(400, dtype=np.int16)
                    x[pos], x[pos + 1] = va, vb
                    acc = StreamResampler(*direction, compiled=False)._run(x)
                    if ((acc % m == m // 2) & (abs(acc) < 32767 * m)).any():  # a tie, not clipped
                        return x
    raise AssertionError("no stream with a rounding tie found")


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("kernel", _kernels())
def test_the_compiled_filter_rounds_ties_as_numpy(direction: tuple[int, int], kernel: str) -> None:
    coefs = resample._UP_P[:, 1] if direction[0] < direction[1] else resample._DOWN_H
    x = _tie_stream(coefs, direction).tobytes()
    with running(kernel):
        c, n = StreamResampler(*direction, compiled=True), StreamResampler(*direction, compiled=False)
        assert c.process(x) == n.process(x)


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_every_frame_gives_its_frame_out(in_rate: int, out_rate: int) -> None:
    rs = StreamResampler(in_rate, out_rate)
    frame = speechlike(in_rate, 0.02).tobytes()
    sizes = [len(rs.process(frame)) // 2 for _ in range(50)]
    per_frame = out_rate // 50  # 480 or 160
    # Only the stream's first frame is short, by the filter's look-ahead; nothing else is held.
    assert sizes[0] == per_frame - round(DELAY_MS * out_rate / 1000)
    assert sizes[1:] == [per_frame] * 49
    assert len(rs.flush()) // 2 == per_frame - sizes[0]


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_streamed_equals_one_shot(in_rate: int, out_rate: int) -> None:
    x = speechlike(in_rate, 1.5)
    streamed = stream(StreamResampler(in_rate, out_rate), x)
    whole = one_shot(in_rate, out_rate, x)
    assert len(streamed) == len(whole) == len(x) * out_rate // in_rate
    assert np.array_equal(streamed, whole)


def textbook(in_rate: int, out_rate: int, x: np.ndarray, rounded: bool = True) -> np.ndarray:
    """Zero-stuff (up) or keep every third sample (down) around a plain convolution with the
    prototype filter, delay-compensated; float, before rounding and clipping. `rounded`: the
    filter as the resampler has it, its coefficients rounded to integer steps (then every sum
    here is exact in float64); else the designed filter."""
    up = out_rate > in_rate
    h = resample.rounded_taps(up) if rounded else resample._H
    d = (len(h) - 1) // 2
    if up:
        xu = np.zeros(len(x) * 3)
        xu[::3] = x
        return np.convolve(xu, 3 * h)[d:d + len(xu)]
    return np.convolve(x.astype(np.float64), h)[d::3][: -(-len(x) // 3)]


def to_int16(ref: np.ndarray) -> np.ndarray:
    """Rounded half up (as the resampler rounds) and clipped."""
    return np.clip(np.floor(ref + 0.5), -32768, 32767)


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_one_shot_is_the_textbook_filter(in_rate: int, out_rate: int) -> None:
    # The polyphase bookkeeping must not change a thing...
    x = speechlike(in_rate, 0.5, seed=2)
    ref = textbook(in_rate, out_rate, x)
    got = one_shot(in_rate, out_rate, x)
    assert len(got) == len(ref)
    assert np.array_equal(got, to_int16(ref))
    # ...and rounding the coefficients to integer steps stays 70 dB under the signal
    ideal = textbook(in_rate, out_rate, x, rounded=False)
    assert db(rms(got - ideal) / rms(ideal)) <= -70.0


@settings(max_examples=60, deadline=None)
@given(
    direction=st.sampled_from(DIRECTIONS),
    cuts=st.lists(st.integers(min_value=0, max_value=7200), min_size=1, max_size=20),
)
def test_any_chunking_gives_the_same_stream(direction: tuple[int, int], cuts: list[int]) -> None:
    in_rate, out_rate = direction
    x = speechlike(in_rate, 0.3, seed=3)
    bounds = sorted({0, len(x), *[min(c, len(x)) for c in cuts]})
    rs = StreamResampler(in_rate, out_rate)
    parts = []
    fed = 0
    for a, b in zip(bounds, bounds[1:]):
        parts.append(rs.process(x[a:b].tobytes()))
        fed += b - a
        given_out = sum(len(p) for p in parts) // 2
        # latency_ms is exactly the input not yet represented in the output...
        assert rs.latency_ms == pytest.approx(1000 * (fed / in_rate - given_out / out_rate))
        # ...and never more than the filter's look-ahead (what arrived before it is all out)
        assert rs.latency_ms <= DELAY_MS + 1e-9
    parts.append(rs.flush())
    got = np.frombuffer(b"".join(parts), dtype=np.int16)
    assert np.array_equal(got, one_shot(in_rate, out_rate, x))


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_no_clicks_at_frame_boundaries(in_rate: int, out_rate: int) -> None:
    x = tone(1000, in_rate, 1.0)
    streamed = stream(StreamResampler(in_rate, out_rate), x)
    assert np.array_equal(streamed, one_shot(in_rate, out_rate, x))
    # and the stream itself is smooth: no step larger than the 1 kHz sine's own steepest one
    steepest = 16000 * 2 * np.pi * 1000 / out_rate
    assert np.abs(np.diff(steady(streamed, out_rate).astype(np.int32))).max() <= steepest + 2


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_output_lines_up_with_input(in_rate: int, out_rate: int) -> None:
    # Cross-correlate the resampled chirp with the same chirp sampled at the output rate:
    # the peak at lag 0 means output sample 0 is input time 0 (the delay is all in the hold).
    y = one_shot(in_rate, out_rate, chirp(in_rate)).astype(np.float64)
    ref = chirp(out_rate).astype(np.float64)
    lags = range(-40, 41)
    corr = [np.dot(y[max(0, k):len(y) + min(0, k)], ref[max(0, -k):len(ref) - max(0, k)])
            for k in lags]
    assert lags[int(np.argmax(corr))] == 0


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_delay_is_the_filter_group_delay(in_rate: int, out_rate: int) -> None:
    # Feed an impulse one input sample at a time and note how much more input it takes until
    # the output sample at the impulse's own time comes out: that is the algorithmic delay.
    p = 300  # impulse position (a multiple of 3, so it falls on an output sample either way)
    x = np.zeros(p + 200, dtype=np.int16)
    x[p] = 20000
    rs = StreamResampler(in_rate, out_rate)
    out = bytearray()
    at = p * out_rate // in_rate  # index of the impulse in the output
    for i in range(len(x)):
        out += rs.process(x[i:i + 1].tobytes())
        if len(out) // 2 > at:
            break
    else:
        pytest.fail("the impulse never came out")
    delay_ms = (i - p) * 1000 / in_rate
    assert 0 < delay_ms <= 5.0
    assert delay_ms == pytest.approx(DELAY_MS)
    assert np.argmax(np.frombuffer(bytes(out), dtype=np.int16)) == at
    # What latency_ms reports matches, to within the samples waiting for the next output slot.
    slot_ms = 1000 / min(in_rate, out_rate)
    assert delay_ms - slot_ms < rs.latency_ms <= delay_ms


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_passband_ripple_within_0_1_db_to_3400_hz(in_rate: int, out_rate: int) -> None:
    gains = []
    for f in PASSBAND_HZ:
        x = tone(f, in_rate, 0.5)
        y = steady(stream(StreamResampler(in_rate, out_rate), x), out_rate)
        fy, ay = spectrum(y, out_rate)
        fx, ax = spectrum(steady(x, in_rate), in_rate)  # the same 400 ms: output is aligned
        gains.append(db(ay[fy == f][0] / ax[fx == f][0]))
    assert max(gains) - min(gains) <= 0.1
    assert max(abs(g) for g in gains) <= 0.1


def test_downsampling_rejects_aliases_by_60_db() -> None:
    # 4.6-11.4 kHz folds onto 3.4-0 kHz at 8 kHz: none of it may reach the telephone band.
    for f in range(4600, 11401, 100):
        x = tone(f, 24000, 0.5)
        y = steady(stream(StreamResampler(24000, 8000), x), 8000)
        freqs, amp = spectrum(y, 8000)
        leak = amp[freqs <= 3400].max()
        assert db(leak / 16000) <= -60.0, f


def test_upsampling_rejects_images_by_60_db() -> None:
    for f in PASSBAND_HZ:
        y = steady(stream(StreamResampler(8000, 24000), tone(f, 8000, 0.5)), 24000)
        freqs, amp = spectrum(y, 24000)
        wanted = amp[freqs == f][0]
        images = amp[freqs >= 4600].max()
        assert db(images / wanted) <= -60.0, f


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_output_is_rounded_and_clipped(in_rate: int, out_rate: int) -> None:
    # A constant comes out as itself (rounded, not truncated toward zero)...
    for level in (1000, -1000, 7):
        y = one_shot(in_rate, out_rate, np.full(in_rate // 10, level, dtype=np.int16))
        assert np.all(steady(y, out_rate, edge_ms=10) == level), level
    # ...and a full-scale square wave's overshoot saturates instead of wrapping around.
    period = in_rate // 250
    sq = np.where(np.arange(in_rate // 5) % period < period // 2, 32767, -32768).astype(np.int16)
    y = one_shot(in_rate, out_rate, sq)
    ref = textbook(in_rate, out_rate, sq)
    assert ref.max() > 33000 and ref.min() < -33000  # the filter's ringing overshoots int16
    assert y.max() == 32767 and y.min() == -32768
    assert np.array_equal(y, to_int16(ref))


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_flush_emits_the_tail_and_rearms(in_rate: int, out_rate: int) -> None:
    x = speechlike(in_rate, 0.2)
    rs = StreamResampler(in_rate, out_rate)
    first = rs.process(x.tobytes())
    held_ms = rs.latency_ms
    assert 0 < held_ms <= DELAY_MS
    tail = np.frombuffer(rs.flush(), dtype=np.int16)
    # The tail is exactly the held audio, and it is the end of the signal, not silence.
    assert len(tail) == round(held_ms * out_rate / 1000)
    whole = one_shot(in_rate, out_rate, x)
    assert np.array_equal(tail, whole[len(first) // 2:])
    assert rms(tail) > 1000
    assert len(first) // 2 + len(tail) == len(x) * out_rate // in_rate
    assert rs.latency_ms == 0.0
    assert rs.flush() == b""  # nothing more was held
    again = rs.process(x.tobytes()) + rs.flush()  # a fresh stream after a flush
    assert again == whole.tobytes()


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
    assert not after.any()


@pytest.mark.parametrize("in_rate, out_rate", DIRECTIONS)
def test_reset_behaves_like_a_fresh_instance(in_rate: int, out_rate: int) -> None:
    x = speechlike(in_rate, 0.5, seed=7)
    used = StreamResampler(in_rate, out_rate)
    stream(used, speechlike(in_rate, 0.3, seed=8), flush=False)
    used.reset()
    assert np.array_equal(stream(used, x), stream(StreamResampler(in_rate, out_rate), x))


def test_resampler_rejects_half_samples() -> None:
    with pytest.raises(ValueError):
        StreamResampler(8000, 24000).process(b"\x01\x02\x03")


@pytest.mark.parametrize("in_rate, out_rate", [(16000, 8000), (8000, 16000), (44100, 8000),
                                               (8000, 8000), (24000, 24000)])
def test_resampler_refuses_other_rates(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="8000 and 24000"):
        StreamResampler(in_rate, out_rate)


def test_quality_is_accepted_and_changes_nothing() -> None:
    x = speechlike(8000, 0.2)
    rs = StreamResampler(8000, 24000, quality="VHQ")
    assert np.array_equal(stream(rs, x), one_shot(8000, 24000, x))


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
    direct = g711.pcm16_to_ulaw(one_shot(24000, 8000, x).tobytes())
    assert ulaw == direct


def test_caller_to_model_matches_direct_conversion() -> None:
    x = speechlike(8000, 1.0, seed=13)
    ulaw = g711.pcm16_to_ulaw(x.tobytes())
    up = CallerToModel("pcm16")
    got = np.frombuffer(
        b"".join(unb64(up.convert(b64(ulaw[i:i + 160]))) for i in range(0, len(ulaw), 160)),
        dtype=np.int16,
    )
    pcm8 = np.frombuffer(g711.ulaw_to_pcm16(ulaw), dtype=np.int16)
    direct = one_shot(8000, 24000, pcm8)
    # Everything but the filter's look-ahead has been sent, and it is the direct conversion.
    assert up.latency_ms == DELAY_MS
    assert len(got) == len(direct) - round(DELAY_MS * 24)
    assert np.array_equal(got, direct[:len(got)])


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=3001), min_size=1, max_size=8))
def test_odd_length_deltas_are_carried(sizes: list[int]) -> None:
    x = speechlike(24000, 0.25, seed=5).tobytes()
    whole, _ = model_to_caller_all(ModelToCaller("pcm16"), [x])
    pieces, _ = model_to_caller_all(ModelToCaller("pcm16"), split_bytes(x, sizes))
    assert pieces == whole


def test_reset_drops_carried_byte_and_held_audio() -> None:
    x = speechlike(24000, 0.3, seed=6).tobytes()
    conv = ModelToCaller("pcm16")
    conv.convert(b64(tone(300, 24000, 0.2, amp=30000).tobytes() + b"\x55"))  # odd: carries
    conv.reset()
    after, _ = model_to_caller_all(conv, [x])
    fresh, _ = model_to_caller_all(ModelToCaller("pcm16"), [x])
    assert after == fresh  # a leftover byte would shift every sample


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


def test_latency_accounts_for_every_delta() -> None:
    # The session takes (model audio produced - latency_ms) as the model audio sent so far;
    # that must equal the duration of what was actually sent, delta by delta.
    x = speechlike(24000, 0.6, seed=10).tobytes()
    conv = ModelToCaller("pcm16")
    produced = sent = 0.0
    for d in split_bytes(x, [962, 5998, 2, 1440, 30, 7202]):  # sample counts not multiples of 3
        out = conv.convert(b64(d))
        produced += pcm24_ms(len(d))
        sent += ulaw_ms(b64_decoded_len(out)) if out else 0.0
        assert sent == pytest.approx(produced - conv.latency_ms)
        assert 0.0 <= conv.latency_ms <= DELAY_MS
    sent += ulaw_ms(b64_decoded_len(conv.flush()))
    assert sent == pytest.approx(produced)
    assert conv.latency_ms == 0.0
