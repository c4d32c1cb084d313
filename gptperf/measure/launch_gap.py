"""The launch gap: how much longer a GPU kernel takes when it is launched from a stream (an eager or
compiled step) than inside a CUDA graph, where the calibration's curves are measured.

Each kernel of a few kinds runs R times back to back two ways: captured in one CUDA graph, and
launched one by one behind a sleep kernel long enough that the host has queued all R before the
device reaches them (so the host's issue time is not in it, only the device's own cost of taking
the next launch from the queue). The gap is the per-kernel difference, median over the kinds.
`perfmodel.expected` adds it to every kernel of a step that is not a CUDA graph.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from gptperf.runtime import cuda_graph

KERNELS_PER_RUN = 200
REPEATS = 3
SLEEP_CYCLES = 50_000_000  # ~25 ms at 2 GHz: far longer than the host takes to queue the run


def _kinds(device: torch.device) -> dict[str, Callable[[], Any]]:
    """Kernels from a few microseconds to tens: a tiny and a 4 MiB add, a LayerNorm, a matmul."""
    small = torch.ones(1024, device=device)
    big = torch.ones(1 << 20, device=device)
    rows = torch.randn(3840, 768, device=device, dtype=torch.bfloat16)
    norm = torch.nn.LayerNorm(768, device=device, dtype=torch.bfloat16)
    a = torch.randn(1024, 768, device=device, dtype=torch.bfloat16)
    w = torch.randn(768, 768, device=device, dtype=torch.bfloat16)
    return {"add 4 KiB": lambda: small.add_(1.0), "add 4 MiB": lambda: big.add_(1.0),
            "layernorm 3840×768 bf16": lambda: norm(rows),
            "matmul 1024×768×768 bf16": lambda: torch.nn.functional.linear(a, w)}


def _per_kernel(run: Callable[[], None], before: Callable[[], None] = lambda: None) -> float:
    """Median over REPEATS of the device seconds per kernel of `run` (KERNELS_PER_RUN kernels),
    timed by events around it; `before` is queued ahead of the start event each time."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(REPEATS):
        before()
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / KERNELS_PER_RUN)
    return statistics.median(times)


def _graph_s(call: Callable[[], Any], device: torch.device) -> float:
    def run() -> None:
        for _ in range(KERNELS_PER_RUN):
            call()

    graph = cuda_graph(run, device, warmup=call)
    graph.replay()  # warm-up replay
    return _per_kernel(graph.replay)


def _stream_s(call: Callable[[], Any]) -> tuple[float, bool]:
    """(seconds per kernel launched from the stream, whether the host stayed ahead each time)."""
    ahead = True
    slept = torch.cuda.Event()

    def sleep() -> None:
        torch.cuda._sleep(SLEEP_CYCLES)
        slept.record()

    def run() -> None:
        nonlocal ahead
        for _ in range(KERNELS_PER_RUN):
            call()
        ahead = ahead and not slept.query()  # the sleep still running: every launch was queued

    return _per_kernel(run, before=sleep), ahead


def measure_launch_gap(device: torch.device) -> dict[str, Any]:
    """{"gap_s": median over the kinds of (stream − graph) seconds per kernel, never below 0,
    "kernels": {kind: {"graph_s", "stream_s"}}, "notes": [str]} on a CUDA `device`."""
    kernels: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for kind, call in _kinds(device).items():
        call()
        graph_s = _graph_s(call, device)
        stream_s, ahead = _stream_s(call)
        if not ahead:
            notes.append(f"launch gap: the host fell behind the device for {kind}; left out")
            continue
        kernels[kind] = {"graph_s": graph_s, "stream_s": stream_s}
    gaps = [k["stream_s"] - k["graph_s"] for k in kernels.values()]
    gap = max(statistics.median(gaps), 0.0) if gaps else 0.0
    return {"gap_s": gap, "kernels": kernels, "notes": notes}
