"""How steady the host is: the calibration's host-model step traced, probed over windows of
several lengths, pinned to each CPU, and beside eager validation cases.

    python benchmarks/gpu_host_spells.py                  # trace, windows, pinning
    python benchmarks/gpu_host_spells.py --cases          # and three eager cases against the probe

1. trace: the host model's eager decode step (`measure.probe.host_model_step`) in samples of five
   steps for 6 s; the share of slow samples (over 1.35x the median) and how long slow and fast
   spells last.
2. windows: `host_step_s` eight times back to back over 0.1, 0.5, 1 and 2 s; each spread.
3. pinning: `host_step_s` over 50 ms pinned to each CPU in turn, three rounds; printed beside the
   cgroup's CPU quota and throttling counters (a quota would slow every core alike).
4. --cases (GPU): three host-bound eager cases of the GPU sweep measured three times each with ten timed
   steps and with at least a second of steps, each followed by the one-second probe.
Works on a CPU too (--device cpu). Writes $OUT/host_spells.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from gptperf.measure.probe import host_model_step, host_step_s
from gptperf.runtime import synchronize

CASES = ("train gpt2 bf16 B=6 T=640 eager", "forward gpt2-large bf16 B=4 T=768 eager",
         "prefill gpt2-xl bf16 B=1 T=1000 eager")
SLOW = 1.35  # a sample this many times the median is in a slow spell


def trace(device: torch.device, seconds: float = 6.0) -> dict[str, Any]:
    run = host_model_step(str(device))
    for _ in range(200):
        run()
    synchronize(device)
    xs: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(5):
            run()
        xs.append((time.perf_counter() - t0) / 5)
    synchronize(device)
    med = statistics.median(xs)
    slow = [x > SLOW * med for x in xs]
    spells: dict[bool, list[int]] = {True: [], False: []}
    length = 1
    for a, b in zip(slow, slow[1:], strict=False):  # neighbours
        if a == b:
            length += 1
        else:
            spells[a].append(length)
            length = 1
    spells[slow[-1]].append(length)
    per_ms = seconds / len(xs) * 1e3
    return {"samples": len(xs), "sample_ms": per_ms, "median_s": med,
            "p10_s": sorted(xs)[len(xs) // 10], "p90_s": sorted(xs)[9 * len(xs) // 10],
            "slow_share": sum(slow) / len(xs),
            "slow_spells_ms": sorted(round(n * per_ms) for n in spells[True]),
            "fast_spells_ms": sorted(round(n * per_ms) for n in spells[False])}


def windows(device: torch.device) -> dict[str, list[float]]:
    return {str(w): [host_step_s(device, w, warmup_s=0.05) for _ in range(8)] for w in (0.1, 0.5, 1.0, 2.0)}


def pinning(device: torch.device) -> list[dict[int, float]]:
    cpus = sorted(os.sched_getaffinity(0))
    rounds = []
    try:
        for _ in range(3):
            row = {}
            for c in cpus:
                os.sched_setaffinity(0, {c})
                row[c] = host_step_s(device, 0.05, warmup_s=0.02)
            rounds.append(row)
    finally:
        os.sched_setaffinity(0, set(cpus))
    return rounds


def cgroup_cpu() -> str:
    """The cgroup's CPU quota and throttling counters, where the files exist."""
    parts = []
    for name in ("cpu.max", "cpu.stat"):
        path = Path("/sys/fs/cgroup") / name
        if path.is_file():
            parts.append(f"{name}: " + " ".join(path.read_text().split()))
    return "; ".join(parts) or "no cgroup v2 CPU files"


def cases(device: torch.device) -> dict[str, dict[str, list[float]]]:
    from gptperf.validate.run import measure_case
    from gptperf.validate.sweep import cases as sweep

    todo = [c for c in sweep(device.type) if c.name in CASES]
    rows: dict[str, dict[str, list[float]]] = {c.name: {"ten_s": [], "long_s": [], "probe_s": []} for c in todo}
    for _ in range(3):
        for c in todo:
            ten, _ = measure_case(c, device, 10)
            long, _ = measure_case(c, device, max(10, math.ceil(1.0 / ten)))
            r = rows[c.name]
            r["ten_s"].append(ten)
            r["long_s"].append(long)
            r["probe_s"].append(host_step_s(device, 1.0))
    return rows


def spread(xs: list[float]) -> float:
    return max(xs) / min(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    res: dict[str, Any] = {"device": str(device), "cpus": len(os.sched_getaffinity(0))}
    res["trace"] = t = trace(device)
    print(f"trace: {t['samples']} samples of {t['sample_ms']:.1f} ms, median {t['median_s'] * 1e6:.0f} µs, "
          f"p10 {t['p10_s'] * 1e6:.0f} p90 {t['p90_s'] * 1e6:.0f} µs, slow share {t['slow_share']:.2f}; "
          f"longest slow spells {t['slow_spells_ms'][-5:]} ms, fast {t['fast_spells_ms'][-5:]} ms", flush=True)
    res["windows"] = w = windows(device)
    for k, v in w.items():
        print(f"window {k} s: " + " ".join(f"{x * 1e6:.0f}" for x in v) + f" µs, spread {spread(v):.2f}", flush=True)
    res["pinning"] = p = pinning(device)
    for i, row in enumerate(p):
        print(f"pinned round {i}: " + " ".join(f"{c}:{x * 1e6:.0f}" for c, x in row.items()) + " µs", flush=True)
    res["cgroup"] = cgroup = cgroup_cpu()
    print(f"cgroup: {cgroup}", flush=True)
    if args.cases:
        res["cases"] = cs = cases(device)
        for name, r in cs.items():
            per = [m / p for m, p in zip(r["long_s"], r["probe_s"], strict=True)]
            print(f"{name}: ten steps {statistics.median(r['ten_s']) * 1e3:.2f} ms (spread "
                  f"{spread(r['ten_s']):.2f}), >= 1 s {statistics.median(r['long_s']) * 1e3:.2f} ms "
                  f"(spread {spread(r['long_s']):.2f}), probe {statistics.median(r['probe_s']) * 1e6:.0f} µs "
                  f"(spread {spread(r['probe_s']):.2f}); case per probe {spread(per):.2f} apart", flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "host_spells.json"), "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
