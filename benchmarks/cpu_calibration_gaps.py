"""Two CPU behaviours the calibration grid has to sample, measured on this machine (2 threads).

    python benchmarks/cpu_calibration_gaps.py

1. x·Wᵀ with W 50304×384 fp32 (a small GPT's LM head) for 1..8 rows: below 4 rows the library
   streams the weight once per row, from 4 on it runs a blocked matmul (hence the grid's 3 rows).
2. One AdamW step (torch's CPU default, weight decay on 2-D tensors as gptperf's train step)
   over the same 496 704 parameters in 12, 48, 96 and 192 tensors: a cost per tensor beside the
   cost per byte (hence the optimizer grid over tensors and parameters).
Medians of 15 timed calls after 3 warm-up calls; prints a table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from gptperf.steps.train import TrainSettings, make_optimizer

PARAMS = 496_704  # tiny-c96's parameters (gptperf validate's CPU sweep)


def median_ms(fn: Callable[[], object], warmup: int = 3, repeats: int = 15) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def adamw_step(tensors: int) -> Callable[[], None]:
    size = PARAMS // tensors
    weights = torch.nn.ParameterList(
        torch.nn.Parameter(torch.randn((1, size) if i % 3 == 0 else (size,))) for i in range(tensors))
    for p in weights:
        p.grad = torch.randn_like(p)
    opt = make_optimizer(weights, TrainSettings(lr=3e-4, weight_decay=0.1))
    return opt.step


def main() -> None:
    torch.set_num_threads(2)
    weight = torch.randn(50304, 384)
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("rows  x·Wᵀ (W 50304×384 fp32)")
    for rows in (1, 2, 3, 4, 6, 8):
        x = torch.randn(rows, 384)
        print(f"{rows:4d}  {median_ms(lambda x=x: x @ weight.T):8.2f} ms")
    print(f"tensors  AdamW step over {PARAMS} parameters")
    for tensors in (12, 48, 96, 192):
        print(f"{tensors:7d}  {median_ms(adamw_step(tensors)):8.2f} ms")


if __name__ == "__main__":
    main()
