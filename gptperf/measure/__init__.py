"""Measurement: the one timing harness, measured ceilings, run metrics and `run_bench`.

    from gptperf.measure import time_fn, time_phases, run_bench, measure_ceilings

Importing this package does not import torch; the functions that run work do, when called.
"""

from __future__ import annotations

from typing import Any

from gptperf.measure.bench import BenchResult, run_bench
from gptperf.measure.metrics import (
    MemoryPeak,
    PeakMemoryMeter,
    Utilization,
    UtilizationSampler,
    gpu_utilization_reader,
)
from gptperf.measure.timer import (
    WIDE_SPREAD,
    PhaseTiming,
    Timing,
    time_fn,
    time_phases,
    time_runner,
)

_CEILINGS = ("Ceilings", "measure_ceilings", "ceilings_for", "load_cached_ceilings", "save_ceilings")

__all__ = [
    "WIDE_SPREAD", "BenchResult", "MemoryPeak", "PeakMemoryMeter", "PhaseTiming", "Timing",
    "Utilization", "UtilizationSampler", "gpu_utilization_reader", "run_bench", "time_fn", "time_phases", "time_runner", *_CEILINGS,
]


def __getattr__(name: str) -> Any:
    # ceilings imports torch at its top: load it only when asked for.
    if name in _CEILINGS:
        from gptperf.measure import ceilings

        return getattr(ceilings, name)
    raise AttributeError(name)
