"""The C stream (`voicegw.audio._fir.Stream`): a call's per-message conversions in one C call each,
held to their Python references in voicegw.audio.transcode over the numpy resampler.

A caller frame goes base64 mu-law -> 24 kHz PCM16 base64 (`caller_b64`), a model delta 24 kHz
PCM16 -> base64 mu-law (`model_b64`, with the odd byte a delta may end with carried over). Both
must give the same text, the same held audio (`latency_ms`) and the same flush as the reference
for any stream: any lengths, odd deltas, resets and flushes anywhere, clipping loud audio.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator

import numpy as np
import pybase64
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegw.audio import resample
from voicegw.audio.transcode import CallerToModel, ModelToCaller

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

_fir = resample._fir
b64 = pybase64.b64encode_as_string


def test_the_c_stream_was_built() -> None:
    assert _fir is not None and hasattr(_fir, "Stream"), "voicegw.audio._fir was not built (see setup.py)"


def test_the_mu_law_table_is_audioops_for_every_sample() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16).tobytes()
    assert _fir.lin2ulaw(every) == audioop.lin2ulaw(every, 2)


def pair(cls: type, **kw: object) -> tuple:
    return cls("pcm16", compiled=True, **kw), cls("pcm16", compiled=False, **kw)


# one step of a call: ("frame", mu-law bytes), ("delta", PCM16 bytes of any length, raw given or
# not), ("reset",), ("flush",)
steps = st.one_of(
    st.tuples(st.just("frame"), st.binary(max_size=500)),
    st.tuples(st.just("delta"), st.integers(0, 2500), st.booleans(), st.sampled_from([40, 9000, 70000])),
    st.tuples(st.just("reset")),
    st.tuples(st.just("flush")),
)


@given(seed=st.integers(0, 2**32 - 1), plan=st.lists(steps, min_size=1, max_size=25))
@settings(max_examples=200, deadline=None)
def test_both_directions_equal_their_references(seed: int, plan: list[tuple]) -> None:
    rng = np.random.default_rng(seed)
    (up, up_ref), (down, down_ref) = pair(CallerToModel), pair(ModelToCaller)
    for step in plan:
        if step[0] == "frame":
            text = b64(step[1])
            assert up.convert(text) == up_ref.convert(text)
        elif step[0] == "delta":
            nbytes, give_raw, scale = step[1:]
            raw = (rng.standard_normal(nbytes // 2 + 1) * scale).clip(-32768, 32767).astype("<i2").tobytes()[:nbytes]
            args = (b64(raw), raw) if give_raw else (b64(raw),)
            assert down.convert(*args) == down_ref.convert(*args)
        elif step[0] == "reset":
            up.reset(), up_ref.reset(), down.reset(), down_ref.reset()
        else:
            assert down.flush() == down_ref.flush()
        assert up.latency_ms == up_ref.latency_ms
        assert down.latency_ms == down_ref.latency_ms
    assert down.flush() == down_ref.flush()


def test_an_odd_byte_is_carried_to_the_next_delta_and_dropped_by_flush_and_reset() -> None:
    sig = (np.sin(np.arange(2400) / 7) * 12000).astype("<i2").tobytes()
    for end in ("flush", "reset"):
        down, ref = pair(ModelToCaller)
        whole = ModelToCaller("pcm16", compiled=True)
        pieces = [sig[:1], sig[1:2], sig[2:961], sig[961:2000], sig[2000:]]  # every cut but one odd
        assert "".join(down.convert(b64(p), p) for p in pieces) == "".join(ref.convert(b64(p)) for p in pieces)
        assert down.flush() == ref.flush()
        assert pybase64.b64decode(whole.convert(b64(sig))) + pybase64.b64decode(whole.flush()) == \
            b"".join(pybase64.b64decode(down.convert(b64(p))) for p in pieces) + pybase64.b64decode(down.flush())
        # half a sample, then the stream ends: the next stream starts clean
        down.convert(b64(sig[:3]))
        getattr(down, end)()
        ref.convert(b64(sig[:3]))
        getattr(ref, end)()
        assert down.convert(b64(sig[3:963])) == ref.convert(b64(sig[3:963]))


def test_what_the_references_reject_the_c_stream_rejects_alike() -> None:
    (up, up_ref), (down, down_ref) = pair(CallerToModel), pair(ModelToCaller)
    for conv, ref, args in ((up, up_ref, ("AAA",)), (down, down_ref, ("AAA",)), (up, up_ref, (7,)),
                            (down, down_ref, ("AAAA", 7)), (down, down_ref, ("AAAA", "\x00\x00"))):
        with pytest.raises(Exception) as got:
            conv.convert(*args)
        with pytest.raises(type(got.value)):
            ref.convert(*args)
    engine = resample.StreamResampler(8000, 24000, compiled=True).engine
    with pytest.raises(TypeError, match="24 kHz -> 8 kHz"):
        engine.model_b64("AAAA")
    with pytest.raises(ValueError, match="whole samples, got 3 bytes"):
        engine.process(b"\0\0\0")
    # a failed call leaves the stream as it was
    assert up.convert(b64(bytes(160))) == up_ref.convert(b64(bytes(160)))


def test_the_c_stream_keeps_no_reference_to_what_it_was_given() -> None:
    up, down = CallerToModel("pcm16", compiled=True), ModelToCaller("pcm16", compiled=True)
    text, raw = b64(bytes(range(160))), bytes(960)
    dtext = b64(raw)
    before = sys.getrefcount(text), sys.getrefcount(raw), sys.getrefcount(dtext)
    for _ in range(1000):
        up.convert(text)
        down.convert(dtext, raw)
        down.convert(dtext)
    assert (sys.getrefcount(text), sys.getrefcount(raw), sys.getrefcount(dtext)) == before


def test_the_lane_calls_the_c_stream_directly() -> None:
    """With the C filter, a caller frame's conversion is one C call (no Python frame around it)."""
    assert type(CallerToModel("pcm16").convert).__name__ == "builtin_function_or_method"
    assert type(ModelToCaller("pcm16").convert).__name__ == "builtin_function_or_method"


