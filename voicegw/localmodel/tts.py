"""Speech synthesis for the local model: eSpeak NG through ctypes, resampled with soxr.

The `espeakng-loader` wheel ships libespeak-ng and its voice data, so no system package is
needed. eSpeak keeps global state inside the library, so every synthesis goes through one
dedicated worker thread; phrases are cached (LRU) because a phone agent repeats itself a lot
(greetings, fallbacks, "You pressed ...").
"""
from __future__ import annotations

import asyncio
import ctypes
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soxr

from voicegw.localmodel.codec import AudioFormat, encode_pcm16

ESPEAK_RATE_HZ = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_ESPEAK_RATE_PARAM = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class TtsUnavailable(RuntimeError):
    """eSpeak NG could not be loaded; the local model cannot speak without it."""


class _Espeak:
    """The process-wide eSpeak NG instance. Only ever touched from the TTS worker thread."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - dependency of the package
            raise TtsUnavailable("the 'espeakng-loader' package is not installed") from exc
        lib_path = espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise TtsUnavailable(f"cannot load libespeak-ng from {lib_path}: {exc}") from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), 0)
        if rate <= 0:
            raise TtsUnavailable(f"espeak_Initialize failed (data path {data_path})")
        self.sample_rate = rate
        self._chunks: list[bytes] = []

        def _on_audio(wav: ctypes._Pointer, numsamples: int, _events: int | None) -> int:
            if numsamples > 0 and wav:
                self._chunks.append(ctypes.string_at(wav, numsamples * 2))
            return 0

        self._callback = _SYNTH_CALLBACK(_on_audio)  # keep a reference: the library holds it
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        if lib.espeak_SetVoiceByName(b"en-us") != 0:
            lib.espeak_SetVoiceByName(b"en")
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int
        self._lib = lib

    def synthesize(self, text: str, rate_wpm: int) -> np.ndarray:
        """Mono int16 samples at `self.sample_rate`."""
        self._lib.espeak_SetParameter(_ESPEAK_RATE_PARAM, int(rate_wpm), 0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err}")
        self._lib.espeak_Synchronize()
        raw = b"".join(self._chunks)
        self._chunks = []
        return np.frombuffer(raw, dtype=np.int16).copy()


_engine: _Espeak | None = None
_engine_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _get_engine() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


def tts_executor() -> ThreadPoolExecutor:
    """The single thread that owns eSpeak (its state is global to the library)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicegw-tts")
        return _executor


class Synthesizer:
    """Text -> encoded audio in a Realtime format, with an LRU cache of recent phrases."""

    def __init__(self, *, rate_wpm: int = 175, cache_size: int = 256) -> None:
        self.rate_wpm = rate_wpm
        self._cache: OrderedDict[tuple[str, AudioFormat, int], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the library now (raises TtsUnavailable with the reason if it cannot)."""
        _get_engine()

    def synthesize(self, text: str, fmt: AudioFormat) -> bytes:
        """Blocking: run it in `tts_executor()` (see `synthesize_async`)."""
        key = (text, fmt, self.rate_wpm)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        engine = _get_engine()
        samples = engine.synthesize(text, self.rate_wpm) if text.strip() else np.zeros(0, np.int16)
        encoded = encode_pcm16(_resample(samples, engine.sample_rate, fmt), fmt)
        with self._lock:
            self._cache[key] = encoded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return encoded

    async def synthesize_async(self, text: str, fmt: AudioFormat) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(tts_executor(), self.synthesize, text, fmt)


def _resample(samples: np.ndarray, rate: int, fmt: AudioFormat) -> np.ndarray:
    target = 24000 if fmt == "pcm16" else 8000
    if samples.size == 0:
        return samples
    out = soxr.resample(samples.astype(np.float32) / 32768.0, rate, target)
    return np.clip(out * 32768.0, -32768, 32767).astype(np.int16)
