"""The master weights' update three ways, on the copied tensors of GPT shapes (the blocks' Linear
weights and biases, bf16 gradients, fp32 copies):

* casts: the bf16 gradients cast into fp32 copies, AdamW's fused kernel, the copies cast back
  (`MasterWeights.gradients_in`, the optimizer, `weights_out`: the plan without
  `fused_master_update`);
* one pass: `gptperf.steps.master_adamw.MasterAdamW` (the default), with a gradient scale and a
  skip flag as the train step passes them;
* torch's fused AdamW on fp32 tensors of the same shapes, and on the calibration's tensors of
  equal size (its optimizer grid's point): what the model charges the one pass with when the
  calibration has no `adamw_master` grid.

    python benchmarks/gpu_master_adamw.py             # CUDA; gpt2, gpt2-medium, gpt2-xl

Each update is timed with CUDA events over 20 calls after 5 (median of 7 repeats); bandwidth
counts 28 bytes a parameter for the one pass and fused AdamW, 40 for the casts path. Prints one
table.
"""

from __future__ import annotations

import statistics

import torch

from gptperf.measure.calibrate_optimizer import optimizer_step
from gptperf.model import preset
from gptperf.perfmodel.workload import master_copied_parameters, master_copied_tensors
from gptperf.steps.master_adamw import MasterAdamW
from gptperf.steps.train import TrainSettings, make_optimizer

CONFIGS = {name: preset(name) for name in ("gpt2", "gpt2-medium", "gpt2-xl")}


def shapes(config) -> list[tuple[int, ...]]:
    c = config.n_embd
    layer = [(3 * c, c), (3 * c,), (c, c), (c,), (4 * c, c), (4 * c,), (c, 4 * c), (c,)]
    return layer * config.n_layer


def per_call_ms(fn, calls: int = 20, repeats: int = 7) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def casts_update(weights: list[torch.nn.Parameter], settings: TrainSettings, scale: torch.Tensor,
                 found: torch.Tensor):
    """The update without `fused_master_update`: gradients cast in, AdamW's kernel, copies cast out."""
    copies = [w.detach().float().requires_grad_(True) for w in weights]
    for c in copies:
        c.grad = torch.zeros_like(c)
    opt = make_optimizer(copies, settings, fused=True)

    def update() -> None:
        torch._foreach_copy_([c.grad for c in copies], [w.grad for w in weights])
        opt.grad_scale, opt.found_inf = scale, found
        opt.step()
        with torch.no_grad():
            torch._foreach_copy_(weights, copies)
    return update


def one_pass_update(weights: list[torch.nn.Parameter], settings: TrainSettings, scale: torch.Tensor,
                    found: torch.Tensor):
    copies = [w.detach().float().requires_grad_(True) for w in weights]
    one = MasterAdamW(weights, copies, make_optimizer(copies, settings, fused=True))
    return lambda: one.step(scale, found)


def fused_update(sh: list[tuple[int, ...]], settings: TrainSettings):
    """torch's fused AdamW on fp32 parameters of these shapes."""
    fp32 = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in sh]
    for p in fp32:
        p.grad = torch.randn_like(p) * 1e-3
    return make_optimizer(fp32, settings, fused=True).step


def timed(make) -> float:
    """ms a call of the update `make()` builds; its memory handed back after."""
    ms = per_call_ms(make())
    torch.cuda.empty_cache()
    return ms


def measure(name: str, config) -> dict[str, float]:
    dev = torch.device("cuda")
    settings = TrainSettings(lr=3e-4, weight_decay=0.1)
    sh = shapes(config)
    q = sum(torch.Size(s).numel() for s in sh)
    assert q == master_copied_parameters(config) and len(sh) == master_copied_tensors(config)
    weights = [torch.nn.Parameter(torch.randn(s, device=dev).to(torch.bfloat16)) for s in sh]
    for w in weights:
        w.grad = torch.randn(w.shape, device=dev).to(torch.bfloat16) * 1e-3
    scale, found = torch.ones((), device=dev), torch.zeros((), device=dev)
    grid_point = optimizer_step(dev, len(sh), q, "adamw_fused")  # as `gptperf calibrate` times it
    out = {"params_m": q / 1e6,
           "casts_ms": timed(lambda: casts_update(weights, settings, scale, found)),
           "one_pass_ms": timed(lambda: one_pass_update(weights, settings, scale, found)),
           "fused_same_shapes_ms": timed(lambda: fused_update(sh, settings)),
           "fused_grid_point_ms": timed(lambda: lambda: grid_point(0))}
    print(f"{name}: {out}", flush=True)
    return out


def main() -> None:
    rows = {name: measure(name, cfg) for name, cfg in CONFIGS.items()}
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}; ms a call (TB/s)")
    print(f"{'shape':9s} {'params':>8s} {'casts':>15s} {'one pass':>15s} {'fused, shapes':>15s} {'fused, grid':>15s}")
    for name, r in rows.items():
        def cell(ms: float, per_param: int, q: float = r["params_m"] * 1e6) -> str:
            return f"{ms:7.3f} ({per_param * q / ms / 1e9:4.2f})"

        print(f"{name:9s} {r['params_m']:7.1f}M {cell(r['casts_ms'], 40):>15s} {cell(r['one_pass_ms'], 28):>15s} "
              f"{cell(r['fused_same_shapes_ms'], 28):>15s} {cell(r['fused_grid_point_ms'], 28):>15s}")


if __name__ == "__main__":
    main()
