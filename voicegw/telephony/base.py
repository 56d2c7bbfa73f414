"""Provider-neutral telephony stream vocabulary and the provider interface.

A provider adapter (Twilio first) turns its wire frames into these events and turns the call
session's outbound intents into its wire frames. Audio is base64 G.711 mu-law at 8 kHz, as
carried by Twilio, Telnyx and Vonage alike, so the hot path never re-encodes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Union

from voicegw.hotvalue import hot_value


@dataclass(frozen=True)
class StreamConnected:
    protocol: str = ""
    version: str = ""


@dataclass(frozen=True)
class StreamStarted:
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    tracks: tuple[str, ...] = ("inbound",)
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


@hot_value
@dataclass(frozen=True)
class CallerAudio:
    payload_b64: str  # mu-law 8 kHz
    timestamp_ms: int  # ms since stream start, as the provider stamps it
    chunk: int = 0


@hot_value
@dataclass(frozen=True)
class MarkPlayed:
    """The provider reached (or, on clear, discarded) a mark we sent."""

    name: str


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class StreamStopped:
    reason: str = "stop"


@dataclass(frozen=True)
class BadFrame:
    """A frame that could not be understood. Logged; the call goes on."""

    error: str
    raw: str = ""


StreamEvent = Union[StreamConnected, StreamStarted, CallerAudio, MarkPlayed, Dtmf, StreamStopped, BadFrame]


# --- what the call asks the provider to do on the media stream (outbound intents) -----------


@hot_value
@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Queue agent audio for the caller (base64 mu-law 8 kHz; played in order)."""

    payload_b64: str


@hot_value
@dataclass(frozen=True, slots=True)
class PlayMark:
    """Ask to be told (`MarkPlayed`) when playback reaches this point."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Drop the audio queued at the provider; the provider returns every pending mark."""


StreamIntent = Union[PlayAudio, PlayMark, ClearPlayback]


class MediaStreamCodec(Protocol):
    """What a telephony provider adapter implements for its media stream."""

    def parse(self, text: str) -> StreamEvent:
        """One inbound text frame -> one event. Never raises: bad input is a BadFrame."""
        ...

    def encode(self, stream_sid: str, intent: StreamIntent) -> str:
        """One outbound intent -> one text frame for the provider."""
        ...

    def audio_encoder(self, stream_sid: str) -> Callable[[str], str]:
        """`encode` of `PlayAudio(payload)` on one stream, as a function of the payload alone
        (the hot path: 50 frames a second per call)."""
        ...

    def mark_encoder(self, stream_sid: str) -> Callable[[str], str]:
        """`encode` of `PlayMark(name)` on one stream, as a function of the name alone."""
        ...


@dataclass(frozen=True)
class CallControl:
    """Out-of-stream call actions a provider offers through its REST API."""

    kind: str  # transfer | hangup
    target: str | None = None
    announcement: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
