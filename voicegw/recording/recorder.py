"""One call's recording: what the caller said and what the caller heard, as an 8 kHz WAV.

Timing model. Everything is placed on the *stream clock*: milliseconds since the media stream
started, which `start(now)` maps onto the bridge's monotonic clock.

* Caller audio is placed by the provider's own frame timestamp, so a frame that arrives late or
  after a network gap still lands where the caller said it; gaps stay silent.
* Agent audio is sent to the provider faster than real time and played there in order. The
  recorder keeps a model of that playout buffer: each chunk is scheduled at
  max(now, end of what is already scheduled); `clear(now)` drops what is scheduled after `now`
  (the barge-in cut, as the caller heard it).

Writing. Only audio older than `now - LAG_S` is written: agent audio that old can no longer be
cleared, and caller frames up to that late are still placed where they belong (later ones are
counted in `late_ms` and dropped). Audio is written once a second (`FLUSH_S`) with the stdlib
`wave` writer, which rewrites the header's sizes on every `writeframes`; the file is then flushed
to the operating system. So a gateway that crashes leaves a playable file holding all but the last
one or two seconds. A flush (decode, mix, write 16 KB mono or 32 KB stereo, patch the header)
measured 0.2 ms mono and 0.3 ms stereo on a local disk, once a second per call, and a frame between
flushes 4-6 us: cheap enough for the event loop's thread, so there is no writer thread.

A disk error is logged and stops the recording (what was written stays); the call goes on. No
method raises.
"""
from __future__ import annotations

import binascii
import logging
import os
import warnings
import wave
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from voicegw.calllog.entries import CallLogEntry
from voicegw.recording.files import DIR_MODE, FILE_MODE, recording_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

log = logging.getLogger("voicegw.recording")

RATE = 8000  # samples per second, as on the phone line
WIDTH = 2  # bytes per sample: 16-bit PCM
SILENCE = 0xFF  # mu-law zero
FLUSH_S = 1.0  # write once this much audio is ready
LAG_S = 1.0  # audio this old is final: no clear can reach it, late caller frames have arrived
MAX_AHEAD_S = 120.0  # audio placed further ahead of now is not believed (a bogus timestamp)

_FLUSH = int(FLUSH_S * RATE)
_LAG = int(LAG_S * RATE)
_AHEAD = int(MAX_AHEAD_S * RATE)


@dataclass(slots=True)
class _Chunk:
    """Agent audio scheduled in the provider's playout buffer from stream sample `start`."""

    start: int
    ulaw: bytes


@dataclass(frozen=True)
class RecordingSummary:
    """A finished recording, as the call log and the API describe it."""

    path: Path
    mode: Literal["mixed", "dual"]
    channels: int
    duration_s: float
    bytes: int
    late_ms: float  # caller audio that arrived too late to be placed
    error: str | None  # why the recording stopped early, if it did

    def log_entries(self, call_sid: str, t: float) -> list[CallLogEntry]:
        """`recording.ready` (and an `error` first when the disk failed): what the call record,
        the console and post-call consumers learn about the recording. A file cut short by a disk
        error is still ready (`complete: false`); without a file there is only the error."""
        entries = []
        if self.error is not None:
            entries.append(CallLogEntry("error", t, {"source": "gateway", "code": "recording_failed",
                                                     "message": f"recording stopped: {self.error}"}))
        if self.bytes == 0:
            return entries  # no file: nothing to serve
        data = {"mode": self.mode, "channels": self.channels, "duration_s": round(self.duration_s, 3),
                "bytes": self.bytes, "url": recording_url(call_sid), "content_type": "audio/wav"}
        if self.error is not None:
            data["complete"] = False
        entries.append(CallLogEntry("recording.ready", t, data))
        return entries


