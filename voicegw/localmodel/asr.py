"""Speech recognition for the local model: pocketsphinx on 16 kHz audio, in worker threads.

The PyPI `pocketsphinx` package ships a small US-English model, which is enough for the local
model to pick up keywords ("hours", "order", "goodbye", digits) from a caller's turn. A
decoder is not thread-safe and takes a moment to load, so each worker thread keeps its own.
When no recogniser can be loaded the transcript says so plainly instead of pretending.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from voicegw.localmodel.codec import AudioFormat, to_16k

log = logging.getLogger(__name__)

NO_RECOGNISER = "[no speech recogniser available]"

_local = threading.local()
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_unavailable: str | None = None


def asr_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="voicegw-asr")
        return _executor


def _decoder() -> Any | None:
    """This thread's decoder, created on first use; None if pocketsphinx is unusable."""
    global _unavailable
    if _unavailable is not None:
        return None
    decoder = getattr(_local, "decoder", None)
    if decoder is None:
        try:
            from pocketsphinx import Decoder

            decoder = Decoder(samprate=16000, loglevel="FATAL")
        except Exception as exc:  # any failure means: no recogniser on this machine
            _unavailable = str(exc)
            log.warning("speech recogniser unavailable: %s", exc)
            return None
        _local.decoder = decoder
    return decoder


def transcribe_blocking(audio: bytes, fmt: AudioFormat) -> str:
    """Committed wire audio -> lower-case words ('' for silence)."""
    decoder = _decoder()
    if decoder is None:
        return NO_RECOGNISER
    pcm = to_16k(audio, fmt)
    if not pcm:
        return ""
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    if hyp is None:
        return ""
    words = [w for w in hyp.hypstr.split() if not w.startswith("<") and not w.startswith("[")]
    return " ".join(words)


async def transcribe(audio: bytes, fmt: AudioFormat) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(asr_executor(), transcribe_blocking, audio, fmt)
