"""Real compiled train steps' host time per phase against the calibration's host-model line,
measured at two token counts, all in the same rounds.

    python benchmarks/gpu_compiled_host_tokens.py

The calibration charges a compiled step's host time on a line through its host model (C 64, 2
heads) at 1 and 4 blocks. At 8 tokens inductor makes one kernel of each weight gradient's sum over
tokens; at thousands of tokens it splits it into more, each a launch the host pays. This measures
the host model at B 1 T 8, B 4 T 256 and B 8 T 512 and four real steps, every one's phases
interleaved round by round (`calibrate_host.time_host_parts`: a spell of the host hits all alike),
and prints each line's charge over each real step's host seconds, then the kernels of every phase.
"""

from __future__ import annotations

import statistics
import time

import torch

from gptperf.measure.calibrate_host import fit_line, time_host_parts
from gptperf.measure.device_kernels import kernels_of
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step

DEV = torch.device("cuda")
PARTS = ("fwd", "bwd", "opt")
# Many models of one forward's code compiled in one process: each keeps its own static graph
# (a shape change would otherwise recompile them all with dynamic shapes).
torch._dynamo.config.cache_size_limit = 64
torch._dynamo.config.automatic_dynamic_shapes = False


def gpt(c: int, h: int, layers: int, vocab: int, block: int = 1024) -> GPTConfig:
    return GPTConfig(n_layer=layers, n_head=h, n_embd=c, vocab_size=vocab, block_size=block)


def host_model(layers: int) -> GPTConfig:
    return gpt(64, 2, layers, 256, 512)


# name -> (config, batch, seq); each line is (name at 1 block, name at 4 blocks)
LINES = {"T8": ("host1 B1T8", "host4 B1T8"), "B4T256": ("host1 B4T256", "host4 B4T256"),
         "B8T512": ("host1 B8T512", "host4 B8T512")}
CASES = {"host1 B1T8": (host_model(1), 1, 8), "host4 B1T8": (host_model(4), 1, 8),
         "host1 B4T256": (host_model(1), 4, 256), "host4 B4T256": (host_model(4), 4, 256),
         "host1 B8T512": (host_model(1), 8, 512), "host4 B8T512": (host_model(4), 8, 512),
         "c448-22L B15T806": (gpt(448, 7, 22, 8000), 15, 806),
         "c640-4L B2T463": (gpt(640, 10, 4, 8000), 2, 463),
         "c768-6L B10T768": (gpt(768, 12, 6, 50304), 10, 768),
         "c768-13L B4T747": (gpt(768, 12, 13, 50304), 4, 747)}
REAL = [name for name in CASES if not name.startswith("host")]


def kernels(parts: dict) -> dict[str, int]:
    """Device kernels of one call of each phase."""
    return {name: len(kernels_of(fn)) for name, fn in parts.items()}


def main() -> None:
    groups = {}
    for name, (config, batch, seq) in CASES.items():
        plan = ExecutionPlan.default("train", "cuda", compile=True, dtype="bf16")
        train = build_step(config, Workload("train", batch, seq, "bf16"), plan, DEV).train
        groups[name] = {"fwd": train.forward, "bwd": train.backward, "opt": train.optimizer_step}
    start = time.perf_counter()
    time_host_parts(groups, [], DEV, warmup=3, repeats=0)  # compiles every step
    print(f"compiled and warmed up in {time.perf_counter() - start:.0f} s", flush=True)
    counts = {name: kernels(parts) for name, parts in groups.items()}
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(3):
        host = time_host_parts(groups, list(PARTS), DEV, warmup=1, repeats=10)
        for part in PARTS:
            for line_name, (one, four) in LINES.items():
                line = fit_line(host[one][part], host[four][part])
                for name in REAL:
                    charged = line["fixed_s"] + CASES[name][0].n_layer * line["per_layer_s"]
                    ratios.setdefault((name, part, line_name), []).append(charged / host[name][part])
    print("\neach line's charge over the step's host seconds (median of 3 sets of 10 rounds; 1.00: right)")
    print(f"{'step':18s} {'phase':5s} " + " ".join(f"{n:>8s}" for n in LINES))
    for name in REAL:
        for part in PARTS:
            print(f"{name:18s} {part:5s} " + " ".join(
                f"{statistics.median(ratios[(name, part, n)]):8.2f}" for n in LINES))
    print("\nkernels a call: fwd / bwd / opt")
    for name, c in counts.items():
        print(f"{name:18s} {c['fwd']:4d} {c['bwd']:4d} {c['opt']:4d}")


if __name__ == "__main__":
    main()
