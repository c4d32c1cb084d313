"""Tiles and chunks of the fused decode kernels, measured on one CUDA card (gptperf.steps.decode_kernels).

    python benchmarks/gpu_decode_tune.py                  # parts 1-4
    python benchmarks/gpu_decode_tune.py steps argmax     # some: steps, attention, gemv, argmax;
    # steps_pdl: the steps with PDL on only; steps_argmax: the steps with the argmax kernel at
    # one program a row block and at ARGMAX_PROGRAMS programs; early: the steps with each
    # kernel's early loads (before its PDL wait) on and off; in_step: gpt2's step with each
    # gemv's tile and the attention's chunk and warps varied one kernel at a time; in_step_wide:
    # the same over shortlists at gpt2-medium, gpt2-xl and the 7B shape at context 1000; rule:
    # the steps under the isolated sweeps' tiles and under fused_tile; graph_steps: a token of
    # generation (`FastDecoder.run`, 64 steps) with 1, 4, 16 and 64 steps a CUDA graph; scaled:
    # the steps with γ loaded in the LayerNorm gemvs and with their weights' copies W∘γ streamed

1. The weight shapes of gpt2 and of the 7B shape that follow a LayerNorm, as a plain gemv and
   with the LayerNorm inside, over candidate tiles (rows per program, columns per step, warps):
   time per call inside a CUDA graph of 20 calls cycling through weight copies worth >= 512 MiB
   (HBM, not L2), median of 10 replays.
2. decode_attention at gpt2 (12 heads, D 64) context 1024 and the 7B shape (32 heads, D 128)
   contexts 128 and 1024, over chunk sizes, its first cache tile loaded before and after the PDL
   wait.
3. The whole fused step (FastDecoder, batch 1) with programmatic dependent launch on and off.
4. The LM head's argmax kernel (gpt2's and the 7B shape's vocabulary-wide weights) over row
   blocks a program, beside ln_gemv writing the same logits.
Prints tables; writes $OUT/decode_tune.json when OUT is set.
"""

from __future__ import annotations

