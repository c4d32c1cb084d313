"""Peak memory of a GPT workload: weights, autocast weight copies, gradients, optimizer state,
activations kept for backward, KV cache and logits — and the largest batch that fits.

The model follows what eager PyTorch allocates with gptperf's runtime: fp32 master weights under
bf16/fp16 autocast (whose per-step cache keeps one low-precision copy of each matmul weight),
AdamW's m and v, gradients set to None between steps (`zero_grad(set_to_none=True)`), the logits
held by the caller through backward. Every term is in docs/perfmodel.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.workload import Workload, count_parameters, matmul_parameters, shape


def _autocast_parameters(config: GPTConfig) -> int:
    """Weights whose low-precision copy autocast makes and the matmuls keep for backward: the four
    Linear weights per block and the tied head. (Bias copies are not saved by the matmul and go
    when the autocast region ends.)"""
    return matmul_parameters(config)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of each part of the predicted peak. `total` is the peak over the step (not the sum
    of the parts: e.g. gradients are not alive at the peak of a train step); `live` lists what
    is allocated at that moment, `peak_at` names it."""

    weights: float
    weight_copies: float
    gradients: float
    optimizer_state: float
    activations: float
    kv_cache: float
    logits: float
    total: float
    peak_at: str
    live: dict[str, float]
    phases: dict[str, float]
    config: GPTConfig = field(repr=False, compare=False)
    workload: Workload = field(repr=False, compare=False)

    def fits(self, hardware: Any) -> bool:
        """Whether the peak fits the hardware's memory."""
        return self.total <= hardware.memory_bytes

    def max_batch(self, hardware: Any, limit: int = 1 << 24) -> int:
        """The largest batch whose predicted peak fits `hardware` (0 if none does)."""
        return max_batch(self.config, self.workload, hardware.memory_bytes, limit=limit)

    def to_dict(self, hardware: Any = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "weights": self.weights,
            "weight_copies": self.weight_copies,
            "gradients": self.gradients,
            "optimizer_state": self.optimizer_state,
            "activations": self.activations,
            "kv_cache": self.kv_cache,
            "logits": self.logits,
            "total": self.total,
            "peak_at": self.peak_at,
            "live_at_peak": dict(self.live),
            "phases": dict(self.phases),
        }
        if hardware is not None:
            d["capacity"] = hardware.memory_bytes
            d["fits"] = self.fits(hardware)
            d["max_batch"] = self.max_batch(hardware) if math.isfinite(hardware.memory_bytes) else None
        return d


def saved_activations_per_layer(config: GPTConfig, workload: Workload) -> int:
    """Bytes one block keeps for backward (train)."""
    s = shape(config, workload)
    N, C, a, w = s.N, s.C, s.a, s.w
    mixed = workload.mixed_precision
    saved = (
        N * C * w  # ln_1 input (the residual stream)
        + 2 * N * w  # ln_1 mean and rstd
        + N * C * a  # ln_1 output as the qkv matmul reads it (autocast's copy under mixed precision)
        + 3 * N * C * a  # q, k, v (views of the qkv output)
        + N * C * a  # attention output = attn.proj's input
        + N * C * w + 2 * N * w  # ln_2 input, mean, rstd
        + N * C * a  # ln_2 output as mlp.fc reads it
        + 4 * N * C * a  # mlp.fc output (GELU's input)
        + 4 * N * C * a  # GELU output (mlp.proj's input)
    )
    if config.attention == "sdpa":
        saved += s.B * s.H * s.T * 4  # fp32 logsumexp
    else:  # softmax keeps its output; under autocast the context matmul keeps a low-precision copy
        saved += s.scores_full * (w + (a if mixed else 0))
        if s.causal:
            saved += s.T * s.L  # the inverted bool mask masked_fill keeps
    return saved


