"""Does the host probe follow a deep step's host time as the host's speed moves?

A command charges a step's host costs at the host model's one-block step sampled as the step ran,
over that step's time at calibration (`measure.probe.HostSampler`). Across stored H200 sweeps, the eager bf16
train steps the host holds up (12-48 blocks) moved about 1.2x more than that probe said, both ways
(BENCHMARKS.md, session 43). Such a step is mostly per-block host work, and the one-block probe
mostly fixed work.

This times, round after round over `--seconds`, the host model's train step (fp32, the probe's
model) at one block and at four, and real host-bound eager train steps. It then reads each real
step's time, round by round, against three probes: the one-block step, the four-block step, and
their difference (the per-block part). For each it prints the slope of log(real) on log(probe)
and its R². A probe that follows the real step has slope 1 and R² near 1. Last, the correlation
of every pair of series, and of each with itself a round later: how long the host keeps a speed.
With --out DIR (or $OUT), every round goes to host_probe_depth.json.

On one H100's host (2026-12-05, 120 rounds of 1.2 s) none of the three probes followed: slopes
0.29-0.65 (one block), 0.25-0.77 (four), 0.13-0.51 (per block), R² at most 0.57, falling with
depth. The timed series moved 1.6-1.8x, and a series kept little of its speed from one round to the next
(r 0.11-0.31 at lag 1; series timed next to each other in a round correlated best): the host
changes speed within a second, and a probe follows a step only as far as it samples the same moments.

    python benchmarks/gpu_host_probe_depth.py [--seconds 180] [--steps 5] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gptperf.model.config import GPTConfig, preset
from gptperf.perfmodel.calibration import HOST_MODEL, host_model_config
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.runtime import synchronize
from gptperf.steps.build import build_step

# (preset, blocks, B, T): validate's host-bound eager train cases (its fixed sweep), and on a CPU
# the tiny model at the probes' depth and six times it
REAL = {"cuda": (("gpt2", 12, 6, 640), ("gpt2-medium", 24, 3, 1000), ("gpt2-xl", 48, 2, 384)),
        "cpu": (("tiny", 4, 2, 32), ("tiny", 24, 2, 32))}
DTYPE = {"cuda": "bf16", "cpu": "fp32"}
PROBE_STEPS = 3  # a probe sample: this many steps back to back, as `probe.STEP_RUN["train"]`
PROBE_SAMPLES = 5  # samples a probe reading, its median


def _train_step(config: GPTConfig, batch: int, seq: int, dtype: str, device: torch.device
                ) -> Callable[[], None]:
    plan = ExecutionPlan.default("train", device.type, compile=False, attention=config.attention, dtype=dtype)
    step = build_step(config, Workload("train", batch, seq, dtype), plan, device)

    def run() -> None:
        for _, phase in step.phases:
            phase()

    return run


def _seconds_a_step(run: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds a step of `steps` run back to back after one untimed, the device synchronised
    before and after (a host-bound step: its host time)."""
    run()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    synchronize(device)
    return (time.perf_counter() - t0) / steps


