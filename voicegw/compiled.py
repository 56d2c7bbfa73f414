"""The optional C extensions, each a module or None.

`pip install` builds them where a C compiler is present (setup.py); without one the Python
references they are tested against run instead: same results, more CPU per message.
- `fastwire` (voicegw/_fastwire.c): the steady state's wire reading and writing (a Twilio media
  frame's payload, a model audio delta's fields, the append message, the caller's frames written
  at once);
- `fir` (voicegw/audio/_fir.c): the resampler's filter and per-call streams (voicegw.audio.resample
  sets its coefficients; else numpy).
"""
from __future__ import annotations

from typing import Any

fastwire: Any
fir: Any
try:
    from voicegw import _fastwire as fastwire
except ImportError:  # pragma: no cover - installed without a C compiler
    fastwire = None
try:
    from voicegw.audio import _fir as fir
except ImportError:  # pragma: no cover - installed without a C compiler
    fir = None
