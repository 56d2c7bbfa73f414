"""WAV in and out for the simulated caller: any WAV -> PCM16 8 kHz mono, heard mu-law -> WAV.

Test prompts come from anywhere (espeak-ng at 22 kHz, studio recordings at 48 kHz stereo, 8-bit
telephony clips), so reading accepts any sample width, channel count and rate; soxr does the
rate conversion. What the caller heard is written as PCM16 so every player opens it.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr

from voicegw.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16

RATE = 8000


def _to_float_mono(frames: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        x = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(frames, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"unsupported WAV sample width: {width} bytes")
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    return x


def pcm16_from_float(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes()


def resample_pcm16(pcm16: bytes, rate: int, channels: int = 1) -> bytes:
    """PCM16 at any rate/channels -> PCM16 8 kHz mono."""
    x = _to_float_mono(pcm16[: len(pcm16) - len(pcm16) % (2 * channels)], 2, channels)
    if rate != RATE:
        x = soxr.resample(x, rate, RATE, quality="HQ")
    return pcm16_from_float(np.asarray(x))


def read_wav_pcm16_8k(path: str | Path) -> bytes:
    """Read a PCM WAV of any width, channel count and rate as PCM16 8 kHz mono."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from None
    x = _to_float_mono(frames, width, channels)
    if rate != RATE and len(x):
        x = soxr.resample(x, rate, RATE, quality="HQ")
    return pcm16_from_float(np.asarray(x))


def read_wav_mulaw(path: str | Path) -> bytes:
    return pcm16_to_ulaw(read_wav_pcm16_8k(path))


def write_mulaw_wav(path: str | Path, mulaw: bytes) -> None:
    """Write 8 kHz mu-law audio as a PCM16 mono WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(ulaw_to_pcm16(mulaw))
