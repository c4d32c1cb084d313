"""A GPT-2 checkpoint's 50257-token LM head on one CUDA card: unpadded, padded, and at 50304 tokens.

    python benchmarks/gpu_padded_head.py

gpt2's eager bf16 train and forward steps (B=8, T=1024, autocast, fused AdamW), as `gptperf
bench` builds them (`gptperf.steps.build_step`), at three heads: 50257 tokens with the padding
turned off (`GPT.pad_head = False`: cuBLAS's kernels for rows that are not 16-byte aligned),
50257 as the model runs it (padded to 50304 rows, `gptperf.model.config.pads_lm_head`), and a
50304-token vocabulary (nothing to pad). The three steps of a kind are built side by side and
timed in turn, round after round (ROUNDS), each time over 20 steps after 5 warm-up ones (CUDA
events, median); a figure is the median of its rounds, so the card's drift falls on all three
alike (timed one after the other, the rows differed by up to 1.9 ms from it). Then the numerics:
an fp32 model's logits, loss and token-table gradient padded against unpadded (they should agree
to the last bit or nearly). Writes $OUT/padded_head.json when OUT is set; prints a table last.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable

import torch

from gptperf.measure.timer import time_fn
from gptperf.model import GPT, preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps import build_step

BATCH, SEQ = 8, 1024
HEADS = (("50257, unpadded", 50257, False), ("50257, padded", 50257, None), ("50304", 50304, None))


ROUNDS = 3


def _run(kind: str, vocab: int, pad_head: bool | None) -> Callable[[], object]:
    config = preset("gpt2", vocab_size=vocab)
    step = build_step(config, Workload(kind, BATCH, SEQ, "bf16"), ExecutionPlan.default(kind, "cuda"), "cuda")
    step.model.pad_head = pad_head
    return step.train.run if step.train is not None else step.step


def steps_ms(kind: str) -> dict[str, list[float]]:
    """{head: each round's median ms} for the three heads' `kind` steps, timed in turn."""
    runs = {label: _run(kind, vocab, pad) for label, vocab, pad in HEADS}
    rounds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(ROUNDS):
        for label, run in runs.items():
            rounds[label].append(time_fn(run, warmup=5, repeats=20, device=torch.device("cuda")).median * 1e3)
    del runs
    torch.cuda.empty_cache()
    return rounds


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
    rows = [(kind, head, rounds) for kind in ("train", "forward") for head, rounds in steps_ms(kind).items()]
    diffs = numerics()
    device = torch.cuda.get_device_name()
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "padded_head.json"), "w") as f:
            json.dump({"device": device, "batch": BATCH, "seq": SEQ,
                       "steps_ms": [{"kind": k, "head": h, "ms": statistics.median(r), "rounds_ms": r}
                                    for k, h, r in rows],
                       "fp32_max_abs_diff": diffs}, f, indent=1)
    print(f"fp32 padded vs unpadded, largest |difference|: logits {diffs['logits']:.3g}, "
          f"loss {diffs['loss']:.3g}, token-table gradient {diffs['wte_grad']:.3g}")
    print(f"gpt2 eager bf16 steps, B={BATCH}, T={SEQ}, on {device} (median of {ROUNDS} rounds, "
          "each the median of 20 steps, CUDA events)")
    print(f"{'step':8s} {'head':16s} {'ms':>8s}  rounds")
    for kind, head, rounds in rows:
        print(f"{kind:8s} {head:16s} {statistics.median(rounds):8.2f}  {' '.join(f'{r:.2f}' for r in rounds)}")


if __name__ == "__main__":
    main()
