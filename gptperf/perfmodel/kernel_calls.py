"""What kernels a step runs, as the calibrated model charges them: every operation of the step
(the names of `gptperf.names`) decomposed into the kernels its plan runs — each a `KernelCall`: a
matmul (M, N, K), an attention (batch·heads, length, head size), a vector kernel of so many bytes
(LayerNorm, GELU, add, cast, copy, softmax, cross-entropy, embedding, a bias gradient), the
optimizer over its T tensors and P parameters, a one-row gemv, a fused decode kernel.

The first of `gptperf.perfmodel.expected`'s three steps (decompose, look up, compose); pure Python.
A compiled training step's non-matmul kernels are not listed here: `expected` takes them from
the calibration's recording of a compiled step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gptperf import names
from gptperf.dtypes import dtype_bytes
from gptperf.model.config import GPTConfig, pads_lm_head
from gptperf.perfmodel.calibration import (
    FUSED_ATTENTION_PASS,
    GEMV_ARGMAX_CHAIN,
    UNALIGNED_ORIENTATIONS,
    attention_key,
    fused_step_key,
    gemv_key,
    split_attention_key,
    vector_key,
)
from gptperf.perfmodel.transformer import GREEDY_PICK_KERNELS, split_k_reductions
from gptperf.perfmodel.workload import (
    DECODE,
    Shape,
    Workload,
    count_parameter_tensors,
    count_parameters,
    master_copied_parameters,
    master_copied_tensors,
    parameter_sizes,
    shape,
)
from gptperf.plan import INFERENCE_KINDS, ExecutionPlan

# A matmul key's suffix for a linear layer with its bias: an eager layer runs cuBLASLt's bias
# epilogue, charged at the grid's time × the calibration's measured `bias_ratio`.
BIASED = "+bias"


@dataclass(frozen=True)
class KernelCall:
    """`count` identical kernels of one kind: family matmul | attention | vector | optimizer |
    gemv | fused; `key` names the curve ("bf16", "bf16:causal_fwd", "add:fp32", ...);
    `point` the sizes it is looked up at ((M, N, K), (BH, T, D), (bytes,), (tensors, parameters));
    `tensors`, of an optimizer step: its tensors as (parameters, how many), for a calibration
    that times the step tensor by tensor (a CPU's loop). `floor`: a call each kernel takes at
    least as long as (a batched matmul's operands streamed: `batched_mm`). `unaligned`: a linear
    layer's matmul whose rows are not 16-byte aligned (`unaligned_layer`), its orientation (one of
    `calibration.UNALIGNED_ORIENTATIONS`); "" for the rest."""

    family: str
    key: str
    point: tuple[float, ...]
    count: int = 1
    tensors: tuple[tuple[int, int], ...] = ()
    floor: KernelCall | None = None
    unaligned: str = ""


# FLOPs of one attention kernel per B·H·D at (T, L): causal halves the T·L scores and their
# weighted sum (4·T·L·D in all), its backward about 2.5× its forward, the masked prefill computes
# every score, one query attends L positions
_ATTENTION_FLOPS = {"causal_fwd": lambda t: 2 * t * t, "causal_bwd": lambda t: 5 * t * t,
                    "causal_fwd_bwd": lambda t: 7 * t * t, "masked_fwd": lambda t: 4 * t * t,
                    "one_query": lambda t: 4 * t}


def compute_flops(call: KernelCall) -> float:
    """The FLOPs of `call.count` kernels of `call` that run on the tensor cores (matmuls and
    attention); 0 for memory-bound kernels (vector, optimizer, the one-row gemv)."""
    if call.family == "matmul":
        m, n, k = call.point
        return 2.0 * m * n * k * call.count
    if call.family == "attention":
        bh, t, d = call.point
        per = _ATTENTION_FLOPS.get(split_attention_key(call.key)[1])
        return float(per(t)) * bh * d * call.count if per else 0.0
    return 0.0


def vector_call(op: str, dtype: str, nbytes: float, count: int = 1) -> KernelCall:
    """`count` vector kernels `op` in `dtype` moving `nbytes` each (the vector curves' x)."""
    return KernelCall("vector", vector_key(op, dtype), (float(nbytes),), count)


def cast_call(n: float, src: str, dst: str, weight: bool = False) -> KernelCall:
    """A cast of `n` elements from `src` to `dst`: both sides' bytes. `weight`: autocast's cast of
    a weight, whose input comes from memory where an activation's is fresh in the cache (its own
    curve, `calibration_plan.VECTOR_COLD_OPS`)."""
    op = f"cast_weight_to_{dst}" if weight else f"cast_to_{dst}"
    return vector_call(op, src, n * (dtype_bytes(src) + dtype_bytes(dst)))


def unaligned_layer(k_in: int, n_out: int, element_bytes: int) -> bool:
    """Whether a linear layer's operands have rows cuBLAS cannot load 16 bytes at a time: every
    leading dimension of its three matmuls is its input or its output width, so one of them not a
    multiple of 16 bytes (gpt2's 50257-token vocabulary in bf16) sends all three to slower kernels
    (BENCHMARKS.md, "Session 55")."""
    return (k_in * element_bytes) % 16 != 0 or (n_out * element_bytes) % 16 != 0


def _mm(dtype: str, m: int, n: int, k: int, bias: bool = False, unaligned: str = "") -> KernelCall:
    return KernelCall("matmul", dtype + (BIASED if bias else ""), (float(m), float(n), float(k)),
                      unaligned=unaligned)


def batched_mm(mm: str, act: str, batch: int, m: int, n: int, k: int) -> KernelCall:
    """`batch` independent products (m×k)·(k×n) in one kernel (math attention's per-head matmuls):
    the grid's time of one (batch·m, n, k) matmul, whose k×n operand is shared, or, where longer,
    the time of streaming every product's operands and outputs once (`sum_rows`: a read of that
    many bytes), which sets it when m is small - one query's scores read each head's whole K."""
    nbytes = batch * (m * k + k * n + m * n) * dtype_bytes(act)
    return replace(_mm(mm, batch * m, n, k), floor=vector_call("sum_rows", act, nbytes))


@dataclass(frozen=True)
class _Ctx:
    s: Shape
    workload: Workload
    plan: ExecutionPlan
    mm: str  # matmul dtype key
    act: str  # activation dtype name (bf16 under autocast)
    store: str  # residual stream / LayerNorm / parameter dtype name (fp32 under autocast)
    block: int  # the position table's rows (the config's block size)
    head_width: int  # the LM head's output width as it runs: the vocabulary, or padded (`pads_lm_head`)

    @property
    def padded_head(self) -> bool:
        return self.head_width != self.s.V

    @property
    def mixed(self) -> bool:
        return self.workload.mixed_precision

    def casts_weight(self, head: bool) -> bool:
        """Whether autocast casts this matmul's weight each step (under master weights the blocks'
        Linear weights are bf16 already; the head is the fp32 embedding)."""
        return self.mixed and (head or not self.plan.master_weights)

    @property
    def train(self) -> bool:
        return self.workload.has_backward


def _orientations(c: _Ctx, k_in: int, n_out: int) -> dict[str, str]:
    """{orientation: itself} for a layer whose rows are unaligned in an eager step, else {o: ""}:
    a compiled step's matmuls are inductor's, which pads such operands to aligned copies."""
    slow = not c.plan.compiled and unaligned_layer(k_in, n_out, dtype_bytes(c.mm))
    return {o: o if slow else "" for o in UNALIGNED_ORIENTATIONS}


def _linear_fwd(c: _Ctx, rows: int, k_in: int, n_out: int, input_cast: bool,
                bias: bool = True, head: bool = False) -> list[KernelCall]:
    """y = x·Wᵀ + b: under autocast the input (when it arrives in fp32), the weight and the bias
    are cast (the bias's a kernel of its own however small); eager over more than one row, the
    bias rides in cuBLASLt's matmul epilogue (torch's addmm; one row takes another path, and
    inductor places a compiled step's bias itself)."""
    calls = []
    if c.mixed:
        if input_cast:
            calls.append(cast_call(rows * k_in, c.store, c.act))
        if c.casts_weight(head):
            calls.append(cast_call(k_in * n_out, c.store, c.act, weight=True))
            if bias:
                calls.append(cast_call(n_out, c.store, c.act, weight=True))
    calls.append(_mm(c.mm, rows, n_out, k_in, bias=bias and rows > 1 and not c.plan.compiled,
                     unaligned=_orientations(c, k_in, n_out)["fwd"]))
    return calls


def _linear_bwd(c: _Ctx, rows: int, k_in: int, n_out: int, input_cast: bool, bias: bool = True,
                head: bool = False) -> list[KernelCall]:
    """dX = dY·W (rows × k_in over n_out), dW = dYᵀ·X (n_out × k_in over rows), db = Σ dY; under
    autocast the weight's and the bias's gradients are cast back to fp32, and dX too where the
    forward cast its fp32 input (the casts' backward nodes were made in this operation's range,
    where a profile finds them)."""
    slow = _orientations(c, k_in, n_out)
    calls = [_mm(c.mm, rows, k_in, n_out, unaligned=slow["dgrad"]),
             _mm(c.mm, n_out, k_in, rows, unaligned=slow["wgrad"])]
    a = dtype_bytes(c.act)
    if bias:
        calls.append(vector_call("sum_rows", c.act, rows * n_out * a))
    if c.casts_weight(head):
        calls.append(cast_call(k_in * n_out, c.act, c.store))
        if bias:
            calls.append(cast_call(n_out, c.act, c.store))
    if c.mixed and input_cast:
        calls.append(cast_call(rows * k_in, c.act, c.store))
    return calls


def _ln_fwd(c: _Ctx, rows: int) -> list[KernelCall]:
    return [vector_call("layernorm_fwd", c.store, 2 * rows * c.s.C * dtype_bytes(c.store))]


def _ln_bwd(c: _Ctx, rows: int) -> list[KernelCall]:
    """LayerNorm's backward in the stored dtype (under autocast its output's gradient arrives in
    fp32 from the next linear's input cast, charged there)."""
    return [vector_call("layernorm_bwd", c.store, 3 * rows * c.s.C * dtype_bytes(c.store))]


def _attention(c: _Ctx, backward: bool = False) -> KernelCall:
    s = c.s
    bh = float(s.B * s.H)
    if s.T == 1:
        return KernelCall("attention", attention_key(c.act, "one_query"), (bh, float(s.L), float(s.D)))
    if c.plan.static_cache and not backward:  # sdpa with the cache's explicit (T, T) mask
        return KernelCall("attention", attention_key(c.act, "masked_fwd"), (bh, float(s.T), float(s.D)))
    return KernelCall("attention", attention_key(c.act, "causal_bwd" if backward else "causal_fwd"),
                      (bh, float(s.T), float(s.D)))


def _layer_fwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s, w = c.s, c.workload
    N, C = s.N, s.C
    a, st = dtype_bytes(c.act), dtype_bytes(c.store)
    qkv = _linear_fwd(c, N, C, 3 * C, input_cast=True)
    if w.uses_kv_cache:  # the new K and V written into the cache
        qkv += [vector_call("copy", c.act, 2 * N * C * a, count=2)]
    ops: dict[str, list[KernelCall]] = {names.LN_1: _ln_fwd(c, N), names.ATTN_QKV: qkv}
    if c.plan.attention == "sdpa":
        ops[names.ATTN_SDPA] = [_attention(c)]
    else:
        sf = s.scores_full
        bh = s.B * s.H
        ops[names.ATTN_SCORES] = [batched_mm(c.mm, c.act, bh, s.T, s.L, s.D), vector_call("add", c.act, 2 * sf * a)]
        if s.causal or c.plan.static_cache:  # masked_fill: the causal mask's, or the cache's own
            ops[names.ATTN_SCORES].append(vector_call("add", c.act, 2 * sf * a))
        soft = [cast_call(sf, c.act, c.store)] if c.mixed else []
        ops[names.ATTN_SOFTMAX] = soft + [vector_call("softmax_fwd", c.store, 2 * sf * st)]
        ctx = [cast_call(sf, c.store, c.act)] if c.mixed else []
        ops[names.ATTN_CONTEXT] = ctx + [batched_mm(c.mm, c.act, bh, s.T, s.D, s.L)]
    # sdpa's kernels write their output as (B, T, H, D): merging the heads is a view; math's is a copy
    merge = [vector_call("copy", c.act, 2 * N * C * a)] if c.plan.attention == "math" else []
    ops[names.ATTN_PROJ] = merge + _linear_fwd(c, N, C, C, False)
    # x (fp32) + h (bf16) under autocast: one kernel that casts h as it reads it (`add_mixed`)
    ops[names.RESIDUAL] = ([vector_call("add_mixed", c.act, N * C * (2 * st + a), count=2)] if c.mixed
                           else [vector_call("add", c.store, 3 * N * C * st, count=2)])
    ops[names.LN_2] = _ln_fwd(c, N)
    ops[names.MLP_FC] = _linear_fwd(c, N, C, 4 * C, input_cast=True)
    ops[names.MLP_ACT] = [vector_call("gelu_fwd", c.act, 2 * 4 * N * C * a)]
    ops[names.MLP_PROJ] = _linear_fwd(c, N, 4 * C, C, input_cast=False)
    return ops


def _layer_bwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s = c.s
    N, C = s.N, s.C
    a, st = dtype_bytes(c.act), dtype_bytes(c.store)
    # an add passes its gradient through; under autocast it is cast to the bf16 branch's dtype;
    # the stream's gradient and the branch's meet at x (used twice): autograd adds them, twice a layer
    residual = [cast_call(N * C, c.store, c.act), cast_call(N * C, c.store, c.act)] if c.mixed else []
    residual += [vector_call("add", c.store, 3 * N * C * st, count=2)]
    ops: dict[str, list[KernelCall]] = {
        names.RESIDUAL: residual,
        names.MLP_PROJ: _linear_bwd(c, N, 4 * C, C, input_cast=False),
        names.MLP_ACT: [vector_call("gelu_bwd", c.act, 3 * 4 * N * C * a)],
        names.MLP_FC: _linear_bwd(c, N, C, 4 * C, input_cast=True),
        names.LN_2: _ln_bwd(c, N),
        names.ATTN_PROJ: _linear_bwd(c, N, C, C, input_cast=False),
    }
    if c.plan.attention == "math":  # the head-merge copy's gradient
        ops[names.ATTN_PROJ].append(vector_call("copy", c.act, 2 * N * C * a))
    if c.plan.attention == "sdpa":
        ops[names.ATTN_SDPA] = [_attention(c, backward=True)]
    else:
        sf = s.scores_full
        bh = s.B * s.H
        ops[names.ATTN_CONTEXT] = [batched_mm(c.mm, c.act, bh, s.T, s.L, s.D),
                                   batched_mm(c.mm, c.act, bh, s.L, s.D, s.T)]
        ops[names.ATTN_SOFTMAX] = [vector_call("softmax_bwd", c.store, 3 * sf * st)]
        ops[names.ATTN_SCORES] = [vector_call("add", c.act, 3 * sf * a), batched_mm(c.mm, c.act, bh, s.T, s.D, s.L),
                                  batched_mm(c.mm, c.act, bh, s.L, s.D, s.T)]
    # the split's gradient: sdpa returns q, k and v's gradients in the (B, T, H, D) order of the
    # qkv output they were views of, joined by one cat; math's come as (B, H, T, D), so the join
    # transposes them too
    join = "cat" if c.plan.attention == "sdpa" else "copy"
    ops[names.ATTN_QKV] = [vector_call(join, c.act, 2 * 3 * N * C * a)] + _linear_bwd(c, N, C, 3 * C, input_cast=True)
    ops[names.LN_1] = _ln_bwd(c, N)
    return ops


def _model_fwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s, w = c.s, c.workload
    N, C, V = s.N, s.C, s.V
    st = dtype_bytes(c.store)
    rows = s.B if w.last_logits_only else N
    embed = [vector_call("embedding_fwd", c.store, 2 * N * C * st), vector_call("embedding_fwd", c.store, 2 * s.T * C * st),
             vector_call("add", c.store, 3 * N * C * st)]
    head = _linear_fwd(c, rows, C, c.head_width, input_cast=True, bias=False, head=True)
    if c.padded_head:  # the table and its zero rows joined (one kernel each), for each step
        head = [vector_call("add", c.store, (c.head_width - V) * C * st),
                vector_call("copy", c.store, (V + c.head_width) * C * st)] + head
    if w.last_logits_only:
        head = [vector_call("copy", c.store, 2 * rows * C * st)] + head
    ops = {names.EMBED: embed, names.LN_F: _ln_fwd(c, N), names.LM_HEAD: head}
    if w.has_loss and c.plan.fused_loss:  # one read of the logits, a reduction per row
        ops[names.LOSS] = [vector_call("sum_rows", c.act, N * V * dtype_bytes(c.act))]
    elif w.has_loss:  # a padded head's loss reads the whole product, its pad columns filled with
        # -inf first (one strided fill, charged as an add of its bytes)
        ops[names.LOSS] = [vector_call("cross_entropy_fwd", c.store, N * c.head_width * st)]
        if c.padded_head:
            fill = vector_call("add", c.act, N * (c.head_width - V) * dtype_bytes(c.act))
            ops[names.LOSS] = [fill] + ops[names.LOSS]
    return ops


def _model_bwd(c: _Ctx) -> dict[str, list[KernelCall]]:
    s = c.s
    N, C, V = s.N, s.C, s.V
    st = dtype_bytes(c.store)
    if c.plan.fused_loss:  # reads the logits, writes their gradient: a one-pass map with an exp
        loss = [vector_call("gelu_fwd", c.act, 2 * N * V * dtype_bytes(c.act))]
    else:  # reads the log-probabilities, writes the gradient of the logits in their dtype
        # (a padded head's: of the whole product, which the head's backward reads as it is)
        loss = [vector_call("cross_entropy_bwd", c.store, N * c.head_width * (st + dtype_bytes(c.act)))]
    # each table's gradient is zeroed whole, then the rows' gradients are added in (a fill is
    # charged as an add of its bytes); the token table's is then summed with the LM head's weight
    # gradient (the tied weight's two uses: autograd adds them out of place, V·C of each); the
    # positions' (T, C) rows were broadcast over the batch, so their gradient is first summed over it
    embed = [vector_call("add", c.store, V * C * st), vector_call("embedding_bwd", c.store, N * C * st),
             vector_call("add", c.store, 3 * V * C * st),
             vector_call("add", c.store, c.block * C * st), vector_call("embedding_bwd", c.store, s.T * C * st)]
    if s.B > 1:
        embed.append(vector_call("sum_rows", c.store, N * C * st))
    head = _linear_bwd(c, N, C, c.head_width, input_cast=True, bias=False, head=True)
    return {names.LOSS: loss, names.LM_HEAD: head,
            names.LN_F: _ln_bwd(c, N), names.EMBED: embed}


def _optimizer(c: _Ctx, config: GPTConfig) -> list[KernelCall]:
    P = count_parameters(config)
    copied = master_copied_parameters(config) if c.plan.master_weights else 0
    if c.plan.fused_master_update:
        # AdamW's kernel steps the fp32 parameters, gptperf's the copies from their bf16 gradients
        # (writing the bf16 weights); the clip's norm reads each gradient in its dtype
        copied_tensors = master_copied_tensors(config)
        fp32_tensors = count_parameter_tensors(config) - copied_tensors
        norm_bytes = (P - copied) * dtype_bytes(c.store) + copied * dtype_bytes(c.act)
        return [KernelCall("optimizer", "adamw_fused", (float(fp32_tensors), float(P - copied))),
                KernelCall("optimizer", "adamw_master", (float(copied_tensors), float(copied))),
                vector_call("sum_rows", c.store, norm_bytes)]
    # master weights: AdamW steps fp32 copies of the blocks' bf16 Linear weights, whose bf16
    # gradients are cast into the copies' first and which are cast back after
    calls = [cast_call(copied, c.act, c.store)] if copied else []
    fused = c.plan.fused_optimizer  # the per-tensor loop (a CPU's foreach AdamW) alone reads sizes
    calls.append(KernelCall("optimizer", "adamw_fused" if fused else "adamw_foreach",
                            (float(count_parameter_tensors(config)), float(P)),
                            tensors=() if fused else parameter_sizes(config)))
    # gradient clipping: the norm reads every gradient; the rescale reads and writes them, unless
    # the fused kernel rescales as it reads (gptperf.steps.train: no GradScaler, fused AdamW)
    calls.append(vector_call("sum_rows", c.store, P * dtype_bytes(c.store)))
    if not c.plan.update_in_kernel(c.workload.dtype):
        calls.append(vector_call("add", c.store, 2 * P * dtype_bytes(c.store)))
    if copied:
        calls.append(cast_call(copied, c.store, c.act))
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
                if split_k_reductions(comp, int(m), s):
                    out.append(vector_call("add", c.act, 3 * m * n * dtype_bytes(c.act)))  # split-K sum
        elif call.family == "attention":
            out.append(call)
            if c.plan.static_cache:  # the mask built from the device-side position
                out.append(vector_call("add", "fp32", 3 * s.T * s.L))
        elif comp == names.RESIDUAL or call.key.startswith(("copy:", "cast_")):
            if call.key.startswith("copy:") and comp == names.ATTN_QKV:
                out.append(call)  # the cache writes stay kernels of their own
        else:
            out.append(call)
    if comp == names.LM_HEAD and w.kind == DECODE and c.plan.static_cache:
        out.append(vector_call("add", c.act, 3 * s.B * s.V * dtype_bytes(c.act)))  # argmax over logits
        out.append(vector_call("add", "fp32", 4096, count=GREEDY_PICK_KERNELS - 1))
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
    key = gemv_key(c.mm, GEMV_ARGMAX_CHAIN) if comp == names.LM_HEAD else fused_step_key(comp, c.mm)
    for call in calls:
        if call.family == "matmul":
            _, n, k = call.point
            out.append(KernelCall("gemv", key, (n * k * dtype_bytes(c.act),)))
        elif call.family == "attention":  # the kernel's own grid (`_fallback`: sdpa's)
            dtype, _ = split_attention_key(call.key)
            out.append(KernelCall("attention", attention_key(dtype, FUSED_ATTENTION_PASS), call.point))
    if comp == names.EMBED:
        out.append(vector_call("add", c.act, 3 * c.s.C * dtype_bytes(c.act)))
    return out


def head_width(config: GPTConfig, workload: Workload, plan: ExecutionPlan, device_type: str) -> int:
    """The LM head's output width (its weight's rows) as the step runs it on a `device_type`
    device: an eager step pads the table (`pads_lm_head`); inductor and the fused decode kernels
    read it as it is."""
    rows = workload.batch if workload.last_logits_only else workload.batch * workload.new_tokens
    padded = pads_lm_head(config, device_type, dtype_bytes(workload.dtype), rows) and not plan.compiled
    return config.padded_vocab_size if padded else config.vocab_size


def step_ops(config: GPTConfig, workload: Workload, plan: ExecutionPlan,
             device_type: str = "cpu") -> list[tuple[str, str, int | None, list[KernelCall]]]:
    """(component, phase, layer, calls) in execution order, on a `device_type` device ("cpu",
    "cuda": where an eager model pads its LM head, `pads_lm_head`)."""
    s = shape(config, workload, plan.master_weights)
    inference = workload.kind in INFERENCE_KINDS
    mixed = workload.mixed_precision
    act = {"tf32": "fp32"}.get(workload.dtype, workload.dtype)
    store = "fp32" if mixed else act
    compiled_inf = plan.compiled and inference
    fused = plan.fuses_decode(workload.kind, s.B)
    c = _Ctx(s, workload, plan, workload.dtype, act, store, config.block_size,
             head_width(config, workload, plan, device_type))

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


def kernel_calls(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None = None,
                 device_type: str = "cpu") -> list[KernelCall]:
    """Every kernel the step runs on a `device_type` device as the calibrated model sees it (one
    entry per distinct call; a compiled training step's fused kernels are not listed: they come
    from the recording)."""
    plan = ExecutionPlan.eager(config.attention) if plan is None else plan
    return [call for *_, calls in step_ops(config, workload, plan, device_type) for call in calls]
