"""Data parallelism applied from outside the model (as torchtitan's parallelize.py): the process
group from torchrun's environment (gloo on CPU, NCCL on GPU, one process per GPU), DDP wrapping,
and a DDP communication hook that times every bucket's all-reduce.

The model (gptperf.model) knows nothing of any of this: `parallelize(model, ctx)` returns the
module to run — the model itself on one process, `DistributedDataParallel(model)` on more.
"""

from __future__ import annotations

import atexit
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

from gptperf.errors import UserError
from gptperf.runtime import resolve_device

TORCHRUN_VARS: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def distributed_env(environ: dict[str, str] | None = None) -> bool:
    """True when this process was started by torchrun (its rendezvous variables are set)."""
    env = os.environ if environ is None else environ
    return all(k in env for k in TORCHRUN_VARS)


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process torchrun did not start: the one that prints."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: `rank` of `world_size`, `local_rank` on its node, the backend
    (None without a process group) and the torch device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "backend": self.backend, "device": str(self.device)}


def init_distributed(device: str = "auto", *, timeout_s: float = 120.0) -> DistContext:
    """Join torchrun's process group when its variables are set (gloo for a CPU device, NCCL for
    CUDA with device cuda:LOCAL_RANK); otherwise a one-process context on `device`.

    `timeout_s` bounds every collective, so a rank that died cannot leave the others waiting
    for torch's default of 30 minutes."""
    if not distributed_env():
        return DistContext(0, 1, 0, None, resolve_device(device))
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                            "start at most that many processes per node (--nproc-per-node)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        extra = {"device_id": dev} if dev.type == "cuda" else {}
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **extra)
        except dist.DistBackendError as err:  # e.g. two ranks of one host on one GPU
            raise UserError(f"rank {rank}: the {backend} process group could not start: "
                            f"{backend_reason(err)}") from err
        atexit.register(_destroy)  # NCCL warns at exit about a group left alive
    return DistContext(rank, world, local, backend, dev)


def backend_reason(err: BaseException) -> str:
    """The line of a backend's error that says what went wrong (NCCL puts it after "Last error:",
    below a traceback of its own), else its first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    after = [i for i, line in enumerate(lines) if line.startswith("Last error:")]
    if after and after[-1] + 1 < len(lines):
        return lines[after[-1] + 1]
    return lines[0] if lines else type(err).__name__


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def parallelize(model: torch.nn.Module, ctx: DistContext, *, bucket_cap_mb: float | None = None) -> torch.nn.Module:
    """The module to train: `model` itself on one process, else DistributedDataParallel around
    it (gradients averaged over ranks in buckets, overlapped with backward; `bucket_cap_mb`
    None keeps DDP's 25 MiB default with its 1 MiB first bucket)."""
    if ctx.world_size == 1 or not ctx.distributed:
        return model

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # gradients as views of the buckets: no copy into them and back, half the gradient memory
    return DDP(model, device_ids=device_ids, bucket_cap_mb=bucket_cap_mb, gradient_as_bucket_view=True)


def rank_rows(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's rows of a global batch drawn alike on every rank (the same generator state):
    p processes of batch b train on exactly what one process of batch p·b would, and the data
    stream's state is one for all ranks (a checkpoint resumes on any world size)."""
    if ctx.world_size == 1:
        return t
    b = t.shape[0] // ctx.world_size
    return t[ctx.rank * b:(ctx.rank + 1) * b]


class _Clock:
    """Timestamps that mean device time: perf_counter on a CPU, CUDA events on a GPU (host time
    says nothing of when a kernel ran). `seconds(mark, origin)` after a synchronize."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event

        return time.perf_counter()

    def seconds(self, mark: Any, origin: Any) -> float:
        if self.cuda:
            return origin.elapsed_time(mark) / 1e3
        return mark - origin


class StepClock:
    """Phase stamps of one step in device time: `begin()` at its start, `mark(name)` at each
    phase's end, `end()` (after a device synchronize) gives them in seconds from the start,
    with the buckets an `AllReduceTimer` recorded (none on one process)."""

    def __init__(self, device: torch.device) -> None:
        self.clock = _Clock(device)
        self._buckets: list[dict[str, Any]] = []
        self._marks: dict[str, Any] = {}
        self._origin: Any = None

    def begin(self) -> None:
        self._buckets = []
        self._marks = {}
        self._origin = self.clock.mark()

    def mark(self, name: str) -> None:
        self._marks[name] = self.clock.mark()

    def end(self) -> dict[str, Any]:
        origin = self._origin
        buckets = [{"index": b["index"], "bytes": b["bytes"],
                    "ready_s": self.clock.seconds(b["ready"], origin),
                    "done_s": self.clock.seconds(b["done"], origin) if b["done"] is not None else None}
                   for b in self._buckets]
        return {"buckets": buckets, "marks": {k: self.clock.seconds(v, origin) for k, v in self._marks.items()}}


class AllReduceTimer(StepClock):
    """A StepClock that also times DDP's all-reduces: a communication hook that does DDP's own
    all-reduce (`allreduce_hook`: average over ranks) and stamps, for every bucket, when it
    became ready (its last gradient computed) and when its all-reduce finished.

    On a GPU the stamps are CUDA events: the ready one on the backward stream, the done one in
    the future's callback, which runs on a stream that waits for the all-reduce.
    """

    def __init__(self, ddp_model: torch.nn.Module, device: torch.device) -> None:
        super().__init__(device)

        # No annotations: DDP checks them against the real classes, and this module's are strings.
        def hook(state, bucket):  # type: ignore[no-untyped-def]
            buf = bucket.buffer()
            entry = {"index": bucket.index(), "bytes": buf.numel() * buf.element_size(),
                     "ready": self.clock.mark(), "done": None}
            self._buckets.append(entry)

            def stamp(fut: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
                entry["done"] = self.clock.mark()
                return fut.value()

            return allreduce_hook(state, bucket).then(stamp)

        ddp_model.register_comm_hook(None, hook)
