"""Measurement: the one timing harness, measured ceilings, run metrics and `run_bench`.

    from gptperf.measure import time_fn, time_phases, run_bench, measure_ceilings

Importing this package does not import torch; the functions that run work do, when called.

Where to start:
- timing and metrics: `timer` (the harness), `metrics` (utilization, peak memory), `bench`
  (`gptperf bench`), `device_kernels` (the kernels a call runs);
- the machine's roofline: `ceilings` (`gptperf ceilings`), `kernel_model`, `collectives`;
- the calibration behind the calibrated prediction: `calibrate.calibrate` is the entry point
  (`gptperf calibrate`). It runs the kernel families (`calibrate_kernels`, with
  `calibrate_optimizer` and `calibrate_decode`; points planned by `calibration_plan`, timed by
  `kernel_timer`, tabled by `calibration_tables`, a CPU's passes merged by
  `calibration_passes`), the host costs (`calibrate_host`), the compiled recordings
  (`calibrate_compiled`, compiled ahead by `compile_warmup` in side processes that share the GPU
  through `gpu_lock`), and the smaller parts `launch_gap`, `optimizer_overlap`, `sustained` and
  `cache_reach`;
- the machine's speed now against its calibration: `probe`.
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
        from gptperf.measure import ceilings  # deferred: lazy package attribute

        return getattr(ceilings, name)
    raise AttributeError(name)
