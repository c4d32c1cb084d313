"""How much of an eager optimizer step's host time runs after its kernels have started.

A train step's optimizer phase is not host work followed by device work: torch's fused AdamW
loops over the tensors in Python, then launches its multi-tensor kernels from a C++ loop that
keeps working on the host while the first of them run, and the step ends by clearing the
gradients. A large share of the host time runs beside the kernels, and charging the kernels
after all of it over-predicted eager gpt2-xl train steps (BENCHMARKS.md, "The optimizer's own
overlap, the static cache's masked attention, the forward recording kept").

`measure_optimizer_overlap` times the train step's optimizer phase on `OVERLAP_MODEL` (wide
enough that its kernels outlast that share of its host time) three ways: its host time, its time
to completion from an idle device, and its kernels alone, queued behind a sleeping kernel so the
host is out of their way. The share follows (`overlap_share`); `perfmodel.expected` issues the
optimizer's kernels after the rest of its host time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from gptperf.errors import UserError
from gptperf.model.config import preset
from gptperf.perfmodel.workload import Workload, count_parameters
from gptperf.plan import ExecutionPlan

# 4 blocks of C = 2048: 52 tensors, 202M fp32 parameters (3.2 GB with gradients and moments);
# its AdamW kernels take ~2 ms on an H200, its host ~1-2 ms.
OVERLAP_MODEL: dict[str, int] = {"n_layer": 4, "n_embd": 2048, "n_head": 16, "vocab_size": 256,
                                 "block_size": 64}
OVERLAP_BATCH, OVERLAP_SEQ = 1, 8
BYTES_PER_PARAMETER = 20  # fp32 weight, gradient, two moments, and room for the step's temporaries
WARMUP, ROUNDS = 3, 7
SLEEP_CYCLES = 50_000_000  # ~25 ms at 2 GHz: the host issues the whole phase before it ends


def overlap_share(host_s: float, end_s: float, device_s: float) -> float:
    """The share of the host time `host_s` that ran after the kernels began, when the phase ended
    `end_s` after it started and its kernels take `device_s` back to back: the kernels began at
    end − device, so host − (end − device) of the host time came after; clamped to [0, 1] (a
    phase whose kernels hid under its host says only that the share is at least that)."""
    if host_s <= 0:
        raise UserError(f"host time must be positive, got {host_s!r} s")
    return min(max((host_s + device_s - end_s) / host_s, 0.0), 1.0)


def overlap_config() -> Any:
    """The GPTConfig of `OVERLAP_MODEL`."""
    return preset("tiny", **OVERLAP_MODEL)


def measure_optimizer_overlap(device: torch.device, rounds: int = ROUNDS) -> dict[str, Any]:
    """{"share", "host_s", "end_s", "device_s", "config", "tensors", "parameters"} of the fused
    AdamW phase of `gptperf train`'s step on `OVERLAP_MODEL`, medians over `rounds` (CUDA only;
    a one-line UserError on a CPU or where the model does not fit)."""
    from gptperf.steps.build import build_step  # deferred: tests patch it

    if device.type != "cuda":
        raise UserError(f"the optimizer's overlap is measured on a CUDA GPU, not {device.type!r}")
    config = overlap_config()
    params = count_parameters(config)
    free, _ = torch.cuda.mem_get_info(device)
    if BYTES_PER_PARAMETER * params > 0.8 * free:
        raise UserError(f"the overlap model needs {BYTES_PER_PARAMETER * params / 1e9:.1f} GB of GPU "
                        f"memory; {free / 1e9:.1f} GB are free")
    plan = ExecutionPlan.default("train", "cuda", attention=config.attention)
    step = build_step(config, Workload("train", OVERLAP_BATCH, OVERLAP_SEQ, "fp32"), plan, device).train
    assert step is not None  # a train step always has one
    for _ in range(WARMUP):
        step.run()
    hosts, ends, devices = [], [], []
    for _ in range(rounds):
        host_s, end_s = time_optimizer_phase(step, device)
        hosts.append(host_s)
        ends.append(end_s)
        devices.append(_kernels_alone(step, device))
    host_s, end_s, device_s = (statistics.median(v) for v in (hosts, ends, devices))
    out = {"share": overlap_share(host_s, end_s, device_s), "host_s": host_s, "end_s": end_s,
           "device_s": device_s, "config": config.name,
           "tensors": sum(1 for _ in step.model.parameters()),
           "parameters": sum(p.numel() for p in step.model.parameters())}
    del step
    torch.cuda.empty_cache()
    return out


def time_optimizer_phase(step: Any, device: torch.device) -> tuple[float, float]:
    """(host seconds, seconds to its end) of one optimizer phase of a train step (`TrainStep`),
    started from an idle device after a fresh forward and backward."""
    _gradients(step, device)
    start = time.perf_counter()
    step.optimizer_step()
    host_s = time.perf_counter() - start
    torch.cuda.synchronize(device)
    return host_s, time.perf_counter() - start


def _gradients(step: Any, device: torch.device) -> None:
    """A forward and backward for the optimizer to step on, finished: the device idle after."""
    step.forward()
    step.backward()
    torch.cuda.synchronize(device)


def _kernels_alone(step: Any, device: torch.device) -> float:
    """Seconds of the optimizer phase's kernels back to back: queued behind a sleeping kernel, so
    the host has issued them all before the first runs (checked: a sleep too short is a
    RuntimeError rather than a wrong time)."""
    _gradients(step, device)
    asleep, first, last = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    asleep.record()
    torch.cuda._sleep(SLEEP_CYCLES)
    first.record()
    issued = time.perf_counter()
    step.optimizer_step()
    issued = time.perf_counter() - issued
    last.record()
    torch.cuda.synchronize(device)
    if issued >= asleep.elapsed_time(first) / 1e3:
        raise RuntimeError(f"the optimizer's host took {issued * 1e3:.1f} ms, longer than the "
                           f"{asleep.elapsed_time(first):.1f} ms sleep it was to finish under")
    return first.elapsed_time(last) / 1e3
