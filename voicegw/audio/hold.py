"""Hold music for a warm transfer, made at start-up: a soft four-note phrase, looped (8 kHz mu-law).

Generated rather than shipped: no audio file to license or carry, and it is the same on every
replica. Quiet (about -24 dBFS) with smooth note edges, so it neither clicks nor startles.
"""
from __future__ import annotations

import numpy as np

from voicegw.audio.g711 import pcm16_to_ulaw

RATE = 8000
NOTES_HZ = (392.0, 493.9, 587.3, 493.9)  # G4 B4 D5 B4
NOTE_S = 0.6
GAP_S = 0.15
LEVEL = 0.06  # of full scale


def hold_loop(repeats: int = 2) -> bytes:
    """`repeats` phrases of hold music (2.4 s each with the gaps), mu-law, ready to loop."""
    t = np.arange(int(RATE * NOTE_S)) / RATE
    fade = np.minimum(1.0, np.minimum(t, NOTE_S - t) / 0.08)  # 80 ms raised edges
    envelope = np.sin(0.5 * np.pi * fade) ** 2 * np.exp(-1.8 * t)
    gap = np.zeros(int(RATE * GAP_S))
    notes = []
    for f in NOTES_HZ:
        tone = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)
        notes += [tone * envelope, gap]
    phrase = np.concatenate(notes) * (LEVEL * 32767 / 1.3)
    pcm = np.tile(phrase, repeats).astype("<i2").tobytes()
    return pcm16_to_ulaw(pcm)
