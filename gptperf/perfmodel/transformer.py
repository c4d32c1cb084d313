"""The performance model of a GPT workload: every operation of every layer, forward and backward,
with FLOPs, bytes, arithmetic intensity and a roofline time — pure arithmetic over a GPTConfig.

The operations mirror what `gptperf.model` runs inside each `record_function` range. Sizes:
B batch, T tokens processed per sequence this step, L positions attended (context), C n_embd,
H heads, D = C/H, V vocab, N = B·T rows. Byte sizes: `a` for the compute dtype, `w` for what the
parameters, the residual stream, LayerNorm and softmax outputs and log-probabilities are stored
in (fp32 under bf16/fp16 autocast, i.e. train and forward; the dtype itself otherwise, inference
included), `wl` for the blocks' Linear weights (`w`, but `a` in a train step under the plan's
master weights, whose fp32 copies only the optimizer reads and writes). docs/perfmodel.md has
every formula.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gptperf import names
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.perfmodel import ops as K
from gptperf.perfmodel.conventions import conventions_table, flops_per_token
from gptperf.perfmodel.devices import device_type_of
from gptperf.perfmodel.hardware import Hardware
from gptperf.perfmodel.memory import MemoryBreakdown, memory_breakdown
from gptperf.perfmodel.ops import OpCost, Traffic
from gptperf.perfmodel.workload import (
    DECODE,
    Shape,
    Workload,
    count_parameters,
    master_copied_parameters,
    matmul_parameters,
    shape,
)
from gptperf.plan import INFERENCE_KINDS, ExecutionPlan

SCHEMA = "gptperf.perfmodel/1"

# Kernels per op in a compiled inference step (torch.compile, inductor; the fast decode path), as
# profiled on an H100 (benchmarks/gpu_decode_kernels.py): one per matmul, LayerNorm and GELU; the
# qkv matmul is followed by the two KV-cache writes (the bias and head split fused into them), the
# attention by the kernel that builds its mask; the other biases and the residual adds fuse into
# what follows. `split_k_reductions` and `GREEDY_PICK_KERNELS` add the rest.
COMPILED_KERNELS: dict[str, int] = {
    names.EMBED: 1, names.LN_1: 1, names.ATTN_QKV: 3, names.ATTN_SDPA: 2, names.ATTN_SCORES: 1,
    names.ATTN_SOFTMAX: 1, names.ATTN_CONTEXT: 1, names.ATTN_PROJ: 1, names.LN_2: 1,
    names.MLP_FC: 1, names.MLP_ACT: 1, names.MLP_PROJ: 1, names.RESIDUAL: 0, names.LN_F: 1,
    names.LM_HEAD: 1,
}
# Kernels per op of the fused batch-1 decode step (gptperf.steps.decode_kernels): LayerNorm,
# bias, GELU and residual inside the gemvs, the cache write inside the attention kernel, the argmax
# and the token bookkeeping inside the LM head's.
FUSED_DECODE_KERNELS: dict[str, int] = {
    **dict.fromkeys(COMPILED_KERNELS, 0), names.EMBED: 1, names.ATTN_QKV: 1, names.ATTN_SDPA: 1,
    names.ATTN_PROJ: 1, names.MLP_FC: 1, names.MLP_PROJ: 1, names.LM_HEAD: 1,
}
# cuBLAS splits the reduction of a many-row matmul with long rows and few outputs (K >= N and
# K >= 2048: the output projections from C = 4096 up, mlp.proj from C = 512) and adds a kernel
# that sums the parts. One-row matmuls run gptperf.steps.gemv's kernel, which does not split.
SPLIT_K_MIN = 2048
# Greedy decode picks the next token in the step: the argmax over the logits, the token copied
# to the next step's input, written to the token buffer, the position advanced.
GREEDY_PICK_KERNELS = 4
# Matmuls of activations by a weight: the ops whose memory time is a weight stream.
WEIGHT_MATMULS: frozenset[str] = frozenset(
    {names.ATTN_QKV, names.ATTN_PROJ, names.MLP_FC, names.MLP_PROJ, names.LM_HEAD})
NORMS: frozenset[str] = frozenset({names.LN_1, names.LN_2, names.LN_F})


# An op before it meets a machine: (component, count, flops, matmul_flops, full_flops, read, written, kind)
# where kind is "matmul" (tensor cores, the workload dtype) or "vector" (fp32 / fp64 units).
_Raw = tuple[str, int, float, float, float, float, float, str]


def _linear(comp: str, M: int, Kin: int, Nout: int, in_b: int, s: Shape, bias: bool = True,
            backward: bool = False) -> _Raw:
    """Y (M×Nout) = X (M×Kin) · W (Kin×Nout) [+ b]. Backward: dX and dW (2× the matmul), db."""
    mm = 2 * M * Kin * Nout
    wb = s.w if comp == names.LM_HEAD else s.wl  # the head is the (fp32 under autocast) embedding
    x, wgt, b, y = M * Kin * in_b, Kin * Nout * wb, (Nout * wb if bias else 0), M * Nout * s.a
    extra = M * Nout * K.BIAS if bias else 0
    if not backward:
        return (comp, 1, mm + extra, mm, mm + extra, x + wgt + b, y, "matmul")
    return (comp, 2 + int(bias), 2 * mm + extra, 2 * mm, 2 * mm + extra, y + x + wgt, x + wgt + b, "matmul")


def _layernorm(comp: str, rows: int, s: Shape, backward: bool = False) -> _Raw:
    n = rows * s.C
    if not backward:
        f = K.LAYERNORM_FWD * n
        return (comp, 1, f, 0, f, n * s.w + 2 * s.C * s.w, n * s.w, "vector")
    f = K.LAYERNORM_BWD * n
    return (comp, 1, f, 0, f, 2 * n * s.w + s.C * s.w, n * s.w + 2 * s.C * s.w, "vector")


def _layer_forward(s: Shape, workload: Workload, attention: str) -> list[_Raw]:
    N, C, a, w = s.N, s.C, s.a, s.w
    kv = s.B * s.L * C  # elements of K (or V) attended to
    qkv = _linear(names.ATTN_QKV, N, C, 3 * C, w, s)
    if workload.uses_kv_cache:  # the model copies the new K and V into the preallocated cache
        c, n, f, mm, ff, r, wr, kind = qkv
        qkv = (c, n + 2, f, mm, ff, r + 2 * N * C * a, wr + 2 * N * C * a, kind)
    ops: list[_Raw] = [_layernorm(names.LN_1, N, s), qkv]
    sc, sf = s.scores_causal, s.scores_full
    if attention == "sdpa":
        mm, mmf = 4 * sc * s.D, 4 * sf * s.D
        lse = s.B * s.H * s.T * 4 if workload.has_backward else 0  # fp32 logsumexp kept for backward
        ops.append((names.ATTN_SDPA, 1, mm + K.SDPA_FWD_PER_SCORE * sc, mm,
                    mmf + K.SDPA_FWD_PER_SCORE * sf, (N * C + 2 * kv) * a, N * C * a + lse, "matmul"))
    else:
        mm, mmf = 2 * sc * s.D, 2 * sf * s.D
        ops.append((names.ATTN_SCORES, 2 + int(s.causal), mm + K.SCALE * sf, mm, mmf + K.SCALE * sf,
                    (N * C + kv) * a, sf * a, "matmul"))
        ops.append((names.ATTN_SOFTMAX, 1, K.SOFTMAX_FWD * sf, 0, K.SOFTMAX_FWD * sf, sf * a, sf * w, "vector"))
        ops.append((names.ATTN_CONTEXT, 1, mm, mm, mmf, sf * w + kv * a, N * C * a, "matmul"))
    c, n, f, mm_, ff, r, wr, kind = _linear(names.ATTN_PROJ, N, C, C, a, s)
    ops.append((c, n + int(attention == "math"), f, mm_, ff, r, wr, kind))  # math: + the head-merge copy
    ops.append(_layernorm(names.LN_2, N, s))
    ops.append(_linear(names.MLP_FC, N, C, 4 * C, w, s))
    f = K.GELU_FWD * 4 * N * C
    ops.append((names.MLP_ACT, 1, f, 0, f, 4 * N * C * a, 4 * N * C * a, "vector"))
    ops.append(_linear(names.MLP_PROJ, N, 4 * C, C, a, s))
    f = 2 * K.RESIDUAL_FWD * N * C
    ops.append((names.RESIDUAL, 2, f, 0, f, 2 * N * C * (w + a), 2 * N * C * w, "vector"))
    return ops


def _layer_backward(s: Shape, attention: str) -> list[_Raw]:
    """Backward of one block, in the order autograd runs it."""
    N, C, a, w = s.N, s.C, s.a, s.w
    kv = s.B * s.L * C
    f = 2 * K.RESIDUAL_BWD * N * C
    ops: list[_Raw] = [(names.RESIDUAL, 2, f, 0, f, 4 * N * C * w, 2 * N * C * w, "vector")]
    ops.append(_linear(names.MLP_PROJ, N, 4 * C, C, a, s, backward=True))
    f = K.GELU_BWD * 4 * N * C
    ops.append((names.MLP_ACT, 1, f, 0, f, 8 * N * C * a, 4 * N * C * a, "vector"))
    ops.append(_linear(names.MLP_FC, N, C, 4 * C, w, s, backward=True))
    ops.append(_layernorm(names.LN_2, N, s, backward=True))
    c, n, f, mm_, ff, r, wr, kind = _linear(names.ATTN_PROJ, N, C, C, a, s, backward=True)
    ops.append((c, n + int(attention == "math"), f, mm_, ff, r, wr, kind))
    sc, sf = s.scores_causal, s.scores_full
    if attention == "sdpa":
        # recompute S, then dV, dP, dQ, dK: five matmuls of the forward's size
        mm, mmf = 10 * sc * s.D, 10 * sf * s.D
        d_term = K.SDPA_BWD_PER_OUTPUT * N * C
        lse = s.B * s.H * s.T * 4
        ops.append((names.ATTN_SDPA, 1, mm + K.SDPA_BWD_PER_SCORE * sc + d_term, mm,
                    mmf + K.SDPA_BWD_PER_SCORE * sf + d_term,
                    (3 * N * C + 2 * kv) * a + lse, (N * C + 2 * kv) * a, "matmul"))
    else:
        mm, mmf = 4 * sc * s.D, 4 * sf * s.D
        ops.append((names.ATTN_CONTEXT, 2, mm, mm, mmf, N * C * a + sf * w + kv * a, sf * w + kv * a, "matmul"))
        f = K.SOFTMAX_BWD * sf
        ops.append((names.ATTN_SOFTMAX, 1, f, 0, f, 2 * sf * w, sf * a, "vector"))
        ops.append((names.ATTN_SCORES, 3 + int(s.causal), mm + K.SCALE * sf, mm, mmf + K.SCALE * sf,
                    sf * a + (N * C + kv) * a, (N * C + kv) * a, "matmul"))
    ops.append(_linear(names.ATTN_QKV, N, C, 3 * C, w, s, backward=True))
    ops.append(_layernorm(names.LN_1, N, s, backward=True))
    return ops


@dataclass(frozen=True)
class OpGroup(Traffic):
    """Operations summed over layers (per component) or over components (per layer)."""

    key: str
    phase: str | None
    ops: int
    count: int
    flops: float
    matmul_flops: float
    full_flops: float
    bytes_read: float
    bytes_written: float
    time_s: float
    ridge_intensity: float

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "phase": self.phase, "ops": self.ops, "count": self.count,
                "flops": self.flops, "matmul_flops": self.matmul_flops, "full_flops": self.full_flops,
                "bytes_read": self.bytes_read, "bytes_written": self.bytes_written, "bytes": self.bytes,
                "arithmetic_intensity": self.arithmetic_intensity, "bound": self.bound, "time_s": self.time_s}


def _group(key: str, phase: str | None, ops: Iterable[OpCost]) -> OpGroup:
    ops = list(ops)
    # the ridge of the group's dominant dtype (by FLOPs) decides its bound
    main = max(ops, key=lambda o: o.flops)
    return OpGroup(
        key=key, phase=phase, ops=len(ops), count=sum(o.count for o in ops),
        flops=sum(o.flops for o in ops), matmul_flops=sum(o.matmul_flops for o in ops),
        full_flops=sum(o.full_flops for o in ops), bytes_read=sum(o.bytes_read for o in ops),
        bytes_written=sum(o.bytes_written for o in ops), time_s=sum(o.time_s for o in ops),
        ridge_intensity=main.ridge_intensity,
    )


class Prediction:
    """The predicted cost of `workload` on `hardware` under `plan`: `ops` (one OpCost per name
    and phase), totals, conventions, and `memory` (a MemoryBreakdown). `compiled`: kernel counts
    are those of a compiled step (see `predict`); `notes` say what the model leaves out."""

    def __init__(self, config: GPTConfig, workload: Workload, hardware: Hardware, ops: list[OpCost],
                 plan: ExecutionPlan | None = None, notes: list[str] | None = None) -> None:
        self.config = config
        self.workload = workload
        self.hardware = hardware
        self.ops = ops
        self.plan = plan if plan is not None else ExecutionPlan.eager(config.attention)
        self.notes = list(notes or [])
        self._memory: MemoryBreakdown | None = None

    @property
    def compiled(self) -> bool:
        """True when the kernel counts are those of a compiled step (inference under a compiled
        or CUDA-graph plan); a compiled training step is counted kernel by kernel as eager."""
        return self.plan.compiled and self.workload.kind in INFERENCE_KINDS

    # totals
    @cached_property  # ops never change after predict(); to_dict() asks many times
    def flops(self) -> float:
        return sum(o.flops for o in self.ops)

    @cached_property  # ops never change after predict(); to_dict() asks many times
    def full_flops(self) -> float:
        return sum(o.full_flops for o in self.ops)

    @cached_property  # ops never change after predict(); to_dict() asks many times
    def bytes(self) -> float:
        return sum(o.bytes for o in self.ops)

    @cached_property  # ops never change after predict(); to_dict() asks many times
    def time_s(self) -> float:
        return sum(o.time_s for o in self.ops)

    @property
    def tokens(self) -> int:
        return self.workload.tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.time_s

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes

    @property
    def model_flops(self) -> float:
        """FLOPs of the model itself: forward and backward, without the optimizer step."""
        return sum(o.flops for o in self.ops if o.phase != names.OPTIMIZER_PHASE)

    def model_flops_per_token(self, convention: str = "gptperf") -> float:
        """Model FLOPs per token under `convention` (see gptperf.perfmodel.conventions)."""
        return flops_per_token(self, convention)

    @property
    def peak_flops(self) -> float:
        return self.hardware.peak(self.workload.dtype)

    def mfu(self, convention: str = "gptperf") -> float:
        """Model FLOP/s of the predicted step as a fraction of the dtype's peak."""
        return self.model_flops_per_token(convention) * self.tokens_per_s / self.peak_flops

    @property
    def memory(self) -> MemoryBreakdown:
        if self._memory is None:
            self._memory = memory_breakdown(self.config, self.workload, self.plan,
                                            device_type_of(self.hardware))
        return self._memory

    def op(self, name: str, phase: str = names.FORWARD) -> OpCost:
        """The op called `name` in `phase` (KeyError if absent)."""
        for o in self.ops:
            if o.name == name and o.phase == phase:
                return o
        raise KeyError((name, phase))

    def by_component(self) -> dict[tuple[str, str], OpGroup]:
        """Ops summed over layers, keyed by (component, phase), in execution order."""
        groups: dict[tuple[str, str], list[OpCost]] = {}
        for o in self.ops:
            groups.setdefault((o.component, o.phase), []).append(o)
        return {k: _group(k[0], k[1], v) for k, v in groups.items()}

    def by_layer(self) -> dict[int | None, OpGroup]:
        """Ops summed per block (key: layer index; None: embedding, head, loss, optimizer)."""
        groups: dict[int | None, list[OpCost]] = {}
        for o in self.ops:
            groups.setdefault(o.layer, []).append(o)
        return {k: _group("model" if k is None else f"h.{k}", None, v) for k, v in groups.items()}

    def by_phase(self) -> dict[str, OpGroup]:
        groups: dict[str, list[OpCost]] = {}
        for o in self.ops:
            groups.setdefault(o.phase, []).append(o)
        return {k: _group(k, k, v) for k, v in groups.items()}

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON schema (docs/perfmodel.md)."""
        mem = self.memory
        return {
            "schema": SCHEMA,
            "config": self.config.to_dict(),
            "workload": self.workload.to_dict(),
            "hardware": self.hardware.to_dict(),
            "hardware_label": self.hardware.label,
            "plan": self.plan.to_dict(),
            "compiled": self.compiled,
            "kernel_model": self.hardware.kernel_model is not None,
            "notes": list(self.notes),
            "parameters": {
                "total": count_parameters(self.config),
                "without_embeddings": count_parameters(self.config, include_embeddings=False),
                "matmul": matmul_parameters(self.config),
            },
            "totals": {
                "flops": self.flops,
                "full_flops": self.full_flops,
                "model_flops": self.model_flops,
                "bytes": self.bytes,
                "arithmetic_intensity": self.arithmetic_intensity,
                "time_s": self.time_s,
                "tokens": self.tokens,
                "tokens_per_s": self.tokens_per_s,
                "peak_flops": self.peak_flops,
                "mfu": self.mfu(),
                "kernel_launches": sum(o.count for o in self.ops),
            },
            "flops_per_token": conventions_table(self),
            "phases": {k: g.to_dict() for k, g in self.by_phase().items()},
            "ops": [o.to_dict() for o in self.ops],
            "components": [g.to_dict() for g in self.by_component().values()],
            "layers": [{**g.to_dict(), "layer": k} for k, g in self.by_layer().items()],
            "memory": mem.to_dict(self.hardware),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prediction:
        """The inverse of `to_dict`: the ops, config, workload, hardware and plan it was made
        from (every total is recomputed from them); a UserError for another schema."""
        from gptperf.schema import check_schema  # deferred: keeps --help fast

        check_schema(d, SCHEMA)
        hw = d["hardware"]
        if hw.get("memory_bytes") is None:  # unbounded capacity is written as null
            hw = {**hw, "memory_bytes": math.inf}
        hardware = Hardware.from_dict(hw)
        return cls(GPTConfig.from_dict(d["config"]), Workload.from_dict(d["workload"]), hardware,
                   [OpCost.from_dict(o, hardware.launch_latency_s) for o in d["ops"]],
                   ExecutionPlan.from_dict(d["plan"]), list(d["notes"]))


def split_k_reductions(comp: str, rows: int, s: Shape) -> int:
    """1 when cuBLAS splits the reduction of this output projection (many rows, long rows)."""
    k_in = {names.ATTN_PROJ: s.C, names.MLP_PROJ: 4 * s.C}.get(comp)
    return int(k_in is not None and rows > 1 and k_in >= max(s.C, SPLIT_K_MIN))


def _vector_dtype(dtype: str) -> str:
    return "fp64" if dtype == "fp64" else "fp32"


def predict(config: GPTConfig, workload: Workload, hardware: Hardware,
            plan: ExecutionPlan | None = None) -> Prediction:
    """Every operation of `workload` on `config`, placed on `hardware`'s roofline, for a step run
    under `plan` (None: the eager plan with `config.attention`).

    With a measured kernel model on `hardware` (`Hardware.kernel_model`), the forward weight
    matmuls stream their bytes at the measured β of their row class instead of the copy bandwidth
    (and a one-query `attn.sdpa`, in decode, at the measured attention β when there is one).
    An inference workload (prefill, decode, decode_nocache) under a compiled or CUDA-graph plan
    counts the kernels of a compiled step (`COMPILED_KERNELS`; a static-cache decode step also
    picks the greedy token). Under a CUDA-graph plan with a kernel model each kernel is charged
    the measured α inside a CUDA graph instead of the launch latency: a weight matmul its row
    class's α, a LayerNorm the norm α, a one-query attention the attention α (each the
    elementwise α when not measured), every other kernel the elementwise α. A compiled train or
    forward step is predicted op by op as eager, with a note: inductor's fusion of training
    kernels is not modelled yet. docs/perfmodel.md has the formulas.
    """
    plan = _checked_plan(config, workload, plan)
    notes: list[str] = []
    if plan.compiled and workload.kind not in INFERENCE_KINDS:
        notes.append(f"compiled {workload.kind} step: predicted op by op as eager kernels; "
                     "inductor's fusion of training kernels is not modelled yet")
    s = shape(config, workload, plan.master_weights)
    head_rows = s.B if workload.last_logits_only else s.N  # rows through the LM head
    ops = _OpPlacer(workload, plan, hardware, s, head_rows)
    fwd, bwd = names.FORWARD, names.BACKWARD

    ops.place([_embedding(s)], fwd)
    layer_fwd = _layer_forward(s, workload, config.attention)
    for i in range(s.n_layer):
        ops.place(layer_fwd, fwd, i)
    ops.place(_head_forward(s, workload, plan, head_rows), fwd)
    if workload.has_backward:
        ops.place(_head_backward(s, plan, head_rows), bwd)
        layer_bwd = _layer_backward(s, config.attention)
        for i in reversed(range(s.n_layer)):
            ops.place(layer_bwd, bwd, i)
        ops.place([_embedding(s, backward=True)], bwd)
        ops.place([_optimizer(config, s, plan)], names.OPTIMIZER_PHASE)
    return Prediction(config, workload, hardware, ops.out, plan, notes)


def _checked_plan(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None) -> ExecutionPlan:
    """`plan` (None: eager with the model's attention), checked against the arguments' types, the
    model's attention and the workload (a UserError otherwise)."""
    if not isinstance(config, GPTConfig):
        raise UserError(f"config must be a GPTConfig, got {type(config).__name__}")
    if not isinstance(workload, Workload):
        raise UserError(f"workload must be a Workload, got {type(workload).__name__}")
    plan = ExecutionPlan.eager(config.attention) if plan is None else plan
    if not isinstance(plan, ExecutionPlan):
        raise UserError(f"plan must be an ExecutionPlan, got {type(plan).__name__}")
    if plan.attention != config.attention:
        raise UserError(f"plan attention {plan.attention!r} differs from the model's "
                        f"{config.attention!r}; use one attention for both")
    plan.check(workload.kind, workload.dtype)
    return plan


def _embedding(s: Shape, backward: bool = False) -> _Raw:
    """The token and position embedding: gather and add (backward: scatter-add to both tables)."""
    N, C, T, w = s.N, s.C, s.T, s.w
    if not backward:
        f = K.EMBED_FWD * N * C
        return (names.EMBED, 3, f, 0, f, N * K.INDEX_BYTES + N * C * w + T * C * w, N * C * w, "vector")
    f = K.EMBED_BWD * N * C
    return (names.EMBED, 2, f, 0, f, N * C * w + N * K.INDEX_BYTES + N * C * w, N * C * w + T * C * w,
            "vector")


def _head_forward(s: Shape, workload: Workload, plan: ExecutionPlan, head_rows: int) -> list[_Raw]:
    """The final LayerNorm, the LM head and (with a loss) the cross-entropy, forward."""
    N, C, V, a, w = s.N, s.C, s.V, s.a, s.w
    head = [_layernorm(names.LN_F, N, s), _linear(names.LM_HEAD, head_rows, C, V, w, s, bias=False)]
    # the fused loss (plan.fused_loss) reads the logits once and keeps 8 bytes a row (loss, lse);
    # its backward reads them again and writes their gradient, one kernel each way
    fused_loss = plan.fused_loss  # a train step's alone (plan.check)
    if workload.has_loss:
        f = K.CROSS_ENTROPY_FWD * N * V + K.CROSS_ENTROPY_ROW * N
        head.append((names.LOSS, 1, f, 0, f, N * V * a + N * K.INDEX_BYTES, 8 * N, "vector") if fused_loss
                    else (names.LOSS, 2, f, 0, f, N * V * a + N * K.INDEX_BYTES, N * V * w, "vector"))
    return head


def _head_backward(s: Shape, plan: ExecutionPlan, head_rows: int) -> list[_Raw]:
    """The cross-entropy, the LM head and the final LayerNorm, backward."""
    N, C, V, a, w = s.N, s.C, s.V, s.a, s.w
    fused_loss = plan.fused_loss
    f = K.CROSS_ENTROPY_BWD * N * V
    loss_read = (N * V * a + 8 * N) if fused_loss else N * V * w
    return [(names.LOSS, 1 if fused_loss else 2, f, 0, f, loss_read + N * K.INDEX_BYTES, N * V * a, "vector"),
            _linear(names.LM_HEAD, head_rows, C, V, w, s, bias=False, backward=True),
            _layernorm(names.LN_F, N, s, backward=True)]


def _optimizer(config: GPTConfig, s: Shape, plan: ExecutionPlan) -> _Raw:
    """The AdamW step over every parameter, with the master copies' casts or fused update."""
    a, w = s.a, s.w
    P = count_parameters(config)
    f = K.ADAMW * P
    read, written = 4 * P * w, 3 * P * w  # weights, gradients, m, v in; weights, m, v out
    if plan.fused_master_update:  # the copies stepped from bf16 gradients, bf16 weights written
        copied = master_copied_parameters(config)
        read, written = read - copied * (w - a), written + copied * a
    elif plan.master_weights:  # and the copied weights' bf16 gradients cast in, weights cast out
        copied = master_copied_parameters(config)
        read, written = read + copied * (a + 4), written + copied * (4 + a)
    return (names.OPTIMIZER, 1, f, 0, f, read, written, "vector")


class _OpPlacer:
    """Places raw ops on `hardware` for a step run under `plan`, collecting their OpCosts in
    `out`: each op's kernels counted as the plan runs them, the bandwidth it streams at and the
    per-kernel overhead inside a CUDA graph."""

    def __init__(self, workload: Workload, plan: ExecutionPlan, hardware: Hardware, s: Shape,
                 head_rows: int) -> None:
        self.workload, self.plan, self.s, self.head_rows = workload, plan, s, head_rows
        self.compiled = plan.compiled and workload.kind in INFERENCE_KINDS
        self.in_graph = self.compiled and plan.cuda_graph
        self.fused = self.compiled and plan.fuses_decode(workload.kind, workload.batch)
        self.dtypes = {"matmul": workload.dtype, "vector": _vector_dtype(workload.dtype)}
        self.peaks = {k: hardware.peak(d) for k, d in self.dtypes.items()}
        self.bw, self.lat = hardware.bandwidth, hardware.launch_latency_s
        self.km = hardware.kernel_model
        self.out: list[OpCost] = []

    def place(self, raws: Iterable[_Raw], phase: str, layer: int | None = None) -> None:
        """Add the OpCost of each raw op of `phase` (in `layer`, None: outside the blocks)."""
        for comp, count, flops, mm, full, read, written, kind in raws:
            name = comp if layer is None else names.layer_name(layer, comp)
            weight_mm = comp in WEIGHT_MATMULS and phase == names.FORWARD
            rows = self.head_rows if comp == names.LM_HEAD else self.s.N
            decode_attn = comp == names.ATTN_SDPA and phase == names.FORWARD and self.s.T == 1
            op_bw = self._bandwidth(weight_mm, decode_attn, rows)
            count, read = self._kernels(comp, count, read, rows)
            overhead = self._graph_overhead(comp, count, weight_mm, decode_attn, rows)
            self.out.append(OpCost(name, comp, layer, phase, count, float(flops), float(mm), float(full),
                                   float(read), float(written), self.dtypes[kind], self.peaks[kind],
                                   op_bw, self.lat, overhead))

    def _bandwidth(self, weight_mm: bool, decode_attn: bool, rows: int) -> float:
        """The kernel model's measured β for a forward weight matmul or a one-query attention,
        else the machine's bandwidth."""
        km = self.km
        if km is not None and weight_mm:
            return km.streaming_bandwidth(rows)
        if km is not None and decode_attn and km.attention_beta is not None:
            return km.attention_beta
        return self.bw

    def _kernels(self, comp: str, count: int, read: float, rows: int) -> tuple[int, float]:
        """The op's kernel count under the plan (eager: `count`), and its bytes read (the greedy
        pick of a static-cache decode step reads the logits back)."""
        if self.fused:
            count = FUSED_DECODE_KERNELS[comp]
        elif self.compiled:
            count = COMPILED_KERNELS[comp] + split_k_reductions(comp, rows, self.s)
            if comp == names.LM_HEAD and self.workload.kind == DECODE and self.plan.static_cache:
                count += GREEDY_PICK_KERNELS  # the fast decode step picks the next token
                read += rows * self.s.V * self.s.a  # it reads the logits back
        return count, read

    def _graph_overhead(self, comp: str, count: int, weight_mm: bool, decode_attn: bool,
                        rows: int) -> float | None:
        """The measured α of the op's kernels inside a CUDA graph; None (the launch latency)
        outside one or without a kernel model."""
        km = self.km
        if not (self.compiled and km is not None and self.in_graph):
            return None
        ew = km.elementwise_alpha_s
        if weight_mm:
            return km.matmul_alpha_s(rows) + (count - 1) * ew
        if comp in NORMS and km.norm_alpha_s is not None:
            return count * km.norm_alpha_s
        if decode_attn and km.attention_alpha_s is not None:
            return km.attention_alpha_s + (count - 1) * ew
        return count * ew
