"""The kernels one call runs on the GPU, in launch order, from torch.profiler's device events."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from gptperf.quiet import profiler_quiet


@dataclass(frozen=True)
class Kernel:
    """One kernel (or copy, or memset) the device ran: its name and when, in the profiler's µs."""

    name: str
    start_us: float
    duration_us: float

    @property
    def end_us(self) -> float:
        return self.start_us + self.duration_us


def device_kernels(events: Collection[Any]) -> list[Kernel]:
    """The device's own events of a profile (`prof.events()`), sorted by start. A
    record_function range is mirrored onto the GPU timeline as a device event too: those are
    ranges, not kernels, and are left out."""
    import torch  # deferred: loads torch

    ranges = {e.name for e in events if getattr(e, "is_user_annotation", False)}
    kernels = [Kernel(e.name, e.time_range.start, e.time_range.elapsed_us()) for e in events
               if e.device_type == torch.autograd.DeviceType.CUDA and e.name not in ranges]
    return sorted(kernels, key=lambda k: k.start_us)


def kernels_of(run: Callable[[], object]) -> list[Kernel]:
    """The kernels of one call of `run` on the current CUDA device: the device synchronised
    before and after, so that nothing queued earlier lands in the profile and nothing of this
    call is left out of it."""
    import torch  # deferred: loads torch
    from torch.profiler import ProfilerActivity, profile  # deferred: loads torch

    torch.cuda.synchronize()
    with profiler_quiet(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return device_kernels(list(prof.events()))
