"""The performance model of a GPT workload: every operation of every layer, forward and backward,
with FLOPs, bytes, arithmetic intensity and a roofline time — pure arithmetic over a GPTConfig.

The operations mirror what `gptperf.model` runs inside each `record_function` range. Sizes:
B batch, T tokens processed per sequence this step, L positions attended (context), C n_embd,
H heads, D = C/H, V vocab, N = B·T rows. Byte sizes: `a` for the compute dtype, `w` for what the
parameters, the residual stream, LayerNorm and softmax outputs and log-probabilities are stored
in (fp32 under bf16/fp16 autocast, i.e. train and forward; the dtype itself otherwise, inference
included). docs/perfmodel.md has every formula.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gptperf import names
from gptperf.dtypes import MIXED_PRECISION, check_dtype, dtype_bytes
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.perfmodel import ops as K
from gptperf.perfmodel.hardware import Hardware
from gptperf.perfmodel.ops import OpCost, Traffic

TRAIN, FORWARD, PREFILL, DECODE, DECODE_NOCACHE = "train", "forward", "prefill", "decode", "decode_nocache"
WORKLOADS: tuple[str, ...] = (TRAIN, FORWARD, PREFILL, DECODE, DECODE_NOCACHE)
WORKLOAD_HELP: dict[str, str] = {
    TRAIN: "forward + backward + AdamW step on B sequences of T=seq tokens (with the loss)",
    FORWARD: "forward pass with the loss on B sequences of T=seq tokens (no backward)",
    PREFILL: "a prompt of P=seq tokens fills the KV cache; logits of the last position only",
    DECODE: "one new token per sequence with the KV cache, attending to L=seq positions (L−1 cached + itself)",
    DECODE_NOCACHE: "one new token per sequence recomputing the whole context of L=seq tokens",
}


# Kernels per op in a compiled inference step (torch.compile, inductor; the fast decode path), as
# profiled on an H100 (benchmarks/gpu_decode_kernels.py): one per matmul, LayerNorm and GELU; the
# qkv matmul is followed by the two KV-cache writes (the bias and head split fused into them), the
# attention by the kernel that builds its mask; the other biases and the residual adds fuse into
# what follows. `_split_k_reductions` and `GREEDY_PICK_KERNELS` add the rest.
COMPILED_KERNELS: dict[str, int] = {
    names.EMBED: 1, names.LN_1: 1, names.ATTN_QKV: 3, names.ATTN_SDPA: 2, names.ATTN_SCORES: 1,
    names.ATTN_SOFTMAX: 1, names.ATTN_CONTEXT: 1, names.ATTN_PROJ: 1, names.LN_2: 1,
    names.MLP_FC: 1, names.MLP_ACT: 1, names.MLP_PROJ: 1, names.RESIDUAL: 0, names.LN_F: 1,
    names.LM_HEAD: 1,
}
# cuBLAS splits the reduction of a many-row matmul with long rows and few outputs (K >= N and
# K >= 2048: the output projections from C = 4096 up, mlp.proj from C = 512) and adds a kernel
# that sums the parts. One-row matmuls run gptperf.inference.gemv's kernel, which does not split.
SPLIT_K_MIN = 2048
# Greedy decode picks the next token in the step: the argmax over the logits, the token copied
# to the next step's input, written to the token buffer, the position advanced.
GREEDY_PICK_KERNELS = 4
# Matmuls of activations by a weight: the ops whose memory time is a weight stream.
WEIGHT_MATMULS: frozenset[str] = frozenset(
    {names.ATTN_QKV, names.ATTN_PROJ, names.MLP_FC, names.MLP_PROJ, names.LM_HEAD})
NORMS: frozenset[str] = frozenset({names.LN_1, names.LN_2, names.LN_F})


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    if value <= 0:
        raise UserError(f"{what} must be a positive integer, got {value}")
    return value


@dataclass(frozen=True)
class Workload:
    """What runs: `kind` in WORKLOADS, `batch` sequences, `seq` tokens (the context length L for
    decode and decode_nocache, the prompt length P for prefill), numeric format `dtype`."""

    kind: str
    batch: int
    seq: int
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.kind not in WORKLOADS:
            raise UserError(f"unknown workload {self.kind!r}; valid: {', '.join(WORKLOADS)}")
        _positive_int(self.batch, "batch")
        _positive_int(self.seq, "seq")
        check_dtype(self.dtype)

    @property
    def new_tokens(self) -> int:
        """T: tokens per sequence the model runs on this step."""
        return 1 if self.kind == DECODE else self.seq

    @property
    def context(self) -> int:
        """L: positions each new token attends to (its own included)."""
        return self.seq

    @property
    def tokens(self) -> int:
        """Tokens processed (train/forward/prefill) or generated (decode*) per step."""
        return self.batch if self.kind in (DECODE, DECODE_NOCACHE) else self.batch * self.seq

    @property
    def has_backward(self) -> bool:
        return self.kind == TRAIN

    @property
    def has_loss(self) -> bool:
        return self.kind in (TRAIN, FORWARD)

    @property
    def uses_kv_cache(self) -> bool:
        return self.kind in (PREFILL, DECODE)

    @property
    def last_logits_only(self) -> bool:
        return self.kind in (PREFILL, DECODE, DECODE_NOCACHE)

    @property
    def mixed_precision(self) -> bool:
        """bf16/fp16 training and its forward run under autocast with fp32 master weights;
        inference (prefill, decode*) keeps the weights themselves in bf16/fp16."""
        return self.dtype in MIXED_PRECISION and self.kind in (TRAIN, FORWARD)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "batch": self.batch, "seq": self.seq, "dtype": self.dtype,
                "new_tokens": self.new_tokens, "context": self.context, "tokens": self.tokens}


def count_parameters(config: GPTConfig, include_embeddings: bool = True) -> int:
    """Parameters counted once (the LM head is tied to the token embedding), as GPT.num_parameters."""
    C, V = config.n_embd, config.vocab_size
    per_layer = 12 * C * C + 13 * C  # ln_1 2C, c_attn 3C²+3C, c_proj C²+C, ln_2 2C, c_fc 4C²+4C, c_proj 4C²+C
    n = config.n_layer * per_layer + 2 * C  # + ln_f
    if include_embeddings:
        n += V * C + config.block_size * C
    return n


def matmul_parameters(config: GPTConfig) -> int:
    """Weights that multiply activations: the four Linear weights per layer and the tied head."""
    C = config.n_embd
    return config.n_layer * 12 * C * C + config.vocab_size * C


@dataclass(frozen=True)
class _Shape:
    B: int
    T: int
    L: int
    C: int
    H: int
    D: int
    V: int
    n_layer: int
    a: int  # bytes per element of the compute dtype
    w: int  # bytes per element of parameters / residual stream / fp32-kept outputs
    causal: bool

    @property
    def N(self) -> int:
        return self.B * self.T

    @property
    def scores_full(self) -> int:
        """Elements of the materialised score matrix: B·H·T·L."""
        return self.B * self.H * self.T * self.L

    @property
    def scores_causal(self) -> int:
        """Score elements on or below the diagonal: B·H·T(T+1)/2 when causal (L = T), else B·H·T·L."""
        return self.B * self.H * self.T * (self.T + 1) // 2 if self.causal else self.scores_full


def _shape(config: GPTConfig, workload: Workload) -> _Shape:
    config.check_sequence(workload.seq)
    a = dtype_bytes(workload.dtype)
    w = 4 if workload.mixed_precision else a
    T = workload.new_tokens
    return _Shape(B=workload.batch, T=T, L=workload.context, C=config.n_embd, H=config.n_head,
                  D=config.head_dim, V=config.vocab_size, n_layer=config.n_layer, a=a, w=w, causal=T > 1)


# An op before it meets a machine: (component, count, flops, matmul_flops, full_flops, read, written, kind)
# where kind is "matmul" (tensor cores, the workload dtype) or "vector" (fp32 / fp64 units).
_Raw = tuple[str, int, float, float, float, float, float, str]


def _linear(comp: str, M: int, Kin: int, Nout: int, in_b: int, s: _Shape, bias: bool = True,
            backward: bool = False) -> _Raw:
    """Y (M×Nout) = X (M×Kin) · W (Kin×Nout) [+ b]. Backward: dX and dW (2× the matmul), db."""
    mm = 2 * M * Kin * Nout
    x, wgt, b, y = M * Kin * in_b, Kin * Nout * s.w, (Nout * s.w if bias else 0), M * Nout * s.a
    extra = M * Nout * K.BIAS if bias else 0
    if not backward:
        return (comp, 1, mm + extra, mm, mm + extra, x + wgt + b, y, "matmul")
    return (comp, 2 + int(bias), 2 * mm + extra, 2 * mm, 2 * mm + extra, y + x + wgt, x + wgt + b, "matmul")


def _layernorm(comp: str, rows: int, s: _Shape, backward: bool = False) -> _Raw:
    n = rows * s.C
    if not backward:
        f = K.LAYERNORM_FWD * n
        return (comp, 1, f, 0, f, n * s.w + 2 * s.C * s.w, n * s.w, "vector")
    f = K.LAYERNORM_BWD * n
    return (comp, 1, f, 0, f, 2 * n * s.w + s.C * s.w, n * s.w + 2 * s.C * s.w, "vector")


def _layer_forward(s: _Shape, workload: Workload, attention: str) -> list[_Raw]:
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


def _layer_backward(s: _Shape, attention: str) -> list[_Raw]:
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
    """The predicted cost of `workload` on `hardware`: `ops` (one OpCost per name and phase),
    totals, conventions, and `memory` (a MemoryBreakdown). `compiled`: kernel counts are those
    of a compiled step (see `predict`)."""

    def __init__(self, config: GPTConfig, workload: Workload, hardware: Hardware, ops: list[OpCost],
                 compiled: bool = False) -> None:
        self.config = config
        self.workload = workload
        self.hardware = hardware
        self.ops = ops
        self.compiled = compiled
        self._memory = None

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
        from gptperf.perfmodel.conventions import flops_per_token

        return flops_per_token(self, convention)

    @property
    def peak_flops(self) -> float:
        return self.hardware.peak(self.workload.dtype)

    def mfu(self, convention: str = "gptperf") -> float:
        """Model FLOP/s of the predicted step as a fraction of the dtype's peak."""
        return self.model_flops_per_token(convention) * self.tokens_per_s / self.peak_flops

    @property
    def memory(self) -> Any:
        if self._memory is None:
            from gptperf.perfmodel.memory import memory_breakdown

            self._memory = memory_breakdown(self.config, self.workload)
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
        from gptperf.perfmodel.conventions import conventions_table

        mem = self.memory
        return {
            "schema": "gptperf.perfmodel/1",
            "config": self.config.to_dict(),
            "workload": self.workload.to_dict(),
            "hardware": self.hardware.to_dict(),
            "hardware_label": self.hardware.label,
            "compiled": self.compiled,
            "kernel_model": self.hardware.kernel_model is not None,
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


def _split_k_reductions(comp: str, rows: int, s: _Shape) -> int:
    """1 when cuBLAS splits the reduction of this output projection (many rows, long rows)."""
    k_in = {names.ATTN_PROJ: s.C, names.MLP_PROJ: 4 * s.C}.get(comp)
    return int(k_in is not None and rows > 1 and k_in >= max(s.C, SPLIT_K_MIN))


def _vector_dtype(dtype: str) -> str:
    return "fp64" if dtype == "fp64" else "fp32"


def predict(config: GPTConfig, workload: Workload, hardware: Hardware, *,
            compiled: bool = False) -> Prediction:
    """Every operation of `workload` on `config`, placed on `hardware`'s roofline.

    With a measured kernel model on `hardware` (`Hardware.kernel_model`), the forward weight
    matmuls stream their bytes at the measured β of their row class instead of the copy bandwidth
    (and a one-query `attn.sdpa`, in decode, at the measured attention β when there is one).
    `compiled=True` (inference workloads only) counts the kernels of a compiled step
    (`COMPILED_KERNELS`) and, with a kernel model, charges each the measured α inside a CUDA graph
    instead of the launch latency: a weight matmul its row class's α, a LayerNorm the norm α, a
    one-query attention the attention α (each the elementwise α when not measured), every other
    kernel the elementwise α. docs/perfmodel.md has the formulas.
    """
    if not isinstance(config, GPTConfig):
        raise UserError(f"config must be a GPTConfig, got {type(config).__name__}")
    if not isinstance(workload, Workload):
        raise UserError(f"workload must be a Workload, got {type(workload).__name__}")
    if compiled and workload.kind not in (PREFILL, DECODE, DECODE_NOCACHE):
        raise UserError(f"compiled kernel counts are modelled for inference workloads ({PREFILL}, "
                        f"{DECODE}, {DECODE_NOCACHE}); got {workload.kind!r}")
    s = _shape(config, workload)
    attention = config.attention
    dtypes = {"matmul": workload.dtype, "vector": _vector_dtype(workload.dtype)}
    peaks = {k: hardware.peak(d) for k, d in dtypes.items()}
    bw, lat = hardware.bandwidth, hardware.launch_latency_s
    km = hardware.kernel_model
    out: list[OpCost] = []
    N, C, V, T, a, w = s.N, s.C, s.V, s.T, s.a, s.w
    M = s.B if workload.last_logits_only else N  # rows through the LM head

    def emit(raws: Iterable[_Raw], phase: str, layer: int | None = None) -> None:
        for comp, count, flops, mm, full, read, written, kind in raws:
            name = comp if layer is None else names.layer_name(layer, comp)
            op_bw, overhead = bw, None
            weight_mm = comp in WEIGHT_MATMULS and phase == names.FORWARD
            rows = M if comp == names.LM_HEAD else N
            decode_attn = comp == names.ATTN_SDPA and phase == names.FORWARD and T == 1
            if km is not None and weight_mm:
                op_bw = km.streaming_bandwidth(rows)
            elif km is not None and decode_attn and km.attention_beta is not None:
                op_bw = km.attention_beta
            if compiled:
                count = COMPILED_KERNELS[comp] + _split_k_reductions(comp, rows, s)
                if comp == names.LM_HEAD and workload.kind == DECODE:  # + the greedy pick
                    count += GREEDY_PICK_KERNELS
                    read += rows * V * a  # it reads the logits back
                if km is not None:
                    ew = km.elementwise_alpha_s
                    if weight_mm:
                        overhead = km.matmul_alpha_s(rows) + (count - 1) * ew
                    elif comp in NORMS and km.norm_alpha_s is not None:
                        overhead = count * km.norm_alpha_s
                    elif decode_attn and km.attention_alpha_s is not None:
                        overhead = km.attention_alpha_s + (count - 1) * ew
                    else:
                        overhead = count * ew
            out.append(OpCost(name, comp, layer, phase, count, float(flops), float(mm), float(full),
                              float(read), float(written), dtypes[kind], peaks[kind], op_bw, lat,
                              overhead))

    f = K.EMBED_FWD * N * C
    fwd = names.FORWARD
    emit([(names.EMBED, 3, f, 0, f, N * K.INDEX_BYTES + N * C * w + T * C * w, N * C * w, "vector")], fwd)
    layer_fwd = _layer_forward(s, workload, attention)
    for i in range(s.n_layer):
        emit(layer_fwd, fwd, i)
    head = [_layernorm(names.LN_F, N, s), _linear(names.LM_HEAD, M, C, V, w, s, bias=False)]
    if workload.has_loss:
        f = K.CROSS_ENTROPY_FWD * N * V + K.CROSS_ENTROPY_ROW * N
        head.append((names.LOSS, 2, f, 0, f, N * V * a + N * K.INDEX_BYTES, N * V * w, "vector"))
    emit(head, fwd)

    if workload.has_backward:
        bwd = names.BACKWARD
        f = K.CROSS_ENTROPY_BWD * N * V
        emit([(names.LOSS, 2, f, 0, f, N * V * w + N * K.INDEX_BYTES, N * V * a, "vector"),
              _linear(names.LM_HEAD, M, C, V, w, s, bias=False, backward=True),
              _layernorm(names.LN_F, N, s, backward=True)], bwd)
        layer_bwd = _layer_backward(s, attention)
        for i in reversed(range(s.n_layer)):
            emit(layer_bwd, bwd, i)
        f = K.EMBED_BWD * N * C
        emit([(names.EMBED, 2, f, 0, f, N * C * w + N * K.INDEX_BYTES + N * C * w, N * C * w + T * C * w,
               "vector")], bwd)
        P = count_parameters(config)
        f = K.ADAMW * P
        emit([(names.OPTIMIZER, 1, f, 0, f, 4 * P * w, 3 * P * w, "vector")], names.OPTIMIZER_PHASE)
    return Prediction(config, workload, hardware, out, compiled=compiled)
