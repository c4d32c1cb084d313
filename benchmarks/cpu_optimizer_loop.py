"""AdamW inside real CPU train steps against the calibration's two ways of charging it.

    python benchmarks/cpu_optimizer_loop.py [ROUNDS]

For each model, its train step (B=2, T=40, fp32, eager) runs forward and backward, then
`optimizer.step()` alone is timed (the clip and the cleared gradients stay outside it); the
prediction is read two ways, both measured here, in this process:
* the loop: torch's per-tensor AdamW timed tensor by tensor (`adamw_loop`, what a CPU calibration
  measures), summed over the model's tensors at their own sizes; on one set of tensors stepped
  call after call, and from memory, each call another copy (`adamw_loop_cold`): a step is
  charged between the two by its cache share;
* the grid of equal tensors a CPU calibration measured before (12-192 tensors, the parameters of
  one GPT block of width 32-768), read at the model's tensor and parameter counts.
Each round measures both curves and then every model's AdamW (the VM's host speed drifts between
rounds); prints last the medians over the rounds: AdamW in the step and measured / predicted.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from gptperf.hostmem import keep_freed_memory
from gptperf.measure import calibrate_optimizer as co
from gptperf.measure.calibration_plan import OPTIMIZER_BYTES_PER_PARAM, optimizer_params
from gptperf.measure.kernel_timer import KernelTimer
from gptperf.measure.probe import fork_op_s
from gptperf.model.config import preset
from gptperf.perfmodel.calibration import ADAMW_LOOP, ADAMW_LOOP_COLD
from gptperf.perfmodel.curves import Grid
from gptperf.perfmodel.workload import (
    Workload,
    count_parameter_tensors,
    count_parameters,
    parameter_sizes,
)
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import Step, build_step

MODELS = {
    "tiny-c96": preset("tiny", n_head=3, n_embd=96),
    "small-c192": preset("tiny", n_layer=2, n_head=6, n_embd=192),
    "mini-v8k": preset("gpt2", n_layer=2, n_head=6, n_embd=384, vocab_size=8000, block_size=256),
    "2 layers C 256 V 32000": preset("gpt2", n_layer=2, n_head=4, n_embd=256, vocab_size=32000),
    "gpt2": preset("gpt2"),
}
OLD_GRID_TENSORS = (12, 48, 192)
OLD_GRID_WIDTHS = (32, 64, 128, 256, 512, 768)


def old_grid(device: torch.device, timer: KernelTimer) -> Grid:
    params = tuple(optimizer_params(w, 1) for w in OLD_GRID_WIDTHS)
    seconds = tuple(timer(co.optimizer_step(device, t, p, "adamw_foreach"), nbytes=OPTIMIZER_BYTES_PER_PARAM * p)
                    for t in OLD_GRID_TENSORS for p in params)
    return Grid(("tensors", "parameters"), (OLD_GRID_TENSORS, params), seconds)


def train_step(name: str) -> Step:
    cfg = MODELS[name]
    return build_step(cfg, Workload("train", 2, 40, "fp32"),
                      ExecutionPlan.default("train", "cpu", attention=cfg.attention, dtype="fp32"), "cpu")


def adamw_in_step(step: Step, steps: int) -> float:
    """Median seconds of `optimizer.step()` between the step's own forward and backward."""
    train = step.train
    times = []
    for _ in range(steps):
        train.forward()
        train.backward()
        t0 = time.perf_counter()
        train.optimizer.step()
        times.append(time.perf_counter() - t0)
        train.optimizer.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def main() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    device = torch.device("cpu")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    steps = {name: train_step(name) for name in MODELS}
    ratios: dict[str, dict[str, list[float]]] = {name: {"loop": [], "cold": [], "grid": []} for name in MODELS}
    measured: dict[str, list[float]] = {name: [] for name in MODELS}
    for r in range(rounds):
        # the curves and the steps measured together each round: the VM's host speed drifts
        # between rounds, and a small model's AdamW is mostly its per-tensor host cost
        print(f"round {r + 1}: parallel add {fork_op_s() * 1e6:.2f} µs "
              "(out of a spell on the 2-core VM: about 4.3)", flush=True)
        loops = co.measure_optimizer_loop(device, False, None, KernelTimer(device, False))
        grid = old_grid(device, KernelTimer(device, False))
        for name, cfg in MODELS.items():
            m = adamw_in_step(steps[name], 4 if name == "gpt2" else 8)
            measured[name].append(m)
            for key, grid_key in (("loop", ADAMW_LOOP), ("cold", ADAMW_LOOP_COLD)):
                charged = sum(n * loops[grid_key].at(size) for size, n in parameter_sizes(cfg))
                ratios[name][key].append(m / charged)
            ratios[name]["grid"].append(m / grid.at(count_parameter_tensors(cfg), count_parameters(cfg)))
    print(f"medians over {rounds} rounds")
    print(f"{'model':24s} {'params':>9s} {'largest':>9s} {'AdamW':>9s} {'m/p loop':>9s} {'m/p cold':>9s} "
          f"{'m/p grid':>9s}")
    for name, cfg in MODELS.items():
        print(f"{name:24s} {count_parameters(cfg) / 1e6:8.2f}M {parameter_sizes(cfg)[0][0] / 1e6:8.2f}M "
              f"{statistics.median(measured[name]) * 1e3:7.2f}ms {statistics.median(ratios[name]['loop']):9.2f} "
              f"{statistics.median(ratios[name]['cold']):9.2f} {statistics.median(ratios[name]['grid']):9.2f}")


if __name__ == "__main__":
    main()
