"""Speech recognition for the local model: pocketsphinx on 16 kHz audio, in worker threads.

The PyPI `pocketsphinx` package ships a US-English acoustic model, a 130,000-word general
language model and its dictionary. On short caller turns the general model alone mostly hears
near-misses, so each turn is decoded twice at most:

1. a *domain* decoder whose small trigram model covers what support callers say, the brain's
   keywords, spoken digits and the words of the session's declared tools, plus the general
   model's commonest words as low-weight fillers (see `domainlm`);
2. if that finds nothing the local model can act on (no keyword, digit or tool word), the
   general decoder, whose wider vocabulary is the better guess for everything else.

Two details matter more than any decoder option. Synthetic speech and gated phone audio hold
runs of exact digital silence, whose log energy swamps the cepstral mean normalisation: a faint
fixed noise floor, as on any real line, fixes that. And decoders are not thread-safe and take a
moment to build, so each worker thread keeps its own, per vocabulary. When no recogniser can be
loaded the transcript says so plainly instead of pretending.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from voicegw.localmodel import brain, domainlm
from voicegw.localmodel.codec import AudioFormat, to_16k

log = logging.getLogger(__name__)

NO_RECOGNISER = "[no speech recogniser available]"
NOISE_FLOOR_RMS = 100.0  # about -50 dBFS: below any speech, above digital silence
FILLER_WORDS = 1000
FILLER_MASS = 0.6
DOMAIN_DECODERS_PER_THREAD = 4

_local = threading.local()
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_unavailable: str | None = None
_shared_lock = threading.Lock()
_lexicon: dict[str, list[str]] | None = None
_fillers: dict[str, float] | None = None
_model_files: OrderedDict[str, tuple[Path, Path, frozenset[str]]] = OrderedDict()
_workdir: tempfile.TemporaryDirectory[str] | None = None


def asr_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="voicegw-asr")
        return _executor


def _pocketsphinx() -> Any | None:
    """The pocketsphinx module, or None (once and for all) if it cannot be used here."""
    global _unavailable
    if _unavailable is not None:
        return None
    try:
        import pocketsphinx

        pocketsphinx.get_model_path("en-us/cmudict-en-us.dict")
        return pocketsphinx
    except Exception as exc:  # any failure means: no recogniser on this machine
        _unavailable = str(exc)
        log.warning("speech recogniser unavailable: %s", exc)
        return None


def _general_decoder(ps: Any) -> Any:
    """This thread's general-English decoder, created on first use."""
    decoder = getattr(_local, "general", None)
    if decoder is None:
        decoder = ps.Decoder(samprate=16000, loglevel="FATAL")
        _local.general = decoder
    return decoder


def _shared_models(ps: Any) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Pronunciations and filler words, read once per process from the packaged model."""
    global _lexicon, _fillers
    with _shared_lock:
        if _lexicon is None or _fillers is None:
            lexicon: dict[str, list[str]] = {}
            with open(ps.get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as fh:
                for line in fh:
                    word, _, phones = line.partition(" ")
                    lexicon.setdefault(word.split("(")[0], []).append(phones.strip())
            general = ps.NGramModel.readfile(ps.get_model_path("en-us/en-us.lm.bin"))
            ranked = sorted(((general.prob([w]), w) for w in lexicon), reverse=True)[:FILLER_WORDS]
            top = ranked[0][0] if ranked else 0
            # the model's log base is 1.0001: turn log-probabilities into relative frequencies
            _fillers = {w: math.exp((p - top) * math.log(1.0001)) for p, w in ranked}
            _lexicon = lexicon
        return _lexicon, _fillers


def _domain_files(ps: Any, tools: Sequence[dict[str, Any]]) -> tuple[str, Path, Path, frozenset[str]]:
    """(key, dictionary, ARPA model, actionable words) for this tool set, built once per process."""
    global _workdir
    extra = sorted(brain.keywords())
    tool_text = domainlm.tool_phrases(tools)
    key = hashlib.sha1("\n".join(tool_text).encode()).hexdigest()[:16]
    with _shared_lock:
        if key in _model_files:
            _model_files.move_to_end(key)
            return (key, *_model_files[key])
    lexicon, fillers = _shared_models(ps)
    sentences = domainlm.corpus(tools, extra)
    known = {w for words in sentences for w in words if w in lexicon}
    vocab = known | set(fillers)
    actionable = frozenset(w for w in set(extra) | set(domainlm.DIGITS) | _tool_words(tool_text) if w in known)
    with _shared_lock:
        if _workdir is None:
            _workdir = tempfile.TemporaryDirectory(prefix="voicegw-asr-")
        folder = Path(_workdir.name)
        dic, lm = folder / f"{key}.dict", folder / f"{key}.arpa"
        dic.write_text("".join(f"{w if i == 0 else f'{w}({i + 1})'} {p}\n"
                               for w in sorted(vocab) for i, p in enumerate(lexicon[w])), encoding="utf-8")
        lm.write_text(domainlm.arpa(sentences, vocab, fillers=fillers, filler_mass=FILLER_MASS), encoding="utf-8")
        _model_files[key] = (dic, lm, actionable)
        while len(_model_files) > 16:
            _model_files.popitem(last=False)  # files stay: a thread may still be loading them
        return key, dic, lm, actionable


def _tool_words(phrases: Iterable[str]) -> set[str]:
    """Content words of the tools' names and enum values (not every description word)."""
    stop = {"a", "an", "the", "of", "to", "for", "and", "or", "by", "in", "on", "is", "it", "my", "your"}
    return {w for p in phrases for w in p.split() if w not in stop and len(w) > 2}


