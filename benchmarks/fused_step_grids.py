"""The fused decode step's in-step curves read against each kernel's grid: for every point of a
stored calibration's `in_step:<component>:<dtype>` curves, the weight's bandwidth, the programs
its tile gives (`steps.decode_kernels.fused_tile`) and the waves they make on the card; then the
same grids for the presets and the 7B shape, with the bandwidth the curve charges them. Runs
anywhere (no device needed).

    python benchmarks/fused_step_grids.py CALIBRATION_JSON [--sms 132] [--dtype bf16]

Waves = programs ÷ (SMs × 64 warps ÷ the tile's warps): the programs a card holds at once when
warps, not registers, bound residency (64 warps an SM on sm90). Why it matters: BENCHMARKS.md,
"Why the 7B fused decode step is over-predicted".
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from gptperf import names
from gptperf.dtypes import dtype_bytes
from gptperf.model import preset
from gptperf.perfmodel.calibration import Calibration, fused_step_key
from gptperf.steps.decode_kernels import fused_tile
from gptperf.units import MIB

WARPS_PER_SM = 64  # sm80/sm90: 2048 threads an SM
# (rows, columns) of each layer weight as multiples of the width C, and whether a LayerNorm feeds it
LAYER_KERNELS = {names.ATTN_QKV: (3, 1, True), names.ATTN_PROJ: (1, 1, False),
                 names.MLP_FC: (4, 1, True), names.MLP_PROJ: (1, 4, False)}
# widths whose grids the curves are read at: the GPT-2 presets and the 7B shape (C = 4096)
SHAPES = {**{name: preset(name).n_embd for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")},
          "7B": 4096}


def grid(component: str, width: int, sms: int) -> tuple[int, float]:
    """(programs, waves) of `component`'s fused kernel at model width `width`."""
    rows_x, cols_x, ln = LAYER_KERNELS[component]
    n, k = rows_x * width, cols_x * width
    rows, _, warps = fused_tile(n, k, ln)
    programs = math.ceil(n / rows)
    return programs, programs / (sms * WARPS_PER_SM // warps)


def width_of(component: str, weight_bytes: float, e: int) -> int:
    rows_x, cols_x, _ = LAYER_KERNELS[component]
    return round(math.sqrt(weight_bytes / (e * rows_x * cols_x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration", type=Path)
    parser.add_argument("--sms", type=int, default=132, help="streaming multiprocessors (H200: 132)")
    parser.add_argument("--dtype", default="bf16")
    args = parser.parse_args()
    try:
        cal = Calibration.from_dict(json.loads(args.calibration.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        parser.error(f"{args.calibration}: not a readable calibration document ({err}); give the "
                     "calibration.json a `gptperf calibrate` wrote")
    e = dtype_bytes(args.dtype)
    for component in LAYER_KERNELS:
        curve = cal.gemv.get(fused_step_key(component, args.dtype))
        if curve is None:
            print(f"{component}: no in-step curve in {args.calibration}")
            continue
        print(f"{component} ({args.dtype})")
        print(f"  {'width':>11s} {'weight MiB':>10s} {'µs':>8s} {'TB/s':>6s} {'programs':>8s} {'waves':>6s}")
        for nbytes, seconds in zip(curve.x, curve.seconds, strict=True):
            c = width_of(component, nbytes, e)
            programs, waves = grid(component, c, args.sms)
            print(f"  {c:11d} {nbytes / MIB:10.1f} {seconds * 1e6:8.2f} {nbytes / seconds / 1e12:6.2f} "
                  f"{programs:8d} {waves:6.2f}")
        for name, c in SHAPES.items():
            rows_x, cols_x, _ = LAYER_KERNELS[component]
            nbytes = rows_x * cols_x * c * c * e
            programs, waves = grid(component, c, args.sms)
            charged = curve.at(nbytes)
            print(f"  {name:>11s} {nbytes / MIB:10.1f} {charged * 1e6:8.2f} {nbytes / charged / 1e12:6.2f} "
                  f"{programs:8d} {waves:6.2f}  (charged)")


if __name__ == "__main__":
    main()
