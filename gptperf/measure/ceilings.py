"""Measured ceilings of the machine in hand: memory bandwidth, matmul peak per dtype, launch floor.

The roofline's two numbers, π (FLOP/s) and β (bytes/s), measured instead of copied from a
datasheet, plus the per-operation floor that launches and dispatch put under every small op:

* bandwidth: a device copy (`dst.copy_(src)`) and the lecture's saxpy `z = a·x + y`
  (`torch.add(y, x, alpha=a, out=z)`) on buffers far larger than the last-level cache, counting
  bytes read + written (copy 2N, saxpy 3N elements); β = the better of the two;
* matmul: `torch.mm(A, B, out=C)` on random square matrices over a sweep of sizes, per dtype
  (fp64, fp32, tf32 on CUDA, bf16, fp16), FLOPs = 2·n³, plus a few non-square shapes on CUDA
  (2·m·n·k); π = the best rate, and the whole curve is kept so small-matrix efficiency is visible;
* launch latency: per-op time of back-to-back tiny adds (dispatch + launch), median;
* kernel model: per-kernel time of weight-streaming matmuls y = x·Wᵀ (x of M rows, W N×K as
  nn.Linear keeps it) over a log sweep of weight sizes, and of a small elementwise kernel, many
  kernels per CUDA graph (distinct weights, more than the L2 cache holds, so every replay streams
  from memory); t(S) = α + S/β fitted per row class M (`measure_kernel_model`, `fit_kernel_line`).

Every figure is a median over repeats from `gptperf.measure.timer` (CUDA events on GPU).
The result is saved through the performance model's hardware format, keyed by device name, so
`--hardware measured` uses it everywhere; the full curves are kept beside it as JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from gptperf.atomic import write_text
from gptperf.envinfo import device_name
from gptperf.measure.timer import Progress, Timing, time_fn
from gptperf.runtime import TORCH_DTYPES, as_device, synchronize

SCHEMA = "gptperf.ceilings/1"
MIB = 2**20
GIB = 2**30
# Square matmul sizes swept per dtype; a size is skipped once one call would take too long.
CUDA_SIZES = (128, 256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384)
CUDA_QUICK_SIZES = (256, 1024, 4096)
# Non-square (m, n, k) shapes measured after the square sweep on CUDA: a large one, and GPT-2
# small's MLP matmuls at B·T = 12288 tokens (mlp.fc, then mlp.proj).
CUDA_SHAPES = ((8192, 8192, 16384), (12288, 3072, 768), (12288, 768, 3072))
CPU_SIZES = (64, 128, 256, 512, 768, 1024, 1536, 2048)
CPU_QUICK_SIZES = (32, 64, 128, 256)
# Bandwidth buffers (each of x, y, z): CUDA up to 2 GiB (L2 is 50 MiB on H100); CPU 256 MiB
# (8x a 32 MiB L3, and three of them fit easily beside 24 GiB of RAM).
CUDA_BUFFERS = (256 * MIB, 1 * GIB, 2 * GIB)
CUDA_QUICK_BUFFERS = (256 * MIB,)
CPU_BUFFERS = (256 * MIB,)
CPU_QUICK_BUFFERS = (64 * MIB,)
LAUNCH_LOOP = 100  # tiny ops per timed call when measuring the launch floor
# Kernel model: matmul row classes, weight sizes (bytes of W), shapes N/K (attn.proj, attn.qkv,
# mlp.fc, mlp.proj), elementwise sizes (bytes of the input), and the weights cycled through in one
# timed call: 256 MiB, 5x the H100's 50 MiB L2, so small weights are not served from cache.
KM_ROWS = (1, 4, 16, 64)
KM_CUDA_SIZES = tuple(MIB // 2 * 2**i for i in range(11))  # 0.5 MiB .. 512 MiB
KM_CUDA_QUICK_SIZES = tuple(MIB // 2 * 4**i for i in range(6))  # 0.5 MiB .. 512 MiB
KM_RATIOS = (1.0, 3.0, 4.0, 0.25)
KM_QUICK_RATIOS = (1.0, 4.0)
KM_CUDA_ELEMENTWISE = tuple(16 * 1024 * 4**i for i in range(8))  # 16 KiB .. 256 MiB
KM_CUDA_POOL = 256 * MIB
KM_CPU_ROWS = (1, 16)
KM_CPU_SIZES = (MIB // 4, MIB, 4 * MIB)  # a coarse CPU variant: eager calls, few points
KM_CPU_ELEMENTWISE = (16 * 1024, MIB)
KM_CPU_POOL = 16 * MIB
KM_MAX_KERNELS = 256  # elementwise kernels per timed call (CPU: matmuls too, 16)
KM_CPU_MAX_KERNELS = 4
# One-query attention (a decode step's SDPA with the static cache, its mask made once): (heads, head
# dim) of gpt2 and a 7B shape, batch and context; LayerNorm rows and widths (α only matters).
KM_ATTENTION_HEADS = ((12, 64), (32, 128))
KM_ATTENTION_BATCHES = (1, 4, 16, 64)
KM_ATTENTION_CONTEXTS = (128, 1024)
KM_CPU_ATTENTION = ((4, 16, 128),)  # (batch, heads·head dim, context) on CPU: two points
KM_NORM_SHAPES = ((1, 768), (16, 768), (64, 768), (1, 4096), (16, 4096), (64, 4096))


@dataclass
class Plan:
    """How much to measure: sizes, buffers, and the time allowed per point."""

    sizes: tuple[int, ...]
    buffers: tuple[int, ...]
    dtypes: tuple[str, ...]
    max_call_s: float  # skip a matmul size whose single call is predicted to take longer
    point_budget_s: float  # time spent on the timed repeats of one point
    max_repeats: int
    min_repeats: int = 3
    always_upto: int = 0  # sizes up to this are always measured, however slow small ones look
    shapes: tuple[tuple[int, int, int], ...] = ()  # extra (m, n, k) matmuls

    @classmethod
    def for_device(cls, device: torch.device, quick: bool) -> Plan:
        if device.type == "cuda":
            dtypes = ("fp64", "fp32", "tf32", "bf16", "fp16")
            if quick:
                return cls(CUDA_QUICK_SIZES, CUDA_QUICK_BUFFERS, dtypes, 0.05, 0.05, 10,
                           always_upto=1024)
            return cls(CUDA_SIZES, CUDA_BUFFERS, dtypes, 0.25, 0.3, 50, min_repeats=5,
                       always_upto=4096, shapes=CUDA_SHAPES)
        dtypes = ("fp64", "fp32", "tf32", "bf16", "fp16")  # tf32 is skipped, with the reason
        if quick:
            return cls(CPU_QUICK_SIZES, CPU_QUICK_BUFFERS, dtypes, 0.02, 0.05, 5, min_repeats=2,
                       always_upto=128)
        return cls(CPU_SIZES, CPU_BUFFERS, dtypes, 0.25, 0.4, 10, always_upto=512)


@dataclass
class Ceilings:
    """Everything `gptperf ceilings` measured on one device (JSON-ready through `to_dict`)."""

    device: str
    device_type: str
    measured_at: str
    quick: bool
    threads: int
    torch_version: str
    memory_bytes: int
    bandwidth: dict[str, dict[str, Any]] = field(default_factory=dict)
    matmul: dict[str, dict[str, Any]] = field(default_factory=dict)
    launch_latency_s: float = math.nan
    launch: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kernel_model: dict[str, Any] = field(default_factory=dict)  # measure_kernel_model's table

    @property
    def peak_flops(self) -> dict[str, float]:
        return {dt: m["best_flops_per_s"] for dt, m in self.matmul.items() if m.get("points")}

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return max((b["best_bytes_per_s"] for b in self.bandwidth.values()), default=math.nan)

    @property
    def bandwidth_source(self) -> str:
        return max(self.bandwidth, key=lambda k: self.bandwidth[k]["best_bytes_per_s"], default="")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "device": self.device,
            "device_type": self.device_type,
            "measured_at": self.measured_at,
            "quick": self.quick,
            "threads": self.threads,
            "torch": self.torch_version,
            "memory_bytes": self.memory_bytes,
            "peak_flops": self.peak_flops,
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "bandwidth_source": self.bandwidth_source,
            "launch_latency_s": self.launch_latency_s,
            "bandwidth": self.bandwidth,
            "matmul": self.matmul,
            "launch": self.launch,
            "skipped": self.skipped,
            "notes": self.notes,
            "kernel_model": self.kernel_model,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ceilings:
        """The inverse of `to_dict` (a UserError for another schema)."""
        from gptperf.schema import check_schema

        check_schema(d, SCHEMA)
        return cls(
            device=d["device"], device_type=d["device_type"], measured_at=d["measured_at"],
            quick=bool(d.get("quick", False)), threads=int(d.get("threads", 0)),
            torch_version=d.get("torch", ""), memory_bytes=int(d.get("memory_bytes", 0)),
            bandwidth=d.get("bandwidth", {}), matmul=d.get("matmul", {}),
            launch_latency_s=float(d.get("launch_latency_s") or math.nan),
            launch=d.get("launch", {}), skipped=d.get("skipped", {}), notes=d.get("notes", []),
            kernel_model=d.get("kernel_model") or {},
        )

    def to_hardware(self) -> Any:
        """The measurement as a perfmodel `Hardware` (source 'measured')."""
        from gptperf.perfmodel.hardware import Hardware

        peaks = dict(self.peak_flops)
        notes = [f"measured by gptperf ceilings on {self.device} at {self.measured_at}",
                 f"bandwidth = best of copy and saxpy ({self.bandwidth_source}), bytes read + written",
                 "peak FLOP/s = best torch.mm rate per dtype over the size sweep"]
        if self.device_type == "cpu":
            notes.append(f"{self.threads} torch threads")
            if "fp32" in peaks and "tf32" not in peaks:
                peaks["tf32"] = peaks["fp32"]  # tf32 is a CUDA mode: on CPU such matmuls run in fp32
                notes.append("tf32 = fp32 on CPU")
        if self.quick:
            notes.append("quick sweep: small sizes, less reliable")
        if self.kernel_model and self.device_type == "cuda":
            notes.append("kernel_model: per-kernel α and streaming β measured in CUDA graphs")
        return Hardware(
            name=self.device,
            peak_flops=peaks,
            bandwidth=self.bandwidth_bytes_per_s,
            memory_bytes=self.memory_bytes,
            launch_latency_s=self.launch_latency_s,
            source="measured",
            notes="; ".join(notes),
            device_name=self.device,
            # on CPU the kernel model (eager calls, thread wake-ups) stays in the curves file only
            extra={"kernel_model": self.kernel_model}
            if self.kernel_model and self.device_type == "cuda" else {},
        )

    def toml_tables(self) -> dict[str, Any]:
        """Extra tables for the hardware file: when and how it was measured, and the curves."""
        measurement = {
            "measured_at": self.measured_at, "quick": self.quick, "threads": self.threads,
            "torch": self.torch_version, "device_type": self.device_type,
            "bandwidth_source": self.bandwidth_source,
        }
        for name, b in self.bandwidth.items():
            measurement[f"{name}_bytes_per_s"] = b["best_bytes_per_s"]
        curves = {dtype: {"n": [p["n"] for p in m["points"]],
                          "flops_per_s": [p["flops_per_s"] for p in m["points"]]}
                  for dtype, m in self.matmul.items() if m.get("points")}
        return {"measurement": measurement, "curves": curves}


def _timing_summary(t: Timing) -> dict[str, Any]:
    return {"median_s": t.median, "min_s": t.min, "max_s": t.max, "rel_spread": t.rel_spread,
            "wide_spread": t.wide_spread, "repeats": t.repeats, "clock": t.clock}


def _measure(fn: Callable[[], Any], device: torch.device, plan: Plan) -> Timing:
    """Warm up, estimate one call, and spend about `point_budget_s` on the timed repeats."""
    fn()  # first call: lazy initialisation, allocation, page faults
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    estimate = max(time.perf_counter() - t0, 1e-7)
    repeats = max(plan.min_repeats, min(plan.max_repeats, int(plan.point_budget_s / estimate)))
    # the two calls above were the warm-up
    return time_fn(fn, warmup=0, repeats=repeats, device=device)


def _buffers_fit(device: torch.device, nbytes: int, count: int) -> bool:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return count * nbytes < 0.8 * free
    import psutil

    return count * nbytes < 0.5 * psutil.virtual_memory().available


def measure_bandwidth(device: torch.device, plan: Plan, progress: Progress | None = None) -> dict:
    """Copy and saxpy bandwidth (bytes read + written per second) for each buffer size."""
    results: dict[str, dict[str, Any]] = {
        "copy": {"points": [], "formula": "bytes = 2·N·4 (read x, write y), fp32 dst.copy_(src)"},
        "saxpy": {"points": [],
                  "formula": "bytes = 3·N·4 (read x, read y, write z), fp32 z = a·x + y"},
    }
    buffers = [b for b in plan.buffers if _buffers_fit(device, b, 3)]
    if not buffers:
        buffers = [min(plan.buffers) // 4]
    for i, nbytes in enumerate(buffers):
        for name, point in _bandwidth_points(device, nbytes, plan).items():
            results[name]["points"].append(point)
        if progress:
            progress("bandwidth", i + 1, len(buffers))
    for r in results.values():
        best = max(r["points"], key=lambda p: p["bytes_per_s"])
        r["best_bytes_per_s"] = best["bytes_per_s"]
        r["best_buffer_bytes"] = best["buffer_bytes"]
    return results


def _bandwidth_points(device: torch.device, nbytes: int, plan: Plan) -> dict[str, dict]:
    n = nbytes // 4
    x = torch.randn(n, device=device)
    y = torch.randn(n, device=device)
    z = torch.empty(n, device=device)
    kernels = {
        "copy": (lambda: z.copy_(x), 2 * nbytes),
        "saxpy": (lambda: torch.add(y, x, alpha=0.5, out=z), 3 * nbytes),
    }
    points = {}
    for name, (fn, moved) in kernels.items():
        t = _measure(fn, device, plan)
        points[name] = {"buffer_bytes": nbytes, "bytes_moved": moved, "time_s": t.median,
                        "bytes_per_s": moved / t.median, "timing": _timing_summary(t)}
    return points


def _dtype_supported(device: torch.device, dtype: str) -> str | None:
    """None if matmuls in `dtype` run on `device`, else why not."""
    if dtype == "tf32" and device.type != "cuda":
        return "tf32 is a CUDA tensor-core mode"
    if device.type == "cuda" and dtype == "bf16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16 support"
    try:
        a = torch.randn(8, 8, device=device).to(TORCH_DTYPES[dtype])
        torch.mm(a, a)
        synchronize(device)
    except RuntimeError as err:
        return f"torch.mm failed: {str(err).splitlines()[0]}"
    return None


def shape_label(p: dict[str, Any]) -> str:
    """A matmul point's shape: '4096³' when square, else 'm×n×k'."""
    return f"{p['n']}³" if p["m"] == p["n"] == p["k"] else f"{p['m']}×{p['n']}×{p['k']}"


