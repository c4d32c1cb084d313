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
  from memory); t(S) = α + S/β fitted per row class M (`gptperf.measure.kernel_model`).

Every figure is a median over repeats from `gptperf.measure.timer` (CUDA events on GPU).
The result is saved through the performance model's hardware format, keyed by device name, so
`--hardware measured` uses it everywhere; the full curves are kept beside it as JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import torch

from gptperf.atomic import write_text
from gptperf.envinfo import device_name
from gptperf.errors import UserError
from gptperf.measure.kernel_model import measure_kernel_model
from gptperf.measure.timer import Progress, Timing, time_fn
from gptperf.perfmodel.hardware import (
    Hardware,
    UnusableCacheError,
    check_cache_dir,
    load_measured_hardware,
    measured_hardware_path,
    save_measured_hardware,
)
from gptperf.runtime import TORCH_DTYPES, as_device, synchronize
from gptperf.schema import check_schema
from gptperf.units import GIB, MIB

SCHEMA = "gptperf.ceilings/1"
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
            # NaN: no launch floor in this measurement (an old curves file); the hardware refuses
            # a NaN, so say 0 here, where it is known to mean "not measured"
            launch_latency_s=self.launch_latency_s if math.isfinite(self.launch_latency_s) else 0.0,
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


def measure_matmul_rates(
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


def _memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)

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
        result.matmul[dtype] = measure_matmul_rates(device, dtype, plan, progress)
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
    return Path(measured_hardware_path(name)).with_suffix(".json")


def save_ceilings(ceilings: Ceilings) -> Path:
    """Write the hardware entry (perfmodel format) and the full curves beside it."""
    path = Path(save_measured_hardware(ceilings.to_hardware(), ceilings.device,
                                       extra=ceilings.toml_tables()))
    write_text(_curves_path(ceilings.device), json.dumps(ceilings.to_dict(), indent=2) + "\n")
    return path


def load_cached_ceilings(name: str) -> Ceilings | None:
    """The cached measurement of device `name`, None if there is none (no hardware TOML, or no
    curves JSON beside it). A file of the two that cannot be read is a one-line
    `UnusableCacheError` naming it and the fix; for the TOML it is the same error that
    `--hardware measured` and `resolve_hardware`'s default give (all read it through
    `perfmodel.hardware.load_measured_hardware`), so an intact JSON beside a corrupt TOML never
    passes for a usable cache that every other command would refuse."""
    if load_measured_hardware(name) is None:
        return None
    path = _curves_path(name)
    if not path.is_file():
        return None
    try:
        return Ceilings.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as err:  # UserError too: a foreign schema
        why = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        raise UnusableCacheError(
            f"cached ceilings curves {path}: unreadable ({(why.splitlines() or [''])[0]})",
            f"run `gptperf ceilings --force` on {name!r} to measure them again") from None


def ceilings_for(
    device: torch.device | str = "auto", *, quick: bool = False, force: bool = False,
    progress: Progress | None = None, notify: Callable[[str], None] | None = None,
) -> tuple[Ceilings, bool]:
    """(ceilings, cached): the cached measurement of this device unless `force` (or the cached
    one is a quick sweep and a full one is asked for), else a fresh one, saved. A corrupt cache
    is measured again, as `measure.calibrate.ensure_calibration` does a broken calibration;
    `notify` (if given) is told why first: the file and what is wrong with it, one line."""
    device = as_device(device)
    if not force:
        try:
            cached = load_cached_ceilings(device_name(device))
        except UnusableCacheError as err:  # corrupt: this run replaces it
            cached = None
            if notify is not None:
                notify(f"{err.problem}: measuring again")
        if cached is not None and (quick or not cached.quick):
            return cached, True
    check_cache_dir("ceilings")  # where they are saved: before the sweep
    ceilings = measure_ceilings(device, quick=quick, progress=progress)
    save_ceilings(ceilings)
    return ceilings, False