def _probe_s(run: Callable[[], None], device: torch.device) -> float:
    """Median over PROBE_SAMPLES of a sample's seconds a step (PROBE_STEPS back to back, no
    synchronisation inside, as `probe.HostSampler` samples)."""
    run()
    samples = []
    for _ in range(PROBE_SAMPLES):
        t0 = time.perf_counter()
        for _ in range(PROBE_STEPS):
            run()
        samples.append((time.perf_counter() - t0) / PROBE_STEPS)
    synchronize(device)
    return statistics.median(samples)


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, int]:
    """(slope, R², pairs used) of log(y) on log(x), each about its mean, over the pairs both
    positive (a per-block difference can fall to zero or below in noise); slope and R² nan with
    fewer than 3 such pairs or where x does not move."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pairs) < 3:
        return math.nan, math.nan, len(pairs)
    lx, ly = [math.log(x) for x, _ in pairs], [math.log(y) for _, y in pairs]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    syy = sum((b - my) ** 2 for b in ly)
    if sxx <= 0:
        return math.nan, math.nan, len(pairs)
    sxy = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    return sxy / sxx, (sxy * sxy / (sxx * syy) if syy > 0 else math.nan), len(pairs)


def correlation(xs: list[float], ys: list[float]) -> float:
    """Pearson's r of log(x) and log(y) over the pairs both positive: ±√R² of `fit`, the sign
    its slope's; nan with fewer than 3 such pairs or where either does not move."""
    slope, r2, _ = fit(xs, ys)
    return math.copysign(math.sqrt(r2), slope)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="rounds run until this many seconds have passed")
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each real step a round")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    args = ap.parse_args()
    device = torch.device(args.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    probes = {f"{n} block{'s' if n > 1 else ''}": _train_step(host_model_config(n), HOST_MODEL["batch"],
                                                              HOST_MODEL["seq"], "fp32", device)
              for n in (1, 4)}
    real = {f"{name} {n}L B={b} T={t} {DTYPE[kind]} eager":
            _train_step(preset(name, n_layer=n), b, t, DTYPE[kind], device) for name, n, b, t in REAL[kind]}
    rounds: list[dict[str, float]] = []
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds or len(rounds) < 3:
        row = {"at_s": time.perf_counter() - start}
        row |= {p: _probe_s(run, device) for p, run in probes.items()}
        row |= {r: _seconds_a_step(run, args.steps, device) for r, run in real.items()}
        rounds.append(row)
    one, four = list(probes)
    for row in rounds:
        row["per block"] = (row[four] - row[one]) / 3
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "host_probe_depth.json").write_text(json.dumps(rounds, indent=1) + "\n")
    readings = [one, four, "per block"]
    print(f"{len(rounds)} rounds over {rounds[-1]['at_s']:.0f} s on {device} "
          f"({torch.cuda.get_device_name(device) if kind == 'cuda' else 'CPU'}); each series' max / min:")
    for key in readings + list(real):
        xs = [row[key] for row in rounds if row[key] > 0]  # a per-block difference can be <= 0
        spread = f"{max(xs) / min(xs):.3f}" if xs else "n/a"
        print(f"  {key:40s} median {statistics.median(xs) * 1e3 if xs else math.nan:8.3f} ms  "
              f"max/min {spread}  ({len(xs)} of {len(rounds)} rounds above zero)")
    print("\nslope (R², rounds used) of log(real step) on log(probe), over the rounds:")
    print(f"{'real step':40s} " + " ".join(f"{k:>18s}" for k in readings))
    for r in real:
        ys = [row[r] for row in rounds]
        cells = []
        for k in readings:
            slope, r2, used = fit([row[k] for row in rounds], ys)
            cells.append(f"{slope:6.2f} ({r2:.2f}, {used})")
        print(f"{r:40s} " + " ".join(f"{c:>18s}" for c in cells))
    # how fast the host's speed moves: a series that keeps its speed from one round to the next
    # has r near 1 at lag 1; near 0, no probe taken at another moment can follow it
    series = [one, four] + list(real)
    print(f"\nr of log times, series in the order a round times them (a round: "
          f"{rounds[-1]['at_s'] / max(len(rounds) - 1, 1):.2f} s); last column: each with itself a round later")
    print(f"{'':40s} " + " ".join(f"{k[:8]:>8s}" for k in series) + f" {'lag 1':>8s}")
    for a in series:
        xs = [row[a] for row in rounds]
        cells = [correlation(xs, [row[b] for row in rounds]) for b in series]
        print(f"{a:40s} " + " ".join(f"{c:8.2f}" for c in cells) + f" {correlation(xs[:-1], xs[1:]):8.2f}")


if __name__ == "__main__":
    main()
