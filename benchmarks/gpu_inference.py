"""GPU acceptance figures of the inference work, on one card (optional parts stop after
GPTPERF_BENCH_BUDGET_S, default 420 s; the whole run stays under 10 minutes).

    python benchmarks/gpu_inference.py            # writes $OUT/gpu_inference.json if OUT is set
    python benchmarks/gpu_inference.py --dry-run  # the same code paths on CPU with small shapes

1. Ceilings measured in this run: 2 GiB device-to-device copy (read + write counted), bf16
   8192³ and fp32 4096³ matmuls, kernel launch latency inside a CUDA graph and eager, and the
   kernel model of `gptperf.measure.kernel_model.measure_kernel_model`: per-kernel time in a CUDA
   graph of weight-streaming bf16 matmuls (rows M = 1, 4, 16, 64; weights 0.5 MiB .. 512 MiB)
   and of a small elementwise kernel, fitted as t = α + bytes/β.
2. 7B-shaped GPT (n_layer 32, n_head 32, n_embd 4096, vocab 50304, bf16, random weights),
   batch 1, fast path (static KV cache, compiled step, CUDA graph): decode tokens/s and the
   bandwidth it implies, counting the weight and KV-cache bytes read per token (the performance
   model's bytes of a decode step), against the copy bandwidth. Goal: >= 80%.
3. gpt2 (124M) batch 1 at 1024 tokens of context: cached decode step (fast path) against the
   recompute path (eager forward over the 1024 tokens). Goal: >= 10x. Also in fp32.
4. Greedy tokens of the fast path against the eager path (gpt2: fp32 exactly; bf16 compiled,
   with the logit margin wherever the two part).
5. Predicted against measured decode step time for batch 1..64 (gpt2 and the 7B shape), the
   prediction using the ceilings and kernel model measured in step 1 and the kernel counts of a
   compiled step (`predict(..., plan)` with the fast decoder's plan). Goal: within 15%. At batch 1 and 16 one graph
   replay is profiled: kernels per step (against the predicted count), their summed duration and
   the gaps between them.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
from typing import Any

import torch

from gptperf.envinfo import environment
from gptperf.generate import stream_logits
from gptperf.inference.sweep import knee_batch, predict_inference
from gptperf.measure.kernel_model import measure_kernel_model
from gptperf.measure.timer import time_fn
from gptperf.model import GPTConfig, preset
from gptperf.perfmodel import Hardware, Workload, count_parameters
from gptperf.perfmodel.transformer import WEIGHT_MATMULS
from gptperf.plan import ExecutionPlan
from gptperf.runtime import cuda_graph
from gptperf.steps.build import build_step
from gptperf.steps.fast_decode import FastDecoder, build_model

T0 = time.time()
BUDGET_S = float(os.environ.get("GPTPERF_BENCH_BUDGET_S", 420))  # optional parts stop after this
DRY = "--dry-run" in sys.argv  # CPU, small shapes, no compile and no graphs: checks the code paths
DEV = torch.device("cpu" if DRY else "cuda")
BATCHES = (1, 2, 4) if DRY else (1, 2, 4, 8, 16, 32, 64)
CFG_7B = GPTConfig(n_layer=32, n_head=32, n_embd=4096, vocab_size=50304, block_size=2048, name="7B-shaped")
CFG_GPT2 = preset("gpt2")
if DRY:
    CFG_7B = CFG_7B.replace(n_layer=2, n_head=4, n_embd=128, vocab_size=512, block_size=512)
    CFG_GPT2 = CFG_GPT2.replace(n_layer=2, n_head=4, n_embd=64, vocab_size=512, block_size=256)
FAST = {"compile": False, "cuda_graph": False} if DRY else {}
PROFILE_STEPS = os.environ.get("GPTPERF_PROFILE_STEPS", "1") != "0"  # 0: no torch.profiler replays
RESULT: dict[str, Any] = {"environment": environment(DEV), "sections": {}}


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f} s] {msg}", flush=True)


def over_budget(what: str) -> bool:
    if time.time() - T0 > BUDGET_S:
        log(f"SKIPPED {what}: past the {BUDGET_S:.0f} s budget")
        RESULT["sections"].setdefault("skipped", []).append(what)
        return True
    return False


def free() -> None:
    gc.collect()
    if not DRY:
        torch.cuda.empty_cache()


# --- 1. ceilings --------------------------------------------------------------------------------


def ceilings() -> Hardware:
    n = 2 * 2**30
    if DRY:
        n = 2**26
    copy_bw = 2 * n / _copy_time(n)
    nb, n32 = (512, 512) if DRY else (8192, 4096)
    bf16 = 2 * nb**3 / _matmul_time(nb, torch.bfloat16)
    torch.backends.cuda.matmul.allow_tf32 = False
    fp32 = 2 * n32**3 / _matmul_time(n32, torch.float32)
    # launch latency: back-to-back 1-element adds, replayed from a CUDA graph and issued eagerly
    x, y = torch.zeros(1, device=DEV), torch.ones(1, device=DEV)
    k = 500

    def eager() -> None:
        for _ in range(k):
            x.add_(y)

    lat_eager = time_fn(eager, warmup=2, repeats=5, device=DEV).median / k
    lat_graph = lat_eager if DRY else graph_latency(x, y, k)
    free()
    t0 = time.time()
    try:
        km = measure_kernel_model(DEV, quick=DRY)
    except Exception as err:  # noqa: BLE001 - reported; the predictions fall back to the roofline
        import traceback

        traceback.print_exc()
        log(f"KERNEL MODEL FAILED: {err!r}"[:400])
        km = {}
    km_s = time.time() - t0
    free()
    total = 64 * 2**30 if DRY else torch.cuda.get_device_properties(DEV).total_memory
    hw = Hardware(
        name=f"measured in this run on {device_name()}",
        peak_flops={"bf16": bf16, "fp16": bf16, "fp32": fp32, "tf32": fp32},
        bandwidth=copy_bw, memory_bytes=total, launch_latency_s=lat_graph, source="measured",
        notes="2 GiB copy (read+write), bf16 8192³ / fp32 4096³ matmul, per-kernel time in a CUDA "
              "graph; kernel model: gptperf.measure.kernel_model.measure_kernel_model",
        extra={"kernel_model": km} if km else {},
    )
    RESULT["sections"]["ceilings"] = {
        "copy_bandwidth": copy_bw, "bf16_matmul_flops": bf16, "fp32_matmul_flops": fp32,
        "launch_latency_graph_s": lat_graph, "launch_latency_eager_s": lat_eager, "memory_bytes": total,
        "kernel_model": km, "kernel_model_seconds": km_s,
    }
    log(f"copy {copy_bw / 1e12:.3f} TB/s, bf16 mm {bf16 / 1e12:.0f} TFLOP/s, fp32 mm {fp32 / 1e12:.1f} "
        f"TFLOP/s, per-kernel latency {lat_graph * 1e6:.2f} µs in a graph, {lat_eager * 1e6:.2f} µs eager")
    if not km:
        return hw
    log(f"kernel model ({km['dtype']}, measured in {km_s:.1f} s; t = α + bytes/β, fit on relative error):")
    for m, a, b, r in zip(km["rows"], km["alpha_s"], km["beta"], km["max_rel_residual"], strict=True):
        c = km["curves"][f"m{m}"]
        pts = "  ".join(f"{nb / 2**20:.1f}MiB:{t * 1e6:.1f}µs" for nb, t in zip(c["bytes"], c["time_s"], strict=True))
        log(f"  matmul M={m:2d}: α {a * 1e6:.2f} µs, β {b / 1e12:.3f} TB/s (max residual {100 * r:.0f}%)  [{pts}]")
    for kind in ("elementwise", "attention", "norm"):
        c = km["curves"][kind]
        pts = "  ".join(f"{nb / 2**20:.3f}MiB:{t * 1e6:.1f}µs" for nb, t in zip(c["bytes"], c["time_s"], strict=True))
        beta = km.get(f"{kind}_beta")
        log(f"  {kind}: α {km[f'{kind}_alpha_s'] * 1e6:.2f} µs"
            + (f", β {beta / 1e12:.3f} TB/s" if beta else "")
            + f" (max residual {100 * km[f'{kind}_max_rel_residual']:.0f}%)  [{pts}]")
    return hw


def _copy_time(n: int) -> float:
    src = torch.empty(n, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    return time_fn(lambda: dst.copy_(src), warmup=3, repeats=20, device=DEV).median


def _matmul_time(n: int, dtype: torch.dtype) -> float:
    a = torch.randn(n, n, device=DEV, dtype=dtype)
    b = torch.randn(n, n, device=DEV, dtype=dtype)
    return time_fn(lambda: a @ b, warmup=3, repeats=10, device=DEV).median


def device_name() -> str:
    from gptperf.envinfo import device_name as name

    return name(DEV)


def graph_latency(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """Per-kernel time of k back-to-back 1-element adds replayed from one CUDA graph."""
    def adds() -> None:
        for _ in range(k):
            x.add_(y)

    g = cuda_graph(adds, DEV, warmup=lambda: x.add_(y), warmups=3)
    return time_fn(g.replay, warmup=3, repeats=10, device=DEV).median / k


# --- helpers ------------------------------------------------------------------------------------


def fast_step_time(dec: FastDecoder, context: int, repeats: int = 30) -> float:
    def step() -> None:
        dec.set_length(context - 1)
        dec.step()

    return time_fn(step, warmup=3, repeats=repeats, device=DEV).median


def eager_step_time(model: Any, kind: str, context: int, repeats: int) -> float:
    """Median time of gptperf's eager `kind` step (decode with the model's KVCache, or
    decode_nocache) at batch 1 and context L, on `model` as it is (gptperf.steps.build_step)."""
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(next(model.parameters()).dtype, "fp32")
    step = build_step(model.config, Workload(kind, 1, context, dtype),
                      ExecutionPlan.eager(model.config.attention), DEV, model=model)
    return time_fn(step.step, warmup=3, repeats=repeats, device=DEV).median


def eager_cache_step_time(model: Any, context: int) -> float:
    return eager_step_time(model, "decode", context, 20)


def recompute_time(model: Any, context: int) -> float:
    return eager_step_time(model, "decode_nocache", context, 10)


def greedy_compare(model: Any, dec: FastDecoder, prompt_len: int = 8, n: int = 32) -> dict[str, Any]:
    """Fast greedy tokens against the eager path (the model's KVCache, no compile, no graph)."""
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(1))
    eager, margins = [], []
    for token, logits in stream_logits(model, prompt, n, temperature=0.0):
        eager.append(int(token[0]))
        top2 = torch.topk(logits[0].float(), 2).values
        margins.append(float(top2[0] - top2[1]))
    fast = dec.generate(prompt.to(DEV), n)[0].tolist()
    first = next((i for i, (a, b) in enumerate(zip(eager, fast, strict=True)) if a != b), None)
    out = {"tokens": n, "identical": first is None, "first_difference": first,
           "eager_top2_margin_there": margins[first] if first is not None else None,
           "smallest_eager_top2_margin": min(margins)}
    return out


