"""The roofline: attainable FLOP/s = min(π, β·AI), the ridge point, and the lecture's worked kernels.

Everything is plain arithmetic on FLOPs, bytes, a peak π (FLOP/s) and a bandwidth β (bytes/s):

* arithmetic intensity AI = FLOPs / bytes moved (FLOP/byte)
* attainable(AI) = min(π, β·AI); the ridge point is AI* = π / β
* a kernel is compute-bound when AI >= AI*, memory-bound otherwise
* predicted time = max(FLOPs / π, bytes / β) + launches · launch latency
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from gptperf.checks import check_positive_int
from gptperf.dtypes import check_dtype, dtype_bytes
from gptperf.errors import UserError

COMPUTE = "compute"
MEMORY = "memory"


def _number(value: Any, what: str, *, positive: bool = True, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{what} must be finite, got {value}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise UserError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")
    return value


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    """FLOPs per byte moved; a kernel that moves no bytes has no defined intensity (UserError)."""
    flops = _number(flops, "flops", allow_zero=True)
    nbytes = _number(nbytes, "bytes", allow_zero=True)
    if nbytes == 0:
        raise UserError("arithmetic intensity needs bytes > 0 (FLOPs / bytes); got 0 bytes")
    return flops / nbytes


def ridge_point(peak: float, bandwidth: float) -> float:
    """The arithmetic intensity (FLOP/byte) where the bandwidth slope meets the compute ceiling."""
    return _number(peak, "peak FLOP/s") / _number(bandwidth, "bandwidth (bytes/s)")


def attainable(ai: float, peak: float, bandwidth: float) -> float:
    """min(π, β·AI) in FLOP/s."""
    ai = _number(ai, "arithmetic intensity", allow_zero=True)
    return min(_number(peak, "peak FLOP/s"), _number(bandwidth, "bandwidth (bytes/s)") * ai)


def bound(ai: float, peak: float, bandwidth: float) -> str:
    """'compute' when AI >= π/β, else 'memory'."""
    return COMPUTE if ai >= ridge_point(peak, bandwidth) else MEMORY


def roofline_time(
    flops: float, nbytes: float, peak: float, bandwidth: float, launches: int = 0, launch_latency_s: float = 0.0
) -> float:
    """max(FLOPs/π, bytes/β) + launches · latency, in seconds."""
    return max(flops / peak, nbytes / bandwidth) + launches * launch_latency_s


class _Traffic:
    """Bytes moved and arithmetic intensity of a kernel, with or without a machine."""

    flops: float
    bytes_read: float
    bytes_written: float

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float:
        return arithmetic_intensity(self.flops, self.bytes)


@dataclass(frozen=True)
class KernelCost(_Traffic):
    """One kernel (or a group of identical ones) placed on a roofline."""

    name: str
    flops: float
    bytes_read: float
    bytes_written: float
    dtype: str
    peak_flops: float
    bandwidth: float
    count: int = 1
    launch_latency_s: float = 0.0
    shape: dict[str, Any] = field(default_factory=dict)

    @property
    def ridge_intensity(self) -> float:
        return ridge_point(self.peak_flops, self.bandwidth)

    @property
    def attainable_flops(self) -> float:
        return attainable(self.arithmetic_intensity, self.peak_flops, self.bandwidth)

    @property
    def bound(self) -> str:
        return bound(self.arithmetic_intensity, self.peak_flops, self.bandwidth)

    @property
    def time_s(self) -> float:
        return roofline_time(
            self.flops, self.bytes, self.peak_flops, self.bandwidth, self.count, self.launch_latency_s
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            bytes=self.bytes,
            arithmetic_intensity=self.arithmetic_intensity,
            ridge_intensity=self.ridge_intensity,
            attainable_flops=self.attainable_flops,
            bound=self.bound,
            time_s=self.time_s,
        )
        return d


@dataclass(frozen=True)
class Kernel(_Traffic):
    """FLOPs and bytes of a kernel, before any machine is chosen."""

    name: str
    flops: float
    bytes_read: float
    bytes_written: float
    dtype: str
    shape: dict[str, Any] = field(default_factory=dict)
    formula: str = ""

    def on(self, hardware: Any, count: int = 1) -> KernelCost:
        """This kernel on `hardware` (a Hardware), with the peak of its dtype."""
        return kernel_cost(
            self.flops, self.bytes_read, self.bytes_written, dtype=self.dtype,
            peak=hardware.peak(self.dtype), bandwidth=hardware.bandwidth, count=count,
            launch_latency_s=hardware.launch_latency_s, name=self.name, shape=self.shape,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(bytes=self.bytes, arithmetic_intensity=self.arithmetic_intensity)
        return d


def kernel_cost(
    flops: float,
    bytes_read: float,
    bytes_written: float,
    *,
    dtype: str,
    peak: float,
    bandwidth: float,
    count: int = 1,
    launch_latency_s: float = 0.0,
    name: str = "kernel",
    shape: dict[str, Any] | None = None,
) -> KernelCost:
    """Place FLOPs and bytes on the roofline of (peak FLOP/s, bandwidth bytes/s); validates inputs."""
    cost = KernelCost(
        name=name,
        flops=_number(flops, "flops", allow_zero=True),
        bytes_read=_number(bytes_read, "bytes read", allow_zero=True),
        bytes_written=_number(bytes_written, "bytes written", allow_zero=True),
        dtype=check_dtype(dtype),
        peak_flops=_number(peak, "peak FLOP/s"),
        bandwidth=_number(bandwidth, "bandwidth (bytes/s)"),
        count=count,
        launch_latency_s=_number(launch_latency_s, "launch latency (s)", allow_zero=True),
        shape=dict(shape or {}),
    )
    if cost.bytes == 0:
        raise UserError(f"{name}: arithmetic intensity needs bytes > 0 (FLOPs / bytes); got 0 bytes")
    return cost


# --- The lecture's worked examples -------------------------------------------------------------


def saxpy(n: int, dtype: str = "fp64") -> Kernel:
    """y = a·x + y over n elements: 2n FLOPs; loads x and y, stores y (3 elements per i)."""
    n = check_positive_int(n, "n")
    e = dtype_bytes(dtype)
    return Kernel("saxpy", 2 * n, 2 * n * e, n * e, dtype, {"n": n},
                  "flops = 2N; bytes = 3·N·sizeof(dtype) (load x, load y, store y)")


def matmul(m: int, n: int, k: int, dtype: str = "fp64", accumulate: bool = False) -> Kernel:
    """C (m×n) = A (m×k) · B (k×n) [+ C]: 2·m·n·k FLOPs; reads A and B, writes C, reads C too
    with `accumulate` (the lecture's 4·8·n² bytes for a square fp64 matmul, AI = n/16)."""
    m, n, k = check_positive_int(m, "m"), check_positive_int(n, "n"), check_positive_int(k, "k")
    e = dtype_bytes(dtype)
    read = (m * k + k * n + (m * n if accumulate else 0)) * e
    formula = "flops = 2·M·N·K; bytes = (M·K + K·N + M·N" + (" read + M·N written" if accumulate else " written") + ")·sizeof(dtype)"
    return Kernel("matmul", 2 * m * n * k, read, m * n * e, dtype,
                  {"m": m, "n": n, "k": k, "accumulate": accumulate}, formula)


def ridge_n(peak: float, bandwidth: float, dtype: str = "fp64", accumulate: bool = False) -> float:
    """The size n where a square n×n×n matmul's AI = 2n / (k·sizeof) meets the ridge π/β
    (k = 4 matrices moved with accumulate, else 3): n = k·sizeof·π / (2β)."""
    moved = 4 if accumulate else 3
    return moved * dtype_bytes(dtype) * ridge_point(peak, bandwidth) / 2


def kv_projection(n_embd: int, dtype: str = "fp16") -> Kernel:
    """K (or V) of one new token: a 1×C vector times a C×C weight. 2·C² FLOPs; the weight
    dominates the traffic (C² elements), giving AI = 1 FLOP/byte in fp16 — memory-bound."""
    c = check_positive_int(n_embd, "n_embd")
    e = dtype_bytes(dtype)
    return Kernel("kv_projection", 2 * c * c, c * c * e, 0, dtype, {"n_embd": c},
                  "flops = 2·C²; bytes = C²·sizeof(dtype) (the weight, the C-vectors are negligible)")
