"""Which levers speed up the gpt2 train step (B=12, T=1024, bf16, compiled) on one CUDA card.

    python benchmarks/gpu_train_levers.py                 # every lever, one after the other
    python benchmarks/gpu_train_levers.py base cudnn      # some of them
    python benchmarks/gpu_train_levers.py --alternate base split64   # side by side, alternating

Each lever builds the step `gptperf train` runs (`gptperf.steps.build_step`), changed in one way,
compiles it afresh and times 20 steps (CUDA events, median, after 5 warm-up steps). `base` is
also profiled once: kernel time by class, the top kernels with the host ops that launched them,
and the device's idle time between kernels with its largest gaps (under the profiler the host is
slower, so gaps there are an upper bound), which say whether the host or the kernels set the
pace (`autocast` and `bf16params` too). `base` is the default plan, bf16 weights with fp32
master weights stepped in one pass; `mastercasts` the master update before that (casts around
AdamW's kernel); `autocast` the step before master weights (fp32 weights cast under autocast). Writes
$OUT/train_levers.json when OUT is set; prints a table last.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from gptperf import names
from gptperf.measure.timer import time_fn
from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps import build_step
from gptperf.steps.train import TrainSettings

BATCH, SEQ = 12, 1024
PROFILED = ("base", "autocast", "bf16params")  # levers profiled once after their timing


def kernel_class(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("gemm", "nvjet", "sm90_xmma", "cutlass", "cublas")):
        return "matmul"
    if any(k in n for k in ("flash", "fmha", "cudnn", "attention")):
        return "attention"
    if "adam" in n or "multi_tensor" in n:
        return "optimizer"
    if "triton" in n:
        return "inductor triton"
    return "other"


def profile_step(step: Any) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step.step()
        torch.cuda.synchronize()
    # device events, not the record_function ranges mirrored onto the GPU timeline
    ranges = {e.name for e in prof.events() if getattr(e, "is_user_annotation", False)}
    ranges |= {names.OPTIMIZER, "Optimizer.step#AdamW.step"}
    kernels = [e for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA and e.name not in ranges]
    start = min(e.time_range.start for e in kernels)
    end = max(e.time_range.end for e in kernels)
    busy = sum(e.time_range.elapsed_us() for e in kernels)
    by_class: dict[str, float] = {}
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_class[kernel_class(e.name)] = by_class.get(kernel_class(e.name), 0.0) + e.time_range.elapsed_us() / 3
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us())
    top = sorted(((sum(v) / 3, len(v) // 3, k) for k, v in by_name.items()), reverse=True)[:25]
    launchers: dict[str, set[str]] = {}  # kernel name -> the host ops that launched it
    for e in prof.events():
        for k in getattr(e, "kernels", []) or []:
            launchers.setdefault(k.name, set()).add(e.name)
    # what calls the reductions launched by aten::sum outside inductor's kernels: their callers
    sum_callers: dict[str, int] = {}
    for e in prof.events():
        if e.name == "aten::sum" and getattr(e, "kernels", None):
            chain, parent = [], e.cpu_parent
            while parent is not None and len(chain) < 5:
                chain.append(parent.name[:50])
                parent = parent.cpu_parent
            sum_callers[" < ".join(chain)] = sum_callers.get(" < ".join(chain), 0) + 1
    # where the device idles between kernels: the gaps of the last two steps (the first enters the profiler)
    ordered = sorted(kernels, key=lambda e: e.time_range.start)[len(kernels) // 3:]
    gaps, reach = [], ordered[0].time_range.end
    for a, b in itertools.pairwise(ordered):
        gaps.append((b.time_range.start - reach, a.name[:60], b.name[:60]))
        reach = max(reach, b.time_range.end)
    idle = sum(g for g, _, _ in gaps if g > 0)
    return {"kernels_per_step": len(kernels) / 3, "busy_us_per_step": busy / 3,
            "span_us_per_step": (end - start) / 3, "by_class_us": by_class,
            "top": [{"us": t, "count": c, "name": k[:140], "launched_by": sorted(launchers.get(k, ()))[:6]}
                    for t, c, k in top],
            "idle_us_per_step": idle / 2, "gaps_over_10us": sum(1 for g, _, _ in gaps if g > 10) / 2,
            "top_gaps": [{"us": g, "after": a, "before": b} for g, a, b in sorted(gaps, reverse=True)[:12]],
            "sum_callers": sum_callers,
            "alloc_retries": torch.cuda.memory_stats().get("num_alloc_retries", 0),
            "device_allocs": torch.cuda.memory_stats().get("num_device_alloc", 0)}


@contextlib.contextmanager
def lever(name: str) -> Iterator[dict[str, Any]]:
    """Settings of lever `name` applied around building, compiling and timing its step."""
    import torch._inductor.config as inductor
    from torch.nn.attention import SDPBackend, sdpa_kernel

    extra: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if name == "cudnn":
            stack.enter_context(sdpa_kernel([SDPBackend.CUDNN_ATTENTION]))
        if name == "flash":
            stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION]))
        if name == "coordinate":
            stack.enter_context(inductor.patch(coordinate_descent_tuning=True))
        if name == "autotune":  # matmuls autotuned over cuBLAS and Triton templates (epilogues fused)
            stack.enter_context(inductor.patch(max_autotune_gemm=True))
        if name == "split64":  # LayerNorm backward's mix-order reduction: 64 rows a partial sum, not 16
            stack.enter_context(inductor.patch({"triton.mix_order_reduction_split_size": 64}))
        if name == "nomix":  # no mix-order reductions: LayerNorm's weight and bias sums apart
            stack.enter_context(inductor.patch({"triton.mix_order_reduction": False}))
        if name == "pdl":  # inductor's Triton kernels launched early, each waiting (gdc_wait) for the one before
            stack.enter_context(inductor.patch({"triton.enable_pdl": True}))
        if name == "combo":  # independent kernels (the bias gradients' sums among them) launched as one
            stack.enter_context(inductor.patch(combo_kernels=True))
        if name == "benchfusion":  # each candidate fusion benchmarked before it is made
            stack.enter_context(inductor.patch(benchmark_fusion=True))
        if name == "aggressive":  # fuse nodes that share no memory access too
            stack.enter_context(inductor.patch(aggressive_fusion=True))
        if name == "noclip":
            extra["settings"] = TrainSettings(grad_clip=0.0)
        yield extra


def lever_step(name: str, extra: dict[str, Any]) -> Any:
    """The step `gptperf train` runs, changed as lever `name` says (inside its `lever` context),
    compiled, and stepped once: each compiled graph's first call is behind it."""
    plan = ExecutionPlan.default("train", "cuda", compile=True, dtype="bf16")
    if name in ("autocast", "bf16params"):  # fp32 weights under autocast; or bf16 everywhere
        plan = plan.replace(master_weights=False, fused_master_update=False)
    if name == "mastercasts":  # master weights updated by casts around AdamW's kernel, not in one pass
        plan = plan.replace(fused_master_update=False)
    if name == "inductorce":  # the loss as inductor compiles the model's own F.cross_entropy
        plan = plan.replace(fused_loss=False)
    step = build_step(preset("gpt2"), Workload("train", BATCH, SEQ, "bf16"), plan, "cuda",
                      train_settings=extra.get("settings"))
    if name == "bf16params":  # parameters, gradients and AdamW's state in bf16: no weight casts, a bf16 residual stream
        step.model.to(torch.bfloat16)
    if name == "graphs":  # cudagraph trees around the compiled forward and backward
        step.train.run_model = torch.compile(step.model, mode="reduce-overhead")
    step.train.compile_now(BATCH, SEQ)
    step.step()
    torch.cuda.synchronize()
    return step