def test_a_delta_converts_alike_with_its_arguments_named() -> None:
    """`model_b64` takes the reference's signature, keywords included."""
    raw = (np.arange(961) * 37 % 20000 - 10000).astype("<i2").tobytes()[:1921]
    down, ref = pair(ModelToCaller)
    assert down.convert(b64(raw), raw=raw) == ref.convert(b64(raw), raw=raw)
    assert down.convert(model_b64=b64(raw)) == ref.convert(model_b64=b64(raw))
    assert down.convert(b64(raw), raw=None) == ref.convert(b64(raw), raw=None)
    for bad in ({"audio": "AAAA"}, {"raw": b""}):
        with pytest.raises(TypeError):
            down.convert(**bad)
        with pytest.raises(TypeError):
            ref.convert(**bad)
    with pytest.raises(TypeError):
        down.convert("AAAA", b"", raw=b"")
    with pytest.raises(TypeError):
        ref.convert("AAAA", b"", raw=b"")


@contextlib.contextmanager
def coefficients(up: np.ndarray, down: np.ndarray) -> Iterator[None]:
    """Other coefficients, in C and in the numpy path, for the duration."""
    saved = resample._UP_PF, resample._DOWN_HF
    _fir.set_coefficients(up.astype(np.int16).tobytes(), down.astype(np.int16).tobytes())
    resample._UP_PF, resample._DOWN_HF = up.astype(np.float64), down.astype(np.float64)
    try:
        yield
    finally:
        _fir.set_coefficients(resample._UP_P.astype(np.int16).tobytes(), resample._DOWN_H.astype(np.int16).tobytes())
        resample._UP_PF, resample._DOWN_HF = saved


def test_an_upsampling_phase_zero_that_is_not_a_delay_is_filtered() -> None:
    """The C copies upsampling's phase 0 while it is a plain delay; any other phase 0 is filtered,
    as numpy does it."""
    up = resample._UP_P.copy()
    up[18:23, 0] = [-300, 2000, 14000, 2000, -300]
    x = (np.random.default_rng(5).standard_normal(1000) * 9000).clip(-32768, 32767).astype(np.int16).tobytes()
    with coefficients(up, resample._DOWN_H):
        c = resample.StreamResampler(8000, 24000, compiled=True)
        n = resample.StreamResampler(8000, 24000, compiled=False)
        assert c.process(x) == n.process(x)
        assert c.flush() == n.flush()


def test_coefficients_that_could_overflow_32_bits_are_refused() -> None:
    loud = resample._DOWN_H.copy()
    loud[::2] = 1200  # magnitudes summing to 3.1 times 2**15: full-scale input could pass 2**31
    with pytest.raises(ValueError, match="overflow"):
        _fir.set_coefficients(resample._UP_P.astype(np.int16).tobytes(), loud.astype(np.int16).tobytes())
    with pytest.raises(ValueError, match="wrong size"):
        _fir.set_coefficients(b"\0" * 10, resample._DOWN_H.astype(np.int16).tobytes())
    # a refused call leaves the filter as it was
    x = (np.random.default_rng(6).standard_normal(960) * 9000).astype(np.int16).tobytes()
    c, n = resample.StreamResampler(24000, 8000, compiled=True), resample.StreamResampler(24000, 8000, compiled=False)
    assert c.process(x) == n.process(x)
