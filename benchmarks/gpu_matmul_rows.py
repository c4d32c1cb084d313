"""A matmul's time along M at fixed GPT widths, and how well the calibration's row axis reads it.

    python benchmarks/gpu_matmul_rows.py [--out rows.json] [--from rows.json]

On the GPU: y = F.linear(x, W[, b]) timed as the calibration times its grid (`KernelTimer`: back to
back in a CUDA graph, operands cycled over 256 MiB) for M from 256 to 16384 in steps of 256 and at
GPT token counts in between, at 12 fp32 and 6 bf16 (N, K) layer widths, with and without a bias.
Then, for each row axis — the powers of four the calibration used (1024, 4096, 16384) and the
calibration's own (`calibration_plan.MATMUL_M`) — every GPT token count between its points is
read by log-log interpolation along M from the axis's measured rows (N and K exact: this isolates
the row axis) and compared with its measurement. Prints one table; `--from` re-reads a saved run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptperf.measure.calibration_plan import MATMUL_M  # noqa: E402

WIDTHS = {  # (N, K): gpt2 (C 768), char-6L (C 384) and a few powers of two
    "fp32": [(1152, 384), (384, 384), (1536, 384), (384, 1536), (2304, 768), (768, 768),
             (3072, 768), (768, 3072), (512, 512), (1024, 1024), (384, 1152), (1536, 768)],
    "bf16": [(2304, 768), (768, 768), (3072, 768), (768, 3072), (4800, 1600), (1600, 6400)],
}
TOKENS = (1200, 1280, 2000, 3000, 3584, 3840, 5120, 6000, 7680, 8000, 9216, 10000, 12000)
ROWS = tuple(sorted(set(range(256, 16384 + 1, 256)) | set(TOKENS)))
AXES = {"powers of four": (1024, 4096, 16384),
        "calibration": tuple(m for m in MATMUL_M["cuda"] if 1024 <= m <= 16384)}


def measure() -> list[dict]:
    import torch
    import torch.nn.functional as F

    from gptperf.measure.kernel_timer import KernelTimer, MatmulPrecision, OperandPool

    device = torch.device("cuda")
    timer = KernelTimer(device, False)
    rows = []
    for dtype, widths in WIDTHS.items():
        pool = OperandPool(device, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
        with MatmulPrecision(dtype):
            for n, k in widths:
                for m in ROWS:
                    sets = pool.copies([(m, k), (n, k), (n,)])
                    for bias in (False, True):
                        def call(j: int, sets: list = sets, bias: bool = bias) -> torch.Tensor:
                            x, w, b = sets[j % len(sets)]
                            return F.linear(x, w, b if bias else None)

                        rows.append({"dtype": dtype, "m": m, "n": n, "k": k, "bias": bias,
                                     "s": timer(call)})
    return rows


def _read(ms: tuple[int, ...], ts: list[float], m: int) -> float:
    """Log-log interpolation along M between measured rows."""
    i = max(j for j in range(len(ms) - 1) if ms[j] <= m)
    f = (math.log(m) - math.log(ms[i])) / (math.log(ms[i + 1]) - math.log(ms[i]))
    return math.exp((1 - f) * math.log(ts[i]) + f * math.log(ts[i + 1]))


def errors(rows: list[dict]) -> list[tuple[str, bool, str, int, float, float]]:
    """(dtype, bias, axis, shapes read, median |m/p − 1|, max) per dtype, bias and row axis."""
    at = {(r["dtype"], r["n"], r["k"], r["bias"], r["m"]): r["s"] for r in rows}
    out = []
    for dtype, widths in WIDTHS.items():
        for bias in (False, True):
            for name, axis in AXES.items():
                errs = []
                for n, k in widths:
                    ts = [at[(dtype, n, k, bias, m)] for m in axis]
                    errs += [abs(at[(dtype, n, k, bias, m)] / _read(axis, ts, m) - 1)
                             for m in TOKENS if m not in axis]
                out.append((dtype, bias, name, len(errs), statistics.median(errs), max(errs)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the measured rows here (JSON)")
    ap.add_argument("--from", dest="source", type=Path, help="read rows saved by --out instead")
    args = ap.parse_args()
    if args.source is not None and not args.source.is_file():
        print(f"error: --from {args.source}: no such file (a JSON list written by --out)", file=sys.stderr)
        sys.exit(2)
    rows = json.loads(args.source.read_text()) if args.source else measure()
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        tmp.replace(args.out)
    print(f"{'dtype':5} {'bias':4} {'row axis':16} {'shapes':>6} {'median':>7} {'max':>7}")
    for dtype, bias, name, count, median, worst in errors(rows):
        print(f"{dtype:5} {'yes' if bias else 'no':4} {name:16} {count:6d} {median:7.1%} {worst:7.1%}")


if __name__ == "__main__":
    main()
