"""Decoding on a GPU with and without the KV cache: tokens/s in bf16, token identity in fp32.

GPT-2 small's shape (preset gpt2), randomly initialised (no download), batch 1, greedy.
Its 2-D weights are scaled by 4 so the greedy continuation varies (at the 0.02 init it
repeats one token, which would make the identity check weak). For each prompt length it
times 200 new tokens with the cache and with full recomputation (median of repeats after a
warm-up; every token is read back to the host, as a streaming sampler does), then checks in
fp32 (TF32 off) that both ways give the same tokens and logits within 1e-3.

    python benchmarks/gpu_generate.py            # ~1 minute on an H100; JSON to $OUT if set
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from gptperf.atomic import write_text
from gptperf.envinfo import device_name, environment
from gptperf.generate import generate, stream_logits
from gptperf.model import GPT, preset
from gptperf.runtime import set_matmul_precision, synchronize


def build(name: str, dtype: torch.dtype, device: torch.device) -> GPT:
    torch.manual_seed(0)
    model = GPT(preset(name))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model.to(device=device, dtype=dtype).eval()


def timed(model: GPT, prompt: list[int], tokens: int, use_kv_cache: bool, repeats: int) -> tuple[float, list[int]]:
    """Median seconds for `tokens` greedy tokens (prefill included), and the tokens."""
    list(generate(model, prompt, 8, temperature=0, use_kv_cache=use_kv_cache))  # warm-up
    device = next(model.parameters()).device
    times, out = [], []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = list(generate(model, prompt, tokens, temperature=0, use_kv_cache=use_kv_cache))
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--prompts", type=int, nargs="+", default=[16, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only for a smoke test")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_generate: needs a CUDA GPU; none visible", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    vocab = preset(args.preset).vocab_size
    card = device_name(device)
    gen = torch.Generator().manual_seed(1)
    rows, ok = [], True

    set_matmul_precision("bf16")
    model = build(args.preset, torch.bfloat16, device)
    for length in args.prompts:
        prompt = torch.randint(0, min(vocab, 50257), (length,), generator=gen).tolist()
        t_kv, out_kv = timed(model, prompt, args.tokens, True, args.repeats)
        t_re, out_re = timed(model, prompt, args.tokens, False, args.repeats)
        rows.append(
            dict(prompt=length, tokens=args.tokens, dtype="bf16",
                 kv_tokens_per_s=args.tokens / t_kv, recompute_tokens_per_s=args.tokens / t_re,
                 kv_ms_per_token=1e3 * t_kv / args.tokens, recompute_ms_per_token=1e3 * t_re / args.tokens,
                 speedup=t_re / t_kv, bf16_same_tokens=sum(a == b for a, b in zip(out_kv, out_re, strict=True)))
        )
    del model

    set_matmul_precision("fp32")  # TF32 off: a strict identity check
    model = build(args.preset, torch.float32, device)
    checks = []
    for length in args.prompts:
        prompt = torch.randint(0, min(vocab, 50257), (length,), generator=torch.Generator().manual_seed(length)).tolist()
        kv = list(stream_logits(model, prompt, args.tokens, temperature=0, use_kv_cache=True))
        re = list(stream_logits(model, prompt, args.tokens, temperature=0, use_kv_cache=False))
        toks_kv = [int(t) for t, _ in kv]
        toks_re = [int(t) for t, _ in re]
        diff = max((a - b).abs().max().item() for (_, a), (_, b) in zip(kv, re, strict=True))
        same = toks_kv == toks_re and diff <= 1e-3
        ok &= same
        checks.append(dict(prompt=length, tokens=args.tokens, identical_tokens=toks_kv == toks_re,
                           max_abs_logit_diff=diff, distinct_tokens=len(set(toks_re)), passed=same))

    print(f"\nGreedy decoding, preset {args.preset} (random init), batch 1, measured on {card}")
    print(f"{'prompt':>6} {'new':>4} {'KV cache tok/s':>15} {'recompute tok/s':>16} {'speedup':>8} "
          f"{'ms/tok KV':>10} {'ms/tok re':>10}")
    for r in rows:
        print(f"{r['prompt']:>6} {r['tokens']:>4} {r['kv_tokens_per_s']:>15.1f} {r['recompute_tokens_per_s']:>16.1f} "
              f"{r['speedup']:>7.2f}x {r['kv_ms_per_token']:>10.2f} {r['recompute_ms_per_token']:>10.2f}")
    print("\nfp32 identity check (KV cache vs recompute):")
    for c in checks:
        print(f"  prompt {c['prompt']:>4}: identical tokens {c['identical_tokens']}, "
              f"max |logit diff| {c['max_abs_logit_diff']:.2e}, {c['distinct_tokens']} distinct tokens "
              f"-> {'PASS' if c['passed'] else 'FAIL'}")

    doc = dict(benchmark="gpu_generate", device=card, timings=rows, identity=checks, passed=ok,
               environment=environment(device))
    if os.environ.get("OUT"):
        write_text(Path(os.environ["OUT"]) / "gpu_generate.json", json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
