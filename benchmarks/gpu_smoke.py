"""GPU smoke check: environment, and gpt2 train-step time through the one train step (gptperf.steps), eager and compiled."""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import torch

from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step


def median_step_ms(runner, warmup: int = 5, repeats: int = 20) -> float:
    for _ in range(warmup):
        runner.step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        runner.step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(),
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        info["nvml"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception as err:  # noqa: BLE001 - report whatever NVML says
        info["nvml"] = f"unavailable: {err}"
    print(json.dumps(info))
    rows = []
    for attention in ("sdpa", "math"):
        for compile_ in (False, True):
            cfg = preset("gpt2", attention=attention)
            t0 = time.perf_counter()
            plan = ExecutionPlan.default("train", "cuda", compile=compile_, attention=attention,
                                         dtype="bf16")
            r = build_step(cfg, Workload("train", 12, 1024, "bf16"), plan, "cuda")
            ms = median_step_ms(r)
            rows.append((attention, compile_, ms, 12 * 1024 / ms * 1e3, time.perf_counter() - t0))
            del r
            torch.cuda.empty_cache()
    print(f"{'attention':>9} {'compile':>7} {'ms/iter':>8} {'tok/s':>10} {'wall s':>7}")
    for a, c, ms, tps, wall in rows:
        print(f"{a:>9} {c!s:>7} {ms:8.2f} {tps:10.0f} {wall:7.1f}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "smoke.json"), "w") as f:
            json.dump({"info": info, "rows": rows}, f)


if __name__ == "__main__":
    sys.exit(main())
