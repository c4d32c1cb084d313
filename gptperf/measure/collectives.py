"""All-reduce sweep over message sizes on the running process group (gloo on CPU, NCCL on GPU),
with nccl-tests' algbw and busbw per size and the α–β fit (`perfmodel.comm.fit_alpha_beta`).

Call it from every rank of a torchrun job (`gptperf.scaling.worker` does, before training); each
size's time is the median over repeats of one all-reduce, the slowest rank's (a collective ends
when its last rank does). A sweep whose times do not grow with the message size gives no
bandwidth; it is measured again, up to `SWEEP_ATTEMPTS` times: on the 2-core development VM gloo's
median all-reduce of 4 KiB took 0.3–4.0 ms from one sweep to the next (the scheduler stalls a
rank), and one sweep in a CI run read no growth at all.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptperf.errors import UserError
from gptperf.perfmodel.comm import AlphaBeta, algbw, busbw, fit_alpha_beta

CPU_SIZES: tuple[int, ...] = tuple(4 ** k * 1024 for k in range(1, 7))  # 4 KiB .. 4 MiB
CUDA_SIZES: tuple[int, ...] = tuple(4 ** k * 1024 for k in range(1, 10))  # 4 KiB .. 256 MiB
SWEEP_ATTEMPTS = 3


@dataclass(frozen=True)
class CollectivePoint:
    """One message size: bytes, median seconds per all-reduce (slowest rank), algbw, busbw."""

    bytes: int
    time_s: float
    algbw: float
    busbw: float

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "time_s": self.time_s, "algbw_bytes_per_s": self.algbw,
                "busbw_bytes_per_s": self.busbw}


@dataclass
class CollectiveSweep:
    """An all-reduce sweep on `world_size` ranks over `backend`, and its α–β fit."""

    backend: str
    world_size: int
    device: str
    dtype: str
    points: list[CollectivePoint]
    fit: AlphaBeta | None
    repeats: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "gptperf.collectives/1", "collective": "all_reduce", "backend": self.backend,
                "world_size": self.world_size, "device": self.device, "dtype": self.dtype,
                "repeats": self.repeats, "points": [p.to_dict() for p in self.points],
                "fit": self.fit.to_dict() if self.fit is not None else None, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CollectiveSweep:
        points = [CollectivePoint(p["bytes"], p["time_s"], p["algbw_bytes_per_s"], p["busbw_bytes_per_s"])
                  for p in d["points"]]
        fit = AlphaBeta.from_dict(d["fit"]) if d.get("fit") else None
        return cls(d["backend"], d["world_size"], d["device"], d["dtype"], points, fit, d["repeats"],
                   list(d.get("notes", [])))


def allreduce_sweep(sizes: Sequence[int] | None = None, *, warmup: int = 2, repeats: int = 10,
                    device: Any = None) -> CollectiveSweep:
    """Time `dist.all_reduce` (sum, fp32) for each size in bytes on the default process group,
    and fit α, β. Every rank must call it with the same arguments."""
    import torch  # deferred: loads torch
    import torch.distributed as dist  # deferred: loads torch

    backend = str(dist.get_backend())
    p = dist.get_world_size()
    dev = torch.device(device if device is not None else ("cuda" if backend == "nccl" else "cpu"))
    if sizes is None:
        sizes = CUDA_SIZES if dev.type == "cuda" else CPU_SIZES

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def sweep() -> list[CollectivePoint]:
        points = []
        for nbytes in sizes:
            buf = torch.zeros(max(1, nbytes // 4), dtype=torch.float32, device=dev)
            for _ in range(warmup):
                dist.all_reduce(buf)
            sync()
            dist.barrier()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                dist.all_reduce(buf)
                sync()
                times.append(time.perf_counter() - t0)
            slowest = torch.tensor([statistics.median(times)], dtype=torch.float64, device=dev)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # every rank holds the same times
            t = float(slowest.item())
            n = buf.numel() * 4
            points.append(CollectivePoint(n, t, algbw(n, t), busbw(n, t, p)))
        return points

    if p == 1:
        return CollectiveSweep(backend, p, dev.type, "fp32", sweep(), None, repeats,
                               ["one rank: an all-reduce moves nothing, no α–β fit"])
    points, fit, notes = fitted_sweep(sweep, p, f"measured: {backend} all-reduce sweep on {p} ranks "
                                                f"({dev.type})")
    return CollectiveSweep(backend, p, dev.type, "fp32", points, fit, repeats, notes)


def fitted_sweep(sweep: Callable[[], list[CollectivePoint]], p: int, source: str,
                 attempts: int = SWEEP_ATTEMPTS) -> tuple[list[CollectivePoint], AlphaBeta, list[str]]:
    """(points, α–β fit, notes) of the first of up to `attempts` sweeps whose times fit a
    bandwidth; the last one's UserError when none does. Every rank sees the same times (the
    slowest rank's), so every rank measures again or stops alike."""
    if attempts < 1:
        raise UserError(f"attempts must be at least 1, got {attempts}")
    notes: list[str] = []
    for attempt in range(1, attempts + 1):
        points = sweep()
        try:
            return points, _fit(points, p, source), notes
        except UserError as err:
            if attempt == attempts:
                raise UserError(f"{err} (in {attempts} sweeps: a busy or noisy machine)") from err
            notes.append(f"all-reduce sweep {attempt}: {err}; measured again")
    raise AssertionError("unreachable: the last attempt returns or raises")


def _fit(points: list[CollectivePoint], p: int, source: str) -> AlphaBeta:
    return fit_alpha_beta([pt.bytes for pt in points], [pt.time_s for pt in points], p, source=source)
