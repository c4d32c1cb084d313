"""The token table's backward: what a profiled train step attributes to `embed` bwd, and each
kernel the model charges there timed alone beside its charge.

    python benchmarks/gpu_embedding_backward.py [--device cuda|cpu] [--preset gpt2] [--n-layer N]
        [--n-head N] [--n-embd N] [--vocab-size N] [--batch 6] [--seq 640] [--dtype bf16]
        [--step K] [--calibration CAL.json]

The model charges the embedding's backward (`perfmodel.kernel_calls._model_bwd`) as the table
gradient's zero fill (an add of V·C·e bytes), `embedding_dense_backward` on the `embedding_bwd`
curve (which the calibration times into a 1024-row table), and the tied weight's two gradients
summed by autograd (an add of 3·V·C·e bytes), then the same for the position table. Prints:
0. what the profile attributes to `embed` bwd in each step, profiled as `gptperf validate` does;
1. the kernels (on a CPU, the operators' self time) of its active step K (default 1) from the LM head's
   last backward kernel to the optimizer's first, each with the operation the profile gave it and
   the operator that launched it;
2. each part timed alone, back to back (`KernelTimer`, as the calibration times), with the real
   table beside the calibration's 1024-row one, and each part's charge where a calibration is
   given (`--calibration`, else this device's cached one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.ops import aten

from gptperf import names
from gptperf.hostmem import keep_freed_memory
from gptperf.measure.calibrate import calibration_for
from gptperf.measure.calibration_plan import EMBED_BWD_VOCAB
from gptperf.measure.kernel_timer import KernelTimer, random_tensor
from gptperf.model.config import preset
from gptperf.perfmodel.calibration import Calibration, split_vector_key
from gptperf.perfmodel.expected import call_time
from gptperf.perfmodel.kernel_calls import step_ops
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.profiling.run import profile_workload
from gptperf.profiling.trace import attribute, load_trace
from gptperf.validate.run import PROFILE_SCHEDULE


def goes_to(w: Any, name: str, phase: str) -> bool:
    """Whether the attribution gave (a share of) work `w` to operation `name` in `phase`."""
    return (name, phase) in {(n, p) for n, p, _ in w.parts}


def profiled_tail(config: Any, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile"
        profile_workload(config, "train", args.batch, args.seq, args.dtype, args.device,
                         out_dir=out, overhead=False, plot=False, **PROFILE_SCHEDULE)
        doc = load_trace(out / "trace.json")
    events = doc["traceEvents"]
    attribution = attribute(doc)
    embed = [w for w in attribution.work if goes_to(w, names.EMBED, names.BACKWARD)]
    print(f"\n0. embed bwd in each of the {len(attribution.steps)} active steps of validate's schedule "
          f"{PROFILE_SCHEDULE}: " + ", ".join(
              f"{sum(w.dur_us for w in embed if w.step == k):.1f} µs ({sum(w.step == k for w in embed)} kernels)"
              for k in range(len(attribution.steps))))
    work = [w for w in attribution.work if w.step == args.step]
    head = [i for i, w in enumerate(work) if goes_to(w, names.LM_HEAD, names.BACKWARD)]
    opt = [i for i, w in enumerate(work) if any(p == names.OPTIMIZER_PHASE for _, p, _ in w.parts)]
    start = head[-1] if head else 0
    end = next((i for i in opt if i > start), len(work))
    print(f"\n1. active step {args.step}, from the LM head's last backward kernel to the optimizer "
          f"({'kernels' if torch.device(args.device).type == 'cuda' else 'operators, self time'})")
    print(f"{'µs':>8s}  {'attributed to':24s} {'launched by':34s} kernel")
    embed_us = 0.0
    for w in work[start:end + 1]:
        to = ", ".join(f"{n} {p}" for n, p, _ in w.parts) or "(none)"
        by = ("-" if attribution.unit == "operator" else "?" if w.launcher is None
              else str(events[w.launcher].get("name", "?")))
        print(f"{w.dur_us:8.1f}  {to[:24]:24s} {by[:34]:34s} {w.kernel[:70]}")
        if goes_to(w, names.EMBED, names.BACKWARD):
            embed_us += w.dur_us
    print(f"attributed to embed bwd in this window: {embed_us:.1f} µs")


def timed_parts(config: Any, args: argparse.Namespace, cal: Calibration | None) -> None:
    device = torch.device(args.device)
    plan = ExecutionPlan.default("train", device.type, dtype=args.dtype)
    workload = Workload("train", args.batch, args.seq, args.dtype)
    charged = {(c, ph): calls for c, ph, _, calls in step_ops(config, workload, plan)}
    calls = charged[(names.EMBED, names.BACKWARD)]
    store = split_vector_key(calls[0].key)[1]  # the table's dtype, as the model charges it
    td = {"fp32": torch.float32, "bf16": torch.bfloat16}[store]
    V, C, N = config.vocab_size, config.n_embd, args.batch * args.seq
    g = random_tensor((N, C), td, device)
    idx = torch.randint(0, V, (N,), device=device)
    small = idx % EMBED_BWD_VOCAB
    a, b = random_tensor((V, C), td, device), random_tensor((V, C), td, device)
    timer = KernelTimer(device, quick=False)
    parts = [  # (what, the model's call for it or None, the call timed)
        ("zero fill of the V×C gradient", calls[0], lambda j: torch.zeros((V, C), dtype=td, device=device)),
        (f"embedding_dense_backward, {EMBED_BWD_VOCAB}-row table (the curve's)", calls[1],
         lambda j: aten.embedding_dense_backward(g, small, EMBED_BWD_VOCAB, -1, False)),
        (f"embedding_dense_backward, the {V}-row table (fill included)", None,
         lambda j: aten.embedding_dense_backward(g, idx, V, -1, False)),
        ("the tied weight's two gradients added", calls[2], lambda j: a + b),
    ]
    print(f"\n2. each part alone, {store} table {V}×{C}, {N} tokens (back to back, median)")
    print(f"{'measured':>10s} {'charged':>10s}  part")
    for what, call, fn in parts:
        seconds = timer(fn, what, nbytes=V * C * td.itemsize)
        cost = f"{call_time(call, cal) * 1e6:8.1f}µs" if (cal is not None and call is not None) else "         -"
        print(f"{seconds * 1e6:8.1f}µs {cost}  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="gpt2")
    for field in ("n_layer", "n_head", "n_embd", "vocab_size"):
        parser.add_argument("--" + field.replace("_", "-"), type=int, dest=field, help="override the preset's")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--seq", type=int, default=640)
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--step", type=int, default=1, help="the active step listed in 1.")
    parser.add_argument("--calibration", type=Path, help="a calibration document (default: the cached one)")
    args = parser.parse_args()
    keep_freed_memory()  # as gptperf's commands do: a CPU's fills would page-fault otherwise
    config = preset(args.preset, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                    vocab_size=args.vocab_size)
    cal = (Calibration.from_dict(json.loads(args.calibration.read_text())) if args.calibration
           else calibration_for(args.device))
    print(f"{config.name} train B={args.batch} T={args.seq} {args.dtype} on {args.device}; "
          f"calibration: {'none' if cal is None else cal.device_name}")
    profiled_tail(config, args)
    timed_parts(config, args, cal)


if __name__ == "__main__":
    main()