def _domain_decoder(ps: Any, tools: Sequence[dict[str, Any]]) -> tuple[Any, frozenset[str]]:
    key, dic, lm, actionable = _domain_files(ps, tools)
    cache: OrderedDict[str, Any] | None = getattr(_local, "domain", None)
    if cache is None:
        cache = OrderedDict()
        _local.domain = cache
    decoder = cache.get(key)
    if decoder is None:
        decoder = ps.Decoder(samprate=16000, loglevel="FATAL", dict=str(dic), lm=str(lm))
        cache[key] = decoder
        while len(cache) > DOMAIN_DECODERS_PER_THREAD:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return decoder, actionable


def with_noise_floor(pcm: bytes) -> bytes:
    """16-bit audio plus a faint, fixed (seeded) noise floor so no frame is digital silence."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    noise = np.random.default_rng(7).normal(0.0, NOISE_FLOOR_RMS, samples.size).astype(np.float32)
    return np.clip(samples + noise, -32768, 32767).astype("<i2").tobytes()


def _decode(decoder: Any, pcm: bytes) -> str:
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    if hyp is None:
        return ""
    words = [w for w in hyp.hypstr.split() if not w.startswith("<") and not w.startswith("[")]
    return " ".join(w.split("(")[0] for w in words)


def transcribe_blocking(audio: bytes, fmt: AudioFormat, tools: Sequence[dict[str, Any]] = ()) -> str:
    """Committed wire audio -> lower-case words ('' for silence).

    `tools` are the session's declared tools: their names, descriptions and enum values
    join the domain vocabulary, so "check order status" is heard for a `check_order_status` tool.
    """
    ps = _pocketsphinx()
    if ps is None:
        return NO_RECOGNISER
    pcm = to_16k(audio, fmt)
    if not pcm:
        return ""
    pcm = with_noise_floor(pcm)
    domain_failed = False
    try:
        domain, actionable = _domain_decoder(ps, [t for t in tools if isinstance(t, dict)])
        heard = _decode(domain, pcm)
    except Exception as exc:  # a broken domain model must not cost the turn: the general model still works
        log.warning("domain recogniser failed, using the general model: %s", exc)
        heard, actionable, domain_failed = "", frozenset(), True
    if actionable.intersection(heard.split()):
        return heard
    try:
        general = _decode(_general_decoder(ps), pcm)
    except Exception as exc:  # the general model is broken too: say so once, as when it is missing
        if not domain_failed:
            log.warning("general recogniser failed: %s", exc)
            return heard
        global _unavailable
        _unavailable = str(exc)
        log.warning("speech recogniser unavailable: %s", exc)
        return NO_RECOGNISER
    return general or heard


async def transcribe(audio: bytes, fmt: AudioFormat, tools: Sequence[dict[str, Any]] | None = None) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(asr_executor(), transcribe_blocking, audio, fmt, tuple(tools or ()))
