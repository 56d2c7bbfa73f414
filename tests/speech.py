"""Test speech: synthesized with espeak-ng (Debian package) and converted to PCM16 8 kHz.

A test that needs speech and cannot get espeak-ng fails loudly: it never passes silently.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from voicegw.sim.wav import read_wav_pcm16_8k


@functools.lru_cache(maxsize=64)
def speech_pcm8k(text: str, wpm: int = 160) -> bytes:
    """`text` spoken by espeak-ng, as PCM16 mono 8 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed: run `make test` (it installs it) or `apt-get install espeak-ng`")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-s", str(wpm), "-w", str(wav), text], check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return read_wav_pcm16_8k(wav)


def speech_wav(text: str, path: Path) -> Path:
    """Write `text` as a WAV file (espeak-ng's native 22.05 kHz) for CLI tests."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed: run `make test` (it installs it) or `apt-get install espeak-ng`")
    subprocess.run([exe, "-w", str(path), text], check=True, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path