def _time_matmul(device: torch.device, tdtype: torch.dtype, m: int, n: int, k: int,
                 plan: Plan) -> Timing:
    """C (m×n) = A (m×k) · B (k×n) on random data (zeros would draw less power and run faster)."""
    a = torch.randn(m, k, device=device).to(tdtype)
    b = torch.randn(k, n, device=device).to(tdtype)
    c = torch.empty(m, n, device=device, dtype=tdtype)
    return _measure(lambda: torch.mm(a, b, out=c), device, plan)


def measure_matmul(
    device: torch.device, dtype: str, plan: Plan, progress: Progress | None = None
) -> dict[str, Any]:
    """The rate of square torch.mm over the size sweep; sizes stop once a call gets too slow."""
    tdtype = TORCH_DTYPES[dtype]
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    points: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    stopped = None
    try:
        for i, n in enumerate(plan.sizes):
            if points and n > plan.always_upto:  # predict from the best rate seen so far
                predicted = 2 * n**3 / max(p["flops_per_s"] for p in points)
                if predicted > plan.max_call_s:
                    stopped = f"sizes from {n} skipped: one call would take ~{predicted:.2g} s"
                    break
            if device.type == "cuda" and not _buffers_fit(device, n * n * tdtype.itemsize, 3):
                stopped = f"sizes from {n} skipped: not enough free GPU memory"
                break
            t = _time_matmul(device, tdtype, n, n, n, plan)
            flops = 2 * n**3
            points.append({"m": n, "n": n, "k": n, "flops": flops, "time_s": t.median,
                           "flops_per_s": flops / t.median, "timing": _timing_summary(t)})
            if progress:
                progress(f"matmul {dtype}", i + 1, len(plan.sizes))
            if t.median > plan.max_call_s and n >= plan.always_upto and n != plan.sizes[-1]:
                stopped = f"sizes above {n} skipped: one call took {t.median:.2g} s"
                break
        best_rate = max((p["flops_per_s"] for p in points), default=0.0)
        for m, n, k in plan.shapes if points else ():
            flops = 2 * m * n * k
            if flops / best_rate > plan.max_call_s or not _buffers_fit(
                    device, max(m * k, k * n, m * n) * tdtype.itemsize, 3):
                continue
            t = _time_matmul(device, tdtype, m, n, k, plan)
            shapes.append({"m": m, "n": n, "k": k, "flops": flops, "time_s": t.median,
                           "flops_per_s": flops / t.median, "timing": _timing_summary(t)})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    result: dict[str, Any] = {
        "points": points, "shapes": shapes,
        "formula": "flops = 2·m·n·k (2·n³ square), torch.mm(A, B, out=C), A m×k, B k×n"}
    if points:
        best = max(points + shapes, key=lambda p: p["flops_per_s"])
        result.update(best_flops_per_s=best["flops_per_s"],
                      best_n=best["n"] if best["m"] == best["n"] == best["k"] else None,
                      best_shape=shape_label(best))
    if stopped:
        result["stopped"] = stopped
    return result