def run_lever(name: str) -> dict[str, Any]:
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    t0 = time.time()
    with lever(name) as extra:
        step = lever_step(name, extra)
        setup = time.time() - t0
        # the loop's own step: forward, backward, clip, AdamW, the loss read back
        timing = time_fn(step.train.run, warmup=4, repeats=20, device=torch.device("cuda"))
        times = [t * 1e3 for t in timing.samples]
        out: dict[str, Any] = {"lever": name, "median_ms": statistics.median(times),
                               "min_ms": min(times), "setup_s": setup,
                               "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        if name in PROFILED:
            out["profile"] = profile_step(step)
    print(f"{name}: {out['median_ms']:.2f} ms (min {out['min_ms']:.2f}), setup {setup:.0f} s", flush=True)
    del step
    return out


def alternate(names_: list[str], rounds: int = 8, steps: int = 10) -> dict[str, Any]:
    """Levers built side by side and timed in alternating blocks of `steps` steps, `rounds` times:
    a host whose speed drifts over seconds hits each alike (medians of the block medians)."""
    built = {}
    for name in names_:
        with lever(name) as extra:
            built[name] = lever_step(name, extra)
    blocks: dict[str, list[float]] = {n: [] for n in names_}
    for _ in range(rounds):
        for name, step in built.items():
            timing = time_fn(step.train.run, warmup=2, repeats=steps, device=torch.device("cuda"))
            blocks[name].append(timing.median * 1e3)
    out = {n: {"median_ms": statistics.median(b), "min_block_ms": min(b), "blocks_ms": b}
           for n, b in blocks.items()}
    for n, r in out.items():
        print(f"alternating {n}: {r['median_ms']:.2f} ms (block medians {', '.join(f'{b:.2f}' for b in r['blocks_ms'])})",
              flush=True)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--alternate"]:
        alternate(sys.argv[2:])
        return
    levers = sys.argv[1:] or ["base", "autocast", "mastercasts", "inductorce", "noclip", "cudnn", "flash", "coordinate", "graphs",
                              "autotune", "split64", "nomix", "pdl", "combo", "benchfusion", "aggressive"]
    results = []
    for name in levers:
        try:
            results.append(run_lever(name))
        except Exception as err:  # noqa: BLE001 - one lever failing must not hide the others
            print(f"{name}: FAILED {type(err).__name__}: {str(err)[:300]}", flush=True)
            results.append({"lever": name, "error": repr(err)[:500]})
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "train_levers.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "results": results}, f, indent=1)
    for r in results:
        if "profile" in r:
            p = r["profile"]
            print(f"\n{r['lever']} profile: {p['kernels_per_step']:.0f} kernels/step, busy {p['busy_us_per_step'] / 1e3:.2f} ms "
                  f"of a {p['span_us_per_step'] / 1e3:.2f} ms span")
            for k, v in sorted(p["by_class_us"].items(), key=lambda kv: -kv[1]):
                print(f"  {k:16s} {v / 1e3:7.2f} ms")
            for t in p["top"][:15]:
                print(f"  {t['us'] / 1e3:7.3f} ms x{t['count']:<3d} {t['name'][:100]}  <- {', '.join(t['launched_by'])[:120]}")
            print(f"  idle between kernels {p['idle_us_per_step'] / 1e3:.2f} ms a step, {p['gaps_over_10us']:.0f} gaps > 10 µs; "
                  f"allocator retries {p['alloc_retries']}, device allocations {p['device_allocs']}")
            for chain, n in p.get("sum_callers", {}).items():
                print(f"  aten::sum x{n} (3 steps) called from {chain}")
            for g in p["top_gaps"]:
                print(f"  gap {g['us']:8.1f} µs after {g['after']} before {g['before']}")
    print("\nlever        median ms   min ms   peak GiB")
    for r in results:
        if "error" in r:
            print(f"{r['lever']:12s} failed")
        else:
            print(f"{r['lever']:12s} {r['median_ms']:9.2f} {r['min_ms']:8.2f} {r['peak_gib']:9.2f}")


if __name__ == "__main__":
    main()
