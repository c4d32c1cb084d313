"""GPT-shaped matmuls off the calibration's power-of-two grid, measured as the calibration measures
them, against the grid read plainly and as the calibration reads it (× its off-grid probes' mean
ratio, `Calibration.matmul_offgrid`): the independent check of that ratio.

    python benchmarks/gpu_matmul_offgrid.py      (after `gptperf calibrate` on this GPU)

52 shapes a dtype: M in 1000, 3000, 8000, 12288 by the layers of widths 384 to 4096 and the
vocabulary (none of them a calibration probe). Prints per dtype the median, mean, p90 and largest
|measured/predicted − 1| and the mean measured/predicted (the bias) both ways; with $OUT, every
shape to $OUT/matmul_offgrid.json.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from itertools import product
from pathlib import Path

import torch
import torch.nn.functional as F

from gptperf.errors import UserError
from gptperf.measure.calibrate import calibration_for
from gptperf.measure.kernel_timer import KernelTimer, MatmulPrecision, OperandPool

ROWS = (1000, 3000, 8000, 12288)
LAYERS = ((768, 2304), (768, 3072), (3072, 768), (768, 768), (1024, 4096), (4096, 1024),
          (1280, 3840), (1600, 4800), (6400, 1600), (768, 50304), (1280, 5120), (384, 1152),
          (4096, 12288))  # (K, N)


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    try:
        cal = calibration_for(device, required=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    for dtype in ("fp32", "bf16"):
        if dtype not in cal.matmul:
            continue
        tdtype = torch.float32 if dtype == "fp32" else torch.bfloat16
        timer, pool = KernelTimer(device, quick=False), OperandPool(device, tdtype)
        with MatmulPrecision(dtype):
            for m, (k, n) in product(ROWS, LAYERS):
                sets = pool.copies([(m, k), (n, k)])
                seconds = timer(lambda j, sets=sets: F.linear(*sets[j % len(sets)]))
                rows.append({"dtype": dtype, "m": m, "n": n, "k": k, "measured_s": seconds,
                             "grid_s": cal.matmul[dtype].at(m, n, k),
                             "read_s": cal.matmul_seconds(dtype, m, n, k)})
    print(f"calibration: {cal.label()}; off-grid ratios: "
          + (", ".join(f"{k} ×{v['ratio']:.3f}" for k, v in cal.matmul_offgrid.items()) or "none"))
    print(f"{'dtype':6} {'read':28} {'median':>8} {'mean':>8} {'p90':>8} {'max':>8} {'bias':>8}"
          "  (|measured/predicted − 1|; bias: mean measured/predicted)")
    for dtype in ("fp32", "bf16"):
        for key, label in (("grid_s", "the plain grid"), ("read_s", "as the calibration reads it")):
            ratios = [r["measured_s"] / r[key] for r in rows if r["dtype"] == dtype]
            if ratios:
                errs = sorted(abs(x - 1) for x in ratios)
                p90 = errs[math.ceil(0.9 * len(errs)) - 1]  # nearest rank
                print(f"{dtype:6} {label:28} {statistics.median(errs):8.1%} "
                      f"{statistics.fmean(errs):8.1%} {p90:8.1%} {errs[-1]:8.1%} "
                      f"{statistics.fmean(ratios):8.3f}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "matmul_offgrid.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
