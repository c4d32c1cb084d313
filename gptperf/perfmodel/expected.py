"""The calibrated expected time of a step: what this machine will take, as opposed to the roofline
bound of what it allows. Pure Python over a `Calibration` (measured curves).

Three steps (docs/perfmodel.md, "Calibrated prediction"):

1. Decompose: every operation of the step (the names of `gptperf.names`) becomes the kernels
   its plan runs — each a `KernelCall`: a matmul (M, N, K), an attention (batch·heads, length,
   head size), a vector kernel of so many bytes (LayerNorm, GELU, add, cast, copy, softmax,
   cross-entropy, embedding, a bias gradient), the optimizer over its T tensors and P parameters,
   a one-row gemv.
   A compiled training step's non-matmul kernels are those inductor made of a recorded
   calibration step (`Calibration.compiled`), scaled by the bytes the operation moves.
2. Look up: each call's time on the measured curve of its kind (`Curve.at`, `Grid.at`).
3. Compose by the plan:
   * eager on a GPU: the host issues kernels while the device runs them. The host's time per
     phase (Python, dispatch, launches: `Calibration.host`) is spread over the phase's kernels;
     a kernel starts when it is issued and the one before it has finished; the step ends when
     the last kernel does (`queue_time`). Short kernels leave the device waiting on the host.
     The fused AdamW phase issues its kernels before the measured share of its host time that
     runs beside them (`Calibration.optimizer_overlap`).
   * CUDA graph: no host in the loop; the device time of the kernels back to back (the curves
     are measured back to back, inside graphs, so their gaps are in them).
   * a kernel launched from a stream (every GPU step that is not a graph) costs the device
     `Calibration.launch_gap_s` more than in a graph: added to each such kernel.
   * on a CPU host and device are one: the host time plus the kernels' time; the host time is
     measured on a tiny model whose own kernel time is taken out of it (`_host_only`).

   The host costs are charged at the host's speed: `host_speed` (the host model's step time now
   over its time when the costs were measured, `gptperf.measure.probe.host_speed`) multiplies
   them when a command that measures the step has probed the host.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gptperf import names
from gptperf.dtypes import dtype_bytes
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.calibration import (
    FUSED_ATTENTION_PASS,
    FUSED_STEP,
    GEMV_ARGMAX_CHAIN,
    GEMV_CHAIN,
    GEMV_RESIDUAL_CHAIN,
    HOST_MODEL,
    Calibration,
    host_model_config,
)
from gptperf.perfmodel.transformer import GREEDY_PICK_KERNELS, _split_k_reductions
from gptperf.perfmodel.workload import (
    DECODE,
    Shape,
    Workload,
    count_parameter_tensors,
    count_parameters,
    shape,
)
from gptperf.plan import INFERENCE_KINDS, ExecutionPlan

SCHEMA = "gptperf.expected/1"
# A matmul key's suffix for a linear layer with its bias: an eager layer runs cuBLASLt's bias
# epilogue, charged at the grid's time × the calibration's measured `bias_ratio`.
BIASED = "+bias"
SOURCE = "calibrated"


@dataclass(frozen=True)
class KernelCall:
    """`count` identical kernels of one kind: family matmul | attention | vector | optimizer |
    gemv | fused; `key` names the curve ("bf16", "bf16:causal_fwd", "add:fp32", ...);
    `point` the sizes it is looked up at ((M, N, K), (BH, T, D), (bytes,), (parameters,))."""

    family: str
    key: str
    point: tuple[float, ...]
    count: int = 1


@dataclass(frozen=True)
class ExpectedOp:
    """One operation's expected device time (its kernels on the curves) and its share of the
    host time, per step."""

    name: str
    component: str
    layer: int | None
    phase: str
    device_s: float
    host_s: float
    kernels: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "component": self.component, "layer": self.layer,
                "phase": self.phase, "device_s": self.device_s, "host_s": self.host_s,
                "kernels": self.kernels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpectedOp:
        return cls(d["name"], d["component"], d["layer"], d["phase"], float(d["device_s"]),
                   float(d["host_s"]), int(d["kernels"]))


@dataclass
class Expected:
    """The calibrated expected time of one step of `workload` under `plan`."""

    config: GPTConfig
    workload: Workload
    plan: ExecutionPlan
    step_time_s: float
    ops: list[ExpectedOp]
    label: str
    composition: str
    notes: list[str] = field(default_factory=list)
    source: str = SOURCE

    @property
    def device_s(self) -> float:
        return sum(o.device_s for o in self.ops)

    @property
    def host_s(self) -> float:
        return sum(o.host_s for o in self.ops)

    @property
    def tokens_per_s(self) -> float:
        return self.workload.tokens / self.step_time_s

    def by_key(self) -> dict[tuple[str, str], ExpectedOp]:
        return {(o.name, o.phase): o for o in self.ops}

    def by_component(self) -> dict[tuple[str, str], float]:
        """Device seconds per (component, phase), summed over layers."""
        out: dict[tuple[str, str], float] = {}
        for o in self.ops:
            out[(o.component, o.phase)] = out.get((o.component, o.phase), 0.0) + o.device_s
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "source": self.source, "label": self.label,
                "config": self.config.to_dict(), "workload": self.workload.to_dict(),
                "plan": self.plan.to_dict(), "step_time_s": self.step_time_s,
                "device_s": self.device_s, "host_s": self.host_s,
                "tokens_per_s": self.tokens_per_s, "composition": self.composition,
                "notes": list(self.notes), "ops": [o.to_dict() for o in self.ops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Expected:
        from gptperf.schema import check_schema

        check_schema(d, SCHEMA)
        return cls(GPTConfig.from_dict(d["config"]), Workload.from_dict(d["workload"]),
                   ExecutionPlan.from_dict(d["plan"]), float(d["step_time_s"]),
                   [ExpectedOp.from_dict(o) for o in d["ops"]], d["label"], d["composition"],
                   list(d["notes"]), d.get("source", SOURCE))


# ------------------------------------------------------------------------------------------------
# 1. Decompose


def _vec(op: str, dtype: str, nbytes: float, count: int = 1) -> KernelCall:
    return KernelCall("vector", f"{op}:{dtype}", (float(nbytes),), count)


def _cast(n: float, src: str, dst: str) -> KernelCall:
    return _vec(f"cast_to_{dst}", src, n * (dtype_bytes(src) + dtype_bytes(dst)))


def _mm(dtype: str, m: int, n: int, k: int, bias: bool = False) -> KernelCall:
    return KernelCall("matmul", dtype + (BIASED if bias else ""), (float(m), float(n), float(k)))


@dataclass(frozen=True)
class _Ctx:
    s: Shape
    workload: Workload
    plan: ExecutionPlan
    mm: str  # matmul dtype key
    act: str  # activation dtype name (bf16 under autocast)
    store: str  # residual stream / LayerNorm / parameter dtype name (fp32 under autocast)

    @property
    def mixed(self) -> bool:
        return self.workload.mixed_precision

    @property
    def train(self) -> bool:
        return self.workload.has_backward


def _linear_fwd(c: _Ctx, rows: int, k_in: int, n_out: int, input_cast: bool,
                bias: bool = True) -> list[KernelCall]:
    """y = x·Wᵀ + b: under autocast the input (when it arrives in fp32) and the weight are cast;
    eager over more than one row, the bias rides in cuBLASLt's matmul epilogue (torch's addmm;
    one row takes another path, and inductor places a compiled step's bias itself)."""
    calls = []
    if c.mixed:
        if input_cast:
            calls.append(_cast(rows * k_in, c.store, c.act))
        calls.append(_cast(k_in * n_out, c.store, c.act))
    calls.append(_mm(c.mm, rows, n_out, k_in, bias=bias and rows > 1 and not c.plan.compiled))
    return calls


def _linear_bwd(c: _Ctx, rows: int, k_in: int, n_out: int, bias: bool = True) -> list[KernelCall]:
    """dX = dY·W (rows × k_in over n_out), dW = dYᵀ·X (n_out × k_in over rows), db = Σ dY; under
    autocast the weight's gradient is cast back to fp32."""
    calls = [_mm(c.mm, rows, k_in, n_out), _mm(c.mm, n_out, k_in, rows)]
    a = dtype_bytes(c.act)
    if bias:
        calls.append(_vec("sum_rows", c.act, rows * n_out * a))
    if c.mixed:
        calls.append(_cast(k_in * n_out, c.act, c.store))
    return calls


def _ln_fwd(c: _Ctx, rows: int) -> list[KernelCall]:
    return [_vec("layernorm_fwd", c.store, 2 * rows * c.s.C * dtype_bytes(c.store))]


def _ln_bwd(c: _Ctx, rows: int) -> list[KernelCall]:
    calls = [_cast(rows * c.s.C, c.act, c.store)] if c.mixed else []
    return calls + [_vec("layernorm_bwd", c.store, 3 * rows * c.s.C * dtype_bytes(c.store))]


def _attention(c: _Ctx, backward: bool = False) -> KernelCall:
    s = c.s
    bh = float(s.B * s.H)
    if s.T == 1:
        return KernelCall("attention", f"{c.act}:one_query", (bh, float(s.L), float(s.D)))
    if c.plan.static_cache and not backward:  # sdpa with the cache's explicit (T, T) mask
        return KernelCall("attention", f"{c.act}:masked_fwd", (bh, float(s.T), float(s.D)))
    return KernelCall("attention", f"{c.act}:causal_{'bwd' if backward else 'fwd'}",
                      (bh, float(s.T), float(s.D)))


def _layer_fwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s, w = c.s, c.workload
    N, C = s.N, s.C
    a, st = dtype_bytes(c.act), dtype_bytes(c.store)
    qkv = _linear_fwd(c, N, C, 3 * C, input_cast=True)
    if w.uses_kv_cache:  # the new K and V written into the cache
        qkv += [_vec("copy", c.act, 2 * N * C * a, count=2)]
    ops: dict[str, list[KernelCall]] = {names.LN_1: _ln_fwd(c, N), names.ATTN_QKV: qkv}
    if c.plan.attention == "sdpa":
        ops[names.ATTN_SDPA] = [_attention(c)]
    else:
        sf = s.scores_full
        ops[names.ATTN_SCORES] = [_mm(c.mm, s.B * s.H * s.T, s.L, s.D), _vec("add", c.act, 2 * sf * a)]
        if s.causal:
            ops[names.ATTN_SCORES].append(_vec("add", c.act, 2 * sf * a))  # masked_fill
        soft = [_cast(sf, c.act, c.store)] if c.mixed else []
        ops[names.ATTN_SOFTMAX] = soft + [_vec("softmax_fwd", c.store, 2 * sf * st)]
        ctx = [_cast(sf, c.store, c.act)] if c.mixed else []
        ops[names.ATTN_CONTEXT] = ctx + [_mm(c.mm, s.B * s.H * s.T, s.D, s.L)]
    # sdpa's kernels write their output as (B, T, H, D): merging the heads is a view; math's is a copy
    merge = [_vec("copy", c.act, 2 * N * C * a)] if c.plan.attention == "math" else []
    ops[names.ATTN_PROJ] = merge + _linear_fwd(c, N, C, C, False)
    # x (fp32) + h (bf16) under autocast: one kernel that casts h as it reads it (`add_mixed`)
    ops[names.RESIDUAL] = ([_vec("add_mixed", c.act, N * C * (2 * st + a), count=2)] if c.mixed
                           else [_vec("add", c.store, 3 * N * C * st, count=2)])
    ops[names.LN_2] = _ln_fwd(c, N)
    ops[names.MLP_FC] = _linear_fwd(c, N, C, 4 * C, input_cast=True)
    ops[names.MLP_ACT] = [_vec("gelu_fwd", c.act, 2 * 4 * N * C * a)]
    ops[names.MLP_PROJ] = _linear_fwd(c, N, 4 * C, C, input_cast=False)
    return ops


def _layer_bwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s = c.s
    N, C = s.N, s.C
    a, st = dtype_bytes(c.act), dtype_bytes(c.store)
    # an add passes its gradient through; under autocast it is cast to the bf16 branch's dtype
    residual = [_cast(N * C, c.store, c.act), _cast(N * C, c.store, c.act)] if c.mixed else []
    ops: dict[str, list[KernelCall]] = {
        names.RESIDUAL: residual,
        names.MLP_PROJ: _linear_bwd(c, N, 4 * C, C),
        names.MLP_ACT: [_vec("gelu_bwd", c.act, 3 * 4 * N * C * a)],
        names.MLP_FC: _linear_bwd(c, N, C, 4 * C),
        names.LN_2: _ln_bwd(c, N),
        names.ATTN_PROJ: _linear_bwd(c, N, C, C),
    }
    if c.plan.attention == "math":  # the head-merge copy's gradient
        ops[names.ATTN_PROJ].append(_vec("copy", c.act, 2 * N * C * a))
    if c.plan.attention == "sdpa":
        ops[names.ATTN_SDPA] = [_attention(c, backward=True)]
    else:
        sf = s.scores_full
        bht = s.B * s.H * s.T
        ops[names.ATTN_CONTEXT] = [_mm(c.mm, bht, s.L, s.D), _mm(c.mm, s.B * s.H * s.L, s.D, s.T)]
        ops[names.ATTN_SOFTMAX] = [_vec("softmax_bwd", c.store, 3 * sf * st)]
        ops[names.ATTN_SCORES] = [_vec("add", c.act, 3 * sf * a), _mm(c.mm, bht, s.D, s.L),
                                  _mm(c.mm, s.B * s.H * s.L, s.D, s.T)]
    ops[names.ATTN_QKV] = [_vec("copy", c.act, 2 * 3 * N * C * a)] + _linear_bwd(c, N, C, 3 * C)
    ops[names.LN_1] = _ln_bwd(c, N)
    return ops


def _model_fwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s, w = c.s, c.workload
    N, C, V = s.N, s.C, s.V
    st = dtype_bytes(c.store)
    rows = s.B if w.last_logits_only else N
    embed = [_vec("embedding_fwd", c.store, 2 * N * C * st), _vec("embedding_fwd", c.store, 2 * s.T * C * st),
             _vec("add", c.store, 3 * N * C * st)]
    head = _linear_fwd(c, rows, C, V, input_cast=True, bias=False)
    if w.last_logits_only:
        head = [_vec("copy", c.store, 2 * rows * C * st)] + head
    ops = {names.EMBED: embed, names.LN_F: _ln_fwd(c, N), names.LM_HEAD: head}
    if w.has_loss and c.plan.fused_loss:  # one read of the logits, a reduction per row
        ops[names.LOSS] = [_vec("sum_rows", c.act, N * V * dtype_bytes(c.act))]
    elif w.has_loss:  # autocast runs the loss in fp32 (its log-softmax writes fp32 log-probabilities)
        ops[names.LOSS] = [_vec("cross_entropy_fwd", c.store, N * V * st)]
    return ops


def _model_bwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s = c.s
    N, C, V = s.N, s.C, s.V
    st = dtype_bytes(c.store)
    if c.plan.fused_loss:  # reads the logits, writes their gradient: a one-pass map with an exp
        loss = [_vec("gelu_fwd", c.act, 2 * N * V * dtype_bytes(c.act))]
    else:  # reads the fp32 log-probabilities, writes the gradient of the logits in their dtype
        loss = [_vec("cross_entropy_bwd", c.store, N * V * (st + dtype_bytes(c.act)))]
    # each table's gradient is zeroed, then the rows' gradients are added in (a fill is charged
    # as an add of its bytes)
    block = c.workload.context
    embed = [_vec("add", c.store, V * C * st), _vec("embedding_bwd", c.store, N * C * st),
             _vec("add", c.store, block * C * st), _vec("embedding_bwd", c.store, s.T * C * st)]
    return {names.LOSS: loss, names.LM_HEAD: _linear_bwd(c, N, C, V, bias=False),
            names.LN_F: _ln_bwd(c, N), names.EMBED: embed}


def _optimizer(c: _Ctx, config: GPTConfig) -> list[KernelCall]:
    P = count_parameters(config)
    calls = [KernelCall("optimizer", "adamw_fused" if c.plan.fused_optimizer else "adamw_foreach",
                        (float(count_parameter_tensors(config)), float(P)))]
    # gradient clipping: the norm reads every gradient; the rescale reads and writes them, unless
    # the fused kernel rescales as it reads (gptperf.steps.train: no GradScaler, fused AdamW)
    calls.append(_vec("sum_rows", c.store, P * dtype_bytes(c.store)))
    if not c.plan.update_in_kernel(c.workload.dtype):
        calls.append(_vec("add", c.store, 2 * P * dtype_bytes(c.store)))
    return calls


def _compiled_inference(c: _Ctx, comp: str, calls: list[KernelCall]) -> list[KernelCall]:
    """A compiled inference step's kernels for one op: the matmuls (a one-row gemv under the
    plan's one-row kernel), the attention, and one kernel per fused group (residual adds and
    biases fuse into their neighbours; the cast-free step has no casts)."""
    s, w = c.s, c.workload
    out: list[KernelCall] = []
    for call in calls:
        if call.family == "matmul":
            m, n, k = call.point
            if c.plan.one_row_kernel and m == 1:
                out.append(KernelCall("gemv", c.mm, (n * k * dtype_bytes(c.act),)))
            else:
                out.append(call)
                if _split_k_reductions(comp, int(m), s):
                    out.append(_vec("add", c.act, 3 * m * n * dtype_bytes(c.act)))  # split-K sum
        elif call.family == "attention":
            out.append(call)
            if c.plan.static_cache:  # the mask built from the device-side position
                out.append(_vec("add", "fp32", 3 * s.T * s.L))
        elif comp == names.RESIDUAL or call.key.startswith(("copy:", "cast_")):
            if call.key.startswith("copy:") and comp == names.ATTN_QKV:
                out.append(call)  # the cache writes stay kernels of their own
        else:
            out.append(call)
    if comp == names.LM_HEAD and w.kind == DECODE and c.plan.static_cache:
        out.append(_vec("add", c.act, 3 * s.B * s.V * dtype_bytes(c.act)))  # argmax over logits
        out.append(_vec("add", "fp32", 4096, count=GREEDY_PICK_KERNELS - 1))
    return out


def _fused_decode(c: _Ctx, comp: str, calls: list[KernelCall]) -> list[KernelCall]:
    """The fused decode step's kernels for one op (gptperf.steps.decode_kernels): each weight
    matmul one gemv-shaped weight stream (LayerNorm, bias, GELU, residual and, for the LM head,
    the argmax and the token bookkeeping inside it), the attention one kernel that also writes the
    cache, the embedding one gather-add; nothing else runs."""
    out: list[KernelCall] = []
    # the layer's weight kernels as timed inside a captured step (`_fallback`: their chained
    # curves, where each kernel waits for the one before: the projections add the residual where
    # qkv and fc fold a LayerNorm in); the LM head's kernel ends in the argmax
    key = (GEMV_ARGMAX_CHAIN + c.mm if comp == names.LM_HEAD else f"{FUSED_STEP}{comp}:{c.mm}")
    for call in calls:
        if call.family == "matmul":
            _, n, k = call.point
            out.append(KernelCall("gemv", key, (n * k * dtype_bytes(c.act),)))
        elif call.family == "attention":  # the kernel's own grid (`_fallback`: sdpa's)
            out.append(KernelCall("attention", call.key.replace(":one_query", f":{FUSED_ATTENTION_PASS}"),
                                  call.point))
    if comp == names.EMBED:
        out.append(_vec("add", c.act, 3 * c.s.C * dtype_bytes(c.act)))
    return out


def _ops(config: GPTConfig, workload: Workload, plan: ExecutionPlan) -> list[tuple[str, str, int | None, list[KernelCall]]]:
    """(component, phase, layer, calls) in execution order."""
    s = shape(config, workload)
    inference = workload.kind in INFERENCE_KINDS
    mixed = workload.mixed_precision
    act = {"tf32": "fp32"}.get(workload.dtype, workload.dtype)
    store = "fp32" if mixed else act
    c = _Ctx(s, workload, plan, workload.dtype, act, store)
    compiled_inf = plan.compiled and inference
    fused = plan.fuses_decode(workload.kind, s.B)

    def emit(ops: dict[str, list[KernelCall]], phase: str, layer: int | None) -> list:
        out = []
        for comp, calls in ops.items():
            if fused:
                calls = _fused_decode(c, comp, calls)
            elif compiled_inf:
                calls = _compiled_inference(c, comp, calls)
            out.append((comp, phase, layer, calls))
        return out

    fwd, bwd = names.FORWARD, names.BACKWARD
    model_f = _model_fwd(c)
    seq = emit({names.EMBED: model_f.pop(names.EMBED)}, fwd, None)
    layer_f = _layer_fwd(c)
    for i in range(s.n_layer):
        seq += emit(layer_f, fwd, i)
    seq += emit(model_f, fwd, None)
    if workload.has_backward:
        model_b = _model_bwd(c)
        embed_b = model_b.pop(names.EMBED)
        seq += emit(model_b, bwd, None)
        layer_b = _layer_bwd(c)
        for i in reversed(range(s.n_layer)):
            seq += emit(layer_b, bwd, i)
        seq += emit({names.EMBED: embed_b}, bwd, None)
        seq += emit({names.OPTIMIZER: _optimizer(c, config)}, names.OPTIMIZER_PHASE, None)
    return seq


def kernel_calls(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None = None) -> list[KernelCall]:
    """Every kernel the step runs as the calibrated model sees it (one entry per distinct call;
    a compiled training step's fused kernels are not listed: they come from the recording)."""
    plan = ExecutionPlan.eager(config.attention) if plan is None else plan
    return [call for *_, calls in _ops(config, workload, plan) for call in calls]


# ------------------------------------------------------------------------------------------------
# 2. Look up


def _fallback(key: str) -> list[str]:
    """Curves to try for `key`: itself, then fp16 as bf16; a fused step kernel as its chain, a
    chained gemv as the plain one, the residual and argmax chains as the LayerNorm chain and the
    fused decode attention as sdpa's one-query kernel (calibrations from before each was
    measured)."""
    keys = [key]
    if key.endswith(":fp16"):
        keys.append(key[: -len("fp16")] + "bf16")
    if key.endswith(f":{FUSED_ATTENTION_PASS}"):
        return keys + _fallback(key.removesuffix(FUSED_ATTENTION_PASS) + "one_query")
    if key.startswith(FUSED_STEP):
        component, dtype = key[len(FUSED_STEP):].rsplit(":", 1)
        residual = component in (names.ATTN_PROJ, names.MLP_PROJ)
        return keys + _fallback((GEMV_RESIDUAL_CHAIN if residual else GEMV_CHAIN) + dtype)
    newer = next((p for p in (GEMV_RESIDUAL_CHAIN, GEMV_ARGMAX_CHAIN) if key.startswith(p)), None)
    if newer is not None:
        keys += _fallback(GEMV_CHAIN + key[len(newer):])
    elif key.startswith(GEMV_CHAIN):
        keys += _fallback(key[len(GEMV_CHAIN):])
    return keys


def call_time(call: KernelCall, cal: Calibration) -> float:
    """Seconds of `call.count` kernels of `call` on the calibration's curves (UserError when the
    calibration has no curve for it)."""
    if call.family == "attention" and call.key.endswith(":causal_bwd"):
        fwd = KernelCall("attention", call.key.replace("causal_bwd", "causal_fwd"), call.point)
        both = KernelCall("attention", call.key.replace("causal_bwd", "causal_fwd_bwd"), call.point)
        f, fb = call_time(fwd, cal), call_time(both, cal)
        return call.count * max(fb - f, 0.5 * f)
    if call.key.endswith(":masked_fwd"):  # the causal kernel's time × the measured ratio
        causal = KernelCall("attention", call.key.replace("masked_fwd", "causal_fwd"), call.point)
        ratio = cal.masked_ratio(call.key.removesuffix(":masked_fwd"), *call.point)
        return call.count * ratio * call_time(causal, cal)
    if call.key.startswith("add_mixed:") and not any(k in cal.vector for k in _fallback(call.key)):
        # a calibration from before the mixed add was measured: charged as a cast, then an add
        act = call.key.split(":", 1)[1]
        n = call.point[0] / (8 + dtype_bytes(act))
        return call.count * (call_time(_cast(n, act, "fp32"), cal)
                             + call_time(_vec("add", "fp32", 3 * n * 4), cal))
    table = {"matmul": cal.matmul, "attention": cal.attention, "vector": cal.vector,
             "optimizer": cal.optimizer, "gemv": cal.gemv}.get(call.family)
    if table is None:
        raise UserError(f"unknown kernel family {call.family!r}")
    biased = call.family == "matmul" and call.key.endswith(BIASED)
    curve = call.key.removesuffix(BIASED) if biased else call.key
    for key in _fallback(curve):
        if key in table:
            if call.family == "matmul":
                ratio = cal.bias_ratio(key) if biased else 1.0
                return call.count * cal.matmul_seconds(key, *call.point) * ratio
            return call.count * table[key].at(*call.point)
    known = ", ".join(sorted(table)) or "none"
    raise UserError(f"the calibration of {cal.device_name!r} has no {call.family} curve "
                    f"{curve!r} (it has: {known}); run `gptperf calibrate` for this dtype")


# ------------------------------------------------------------------------------------------------
# 3. Compose


def queue_time(kernels: Iterable[tuple[float, float]]) -> float:
    """End of the last kernel when the host spends h_i issuing kernel i and the device d_i running
    it: kernel i starts at max(issued_i, end_{i-1}). `kernels`: (h_i, d_i) in issue order."""
    issued = end = 0.0
    for h, d in kernels:
        issued += h
        end = max(issued, end) + d
    return max(end, issued)


def _issue_order(seq: list, host: list[float], device: list[float], cal: Calibration,
                 plan: ExecutionPlan) -> list[tuple[float, float]]:
    """(host, device) per op as `queue_time` takes them: an op's host time before its kernels,
    except the fused AdamW phase's, whose calibrated share (`Calibration.optimizer_overlap`) is
    issued after its kernels have started."""
    share = float(cal.optimizer_overlap.get("share", 0.0)) if plan.fused_optimizer else 0.0
    order: list[tuple[float, float]] = []
    for (_, phase, _, _), h, d in zip(seq, host, device, strict=True):
        if phase == names.OPTIMIZER_PHASE and share > 0:
            order += [(h * (1 - share), d), (h * share, 0.0)]
        else:
            order.append((h, d))
    return order


def _host_parts(kind: str, phase: str, compiled: bool) -> list[str]:
    """The calibration's host parts for this phase, best first: a compiled step's own, then the
    nearest one measured (a compiled forward without grad, the compiled train forward, then the
    eager step's)."""
    if kind == "train":
        part = {names.FORWARD: "fwd", names.BACKWARD: "bwd", names.OPTIMIZER_PHASE: "opt"}[phase]
    elif kind == "forward":
        part = "nograd"
    else:
        part = {DECODE: "decode", "prefill": "prefill"}.get(kind, "infer")
    # fallbacks for calibrations without the part: a forward's nearest, prefill's decode_nocache
    eager = [f"eager:{part}"] + {"nograd": ["eager:fwd"], "prefill": ["eager:infer"]}.get(part, [])
    if not compiled or part == "opt":  # the optimizer runs eagerly beside a compiled model
        return eager
    # a compiled inference step without its own measurement takes the compiled train forward's
    # (one compiled graph a step) before the eager step's (every op dispatched from Python: on the
    # H200 a compiled gpt2 forward charged at the eager cost was predicted 1.41× too long)
    if part == "prefill":  # a compiled prefill is costed as the compiled recompute step
        return ["compiled:infer", "compiled:nograd", "compiled:fwd"] + eager
    nearest = {"infer": ["compiled:nograd", "compiled:fwd"], "nograd": ["compiled:fwd"]}.get(part, [])
    return [f"compiled:{part}"] + nearest + eager


def _host_seconds(cal: Calibration, parts: list[str], dtype: str, n_layer: int) -> float:
    keys = [k for part in parts for k in _fallback(f"{part}:{dtype}") + [f"{part}:fp32"]]
    for k in keys:
        if k in cal.host:
            h = cal.host[k]
            return max(h["fixed_s"] + h["per_layer_s"] * n_layer, 0.0)
    raise UserError(f"the calibration of {cal.device_name!r} has no host cost {parts[0]}:{dtype} "
                    f"(it has: {', '.join(sorted(cal.host)) or 'none'}); run `gptperf calibrate`")


def _host_model_device_s(cal: Calibration, workload: Workload, plan: ExecutionPlan,
                         n_layer: int) -> dict[str, float]:
    """Kernel seconds per phase of the tiny model the host cost was measured on (that time is
    in its measured host time)."""
    tiny = host_model_config(n_layer, plan.attention)
    w = Workload(workload.kind, HOST_MODEL["batch"], HOST_MODEL["seq"], workload.dtype)
    total: dict[str, float] = {}
    for _, phase, _, calls in _ops(tiny, w, plan):
        total[phase] = total.get(phase, 0.0) + sum(call_time(k, cal) for k in calls)
    return total


def _recorded_fused(cal: Calibration, config: GPTConfig, workload: Workload, plan: ExecutionPlan,
                    seq: list) -> tuple[dict[int, float], list[str]]:
    """A compiled training step: each op's non-matmul, non-attention kernels replaced by what
    inductor ran for it in the recorded calibration step, scaled by the bytes the op's vector
    work moves here over there. Returns {index in seq: (seconds of the fused kernels, kernels
    the recording ran for the op, its matmuls and attention included)} and notes."""
    key = f"{workload.kind}:{workload.dtype}"
    rec = cal.compiled.get(key) or cal.compiled.get(f"train:{workload.dtype}") or next(
        iter(cal.compiled.values()), None)
    if rec is None:
        return {}, ["compiled step: no recorded compiled step in the calibration; its vector "
                    "work is predicted as eager kernels"]
    notes = [] if f"{workload.kind}:{workload.dtype}" in cal.compiled else [
        f"compiled {key} step: fused kernels scaled from the recorded "
        f"{rec['workload']['kind']}:{rec['workload']['dtype']} step"]
    rconfig, rwork = GPTConfig.from_dict(rec["config"]), Workload.from_dict(rec["workload"])
    rplan = ExecutionPlan.from_dict(rec["plan"])

    def vector_bytes(calls: list[KernelCall]) -> float:
        return sum(k.point[0] * k.count for k in calls if k.family == "vector")

    ref: dict[tuple[str, str], float] = {}
    for comp, phase, layer, calls in _ops(rconfig, rwork, rplan):
        if layer in (None, 0):
            ref[(comp, phase)] = vector_bytes(calls)
    floor = min((c.at(c.x[0]) for c in cal.vector.values()), default=0.0)
    fused: dict[int, tuple[float, int]] = {}
    for i, (comp, phase, _, calls) in enumerate(seq):
        if phase == names.OPTIMIZER_PHASE:
            continue  # the optimizer runs eagerly beside the compiled model
        if comp == names.LOSS and (plan.fused_loss or rplan.fused_loss):
            continue  # gptperf's own loss kernels (or the recording ran them): on their curves
        entry = rec["ops"].get(f"{comp}:{phase}")
        if entry is None:
            fused[i] = (0.0, 0)  # inductor ran nothing of its own for it (fused into a neighbour)
            continue
        other, kernels = float(entry["seconds"].get("other", 0.0)), float(entry["kernels"])
        base = ref.get((comp, phase), 0.0)
        scale = vector_bytes(calls) / base if base else 1.0
        fixed = min(other, kernels * floor)
        fused[i] = (fixed + (other - fixed) * scale, round(kernels))
    return fused, notes


def expected(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None,
             calibration: Calibration, host_speed: float | None = None) -> Expected:
    """The calibrated expected time of one step of `workload` on `config` under `plan` on the
    calibrated device (see the module docstring); `host_speed` scales the host costs."""
    if not isinstance(calibration, Calibration):
        raise UserError(f"calibration must be a Calibration, got {type(calibration).__name__}")
    if host_speed is not None and not (math.isfinite(host_speed) and host_speed > 0):
        raise UserError(f"host_speed must be a positive finite ratio, got {host_speed!r}")
    plan = ExecutionPlan.eager(config.attention) if plan is None else plan
    if plan.attention != config.attention:
        raise UserError(f"plan attention {plan.attention!r} differs from the model's {config.attention!r}")
    plan.check(workload.kind)
    cal = calibration
    cpu = cal.device_type == "cpu"
    seq = _ops(config, workload, plan)
    notes: list[str] = []
    compiled_train = plan.compiled and workload.kind not in INFERENCE_KINDS
    fused: dict[int, tuple[float, int]] = {}
    if compiled_train:
        fused, notes = _recorded_fused(cal, config, workload, plan, seq)
    # every kernel of a step that is not a CUDA graph is launched from a stream
    gap = 0.0 if plan.cuda_graph or cpu else cal.launch_gap_s

    device: list[float] = []
    kernels: list[int] = []
    for i, (_, _, _, calls) in enumerate(seq):
        if i in fused:
            kept = [k for k in calls if k.family != "vector"]
            seconds, recorded = fused[i]
            # the recording's count includes the op's matmuls and attention (none if it ran none)
            kernels.append(max(recorded, sum(k.count for k in kept)))
            device.append(sum(call_time(k, cal) for k in kept) + seconds + gap * kernels[-1])
        else:
            kernels.append(sum(k.count for k in calls))
            device.append(sum(call_time(k, cal) for k in calls) + gap * kernels[-1])

    # host time per phase, spread over the phase's kernels in proportion to their count
    host = [0.0] * len(seq)
    if plan.cuda_graph:
        composition = "CUDA graph: kernels back to back"
        step = sum(device)
    else:
        phases = dict.fromkeys(ph for _, ph, _, _ in seq)
        in_host = _host_model_device_s(cal, workload, plan, config.n_layer) if cpu else {}
        for phase in phases:
            idx = [i for i, (_, ph, _, _) in enumerate(seq) if ph == phase]
            parts = _host_parts(workload.kind, phase, plan.compiled)
            h = _host_seconds(cal, parts, workload.dtype, config.n_layer)
            if cpu:  # the tiny model's own kernel time is inside its measured host time
                h = max(h - in_host.get(phase, 0.0), 0.0)
            h *= host_speed or 1.0
            n = sum(kernels[i] for i in idx) or 1
            for i in idx:
                host[i] = h * kernels[i] / n
        if cpu:
            composition = "CPU: host time + kernel time"
            step = sum(host) + sum(device)
        else:
            composition = "eager queue: host issues, device runs" if not plan.compiled else \
                "compiled queue: host issues, device runs"
            step = queue_time(_issue_order(seq, host, device, cal, plan))
        if host_speed is not None:
            notes.append(f"host costs ×{host_speed:.2f}: the calibration's host-model step took "
                         f"{host_speed:.2f}× its time at calibration when probed as this step ran")

    ops = []
    for i, (comp, phase, layer, _) in enumerate(seq):
        name = comp if layer is None else names.layer_name(layer, comp)
        ops.append(ExpectedOp(name, comp, layer, phase, device[i], host[i], kernels[i]))
    return Expected(config, workload, plan, step, ops, cal.label(), composition, notes)
