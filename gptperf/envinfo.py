"""The environment a measurement was taken in: device, versions, commit, threads (for every JSON)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from gptperf import __version__, hostmem


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Any) -> str:
    """The card's name on CUDA (e.g. 'NVIDIA H100 80GB HBM3'), the CPU's model name on CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the gptperf checkout, when it runs from one."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: Any = None) -> dict[str, Any]:
    """A JSON-ready description of where a number came from."""
    import torch

    env: dict[str, Any] = {
        "gptperf": __version__,
        "commit": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pid_cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "host_memory": hostmem.policy(),
    }
    if device is not None:
        env["device_type"] = torch.device(device).type
        env["device"] = device_name(torch.device(device))
    return env