class Recorder:
    """Records one call to `path` (created with its directory), `mixed` (mono: caller and agent
    summed) or `dual` (stereo: caller left, agent right). Audio arrives as base64 mu-law, as on
    the media stream. Times (`now`) are the bridge's monotonic clock in seconds."""

    def __init__(self, path: Path, mode: Literal["mixed", "dual"], call_sid: str = "") -> None:
        if mode not in ("mixed", "dual"):
            raise ValueError(f"recording mode must be mixed or dual, got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.channels = 2 if mode == "dual" else 1
        self.call_sid = call_sid
        self.error: str | None = None
        self.late_samples = 0
        self._t0: float | None = None
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self._base = 0  # stream position (samples) of the first sample not yet written
        self._caller = bytearray()  # mu-law from _base on; SILENCE where nothing arrived
        self._agent: deque[_Chunk] = deque()  # in playout order, none overlapping
        self._agent_end = 0  # where the provider's playout buffer runs dry
        self._closed = False

    # ------------------------------------------------------------------------------ events
    def start(self, now: float) -> None:
        """The media stream starts now (stream time 0): open the file, write an empty WAV."""
        if self._t0 is not None or self._closed:
            return
        self._t0 = now
        try:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            self._file = os.fdopen(fd, "wb")
            wav = wave.open(self._file, "wb")
            wav.setnchannels(self.channels)
            wav.setsampwidth(WIDTH)
            wav.setframerate(RATE)
            self._wav = wav
            wav.writeframes(b"")  # the header, so even an empty recording is a valid file
            self._file.flush()
        except Exception as exc:  # noqa: BLE001 - the call goes on without a recording
            self._fail(exc)

    def caller(self, now: float, timestamp_ms: int, payload_b64: str) -> None:
        """A caller frame stamped `timestamp_ms` after the stream started."""
        if self._wav is None:
            return
        try:
            ulaw = binascii.a2b_base64(payload_b64)
        except (binascii.Error, ValueError):
            return  # a bad payload is silence here, as it is for the model
        try:
            pos = int(timestamp_ms) * 8
            head = self._now(now)
            if pos + len(ulaw) > head + _AHEAD:
                return
            off = pos - self._base
            if off < 0:
                late = min(-off, len(ulaw))
                self.late_samples += late
                ulaw, off = ulaw[late:], 0
            buf = self._caller
            if len(buf) < off:
                buf.extend(bytes([SILENCE]) * (off - len(buf)))
            buf[off:off + len(ulaw)] = ulaw
            self._maybe_flush(head)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def agent(self, now: float, payload_b64: str) -> None:
        """Agent audio sent to the provider now: it plays after what is already queued there."""
        if self._wav is None:
            return
        try:
            ulaw = binascii.a2b_base64(payload_b64)
        except (binascii.Error, ValueError):
            return
        try:
            head = self._now(now)
            start = max(head, self._agent_end, self._base)
            if ulaw and start + len(ulaw) <= head + _AHEAD:
                self._agent.append(_Chunk(start, ulaw))
                self._agent_end = start + len(ulaw)
            self._maybe_flush(head)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def clear(self, now: float) -> None:
        """The provider is told to drop its queued agent audio: what was due after now is never heard."""
        if self._wav is None:
            return
        cut = max(self._now(now), self._base)
        chunks = self._agent
        while chunks and chunks[-1].start >= cut:
            chunks.pop()
        if chunks and chunks[-1].start + len(chunks[-1].ulaw) > cut:
            chunks[-1].ulaw = chunks[-1].ulaw[:cut - chunks[-1].start]
        self._agent_end = min(self._agent_end, cut)

    def close(self, now: float) -> RecordingSummary | None:
        """The call ended now: write everything up to now (and any caller audio stamped later),
        drop agent audio that never played, finish the file. None when no recording was started."""
        if self._closed or self._t0 is None:
            self._closed = True
            return None
        self._closed = True
        if self._wav is not None:
            try:
                self._write_to(max(self._now(now), self._base + len(self._caller)))
                self._wav.close()
                assert self._file is not None
                self._file.close()
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)
        self._wav = self._file = None
        self._agent.clear()
        self._caller = bytearray()
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return RecordingSummary(self.path, self.mode, self.channels, self._base / RATE, size,
                                self.late_samples / 8, self.error)

    # --------------------------------------------------------------------------- writing
    def _now(self, now: float) -> int:
        """`now` on the stream clock, in samples."""
        assert self._t0 is not None
        return max(0, round((now - self._t0) * RATE))

    def _maybe_flush(self, head: int) -> None:
        if head - _LAG - self._base >= _FLUSH:
            self._write_to(head - _LAG)

    def _write_to(self, end: int) -> None:
        """Mix or interleave stream samples [_base, end) and append them to the file."""
        n = end - self._base
        if n <= 0:
            return
        caller = bytes(self._caller[:n])
        del self._caller[:n]
        if len(caller) < n:
            caller += bytes([SILENCE]) * (n - len(caller))
        agent = bytearray([SILENCE]) * n
        chunks = self._agent
        while chunks:
            chunk = chunks[0]
            a = chunk.start - self._base
            if a >= n:
                break
            take = min(len(chunk.ulaw), n - a)
            agent[a:a + take] = chunk.ulaw[:take]
            if take == len(chunk.ulaw):
                chunks.popleft()
            else:  # the rest plays after `end`
                chunk.start, chunk.ulaw = end, chunk.ulaw[take:]
        c = audioop.ulaw2lin(caller, WIDTH)
        g = audioop.ulaw2lin(bytes(agent), WIDTH)
        if self.channels == 1:
            frames = audioop.add(c, g, WIDTH)  # saturating: a loud overlap clips, never wraps
        else:
            frames = audioop.add(audioop.tostereo(c, WIDTH, 1, 0), audioop.tostereo(g, WIDTH, 0, 1), WIDTH)
        assert self._wav is not None and self._file is not None
        self._wav.writeframes(frames)
        self._file.flush()
        self._base = end

    def _fail(self, exc: Exception) -> None:
        """Stop recording: keep what is on disk, drop the rest, tell the log once."""
        if self.error is None:
            self.error = str(exc) or type(exc).__name__
            log.error("call %s: recording %s stopped: %s", self.call_sid, self.path, self.error,
                      exc_info=not isinstance(exc, OSError))
        wav, f = self._wav, self._file
        self._wav = self._file = None
        self._agent.clear()
        self._caller = bytearray()
        if wav is not None:
            try:
                wav.close()
            except Exception:  # noqa: BLE001 - the disk already failed once
                pass
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
