"""Shared helpers for the local model tests: caller speech and a bounded event reader."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import wave
import warnings
from typing import Any

import numpy as np
import soxr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

KEY = "test-key-123"


def speech_pcm16(text: str, *, lead_ms: int = 400, tail_ms: int = 1200, rate: int = 24000) -> bytes:
    """Caller speech from the espeak-ng command line, resampled to `rate`, framed by silence."""
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text],
                         check=True, capture_output=True, timeout=30).stdout
    with wave.open(io.BytesIO(wav)) as w:
        src_rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    out = soxr.resample(samples.astype(np.float32) / 32768.0, src_rate, rate)
    pcm = np.clip(out * 32768.0, -32768, 32767).astype("<i2")
    lead = np.zeros(rate * lead_ms // 1000, dtype="<i2")
    tail = np.zeros(rate * tail_ms // 1000, dtype="<i2")
    return np.concatenate([lead, pcm, tail]).tobytes()


def speech_ulaw(text: str, **kwargs: Any) -> bytes:
    return audioop.lin2ulaw(speech_pcm16(text, rate=8000, **kwargs), 2)


def speech_bounds_ms(pcm: bytes, rate: int = 24000) -> tuple[float, float]:
    """(first, last) millisecond where the signal is clearly not silence."""
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    loud = np.nonzero(samples > 300)[0]
    return loud[0] * 1000 / rate, loud[-1] * 1000 / rate


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


class Events:
    """Reads server events with a timeout; remembers everything it has seen."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.texts: list[str] = []  # each event as it came on the wire

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        self.texts.append(text)
        event = json.loads(text)
        self.seen.append(event)
        return event

    async def until(self, kind: str, timeout: float = 15.0, **match: Any) -> list[dict[str, Any]]:
        """Events up to and including the first `kind` event whose fields equal `match`."""
        got: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            event = await self.next(max(0.01, end - loop.time()))
            got.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return got

    async def send(self, event: dict[str, Any]) -> None:
        await asyncio.wait_for(self.ws.send(json.dumps(event)), 10)

    async def append_audio(self, audio: bytes, chunk_bytes: int) -> None:
        for piece in chunks(audio, chunk_bytes):
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()})


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]
