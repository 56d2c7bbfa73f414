"""Audio formats the Realtime API speaks, as the local model needs them.

`pcm16` is 24 kHz 16-bit little-endian mono; `g711_ulaw` / `g711_alaw` are 8 kHz G.711
(GA names them `audio/pcm`, `audio/pcmu`, `audio/pcma`). Everything here is plain and
stateless: decode to int16 samples for the VAD and the recogniser, encode synthesized
samples for the wire.
"""
from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import soxr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib through 3.12; the audioop-lts backport provides it later

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
FORMATS: tuple[AudioFormat, ...] = ("pcm16", "g711_ulaw", "g711_alaw")


def sample_rate(fmt: AudioFormat) -> int:
    return 24000 if fmt == "pcm16" else 8000


def bytes_per_ms(fmt: AudioFormat) -> float:
    """pcm16: 48 bytes per ms; G.711: 8 bytes per ms."""
    return 48.0 if fmt == "pcm16" else 8.0


def duration_ms(nbytes: int, fmt: AudioFormat) -> float:
    return nbytes / bytes_per_ms(fmt)


def decode_to_pcm16(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """Wire bytes -> int16 samples at the format's own rate."""
    if fmt == "pcm16":
        usable = len(data) - (len(data) % 2)
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
    if fmt == "g711_ulaw":
        return np.frombuffer(audioop.ulaw2lin(data, 2), dtype="<i2").astype(np.int16)
    return np.frombuffer(audioop.alaw2lin(data, 2), dtype="<i2").astype(np.int16)


def encode_pcm16(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """int16 samples already at the format's rate -> wire bytes."""
    raw = samples.astype("<i2").tobytes()
    if fmt == "pcm16":
        return raw
    if fmt == "g711_ulaw":
        return audioop.lin2ulaw(raw, 2)
    return audioop.lin2alaw(raw, 2)


def to_16k(data: bytes, fmt: AudioFormat) -> bytes:
    """Wire bytes -> 16 kHz int16 bytes, what the speech recogniser expects."""
    samples = decode_to_pcm16(data, fmt)
    if samples.size == 0:
        return b""
    out = soxr.resample(samples.astype(np.float32) / 32768.0, sample_rate(fmt), 16000)
    return np.clip(out * 32768.0, -32768, 32767).astype("<i2").tobytes()
