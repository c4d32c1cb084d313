"""GPT-shaped matmuls off the calibration's power-of-two grid, measured as the calibration measures
them, against the grid read plainly and as the calibration reads it (× its off-grid probes' mean
ratio, `Calibration.matmul_offgrid`): the independent check of that ratio.

    python benchmarks/gpu_matmul_offgrid.py      (after `gptperf calibrate` on this GPU)

Three sets of shapes a dtype. Two at M 1000, 3000, 8000 and 12288, none of them a calibration
probe: "probed layers", the (K, N) of the calibration's probes (52), and "other layers", layers of
widths the probes do not have (384's MLP, 640, 1024's qkv, 2048, 4096's square and MLP, the
vocabulary at other widths; 84). The third, "probes", is the calibration's 26 probes timed again,
so that a reading built from the probes can be judged on the other two sets offline. Prints
per dtype and set the median, mean, p90 and largest |measured/predicted − 1| and the mean
measured/predicted (the bias) both ways; with $OUT, every shape to $OUT/matmul_offgrid.json.
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
from gptperf.measure.calibration_plan import MATMUL_PROBES
from gptperf.measure.kernel_timer import KernelTimer, MatmulPrecision, OperandPool

ROWS = (1000, 3000, 8000, 12288)
LAYERS = ((768, 2304), (768, 3072), (3072, 768), (768, 768), (1024, 4096), (4096, 1024),
          (1280, 3840), (1600, 4800), (6400, 1600), (768, 50304), (1280, 5120), (384, 1152),
          (4096, 12288))  # (K, N)
OTHER_LAYERS = ((384, 1536), (1536, 384), (384, 384), (640, 1920), (640, 640), (640, 2560),
                (2560, 640), (640, 50304), (1024, 3072), (1024, 1024), (2048, 6144), (2048, 8192),
                (8192, 2048), (1280, 1280), (5120, 1280), (1600, 1600), (1600, 6400),
                (1600, 50304), (4096, 4096), (4096, 16384), (16384, 4096))  # (K, N)


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
            shapes = ([("probed layers", m, n, k) for m, (k, n) in product(ROWS, LAYERS)]
                      + [("other layers", m, n, k) for m, (k, n) in product(ROWS, OTHER_LAYERS)]
                      + [("probes", m, n, k) for m, n, k in MATMUL_PROBES["cuda"]])
            for group, m, n, k in shapes:
                sets = pool.copies([(m, k), (n, k)])
                seconds = timer(lambda j, sets=sets: F.linear(*sets[j % len(sets)]))
                rows.append({"set": group, "dtype": dtype, "m": m, "n": n, "k": k,
                             "measured_s": seconds, "grid_s": cal.matmul[dtype].at(m, n, k),
                             "read_s": cal.matmul_seconds(dtype, m, n, k)})
    print(f"calibration: {cal.label()}; off-grid ratios: "
          + (", ".join(f"{k} ×{v['ratio']:.3f}" for k, v in cal.matmul_offgrid.items()) or "none"))
    print(f"{'dtype':6} {'set':14} {'read':28} {'median':>8} {'mean':>8} {'p90':>8} {'max':>8} {'bias':>8}"
          "  (|measured/predicted − 1|; bias: mean measured/predicted)")
    for dtype, group in product(("fp32", "bf16"), ("probed layers", "other layers")):
        for key, label in (("grid_s", "the plain grid"), ("read_s", "as the calibration reads it")):
            ratios = [r["measured_s"] / r[key] for r in rows
                      if r["dtype"] == dtype and r["set"] == group]
            if ratios:
                errs = sorted(abs(x - 1) for x in ratios)
                p90 = errs[math.ceil(0.9 * len(errs)) - 1]  # nearest rank
                print(f"{dtype:6} {group:14} {label:28} {statistics.median(errs):8.1%} "
                      f"{statistics.fmean(errs):8.1%} {p90:8.1%} {errs[-1]:8.1%} "
                      f"{statistics.fmean(ratios):8.3f}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "matmul_offgrid.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
