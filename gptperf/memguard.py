"""The memory guard: a step's predicted peak (gptperf.perfmodel.memory) against the memory free
on its device, before anything is allocated.

A configuration that will not fit is refused in one line with the largest batch that would; an
out-of-memory error that still happens (the prediction is an estimate) gets the same advice from
`out_of_memory_message`. Free memory is `torch.cuda.mem_get_info` plus what torch's caching
allocator holds unused on a GPU, psutil's available RAM on a CPU.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import Any

import psutil

from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.memory import max_batch, memory_breakdown
from gptperf.perfmodel.workload import Workload
from gptperf.units import GIB, MIB, TIB


def _gib(n: float) -> str:
    for scale, unit in ((TIB, "TiB"), (GIB, "GiB")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / MIB:.1f} MiB"


def _kind(device: Any) -> str:
    """A torch device's type, or a device string's ("cuda:1" -> "cuda")."""
    return getattr(device, "type", str(device).split(":")[0])


def _device_type(device: Any) -> str:
    """'cuda' or 'cpu': the device's kind, as the memory model tells them apart."""
    return "cuda" if _kind(device) == "cuda" else "cpu"


@dataclass(frozen=True)
class MemoryCheck:
    """A workload's predicted peak beside what its device has free. `processes` sharing the
    device (data-parallel ranks on one CPU) each need the peak."""

    config: GPTConfig
    workload: Workload
    device: str
    predicted_bytes: float
    available_bytes: float
    source: str
    processes: int = 1
    flag: str = "--batch"  # the flag that sets the batch, or words saying what the batch is
    plan: Any = None  # the ExecutionPlan the step runs under (None: eager)

    @property
    def fits(self) -> bool:
        return self.predicted_bytes * self.processes <= self.available_bytes

    def largest_batch(self) -> int:
        """The largest batch whose predicted peak fits what is free (0: not even one)."""
        return max_batch(self.config, self.workload, self.available_bytes / self.processes,
                         plan=self.plan, device_type=self.device_type)

    @property
    def device_type(self) -> str:
        return _device_type(self.device)

    def advice(self) -> str:
        n = self.largest_batch()
        if n == 0:
            return ("not even batch 1 fits; use a smaller model, shorter sequences or a "
                    "lower-precision --dtype, or free memory")
        how = f"{self.flag} {n}" if self.flag.startswith("--") else self.flag
        return f"the largest batch that fits is {n} ({how})"

    def describe(self) -> str:
        w = self.workload
        each = " each" if self.processes > 1 else ""
        procs = f" × {self.processes} processes" if self.processes > 1 else ""
        return (f"{w.kind} of {self.config.name} at batch {w.batch}, seq {w.seq}, {w.dtype} needs "
                f"about {_gib(self.predicted_bytes)}{each}{procs} (predicted peak), but "
                f"{self.device} has {_gib(self.available_bytes)} {self.source}")

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "predicted_bytes": self.predicted_bytes,
                "available_bytes": self.available_bytes, "source": self.source,
                "processes": self.processes, "fits": self.fits}


_last: list[MemoryCheck] = []  # this process's latest check: the advice when an allocation fails


def forget() -> None:
    """Drop the remembered check (a new command starts)."""
    _last.clear()


def available_memory(device: Any) -> tuple[float, str] | None:
    """(bytes free for a new step, where that figure comes from) on a torch device, or None
    when it cannot be told."""
    kind = _kind(device)
    try:
        if kind == "cuda":
            import torch  # deferred: loads torch

            free, _ = torch.cuda.mem_get_info(device)
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return float(free + max(0, cached)), "free (torch.cuda.mem_get_info)"
        if kind == "cpu":
            return float(psutil.virtual_memory().available), "of RAM available (psutil)"
    except Exception:  # no driver, no psutil: the run goes on unguarded
        return None
    return None


def check_memory(config: GPTConfig, workload: Workload, device: Any, *, processes: int = 1,
                 flag: str = "--batch", plan: Any = None) -> MemoryCheck | None:
    """Refuse (UserError) a workload whose predicted peak exceeds the free memory of `device`;
    return the check, or None when free memory cannot be told."""
    found = available_memory(device)
    if found is None:
        return None
    available, source = found
    predicted = memory_breakdown(config, workload, plan, _device_type(device)).total
    check = MemoryCheck(config, workload, str(device), float(predicted), available, source,
                        max(1, int(processes)), flag, plan)
    _last[:] = [check]
    if not check.fits:
        raise UserError(f"out of memory before starting: {check.describe()}; {check.advice()}")
    return check


def is_out_of_memory(err: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), the CPU allocator's failure, or Python's MemoryError."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    if isinstance(err, RuntimeError):
        text = str(err).lower()
        return "out of memory" in text or "can't allocate memory" in text
    return False


def out_of_memory_message(err: BaseException) -> str:
    """One line for an allocation that failed: what failed, and the advice of the last check."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    where = "GPU" if type(err).__name__ == "OutOfMemoryError" else "device"
    if _last and math.isfinite(_last[0].available_bytes):
        check = _last[0]
        return (f"out of {where} memory ({first}); {check.workload.kind} of {check.config.name} at "
                f"batch {check.workload.batch} was predicted to need {_gib(check.predicted_bytes)} "
                f"of {_gib(check.available_bytes)} free; {check.advice()}")
    return f"out of {where} memory ({first}); use a smaller --batch, --seq or preset"


def release_memory(device_type: str | None = None, *, compiled: bool = False) -> None:
    """Give back what the last step held before the next is built: Python's garbage, CUDA's
    cached blocks (on `device_type` "cuda"; None: whenever CUDA is there) and, after a compiled
    step, torch.compile's graphs."""
    gc.collect()
    if device_type == "cuda" or device_type is None:
        import torch  # deferred: loads torch

        if device_type == "cuda" or torch.cuda.is_available():
            torch.cuda.empty_cache()
    if compiled:
        import torch  # deferred: loads torch

        torch._dynamo.reset()
