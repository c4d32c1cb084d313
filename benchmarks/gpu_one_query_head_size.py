"""One-query attention (a decode step's sdpa) against head size, timed as the calibration times its
grid (`calibrate_kernels._attention_call`, `KernelTimer`): does head size 32 take the time of head
size 64, the grid's smallest CUDA point until session 66, which 32-wide decodes were charged?

    python benchmarks/gpu_one_query_head_size.py

Per dtype and (BH, L): microseconds a call at D = 32, 64, 128, and t(32)/t(64). The first row of
each dtype is the drawn fast fp32 decode that read 0.85-0.86 of its prediction on two H100s
(c544h17-4L B=32 L=579: 32 × 17 heads of 32). Prints its table last. (H100, session 66: 0.60-0.90,
so the grid now measures head size 32 too.)
"""

from __future__ import annotations

import sys

import torch

from gptperf.measure.calibrate_kernels import _attention_call
from gptperf.measure.kernel_timer import KernelTimer, OperandPool
from gptperf.runtime import TORCH_DTYPES

SHAPES = ((544, 579), (512, 512), (128, 2048), (2048, 128), (32, 8192))  # (BH, L)
HEAD_SIZES = (32, 64, 128)


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA device")
        return 1
    device = torch.device("cuda")
    timer = KernelTimer(device, quick=False)
    rows = []
    for dtype in ("fp32", "bf16"):
        pool = OperandPool(device, TORCH_DTYPES[dtype])
        for bh, length in SHAPES:
            us = {d: 1e6 * timer(_attention_call(device, TORCH_DTYPES[dtype], "one_query", bh, length, d, pool),
                                 f"one_query {dtype} {bh}x{length}x{d}") for d in HEAD_SIZES}
            rows.append((dtype, bh, length, us))
    print(f"one-query sdpa on {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print(f"{'dtype':5} {'BH':>5} {'L':>5} " + " ".join(f"{f'D={d} µs':>10}" for d in HEAD_SIZES) + "  t(32)/t(64)")
    for dtype, bh, length, us in rows:
        print(f"{dtype:5} {bh:5d} {length:5d} " + " ".join(f"{us[d]:10.2f}" for d in HEAD_SIZES)
              + f"  {us[32] / us[64]:11.3f}")
    for note in timer.notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