def make_fast(model: Any, batch: int, max_len: int, sec: dict[str, Any] | None = None) -> FastDecoder:
    """FastDecoder compiled + CUDA graph, warmed up; if that fails, say why and fall back to a
    graph of the eager step (then to eager), so the other figures still come."""
    attempts = [FAST] if DRY else [{}, {"compile": False}, {"compile": False, "cuda_graph": False}]
    for i, kw in enumerate(attempts):
        try:
            dec = FastDecoder(model, batch, max_len, **kw)
            dec.warmup()
            return dec
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - reported, then the next mode is tried
            log(f"FAST PATH FAILED ({kw or 'compile + graph'}): {err!r}"[:400])
            if sec is not None:
                sec.setdefault("fast_path_errors", []).append(f"{kw}: {err!r}"[:400])
            free()
            if i == len(attempts) - 1:
                raise
    raise AssertionError("unreachable")


def _generation_time(dec: FastDecoder, prompt: torch.Tensor, steps: int) -> float:
    """Seconds for `steps` decode steps after a prefill (the prefill itself not timed)."""
    dec.prefill(prompt)

    def run() -> None:
        for _ in range(steps):
            dec.step()

    return time_fn(run, warmup=0, repeats=1, device=DEV).median


def count_host_syncs(dec: FastDecoder, steps: int, sec: dict[str, Any] | None = None) -> int | None:
    """Synchronising CUDA calls the decode loop makes (torch's sync debug mode, 'warn'). Each
    caught warning is logged with its source line; if there are any, the steps run once more in
    'error' mode so the traceback of the first synchronising call is logged too."""
    if DRY:
        return None
    import traceback
    import warnings

    def run(mode: str) -> list[dict[str, Any]]:
        caught: list[dict[str, Any]] = []

        def record(message, category, filename, lineno, file=None, line=None) -> None:
            # called as the warning is raised: the Python stack is the caller's
            caught.append({"message": str(message).strip(), "category": category.__name__,
                           "where": f"{filename}:{lineno}", "step": step_index[0],
                           "stack": "".join(traceback.format_stack(limit=12)[:-1])})

        dec.prefill(torch.zeros(dec.batch, 4, dtype=torch.long, device=DEV))
        torch.cuda.synchronize()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode(mode)
            try:
                for i in range(steps):
                    step_index[0] = i
                    dec.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        return caught

    step_index = [0]
    caught = run("warn")
    # the mode's own notice ("Synchronization debug mode is a prototype feature ...") is no sync
    syncs = [w for w in caught if "synchroniz" in w["message"].lower() and "debug mode" not in w["message"]]
    details = []
    for w in caught:
        line = f"{w['category']} at {w['where']} (step {w['step']}): {w['message'][:300]}"
        details.append(line + "\n" + w["stack"])
        log(f"  caught warning: {line}\n{w['stack'][-2000:]}")
    if syncs:
        try:
            run("error")
        except Exception:  # noqa: BLE001 - the synchronising call, with its stack
            tb = traceback.format_exc()
            details.append(f"error-mode traceback (step {step_index[0]}):\n{tb}")
            log(f"  first synchronising call (step {step_index[0]}), 'error' mode traceback:\n{tb[-3000:]}")
    if sec is not None:
        sec["host_sync_warnings"] = details
    return len(syncs)