import functools
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
    folded = dk.fold_for_copies(ws, g, beta, b)  # constants of one copy serve all (timing only)
    rows = []
    for tile in TILES:
        calls = [lambda w=ws[i % copies], t=tile: dk.ln_gemv(x, None, None, 0.0, w, b, config=t) for i in range(20)]
        ln_calls = [lambda w=ws[i % copies], f=folded[i % copies], t=tile: dk.ln_gemv(x, g, beta, 1e-5, w, b, config=t, folded=f)
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
        for prefetch in (True, False):
            tuning = dk.KernelTuning(attention_prefetch=prefetch)
            calls = [lambda c=chunk, t=tuning: dk.decode_attention(qkv, k, v, pos, n_head, chunk=c,
                                                                   scratch=scratch, tuning=t)] * 20
            out.append({"chunk": chunk, "prefetch": prefetch, "s": graph_time(calls)})
    return out


def argmax_sweep(n: int, k: int, dtype: torch.dtype) -> list[dict[str, Any]]:
    """The LM head's argmax kernel over row blocks a program (fewer programs, fewer same-address
    atomics), beside ln_gemv writing the same logits; chains of 20 calls over weight copies."""
    esize = torch.finfo(dtype).bits // 8
    copies = max(1, min(64, (512 * 2**20) // (esize * n * k)))
    ws = [torch.randn(n, k, device=DEV, dtype=dtype) for _ in range(copies)]
    x = torch.randn(1, 1, k, device=DEV, dtype=dtype)
    g, beta = torch.randn(k, device=DEV, dtype=dtype), torch.randn(k, device=DEV, dtype=dtype)
    folded = dk.fold_for_copies(ws, g, beta)
    scratch = dk.DecodeScratch.new(1, DEV)
    logits = torch.empty(1, 1, n, device=DEV, dtype=dtype)
    rows = []
    for tile in sorted({dk.ARGMAX_TILE, (2, 1024, 4), (4, 256, 4), (8, 256, 4), (8, 256, 8),
                        (16, 256, 8), (16, 128, 4), (8, 512, 8)}):
        gemv_calls = [lambda w=ws[i % copies], f=folded[i % copies], t=tile: dk.ln_gemv(x, g, beta, 1e-5, w, folded=f, out=logits, config=t)
                      for i in range(20)]
        ln_s = graph_time(gemv_calls)
        for blocks in (1, 2, 3, 4, 8):
            calls = [lambda w=ws[i % copies], f=folded[i % copies], t=tile, b=blocks: dk.ln_gemv_argmax(
                x, g, beta, 1e-5, w, folded=f, scratch=scratch, config=t, blocks=b) for i in range(20)]
            t_s = graph_time(calls)
            rows.append({"tile": tile, "blocks": blocks, "programs": -(-n // (tile[0] * blocks)), "s": t_s,
                         "ln_gemv_s": ln_s, "TBps": esize * n * k / t_s / 1e12})
            print(f"argmax {n}x{k} {dtype} tile {tile} blocks {blocks} ({rows[-1]['programs']} programs): "
                  f"{t_s * 1e6:.2f} us ({rows[-1]['TBps']:.2f} TB/s); ln_gemv {ln_s * 1e6:.2f} us", flush=True)
    del ws
    torch.cuda.empty_cache()
    return rows


def step_time(cfg: GPTConfig, context: int, pdl: bool) -> float:
    model = build_model(cfg, DEV, torch.bfloat16)
    dec = captured(model, context, dk.KernelTuning(pdl=pdl))
    return decoder_step_time(dec, context)


# what each kernel loads before its PDL wait
EARLY_VARIANTS = {
    "none": dk.KernelTuning(attention_prefetch=False, early_weight_loads=False),
    "attention": dk.KernelTuning(attention_prefetch=True, early_weight_loads=False),
    "attention + every gemv": dk.KernelTuning(attention_prefetch=True, early_weight_loads=True),
}


def early_load_steps(cfg: GPTConfig, context: int, rounds: int = 4) -> dict[str, float]:
    """The fused step (batch 1, bf16) under each of EARLY_VARIANTS, one graph each captured from
    one model, timed in alternating rounds; median step per variant."""
    model = build_model(cfg, DEV, torch.bfloat16)
    decoders = {name: captured(model, context, tuning) for name, tuning in EARLY_VARIANTS.items()}
    return alternating_medians(decoders, context, rounds, steps=40)


STEP_TILES = [(1, 1024, 4), (2, 1024, 4), (4, 1024, 4), (4, 1024, 8), (8, 1024, 8), (2, 512, 4),
              (4, 512, 4), (4, 256, 4), (8, 256, 4), (16, 256, 8), (8, 512, 8), (1, 512, 2), (2, 256, 2),
              (1, 2048, 4), (2, 2048, 8), (4, 2048, 8)]
ATTENTION_VARIANTS = [(c, w) for c in (32, 64, 128) for w in (2, 4, 8)]  # (chunk, warps)


LN_SHORTLIST = [(2, 1024, 4), (4, 512, 4), (4, 256, 4), (8, 256, 4), (8, 512, 8), (16, 256, 8)]
RESIDUAL_SHORTLIST = [(2, 1024, 4), (4, 512, 4), (2, 512, 4), (2, 2048, 8), (1, 1024, 4)]


def in_step_sweep(cfg: GPTConfig, context: int, tiles: dict[tuple[int, int], list] | None = None,
                  attention_variants: list[tuple[int, int]] = ATTENTION_VARIANTS,
                  rounds: int = 3) -> dict[str, Any]:
    """The fused step (batch 1, bf16) with one kernel's setting changed at a time: each gemv shape
    (n, k) over its `tiles` (default: the layer's four shapes over STEP_TILES; `fused_tile`
    patched for that shape alone) and the attention over `attention_variants` (chunk, warps); all
    graphs captured from one model, timed in alternating rounds between two default steps (the
    first and the last captured). A kernel runs n_layer times a step, so a change of 0.1 µs in it
    moves the step by n_layer × 0.1 µs."""
    model = build_model(cfg, DEV, torch.bfloat16)
    C = cfg.n_embd
    if tiles is None:
        tiles = {shape: STEP_TILES for shape in ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))}
    rule, attention = dk.fused_tile, dk.decode_attention
    decoders: dict[str, FastDecoder] = {"default": captured(model, context)}
    try:
        for (n, k), candidates in tiles.items():
            for tile in candidates:
                dk.fused_tile = lambda n_, k_, ln, t=tile, s=(n, k): t if (n_, k_) == s else rule(n_, k_, ln)
                decoders[f"{n}x{k} {tile}"] = captured(model, context)
            dk.fused_tile = rule
        for chunk, warps in attention_variants:
            dk.decode_attention = functools.partial(attention, chunk=chunk, num_warps=warps)
            decoders[f"attention chunk {chunk} warps {warps}"] = captured(model, context)
    finally:
        dk.fused_tile, dk.decode_attention = rule, attention
    decoders["default again"] = captured(model, context)
    return alternating_medians(decoders, context, rounds, steps=30)


def rule_steps(cfg: GPTConfig, context: int, rounds: int = 5) -> dict[str, float]:
    """The fused step under the isolated sweeps' tiles (`gemv_config`), 4 attention warps and
    chunks of 64 (32 up to 256 positions), and under `fused_tile`, ATTENTION_WARPS and
    `default_chunk`: one graph each from one model, alternating rounds."""
    model = build_model(cfg, DEV, torch.bfloat16)
    rule, warps, chunk = dk.fused_tile, dk.ATTENTION_WARPS, dk.default_chunk
    try:
        dk.fused_tile, dk.ATTENTION_WARPS = (lambda n, k, ln: gemv_config(n, k)), 4
        dk.default_chunk = lambda max_len, *_: 32 if max_len <= 256 else 64
        decoders = {"gemv_config, 4 warps": captured(model, context)}
    finally:
        dk.fused_tile, dk.ATTENTION_WARPS, dk.default_chunk = rule, warps, chunk
    decoders["fused_tile"] = captured(model, context)
    return alternating_medians(decoders, context, rounds, steps=40)


def scaled_steps(cfg: GPTConfig, context: int, rounds: int = 7) -> dict[str, float]:
    """The fused step with γ loaded beside x in every LayerNorm gemv, and with each qkv and
    mlp.fc weight streamed as its own copy W∘γ (`KernelTuning.scale_weight_bytes` 0 and 64 MiB:
    every such weight up to gpt2-xl's, no LM head): one graph each from one model, alternating
    rounds."""
    model = build_model(cfg, DEV, torch.bfloat16)
    decoders = {name: captured(model, context, dk.KernelTuning(scale_weight_bytes=limit))
                for name, limit in (("gamma loaded", 0), ("W*gamma streamed", 64 * 2**20))}
    return alternating_medians(decoders, context, rounds, steps=40)


def graph_steps_tokens(cfg: GPTConfig, context: int, rounds: int = 5,
                       choices: tuple[int, ...] = (1, 4, 16, 64)) -> dict[str, float]:
    """Seconds a token of `FastDecoder.run(64)` (the 64 steps up to `context`) with each number of
    steps a graph, one decoder each from one model, timed in alternating rounds; the median."""
    model = build_model(cfg, DEV, torch.bfloat16)
    decoders = {}
    for k in choices:
        dec = decoders[k] = FastDecoder(model, 1, context, graph_steps=k)
        dec.warmup()
        dec.set_length(context - 64)
        dec.run(64)  # captures the graph of k steps
    times: dict[int, list[float]] = {k: [] for k in choices}
    for _ in range(rounds):
        for k, dec in decoders.items():
            def run(dec: FastDecoder = dec) -> None:
                dec.set_length(context - 64)
                dec.run(64)
            times[k].append(time_fn(run, warmup=2, repeats=10, device=DEV).median / 64)
    decoders.clear()
    torch.cuda.empty_cache()
    return {f"{k} steps a graph": statistics.median(t) for k, t in times.items()}


def captured(model: Any, context: int, tuning: dk.KernelTuning = dk.DEFAULT_TUNING) -> FastDecoder:
    """A batch-1 decoder of `model` with its step captured under the module's settings now and
    the kernels launched under `tuning`."""
    dec = FastDecoder(model, 1, context, kernel_tuning=tuning)
    dec.warmup()
    return dec


def alternating_medians(decoders: dict[str, FastDecoder], context: int, rounds: int,
                        steps: int) -> dict[str, float]:
    """Median step seconds of each decoder, timed `steps` steps at a time in `rounds` rounds that
    take the decoders in turn (a drifting card moves them alike); frees their graphs after."""
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(rounds):
        for name, dec in decoders.items():
            times[name].append(decoder_step_time(dec, context, steps=steps))
    decoders.clear()
    torch.cuda.empty_cache()
    return {name: statistics.median(t) for name, t in times.items()}


def decoder_step_time(dec: FastDecoder, context: int, steps: int = 100) -> float:
    """Median seconds of one replayed step writing position context - 1."""
    for _ in range(10):
        dec.set_length(context - 1)
        dec.step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        dec.set_length(context - 1)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dec.step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
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
    res["early"] = {}
    for name, cfg, ctx in (("gpt2", preset("gpt2"), 1024), ("gpt2-xl", preset("gpt2-xl"), 1024),
                           ("7b", CFG_7B, 1000), ("7b", CFG_7B, 128)) if "early" in parts else ():
        r = res["early"][f"{name} L={ctx}"] = early_load_steps(cfg, ctx)
        print(f"step {name} L={ctx}: " + "; ".join(f"{k} {v * 1e6:.1f} us" for k, v in r.items()), flush=True)
    res["graph_steps"] = {}
    for name, cfg, ctx in (("gpt2", preset("gpt2"), 1024), ("gpt2-medium", preset("gpt2-medium"), 1024),
                           ("7b", CFG_7B, 128)) if "graph_steps" in parts else ():
        r = res["graph_steps"][f"{name} L={ctx}"] = graph_steps_tokens(cfg, ctx)
        print(f"a token of generation {name} L={ctx}: " + "; ".join(f"{k} {v * 1e6:.1f} us" for k, v in r.items()),
              flush=True)
    res["scaled"] = {}
    for name, cfg, ctx in (("gpt2", preset("gpt2"), 1024), ("gpt2-medium", preset("gpt2-medium"), 1024),
                           ("gpt2-large", preset("gpt2-large"), 1024), ("gpt2-xl", preset("gpt2-xl"), 1024),
                           ("7b", CFG_7B, 128)) if "scaled" in parts else ():
        r = res["scaled"][f"{name} L={ctx}"] = scaled_steps(cfg, ctx)
        print(f"step {name} L={ctx}: " + "; ".join(f"{k} {v * 1e6:.1f} us" for k, v in r.items()), flush=True)
    res["rule"] = {}
    for name, cfg, ctx in (("gpt2", preset("gpt2"), 1024), ("gpt2-medium", preset("gpt2-medium"), 1024),
                           ("gpt2-large", preset("gpt2-large"), 1024), ("gpt2-xl", preset("gpt2-xl"), 1024),
                           ("7b", CFG_7B, 128),
                           ("7b", CFG_7B, 1000)) if "rule" in parts else ():
        r = res["rule"][f"{name} L={ctx}"] = rule_steps(cfg, ctx)
        print(f"step {name} L={ctx}: " + "; ".join(f"{k} {v * 1e6:.1f} us" for k, v in r.items()), flush=True)
    res["in_step"] = {}
    sweeps = []
    if "in_step" in parts:
        sweeps += [("gpt2", preset("gpt2"), 1024, None), ("7b", CFG_7B, 128, None)]
    if "in_step_wide" in parts:
        for name, cfg, ctx in (("gpt2-medium", preset("gpt2-medium"), 1024),
                               ("gpt2-xl", preset("gpt2-xl"), 1024), ("7b", CFG_7B, 1000)):
            C = cfg.n_embd
            sweeps.append((name, cfg, ctx, {(3 * C, C): LN_SHORTLIST, (4 * C, C): LN_SHORTLIST,
                                            (C, C): RESIDUAL_SHORTLIST, (C, 4 * C): RESIDUAL_SHORTLIST}))
    for name, cfg, ctx, tiles in sweeps:
        variants = ATTENTION_VARIANTS if tiles is None else [(c, w) for c in (32, 64) for w in (2, 4)]
        r = res["in_step"][f"{name} L={ctx}"] = in_step_sweep(cfg, ctx, tiles, variants)
        base = r["default"]
        print(f"in-step sweep {name} L={ctx}: default {base * 1e6:.1f} us, again {r['default again'] * 1e6:.1f} us;"
              " each kernel's settings, fastest first:", flush=True)
        for kernel in sorted({k.rsplit(" (", 1)[0] if "(" in k else "attention" for k in r if "default" not in k}):
            ranked = sorted((k for k in r if k.startswith(kernel)), key=r.get)
            print(f"    {kernel}: " + ", ".join(f"{k[len(kernel):].strip()} {(r[k] - base) * 1e6:+.1f}"
                                             for k in ranked), flush=True)
    res["attention"] = {}
    for name, h, d, ctx in () if "attention" not in parts else (("gpt2 L=1024", 12, 64, 1024), ("7b L=128", 32, 128, 128), ("7b L=1024", 32, 128, 1024)):
        res["attention"][name] = attention_sweep(h, d, ctx)
        print("attention", name, " ".join(f"c{r['chunk']}{'p' if r['prefetch'] else ''}={r['s'] * 1e6:.2f}us"
                                          for r in res["attention"][name]), flush=True)
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
