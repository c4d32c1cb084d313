"""Does the host model predict the host time of big eager steps? On one GPU, each host-bound eager
step of gpt2 to gpt2-xl runs in the same rounds as the calibration's host-model parts (1 and 4
blocks; `time_host_parts`, so a drifting host hits all alike): its call time beside the host
cost the straight line through the parts predicts for its layers — for prefill also through the
host model's own prefill step.

    python benchmarks/gpu_host_models.py

In validate runs on the H200 the eager gpt2-xl forward and prefill (48 layers, bf16) measured
1.5-2.9x their predicted host time while 12- and 36-layer host-bound steps came within 0.7-1.1x.
Prints one table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from gptperf.measure.calibrate_host import HOST_LAYERS, fit_line, host_groups, time_host_parts
from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.plan import EAGER, ExecutionPlan
from gptperf.steps.build import build_step

CASES = (  # (kind, model, batch, seq, dtype): validate's host-bound eager cases and their neighbours
    ("forward", "gpt2-xl", 2, 640, "bf16"),
    ("prefill", "gpt2-xl", 1, 1000, "bf16"),
    ("forward", "gpt2-large", 4, 768, "bf16"),
    ("forward", "gpt2", 2, 640, "bf16"),
    ("prefill", "gpt2", 1, 1000, "bf16"),
    ("decode", "gpt2", 12, 640, "fp32"),
    ("decode", "gpt2-large", 24, 768, "bf16"),
)
PART = {"forward": "nograd", "prefill": "infer", "decode_nocache": "infer", "decode": "decode"}


def main() -> int:
    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")  # cpu: a smoke test
    rows = []
    for kind, model, batch, seq, dtype in CASES:
        config = preset(model)
        step = build_step(config, Workload(kind, batch, seq, dtype), ExecutionPlan.eager(), dev)
        parts = [PART[kind]] + (["prefill"] if kind == "prefill" else [])
        host_parts = host_groups(dtype, EAGER, dev, "inference")  # the calibration's own parts
        groups: dict[int, dict[str, Callable[[], None]]] = {
            n: {p: host_parts[n][p] for p in parts} for n in HOST_LAYERS}
        groups[0] = {"case": step.step}  # the case's own step in the same rounds: same host speed
        times = time_host_parts(groups, [*parts, "case"], dev, warmup=3, repeats=15)
        measured = times[0]["case"]
        predicted = {}
        for p in parts:
            fit = fit_line(times[HOST_LAYERS[0]][p], times[HOST_LAYERS[1]][p])
            predicted[p] = fit["fixed_s"] + fit["per_layer_s"] * config.n_layer
        label = f"{kind} {model} {dtype} B={batch} {'L' if kind.startswith('decode') else 'T'}={seq}"
        rows.append((label, config.n_layer, measured, predicted,
                     {p: (times[HOST_LAYERS[0]][p], times[HOST_LAYERS[1]][p]) for p in parts}))
        print(label, f"{measured * 1e3:.2f} ms", {p: f"{v * 1e3:.2f}" for p, v in predicted.items()}, flush=True)
        del step, groups, host_parts
        torch.cuda.empty_cache()
    print(f"\n{'eager step (H200), host-bound':42} {'layers':>6} {'call ms':>8} {'part':>8} "
          f"{'pred ms':>8} {'call/pred':>9} {'1 block µs':>10} {'4 blocks µs':>11}")
    for label, n, measured, predicted, raw in rows:
        for p, pred in predicted.items():
            t1, t4 = raw[p]
            print(f"{label:42} {n:6d} {measured * 1e3:8.2f} {p:>8} {pred * 1e3:8.2f} {measured / pred:9.2f} "
                  f"{t1 * 1e6:10.0f} {t4 * 1e6:11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
