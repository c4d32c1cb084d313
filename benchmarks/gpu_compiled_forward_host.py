"""Real compiled forward steps' host time against the calibration's compiled host-model line,
all in the same rounds, with the kernels each call launches.

    python benchmarks/gpu_compiled_forward_host.py

The calibration charges a compiled forward (no grad) the host seconds of a line through its host
model (C 64, 2 heads, B 8, T 512) at 1 and 4 blocks, in bf16 (past 4 blocks, since session 65, the
slope to its 16-block point), and a compiled fp32 forward the eager fp32 forward's line. Drawn
compiled forwards of 13-23 blocks have read 1.16-1.27x their prediction while host-bound
(BENCHMARKS.md, the random sweeps). This times the compiled host model at 1, 4 and 16 blocks in
bf16 and in fp32, the eager fp32 one at 1 and 4, and such drawn steps, every one interleaved round
by round (`calibrate_host.time_host_parts`: a spell of the host hits all alike), and prints each
step's host seconds, its kernels a call, its host seconds a kernel and each 1-4 line's charge over
its host seconds (1.00: right). On an H100 (session 65) a compiled fp32 host-model line charged
real fp32 forwards 0.78-0.85 of their host time and the eager fp32 line 0.89-0.99: a compiled
fp32 job was tried and not kept.
"""

from __future__ import annotations

import statistics
import time

import torch

from gptperf.measure.calibrate_host import (
    COMPILED_BATCH,
    COMPILED_SEQ,
    HOST_LAYERS,
    fit_line,
    host_config,
    host_groups,
    time_host_parts,
)
from gptperf.measure.device_kernels import kernels_of
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.calibration import HOST_DEEP_LAYERS, host_line_s
from gptperf.perfmodel.workload import Workload
from gptperf.plan import EAGER, ExecutionPlan
from gptperf.steps.build import build_step

DEV = torch.device("cuda")
# Many models of one forward's code compiled in one process: each keeps its own static graph.
torch._dynamo.config.cache_size_limit = 64
torch._dynamo.config.automatic_dynamic_shapes = False


def gpt(c: int, h: int, layers: int, vocab: int, block: int = 1024) -> GPTConfig:
    return GPTConfig(n_layer=layers, n_head=h, n_embd=c, vocab_size=vocab, block_size=block)


# name -> (config, batch, seq, dtype); the host models are the calibration's
HOST = {f"host{n} {dt}": (host_config(n, "compiled"), COMPILED_BATCH, COMPILED_SEQ, dt)
        for dt in ("bf16", "fp32") for n in (*HOST_LAYERS, HOST_DEEP_LAYERS)}
REAL = {"c800h10-14L-v65 B2T312": (gpt(800, 10, 14, 65), 2, 312, "bf16"),
        "c640h5-21L B4T300": (gpt(640, 5, 21, 8000), 4, 300, "bf16"),
        "c1024h16-19L B10T295": (gpt(1024, 16, 19, 50304), 10, 295, "bf16"),
        "c256h4-23L B2T200": (gpt(256, 4, 23, 8000), 2, 200, "fp32"),
        "c896h14-10L B2T242": (gpt(896, 14, 10, 50304), 2, 242, "fp32"),
        "c512h4-11L B2T146": (gpt(512, 4, 11, 8000), 2, 146, "fp32"),
        "c768h12-12L B4T256": (gpt(768, 12, 12, 50304), 4, 256, "fp32")}
CASES = HOST | REAL


def main() -> None:
    groups = {}
    for name, (config, batch, seq, dtype) in CASES.items():
        plan = ExecutionPlan.default("forward", "cuda", compile=True, dtype=dtype)
        step = build_step(config, Workload("forward", batch, seq, dtype), plan, DEV)
        groups[name] = {"nograd": step.phases[0][1]}
    # the eager fp32 forward's line, which the calibration charges compiled fp32 forwards
    eager = host_groups("fp32", EAGER, DEV, "inference")
    for n in HOST_LAYERS:
        groups[f"eager{n} fp32"] = {"nograd": eager[n]["nograd"]}
    start = time.perf_counter()
    time_host_parts(groups, [], DEV, warmup=3, repeats=0)  # compiles every step
    print(f"compiled and warmed up in {time.perf_counter() - start:.0f} s", flush=True)
    counts = {name: len(kernels_of(parts["nograd"])) for name, parts in groups.items()}
    sets = [time_host_parts(groups, ["nograd"], DEV, warmup=1, repeats=15) for _ in range(3)]
    host = {name: statistics.median(s[name]["nograd"] for s in sets) for name in groups}
    lo, hi = HOST_LAYERS
    lines = {dt: fit_line(host[f"host{lo} {dt}"], host[f"host{hi} {dt}"]) for dt in ("bf16", "fp32")}
    lines["eager fp32"] = fit_line(host[f"eager{lo} fp32"], host[f"eager{hi} fp32"])
    for what, line in lines.items():
        print(f"line {what:10s}: fixed {line['fixed_s'] * 1e6:4.0f} µs + {line['per_layer_s'] * 1e6:4.0f} µs a block")

    def charge(line: dict[str, float], layers: int, seconds: float) -> str:
        return f"{host_line_s(line, layers) / seconds:6.2f}"

    print(f"\n{'step':24s} {'dtype':5s} {'host µs':>8s} {'kernels':>7s} {'µs/kernel':>9s}  charge/host by line: "
          f"{'own':>6s} {'bf16':>6s} {'eager fp32':>10s}")
    for name, (config, _b, _s, dtype) in CASES.items():
        print(f"{name:24s} {dtype:5s} {host[name] * 1e6:8.0f} {counts[name]:7d} "
              f"{host[name] / counts[name] * 1e6:9.2f}  {'':20s} {charge(lines[dtype], config.n_layer, host[name])} "
              f"{charge(lines['bf16'], config.n_layer, host[name])} "
              f"{charge(lines['eager fp32'], config.n_layer, host[name]):>10s}")


if __name__ == "__main__":
    main()