def profile_step(dec: FastDecoder, context: int) -> dict[str, Any] | None:
    """Kernels of one decode step (a graph replay) under torch.profiler: their number, summed
    duration, the span from the first start to the last end, and the busiest kernel names."""
    if DRY:
        return None
    from gptperf.measure.calibrate_decode import replay_kernels

    kernels = replay_kernels(dec, context - 1)
    if not kernels:
        return {"kernels": 0}
    busy = sum(d for _, _, d in kernels) * 1e-6
    span = (max(t + d for _, t, d in kernels) - kernels[0][1]) * 1e-6
    by_name: dict[str, list[float]] = {}
    for name, _, d in kernels:
        by_name.setdefault(name, []).append(d)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:8]
    return {"kernels": len(kernels), "busy_s": busy, "span_s": span,
            "mean_gap_s": (span - busy) / max(len(kernels) - 1, 1),
            "top": [{"name": n[:90], "count": len(d), "total_us": sum(d)} for n, d in top]}


def batch_sweep(model: Any, cfg: GPTConfig, context: int, hw: Hardware, dtype: str,
                dec1: FastDecoder | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sweep_errors: dict[str, Any] = {}
    for b in BATCHES:
        if b > 1 and over_budget(f"{cfg.name} batch {b} and beyond"):
            break
        t0 = time.time()
        try:
            dec = dec1 if (b == 1 and dec1 is not None) else make_fast(model, b, context, sweep_errors)
            setup = time.time() - t0
            t = fast_step_time(dec, context)
        except torch.OutOfMemoryError as err:
            log(f"{cfg.name} batch {b}: out of memory ({str(err).splitlines()[0][:100]}); sweep stopped")
            free()
            break
        pred = predict_inference(cfg, "decode", b, context, dtype, hw, plan=dec.plan)
        no_launch = sum(max(o.compute_time_s, o.memory_time_s) for o in pred.ops)
        weight_ops = [o for o in pred.ops if o.component in WEIGHT_MATMULS]
        weight_s = sum(max(o.compute_time_s, o.memory_time_s) for o in weight_ops)
        kernels = sum(o.count for o in pred.ops)
        rows.append({
            "batch": b, "context": context, "measured_s": t, "predicted_s": pred.time_s,
            "ratio_measured_to_predicted": t / pred.time_s, "predicted_without_launch_s": no_launch,
            "predicted_weight_matmul_s": weight_s, "predicted_other_roofline_s": no_launch - weight_s,
            "predicted_kernel_overhead_s": pred.time_s - no_launch,
            "weight_matmul_bandwidth": weight_ops[0].bandwidth,
            "launches_counted": kernels, "compiled_counts": pred.compiled, "plan": dec.plan.to_dict(),
            "bytes": pred.bytes, "flops": pred.flops,
            "achieved_bandwidth": pred.bytes / t, "achieved_flops": pred.flops / t, "setup_s": setup,
            "path": f"compile={dec.compile}, cuda_graph={dec.cuda_graph}",
            "fast_path_errors": sweep_errors.pop("fast_path_errors", None),
        })
        log(f"{cfg.name} B={b:3d} L={context}: measured {t * 1e3:.3f} ms, predicted {pred.time_s * 1e3:.3f} ms "
            f"(ratio {t / pred.time_s:.3f}; setup {setup:.1f} s) = weight matmuls {weight_s * 1e3:.3f} "
            f"(at {weight_ops[0].bandwidth / 1e12:.2f} TB/s) + other bytes {(no_launch - weight_s) * 1e3:.3f} "
            f"+ {kernels} kernels {(pred.time_s - no_launch) * 1e3:.3f} ms")
        if b in (1, 16, 64) and PROFILE_STEPS:
            try:
                prof = profile_step(dec, context)
            except Exception as err:  # noqa: BLE001 - a diagnostic only
                prof = {"error": repr(err)[:300]}
            rows[-1]["profile"] = prof
            if prof and "busy_s" in prof:
                log(f"  profiled replay: {prof['kernels']} kernels (predicted {kernels}), busy "
                    f"{prof['busy_s'] * 1e3:.3f} ms, span {prof['span_s'] * 1e3:.3f} ms, mean gap "
                    f"{prof['mean_gap_s'] * 1e6:.2f} µs; top: "
                    + "; ".join(f"{d['name'][:50]} x{d['count']} {d['total_us']:.0f}µs" for d in prof["top"][:5]))
            elif prof:
                log(f"  profiled replay: {prof}")
        if dec is not dec1:
            del dec
        free()
    return rows


# --- 2. the 7B shape, batch 1 -------------------------------------------------------------------


def seven_b(hw: Hardware) -> None:
    sec: dict[str, Any] = RESULT["sections"].setdefault("7b", {})
    t0 = time.time()
    model = build_model(CFG_7B, DEV, torch.bfloat16)
    log(f"7B-shaped model built in {time.time() - t0:.1f} s: {count_parameters(CFG_7B) / 1e9:.2f} B parameters")
    prompt_len, new = 16, 113
    max_len = prompt_len + new - 1  # 128: also the batch sweep's context (one compile fewer)
    t0 = time.time()
    dec = make_fast(model, 1, max_len, sec)
    sec["compile_and_capture_s"] = time.time() - t0
    sec["path"] = f"compile={dec.compile}, cuda_graph={dec.cuda_graph}"
    log(f"7B compile + capture: {sec['compile_and_capture_s']:.1f} s")
    prompt = torch.randint(0, CFG_7B.vocab_size, (1, prompt_len), device=DEV)
    runs = [_generation_time(dec, prompt, new - 1) / (new - 1) for _ in range(3)]
    per_token = sorted(runs)[1]
    # steps write positions P .. P+new-2, attending to contexts P+1 .. P+new-1; bytes are linear in L
    lo = predict_inference(CFG_7B, "decode", 1, prompt_len + 1, "bf16", hw, plan=dec.plan)
    hi = predict_inference(CFG_7B, "decode", 1, max_len, "bf16", hw, plan=dec.plan)
    bytes_per_token = (lo.bytes + hi.bytes) / 2
    weight_bytes = 2 * count_parameters(CFG_7B)
    copy_bw = hw.bandwidth
    sec.update({
        "tokens_per_s": 1 / per_token, "per_token_s": per_token, "runs_per_token_s": runs,
        "bytes_per_token": bytes_per_token, "weight_bytes": weight_bytes,
        "achieved_bandwidth": bytes_per_token / per_token,
        "fraction_of_copy_bandwidth": bytes_per_token / per_token / copy_bw,
        "weights_only_bandwidth": weight_bytes / per_token,
        "weights_only_fraction": weight_bytes / per_token / copy_bw,
        "predicted_per_token_s": (lo.time_s + hi.time_s) / 2,
        "note": f"the static cache attends over its whole {max_len}-slot buffer; only the KV bytes of "
                "the real context are counted (conservative)",
    })
    log(f"7B batch 1: {1 / per_token:.1f} tokens/s, {bytes_per_token / per_token / 1e12:.3f} TB/s = "
        f"{100 * sec['fraction_of_copy_bandwidth']:.1f}% of copy (weights only: "
        f"{100 * sec['weights_only_fraction']:.1f}%)")
    # a short identity check against eager bf16
    if not over_budget("7B greedy identity"):
        sec["greedy_vs_eager_bf16"] = greedy_compare(model, dec, 8, 16)
        log(f"7B greedy vs eager (bf16, 16 tokens): {sec['greedy_vs_eager_bf16']}")
    if not over_budget("7B batch sweep"):
        sec["batch_sweep"] = batch_sweep(model, CFG_7B, max_len, hw, "bf16", dec1=dec)
    del dec, model
    free()


# --- 3./4. gpt2 ----------------------------------------------------------------------------------


def gpt2(hw: Hardware) -> None:
    sec: dict[str, Any] = RESULT["sections"].setdefault("gpt2", {})
    cfg = CFG_GPT2
    L = cfg.block_size  # 1024
    # fp32, no TF32: the fast path as static cache + CUDA graph without compile; exact identity
    torch.backends.cuda.matmul.allow_tf32 = False
    m32 = build_model(cfg, DEV, torch.float32)
    dec32 = FastDecoder(m32, 1, L, compile=False, cuda_graph=not DRY)
    sec["fp32_greedy_vs_eager"] = greedy_compare(m32, dec32, 8, 48)
    log(f"gpt2 fp32 greedy fast (static cache + graph) vs eager: {sec['fp32_greedy_vs_eager']}")
    t_fast32 = fast_step_time(dec32, L)
    t_eager32 = eager_cache_step_time(m32, L)
    t_rec32 = recompute_time(m32, L)
    sec["fp32_L1024"] = {"fast_cache_step_s": t_fast32, "eager_cache_step_s": t_eager32,
                         "recompute_s": t_rec32, "speedup_fast": t_rec32 / t_fast32,
                         "speedup_eager_cache": t_rec32 / t_eager32}
    log(f"gpt2 fp32 L=1024: cache step {t_fast32 * 1e3:.3f} ms (graph), {t_eager32 * 1e3:.3f} ms (eager); "
        f"recompute {t_rec32 * 1e3:.3f} ms -> {t_rec32 / t_fast32:.1f}x")
    del dec32, m32
    free()

    model = build_model(cfg, DEV, torch.bfloat16)
    t_rec = recompute_time(model, L)  # before the fast path re-forms the Linear layers
    t_eager = eager_cache_step_time(model, L)
    t0 = time.time()
    dec = make_fast(model, 1, L, sec)
    sec["compile_and_capture_s"] = time.time() - t0
    sec["path"] = f"compile={dec.compile}, cuda_graph={dec.cuda_graph}"
    t_fast = fast_step_time(dec, L)
    pc = predict_inference(cfg, "decode", 1, L, "bf16", hw, plan=dec.plan)
    pr = predict_inference(cfg, "decode_nocache", 1, L, "bf16", hw)
    sec["bf16_L1024"] = {"fast_cache_step_s": t_fast, "eager_cache_step_s": t_eager, "recompute_s": t_rec,
                         "speedup_fast": t_rec / t_fast, "speedup_eager_cache": t_rec / t_eager,
                         "predicted_cache_step_s": pc.time_s, "predicted_recompute_s": pr.time_s,
                         "predicted_speedup": pr.time_s / pc.time_s}
    log(f"gpt2 bf16 L=1024 (compile+capture {sec['compile_and_capture_s']:.1f} s): cache step "
        f"{t_fast * 1e3:.3f} ms fast, {t_eager * 1e3:.3f} ms eager; recompute {t_rec * 1e3:.3f} ms -> "
        f"{t_rec / t_fast:.1f}x (predicted {pr.time_s / pc.time_s:.1f}x)")
    sec["bf16_greedy_vs_eager"] = greedy_compare(model, dec, 8, 48)
    log(f"gpt2 bf16 greedy fast (compiled) vs eager: {sec['bf16_greedy_vs_eager']}")
    sec["host_syncs_in_32_decode_steps"] = count_host_syncs(dec, 32, sec)
    log(f"host synchronisations in 32 fast decode steps: {sec['host_syncs_in_32_decode_steps']}")
    del dec
    free()
    if not over_budget("gpt2 batch sweep"):
        sec["batch_sweep"] = batch_sweep(model, cfg, 128, hw, "bf16")
    del model
    free()


def summary() -> None:
    s = RESULT["sections"]
    c = s.get("ceilings", {})
    lines = ["", "=" * 96, f"gpu_inference on {device_name()}, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, total {time.time() - T0:.0f} s",
             f"measured here: copy {c.get('copy_bandwidth', math.nan) / 1e12:.3f} TB/s (2 GiB, r+w), "
             f"bf16 matmul {c.get('bf16_matmul_flops', math.nan) / 1e12:.0f} TFLOP/s, "
             f"graph kernel latency {c.get('launch_latency_graph_s', math.nan) * 1e6:.2f} µs"]
    km = c.get("kernel_model")
    if km:
        lines.append("kernel model (per kernel in a CUDA graph, t = α + bytes/β): " + ", ".join(
            f"mm M={m} α {a * 1e6:.2f} µs β {b / 1e12:.2f} TB/s"
            for m, a, b in zip(km["rows"], km["alpha_s"], km["beta"], strict=True))
            + f", elementwise α {km['elementwise_alpha_s'] * 1e6:.2f} µs"
            + f", attention α {km['attention_alpha_s'] * 1e6:.2f} µs β {km['attention_beta'] / 1e12:.2f} TB/s"
            + f", LayerNorm α {km['norm_alpha_s'] * 1e6:.2f} µs")
    b7 = s.get("7b", {})
    if "tokens_per_s" in b7:
        frac = b7["fraction_of_copy_bandwidth"]
        lines.append(f"7B path: {b7.get('path')}; gpt2 path: {s.get('gpt2', {}).get('path')}")
        lines.append(f"[{'PASS' if frac >= 0.8 else 'MISS'}] 7B-shaped bf16 batch 1: {b7['tokens_per_s']:.1f} tok/s, "
                     f"{b7['achieved_bandwidth'] / 1e12:.3f} TB/s weights+KV = {100 * frac:.1f}% of copy "
                     f"(goal >= 80%; weights only {100 * b7['weights_only_fraction']:.1f}%; gpt-fast 78%)")
    g = s.get("gpt2", {})
    for key in ("bf16_L1024", "fp32_L1024"):
        if key in g:
            r = g[key]
            lines.append(f"[{'PASS' if r['speedup_fast'] >= 10 else 'MISS'}] gpt2 {key[:4]} L=1024 batch 1: cache "
                         f"{r['fast_cache_step_s'] * 1e6:.0f} µs vs recompute {r['recompute_s'] * 1e6:.0f} µs = "
                         f"{r['speedup_fast']:.1f}x (eager cache: {r['speedup_eager_cache']:.1f}x"
                         + (f"; predicted {r['predicted_speedup']:.1f}x)" if "predicted_speedup" in r else ")"))
    if g.get("host_syncs_in_32_decode_steps") is not None:
        n = g["host_syncs_in_32_decode_steps"]
        lines.append(f"[{'PASS' if n == 0 else 'MISS'}] host synchronisations in 32 fast decode steps: {n}")
    for key in ("fp32_greedy_vs_eager", "bf16_greedy_vs_eager"):
        if key in g:
            r = g[key]
            lines.append(f"[{'PASS' if r['identical'] else 'DIFF'}] gpt2 greedy {key[:4]} fast vs eager, "
                         f"{r['tokens']} tokens: identical={r['identical']}"
                         + ("" if r["identical"] else f" (first difference at {r['first_difference']}, eager "
                            f"top-2 margin there {r['eager_top2_margin_there']:.4f})"))
    for name, sweep in (("gpt2", g.get("batch_sweep")), ("7B", b7.get("batch_sweep"))):
        if not sweep:
            continue
        lines.append(f"{name} decode step, context {sweep[0]['context']}: batch, measured ms, predicted ms, "
                     "ratio (goal 0.85..1.15), achieved TB/s, predicted kernels")
        for r in sweep:
            ok = 0.85 <= r["ratio_measured_to_predicted"] <= 1.15
            lines.append(f"  [{'PASS' if ok else 'MISS'}] B={r['batch']:3d} {r['measured_s'] * 1e3:8.3f} "
                         f"{r['predicted_s'] * 1e3:8.3f} {r['ratio_measured_to_predicted']:6.3f} "
                         f"{r['achieved_bandwidth'] / 1e12:6.3f} {r['launches_counted']:5d}"
                         + (f" (profiled {r['profile']['kernels']})" if (r.get("profile") or {}).get("kernels")
                            else ""))
        knee = knee_batch([r["batch"] for r in sweep], [r["measured_s"] for r in sweep])
        none = f"none up to batch {sweep[-1]['batch']}"
        lines.append(f"  measured step-time knee: {none if knee is None else f'batch {knee:.0f}'}")
    print("\n".join(lines), flush=True)
    RESULT["summary"] = lines


def main() -> int:
    if not DRY and not torch.cuda.is_available():
        print("gpu_inference: needs a CUDA device", file=sys.stderr)
        return 2
    hw = ceilings()
    RESULT["hardware"] = hw.to_dict()
    for section in (gpt2, seven_b):
        torch.compiler.reset()  # no compiled graphs or dynamic-shape history from the other model
        try:
            section(hw)
        except Exception as err:  # noqa: BLE001 - record and go on to the next section
            import traceback

            traceback.print_exc()
            RESULT["sections"].setdefault("errors", []).append(f"{section.__name__}: {err!r}")
            free()
    summary()
    out = os.environ.get("OUT")
    if out:
        from gptperf.atomic import write_text

        path = os.path.join(out, "gpu_inference.json")
        write_text(path, json.dumps(RESULT, indent=2, default=str))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
