"""Is the host's speed a property of the core a process runs on? Times a small torch op issued
from Python with the process pinned to each allowed core in turn, for a few rounds, then unpinned
over a few seconds; prints the machine's CPU quota (cgroup) beside them.

    python benchmarks/host_per_core.py [ROUNDS]     # CUDA when there is one, else the CPU

A core that is slow in every round would make pinning worth it; slow spells that move from core
to core would not (BENCHMARKS.md, "Runs 9 and 10"). Linux only (sched_setaffinity).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

OPS = 200  # small adds per sample
SAMPLE_S = 0.15  # seconds of samples per reading


def cgroup_cpu() -> str:
    """The cgroup's CPU quota and throttling counters, where the files exist."""
    parts = []
    for name in ("cpu.max", "cpu.stat"):
        path = Path("/sys/fs/cgroup") / name
        if path.is_file():
            parts.append(f"{name}: " + " ".join(path.read_text().split()))
    return "; ".join(parts) or "no cgroup v2 CPU files"


def op_time(a: torch.Tensor, b: torch.Tensor, seconds: float = SAMPLE_S) -> float:
    """Median seconds to issue one small add, over `seconds` of runs of OPS adds."""
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(OPS):
            a.add_(b)
        samples.append((time.perf_counter() - t0) / OPS)
        if a.is_cuda:
            torch.cuda.synchronize()
    return statistics.median(samples)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if not hasattr(os, "sched_setaffinity"):
        sys.exit("needs Linux (os.sched_setaffinity)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = torch.ones(16, device=device), torch.ones(16, device=device)
    cores = sorted(os.sched_getaffinity(0))
    for _ in range(3):
        op_time(a, b)  # warm up
    table: dict[int, list[float]] = {c: [] for c in cores}
    try:
        for _ in range(rounds):
            for c in cores:
                os.sched_setaffinity(0, {c})
                table[c].append(op_time(a, b))
    finally:
        os.sched_setaffinity(0, cores)
    free = [op_time(a, b, 0.1) for _ in range(40)]
    print(f"{os.cpu_count()} CPUs, {len(cores)} allowed; {cgroup_cpu()}")
    print(f"small add on {device} issued from Python, µs per op (median of {SAMPLE_S} s), pinned to each core:")
    for c, times in table.items():
        print(f"  core {c:3d}: " + "  ".join(f"{t * 1e6:6.2f}" for t in times))
    print("unpinned, 40 readings of 0.1 s: " + " ".join(f"{t * 1e6:.2f}" for t in free))


if __name__ == "__main__":
    main()
