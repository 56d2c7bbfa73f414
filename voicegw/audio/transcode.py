"""Per-call audio converters on the hot path, one object per call per direction.

Twilio sends and expects 8 kHz mu-law; the model takes and returns either 24 kHz PCM16
("pcm16" mode) or 8 kHz mu-law ("g711_ulaw" mode, passed through untouched -- the cheapest
path, since Twilio accepts payloads of any length). Everything travels as base64 text, so the
converters take and return base64 `str` and use pybase64's SIMD codec directly (a fifth of
binascii's time on a 20 ms PCM16 frame, and its encoder returns the `str`): one decode, the
mu-law codec, the resampler, one encode, and no per-frame objects beyond the strings themselves.
Where the resampler's C was built, its stream does all four in one call from C (`convert` is the
stream's own method: 1.4 us per caller frame and 2.1 per 20 ms delta on a 2-core AVX2 machine,
where the filter in float64 took 4.1 and 3.7); `_Reference` is the same in Python over the numpy
resampler.

Playout accounting needs the duration of a payload without decoding it; the helpers at the end
compute it from the base64 text alone.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
import pybase64

from voicegw.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voicegw.audio.resample import StreamResampler, _fir

__all__ = [
    "AudioMode",
    "CallerToModel",
    "ModelToCaller",
    "b64_decoded_len",
    "ulaw_ms",
    "pcm24_ms",
    "model_audio_ms",
    "TWILIO_RATE",
    "MODEL_PCM_RATE",
]

AudioMode = Literal["pcm16", "g711_ulaw"]

TWILIO_RATE = 8000  # Hz, mu-law, 1 byte per sample
MODEL_PCM_RATE = 24000  # Hz, PCM16, 2 bytes per sample

_ULAW_BYTES_PER_MS = TWILIO_RATE // 1000  # 8
_PCM24_BYTES_PER_MS = MODEL_PCM_RATE * 2 // 1000  # 48


def _check_mode(mode: str) -> AudioMode:
    if mode == "pcm16":
        return "pcm16"
    if mode == "g711_ulaw":
        return "g711_ulaw"
    raise ValueError(f"unknown audio mode {mode!r} (expected 'pcm16' or 'g711_ulaw')")


_b64encode = pybase64.b64encode_as_string

if _fir is not None:  # the C stream's mu-law tables (audioop's own, the second by sample >> 2)
    _fir.set_codec(ulaw_to_pcm16(bytes(range(256))),  # and base64 (pybase64's)
                   pcm16_to_ulaw(np.arange(-32768, 32768, 4, dtype=np.int16).tobytes()),
                   pybase64.b64decode, _b64encode)


def _same(b64: str, raw: bytes | None = None) -> str:
    """Passthrough: the payload as it came."""
    return b64


class _Reference:
    """What the C stream (`voicegw.audio._fir.Stream`) does per message, in Python over the numpy
    resampler: the fallback without a compiler, and what the C is held to by the tests."""

    __slots__ = ("rs", "carry")

    def __init__(self, rs: StreamResampler) -> None:
        self.rs = rs
        self.carry = b""  # a model delta's trailing odd byte (half a sample)

    def caller_b64(self, ulaw_b64: str) -> str:
        pcm24 = self.rs.process(ulaw_to_pcm16(pybase64.b64decode(ulaw_b64)))
        return _b64encode(pcm24) if pcm24 else ""

    def model_b64(self, model_b64: str, raw: bytes | None = None) -> str:
        pcm = pybase64.b64decode(model_b64) if raw is None else raw
        if self.carry:
            pcm = self.carry + pcm
            self.carry = b""
        if len(pcm) & 1:
            self.carry = pcm[-1:]
            pcm = pcm[:-1]
        pcm8 = self.rs.process(pcm)
        return _b64encode(pcm16_to_ulaw(pcm8)) if pcm8 else ""

    def flush(self) -> bytes:
        self.carry = b""  # half a sample cannot be played
        return self.rs.flush()

    def reset(self) -> None:
        self.carry = b""
        self.rs.reset()

    @property
    def latency_ms(self) -> float:
        return self.rs.latency_ms


def _stream(in_rate: int, out_rate: int, compiled: bool | None) -> Any:
    """One direction's resampler with the per-message conversions: the C stream, or its reference."""
    rs = StreamResampler(in_rate, out_rate, compiled=compiled)
    return rs.engine if rs.engine is not None else _Reference(rs)


