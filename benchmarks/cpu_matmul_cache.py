"""Matmuls of few rows with their operands in memory or in the last-level cache (CPU).

    python benchmarks/cpu_matmul_cache.py

y = x·Wᵀ at the decode shapes of validate's small CPU models, each timed (fp32, 2 threads, the
mean of 400 calls after 50) with its operands cycled through 64 MiB (the calibration's grid: from
memory on a 32 MiB L3), through 8 MiB (its warm grid: from the cache) and on one operand set, beside
this device's calibration's reading of both grids. Prints a table last.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from gptperf.envinfo import device_name, last_level_cache_bytes
from gptperf.hostmem import keep_freed_memory
from gptperf.measure.calibrate import calibration_for
from gptperf.measure.probe import fork_op_s
from gptperf.perfmodel.calibration import matmul_warm_key

SHAPES = ((6, 640, 160), (6, 160, 640), (6, 480, 160), (6, 160, 160), (4, 640, 160), (16, 640, 160),
          (3, 1152, 384), (3, 384, 1536))


def per_call(m: int, n: int, k: int, pool_bytes: int, calls: int = 400) -> float:
    copies = max(1, pool_bytes // ((m * k + n * k) * 4))
    sets = [(torch.randn(m, k), torch.randn(n, k)) for _ in range(copies)]
    for j in range(50):
        F.linear(*sets[j % copies])
    t0 = time.perf_counter()
    for j in range(calls):
        F.linear(*sets[j % copies])
    return (time.perf_counter() - t0) / calls


def main() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    cal = calibration_for("cpu")
    print(f"{device_name('cpu')}, last-level cache {last_level_cache_bytes() / 2**20:.0f} MiB; "
          f"parallel add {fork_op_s() * 1e6:.2f} µs (out of a spell on the 2-core VM: about 4.3)")
    rows = []
    warm_key = matmul_warm_key("fp32")
    for m, n, k in SHAPES:
        grid = cal.matmul_seconds("fp32", m, n, k) if cal else float("nan")
        warm = cal.matmul[warm_key].at(m, n, k) if cal and warm_key in cal.matmul else float("nan")
        rows.append((f"{m}×{n}×{k}", grid, warm, per_call(m, n, k, 64 << 20), per_call(m, n, k, 8 << 20),
                     per_call(m, n, k, 0)))
    print(f"{'y = x·Wᵀ (µs)':14s} {'grid':>8s} {'warm grid':>10s} {'64 MiB':>8s} {'8 MiB':>8s} {'one set':>8s}")
    for name, *times in rows:
        print(f"{name:14s} " + " ".join(f"{t * 1e6:{w}.1f}" for t, w in zip(times, (8, 10, 8, 8, 8), strict=True)))


if __name__ == "__main__":
    main()
