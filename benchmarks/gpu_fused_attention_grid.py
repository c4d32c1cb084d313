"""The fused decode attention kernel on a fine grid, to choose the calibration's axes (one CUDA card).

    python benchmarks/gpu_fused_attention_grid.py

Times `steps.decode_kernels.decode_attention` as the calibration does (`calibrate_decode.
measure_fused_attention`: batch 1, the cache's last position, each call after the one before,
distinct caches cycled) over heads 8..128, cache lengths 128..8192 and D 64, 128 in bf16, then
reads the shapes of gpt2's and the 7B shape's decode steps (12 heads at 1024, 32 at 1000) from
sub-grids of it — the candidate axes — against their direct measurement. Then, at those shapes,
the kernel after a qkv `ln_gemv` (pairs chained, less the qkv kernel's own chain) beside its
chain alone: the step runs it after qkv. Writes $OUT/fused_attention_grid.json when OUT is set;
prints a table last.
"""

from __future__ import annotations

import json
import os
from itertools import product

import torch

from gptperf.measure import calibrate_decode as cd
from gptperf.measure import calibration_plan as cp
from gptperf.measure.kernel_timer import KernelTimer, OperandPool, random_tensor
from gptperf.perfmodel.curves import Grid
from gptperf.steps import decode_kernels as dk

FINE = ((8, 12, 16, 20, 25, 32, 64, 128), (128, 256, 512, 1000, 1024, 2048, 8192), (64, 128))
CANDIDATES = {
    "calibration now": cp.FUSED_ATTENTION_AXES,
    "heads 8,16,32,128": ((8, 16, 32, 128), (128, 512, 2048, 8192), (64, 128)),
    "heads 8,16,32,128; L +1024": ((8, 16, 32, 128), (128, 512, 1024, 2048, 8192), (64, 128)),
    "heads 8,12,16,25,32,128; L +256,1024": ((8, 12, 16, 25, 32, 128), (128, 256, 512, 1024, 2048, 8192), (64, 128)),
}
TARGETS = ((12, 1024, 64), (32, 1000, 128), (16, 1024, 64), (25, 512, 64), (20, 1000, 64))


def after_qkv(h: int, n: int, d: int, timer: KernelTimer) -> tuple[float, float, float]:
    """Seconds of (the attention chained alone, the qkv ln_gemv chained alone, the pair
    qkv -> attention chained) at H×L×D, bf16, batch 1."""
    device, td, c = torch.device("cuda"), torch.bfloat16, h * d
    pool = OperandPool(device, td)
    caches, weights = pool.copies([(1, h, n, d), (1, h, n, d)]), pool.copies([(3 * c, c)])
    x, g, b = (random_tensor(s, td, device) for s in ((1, 1, c), (c,), (c,)))
    folded = dk.fold_for_copies([w[0] for w in weights], g, b)
    qkv, y = torch.empty((1, 1, 3 * c), device=device, dtype=td), torch.empty((1, 1, c), device=device, dtype=td)
    pos, scratch = torch.tensor(n - 1, device=device), dk.DecodeScratch.new(h, device)

    def attention(j: int) -> torch.Tensor:
        k, v = caches[j % len(caches)]
        return dk.decode_attention(qkv, k, v, pos, h, scratch=scratch, out=y)

    def gemv(j: int) -> torch.Tensor:
        return dk.ln_gemv(x, g, b, 1e-5, weights[j % len(weights)][0], folded=folded[j % len(weights)], out=qkv)

    def pair(j: int) -> torch.Tensor:
        gemv(j)
        return attention(j)

    return timer(attention, "attention"), timer(gemv, "qkv"), timer(pair, "qkv + attention")


def main() -> None:
    device = torch.device("cuda")
    # the calibration's own measurement, on the fine grid
    grid = cd.measure_fused_attention(device, "bf16", False, None, KernelTimer(device, False), axes=FINE)
    measured = dict(zip(product(*FINE), grid.seconds, strict=True))
    rows = []
    for name, axes in CANDIDATES.items():
        sub = Grid(("H", "L", "D"), axes, tuple(measured[c] for c in product(*axes)), grid.growth)
        for t in TARGETS:
            rows.append({"axes": name, "shape": t, "grid_us": sub.at(*t) * 1e6, "direct_us": measured[t] * 1e6})
    timer = KernelTimer(device, False)
    context = {t: after_qkv(*t, timer) for t in TARGETS[:3]}
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "fused_attention_grid.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "axes_now": cp.FUSED_ATTENTION_AXES, "fine": FINE,
                       "seconds": {str(k): v for k, v in measured.items()}, "rows": rows,
                       "after_qkv": {str(k): v for k, v in context.items()}}, f, indent=1)
    print(f"{'axes':40s} {'H×L×D':>14s} {'grid µs':>9s} {'direct µs':>10s} {'grid/direct':>11s}")
    for r in rows:
        h, n, d = r["shape"]
        print(f"{r['axes']:40s} {f'{h}×{n}×{d}':>14s} {r['grid_us']:9.2f} {r['direct_us']:10.2f} "
              f"{r['grid_us'] / r['direct_us']:11.3f}")
    for (h, n, d), (alone, qkv, pair) in context.items():
        print(f"{h}×{n}×{d}: attention chained alone {alone * 1e6:.2f} µs; after a qkv ln_gemv "
              f"{(pair - qkv) * 1e6:.2f} µs (pair {pair * 1e6:.2f}, qkv alone {qkv * 1e6:.2f})")


if __name__ == "__main__":
    main()
