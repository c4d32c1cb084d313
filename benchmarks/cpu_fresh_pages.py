"""Freed host blocks above 32 MiB: mapped fresh on every allocation, or kept in glibc's heap.

    python benchmarks/cpu_fresh_pages.py [ROUNDS]

gpt2's CPU train step (B=1, T=64, fp32, eager) in fresh processes, alternating: glibc's mapping
threshold at its 32 MiB ceiling alone (what `gptperf.hostmem` did before), then also
`M_MMAP_MAX` 0 (what it does now: no block mapped apart). Each process times the step's phases
(the median of 6 steps after 2) and counts the minor page faults each phase takes
(`ru_minflt`, 4 KiB a fault); then its peak RSS. Prints a table last.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import ctypes, json, mmap, resource, statistics, sys, time
libc = ctypes.CDLL(None)
libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
assert libc.mallopt(-3, 32 << 20) == 1 and libc.mallopt(-1, 1 << 30) == 1  # threshold, trim
if sys.argv[1] == "every":
    assert libc.mallopt(-4, 0) == 1  # M_MMAP_MAX
import torch
torch.set_num_threads(2)
from gptperf.hostmem import minor_faults
from gptperf.model.config import preset
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step
cfg = preset("gpt2")
step = build_step(cfg, Workload("train", 1, 64, "fp32"), ExecutionPlan.default("train", "cpu"), "cpu")
times, faults = {}, {}
for i in range(8):
    for phase, run in step.phases:
        f0 = minor_faults()
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        f1 = minor_faults()
        if i >= 2:
            times.setdefault(phase, []).append(dt)
            faults.setdefault(phase, []).append(f1 - f0)
print(json.dumps({"s": {p: statistics.median(v) for p, v in times.items()},
                  "fault_bytes": {p: mmap.PAGESIZE * statistics.median(v) for p, v in faults.items()},
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
VARIANTS = {"up to 32 MiB": "threshold", "every block": "every"}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for label, arg in VARIANTS.items():
            out = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True,
                                 check=True)
            results[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'freed blocks kept':18s} {'fwd ms':>14s} {'bwd ms':>14s} {'opt ms':>14s} "
          f"{'faulted MB a step':>18s} {'peak RSS GB':>12s}")
    for label, runs in results.items():
        def col(phase: str, runs: list[dict] = runs) -> str:
            return ", ".join(f"{r['s'][phase] * 1e3:.0f}" for r in runs)
        faulted = ", ".join(f"{sum(r['fault_bytes'].values()) / 1e6:.0f}" for r in runs)
        rss = ", ".join(f"{r['peak_rss'] / 1e9:.2f}" for r in runs)
        print(f"{label:18s} {col('fwd'):>14s} {col('bwd'):>14s} {col('opt'):>14s} {faulted:>18s} {rss:>12s}")


if __name__ == "__main__":
    main()
