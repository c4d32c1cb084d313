"""Wall time of `gptperf model` for gpt2-xl (goal: under 0.2 s), median of repeated subprocess runs.

Also times the bare interpreter (`python -c pass`) on the same machine, so the command's own
share is visible, and the library call `predict(...).to_dict()` in-process.

    python benchmarks/perfmodel_speed.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

GOAL_S = 0.2
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "gptperf model gpt2-xl (tables)": [sys.executable, "-m", "gptperf", "model", "--preset", "gpt2-xl",
                                      "--workload", "train", "--batch", "8", "--seq", "1024", "--dtype", "bf16",
                                      "--hardware", "h100-sxm"],
    "gptperf model gpt2-xl --json": [sys.executable, "-m", "gptperf", "model", "--preset", "gpt2-xl",
                                     "--workload", "train", "--batch", "8", "--seq", "1024", "--dtype", "bf16",
                                     "--hardware", "h100-sxm", "--json"],
}


def time_command(argv: list[str], repeats: int) -> list[float]:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "150"})
        if i:  # the first run warms the page cache and the bytecode cache
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"device: this machine's CPU ({os.cpu_count()} cores); median of {args.repeats} runs after one warm-up")
    results = {}
    for label, argv in COMMANDS.items():
        times = time_command(argv, args.repeats)
        results[label] = statistics.median(times)
        print(f"{label:34} median {results[label] * 1e3:7.1f} ms   min {min(times) * 1e3:7.1f} ms   "
              f"max {max(times) * 1e3:7.1f} ms")
    from gptperf.model import preset
    from gptperf.perfmodel import Workload, get_hardware, predict

    inproc = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        predict(preset("gpt2-xl"), Workload("train", 8, 1024, "bf16"), get_hardware("h100-sxm")).to_dict()
        inproc.append(time.perf_counter() - t0)
    print(f"{'predict(gpt2-xl).to_dict() in-process':34} median {statistics.median(inproc) * 1e3:7.1f} ms")
    worst = max(v for k, v in results.items() if k.startswith("gptperf"))
    print(f"\ngoal: gptperf model for gpt2-xl under {GOAL_S * 1e3:.0f} ms wall: "
          f"{'PASS' if worst < GOAL_S else 'FAIL'} (slowest median {worst * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
