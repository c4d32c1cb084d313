"""A GPT-2 checkpoint's 50257-token LM head on one CUDA card: unpadded, padded, and at 50304 tokens.

    python benchmarks/gpu_padded_head.py

gpt2's eager bf16 train and forward steps (B=8, T=1024, autocast, fused AdamW), as `gptperf
bench` builds them (`gptperf.steps.build_step`), at three heads: 50257 tokens with the padding
turned off (`GPT.pad_head = False`: cuBLAS's kernels for rows that are not 16-byte aligned),
50257 as the model runs it (padded to 50304 rows, `gptperf.model.config.pads_lm_head`), and a
50304-token vocabulary (nothing to pad). Each timed over 20 steps after 5 warm-up ones (CUDA
events, median). Then the numerics: an fp32 model's logits, loss and token-table gradient padded
against unpadded (they should agree to the last bit or nearly). Writes $OUT/padded_head.json when
OUT is set; prints a table last.
"""

from __future__ import annotations

import json
import os

import torch

from gptperf.measure.timer import time_fn
from gptperf.model import GPT, preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps import build_step

BATCH, SEQ = 8, 1024
HEADS = (("50257, unpadded", 50257, False), ("50257, padded", 50257, None), ("50304", 50304, None))


def step_ms(kind: str, vocab: int, pad_head: bool | None) -> float:
    config = preset("gpt2", vocab_size=vocab)
    plan = ExecutionPlan.default(kind, "cuda")
    step = build_step(config, Workload(kind, BATCH, SEQ, "bf16"), plan, "cuda")
    step.model.pad_head = pad_head
    run = step.train.run if step.train is not None else step.step
    timing = time_fn(run, warmup=5, repeats=20, device=torch.device("cuda"))
    del step
    torch.cuda.empty_cache()
    return timing.median * 1e3


def numerics() -> dict[str, float]:
    """fp32, 2 layers: the padded head against the plain one, largest absolute differences."""
    torch.manual_seed(0)
    config = preset("gpt2", n_layer=2, vocab_size=50257)
    plain, padded = GPT(config).cuda(), GPT(config).cuda()
    padded.load_state_dict(plain.state_dict())
    plain.pad_head, padded.pad_head = False, True
    idx = torch.randint(0, 50257, (2, 256), device="cuda")
    out = {}
    for model in (plain, padded):
        logits, loss = model(idx, idx.roll(-1, dims=1))
        loss.backward()
        out[model is padded] = (logits.detach(), loss.detach(), model.transformer.wte.weight.grad)
    (lq, sq, gq), (lp, sp, gp) = out[False], out[True]
    return {"logits": (lp - lq).abs().max().item(), "loss": (sp - sq).abs().item(),
            "wte_grad": (gp - gq).abs().max().item()}


def main() -> None:
    rows = [(kind, label, step_ms(kind, vocab, pad)) for kind in ("train", "forward")
            for label, vocab, pad in HEADS]
    diffs = numerics()
    device = torch.cuda.get_device_name()
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "padded_head.json"), "w") as f:
            json.dump({"device": device, "batch": BATCH, "seq": SEQ,
                       "steps_ms": [{"kind": k, "head": h, "ms": ms} for k, h, ms in rows],
                       "fp32_max_abs_diff": diffs}, f, indent=1)
    print(f"fp32 padded vs unpadded, largest |difference|: logits {diffs['logits']:.3g}, "
          f"loss {diffs['loss']:.3g}, token-table gradient {diffs['wte_grad']:.3g}")
    print(f"gpt2 eager bf16 steps, B={BATCH}, T={SEQ}, on {device} (median of 20, CUDA events)")
    print(f"{'step':8s} {'head':16s} {'ms':>8s}")
    for kind, head, ms in rows:
        print(f"{kind:8s} {head:16s} {ms:8.2f}")


if __name__ == "__main__":
    main()