def _parts(config: GPTConfig, workload: Workload) -> MemoryBreakdown:
    s = shape(config, workload)
    N, C, V, a, w = s.N, s.C, s.V, s.a, s.w
    mixed = workload.mixed_precision
    P = count_parameters(config)
    buffers = config.n_layer * config.block_size ** 2  # the bool causal mask of each attention module
    weights = P * w + buffers
    copies = _autocast_parameters(config) * a if mixed else 0
    # autocast runs (log_)softmax with dtype=float32: a bf16 input is first copied to fp32,
    # an fp16 input on CUDA is read directly (half-to-float kernel)
    upcast = w if workload.dtype == "bf16" else 0
    ids = (N * (2 if workload.has_loss else 1) + s.T) * 8  # token ids (and targets), positions: int64
    M = s.B if workload.last_logits_only else N
    kv_cache = 2 * s.n_layer * s.B * workload.context * C * a if workload.uses_kv_cache else 0
    phases: dict[str, float] = {}
    live: dict[str, float]

    if workload.has_backward:
        acts = config.n_layer * saved_activations_per_layer(config, workload)
        acts += N * C * w + 2 * N * w + N * C * a  # ln_f input, stats, output as the head reads it
        grads = P * w
        opt = 2 * P * w
        # end of forward: logits, their fp32 copy for the loss (autocast), the saved log-probabilities
        fwd_logits = N * V * (a + upcast + w)
        # loss backward: logits (held by the caller), saved log-probs, their gradient, the logits' gradient
        bwd_logits = N * V * (a + 3 * w)
        static = weights + opt + ids
        phases["forward"] = static + copies + acts + fwd_logits
        phases["loss backward"] = static + copies + acts + bwd_logits
        phases["optimizer step"] = static + grads + N * V * a  # the caller still holds the logits
        peak_at = max(phases, key=phases.__getitem__)
        logits = fwd_logits if peak_at == "forward" else bwd_logits
        live = {"weights": weights, "optimizer_state": opt, "inputs": ids}
        if peak_at == "optimizer step":
            logits = N * V * a
            live.update(gradients=grads, logits=logits)
        else:
            live.update(weight_copies=copies, activations=acts, logits=logits)
        return MemoryBreakdown(weights, copies, grads, opt, acts, kv_cache, logits, phases[peak_at],
                               peak_at, live, phases, config, workload)

    # inference (no grad): activations are transient; the peak is in a block or at the head
    block = N * C * w + N * C * a + 8 * N * C * a  # residual stream, ln_2 output copy, fc and GELU outputs
    if config.attention == "math":
        block = max(block, N * C * w + 3 * N * C * a + s.scores_full * (a + upcast + w))
    head_logits = M * V * a + (N * V * (upcast + w) if workload.has_loss else 0)
    head = N * C * w + N * C * a + head_logits
    static = weights + copies + kv_cache + ids
    phases["block"] = static + block
    phases["head"] = static + head
    peak_at = max(phases, key=phases.__getitem__)
    acts = block if peak_at == "block" else N * C * w + N * C * a
    logits = head_logits if peak_at == "head" else 0
    live = {"weights": weights, "weight_copies": copies, "kv_cache": kv_cache, "inputs": ids,
            "activations": acts, "logits": logits}
    return MemoryBreakdown(weights, copies, 0, 0, acts, kv_cache, logits, phases[peak_at], peak_at,
                           live, phases, config, workload)


def memory_breakdown(config: GPTConfig, workload: Workload) -> MemoryBreakdown:
    """The predicted peak memory of one step of `workload` and what it is made of."""
    return _parts(config, workload)


def max_batch(config: GPTConfig, workload: Workload, capacity: float, limit: int = 1 << 24) -> int:
    """The largest batch (<= limit) whose predicted peak is at most `capacity` bytes; 0 if none."""
    if not (isinstance(capacity, (int, float)) and capacity > 0):
        raise UserError(f"memory capacity must be a positive number of bytes, got {capacity!r}")

    def fits(b: int) -> bool:
        return _parts(config, Workload(workload.kind, b, workload.seq, workload.dtype)).total <= capacity

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:  # memory grows with the batch: bisect
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
