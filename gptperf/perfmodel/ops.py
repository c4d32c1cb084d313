"""One predicted operation (`OpCost`) and the per-element FLOP counts gptperf uses for non-matmul work.

A matmul of (M×K)·(K×N) is 2·M·N·K FLOPs. Everything else is counted per element with the
constants below (a transcendental — exp, tanh, rsqrt, log — counts as one FLOP); docs/perfmodel.md
derives each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gptperf.perfmodel.roofline import COMPUTE, MEMORY

# What a roofline bound (`OpCost.time_s`, summed over a step) is, said the same way wherever it is
# printed beside a measurement.
ROOFLINE_DEFINITION = ("max(FLOPs/π, bytes/β) per operation, plus each kernel's fixed cost: the "
                       "launch latency, or inside a CUDA graph the α measured on plain kernels")

# Forward and backward FLOPs per element (per parameter for AdamW).
LAYERNORM_FWD = 7  # mean: add; var: sub, square, add; normalise: ×rstd, ×γ, +β
LAYERNORM_BWD = 13  # dŷ=dy·γ, x̂ (2), dŷ·x̂, two row sums, x̂·mean, two subs, ×rstd; dγ (2), dβ (1)
GELU_FWD = 9  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): x³ (2), ×a, +x, ×k, tanh, +1, ×x, ×0.5
GELU_BWD = 18  # recompute u (5), tanh, 1−t² (2), k(1+3a·x²) (3), combine (6), ×dy
SOFTMAX_FWD = 5  # max, subtract, exp, sum, divide
SOFTMAX_BWD = 4  # dy·y, row sum, subtract, ×y
SCALE = 1  # the 1/√d multiply of the scores (the causal mask is a select: 0 FLOPs)
SDPA_FWD_PER_SCORE = SCALE + SOFTMAX_FWD  # fused: scale and online softmax on each computed score
SDPA_BWD_PER_SCORE = 5  # scale, recompute P = exp(S − lse) (2), dS = P·(dP − D) (2)
SDPA_BWD_PER_OUTPUT = 2  # D = rowsum(dO·O): one multiply and one add per output element
BIAS = 1  # bias add per output element (forward); bias gradient: one add per output element
RESIDUAL_FWD = 1  # x + h
RESIDUAL_BWD = 1  # the two gradient paths meeting at the add are summed
EMBED_FWD = 1  # wte[idx] + wpe[pos]: one add per element
EMBED_BWD = 2  # scatter-add into the token-embedding gradient, sum over the batch for positions
CROSS_ENTROPY_FWD = 5  # log-softmax per logit: max, subtract, exp, sum, subtract log-sum
CROSS_ENTROPY_ROW = 1  # per row: the mean over the picked log-probabilities
CROSS_ENTROPY_BWD = 4  # log-softmax backward per logit: exp, row sum, multiply, subtract
ADAMW = 16  # per parameter: decay (2), m (3), v (4), bias corrections (2), sqrt, +ε, ÷, ×lr, −

INDEX_BYTES = 8  # token ids and targets are int64


class Traffic:
    """Bytes moved, arithmetic intensity and bound of an op or a group of ops.

    An op that moves no bytes has infinite intensity here (`roofline.arithmetic_intensity`
    refuses it): a predicted op list may hold such an op, and it must not stop the sums.
    """

    flops: float
    bytes_read: float
    bytes_written: float
    ridge_intensity: float

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def bound(self) -> str:
        return COMPUTE if self.arithmetic_intensity >= self.ridge_intensity else MEMORY


@dataclass(frozen=True)
class OpCost(Traffic):
    """One predicted operation: its name and phase, FLOPs, bytes and place on the roofline.

    `flops` is gptperf's count (causal attention at the causal count); `matmul_flops` is the part
    of it done by matrix multiplies (what FlopCounterMode counts, except for the causal halving)
    and `full_flops` the count with attention at the full T×L (FlopCounterMode's convention for
    matmuls). `count` is the number of kernels the op launches (in eager PyTorch, or in a compiled
    step with `predict(..., compiled=True)`). `overhead_s`, when set, is the op's whole per-kernel
    cost (a measured α per kernel) and replaces `count · launch_latency_s`.
    """

    name: str
    component: str
    layer: int | None
    phase: str
    count: int
    flops: float
    matmul_flops: float
    full_flops: float
    bytes_read: float
    bytes_written: float
    dtype: str
    peak_flops: float
    bandwidth: float
    launch_latency_s: float
    overhead_s: float | None = None

    @property
    def ridge_intensity(self) -> float:
        return self.peak_flops / self.bandwidth

    @property
    def attainable_flops(self) -> float:
        return min(self.peak_flops, self.bandwidth * self.arithmetic_intensity)

    @property
    def compute_time_s(self) -> float:
        return self.flops / self.peak_flops

    @property
    def memory_time_s(self) -> float:
        return self.bytes / self.bandwidth

    @property
    def time_s(self) -> float:
        return max(self.compute_time_s, self.memory_time_s) + self.kernel_time_s

    @property
    def kernel_time_s(self) -> float:
        """The fixed per-kernel cost of the op: measured α's, else count · launch latency."""
        return self.count * self.launch_latency_s if self.overhead_s is None else self.overhead_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "component": self.component,
            "layer": self.layer,
            "phase": self.phase,
            "count": self.count,
            "flops": self.flops,
            "matmul_flops": self.matmul_flops,
            "full_flops": self.full_flops,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "bytes": self.bytes,
            "arithmetic_intensity": self.arithmetic_intensity,
            "dtype": self.dtype,
            "peak_flops": self.peak_flops,
            "attainable_flops": self.attainable_flops,
            "bound": self.bound,
            "bandwidth": self.bandwidth,
            "kernel_time_s": self.kernel_time_s,
            "time_s": self.time_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], launch_latency_s: float) -> OpCost:
        """The inverse of `to_dict`, given the hardware's launch latency (which `to_dict` folds
        into `kernel_time_s`): a kernel time other than count · latency was a measured overhead."""
        kernel = d["kernel_time_s"]
        return cls(d["name"], d["component"], d["layer"], d["phase"], d["count"], d["flops"],
                   d["matmul_flops"], d["full_flops"], d["bytes_read"], d["bytes_written"],
                   d["dtype"], d["peak_flops"], d["bandwidth"], launch_latency_s,
                   None if kernel == d["count"] * launch_latency_s else kernel)
