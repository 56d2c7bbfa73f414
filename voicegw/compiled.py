"""The optional C helpers of the caller's steady path (voicegw/_fastwire.c), or None.

`pip install` builds them where a C compiler is present (setup.py); without one the Python
references they are tested against run instead: same results, more CPU per caller frame.
"""
from __future__ import annotations

from typing import Any

fastwire: Any
try:
    from voicegw import _fastwire as fastwire
except ImportError:  # pragma: no cover - installed without a C compiler
    fastwire = None
