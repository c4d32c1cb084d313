"""Does a matmul take longer when the card has been busy? The calibration times each kernel in
bursts of about a millisecond; a device-bound step repeated for a second keeps the card drawing
power, and a power-capped card lowers its clock.

    python benchmarks/gpu_sustained_clock.py [--seconds 2]

Per dtype (bf16, fp32), gpt2-xl's four layer shapes (M = 4096 tokens, with their bias):
1. timed as the calibration times them (`KernelTimer`), the card idle before;
2. mlp.proj's shape back to back for `--seconds` (a CUDA graph of 50 calls replayed): µs a call in
   the first and last fifth of that time, and the SM clock (NVML) after every replay;
3. the four shapes timed as in 1 right after, then after 3 s idle.
Then the eager gpt2-xl forward (B=4, T=1024, bf16) under `run_bench` and the clock after it.
Prints one line a measurement; with $OUT, every figure to $OUT/sustained_clock.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from gptperf.measure.kernel_timer import (
    KernelTimer,
    MatmulPrecision,
    OperandPool,
    replay_seconds,
)
from gptperf.measure.metrics import gpu_clock_reader
from gptperf.runtime import cuda_graph

SHAPES = {"mlp.proj": (4096, 1600, 6400), "mlp.fc": (4096, 6400, 1600),
          "attn.proj": (4096, 1600, 1600), "attn.qkv": (4096, 4800, 1600)}  # (M, N, K)
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
GRAPH_CALLS = 50


@functools.cache
def _clock_reader() -> Callable[[], float] | None:
    return gpu_clock_reader()[0]


def sm_clock_mhz() -> float | None:
    """The SM clock now, from NVML (None where it cannot be read)."""
    read = _clock_reader()
    return read() if read is not None else None


def operands(pool: OperandPool, m: int, n: int, k: int) -> list:
    return pool.copies([(m, k), (n, k), (n,)])  # x, W, b


def burst_us(device: torch.device, dtype: str) -> dict[str, float]:
    """µs a call of each shape, timed as the calibration times its matmul grid."""
    timer, pool = KernelTimer(device, quick=False), OperandPool(device, TORCH_DTYPES[dtype])
    out = {}
    with MatmulPrecision(dtype):
        for name, (m, n, k) in SHAPES.items():
            sets = operands(pool, m, n, k)
            out[name] = timer(lambda j, sets=sets: F.linear(*sets[j % len(sets)])) * 1e6
    return out


def sustained(device: torch.device, dtype: str, seconds: float) -> dict[str, float | int | None]:
    """mlp.proj's shape back to back for `seconds`: µs a call early and late, clocks through it."""
    pool = OperandPool(device, TORCH_DTYPES[dtype])
    sets = operands(pool, *SHAPES["mlp.proj"])

    def calls(n: int) -> None:
        for j in range(n):
            F.linear(*sets[j % len(sets)])

    with MatmulPrecision(dtype):
        graph = cuda_graph(lambda: calls(GRAPH_CALLS), device, warmup=lambda: calls(3))
    times: list[float] = []
    clocks: list[float] = []
    end_at = time.perf_counter() + seconds
    while time.perf_counter() < end_at:
        times.append(replay_seconds(graph) * 1e6 / GRAPH_CALLS)
        clock = sm_clock_mhz()
        if clock is not None:
            clocks.append(clock)
    fifth = max(1, len(times) // 5)
    return {"replays": len(times), "first_fifth_us": statistics.median(times[:fifth]),
            "last_fifth_us": statistics.median(times[-fifth:]), "median_us": statistics.median(times),
            "clock_first_mhz": clocks[0] if clocks else None,
            "clock_median_mhz": statistics.median(clocks) if clocks else None,
            "clock_last_mhz": clocks[-1] if clocks else None}


def xl_forward_ms(device: torch.device) -> float:
    from gptperf.measure.bench import run_bench
    from gptperf.model.config import preset
    from gptperf.plan import ExecutionPlan

    result = run_bench(preset("gpt2-xl"), "forward", 4, 1024, "bf16", device, plan=ExecutionPlan.eager(),
                       warmup=3, repeats=30, calibrated=False)
    return result.step_time_s * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the sustained run")
    args = parser.parse_args()
    if not args.seconds > 0:  # also refuses nan
        parser.error(f"--seconds must be a positive number of seconds, got {args.seconds!r}")
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    report: dict[str, object] = {"device": torch.cuda.get_device_name(device), "seconds": args.seconds}

    def show(label: str, value: object) -> None:
        report[label] = value
        print(f"{label}: clock {sm_clock_mhz()} MHz; {json.dumps(value, default=str)}", flush=True)

    for dtype in TORCH_DTYPES:
        show(f"{dtype} burst, idle card (µs a call)", burst_us(device, dtype))
        show(f"{dtype} mlp.proj sustained {args.seconds:g} s", sustained(device, dtype, args.seconds))
        show(f"{dtype} burst, right after (µs a call)", burst_us(device, dtype))
        time.sleep(3)
        show(f"{dtype} burst, after 3 s idle (µs a call)", burst_us(device, dtype))
    show("gpt2-xl forward B=4 T=1024 bf16 eager (ms a step, run_bench)", xl_forward_ms(device))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "sustained_clock.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