def measure_launch_latency(device: torch.device, plan: Plan) -> dict[str, Any]:
    """Per-op time of LAUNCH_LOOP back-to-back adds on 1-element tensors (dispatch + launch)."""
    a = torch.randn(1, device=device)
    b = torch.randn(1, device=device)
    c = torch.empty(1, device=device)

    def loop() -> None:
        for _ in range(LAUNCH_LOOP):
            torch.add(a, b, out=c)

    t = _measure(loop, device, plan)
    return {"per_op_s": t.median / LAUNCH_LOOP, "ops_per_call": LAUNCH_LOOP,
            "op": "torch.add on 1-element tensors, back to back", "timing": _timing_summary(t)}


def fit_kernel_line(nbytes: list[float], times: list[float]) -> tuple[float, float, float]:
    """(α s, β bytes/s, largest relative residual) of t = α + S/β, least squares on relative
    errors (Σ((α + S/β − t)/t)²), so microsecond kernels weigh as much as millisecond ones.
    α is kept >= 0 (refitted through the origin if the free fit goes below)."""
    if len(nbytes) != len(times) or len(nbytes) < 2:
        raise ValueError(f"need two or more (bytes, time) points, got {len(nbytes)} and {len(times)}")
    if any(t <= 0 for t in times) or any(b <= 0 for b in nbytes):
        raise ValueError("bytes and times must be positive")
    # weighted rows (1/t, S/t) against 1: the 2×2 normal equations
    u = [1 / t for t in times]
    v = [b / t for b, t in zip(nbytes, times, strict=True)]
    suu, svv, suv = sum(x * x for x in u), sum(x * x for x in v), sum(x * y for x, y in zip(u, v, strict=True))
    su, sv = sum(u), sum(v)
    det = suu * svv - suv * suv
    alpha, inv_beta = ((su * svv - sv * suv) / det, (suu * sv - suv * su) / det) if det > 0 else (-1, 0)
    if alpha < 0 or inv_beta <= 0:
        alpha, inv_beta = 0.0, sv / svv
    residual = max(abs(alpha + b * inv_beta - t) / t for b, t in zip(nbytes, times, strict=True))
    return alpha, 1 / inv_beta, residual


