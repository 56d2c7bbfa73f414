"""G.711 mu-law / a-law <-> 16-bit linear PCM (little-endian, mono).

Twilio Media Streams carry 8 kHz mu-law; the Realtime model speaks 24 kHz PCM16 (or mu-law in
passthrough mode). The codec is the C implementation in `audioop`: it is exact, table-driven
and costs well under a microsecond per 20 ms frame, so there is no reason to write our own.
`audioop` left the standard library in Python 3.13; the `audioop-lts` package provides the same
module there. On 3.11/3.12 importing it emits a DeprecationWarning, which we silence once here.

Sample order is the machine's native order, which is little-endian on every platform voicegw
runs on (x86-64, arm64).
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["ulaw_to_pcm16", "pcm16_to_ulaw", "alaw_to_pcm16", "pcm16_to_alaw"]

_WIDTH = 2  # bytes per linear sample


def _check_whole(b: bytes) -> None:
    if len(b) & 1:
        raise ValueError(f"PCM16 input must hold whole samples, got {len(b)} bytes")


def ulaw_to_pcm16(b: bytes) -> bytes:
    """Decode mu-law bytes (one byte per sample) to PCM16; the output is twice as long."""
    return audioop.ulaw2lin(b, _WIDTH)


def pcm16_to_ulaw(b: bytes) -> bytes:
    """Encode PCM16 to mu-law. `b` must hold whole samples (even length)."""
    if len(b) & 1:  # `_check_whole`, inline: 50 calls a second per talking call in pcm16
        _check_whole(b)
    return audioop.lin2ulaw(b, _WIDTH)


def alaw_to_pcm16(b: bytes) -> bytes:
    """Decode a-law bytes (one byte per sample) to PCM16; the output is twice as long."""
    return audioop.alaw2lin(b, _WIDTH)


def pcm16_to_alaw(b: bytes) -> bytes:
    """Encode PCM16 to a-law. `b` must hold whole samples (even length)."""
    _check_whole(b)
    return audioop.lin2alaw(b, _WIDTH)
