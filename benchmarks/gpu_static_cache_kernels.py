"""Which kernels a compiled static-cache decode step runs for its attention, LayerNorms and cache
writes, and how to time them alone: candidate calibration calls beside the kernels the step ran.

    python benchmarks/gpu_static_cache_kernels.py [--attention-only]

For one query against L cached keys (bf16): sdpa without a mask (the calibration's one_query),
with the cache's boolean mask (eager's choice of backend), with an additive bias instead (as
inductor hands the mask to cuDNN), with the boolean mask forced onto cuDNN, and the cache's mask
and write compiled as the step compiles them; each timed back to back in a CUDA
graph (`KernelTimer`) and listed with its kernels. Then inductor's residual-add + LayerNorm and
the cache write (index_put) compiled alone, against aten's. Then the kernels of gpt2's compiled
batch-8 decode step (L=1000). Writes $OUT/static_cache_kernels.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_graphed_decode_kernels import step_kernels  # benchmarks/, beside this script
from torch.nn.attention import SDPBackend, sdpa_kernel

from gptperf.atomic import write_text
from gptperf.measure.device_kernels import kernels_of
from gptperf.measure.kernel_timer import Call, KernelTimer, OperandPool
from gptperf.model.config import preset
from gptperf.perfmodel.workload import Workload
from gptperf.steps.build import build_step
from gptperf.validate.sweep import plan_for

SHAPES = [(32, 128, 32), (256, 128, 32), (2048, 128, 32), (96, 1000, 64), (12, 1024, 64), (384, 512, 64),
          (256, 512, 64)]  # the last: gpt2-medium's batch 16
ROWS = [(8, 128), (64, 128), (512, 128), (8, 768), (64, 768)]


def names_of(call: Call) -> str:
    """The names of the kernels one call runs, each once, sorted."""
    ks = kernels_of(lambda: call(0))
    return " + ".join(sorted({k.name[:48] for k in ks}))


def attention_rows(dev: torch.device, timer: KernelTimer) -> list[dict]:
    """`attention_row` at each of SHAPES, one operand pool for all."""
    pool = OperandPool(dev, torch.bfloat16)
    rows = [attention_row(bh, length, head, dev, timer, pool) for bh, length, head in SHAPES]
    return rows


def attention_row(bh: int, length: int, head: int, dev: torch.device, timer: KernelTimer,
                  pool: OperandPool) -> dict:
    """µs a call of each way of running one query against `length` cached keys, and its kernels."""
    q = torch.randn(1, bh, 1, head, device=dev, dtype=torch.bfloat16)
    sets = pool.copies([(1, bh, length, head), (1, bh, length, head)])
    slots = torch.arange(length, device=dev)
    pos = torch.tensor(length - 1, device=dev)

    def plain(j):
        k, v = sets[j % len(sets)]
        return F.scaled_dot_product_attention(q, k, v)

    def masked(j):
        k, v = sets[j % len(sets)]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=slots[None, :] <= pos)

    bias = torch.zeros(1, 1, 1, length, device=dev, dtype=torch.bfloat16)  # every position seen

    def additive(j):  # the mask as the additive bias inductor hands cuDNN
        k, v = sets[j % len(sets)]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    def cudnn(j):
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return masked(j)

    def step_like(k, v, x):  # the write and the mask as the step has them, then sdpa
        p = pos + torch.arange(1, device=dev)
        k[:, :, p] = x
        return F.scaled_dot_product_attention(q, k, v, attn_mask=slots[None, :] <= p[:, None])

    compiled = torch.compile(step_like, dynamic=False)
    xs = torch.randn(1, bh, 1, head, device=dev, dtype=torch.bfloat16)
    owned = [[t.clone() for t in kv] for kv in sets[:4]]  # written in place: tensors of their own

    def comp(j):
        k, v = owned[j % len(owned)]
        return compiled(k, v, xs)

    row = {"bh": bh, "L": length, "D": head}
    for label, call in (("plain", plain), ("masked", masked), ("bias", additive), ("cudnn", cudnn),
                        ("compiled", comp)):
        try:
            row[label] = timer(call) * 1e6
            row[label + " kernels"] = names_of(call)
        except RuntimeError as err:
            row[label] = float("nan")
            row[label + " kernels"] = str(err).splitlines()[0][:80]
    print(row, flush=True)
    return row


def vector_rows(dev: torch.device, timer: KernelTimer) -> list[dict]:
    """`vector_row` at each of ROWS."""
    pool = OperandPool(dev, torch.bfloat16)
    return [vector_row(n, width, dev, timer, pool) for n, width in ROWS]


def vector_row(n: int, width: int, dev: torch.device, timer: KernelTimer, pool: OperandPool) -> dict:
    """µs a call of the residual add + LayerNorm and of the cache write, aten's and compiled."""
    sets = pool.copies([(n, width), (n, width), (width,), (width,)])

    def add_ln(x, r, w, b):
        h = x + r
        return h, F.layer_norm(h, (width,), w, b)

    compiled = torch.compile(add_ln, dynamic=False)
    cache = torch.zeros(n, 1, 256, width, device=dev, dtype=torch.bfloat16)
    new = torch.randn(n, 1, 1, width, device=dev, dtype=torch.bfloat16)
    pos = torch.tensor(5, device=dev)

    def write(c, x):
        c[:, :, pos + torch.arange(1, device=dev)] = x
        return c

    cwrite = torch.compile(write, dynamic=False)

    def aten_copy(j):
        return cache[:, :, 5:6].copy_(new)

    row = {"rows": n, "width": width,
           "add+ln aten": timer(lambda j: add_ln(*sets[j % len(sets)])) * 1e6,
           "add+ln compiled": timer(lambda j: compiled(*sets[j % len(sets)])) * 1e6,
           "write aten copy_": timer(aten_copy) * 1e6,
           "write compiled": timer(lambda j: cwrite(cache, new)) * 1e6}
    row["compiled kernels"] = (names_of(lambda j: compiled(*sets[0])) + " | "
                               + names_of(lambda j: cwrite(cache, new)))
    print(row, flush=True)
    return row


