"""A stateful streaming resampler for one direction of one call.

Built on libsoxr (`soxr.ResampleStream`, int16 in and out). One instance per call per
direction: the filter keeps history across `process()` calls, so a stream cut into 20 ms frames
comes out the same as the whole signal resampled at once (within the +-1 LSB TPDF dither libsoxr
adds to int16 output) -- no clicks at frame boundaries. Output is delay-compensated: the first
output sample lines up with the first input sample, which libsoxr achieves by holding output back
until it has enough input. That hold-back is the latency (`latency_ms`).

Quality choice, measured for 24 kHz -> 8 kHz and 8 kHz -> 24 kHz on 20 ms frames
(`python -m bench.bench_audio` prints the full table):

* QQ is cubic interpolation with no anti-alias filter: 5-11 kHz tones fold straight into the
  telephone band (0 dB rejection). Unusable.
* LQ has the lowest delay (mean ~22 ms) and rejects aliases by > 100 dB, but its wide roll-off
  costs ~8 dB at 3.4 kHz, cutting the top of the telephone band we must keep within 1 dB.
* MQ and HQ are both flat to 3.4 kHz (< 0.1 dB) and reject aliases far past the int16 noise
  floor (> 110 dB in float; the 60 dB target is met with a wide margin). Their hold-back is
  the same (mean ~42 ms, worst ~73-75 ms), set by libsoxr's block size rather than the filter,
  and so is the CPU cost (a few microseconds per frame). HQ has the lower worst-case delay.
* VHQ doubles the delay for precision that 16-bit audio cannot use.

So the default is HQ: the lowest delay among the qualities that keep the telephone band.
"""
from __future__ import annotations

import numpy as np
import soxr

__all__ = ["StreamResampler", "DEFAULT_QUALITY"]

DEFAULT_QUALITY = "HQ"


class StreamResampler:
    """PCM16 mono resampler that keeps filter state between frames.

    `process()` may return fewer samples than the rate ratio suggests (or none at all for the
    first frames): libsoxr holds audio back until its filter has enough input. `flush()` emits
    what is held at the end of an utterance; `reset()` throws it away (barge-in).
    """

    __slots__ = ("in_rate", "out_rate", "quality", "_stream")

    def __init__(self, in_rate: int, out_rate: int, quality: str = DEFAULT_QUALITY) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm16: bytes) -> bytes:
        """Resample the next piece of the stream. `pcm16` must hold whole samples."""
        if len(pcm16) & 1:
            raise ValueError(f"PCM16 input must hold whole samples, got {len(pcm16)} bytes")
        out = self._stream.resample_chunk(np.frombuffer(pcm16, dtype=np.int16))
        return out.tobytes()

    def flush(self) -> bytes:
        """Emit the audio still held in the filter and start a fresh stream.

        Call it when an utterance ends (e.g. the model finished a response) so its last tens of
        milliseconds reach the caller now instead of being stuck until the next one.
        """
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return out.tobytes()

    def reset(self) -> None:
        """Discard held audio and filter history (the caller's playout was cleared).

        Without this, the tail of the interrupted audio would be prepended to the next response.
        """
        self._stream.clear()

    @property
    def latency_ms(self) -> float:
        """Audio accepted but not yet output, in milliseconds: the resampler's current delay.

        It moves with libsoxr's internal block position; for HQ on 20 ms frames it averages
        about 42 ms and peaks near 73 ms.
        """
        return float(self._stream.delay()) * 1000.0 / self.out_rate
