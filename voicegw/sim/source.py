"""What the simulated caller says: a mu-law timeline cut into 20 ms Twilio frames.

The timeline is built once (segments placed at their start times, mu-law silence 0xFF between)
and its frames are base64-encoded lazily and cached, so hundreds of simulated calls sharing one
schedule pay for the encoding once. Past the end of the timeline the caller sends silence, as a
phone line does while the caller listens.
"""
from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

from voicegw.audio.g711 import pcm16_to_ulaw
from voicegw.sim.wav import read_wav_pcm16_8k

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_MS = 20
SILENCE_BYTE = 0xFF  # mu-law zero
SILENCE_FRAME = bytes([SILENCE_BYTE]) * FRAME_BYTES
SILENCE_B64 = base64.b64encode(SILENCE_FRAME).decode("ascii")


class AudioSchedule:
    """Caller audio as a timeline of mu-law bytes at 8 kHz."""

    __slots__ = ("_b64", "_mulaw", "segments")

    def __init__(self, mulaw: bytes = b"", segments: tuple[tuple[int, int], ...] = ()) -> None:
        self._mulaw = bytes(mulaw)
        n = (len(self._mulaw) + FRAME_BYTES - 1) // FRAME_BYTES
        self._b64: list[str | None] = [None] * n
        #: (start_ms, end_ms) of each spoken segment, for tests that check barge-in timing
        if not self._mulaw:
            segments = ()
        elif not segments:
            segments = ((0, len(self._mulaw) // 8),)
        self.segments = segments

    @classmethod
    def silence(cls) -> AudioSchedule:
        return cls()

    @classmethod
    def from_pcm16(cls, pcm16_8k: bytes) -> AudioSchedule:
        return cls(pcm16_to_ulaw(pcm16_8k[: len(pcm16_8k) & ~1]))

    @classmethod
    def from_wav(cls, path: str | Path) -> AudioSchedule:
        return cls.from_pcm16(read_wav_pcm16_8k(path))

    @classmethod
    def from_segments(cls, segments: Iterable[tuple[int, bytes]]) -> AudioSchedule:
        """PCM16 8 kHz segments placed at ``start_ms`` (later ones overwrite overlaps)."""
        placed: list[tuple[int, bytes]] = []
        for start_ms, pcm in segments:
            if start_ms < 0:
                raise ValueError("segment start must be >= 0 ms")
            placed.append((int(start_ms) * 8, pcm16_to_ulaw(pcm[: len(pcm) & ~1])))
        end = max((at + len(mu) for at, mu in placed), default=0)
        timeline = bytearray([SILENCE_BYTE]) * end
        for at, mu in placed:
            timeline[at:at + len(mu)] = mu
        spans = tuple(sorted((at // 8, (at + len(mu)) // 8) for at, mu in placed))
        return cls(bytes(timeline), spans)

    @property
    def duration_ms(self) -> int:
        return len(self._mulaw) // 8

    @property
    def frame_count(self) -> int:
        return len(self._b64)

    def frame(self, index: int) -> bytes:
        """Raw mu-law of frame ``index`` (silence-padded; silence past the end)."""
        chunk = self._mulaw[index * FRAME_BYTES:(index + 1) * FRAME_BYTES]
        return chunk + SILENCE_FRAME[len(chunk):] if len(chunk) < FRAME_BYTES else chunk

    def frame_b64(self, index: int) -> str:
        """Base64 payload of frame ``index``; cached, shared by every caller using this schedule."""
        if index >= len(self._b64):
            return SILENCE_B64
        cached = self._b64[index]
        if cached is None:
            cached = self._b64[index] = base64.b64encode(self.frame(index)).decode("ascii")
        return cached
