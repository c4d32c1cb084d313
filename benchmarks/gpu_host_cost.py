"""Host cost of eager steps against model width and activation size (a check of the calibration's
host model, which is measured on a tiny GPT and charged per block).

    python benchmarks/gpu_host_cost.py [--queue]

For a few configurations and sizes: the host seconds of one step (the call, timed without
synchronising after it, the GPU idle before it) and the wall seconds (synchronised), median of
repeats. If the host seconds per block grow with width or tokens, the calibration's host model
(per block, width-free) misses them. Prints one table.

--queue: for eager decode steps (the calibration's tiny GPT and host-bound real ones), the host
seconds of a call three ways: with the GPU idle before it (as the calibration times it), behind a
long sleep kernel (the queue busy, as inside a run of steps), and per step of a run of steps
queued back to back (wall over steps: what validate measures). If the host issues faster behind
a busy queue, a host cost measured on an idle GPU over-predicts host-bound steps.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step

CASES = (  # (label, config, kind, batch, seq, dtype)
    ("tiny C=64 12L", preset("gpt2", n_layer=12, n_embd=64, n_head=2), "prefill", 1, 8, "bf16"),
    ("gpt2 12L T=8", preset("gpt2"), "prefill", 1, 8, "bf16"),
    ("gpt2 12L T=1000", preset("gpt2"), "prefill", 1, 1000, "bf16"),
    ("gpt2-xl 48L T=8", preset("gpt2-xl"), "prefill", 1, 8, "bf16"),
    ("gpt2-xl 48L T=1000", preset("gpt2-xl"), "prefill", 1, 1000, "bf16"),
    ("gpt2-xl 48L fwd T=8", preset("gpt2-xl"), "forward", 1, 8, "bf16"),
    ("gpt2-xl 48L fwd T=640", preset("gpt2-xl"), "forward", 2, 640, "bf16"),
    ("gpt2-large 36L fwd T=768", preset("gpt2-large"), "forward", 4, 768, "bf16"),
)


QUEUE_CASES = (  # (label, config, kind, batch, seq, dtype)
    ("host model 1L fp32", preset("tiny", n_layer=1, n_embd=64, n_head=2, vocab_size=256,
                                  block_size=64), "decode", 1, 8, "fp32"),
    ("host model 4L fp32", preset("tiny", n_layer=4, n_embd=64, n_head=2, vocab_size=256,
                                  block_size=64), "decode", 1, 8, "fp32"),
    ("host model 1L bf16", preset("tiny", n_layer=1, n_embd=64, n_head=2, vocab_size=256,
                                  block_size=64), "decode", 1, 8, "bf16"),
    ("host model 4L bf16", preset("tiny", n_layer=4, n_embd=64, n_head=2, vocab_size=256,
                                  block_size=64), "decode", 1, 8, "bf16"),
    ("gpt2 decode fp32 B=12 L=640", preset("gpt2"), "decode", 12, 640, "fp32"),
    ("gpt2 decode bf16 B=1 L=1024", preset("gpt2"), "decode", 1, 1024, "bf16"),
    ("gpt2 nocache fp32 B=4 L=640", preset("gpt2"), "decode_nocache", 4, 640, "fp32"),
    ("gpt2-xl decode bf16 B=1 L=256", preset("gpt2-xl"), "decode", 1, 256, "bf16"),
)
SLEEP_CYCLES = 50_000_000  # ~25 ms of a ~2 GHz GPU: longer than any step issued behind it
QUEUE_REPEATS, QUEUE_RUN = 15, 30


def warmed_eager_step(config, kind: str, batch: int, seq: int, dtype: str,
                      dev: torch.device) -> Callable[[], None]:
    """The eager step's one phase, built and called three times."""
    run = build_step(config, Workload(kind, batch, seq, dtype), ExecutionPlan.eager(), dev).phases[0][1]
    for _ in range(3):
        run()
    return run


def queue_table(dev: torch.device) -> None:
    rows = []
    for label, config, kind, batch, seq, dtype in QUEUE_CASES:
        run = warmed_eager_step(config, kind, batch, seq, dtype, dev)
        idle, busy, steady = [], [], []
        for _ in range(QUEUE_REPEATS):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            idle.append(time.perf_counter() - t0)
            torch.cuda.synchronize()
            torch.cuda._sleep(SLEEP_CYCLES)
            t0 = time.perf_counter()
            run()
            busy.append(time.perf_counter() - t0)
            torch.cuda.synchronize()
        for _ in range(5):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(QUEUE_RUN):
                run()
            torch.cuda.synchronize()
            steady.append((time.perf_counter() - t0) / QUEUE_RUN)
        n = config.n_layer
        rows.append((label, *(statistics.median(v) / n for v in (idle, busy, steady))))
        del run
        torch.cuda.empty_cache()
    print(f"{'eager case':<30} {'idle us/blk':>12} {'busy us/blk':>12} {'run us/blk':>11}")
    for label, i, b, r in rows:
        print(f"{label:<30} {i * 1e6:12.1f} {b * 1e6:12.1f} {r * 1e6:11.1f}")


def main() -> int:
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 0
    dev = torch.device("cuda")
    if "--queue" in sys.argv[1:]:
        queue_table(dev)
        return 0
    rows = []
    for label, config, kind, batch, seq, dtype in CASES:
        run = warmed_eager_step(config, kind, batch, seq, dtype, dev)
        host, wall = [], []
        for _ in range(15):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            host.append(t1 - t0)
            wall.append(time.perf_counter() - t0)
        h, w = statistics.median(host), statistics.median(wall)
        rows.append((label, h, w, h / config.n_layer))
        del run
        torch.cuda.empty_cache()
    print(f"{'case':<26} {'host ms':>9} {'wall ms':>9} {'host/block us':>14}")
    for label, h, w, per in rows:
        print(f"{label:<26} {h * 1e3:9.3f} {w * 1e3:9.3f} {per * 1e6:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