class _Converter:
    """One direction of a call's audio: `convert` (passthrough in "g711_ulaw" mode, else the
    resampling stream's own conversion method), `reset` and `latency_ms`."""

    __slots__ = ("mode", "convert", "_stream")

    def __init__(self, mode: str, compiled: bool | None, in_rate: int, out_rate: int, method: str) -> None:
        self.mode: AudioMode = _check_mode(mode)
        self._stream = _stream(in_rate, out_rate, compiled) if self.mode == "pcm16" else None
        self.convert: Callable[..., str] = _same if self._stream is None else getattr(self._stream, method)

    def reset(self) -> None:
        """Drop held audio (and a carried odd byte): caller audio when the model's input buffer is
        cleared, agent audio when the caller's playout was (barge-in)."""
        if self._stream is not None:
            self._stream.reset()

    @property
    def latency_ms(self) -> float:
        """Audio accepted but not yet returned, in ms (0 in passthrough)."""
        return self._stream.latency_ms if self._stream is not None else 0.0  # type: ignore[no-any-return]


class CallerToModel(_Converter):
    """Caller audio (Twilio mu-law 8 kHz, base64) -> model input audio (base64).

    In "pcm16" mode the result is 24 kHz PCM16. The resampler holds back its filter delay
    (2.0 ms), so a stream's first frame converts a little short; the audio is not lost, it comes
    out with later frames. `convert(ulaw_b64) -> str` converts one Twilio media payload and
    returns "" when there is nothing to send yet; with the C filter it is the C stream's own
    method (decode, mu-law, filter and encode in one call from the caller's lane).
    `compiled`: as for `StreamResampler` (None: C when it was built).
    """

    __slots__ = ()
    convert: Callable[[str], str]

    def __init__(self, mode: str, compiled: bool | None = None) -> None:
        super().__init__(mode, compiled, TWILIO_RATE, MODEL_PCM_RATE, "caller_b64")


class ModelToCaller(_Converter):
    """Model output audio (base64) -> Twilio mu-law 8 kHz (base64).

    `convert(model_b64, raw=None) -> str` converts one model audio delta (`raw`: the delta
    already decoded: the core checks every delta's base64 and keeps the bytes) and returns ""
    when there is nothing to send yet. In "pcm16" mode, deltas may have any byte length: a
    trailing odd byte (half a sample) is kept and joined to the next delta. Call `flush()` when a
    response's audio is done so the resampler's held-back tail is played, and `reset()` on
    barge-in so nothing of the cancelled response survives into the next one.
    """

    __slots__ = ()

    def __init__(self, mode: str, compiled: bool | None = None) -> None:
        super().__init__(mode, compiled, MODEL_PCM_RATE, TWILIO_RATE, "model_b64")

    def flush(self) -> str:
        """Emit the audio still held by the resampler (end of a response); may be "". A carried
        odd byte is dropped: half a sample cannot be played."""
        if self._stream is None:
            return ""
        pcm8 = self._stream.flush()
        return _b64encode(pcm16_to_ulaw(pcm8)) if pcm8 else ""

    @staticmethod
    def duration_ms_of_model_audio(model_b64: str, mode: str) -> float:
        """Duration of a model audio delta in `mode`, from its base64 text (see model_audio_ms)."""
        return model_audio_ms(model_b64, mode)


# ------------------------------------------------------------------------- duration helpers

def b64_decoded_len(b64: str) -> int:
    """Exact number of bytes `b64` decodes to, without decoding it.

    Every 4 characters carry 3 bytes; each trailing '=' (at most two) removes one. Unpadded
    text (length 4n+2 or 4n+3) is counted the same way. Whitespace is not expected on the wire.
    """
    n = len(b64)
    pad = 0
    if n and b64[-1] == "=":
        pad = 2 if n > 1 and b64[-2] == "=" else 1
    return n * 3 // 4 - pad


def ulaw_ms(nbytes: int) -> float:
    """Milliseconds of 8 kHz mu-law audio in `nbytes` (8 bytes per ms)."""
    return nbytes / _ULAW_BYTES_PER_MS


def pcm24_ms(nbytes: int) -> float:
    """Milliseconds of 24 kHz PCM16 audio in `nbytes` (48 bytes per ms)."""
    return nbytes / _PCM24_BYTES_PER_MS


def model_bytes_per_ms(mode: str) -> float:
    """Bytes of model audio per millisecond in the session's audio `mode`."""
    return _PCM24_BYTES_PER_MS if _check_mode(mode) == "pcm16" else _ULAW_BYTES_PER_MS


def model_audio_ms(model_b64: str, mode: str) -> float:
    """Milliseconds of model audio in a base64 delta for the session's audio `mode`."""
    return b64_decoded_len(model_b64) / model_bytes_per_ms(mode)
