"""Server-side voice activity detection on the caller's actual audio.

An energy detector over 20 ms frames. `threshold` (0..1, like the real service's) maps
linearly onto a level in dBFS: 0.5 -> -40 dBFS, which separates phone speech (typically
-15..-30 dBFS) from line noise (below -50 dBFS); higher thresholds need louder audio.
Speech starts after 3 loud frames in a row; it stops once `silence_duration_ms` of quiet has
passed. Positions are milliseconds since the session's first appended audio, as the real
`audio_start_ms` (includes `prefix_padding_ms`) and `audio_end_ms` (includes the silence).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voicegw.localmodel.codec import AudioFormat, decode_to_pcm16, sample_rate

FRAME_MS = 20
ONSET_FRAMES = 3
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}


def threshold_dbfs(threshold: float) -> float:
    return -60.0 + 40.0 * min(max(threshold, 0.0), 1.0)


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    @classmethod
    def from_turn_detection(cls, td: dict) -> "VadSettings":
        """server_vad uses its own numbers; semantic_vad picks a silence from its eagerness."""
        if td.get("type") == "semantic_vad":
            silence = SEMANTIC_SILENCE_MS.get(str(td.get("eagerness") or "auto"), 800)
            return cls(0.5, 300, silence)
        def pick(key: str, default: float) -> float:
            value = td.get(key)
            return float(value) if isinstance(value, (int, float)) else default

        return cls(pick("threshold", 0.5), int(pick("prefix_padding_ms", 300)), int(pick("silence_duration_ms", 500)))


@dataclass(frozen=True)
class SpeechStart:
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStop:
    audio_end_ms: int


VadEvent = SpeechStart | SpeechStop


class EnergyVad:
    """Feed audio as it arrives; get speech start/stop events with session positions."""

    def __init__(self, fmt: AudioFormat, settings: VadSettings) -> None:
        self.fmt = fmt
        self.settings = settings
        self._rate = sample_rate(fmt)
        self._frame = self._rate * FRAME_MS // 1000
        self._pending = np.zeros(0, dtype=np.int16)
        self._pos_ms = 0  # session position of the next frame's start
        self._run = 0  # consecutive loud frames while idle
        self._run_start_ms = 0
        self.speaking = False
        self._quiet_ms = 0

    def reconfigure(self, fmt: AudioFormat, settings: VadSettings) -> None:
        if fmt != self.fmt:
            self.fmt = fmt
            self._rate = sample_rate(fmt)
            self._frame = self._rate * FRAME_MS // 1000
            self._pending = np.zeros(0, dtype=np.int16)
        self.settings = settings

    def set_position(self, ms: int) -> None:
        """Keep frame positions aligned with the session clock (audio appended so far)."""
        self._pos_ms = ms - int(len(self._pending) * 1000 / self._rate)

    def reset(self) -> None:
        """Forget any speech in progress (input_audio_buffer.clear, manual commit)."""
        self._run = 0
        self.speaking = False
        self._quiet_ms = 0

    def feed(self, data: bytes) -> list[VadEvent]:
        samples = decode_to_pcm16(data, self.fmt)
        buf = np.concatenate([self._pending, samples]) if self._pending.size else samples
        events: list[VadEvent] = []
        limit = threshold_dbfs(self.settings.threshold)
        nframes = len(buf) // self._frame
        for i in range(nframes):
            frame = buf[i * self._frame:(i + 1) * self._frame].astype(np.float64)
            rms = float(np.sqrt(np.mean(frame * frame))) if frame.size else 0.0
            level = 20.0 * np.log10(rms / 32768.0) if rms > 0 else -120.0
            loud = level >= limit
            event = self._step(loud)
            if event is not None:
                events.append(event)
            self._pos_ms += FRAME_MS
        self._pending = buf[nframes * self._frame:].copy()
        return events

    def _step(self, loud: bool) -> VadEvent | None:
        if not self.speaking:
            if not loud:
                self._run = 0
                return None
            if self._run == 0:
                self._run_start_ms = self._pos_ms
            self._run += 1
            if self._run >= ONSET_FRAMES:
                self.speaking = True
                self._quiet_ms = 0
                self._run = 0
                return SpeechStart(max(0, self._run_start_ms - self.settings.prefix_padding_ms))
            return None
        if loud:
            self._quiet_ms = 0
            return None
        self._quiet_ms += FRAME_MS
        if self._quiet_ms >= self.settings.silence_duration_ms:
            self.speaking = False
            self._quiet_ms = 0
            return SpeechStop(self._pos_ms + FRAME_MS)
        return None
