"""What one simulated call observed: the caller's ground truth for tests and benchmarks."""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from voicegw.sim.playout import ClearRecord, HeardSpan

SILENCE = b"\xff"


@dataclass
class CallResult:
    call_sid: str
    stream_sid: str
    webhook_status: int | None = None
    close_code: int | None = None  # e.g. 1000 after our stop, 1008 when the gateway refused the stream
    close_reason: str = ""
    closed_by: str | None = None  # "caller" (we hung up) or "gateway" (it closed the stream)
    end_reason: str = ""  # duration | silence | hangup | gateway-closed | timeout
    stop_sent: bool = False
    frames_sent: int = 0  # inbound media frames the caller sent
    dtmf_sent: str = ""
    marks_sent: int = 0  # marks the gateway sent
    marks_acked: int = 0  # mark acknowledgements the caller sent back
    clears: list[ClearRecord] = field(default_factory=list)
    heard: bytes = b""  # agent audio the caller heard, mu-law 8 kHz, gaps removed
    heard_spans: list[HeardSpan] = field(default_factory=list)
    first_audio_ms: float | None = None  # stream start -> first outbound media frame
    media_times_ms: array = field(default_factory=lambda: array("d"))  # arrival of each outbound media
    bad_frames: int = 0  # frames the caller could not understand
    duration_ms: float = 0.0  # stream start -> end of the call

    @property
    def heard_ms(self) -> float:
        return len(self.heard) / 8

    def timeline(self) -> bytes:
        """Heard audio at its wall-clock offsets from stream start, mu-law silence in the gaps."""
        out = bytearray()
        for span in self.heard_spans:
            at = int(span.offset_ms * 8)
            if at > len(out):
                out += SILENCE * (at - len(out))
            out += self.heard[span.start:span.start + span.length]
        return bytes(out)

    def summary(self) -> str:
        first = "none" if self.first_audio_ms is None else f"{self.first_audio_ms:.0f} ms"
        return (f"call {self.call_sid}: heard {self.heard_ms:.0f} ms of agent audio (first after {first}), "
                f"{self.marks_sent} marks sent / {self.marks_acked} acked, {len(self.clears)} clears, "
                f"{self.frames_sent} frames sent, ended by {self.end_reason or 'unknown'}"
                f" (close code {self.close_code})")
