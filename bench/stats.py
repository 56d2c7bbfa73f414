"""Percentile summaries shared by the benchmarks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dist:
    """A latency distribution in milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values_ms: np.ndarray | list[float]) -> "Dist":
        v = np.asarray(values_ms, dtype=np.float64)
        if v.size == 0:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        return cls(int(v.size), float(p50), float(p95), float(p99), float(v.max()))

    def cells(self, digits: int = 2) -> str:
        """"p50 / p95 / p99 / max" for one Markdown table cell."""
        return " / ".join(f"{x:.{digits}f}" for x in (self.p50, self.p95, self.p99, self.max))