def _replayer(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """`fn` captured as a CUDA graph (its replay), or `fn` itself on CPU."""
    if device.type != "cuda":
        return fn
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream (cuBLAS handles, workspaces)
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _per_kernel_time(fn: Callable[[], Any], kernels: int, device: torch.device, repeats: int) -> float:
    replay = _replayer(fn, device)
    return time_fn(replay, warmup=2, repeats=repeats, device=device).median / kernels


def _stream_shape(weight_bytes: int, ratio: float, esize: int) -> tuple[int, int]:
    """(K, N) with N/K ≈ ratio and K·N·esize ≈ weight_bytes, both multiples of 64."""
    k = max(64, round(math.sqrt(weight_bytes / esize / ratio) / 64) * 64)
    n = max(64, round(weight_bytes / esize / k / 64) * 64)
    return k, n


def measure_kernel_model(
    device: torch.device, *, quick: bool = False, progress: Progress | None = None,
    rows: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The per-kernel model t(S) = α + S/β: weight-streaming matmuls per row class M and a small
    elementwise kernel, many kernels per CUDA graph (eager calls on CPU), median per kernel.

    Returns a table for `Hardware.extra['kernel_model']`: rows, alpha_s, beta (bytes/s),
    elementwise_alpha_s, elementwise_beta, the fit residuals and the raw curves.
    """
    from gptperf.steps import gemv

    cuda = device.type == "cuda"
    tdtype = torch.bfloat16 if cuda else torch.float32
    esize = tdtype.itemsize
    rows = rows or (KM_ROWS if cuda else KM_CPU_ROWS)
    sizes = (KM_CUDA_QUICK_SIZES if quick else KM_CUDA_SIZES) if cuda else (
        KM_CPU_SIZES[:2] if quick else KM_CPU_SIZES)
    ratios = KM_RATIOS if cuda and not quick else KM_QUICK_RATIOS if cuda else (1.0,)
    cap = KM_MAX_KERNELS if cuda else KM_CPU_MAX_KERNELS
    pool_bytes = KM_CUDA_POOL if cuda else KM_CPU_POOL
    ew_sizes = KM_CUDA_ELEMENTWISE if cuda else KM_CPU_ELEMENTWISE
    repeats = 10 if cuda and not quick else 5 if cuda else 3
    if cuda:
        free, _ = torch.cuda.mem_get_info(device)
        sizes = tuple(s for s in sizes if 2.5 * max(s, pool_bytes) < free) or sizes[:1]
    # 10% slack: shapes are rounded to multiples of 64, so W may be a little over its size
    pool = torch.randn(int(1.1 * max(max(sizes), pool_bytes)) // esize, device=device).to(tdtype)
    table: dict[str, Any] = {
        "dtype": "bf16" if cuda else "fp32", "rows": list(rows), "alpha_s": [], "beta": [],
        "max_rel_residual": [], "curves": {},
        "where": (f"y = x·Wᵀ (torch.mm, W N×K {'bf16' if cuda else 'fp32'}; one row: "
                  f"{'gptperf.inference.gemv' if cuda and gemv.available() else 'torch.mm'}), "
                  + ("many kernels per CUDA graph" if cuda else "eager calls")
                  + f", distinct weights cycled over {pool_bytes // MIB} MiB; S = bytes of x, W, y"),
    }
    done, total = 0, len(rows) * len(sizes) * len(ratios) + len(ew_sizes)
    for m in rows:
        # one row: the fast decode path's own kernel when it runs here (gptperf.inference.gemv)
        one_row = m == 1 and cuda and gemv.available()
        curve: dict[str, list[Any]] = {"k": [], "n": [], "bytes": [], "time_s": []}
        for size in sizes:
            for ratio in ratios:
                k, n = _stream_shape(size, ratio, esize)
                count = max(1, min(pool_bytes // (k * n * esize), cap if not cuda else 1 << 30))
                count = max(1, min(count, pool.numel() // (k * n)))
                weights = [pool[i * k * n:(i + 1) * k * n].view(n, k) for i in range(count)]
                kernels = max(count, 8 if cuda else 2)
                x = torch.randn(m, k, device=device).to(tdtype)
                ys = [torch.empty(m, n, device=device, dtype=tdtype) for _ in range(min(kernels, 16))]

                def run(weights=weights, x=x, ys=ys, kernels=kernels, one_row=one_row) -> None:
                    for i in range(kernels):
                        if one_row:
                            gemv.launch(x[0], weights[i % len(weights)], None, ys[i % len(ys)][0])
                        else:
                            torch.mm(x, weights[i % len(weights)].t(), out=ys[i % len(ys)])

                t = _per_kernel_time(run, kernels, device, repeats)
                curve["k"].append(k)
                curve["n"].append(n)
                curve["bytes"].append((m * k + k * n + m * n) * esize)
                curve["time_s"].append(t)
                done += 1
                if progress:
                    progress("kernel model", done, total)
        alpha, beta, resid = fit_kernel_line(curve["bytes"], curve["time_s"])
        table["alpha_s"].append(alpha)
        table["beta"].append(beta)
        table["max_rel_residual"].append(resid)
        table["curves"][f"m{m}"] = curve
    del pool
    ew: dict[str, list[Any]] = {"bytes": [], "time_s": []}
    for size in ew_sizes:
        numel = size // esize
        # inputs of small elementwise kernels sit in L2 in a real step too: 256 kernels at most
        count = min(max(1, pool_bytes // size), cap)
        src = torch.randn(count * numel, device=device).to(tdtype)
        dst = torch.empty_like(src)
        kernels = max(count, 32 if cuda else 2)

        def add(src=src, dst=dst, numel=numel, count=count, kernels=kernels) -> None:
            for i in range(kernels):
                j = (i % count) * numel
                torch.add(src[j:j + numel], 1.0, out=dst[j:j + numel])

        ew["bytes"].append(2 * size)
        ew["time_s"].append(_per_kernel_time(add, kernels, device, repeats))
        del src, dst
        done += 1
        if progress:
            progress("kernel model", done, total)
    alpha, beta, resid = fit_kernel_line(ew["bytes"], ew["time_s"])
    table.update(elementwise_alpha_s=alpha, elementwise_beta=beta,
                 elementwise_max_rel_residual=resid)
    table["curves"]["elementwise"] = ew
    table["where"] += "; elementwise: out = x + 1, bytes read + written"
    att = _attention_curve(device, tdtype, pool_bytes, cap, repeats)
    alpha, beta, resid = fit_kernel_line(att["bytes"], att["time_s"])
    table.update(attention_alpha_s=alpha, attention_beta=beta, attention_max_rel_residual=resid)
    table["curves"]["attention"] = att
    table["where"] += ("; attention: SDPA of one query over L keys with an additive mask, "
                       "bytes = q, K, V read + output written")
    norm = _norm_curve(device, tdtype, repeats)
    alpha, beta, resid = fit_kernel_line(norm["bytes"], norm["time_s"])
    table.update(norm_alpha_s=alpha, norm_max_rel_residual=resid)
    table["curves"]["norm"] = norm
    table["where"] += "; norm: F.layer_norm of M×C rows"
    if progress:
        progress("kernel model", total, total)
    if cuda:
        torch.cuda.empty_cache()
    return table


def _attention_curve(device: torch.device, tdtype: torch.dtype, pool_bytes: int, cap: int,
                     repeats: int) -> dict[str, list[Any]]:
    """Per-call time of decode attention: q (B, H, 1, D) against distinct K, V (B, H, L, D)
    cycled over `pool_bytes`, with a (1, L) additive mask, as a compiled static-KV-cache step
    calls the attention kernel."""
    import torch.nn.functional as F

    cuda = device.type == "cuda"
    backend = _decode_attention_backend(device, tdtype)
    if cuda:
        shapes = [(b, h, d, n) for h, d in KM_ATTENTION_HEADS for b in KM_ATTENTION_BATCHES
                  for n in KM_ATTENTION_CONTEXTS]
    else:
        shapes = [(b, 4, c // 4, n) for b, c, n in KM_CPU_ATTENTION] + [(1, 4, 4, 64)]
    curve: dict[str, list[Any]] = {"batch": [], "heads": [], "head_dim": [], "context": [],
                                   "bytes": [], "time_s": []}
    esize = tdtype.itemsize
    for b, h, d, n in shapes:
        kv = b * h * n * d
        count = max(1, min(pool_bytes // (2 * kv * esize), cap if not cuda else KM_MAX_KERNELS))
        k = torch.randn(count, b, h, n, d, device=device).to(tdtype)
        v = torch.randn(count, b, h, n, d, device=device).to(tdtype)
        q = torch.randn(b, h, 1, d, device=device).to(tdtype)
        # the additive mask, made once: a compiled step builds it in a kernel of its own per layer
        mask = torch.zeros(1, n, device=device, dtype=tdtype)
        kernels = max(count, 8 if cuda else 2)

        def run(q=q, k=k, v=v, mask=mask, kernels=kernels, count=count) -> None:
            with backend():
                for i in range(kernels):
                    F.scaled_dot_product_attention(q, k[i % count], v[i % count], attn_mask=mask)

        curve["batch"].append(b)
        curve["heads"].append(h)
        curve["head_dim"].append(d)
        curve["context"].append(n)
        curve["bytes"].append((2 * kv + 2 * b * h * d) * esize)
        curve["time_s"].append(_per_kernel_time(run, kernels, device, repeats))
        del k, v
    return curve


def _decode_attention_backend(device: torch.device, tdtype: torch.dtype) -> Callable[[], Any]:
    """The SDPA backend of a compiled decode step: cuDNN (the kernel inductor calls there), where
    it takes a masked one-query call like the curve's; else the default choice."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type == "cuda":
        q = torch.zeros(1, 1, 1, 64, device=device, dtype=tdtype)
        kv = torch.zeros(1, 1, 8, 64, device=device, dtype=tdtype)
        mask = torch.zeros(1, 8, device=device, dtype=tdtype)  # additive, as in the curve
        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask)
            return lambda: sdpa_kernel(SDPBackend.CUDNN_ATTENTION)
        except RuntimeError:  # no cuDNN attention for this call here: the default choice
            pass
    return contextlib.nullcontext


def _norm_curve(device: torch.device, tdtype: torch.dtype, repeats: int) -> dict[str, list[Any]]:
    """Per-call time of F.layer_norm on M×C rows (a decode step's LayerNorms)."""
    import torch.nn.functional as F

    curve: dict[str, list[Any]] = {"rows": [], "width": [], "bytes": [], "time_s": []}
    cuda = device.type == "cuda"
    kernels = 64 if cuda else 2
    for m, c in KM_NORM_SHAPES if cuda else (KM_NORM_SHAPES[0], KM_NORM_SHAPES[-1]):
        xs = torch.randn(kernels, m, c, device=device).to(tdtype)
        w = torch.ones(c, device=device, dtype=tdtype)
        bias = torch.zeros(c, device=device, dtype=tdtype)

        def run(xs=xs, w=w, bias=bias, c=c) -> None:
            for i in range(kernels):
                F.layer_norm(xs[i], (c,), w, bias)

        curve["rows"].append(m)
        curve["width"].append(c)
        curve["bytes"].append((2 * m * c + 2 * c) * tdtype.itemsize)
        curve["time_s"].append(_per_kernel_time(run, kernels, device, repeats))
    return curve


def _memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    import psutil

    return int(psutil.virtual_memory().total)


def measure_ceilings(
    device: torch.device | str = "auto", *, quick: bool = False, progress: Progress | None = None
) -> Ceilings:
    """Measure bandwidth, matmul rates per dtype and the launch floor on `device`."""
    device = as_device(device)
    plan = Plan.for_device(device, quick)
    torch.manual_seed(0)
    result = Ceilings(
        device=device_name(device), device_type=device.type,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), quick=quick,
        threads=torch.get_num_threads(), torch_version=torch.__version__,
        memory_bytes=_memory_bytes(device),
    )
    result.bandwidth = measure_bandwidth(device, plan, progress)
    for dtype in plan.dtypes:
        why_not = _dtype_supported(device, dtype)
        if why_not:
            result.skipped[dtype] = why_not
            continue
        result.matmul[dtype] = measure_matmul(device, dtype, plan, progress)
    result.launch = measure_launch_latency(device, plan)
    result.launch_latency_s = result.launch["per_op_s"]
    try:
        result.kernel_model = measure_kernel_model(device, quick=quick, progress=progress)
    except (RuntimeError, ValueError) as err:  # e.g. no CUDA graph capture here: keep the rest
        result.skipped["kernel_model"] = f"failed: {str(err).splitlines()[0]}"
    if device.type == "cpu":
        result.notes.append(
            "CPU copies usually move a third more than counted (the destination is read for "
            "ownership before it is written); only bytes read + written are counted")
    if quick:
        result.notes.append("quick sweep: buffers near the cache size and small matrices; "
                            "run without --quick for the ceilings the model should use")
    return result


