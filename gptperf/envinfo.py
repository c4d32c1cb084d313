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


def last_level_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """Bytes of the CPU's last-level cache as Linux lists it for core 0 (its highest level's
    data or unified cache); 0 where it is not listed."""
    best = (0, 0)
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or not size:
            continue
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1].upper(), 1)
        try:
            nbytes = int(size.rstrip("KkMmGg")) * scale
        except ValueError:
            continue
        best = max(best, (level, nbytes))
    return best[1]


def device_name(device: Any) -> str:
    """The card's name on CUDA (e.g. 'NVIDIA H100 80GB HBM3'), the CPU's model name on CPU."""
    import torch  # deferred: loads torch

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
    import torch  # deferred: loads torch

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
