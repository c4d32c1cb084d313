"""What the calibration's matmul grid leaves out, measured: the bias epilogue, the backward's
layouts, and the clock under sustained load (a check of the calibrated matmul, not a part of it).

    python benchmarks/gpu_matmul_gaps.py      (after `gptperf calibrate` on this GPU)

For the linear layers of a few validation steps: the grid's interpolated time of y = x·Wᵀ
(no bias, `cal.matmul[dtype].at(M, N, K)`) beside the same shape timed as the calibration times
(CUDA graph, operands cycled) as F.linear without and with a bias, and in the backward's
layouts (dX = dY·W, dW = dYᵀ·X). Then one 8192³ bf16 matmul replayed for 5 s after 2 s idle: its
time in the first replays against the last (power capping lowers the clock under sustained
load). Prints one table and one line.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from gptperf.measure.calibrate import calibration_for
from gptperf.measure.kernel_timer import KernelTimer, MatmulPrecision, OperandPool, replay_seconds
from gptperf.runtime import cuda_graph


def linear_shapes(rows: int, c: int) -> list[tuple[str, int, int, int]]:
    """(kind, M, N, K) of a block's four Linears: forward, dX and dW."""
    out = []
    for n, k in ((3 * c, c), (c, c), (4 * c, c), (c, 4 * c)):
        out += [("fwd", rows, n, k), ("dX", rows, k, n), ("dW", n, k, rows)]
    return out


CASES = (("gpt2 B=6 T=640 bf16", "bf16", linear_shapes(3840, 768)),
         ("gpt2-large B=4 T=768 bf16", "bf16", linear_shapes(3072, 1280)),
         ("gpt2 B=4 T=320 fp32", "fp32", linear_shapes(1280, 768)))


def main() -> int:
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 0
    dev = torch.device("cuda")
    cal = calibration_for(dev, required=True)
    timer = KernelTimer(dev, False)
    print(f"{'case':26} {'kind':4} {'M':>6} {'N':>6} {'K':>6} {'grid us':>8} {'linear':>8} "
          f"{'+bias':>8} {'layout':>8} {'layout/grid':>11}")
    for label, dtype, shapes in CASES:
        pool = OperandPool(dev, {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
        with MatmulPrecision(dtype):
            for kind, m, n, k in shapes:
                sets = pool.copies([(m, k), (n, k), (n,)])
                plain = timer(lambda j, s=sets: F.linear(s[j % len(s)][0], s[j % len(s)][1]))
                bias = timer(lambda j, s=sets: F.linear(*s[j % len(s)]))
                if kind == "fwd":
                    layout = bias  # the model's Linears have biases
                elif kind == "dX":  # output m×n over k: dY (m×k) · W (k×n), W not transposed
                    ops = pool.copies([(m, k), (k, n)])
                    layout = timer(lambda j, s=ops: torch.mm(*s[j % len(s)]))
                else:  # dW = dYᵀ·X: dY and X stored rows-major (k rows), dY transposed
                    ops = pool.copies([(k, m), (k, n)])
                    layout = timer(lambda j, s=ops: torch.mm(s[j % len(s)][0].t(), s[j % len(s)][1]))
                grid = cal.matmul[dtype].at(m, n, k)
                print(f"{label:26} {kind:4} {m:6} {n:6} {k:6} {grid * 1e6:8.1f} {plain * 1e6:8.1f} "
                      f"{bias * 1e6:8.1f} {layout * 1e6:8.1f} {layout / grid:11.3f}", flush=True)
    x = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)

    def ten() -> None:
        for _ in range(10):
            x @ x

    graph = cuda_graph(ten, dev, warmup=lambda: x @ x)
    torch.cuda.synchronize()
    time.sleep(2.0)
    per = []
    until = time.perf_counter() + 5.0
    while time.perf_counter() < until:
        per.append(replay_seconds(graph) * 1e3 / 10)
    tenth = max(1, len(per) // 10)
    print(f"8192³ bf16 matmul over 5 s of load after 2 s idle: first 5 replays "
          f"{statistics.median(per[:5]):.3f} ms, first tenth {statistics.median(per[:tenth]):.3f} ms, "
          f"last tenth {statistics.median(per[-tenth:]):.3f} ms ({len(per)} replays of 10); "
          f"clock {torch.cuda.clock_rate()} MHz, power {torch.cuda.power_draw() / 1e3:.0f} W at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
