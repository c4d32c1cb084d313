"""The side process of `compile_warmup`: compiles the compiled host jobs' steps and the compiled
recordings' steps of `calibrate` exactly as the calibration will (same builders, same shapes,
same inductor settings), so that inductor's on-disk caches hold them when it does.

Its GPU work is a few steps of each and inductor's autotuning of the kernels it generated (tens of
milliseconds a kernel); the autotuning waits for the calibration's `GpuLock` (from
$GPTPERF_GPU_LOCK), so no kernel of the calibration is timed beside it. That takes one patch, made
in this process only: inductor's `CachingAutotuner.benchmark_all_configs` runs inside the lock.
Where this torch lacks that method the process compiles nothing and exits 3.

    python -m gptperf.measure.compile_warmup_child cuda:0 [quick]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from gptperf.measure.calibrate import (
    COMPILED_DTYPE,
    COMPILED_WARMUP,
    HOST_JOBS,
    RECORD_BATCH,
    RECORD_SEQ,
    host_groups,
    record_config,
    record_kinds,
    time_host_parts,
)
from gptperf.measure.compile_warmup import DONE
from gptperf.measure.gpu_lock import LOCK_ENV, GpuLock
from gptperf.perfmodel.workload import Workload
from gptperf.plan import COMPILED, ExecutionPlan
from gptperf.runtime import synchronize

NO_AUTOTUNER = 3  # exit status: this torch has no autotuner method to hold the lock in


def autotune_inside(lock: GpuLock) -> bool:
    """Make inductor's autotuning of a generated kernel hold `lock`; False where it cannot."""
    try:
        from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    except ImportError:
        return False
    original = getattr(CachingAutotuner, "benchmark_all_configs", None)
    if original is None:
        return False

    def benchmark_all_configs(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    CachingAutotuner.benchmark_all_configs = benchmark_all_configs
    return True


def warm(device: torch.device, quick: bool, lock: GpuLock) -> None:
    """Compile what `calibrate.measure_host` compiles (its compiled jobs, warmed up as it warms
    them) and what `calibrate.record_compiled_steps` compiles (two steps of each recording)."""
    for what in HOST_JOBS:
        groups = host_groups(COMPILED_DTYPE, COMPILED, device, what)
        time_host_parts(groups, [], device, warmup=COMPILED_WARMUP, repeats=0)
        del groups
    from gptperf.steps.build import build_step

    config = record_config()
    for kind in record_kinds(quick):
        # each recording starts from a reset dynamo (`profiling.provenance`): without it the
        # frames compiled above for the host model would recompile here with dynamic sizes
        torch.compiler.reset()
        plan = ExecutionPlan.default(kind, device.type, compile=True, attention=config.attention)
        step = build_step(config, Workload(kind, RECORD_BATCH, RECORD_SEQ, COMPILED_DTYPE), plan,
                          device)
        step.step()  # compiles; its one run of the step is a few milliseconds
        with lock:  # a second step runs what the first compiled lazily (the recording runs two)
            step.step()
            synchronize(device)
        del step


def main(argv: list[str] | None = None) -> int:
    """argv: the device, then "quick" for a quick calibration's recordings."""
    args = sys.argv[1:] if argv is None else argv
    lock = GpuLock(os.environ.get(LOCK_ENV))
    if not autotune_inside(lock):
        sys.stderr.write("this torch has no CachingAutotuner.benchmark_all_configs to hold the GPU "
                         "lock in\n")
        return NO_AUTOTUNER
    start = time.perf_counter()
    device = torch.device(args[0] if args else "cuda")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    warm(device, "quick" in args[1:], lock)
    sys.stderr.write(f"{DONE} {time.perf_counter() - start:.1f} s\n")  # the parent's note reads it
    return 0


if __name__ == "__main__":
    sys.exit(main())
