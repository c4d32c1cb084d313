"""Tiles and chunks of the fused decode kernels, measured on one CUDA card (gptperf.steps.decode_kernels).

    python benchmarks/gpu_decode_tune.py                  # parts 1-4
    python benchmarks/gpu_decode_tune.py steps argmax     # some: steps, attention, gemv, argmax;
    # steps_pdl: the steps with PDL on only; steps_argmax: the steps with the argmax kernel at
    # one program a row block and at ARGMAX_PROGRAMS programs

1. The weight shapes of gpt2 and of the 7B shape that follow a LayerNorm, as a plain gemv and
   with the LayerNorm inside, over candidate tiles (rows per program, columns per step, warps):
   time per call inside a CUDA graph of 20 calls cycling through weight copies worth >= 512 MiB
   (HBM, not L2), median of 10 replays.
2. decode_attention at gpt2 (12 heads, D 64) context 1024 and the 7B shape (32 heads, D 128)
   contexts 128 and 1024, over chunk sizes.
3. The whole fused step (FastDecoder, batch 1) with programmatic dependent launch on and off.
4. The LM head's argmax kernel (gpt2's and the 7B shape's vocabulary-wide weights) over row
   blocks a program, beside ln_gemv writing the same logits.
Prints tables; writes $OUT/decode_tune.json when OUT is set.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

import torch

from gptperf.measure.timer import time_fn
from gptperf.model import GPTConfig, preset
from gptperf.steps import decode_kernels as dk
from gptperf.steps.fast_decode import FastDecoder, build_model
from gptperf.steps.gemv import gemv_config

DEV = torch.device("cuda")
CFG_7B = GPTConfig(n_layer=32, n_head=32, n_embd=4096, vocab_size=50304, block_size=2048, name="7B-shaped")
TILES = [(1, 1024, 4), (2, 1024, 4), (4, 512, 4), (4, 1024, 8), (8, 256, 4), (8, 512, 8),
         (2, 2048, 8), (16, 256, 8)]


def graph_time(calls: list[Any], replays: int = 10) -> float:
    """Seconds per call of `calls` captured as one CUDA graph, median over replays."""
    for c in calls[:3]:
        c()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    return time_fn(g.replay, warmup=1, repeats=replays, device=DEV).median / len(calls)


def gemv_sweep(n: int, k: int) -> dict[str, Any]:
    copies = max(1, min(64, (512 * 2**20) // (2 * n * k)))
    ws = [torch.randn(n, k, device=DEV, dtype=torch.bfloat16) for _ in range(copies)]
    b = torch.randn(n, device=DEV, dtype=torch.bfloat16)
    x = torch.randn(1, 1, k, device=DEV, dtype=torch.bfloat16)
    g, beta = torch.randn(k, device=DEV, dtype=torch.bfloat16), torch.randn(k, device=DEV, dtype=torch.bfloat16)
    folded = dk.fold_layer_norm(ws[0], b, g, beta)  # constants of one copy serve all (timing only)
    rows = []
    for tile in TILES:
        calls = [lambda w=ws[i % copies], t=tile: dk.ln_gemv(x, None, None, 0.0, w, b, config=t) for i in range(20)]
        ln_calls = [lambda w=ws[i % copies], t=tile: dk.ln_gemv(x, g, beta, 1e-5, w, b, config=t, folded=folded)
                    for i in range(20)]
        try:
            t, t_ln = graph_time(calls), graph_time(ln_calls)
        except Exception as err:  # noqa: BLE001 - a tile that cannot compile is skipped
            rows.append({"tile": tile, "error": repr(err)[:200]})
            continue
        rows.append({"tile": tile, "s": t, "ln_s": t_ln, "TBps": 2 * n * k / t / 1e12})
    ok = [r for r in rows if "s" in r]
    best = min(ok, key=lambda r: r["s"])
    chosen = gemv_config(n, k)
    ln_best = min(ok, key=lambda r: r["ln_s"])
    now = next((r for r in ok if tuple(r["tile"]) == chosen), None)
    del ws
    torch.cuda.empty_cache()
    return {"n": n, "k": k, "rows": rows, "best": best, "current": now, "ln_best": ln_best}


def attention_sweep(n_head: int, d: int, context: int) -> list[dict[str, Any]]:
    L = max(context, 128)
    k = torch.randn(1, n_head, L, d, device=DEV, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    qkv = torch.randn(1, 1, 3 * n_head * d, device=DEV, dtype=torch.bfloat16)
    pos = torch.tensor(context - 1, device=DEV)
    scratch = dk.DecodeScratch.new(n_head, DEV)
    out = []
    for chunk in (16, 32, 64, 128, 256):
        if chunk > L:
            continue
        calls = [lambda c=chunk: dk.decode_attention(qkv, k, v, pos, n_head, chunk=c, scratch=scratch)] * 20
        out.append({"chunk": chunk, "s": graph_time(calls)})
    return out


def argmax_sweep(n: int, k: int, dtype: torch.dtype) -> list[dict[str, Any]]:
    """The LM head's argmax kernel over row blocks a program (fewer programs, fewer same-address
    atomics), beside ln_gemv writing the same logits; chains of 20 calls over weight copies."""
    esize = torch.finfo(dtype).bits // 8
    copies = max(1, min(64, (512 * 2**20) // (esize * n * k)))
    ws = [torch.randn(n, k, device=DEV, dtype=dtype) for _ in range(copies)]
    x = torch.randn(1, 1, k, device=DEV, dtype=dtype)
    g, beta = torch.randn(k, device=DEV, dtype=dtype), torch.randn(k, device=DEV, dtype=dtype)
    folded = dk.fold_layer_norm(ws[0], None, g, beta)
    scratch = dk.DecodeScratch.new(1, DEV)
    logits = torch.empty(1, 1, n, device=DEV, dtype=dtype)
    rows = []
    for tile in sorted({dk.ARGMAX_TILE, (2, 1024, 4), (4, 256, 4), (8, 256, 4), (8, 256, 8),
                        (16, 256, 8), (16, 128, 4), (8, 512, 8)}):
        gemv_calls = [lambda w=ws[i % copies], t=tile: dk.ln_gemv(x, g, beta, 1e-5, w, folded=folded, out=logits, config=t)
                      for i in range(20)]
        ln_s = graph_time(gemv_calls)
        for blocks in (1, 2, 3, 4, 8):
            calls = [lambda w=ws[i % copies], t=tile, b=blocks: dk.ln_gemv_argmax(
                x, g, beta, 1e-5, w, folded=folded, scratch=scratch, config=t, blocks=b) for i in range(20)]
            t_s = graph_time(calls)
            rows.append({"tile": tile, "blocks": blocks, "programs": -(-n // (tile[0] * blocks)), "s": t_s,
                         "ln_gemv_s": ln_s, "TBps": esize * n * k / t_s / 1e12})
            print(f"argmax {n}x{k} {dtype} tile {tile} blocks {blocks} ({rows[-1]['programs']} programs): "
                  f"{t_s * 1e6:.2f} us ({rows[-1]['TBps']:.2f} TB/s); ln_gemv {ln_s * 1e6:.2f} us", flush=True)
    del ws
    torch.cuda.empty_cache()
    return rows


def step_time(cfg: GPTConfig, context: int, pdl: bool) -> float:
    dk.use_pdl = pdl
    model = build_model(cfg, DEV, torch.bfloat16)
    dec = FastDecoder(model, 1, context)
    dec.warmup()
    for _ in range(10):
        dec.set_length(context - 1)
        dec.step()
    torch.cuda.synchronize()
    times = []
    for _ in range(100):
        dec.set_length(context - 1)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dec.step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    dk.use_pdl = True
    return statistics.median(times)


def main() -> None:
    parts = set(sys.argv[1:]) or {"steps", "attention", "gemv", "argmax"}
    res: dict[str, Any] = {"device": torch.cuda.get_device_name()}
    res["argmax"] = {}
    for n, k, dtype in ((50304, 768, torch.bfloat16), (50304, 4096, torch.bfloat16),
                        (50304, 768, torch.float32)) if "argmax" in parts else ():
        res["argmax"][f"{n}x{k} {dtype}"] = argmax_sweep(n, k, dtype)
    res["steps"] = {}
    for name, cfg, ctx in (("gpt2", preset("gpt2"), 1024), ("7b", CFG_7B, 128)):
        for programs in (10**9, dk.ARGMAX_PROGRAMS) if "steps_argmax" in parts else ():
            default, dk.ARGMAX_PROGRAMS = dk.ARGMAX_PROGRAMS, programs
            key = f"{name} argmax programs={programs}"
            res["steps"][key] = step_time(cfg, ctx, True)
            dk.ARGMAX_PROGRAMS = default
            print(f"step {name} L={ctx} argmax programs <= {programs}: {res['steps'][key] * 1e6:.1f} us", flush=True)
        for pdl in ((True,) if "steps_pdl" in parts else (True, False)) if parts & {"steps", "steps_pdl"} else ():
            key = f"{name} pdl={pdl}"
            res["steps"][key] = step_time(cfg, ctx, pdl)
            print(f"step {name} L={ctx} pdl={pdl}: {res['steps'][key] * 1e6:.1f} us", flush=True)
    res["attention"] = {}
    for name, h, d, ctx in () if "attention" not in parts else (("gpt2 L=1024", 12, 64, 1024), ("7b L=128", 32, 128, 128), ("7b L=1024", 32, 128, 1024)):
        res["attention"][name] = attention_sweep(h, d, ctx)
        print("attention", name, " ".join(f"c{r['chunk']}={r['s'] * 1e6:.2f}us" for r in res["attention"][name]), flush=True)
    shapes = [(2304, 768), (3072, 768), (50304, 768), (12288, 4096), (16384, 4096), (50304, 4096)]
    res["gemv"] = []
    for n, k in shapes if "gemv" in parts else ():
        r = gemv_sweep(n, k)
        res["gemv"].append(r)
        cur = r["current"]
        print(f"gemv {n}x{k}: best {tuple(r['best']['tile'])} {r['best']['s'] * 1e6:.2f} us "
              f"{r['best']['TBps']:.2f} TB/s; current {gemv_config(n, k)} "
              f"{cur['s'] * 1e6 if cur else float('nan'):.2f} us, with LayerNorm {cur['ln_s'] * 1e6 if cur else float('nan'):.2f} us; "
              f"LayerNorm best {tuple(r['ln_best']['tile'])} {r['ln_best']['ln_s'] * 1e6:.2f} us",
              flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "decode_tune.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
