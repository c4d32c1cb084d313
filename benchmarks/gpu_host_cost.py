"""Host cost of eager steps against model width and activation size (a check of the calibration's
host model, which is measured on a tiny GPT and charged per block).

    python benchmarks/gpu_host_cost.py

For a few configurations and sizes: the host seconds of one step (the call, timed without
synchronising after it, the GPU idle before it) and the wall seconds (synchronised), median of
repeats. If the host seconds per block grow with width or tokens, the calibration's host model
(per block, width-free) misses them. Prints one table.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step

CASES = (  # (label, config, kind, batch, seq, dtype)
    ("tiny C=64 12L", preset("gpt2", n_layer=12, n_embd=64, n_head=2), "prefill", 1, 8, "bf16"),
    ("gpt2 12L T=8", preset("gpt2"), "prefill", 1, 8, "bf16"),
    ("gpt2 12L T=1000", preset("gpt2"), "prefill", 1, 1000, "bf16"),
    ("gpt2-xl 48L T=8", preset("gpt2-xl"), "prefill", 1, 8, "bf16"),
    ("gpt2-xl 48L T=1000", preset("gpt2-xl"), "prefill", 1, 1000, "bf16"),
    ("gpt2-xl 48L fwd T=8", preset("gpt2-xl"), "forward", 1, 8, "bf16"),
    ("gpt2-xl 48L fwd T=640", preset("gpt2-xl"), "forward", 2, 640, "bf16"),
    ("gpt2-large 36L fwd T=768", preset("gpt2-large"), "forward", 4, 768, "bf16"),
)


def main() -> int:
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 0
    dev = torch.device("cuda")
    rows = []
    for label, config, kind, batch, seq, dtype in CASES:
        step = build_step(config, Workload(kind, batch, seq, dtype), ExecutionPlan.eager(), dev)
        run = step.phases[0][1]
        for _ in range(3):
            run()
        host, wall = [], []
        for _ in range(15):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            host.append(t1 - t0)
            wall.append(time.perf_counter() - t0)
        h, w = statistics.median(host), statistics.median(wall)
        rows.append((label, h, w, h / config.n_layer))
        del step
        torch.cuda.empty_cache()
    print(f"{'case':<26} {'host ms':>9} {'wall ms':>9} {'host/block us':>14}")
    for label, h, w, per in rows:
        print(f"{label:<26} {h * 1e3:9.3f} {w * 1e3:9.3f} {per * 1e6:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
