"""Why do some linear layers run 10-16% slower than calibrated? Their bias, or the grid between
its powers of two? On one CUDA card, at the linear layers of two validation cases:

    python benchmarks/gpu_linear_bias.py          # after `gptperf calibrate` (for the grid column)

For each (M, N, K) and dtype: F.linear without a bias (what the calibration measures), with one
(what the model runs), both timed as the calibration times (CUDA graphs of back-to-back calls on
distinct operands, `kernel_timer.KernelTimer`), and the calibration grid's value at that point.
In validate (H200, runs I and J) attn.qkv, attn.proj and mlp.proj of the fp32 forward of gpt2
(M 8000) measured 1.10-1.16x calibrated and mlp.fc 1.00. Prints one table.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from gptperf.envinfo import device_name
from gptperf.measure.kernel_timer import KernelTimer, MatmulPrecision, OperandPool
from gptperf.perfmodel.calibration import Calibration, calibration_path
from gptperf.runtime import TORCH_DTYPES

# (case, dtype, M, C): the linear layers (qkv, attn.proj, mlp.fc, mlp.proj) of a width-C block
CASES = (("forward gpt2 fp32 B=8 T=1000", "fp32", 8000, 768),
         ("forward gpt2-large bf16 B=4 T=768", "bf16", 3072, 1280),
         ("train gpt2 bf16 B=6 T=640", "bf16", 3840, 768))
LAYERS = (("attn.qkv", 3, 1), ("attn.proj", 1, 1), ("mlp.fc", 4, 1), ("mlp.proj", 1, 4))


def calibration(device: torch.device) -> Calibration | None:
    path = calibration_path(device_name(device))
    return Calibration.from_dict(json.loads(path.read_text())) if path.exists() else None


def main(device_type: str = "cuda") -> None:
    device = torch.device(device_type)
    cal = calibration(device)
    timer = KernelTimer(device, quick=False)
    rows = []
    for case, dtype, m, c in CASES:
        pool = OperandPool(device, TORCH_DTYPES[dtype])
        with MatmulPrecision(dtype):
            for layer, n_mult, k_mult in LAYERS:
                n, k = n_mult * c, k_mult * c
                sets = pool.copies([(m, k), (n, k), (n,)])
                plain = timer(lambda j, s=sets: F.linear(s[j % len(s)][0], s[j % len(s)][1]))
                biased = timer(lambda j, s=sets: F.linear(*s[j % len(s)]))
                grid = cal.matmul[dtype].at(m, n, k) if cal and dtype in cal.matmul else float("nan")
                rows.append((case, layer, dtype, m, n, k, plain, biased, grid))
                del sets
    print(f"\n{device_name(device)}, torch {torch.__version__}; µs per call")
    print(f"{'case':36s} {'layer':10s} {'M×N×K':18s} {'no bias':>9s} {'bias':>9s} {'bias/no':>8s} "
          f"{'grid':>9s} {'no/grid':>8s} {'bias/grid':>9s} {'TFLOP/s':>8s}")
    for case, layer, _dtype, m, n, k, plain, biased, grid in rows:
        print(f"{case:36s} {layer:10s} {f'{m}×{n}×{k}':18s} {plain * 1e6:9.1f} {biased * 1e6:9.1f} "
              f"{biased / plain:8.3f} {grid * 1e6:9.1f} {plain / grid:8.3f} {biased / grid:9.3f} "
              f"{2 * m * n * k / biased / 1e12:8.1f}")


if __name__ == "__main__":
    main()
