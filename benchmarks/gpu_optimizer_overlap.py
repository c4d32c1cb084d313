"""The fused AdamW phase of `gptperf train`'s step from an idle device: its host time and the time
to its end, for the calibration's overlap model and GPT-2 sizes (bf16 eager, B=1, T=64). Beside
the kernels' calibrated time this gives the share of the host time that runs after the kernels
start (`gptperf.measure.optimizer_overlap`; BENCHMARKS.md, "The optimizer's own overlap, ...").

    python benchmarks/gpu_optimizer_overlap.py     # CUDA; one line a model
"""

from __future__ import annotations

import statistics
import sys

import torch

from gptperf.measure.optimizer_overlap import overlap_config, time_optimizer_phase
from gptperf.model.config import preset
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step

ROUNDS, WARMUP = 14, 3


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    configs = {"overlap model": overlap_config(),
               "8 blocks of 1536": preset("tiny", n_layer=8, n_embd=1536, n_head=12, vocab_size=256,
                                          block_size=64),
               "gpt2": preset("gpt2"), "gpt2-medium": preset("gpt2-medium"), "gpt2-xl": preset("gpt2-xl")}
    for name, config in configs.items():
        plan = ExecutionPlan.default("train", "cuda", attention=config.attention)
        step = build_step(config, Workload("train", 1, 64, "bf16"), plan, dev).train
        assert step is not None
        hosts, ends = [], []
        for i in range(ROUNDS):
            host_s, end_s = time_optimizer_phase(step, dev)
            if i >= WARMUP:
                hosts.append(host_s)
                ends.append(end_s)
        tensors = sum(1 for _ in step.model.parameters())
        print(f"{name:17} {tensors:4} tensors: host {statistics.median(hosts) * 1e3:7.3f} ms, "
              f"done {statistics.median(ends) * 1e3:7.3f} ms after it began", flush=True)
        del step
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
