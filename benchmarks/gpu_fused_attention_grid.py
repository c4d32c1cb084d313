"""The fused decode attention kernel on a fine grid, to choose the calibration's axes (one CUDA card).

    python benchmarks/gpu_fused_attention_grid.py

Times `steps.decode_kernels.decode_attention` as the calibration does (`calibrate_kernels.
_measure_fused_attention`: batch 1, the cache's last position, each call after the one before,
distinct caches cycled) over heads 8..128, cache lengths 128..8192 and D 64, 128 in bf16, then
reads the shapes of gpt2's and the 7B shape's decode steps (12 heads at 1024, 32 at 1000) from
sub-grids of it — the candidate axes — against their direct measurement. Writes
$OUT/fused_attention_grid.json when OUT is set; prints a table last.
"""

from __future__ import annotations

import json
import os
from itertools import product

import torch

from gptperf.measure import calibrate_kernels as ck
from gptperf.measure import calibration_plan as cp
from gptperf.measure.kernel_timer import KernelTimer
from gptperf.perfmodel.calibration import Grid

FINE = ((8, 12, 16, 20, 25, 32, 64, 128), (128, 256, 512, 1000, 1024, 2048, 8192), (64, 128))
CANDIDATES = {
    "calibration now": cp.FUSED_ATTENTION_AXES,
    "heads 8,16,32,128": ((8, 16, 32, 128), (128, 512, 2048, 8192), (64, 128)),
    "heads 8,16,32,128; L +1024": ((8, 16, 32, 128), (128, 512, 1024, 2048, 8192), (64, 128)),
    "heads 8,12,16,25,32,128; L +256,1024": ((8, 12, 16, 25, 32, 128), (128, 256, 512, 1024, 2048, 8192), (64, 128)),
}
TARGETS = ((12, 1024, 64), (32, 1000, 128), (16, 1024, 64), (25, 512, 64), (20, 1000, 64))


def main() -> None:
    device = torch.device("cuda")
    cp_axes = cp.FUSED_ATTENTION_AXES
    ck.fused_attention_axes = lambda quick: FINE  # the calibration's measurement, on the fine grid
    grid = ck._measure_fused_attention(device, "bf16", False, None, KernelTimer(device, False))
    ck.fused_attention_axes = cp.fused_attention_axes
    measured = dict(zip(product(*FINE), grid.seconds, strict=True))
    rows = []
    for name, axes in CANDIDATES.items():
        sub = Grid(("H", "L", "D"), axes, tuple(measured[c] for c in product(*axes)), grid.growth)
        for t in TARGETS:
            rows.append({"axes": name, "shape": t, "grid_us": sub.at(*t) * 1e6, "direct_us": measured[t] * 1e6})
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "fused_attention_grid.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "axes_now": cp_axes, "fine": FINE,
                       "seconds": {str(k): v for k, v in measured.items()}, "rows": rows}, f, indent=1)
    print(f"{'axes':40s} {'H×L×D':>14s} {'grid µs':>9s} {'direct µs':>10s} {'grid/direct':>11s}")
    for r in rows:
        h, n, d = r["shape"]
        print(f"{r['axes']:40s} {f'{h}×{n}×{d}':>14s} {r['grid_us']:9.2f} {r['direct_us']:10.2f} "
              f"{r['grid_us'] / r['direct_us']:11.3f}")


if __name__ == "__main__":
    main()
