"""benchmarks/gpu_host_probe_depth.py's statistics: the slope of log(real) on log(probe) and the
correlation of two series' log times, on series with known answers."""

from __future__ import annotations

import math

import pytest
from benchmark_scripts import load

depth = load("gpu_host_probe_depth")

PROBE = [1.0, 1.3, 0.8, 2.0, 1.1, 0.9]


def test_fit_reads_a_power_law_exactly():
    slope, r2, used = depth.fit(PROBE, [3.0 * x ** 0.5 for x in PROBE])
    assert slope == pytest.approx(0.5) and r2 == pytest.approx(1.0) and used == len(PROBE)


def test_fit_drops_pairs_not_positive_and_needs_three():
    ys = [2.0 * x for x in PROBE]
    ys[1] = -0.1  # a per-block difference fallen below zero in noise
    slope, _, used = depth.fit(PROBE, ys)
    assert slope == pytest.approx(1.0) and used == len(PROBE) - 1
    assert all(math.isnan(v) for v in depth.fit([1.0, 2.0], [1.0, 2.0])[:2])


def test_correlation_of_log_times():
    assert depth.correlation(PROBE, [5.0 * x ** 2 for x in PROBE]) == pytest.approx(1.0)
    assert depth.correlation(PROBE, [1.0 / x for x in PROBE]) == pytest.approx(-1.0)
    # a pair not above zero (a per-block difference in noise) is left out, not taken as a log
    ys = [5.0 * x ** 2 for x in PROBE]
    ys[2] = 0.0
    assert depth.correlation(PROBE, ys) == pytest.approx(1.0)
    # a series that does not move, or too few pairs, says nothing
    assert math.isnan(depth.correlation(PROBE, [1.0] * len(PROBE)))
    assert math.isnan(depth.correlation([1.0, 2.0], [2.0, 1.0]))
    # a lag-1 reading of alternating speeds: each round the opposite of the one before
    alternating = [1.0, 2.0] * 4
    assert depth.correlation(alternating[:-1], alternating[1:]) == pytest.approx(-1.0)
