"""A CUDA-graph step timed four ways: the host's seconds per call, the wall per call of a run, the
events around each call of a run (as `bench` times a graph step), the same behind a sleep kernel
(the device surely ahead), and `run_bench`'s figure; beside the calibrated prediction.

    python benchmarks/gpu_graph_step_timing.py [CALIBRATION.json]

For small decode, recompute and prefill steps (bf16, the `fast` plan: the fused decode kernels at
batch 1, a compiled graph otherwise) and gpt2's fused decode step. Timed one at a time after a
synchronisation, a graph step also holds the host's time to reach the idle device; `bench` times
graph steps in a run (`time_phases(in_a_run=True)`) since session 35. Without a calibration file
the prediction column is left out. Prints one table.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from gptperf.errors import UserError
from gptperf.measure.bench import run_bench
from gptperf.memguard import release_memory
from gptperf.model.config import GPTConfig, preset
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import expected
from gptperf.perfmodel.workload import Workload
from gptperf.steps.build import build_step
from gptperf.validate.sweep import plan_for

CALLS = 300
SLEEP_CYCLES = 200_000_000  # ~100 ms: the host queues every call before the device reaches one


def config(c: int, h: int, layers: int, vocab: int = 50304) -> GPTConfig:
    return GPTConfig(n_layer=layers, n_head=h, n_embd=c, vocab_size=vocab, block_size=1024)


CASES = [("decode", config(192, 3, 2), 21, 999), ("decode", config(192, 3, 2), 1, 999),
         ("decode", config(768, 12, 2), 1, 512), ("decode", config(768, 12, 2), 8, 512),
         ("decode_nocache", config(192, 3, 2), 2, 64), ("prefill", config(192, 3, 2), 1, 32),
         ("decode", preset("gpt2"), 1, 1024), ("decode", config(1408, 22, 5, 65), 5, 610)]


def per_call_s(fn: Callable[[], None], wait: bool) -> float:
    """Median over 5 runs of CALLS calls of the seconds per call: host only (`wait` False: the
    clock stops before the device is waited for) or wall."""
    runs = []
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(CALLS):
            fn()
        if wait:
            torch.cuda.synchronize()
        runs.append((time.perf_counter() - start) / CALLS)
        torch.cuda.synchronize()
    return statistics.median(runs)


def events_s(fn: Callable[[], None], behind_sleep: bool) -> float:
    """Median seconds between events around each call of a run of CALLS."""
    torch.cuda.synchronize()
    if behind_sleep:
        torch.cuda._sleep(SLEEP_CYCLES)
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
             for _ in range(CALLS)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) / 1e3 for s, e in pairs)


def load(path: str) -> Calibration:
    """The calibration document at `path`; a missing or broken one is a one-line exit (status 2)."""
    try:
        return Calibration.from_dict(json.loads(open(path).read()))
    except (OSError, ValueError, UserError) as err:
        print(f"gpu_graph_step_timing: cannot read the calibration {path!r} ({err}); give a "
              "`gptperf calibrate` document, e.g. $GPTPERF_CACHE_DIR/calibration/<device>.json",
              file=sys.stderr)
        sys.exit(2)


def main() -> None:
    cal = load(sys.argv[1]) if len(sys.argv) > 1 else None
    dev = torch.device("cuda")
    rows = []
    for kind, cfg, batch, seq in CASES:
        plan = plan_for(kind, batch, "bf16", "cuda", "fast", cfg.attention)
        workload = Workload(kind, batch, seq, "bf16")
        step = build_step(cfg, workload, plan, dev)
        fn = step.phases[0][1]
        for _ in range(20):
            fn()
        row = (kind, cfg.n_embd, cfg.n_layer, batch, seq, per_call_s(fn, False), per_call_s(fn, True),
               events_s(fn, False), events_s(fn, True),
               run_bench(cfg, kind, batch, seq, "bf16", dev, plan=plan, calibrated=False).step_time_s,
               expected(cfg, workload, plan, cal).step_time_s if cal else float("nan"))
        rows.append(row)
        print(row, flush=True)
        del step, fn
        release_memory("cuda", compiled=True)
    print("\nkind            C    L  B    ctx | host/call  wall/call  events  events(queued)  bench | calibrated  (µs)")
    for r in rows:
        print(f"{r[0]:15s} {r[1]:4d} {r[2]:3d} {r[3]:3d} {r[4]:5d} | " + " ".join(f"{v * 1e6:9.1f}" for v in r[5:]))


if __name__ == "__main__":
    main()