# --- cache ---------------------------------------------------------------------------------------


def _curves_path(name: str) -> Path:
    from gptperf.perfmodel.hardware import measured_hardware_path

    return Path(measured_hardware_path(name)).with_suffix(".json")


def save_ceilings(ceilings: Ceilings) -> Path:
    """Write the hardware entry (perfmodel format) and the full curves beside it."""
    from gptperf.perfmodel.hardware import save_measured_hardware

    path = Path(save_measured_hardware(ceilings.to_hardware(), ceilings.device,
                                       extra=ceilings.toml_tables()))
    write_text(_curves_path(ceilings.device), json.dumps(ceilings.to_dict(), indent=2) + "\n")
    return path


def load_cached_ceilings(name: str) -> Ceilings | None:
    """The cached measurement of device `name`, or None if there is none (or it is unreadable)."""
    from gptperf.perfmodel.hardware import measured_hardware_path

    if not Path(measured_hardware_path(name)).exists():
        return None
    try:
        return Ceilings.from_dict(json.loads(_curves_path(name).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ceilings_for(
    device: torch.device | str = "auto", *, quick: bool = False, force: bool = False,
    progress: Progress | None = None,
) -> tuple[Ceilings, bool]:
    """(ceilings, cached): the cached measurement of this device unless `force` (or the cached
    one is a quick sweep and a full one is asked for), else a fresh one, saved."""
    device = as_device(device)
    if not force:
        cached = load_cached_ceilings(device_name(device))
        if cached is not None and (quick or not cached.quick):
            return cached, True
    ceilings = measure_ceilings(device, quick=quick, progress=progress)
    save_ceilings(ceilings)
    return ceilings, False