def step_rows(dev: torch.device) -> dict:
    """The kernels of gpt2's graphed batch-8 decode at L=1000, by name: [count, µs] a step."""
    cfg = preset("gpt2")
    plan = plan_for("decode", 8, "bf16", "cuda", "fast", cfg.attention)
    step = build_step(cfg, Workload("decode", 8, 1000, "bf16"), plan, dev)
    fn = step.phases[0][1]
    for _ in range(10):
        fn()
    _, groups = step_kernels(fn)
    print("\ngpt2 decode B=8 L=1000: kernels", round(sum(g[1] for g in groups.values()), 1), "µs")
    for name, (count, us) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"  {count:5.1f}  {us:8.2f} µs  ({us / count:6.2f} each)  {name}")
    return dict(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention-only", action="store_true", help="the attention rows alone")
    args = parser.parse_args()
    dev = torch.device("cuda")
    timer = KernelTimer(dev, quick=False)
    doc = {"device": torch.cuda.get_device_name(), "attention": attention_rows(dev, timer)}
    if not args.attention_only:
        doc |= {"vector": vector_rows(dev, timer), "gpt2_decode_b8": step_rows(dev)}
    print("\n  BH     L   D |  plain  masked    bias   cudnn compiled (µs a call)")
    for r in doc["attention"]:
        print(f"{r['bh']:5d} {r['L']:5d} {r['D']:3d} | {r['plain']:7.2f} {r['masked']:7.2f} "
              f"{r['bias']:7.2f} {r['cudnn']:7.2f} {r['compiled']:7.2f}  {r['bias kernels'][:60]}")
    print("\nrows width | add+ln aten  compiled | write aten  compiled (µs a call)")
    for r in doc.get("vector", []):
        print(f"{r['rows']:4d} {r['width']:5d} | {r['add+ln aten']:8.2f} {r['add+ln compiled']:8.2f} | "
              f"{r['write aten copy_']:8.2f} {r['write compiled']:8.2f}")
    write_text(Path(os.environ.get("OUT", ".")) / "static_cache_kernels.json", json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
