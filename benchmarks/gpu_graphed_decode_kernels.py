"""The kernels of a graphed decode step (the `fast` plan, compiled in a CUDA graph) as the
profiler sees them, beside the kernels the calibration times them by: aten's LayerNorm, GELU and
unmasked one-query sdpa (what the model charges) against inductor's LayerNorm and GELU and the
static cache's masked sdpa, each captured in a CUDA graph.

    python benchmarks/gpu_graphed_decode_kernels.py [--preset tiny] [--batches 8,64,512] [--seq 128]

For each batch: the step's time (events around graph replays, median), the sum of its kernels'
durations, and its kernels grouped by name (count a step, µs a step). Then, at the step's
LayerNorm and GELU sizes, the per-call time of each kernel back to back in a CUDA graph
(`KernelTimer`, operands cycled as the calibration cycles them): aten's, and torch.compile's of
the same function; and one query's sdpa at the step's (BH, L, D) and at gpt2's batch 8 and 1,
without a mask, with the static cache's mask, and that compiled. Writes
$OUT/graphed_decode_kernels.json (or ./, replaced whole) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_graph_step_timing import events_s  # benchmarks/, beside this script

from gptperf.atomic import write_text
from gptperf.measure.device_kernels import kernels_of
from gptperf.measure.kernel_timer import KernelTimer, OperandPool
from gptperf.memguard import release_memory
from gptperf.model.config import preset
from gptperf.perfmodel.workload import Workload
from gptperf.steps.build import build_step
from gptperf.validate.sweep import plan_for

STEPS_PROFILED = 5


def step_kernels(fn: Callable[[], object]) -> tuple[float, dict[str, list[float]]]:
    """Kernel seconds a step (sum of durations) and, by kernel name, [count, µs] a step."""
    def run() -> None:
        for _ in range(STEPS_PROFILED):
            fn()
    kernels = kernels_of(run)
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for k in kernels:
        g = groups[k.name[:90]]
        g[0] += 1 / STEPS_PROFILED
        g[1] += k.duration_us / STEPS_PROFILED
    return sum(k.duration_us for k in kernels) / STEPS_PROFILED * 1e-6, dict(groups)


def layer_kernels(rows: int, width: int, dev: torch.device) -> dict[str, float]:
    """µs per call, back to back in a CUDA graph, of aten's and inductor's LayerNorm and GELU on
    a rows × width bf16 activation."""
    timer = KernelTimer(dev, quick=False)
    pool = OperandPool(dev, torch.bfloat16)
    sets = pool.copies([(rows, width), (width,), (width,)])
    gelu_sets = pool.copies([(rows, 4 * width)])

    def ln(x, w, b):
        return F.layer_norm(x, (width,), w, b)

    def gelu(x):
        return F.gelu(x, approximate="tanh")

    out = {}
    for label, f in (("aten", ln), ("compiled", torch.compile(ln, dynamic=False))):
        out[f"layernorm {label}"] = timer(lambda j, f=f: f(*sets[j % len(sets)])) * 1e6
    for label, f in (("aten", gelu), ("compiled", torch.compile(gelu, dynamic=False))):
        out[f"gelu {label}"] = timer(lambda j, f=f: f(*gelu_sets[j % len(gelu_sets)])) * 1e6
    return out


def attention_kernels(bh: int, length: int, head: int, dev: torch.device) -> dict[str, float]:
    """µs per call, back to back in a CUDA graph, of one query's sdpa against `length` cached keys:
    without a mask (the calibration's one_query), with the static cache's boolean mask, and that
    compiled."""
    timer = KernelTimer(dev, quick=False)
    pool = OperandPool(dev, torch.bfloat16)
    q = torch.randn(1, bh, 1, head, device=dev, dtype=torch.bfloat16)
    sets = pool.copies([(1, bh, length, head), (1, bh, length, head)])
    mask = torch.ones(1, length, device=dev, dtype=torch.bool)

    def plain(k, v):
        return F.scaled_dot_product_attention(q, k, v)

    def masked(k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    out = {}
    for label, f in (("plain", plain), ("masked", masked),
                     ("masked compiled", torch.compile(masked, dynamic=False))):
        out[f"sdpa {label}"] = timer(lambda j, f=f: f(*sets[j % len(sets)])) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batches", default="8,64,512")
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    dev = torch.device("cuda")
    cfg = preset(args.preset)
    doc: dict = {"device": torch.cuda.get_device_name(), "preset": args.preset, "seq": args.seq,
                 "steps": [], "layer_kernels": []}
    for batch in map(int, args.batches.split(",")):
        plan = plan_for("decode", batch, "bf16", "cuda", "fast", cfg.attention)
        step = build_step(cfg, Workload("decode", batch, args.seq, "bf16"), plan, dev)
        fn = step.phases[0][1]
        for _ in range(20):
            fn()
        wall = events_s(fn, behind_sleep=False)  # as `bench` times a graph step
        busy, groups = step_kernels(fn)
        doc["steps"].append({"batch": batch, "plan": plan.label, "step_us": wall * 1e6,
                             "kernels_us": busy * 1e6, "groups": groups})
        print(f"\ndecode {args.preset} B={batch} L={args.seq} {plan.label}: step {wall * 1e6:.1f} µs, "
              f"kernels {busy * 1e6:.1f} µs, {sum(g[0] for g in groups.values()):.0f} kernels")
        for name, (count, us) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            print(f"  {count:5.1f}  {us:8.2f} µs  ({us / count:6.2f} each)  {name}")
        del step, fn
        release_memory("cuda", compiled=True)
        row = {"rows": batch, "width": cfg.n_embd, **layer_kernels(batch, cfg.n_embd, dev)}
        doc["layer_kernels"].append(row)
    print("\nrows width | " + " | ".join(k for k in doc["layer_kernels"][0] if " " in k) + "  (µs a call)")
    for row in doc["layer_kernels"]:
        print(f"{row['rows']:4d} {row['width']:5d} | "
              + " | ".join(f"{v:8.2f}" for k, v in row.items() if " " in k))
    gpt2 = preset("gpt2")
    shapes = [(b * cfg.n_head, args.seq, cfg.head_dim) for b in map(int, args.batches.split(","))]
    shapes += [(8 * gpt2.n_head, 1000, gpt2.head_dim), (1 * gpt2.n_head, 1024, gpt2.head_dim)]
    doc["attention"] = [{"bh": bh, "L": length, "D": head, **attention_kernels(bh, length, head, dev)}
                        for bh, length, head in shapes]
    print("\n  BH     L   D | " + " | ".join(k for k in doc["attention"][0] if " " in k) + "  (µs a call)")
    for row in doc["attention"]:
        print(f"{row['bh']:5d} {row['L']:5d} {row['D']:3d} | "
              + " | ".join(f"{v:8.2f}" for k, v in row.items() if " " in k))
    out = Path(os.environ.get("OUT", ".")) / "graphed_decode_kernels.json"
    write_text(out, json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
