"""How the calibration times one kernel call: per-call seconds of back-to-back calls, with the
operands a step reads from memory cycled through a pool larger than the last-level cache.

* CUDA (`KernelTimer`): R calls captured in one CUDA graph (R chosen from a first timed call so
  one replay takes about `TARGET_REPLAY_S`, at most `MAX_CALLS_PER_GRAPH`), replayed once to
  warm up, then the median of `REPLAYS` replays / R. The first calls run on a side stream before
  capture (lazy initialisation, cuBLAS workspaces, autograd's and the optimizer's state), as
  torch's CUDA-graph notes ask; a call that cannot be captured is timed eagerly, with a note.
* CPU: the median of a short timed loop, calls batched so one sample lasts at least
  `CPU_SAMPLE_S`. A call whose operands (`nbytes`, read and written) reach `CPU_EVICT_MIN_BYTES`
  is timed alone, after `CPU_EVICT_BYTES` are written: in a step such a kernel follows others
  that moved as much, so its operands are not in the cores' caches and the lines those kernels
  dirtied are still being written back, where a call repeated back to back finds everything it
  touched in cache.

`OperandPool` carves distinct copies of a call's inputs from one random buffer of `POOL_BYTES`
(`linear_call`: a linear layer over them); `MatmulPrecision` sets the matmul precision of a dtype for a measurement and restores it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from gptperf.measure.calibration_plan import (
    CPU_MAX_REPEATS,
    CPU_MIN_REPEATS,
    CPU_POINT_S,
    CPU_POOL_BYTES,
    CPU_SAMPLE_S,
    REPLAYS,
    TARGET_REPLAY_S,
)
from gptperf.measure.gpu_lock import NO_LOCK, GpuLock
from gptperf.runtime import set_matmul_precision
from gptperf.units import MIB

# Capturing a call costs the host ~20 µs (250 for attention's forward + backward) and instantiating
# the graph grows faster than the calls (1000 one-query attention calls: 68 ms, 200: 4 ms; H200,
# 2026-12-02); 250 calls of the shortest kernel (~1.2 µs) still amortise the replay's launch to ~1%.
MAX_CALLS_PER_GRAPH = 250
MAX_COPIES = 256  # distinct input sets cycled through (Python views: each costs host time)
# Written before each CPU call on large operands (the module docstring says why). On the 2-core
# development VM (Intel Xeon, 4 MiB of L2, 2026-12-03), 16 MiB made the tiny model's qkv matmul
# and LayerNorm time as they run inside its forward (1.35 and 0.24 ms; in the forward, the matmul
# with its bias, 1.52 and 0.26; back to back 1.13 and 0.17), while GELU and sdpa, which stream,
# did not move; 4 MiB changed nothing, 64 MiB overshot (1.81 and 0.35).
CPU_EVICT_BYTES = 16 * MIB
# Calls over less are batched with no eviction: a step of such kernels keeps them in cache (16 MiB
# written before a 256×128 -> 512 layer, 0.9 MB of operands, made it 1.3-2.4× slower than inside
# a 256-token prefill, where a 2 MB LayerNorm needed it; 2 MiB left the 1.2 MB layers of 512-token
# steps under-predicted by 10-20%: BENCHMARKS.md), and an eviction costs 2.7 ms there.
CPU_EVICT_MIN_BYTES = 1 * MIB
POOL_BYTES = {"cuda": 256 * MIB, "cpu": CPU_POOL_BYTES}  # cycled inputs: past the last-level cache
ALIGN = 128  # elements between cycled copies (cuBLAS wants 16-byte aligned operands)
RANDOM_BLOCK = 1 << 20  # numbers drawn for a CPU tensor; a larger one repeats them

Call = Callable[[int], Any]  # call(i): the i-th of back-to-back calls


class KernelTimer:
    """Per-call seconds of back-to-back calls on one device (the module docstring says how); keeps a
    note for each point that could not be graph-captured and was timed eagerly. `lock`: held
    while a point is timed (`gpu_lock`: another process shares the GPU)."""

    def __init__(self, device: torch.device, quick: bool, lock: GpuLock = NO_LOCK) -> None:
        self.device = device
        self.quick = quick
        self.lock = lock
        self.notes: list[str] = []
        self._evict_buffer: torch.Tensor | None = None

    def __call__(self, call: Call, what: str = "", nbytes: float = 0.0) -> float:
        """Seconds per call of `call`; `nbytes`: what one call reads and writes (the CPU's
        eviction, module docstring)."""
        with self.lock:
            if self.device.type == "cuda":
                return self._graph(call, what)
            return self._loop(call, evict=nbytes >= CPU_EVICT_MIN_BYTES)

    # -- CPU --------------------------------------------------------------------------------
    def _loop(self, call: Call, evict: bool) -> float:
        call(0)  # warm-up: allocation, first-touch page faults, lazy initialisation
        t0 = time.perf_counter()
        call(1)
        estimate = max(time.perf_counter() - t0, 1e-7)
        # a thread woken late can stretch one call by milliseconds: the estimate only sizes the
        # samples, and the spending stops at the point's budget whatever the first calls took
        inner = 1 if evict else max(1, math.ceil(CPU_SAMPLE_S / estimate))
        counter = iter(range(2, 1 << 62))
        samples: list[float] = []
        budget = CPU_POINT_S[self.quick]
        spent = estimate
        while len(samples) < CPU_MAX_REPEATS and (len(samples) < CPU_MIN_REPEATS or spent < budget):
            t_evict = time.perf_counter()
            if evict:
                self._evict()
            t0 = time.perf_counter()
            for _ in range(inner):
                call(next(counter))
            t1 = time.perf_counter()
            samples.append((t1 - t0) / inner)
            spent += t1 - t_evict  # the eviction counts against the point's budget
        return statistics.median(samples)

    def _evict(self) -> None:
        if self._evict_buffer is None:
            self._evict_buffer = torch.empty(CPU_EVICT_BYTES // 4, dtype=torch.float32)
        self._evict_buffer.fill_(1.0)

    # -- CUDA -------------------------------------------------------------------------------
    def _graph(self, call: Call, what: str) -> float:
        device = self.device
        main = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(main)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(side):  # off the capture's stream, as torch's CUDA-graph notes ask
            call(0)
            start.record(side)
            call(1)
            end.record(side)
        main.wait_stream(side)
        end.synchronize()
        # an upper bound: the host's launch latency is in it for short kernels
        estimate = max(start.elapsed_time(end) / 1e3, 1e-7)
        calls = self._calls(estimate)
        try:
            graph, replay_s = self._capture(call, calls)
            # far too short a replay (the estimate had the host's launch gaps in it): again, longer
            if replay_s < TARGET_REPLAY_S / 4 and calls < MAX_CALLS_PER_GRAPH:
                calls2 = self._calls(replay_s / calls)
                if calls2 > calls:
                    del graph
                    calls = calls2
                    graph, replay_s = self._capture(call, calls)
            times = [self._replay_s(graph) for _ in range(REPLAYS)]
            del graph
            return statistics.median(times) / calls
        except RuntimeError as err:  # not capturable here: eager calls between events instead
            torch.cuda.synchronize(device)
            line = (str(err).strip().splitlines() or [""])[0][:160]
            self.notes.append(f"{what or 'a point'}: timed eagerly, not in a CUDA graph ({line})")
            return self._eager(call, calls)

    @staticmethod
    def _calls(per_call_s: float) -> int:
        return max(1, min(MAX_CALLS_PER_GRAPH, math.ceil(TARGET_REPLAY_S / max(per_call_s, 1e-8))))

    def _capture(self, call: Call, calls: int) -> tuple[torch.cuda.CUDAGraph, float]:
        """The graph of `calls` calls and the time of its first (warm-up) replay."""
        graph = self._record(call, calls)
        return graph, max(self._replay_s(graph), 1e-9)

    def _record(self, call: Call, calls: int) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(calls):
                call(i)
        return graph

    @staticmethod
    def _replay_s(graph: torch.cuda.CUDAGraph) -> float:
        return replay_seconds(graph)

    def _eager(self, call: Call, calls: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(1 + REPLAYS):
            start.record()
            for i in range(calls):
                call(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times[1:]) / calls


def replay_seconds(graph: torch.cuda.CUDAGraph) -> float:
    """Seconds of one replay of `graph` on the current stream, between CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def random_tensor(shape: Sequence[int], dtype: torch.dtype, device: torch.device,
                  requires_grad: bool = False) -> torch.Tensor:
    """Random data (zeros draw less power and some kernels skip them). On a CPU a tensor of more
    than RANDOM_BLOCK numbers repeats its first RANDOM_BLOCK: drawing them runs at 0.7 GB/s on
    the 2-core VM (0.36 s for 256 MiB), copying them at memory speed."""
    t = torch.empty(tuple(shape), device=device, dtype=dtype)
    flat = t.view(-1)
    if t.device.type != "cpu" or flat.numel() <= 2 * RANDOM_BLOCK:
        flat.uniform_(-1, 1)
        return t.requires_grad_(requires_grad)
    block = flat[:RANDOM_BLOCK].uniform_(-1, 1)
    whole = flat.numel() // RANDOM_BLOCK * RANDOM_BLOCK
    flat[RANDOM_BLOCK:whole].view(-1, RANDOM_BLOCK).copy_(block.expand(whole // RANDOM_BLOCK - 1, -1))
    flat[whole:].copy_(block[:flat.numel() - whole])
    return t.requires_grad_(requires_grad)


class OperandPool:
    """One random buffer of POOL_BYTES (or `nbytes`) that distinct copies of a call's inputs are
    carved from."""

    def __init__(self, device: torch.device, dtype: torch.dtype, nbytes: int | None = None,
                 max_copies: int = MAX_COPIES) -> None:
        self.device = device
        self.dtype = dtype
        self.numel = (POOL_BYTES[device.type] if nbytes is None else nbytes) // dtype.itemsize
        self.max_copies = max_copies
        self._buffer: torch.Tensor | None = None

    def copies(self, shapes: Sequence[Sequence[int]]) -> list[list[torch.Tensor]]:
        """Distinct tensors of `shapes`, as many sets as fill the pool (`max_copies` at most); one
        freshly made set when two would not fit (such inputs outgrow every cache anyway)."""
        sizes = [math.ceil(math.prod(s) / ALIGN) * ALIGN for s in shapes]
        count = min(self.max_copies, self.numel // sum(sizes))
        if count < 2:
            return [[random_tensor(s, self.dtype, self.device) for s in shapes]]
        if self._buffer is None:
            self._buffer = random_tensor((self.numel,), self.dtype, self.device)
        out, offset = [], 0
        for _ in range(count):
            views = []
            for shape, size in zip(shapes, sizes, strict=True):
                views.append(self._buffer[offset:offset + math.prod(shape)].view(tuple(shape)))
                offset += size
            out.append(views)
        return out


def linear_call(pool: OperandPool, m: int, n: int, k: int, bias: bool = False) -> Call:
    """F.linear over distinct copies of x (M×K), W (N×K) (and b) from `pool`, a copy a call."""
    sets = pool.copies([(m, k), (n, k)] + ([(n,)] if bias else []))

    def call(j: int) -> torch.Tensor:
        return F.linear(*sets[j % len(sets)])

    return call


class MatmulPrecision:
    """set_matmul_precision(dtype) for the measurement, the previous flags back afterwards."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        set_matmul_precision(self.dtype)

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved
