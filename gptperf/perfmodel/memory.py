"""Peak memory of a GPT workload: weights, autocast weight copies, gradients, optimizer state,
activations kept for backward, KV cache and logits — and the largest batch that fits.

The model follows what eager PyTorch allocates with gptperf's runtime: fp32 master weights under
bf16/fp16 autocast (whose per-step cache keeps one low-precision copy of each matmul weight),
AdamW's m and v, gradients set to None between steps (`zero_grad(set_to_none=True)`), the loss
alone kept by the step (`steps.train.TrainStep`: the logits go once the loss has read them), and
the loss as the device's autocast runs it (`_loss_bytes`). Under a compiled plan (torch.compile,
inductor) a train step keeps what AOTAutograd's min-cut partitioner saves for backward and a
forward step keeps only transient buffers (`saved_for_backward_compiled`). Under the plan's master
weights the blocks' Linear weights and their gradients are bf16 (autocast copies none of them),
fp32 copies of them stay beside AdamW's moments, and so do fp32 copies of their gradients except
under the one-pass master update. Every term is in docs/perfmodel.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from gptperf import names
from gptperf.errors import UserError
from gptperf.model.config import NORM_FED_WEIGHTS, GPTConfig
from gptperf.perfmodel.workload import (
    Workload,
    count_parameters,
    master_copied_parameters,
    matmul_parameters,
    shape,
)
from gptperf.plan import NORM_SCALED_WEIGHT_BYTES, ExecutionPlan

DEVICE_TYPES: tuple[str, ...] = ("cuda", "cpu")  # the devices whose allocations the model follows


def _autocast_parameters(config: GPTConfig, master_weights: bool = False) -> int:
    """Weights whose low-precision copy autocast makes and the matmuls keep for backward: the four
    Linear weights per block and the tied head (the head alone under master weights: the blocks'
    are bf16 already). (Bias copies are not saved by the matmul and go when the autocast region
    ends.)"""
    if master_weights:
        return math.prod(config.weight_shape(names.LM_HEAD))
    return matmul_parameters(config)


def _train_state(config: GPTConfig, w: int, a: int, plan: ExecutionPlan | None) -> tuple[int, int, int]:
    """(weights, gradients, optimizer state) bytes of a train step: P parameters in `w`, AdamW's
    m and v. Under master weights the blocks' Linear weights and gradients are in `a`, and their
    fp32 copies (counted as weights) stay too, and so do the copies' fp32 gradients, which every
    update overwrites (counted as optimizer state), unless the one-pass update reads the bf16 ones."""
    P = count_parameters(config)
    master = plan is not None and plan.master_weights
    copied = master_copied_parameters(config) if master else 0
    low = copied * (w - a)  # the copied weights' bytes not spent in `w`
    copy_grads = 0 if plan is not None and plan.fused_master_update else copied * 4
    return P * w - low + copied * 4, P * w - low, 2 * P * w + copy_grads


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
    plan: ExecutionPlan | None = field(default=None, repr=False, compare=False)
    device_type: str = field(default="cuda", repr=False, compare=False)

    @property
    def compiled(self) -> bool:
        """Whether the prediction is of a compiled train or forward step (else: eager)."""
        return _compiled(self.workload, self.plan)

    def fits(self, hardware: Any) -> bool:
        """Whether the peak fits the hardware's memory."""
        return self.total <= hardware.memory_bytes

    def max_batch(self, hardware: Any, limit: int = 1 << 24) -> int:
        """The largest batch whose predicted peak fits `hardware` (0 if none does)."""
        return max_batch(self.config, self.workload, hardware.memory_bytes, limit=limit, plan=self.plan,
                         device_type=self.device_type)

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
            "execution": "compiled" if self.compiled else "eager",
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


def saved_for_backward_compiled(config: GPTConfig, workload: Workload) -> tuple[int, int]:
    """(bytes per block, bytes of the embeddings, ln_f and the loss) that a compiled train step's
    forward graph saves for backward beyond the weights, inputs, logits and autocast weight
    copies — what AOTAutograd's min-cut partitioner (as inductor runs it) keeps. It recomputes a
    LayerNorm's output from the normalised input x̂ it saves, but saves a tensor a backward
    matmul reads (LayerNorm output in the matmul dtype, q/k/v, attention output, GELU input and
    output, the weights' low-precision copies); it saves reductions (LayerNorm rstd, the loss's
    row max and log-sum-exp) and recomputes the log-softmax from the logits."""
    s = shape(config, workload)
    N, C, a, w = s.N, s.C, s.a, s.w
    mixed = workload.mixed_precision
    per_layer = (
        2 * (N * C * w + N * w)  # ln_1, ln_2: x̂ (residual dtype) and rstd
        + 2 * N * C * a  # their outputs as qkv and mlp.fc read them
        + 3 * N * C * a  # q, k, v (views of the qkv output; copies under math attention)
        + N * C * a  # attention output = attn.proj's input
        + 4 * N * C * a  # mlp.fc output (GELU's input)
        + 4 * N * C * a  # GELU output (mlp.proj's input)
    )
    if config.attention == "sdpa":
        per_layer += s.B * s.H * s.T * 4  # fp32 logsumexp
    elif mixed:  # CUDA autocast's fp32 softmax: its low-precision copy for the context matmul,
        # and the scores, row max and sum it is recomputed from
        per_layer += 2 * s.scores_full * a + 2 * s.B * s.H * s.T * w
    else:
        per_layer += s.scores_full * w  # softmax output
    # the first ln_1's input is recomputed from the two embedding lookups it keeps (wte[idx] in
    # place of x̂, wpe[pos]) and its mean; at batch <= 2 the partitioner may keep x̂ instead
    # (T·C·w + N·w less): docs/perfmodel.md
    rest = s.T * C * w + N * w
    rest += N * C * w + N * w + N * C * a  # ln_f x̂, rstd, output as the head reads it
    rest += 2 * N * w  # the log-softmax's row max and log-sum-exp
    return per_layer, rest


def _scaled_norm_copies(config: GPTConfig, w: int) -> int:
    """Bytes of the fused decode step's own copies W∘γ of the weights after a LayerNorm (qkv,
    mlp.fc, the LM head), each kept when at most NORM_SCALED_WEIGHT_BYTES."""
    total = 0
    for component in NORM_FED_WEIGHTS:
        rows, cols = config.weight_shape(component)
        nbytes, count = rows * cols * w, 1 if component == names.LM_HEAD else config.n_layer
        total += count * nbytes if nbytes <= NORM_SCALED_WEIGHT_BYTES else 0
    return total


def _compiled(workload: Workload, plan: ExecutionPlan | None) -> bool:
    return plan is not None and plan.compiled and workload.kind in ("train", "forward")


def _compiled_parts(config: GPTConfig, workload: Workload, plan: ExecutionPlan) -> MemoryBreakdown:
    """A compiled train or forward step (see docs/perfmodel.md, Memory)."""
    s = shape(config, workload)
    N, C, V, a, w = s.N, s.C, s.V, s.a, s.w
    mixed = workload.mixed_precision
    P = count_parameters(config)
    buffers = config.n_layer * config.block_size ** 2
    weights = P * w + buffers
    ids = (2 * N + s.T) * 8
    phases: dict[str, float] = {}
    if workload.has_backward:
        master = plan.master_weights
        per_layer, rest = saved_for_backward_compiled(config, workload)
        acts = config.n_layer * per_layer + rest
        copies = _autocast_parameters(config, master) * a if mixed else 0  # saved for backward
        weights, grads, opt = _train_state(config, w, a, plan)
        weights += buffers
        static = weights + opt + ids
        # the logits, saved for the loss's backward. The compiled graph returns the loss alone
        # (steps.train._LossOnly): inductor writes the logits' gradient over them; the fused
        # loss's Triton kernel (plan.fused_loss) writes it beside them. gpt2 B=12 T=1024 bf16 on
        # the H200: 6.79 GiB measured, 6.64 predicted; fused loss 7.87, 7.79.
        loss_logits = (2 if plan.fused_loss else 1) * N * V * a
        phases["forward"] = static + copies + acts + N * V * a
        phases["loss backward"] = static + copies + acts + loss_logits
        phases["optimizer step"] = static + grads
        peak_at = max(phases, key=phases.__getitem__)
        live: dict[str, float] = {"weights": weights, "optimizer_state": opt, "inputs": ids}
        if peak_at == "optimizer step":
            logits = 0
            live.update(gradients=grads)
        else:
            logits = loss_logits if peak_at == "loss backward" else N * V * a
            live.update(weight_copies=copies, activations=acts, logits=logits)
        return MemoryBreakdown(weights, copies, grads, opt, acts, 0, logits, phases[peak_at],
                               peak_at, live, phases, config, workload, plan)

    # forward without grad: inductor frees a buffer after its last use, computes GELU in place,
    # casts weights in the graph (transient) and reads the logits in fused loss reductions
    mlp_cast = 4 * C * C * a if mixed else 0
    block = N * C * (w + 6 * a) + mlp_cast  # residual stream, fc/GELU output, LN and proj outputs
    if config.attention == "math":  # q, k, v copies; scores, the fp32 softmax and its cast
        scores = s.scores_full * (2 * a + w if mixed else w)
        block = max(block, N * C * (w + 3 * a) + scores)
    head_copy = V * C * a if mixed else 0  # the head weight's low-precision cast
    head = N * C * a + head_copy + N * V * a  # ln_f output, head weight cast, logits
    static = weights + ids
    phases["block"] = static + block
    phases["head"] = static + head
    peak_at = max(phases, key=phases.__getitem__)
    acts = block if peak_at == "block" else N * C * a
    copies = head_copy if peak_at == "head" else 0
    logits = N * V * a if peak_at == "head" else 0
    live = {"weights": weights, "inputs": ids, "weight_copies": copies, "activations": acts,
            "logits": logits}
    return MemoryBreakdown(weights, copies, 0, 0, acts, 0, logits, phases[peak_at], peak_at,
                           live, phases, config, workload, plan)


def _loss_bytes(a: int, w: int, mixed: bool, device_type: str) -> tuple[int, int]:
    """Bytes per logit an eager step's loss holds (`a`: the logits' dtype, `w`: fp32 under
    autocast): (at the end of forward, the logits' own included; at the peak of its backward, the
    logits gone: gptperf's step keeps the loss alone). torch's cross-entropy asks log_softmax for
    the logits' own dtype; under CUDA autocast a bf16/fp16 log_softmax stays so and nll_loss's
    autocast copies its output to fp32 (both kept for backward; nll_loss's fp32 gradient beside
    them at its backward's peak: 2a + w, then a + 2w, measured on an H100 with torch 2.11); under
    CPU autocast the logits are copied to fp32 first and log_softmax runs in fp32 (a + 2w, then
    3w, torch 2.13); without autocast, log-probabilities in the logits' dtype (a + w, then 3w)."""
    if not mixed:
        return a + w, 3 * w
    if device_type == "cuda":
        return 2 * a + w, a + 2 * w
    return a + 2 * w, 3 * w


