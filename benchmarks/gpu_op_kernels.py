"""One layer's kernels as profiled beside the kernel calls the calibrated model charges, op by op.

    python benchmarks/gpu_op_kernels.py [--preset gpt2] [--batch 6] [--seq 640] [--dtype bf16]
                                        [--layer 1] [--device cuda]

Runs `gptperf profile` (eager, as a user would) into a temporary folder, attributes its trace
and, for each operation of block `--layer` in each phase, lists the kernels measured there (the
mean per active step, µs) and the model's kernel calls with their calibrated times (µs, from this
device's cached calibration). Where an operation's measured and expected sums differ, the two
lists say which kernel the model charges wrongly. Writes $OUT/op_kernels.json (or
./op_kernels.json, replaced whole) and prints the table. A kernel is named with the operator that
launched it and that operator's input sizes, and counted per step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from gptperf.atomic import write_text
from gptperf.envinfo import device_name
from gptperf.errors import UserError
from gptperf.model.config import preset
from gptperf.perfmodel.calibration import Calibration, load_calibration
from gptperf.perfmodel.expected import cache_share, call_time
from gptperf.perfmodel.kernel_calls import KernelCall, step_ops
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.profiling.trace import attribute_file


def measured_kernels(trace: Path, layer: int) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(op, phase) -> kernel -> [mean µs per active step, calls per step], for block `layer`'s
    operations; a kernel is named with the CPU operator that launched it and that operator's
    input sizes (a cast of a weight and of an activation run the same kernel)."""
    doc, att = attribute_file(trace)
    events = doc["traceEvents"]
    steps = max(len(att.steps), 1)
    prefix = f"h.{layer}."
    out: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for w in att.work:
        # a kernel's launching operator; on a CPU the operator is the work itself
        launcher = events[w.launcher if w.launcher is not None else w.index]
        dims = (launcher.get("args") or {}).get("Input Dims", "")
        via = f" <- {launcher.get('name')}" if w.launcher is not None else ""
        name = f"{w.kernel[:60]}{via} {dims}"
        for op, phase, weight in w.parts:
            if op.startswith(prefix):
                entry = out[(op[len(prefix):], phase)][name]
                entry[0] += w.dur_us * weight / steps
                entry[1] += weight / steps
    return out


def expected_kernels(args: argparse.Namespace) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """(op, phase) -> [(kernel call, calibrated µs of its `count` kernels)] for block `layer`."""
    import torch

    device = torch.device(args.device)
    cal = load_calibration(device_name(device), required=True)
    config = preset(args.preset, attention="sdpa")
    workload = Workload("train", args.batch, args.seq, args.dtype)
    plan = ExecutionPlan.eager("sdpa")
    warm = cache_share(config, workload, plan, cal)  # as `expected` reads a CPU's few-row matmuls
    out: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for comp, phase, layer, calls in step_ops(config, workload, plan, device.type):
        if layer == args.layer:
            out[(comp, phase)] = [(f"{c.family}:{c.key} {tuple(round(p) for p in c.point)} ×{c.count}",
                                   _micros(c, cal, warm)) for c in calls]
    return out


def _micros(call: KernelCall, cal: Calibration, warm: float) -> float:
    """The call's calibrated µs, NaN where the calibration has no curve for it (a CPU's is fp32)."""
    try:
        return call_time(call, cal, warm) * 1e6
    except UserError:
        return math.nan


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpt2")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--seq", type=int, default=640)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--layer", type=int, default=1)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "gptperf", "profile", "--preset", args.preset, "--workload", "train",
               "--batch", str(args.batch), "--seq", str(args.seq), "--dtype", args.dtype,
               "--attention", "sdpa", "--device", args.device, "--out", tmp, "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return done.returncode
        measured = measured_kernels(Path(tmp) / "trace.json", args.layer)
    expected = expected_kernels(args)
    rows = []
    for key in sorted(set(measured) | set(expected)):
        m, e = measured.get(key, {}), expected.get(key, [])
        rows.append({"op": key[0], "phase": key[1], "measured_us": sum(us for us, _ in m.values()),
                     "expected_us": sum(t for _, t in e),
                     "measured": sorted(m.items(), key=lambda kv: -kv[1][0]), "expected": e})
    write_text(Path(os.environ.get("OUT", ".")) / "op_kernels.json",
               json.dumps({"args": vars(args), "rows": rows}, indent=1))
    for r in rows:
        print(f"\n{r['op']} {r['phase']}: measured {r['measured_us']:.1f} µs, expected {r['expected_us']:.1f} µs")
        for name, (us, calls) in r["measured"]:
            print(f"   m {us:8.2f} ×{calls:g}  {name}")
        for name, us in r["expected"]:
            print(f"   e {us:8.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
