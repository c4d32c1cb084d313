"""The host time of compiled train steps against the calibration's host model: each phase's host
seconds (forward, backward, optimizer) for the host model at 1, 4 and 22 blocks and for larger
models of the same block counts, compiled and eager, with the kernels of each forward.

    python benchmarks/gpu_compiled_host.py

The calibration measures the host cost of a compiled train step on its tiny host model at 1 and 4
blocks and charges a line through them; this shows how far that line carries to more blocks and to
steps whose inductor kernels differ (large token counts split reductions into more kernels). The
host model here runs 8 tokens, as the calibration's did until session 36; it now runs 4096
(`benchmarks/gpu_compiled_host_tokens.py` compares the two, its block counts in shared rounds). Host
seconds are `calibrate_host.time_host_parts`'s (rounds back to back, the device waited for once);
the wall is a whole step with the device waited for. Prints one table.
"""

from __future__ import annotations

import statistics
import time

import torch

from gptperf.measure.calibrate_host import time_host_parts
from gptperf.memguard import release_memory
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step

DEV = torch.device("cuda")


def config(c: int, h: int, layers: int, vocab: int, block: int = 1024) -> GPTConfig:
    return GPTConfig(n_layer=layers, n_head=h, n_embd=c, vocab_size=vocab, block_size=block)


# (label, config, batch, seq); the first three are the calibration's host model (64 wide, B=1 T=8)
CASES = [("host1", config(64, 2, 1, 256, 64), 1, 8), ("host4", config(64, 2, 4, 256, 64), 1, 8),
         ("host22", config(64, 2, 22, 256, 64), 1, 8),
         ("c448-22 B15T806", config(448, 7, 22, 8000), 15, 806),
         ("c448-22 B1T8", config(448, 7, 22, 8000), 1, 8),
         ("c448-4 B15T806", config(448, 7, 4, 8000), 15, 806),
         ("c640-4 B2T463", config(640, 10, 4, 8000), 2, 463),
         ("c64-22 B15T806", config(64, 2, 22, 256), 15, 806)]
EAGER_TOO = {"host1", "host4", "host22", "c448-22 B15T806", "c640-4 B2T463"}


def forward_kernels(parts: dict) -> int:
    """Kernels (and copies) the device ran for one forward, from the profiler's device events."""
    from gptperf.measure.device_kernels import kernels_of

    count = len(kernels_of(parts["fwd"]))
    parts["bwd"]()
    parts["opt"]()
    return count


def main() -> None:
    rows = []
    for mode in ("compiled", "eager"):
        for label, cfg, batch, seq in CASES:
            if mode == "eager" and label not in EAGER_TOO:
                continue
            plan = ExecutionPlan.default("train", "cuda", compile=mode == "compiled", dtype="bf16")
            step = build_step(cfg, Workload("train", batch, seq, "bf16"), plan, DEV)
            train = step.train
            parts = {"fwd": train.forward, "bwd": train.backward, "opt": train.optimizer_step}
            host = time_host_parts({1: parts}, list(parts), DEV, warmup=3, repeats=10)[1]
            walls = []
            for _ in range(8):
                torch.cuda.synchronize()
                start = time.perf_counter()
                for fn in parts.values():
                    fn()
                torch.cuda.synchronize()
                walls.append(time.perf_counter() - start)
            rows.append((mode, label, cfg.n_layer, host, forward_kernels(parts), statistics.median(walls)))
            print(rows[-1], flush=True)
            del step, train, parts
            release_memory("cuda", compiled=mode == "compiled")
    print("\nmode      case               L | host ms: fwd     bwd     opt | fwd kernels | µs a fwd kernel | step wall ms")
    for mode, label, layers, h, kernels, wall in rows:
        print(f"{mode:9s} {label:18s} {layers:2d} | {h['fwd'] * 1e3:12.3f} {h['bwd'] * 1e3:7.3f} "
              f"{h['opt'] * 1e3:7.3f} | {kernels:11d} | {h['fwd'] / max(kernels, 1) * 1e6:15.1f} | {wall * 1e3:12.2f}")


if __name__ == "__main__":
    main()