def _parts(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None = None,
           device_type: str = "cuda") -> MemoryBreakdown:
    if plan is not None and _compiled(workload, plan):  # (`is not None`: for the type checker)
        return replace(_compiled_parts(config, workload, plan), device_type=device_type)
    s = shape(config, workload)
    N, C, V, a, w = s.N, s.C, s.V, s.a, s.w
    mixed = workload.mixed_precision
    P = count_parameters(config)
    buffers = config.n_layer * config.block_size ** 2  # the bool causal mask of each attention module
    weights = P * w + buffers
    master = plan is not None and plan.master_weights and workload.has_backward
    copies = _autocast_parameters(config, master) * a if mixed else 0
    if plan is not None and plan.fuses_decode(workload.kind, s.B):
        copies += _scaled_norm_copies(config, w)
    # autocast runs math attention's softmax with dtype=float32: a bf16 input is first copied to
    # fp32, an fp16 input on CUDA is read directly (half-to-float kernel)
    upcast = w if workload.dtype == "bf16" else 0
    fwd_loss, bwd_loss = _loss_bytes(a, w, mixed, device_type)
    ids = (N * (2 if workload.has_loss else 1) + s.T) * 8  # token ids (and targets), positions: int64
    M = s.B if workload.last_logits_only else N
    kv_cache = 2 * s.n_layer * s.B * workload.context * C * a if workload.uses_kv_cache else 0
    phases: dict[str, float] = {}
    live: dict[str, float]

    if workload.has_backward:
        acts = config.n_layer * saved_activations_per_layer(config, workload)
        acts += N * C * w + 2 * N * w + N * C * a  # ln_f input, stats, output as the head reads it
        weights, grads, opt = _train_state(config, w, a, plan)
        weights += buffers
        # end of forward: the logits and what the loss keeps for backward; its backward's peak,
        # the logits gone (`_loss_bytes`; gpt2 B=8 T=512 bf16 on an H100: 5.275 GB measured,
        # 5.604 predicted while the logits were counted)
        fwd_logits = N * V * fwd_loss
        bwd_logits = N * V * bwd_loss
        static = weights + opt + ids
        phases["forward"] = static + copies + acts + fwd_logits
        phases["loss backward"] = static + copies + acts + bwd_logits
        phases["optimizer step"] = static + grads
        peak_at = max(phases, key=phases.__getitem__)
        logits = fwd_logits if peak_at == "forward" else bwd_logits
        live = {"weights": weights, "optimizer_state": opt, "inputs": ids}
        if peak_at == "optimizer step":
            logits = 0
            live.update(gradients=grads)
        else:
            live.update(weight_copies=copies, activations=acts, logits=logits)
        return MemoryBreakdown(weights, copies, grads, opt, acts, kv_cache, logits, phases[peak_at],
                               peak_at, live, phases, config, workload, plan, device_type)

    # inference (no grad): activations are transient; the peak is in a block or at the head
    block = N * C * w + N * C * a + 8 * N * C * a  # residual stream, ln_2 output copy, fc and GELU outputs
    if config.attention == "math":
        block = max(block, N * C * w + 3 * N * C * a + s.scores_full * (a + upcast + w))
    head_logits = M * V * a + (N * V * (fwd_loss - a) if workload.has_loss else 0)
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
                           live, phases, config, workload, plan, device_type)


def _check_device_type(device_type: Any) -> None:
    if device_type not in DEVICE_TYPES:
        raise UserError(f"device_type must be one of {', '.join(DEVICE_TYPES)}, got {device_type!r}")


def _check_plan(plan: Any) -> None:
    if plan is not None and not isinstance(plan, ExecutionPlan):
        raise UserError(f"plan must be an ExecutionPlan or None (eager), got {type(plan).__name__}")


def memory_breakdown(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None = None,
                     device_type: str = "cuda") -> MemoryBreakdown:
    """The predicted peak memory of one step of `workload` under `plan` (None: eager) on a
    `device_type` device ("cuda" or "cpu": their autocast differs in the loss, `_loss_bytes`) and
    what it is made of. A compiled plan changes train and forward steps; inference steps are
    predicted as eager."""
    _check_plan(plan)
    _check_device_type(device_type)
    return _parts(config, workload, plan, device_type)


def max_batch(config: GPTConfig, workload: Workload, capacity: float, limit: int = 1 << 24,
              plan: ExecutionPlan | None = None, device_type: str = "cuda") -> int:
    """The largest batch (<= limit) whose predicted peak under `plan` (None: eager) on a
    `device_type` device is at most `capacity` bytes; 0 if none."""
    if not (isinstance(capacity, (int, float)) and capacity > 0):
        raise UserError(f"memory capacity must be a positive number of bytes, got {capacity!r}")
    _check_plan(plan)
    _check_device_type(device_type)

    def fits(b: int) -> bool:
        w = Workload(workload.kind, b, workload.seq, workload.dtype)
        return _parts(config, w, plan, device_type).total <= capacity

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
