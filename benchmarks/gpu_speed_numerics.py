"""The fast paths compute what the slow ones do (one CUDA card; `--dry-run`: tiny shapes on CPU).

    python benchmarks/gpu_speed_numerics.py

1. Training: the same gpt2-shaped model (12 layers, C = 768; byte vocabulary, seed 0) trained
   200 steps on the same batches of the embedded corpus (B = 8, T = 256, lr 6e-4, clip 1.0) by
   the fast step `gptperf train` runs on a GPU (bf16 weights with fp32 master copies under bf16
   autocast, sdpa, compiled, fused AdamW with the in-kernel clip) and by the reference step (fp32, `math` attention, eager, for-each AdamW,
   clip_grad_norm_, TF32 off). Tolerance, bf16 noise: the mean loss over the last 20 steps
   agrees within 2% and no step of the last 100 differs by more than 0.15 nats.
2. Decoding: gpt2's shape with random weights (2-D weights ×4 so the greedy continuation
   varies), fp32, TF32 off: the fast decoder (the fused kernels, a CUDA graph) against the eager
   model with its growing KV cache (`gptperf.generate.generate`), 64 greedy tokens after a
   16-token prompt: identical.

Writes $OUT/gpu_speed_numerics.json when OUT is set; prints the verdicts last.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from gptperf.data.corpus import load_corpus
from gptperf.generate import generate
from gptperf.model import GPT, preset
from gptperf.plan import ExecutionPlan
from gptperf.runtime import set_matmul_precision
from gptperf.steps.fast_decode import FastDecoder
from gptperf.steps.train import TrainSettings, TrainStep

DRY = "--dry-run" in sys.argv
DEV = torch.device("cpu" if DRY else "cuda")
STEPS, B, T = (6, 2, 32) if DRY else (200, 8, 256)


def train_curve(fast: bool) -> list[float]:
    corpus = load_corpus()
    cfg = preset("gpt2", vocab_size=corpus.vocab_size, block_size=T,
                 attention="sdpa" if fast else "math")
    if DRY:
        cfg = cfg.replace(n_layer=2, n_embd=64, n_head=2)
    torch.manual_seed(0)
    model = GPT(cfg).to(DEV)
    dtype = "bf16" if fast else "fp32"
    set_matmul_precision(dtype)  # fp32: TF32 off
    plan = (ExecutionPlan.default("train", DEV.type, compile=not DRY, attention="sdpa", dtype=dtype) if fast
            else ExecutionPlan.eager("math"))
    gen = torch.Generator().manual_seed(1)
    step = TrainStep(model, plan, DEV, dtype, lambda: corpus.get_batch("train", B, T, gen, DEV),
                     TrainSettings(lr=6e-4, grad_clip=1.0))
    return [step.run() for _ in range(STEPS)]


def decode_tokens() -> dict[str, Any]:
    cfg = preset("gpt2") if not DRY else preset("gpt2", n_layer=2, n_embd=64, n_head=2)
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model = model.to(DEV).eval()
    set_matmul_precision("fp32")
    prompt = torch.randint(0, cfg.vocab_size, (16,), generator=torch.Generator().manual_seed(2)).tolist()
    eager = list(generate(model, prompt, 64, temperature=0.0))
    dec = FastDecoder(model, 1, 128, fused=None if not DRY else True)
    fast = dec.generate(torch.tensor([prompt], device=DEV), 64)[0].tolist()
    same = next((i for i, (a, b) in enumerate(zip(eager, fast, strict=True)) if a != b), len(eager))
    return {"plan": dec.plan.label, "eager": eager, "fast": fast, "identical_prefix": same,
            "distinct_tokens": len(set(eager))}


def main() -> None:
    fast, ref = train_curve(True), train_curve(False)
    last_fast, last_ref = statistics.fmean(fast[-20:]), statistics.fmean(ref[-20:])
    worst = max(abs(a - b) for a, b in zip(fast[-100:], ref[-100:], strict=True))
    rel = abs(last_fast - last_ref) / last_ref
    train_ok = rel <= 0.02 and worst <= 0.15
    dec = decode_tokens()
    decode_ok = dec["identical_prefix"] == len(dec["eager"])
    res = {"device": str(DEV) if DRY else torch.cuda.get_device_name(), "torch": torch.__version__,
           "train": {"fast": fast, "reference": ref, "last20_fast": last_fast, "last20_reference": last_ref,
                     "relative_difference": rel, "worst_step_difference_last100": worst, "pass": train_ok},
           "decode": {**dec, "pass": decode_ok}}
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_speed_numerics.json").write_text(json.dumps(res, indent=1))
    print(f"train {STEPS} steps: loss first {fast[0]:.4f} / {ref[0]:.4f}, last-20 mean fast {last_fast:.4f} "
          f"vs reference {last_ref:.4f} ({rel:.2%}; worst step of the last 100 differs by {worst:.4f}) "
          f"-> {'PASS' if train_ok else 'FAIL'} (tolerance 2% and 0.15 nats)")
    print(f"decode ({dec['plan']}): {dec['identical_prefix']}/{len(dec['eager'])} greedy tokens identical to "
          f"eager fp32, {dec['distinct_tokens']} distinct -> {'PASS' if decode_ok else 'FAIL'}")


if __name__ == "__main__":
    main()
