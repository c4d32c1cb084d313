"""Error statistics of a prediction: median, p90 and max of |measured/predicted − 1| over a sweep,
and the time-weighted error of per-operation predictions.

p90 is the nearest-rank percentile: of n errors sorted ascending, the one at rank ⌈0.9·n⌉
(1-based) — always a measured error, never an interpolation, so "p90 ≤ 8%" means at least 90%
of the cases are within 8%. The median is the usual one (the mean of the two middle errors when
n is even).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorStats:
    """|measured/predicted − 1| over n cases (fractions: 0.03 is 3%); NaN when n is 0."""

    n: int
    median: float
    p90: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nearest_rank(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) by the nearest-rank rule: the value at 1-based rank ⌈q·n⌉ of
    the sorted values; NaN for no values."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def error_stats(ratios: Iterable[float]) -> ErrorStats:
    """Median, p90 (nearest rank) and max of |r − 1| over measured/predicted ratios `r`.

    A ratio that is not a positive finite number means a broken measurement or prediction:
    a ValueError, not a silently smaller sample."""
    errors = []
    for r in ratios:
        if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
            raise ValueError(f"a measured/predicted ratio must be a positive finite number, got {r!r}")
        errors.append(abs(r - 1))
    if not errors:
        return ErrorStats(0, math.nan, math.nan, math.nan)
    return ErrorStats(len(errors), statistics.median(errors), nearest_rank(errors, 0.9), max(errors))


def time_weighted_error(pairs: Iterable[tuple[float, float]]) -> float:
    """Σ|m − p| / Σm over (measured m, predicted p) pairs: each operation's error weighted by the
    time it takes, so a 1 ms miss on a 10 ms operation counts as much as ten 100 µs misses. NaN
    when nothing was measured."""
    total = missed = 0.0
    for m, p in pairs:
        if not (math.isfinite(m) and math.isfinite(p)) or m < 0 or p < 0:
            raise ValueError(f"times must be finite and >= 0, got measured {m!r}, predicted {p!r}")
        total += m
        missed += abs(m - p)
    return missed / total if total > 0 else math.nan
