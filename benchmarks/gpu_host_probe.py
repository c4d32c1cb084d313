"""Does the host probe read the host that ran the step? The host model's step time
(`gptperf.measure.probe.host_step_s`) right after a device-bound step and right after a
host-bound one, with and without its warm-up of untimed steps.

    python benchmarks/gpu_host_probe.py

On the H200 machine the probe without warm-up read 1.3-1.9x the calibration's host time after
device-bound cases and 0.84-0.90x after host-bound ones (validate, run G, BENCHMARKS.md): if
the warm-up removes that difference, the two columns "warm" agree and "cold" do not. Each row:
the step run as `bench` runs it (3 warm-up, 10 timed), then the probe; five rounds alternating
cold and warm, medians. Prints one table.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from gptperf.measure.probe import STEP_WARMUP_S, host_step_s
from gptperf.measure.timer import time_fn
from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step

CASES = (  # (label, config, kind, batch, seq, dtype): one device-bound, one host-bound eager step
    ("forward gpt2 fp32 B=8 T=1000 (device-bound)", preset("gpt2"), "forward", 8, 1000, "fp32"),
    ("decode gpt2 fp32 B=12 L=640 (host-bound)", preset("gpt2"), "decode", 12, 640, "fp32"),
)
ROUNDS = 5


def main() -> int:
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 0
    dev = torch.device("cuda")
    host_step_s(dev)  # build the probe's model once
    time.sleep(1.0)
    idle = {"cold": host_step_s(dev, warmup_s=0.0), "warm": host_step_s(dev)}
    rows = [("after 1 s idle", idle["cold"], idle["warm"], float("nan"))]
    for label, config, kind, batch, seq, dtype in CASES:
        step = build_step(config, Workload(kind, batch, seq, dtype), ExecutionPlan.eager(), dev)
        run = step.phases[0][1]
        probes: dict[str, list[float]] = {"cold": [], "warm": []}
        steps = []
        for i in range(2 * ROUNDS):
            steps.append(time_fn(run, warmup=3, repeats=10, device=dev).median)
            mode = "cold" if i % 2 == 0 else "warm"
            probes[mode].append(host_step_s(dev, warmup_s=0.0 if mode == "cold" else STEP_WARMUP_S))
        rows.append((label, statistics.median(probes["cold"]), statistics.median(probes["warm"]),
                     statistics.median(steps)))
        del step, run
        torch.cuda.empty_cache()
    print(f"{'after':<46} {'probe cold µs':>14} {'probe warm µs':>14} {'step ms':>9}")
    for label, cold, warm, step_s in rows:
        print(f"{label:<46} {cold * 1e6:14.1f} {warm * 1e6:14.1f} {step_s * 1e3:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
