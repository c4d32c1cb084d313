"""Fused Triton kernels for a batch-1 decode step: five kernels per layer instead of about eleven.

At batch 1 a decode step is launch-bound as much as bandwidth-bound: every kernel costs a few µs
of launch and ramp even inside a CUDA graph. These kernels fold the small operations into the
weight-streaming ones; `gptperf.steps.fused_decode` composes a step of them:

    x = embed(token, pos, wte, wpe)                                  # wte[token] + wpe[pos]
    per layer:
        qkv = ln_gemv(x, ln_1.weight, ln_1.bias, eps, c_attn.weight, folded=...)  # LayerNorm inside
        y   = decode_attention(qkv, k_cache[l], v_cache[l], pos, n_head, scratch=scratch)
        x   = gemv_residual(y, attn.c_proj.weight, attn.c_proj.bias, x)           # x + W y + b
        h   = ln_gemv(x, ln_2.weight, ln_2.bias, eps, c_fc.weight, gelu=True, folded=...)
        x   = gemv_residual(h, mlp.c_proj.weight, mlp.c_proj.bias, x)
    token = ln_gemv_argmax(x, ln_f.weight, ln_f.bias, eps, lm_head.weight, folded=...,
                           scratch=scratch, finish=(pos, token_buf, tokens_buf))  # pos += 1

A LayerNorm costs its gemv no extra pass: W·LayerNorm(x) + b = r·(W·(x·γ) − μ·W·γ) + (W·β + b),
where each program sums x and x² from the chunks of x it loads anyway and W·γ, W·β + b are
computed once per weight (`fold_layer_norm`); a weight of at most
`KernelTuning.scale_weight_bytes` is streamed as its own copy W∘γ (columns scaled by γ), so the
programs load x alone. This one pass beat the other ways of placing the LayerNorm that were tried
(BENCHMARKS.md, "The fused decode kernels"). On Hopper every kernel is launched with
programmatic dependent launch: it waits for the previous kernel's results itself, so its launch
overlaps that kernel's tail. `KernelTuning` holds the settings a benchmark compares.

Every launch reads the position from the device tensor `pos` (no host synchronisation), so the
whole step can be captured as one CUDA graph. Each public function runs its Triton kernel on CUDA
tensors (or on any tensor when TRITON_INTERPRET=1, Triton's CPU interpreter) and otherwise, or
with `reference=True`, its `*_reference` function (`gptperf.steps.decode_reference`): the same
math in plain torch (fp32, rounded to the input dtype at the end). The kernels accumulate in fp32 and round only their outputs, so
they skip the intermediate roundings (LayerNorm and matmul outputs, GELU, residual) of the
unfused bf16 model.

Self-resetting counters: `decode_attention` and `ln_gemv_argmax` let the last of their programs
finish the work (combine the attention splits; decode the argmax) and that program puts its
counters back (`DecodeScratch`), so one scratch serves every replay of a graph with no reset
kernel. Kernels sharing a scratch must run in stream order, so make one per decoder.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace

import torch

from gptperf.plan import NORM_SCALED_WEIGHT_BYTES
from gptperf.steps.decode_reference import (
    decode_attention_reference,
    embed_reference,
    finish_reference,
    gemv_reference,
    gemv_residual_reference,
    ln_gemv_argmax_reference,
    ln_gemv_reference,
)

try:  # Triton comes with CUDA builds of torch; CPU builds have none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on CPU-only installs
    triton = None
try:  # programmatic dependent launch (Hopper): a kernel starts while the one before drains
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - older Triton, or none
    gdc_launch_dependents = gdc_wait = None

INT64_MIN = -(2**63)  # the argmax key before any program has reported
DEFAULT_CHUNK = 64  # positions per attention program when none is given
# warps of an attention program: 2 beat 4 in the captured step (benchmarks/gpu_decode_tune.py
# `in_step`; BENCHMARKS.md, "The fused decode step tuned in the step")
ATTENTION_WARPS = 2
_LOG2E = 1.4426950408889634


def default_chunk(max_len: int, head_dim: int = 64, element_size: int = 2) -> int:
    """Positions per attention program for a cache of `max_len`: about 16 KiB of K and V a
    program (64 positions of a 64-wide bf16 head, 32 of a 128-wide one), and at most 32 at short
    contexts, where few splits merge fastest. Chosen in the captured step
    (benchmarks/gpu_decode_tune.py `in_step`; BENCHMARKS.md, "The fused decode step tuned in the
    step")."""
    chunk = min(DEFAULT_CHUNK, max(16, 8192 // (head_dim * element_size)))
    return min(chunk, 32) if max_len <= 256 else chunk


# The LM head's argmax kernel: its tile, whatever the width, and the programs it aims for (about
# 8 an SM of a 132-SM card). Each program ends in a reduction and two atomics, so fewer, longer
# programs than one a row block, but enough to stream the weight (benchmarks/gpu_decode_tune.py
# `argmax`; BENCHMARKS.md, "The fused decode step's LM head and attention: a faster argmax kernel").
ARGMAX_TILE = (16, 128, 4)
ARGMAX_PROGRAMS = 1056


def argmax_blocks(n: int, block_n: int, programs: int | None = None) -> int:
    """Row blocks per program of the argmax kernel for `n` rows in blocks of `block_n`, to make
    about `programs` (default ARGMAX_PROGRAMS) programs."""
    n_blocks = -(-n // block_n)
    return max(1, -(-n_blocks // (programs or ARGMAX_PROGRAMS)))


def available() -> bool:
    """True when the Triton kernels can run on a GPU (a CUDA device and Triton)."""
    return triton is not None and torch.cuda.is_available()


@dataclass(frozen=True)
class KernelTuning:
    """Launch settings of the fused decode kernels that a benchmark compares; the defaults are the
    ones the step runs. Pass a variant down (`FastDecoder(kernel_tuning=...)`,
    `fused_decode_step(tuning=...)`, or any public function here) instead of changing the module.

    pdl: launch with programmatic dependent launch where it exists (Hopper and later, Triton with
    GDC): each kernel waits for the previous one's results itself, so its launch hides under that
    kernel's tail. Elsewhere the kernels wait at launch whatever this says.
    attention_prefetch: the attention kernel loads its first tile of the cache before that wait
    (the cache and pos were written by earlier steps); off, it waits first, as the other kernels do.
    early_weight_loads: the layers' gemv kernels load their first weight tile before that wait
    (the weights are no kernel's output); off, they wait first. The LM head's argmax kernel always
    waits first, where loading early lost (BENCHMARKS.md, "Every layer gemv loads early").
    scale_weight_bytes: a LayerNorm's gemv streams a copy of its weight with γ multiplied in (no γ
    load beside each x chunk) when the weight is at most this large (BENCHMARKS.md, "Sixteen
    decode steps a graph, the anchors again, and γ in the weights"); read where the LayerNorms
    are folded (`fold_layer_norm`).
    """

    pdl: bool = True
    attention_prefetch: bool = True
    early_weight_loads: bool = True
    scale_weight_bytes: int = NORM_SCALED_WEIGHT_BYTES


DEFAULT_TUNING = KernelTuning()


@functools.cache
def _hopper_or_later(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 9


def _pdl(t: torch.Tensor, tuning: KernelTuning) -> bool:
    return tuning.pdl and gdc_wait is not None and t.is_cuda and _hopper_or_later(t.device)


def _launch(t: torch.Tensor, tuning: KernelTuning) -> dict[str, bool]:
    """The PDL constexpr and launch option for kernels on `t`'s device under `tuning`."""
    on = _pdl(t, tuning)
    return {"PDL": on, "launch_pdl": True} if on else {"PDL": False}


def _use_triton(t: torch.Tensor) -> bool:
    """Launch the kernel for `t`: a CUDA tensor with Triton, or any tensor under the interpreter."""
    if triton is None:
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


@dataclass
class DecodeScratch:
    """Device counters the fused kernels leave as they found them (see the module docstring)."""

    attention_done: torch.Tensor  # (n_head,) int32, 0: splits of each head done in this layer
    argmax_key: torch.Tensor  # (1,) int64, INT64_MIN: the best packed (logit, index) so far
    argmax_done: torch.Tensor  # (1,) int32, 0: LM-head programs done

    @classmethod
    def new(cls, n_head: int, device: torch.device | str) -> DecodeScratch:
        return cls(torch.zeros(n_head, dtype=torch.int32, device=device),
                   torch.full((1,), INT64_MIN, dtype=torch.long, device=device),
                   torch.zeros(1, dtype=torch.int32, device=device))


@dataclass(frozen=True)
class FoldedNorm:
    """What a gemv after LayerNorm(γ, β) needs besides x: c1 = W·γ and c2 = W·β + b (fp32), and
    `weight`, W∘γ in W's dtype, streamed instead of W (then c1 is its row sums, so that the mean's
    term cancels against the very weights streamed), or None: W is streamed and γ loaded. `bias`
    is the b inside c2, kept so that the plain-torch reference adds the bias the kernel adds."""

    c1: torch.Tensor
    c2: torch.Tensor
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def streamed(self, weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(the weight the kernel streams, whether it loads γ beside x): the γ-scaled copy where
        there is one, else `weight` itself with γ loaded."""
        return (weight, True) if self.weight is None else (self.weight, False)


def scales_weight(weight: torch.Tensor, tuning: KernelTuning = DEFAULT_TUNING) -> bool:
    """Whether `fold_layer_norm` gives `weight` a γ-scaled copy by default: a kernel will stream
    it (`_use_triton`) and it is at most `tuning.scale_weight_bytes`."""
    return (_use_triton(weight)
            and weight.numel() * weight.element_size() <= tuning.scale_weight_bytes)


def fold_layer_norm(weight: torch.Tensor, bias: torch.Tensor | None, ln_weight: torch.Tensor,
                    ln_bias: torch.Tensor, rows: int = 8192, scale: bool | None = None,
                    tuning: KernelTuning = DEFAULT_TUNING) -> FoldedNorm:
    """The `FoldedNorm` of `weight` after LayerNorm(γ, β), for `ln_gemv(..., folded=...)`, with
    the γ-scaled copy when `scale` (default: `scales_weight(weight, tuning)`). Computed once per
    weight, `rows` rows of W at a time (a 7B LM head in fp32 at once would be 0.8 GB)."""
    scale = scales_weight(weight, tuning) if scale is None else scale
    g, beta = ln_weight.float(), ln_bias.float()
    c1 = torch.empty(weight.size(0), dtype=torch.float32, device=weight.device)
    c2 = torch.empty_like(c1)
    scaled = torch.empty_like(weight) if scale else None
    # Row by row (products, then each row's sum), not W @ γ: a matrix-vector product may round a
    # row differently by where it sits (the CPU's did, by an ulp), and equal rows must give equal
    # logits for the argmax's ties.
    for i in range(0, weight.size(0), rows):
        w = weight[i:i + rows].float()
        wg = w * g
        if scaled is not None:  # c1 from the copy as streamed, rounded to W's dtype
            scaled[i:i + rows] = wg
            wg = scaled[i:i + rows].float()
        c1[i:i + rows] = wg.sum(1)
        c2[i:i + rows] = (w * beta).sum(1)
    if bias is not None:
        c2 += bias.float()
    return FoldedNorm(c1, c2, scaled, bias)


def fold_for_copies(weights: list[torch.Tensor], ln_weight: torch.Tensor, ln_bias: torch.Tensor,
                    bias: torch.Tensor | None = None,
                    tuning: KernelTuning = DEFAULT_TUNING) -> list[FoldedNorm]:
    """A `FoldedNorm` per copy of one weight, for timing the kernel over distinct copies (weights
    out of cache): the first copy's constants, each copy streamed as itself where the step would
    stream a γ-scaled weight (the same kernel; its values do not change the time)."""
    folded = fold_layer_norm(weights[0], bias, ln_weight, ln_bias, scale=False)
    if not scales_weight(weights[0], tuning):
        return [folded] * len(weights)
    return [replace(folded, weight=w) for w in weights]


# -- kernels ---------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _after_previous(PDL: tl.constexpr):
        # Under PDL this kernel was launched while the previous one drained: wait for its results
        # (every kernel here reads what the one before wrote), then let the next one launch.
        if PDL:
            gdc_wait()
            gdc_launch_dependents()

    @triton.jit
    def _embed_kernel(token_ptr, pos_ptr, wte_ptr, wpe_ptr, x_ptr, C, BLOCK: tl.constexpr,
                      PDL: tl.constexpr):
        # Vector blocks over C: one row gather from each table, added in fp32.
        _after_previous(PDL)
        cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < C
        tok = tl.load(token_ptr).to(tl.int64)
        pos = tl.load(pos_ptr).to(tl.int64)
        x = (tl.load(wte_ptr + tok * C + cols, mask=ok, other=0.0).to(tl.float32)
             + tl.load(wpe_ptr + pos * C + cols, mask=ok, other=0.0).to(tl.float32))
        tl.store(x_ptr + cols, x.to(x_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _accumulate(acc, sx, sxx, w, x_ptr, g_ptr, cols, col_ok, LN: tl.constexpr,
                    GAMMA: tl.constexpr):
        x = tl.load(x_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        if LN:
            sx += x
            sxx += x * x
            if GAMMA:  # else γ is in the weight streamed (FoldedNorm.weight)
                x = x * tl.load(g_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        acc += w.to(tl.float32) * x[None, :]
        return acc, sx, sxx

    @triton.jit
    def _dot(x_ptr, g_ptr, w_ptr, c1_ptr, c2_ptr, N, K, eps, block, LN: tl.constexpr,
             GAMMA: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
             EARLY: tl.constexpr, PDL: tl.constexpr):
        # gemv.py's streaming loop over row block `block` (BLOCK_N rows, BLOCK_K columns a step,
        # fp32 partial sums kept 2-D until the end). LN: W·LayerNorm(x) + b =
        # r·(W·(x·γ) − μ·W·γ) + (W·β + b) in the same single pass: the program sums x and x² from
        # the chunks it loads anyway, and W·γ (c1), W·β + b (c2) were computed once per weight
        # (`fold_layer_norm`); GAMMA: γ is loaded beside x, else it is in W. EARLY: the first
        # weight tile is loaded before this function does the PDL wait (the weights are no
        # kernel's output), under the previous kernel's tail; otherwise the caller has waited.
        rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        w_rows = w_ptr + rows.to(tl.int64)[:, None] * K
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        sx = tl.zeros([BLOCK_K], dtype=tl.float32)
        sxx = tl.zeros([BLOCK_K], dtype=tl.float32)
        first = 0
        if EARLY:
            cols = tl.arange(0, BLOCK_K)
            col_ok = cols < K
            w = tl.load(w_rows + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0,
                        eviction_policy="evict_first")
            _after_previous(PDL)
            acc, sx, sxx = _accumulate(acc, sx, sxx, w, x_ptr, g_ptr, cols, col_ok, LN, GAMMA)
            first = BLOCK_K
        for k0 in range(first, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            col_ok = cols < K
            w = tl.load(w_rows + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0,
                        eviction_policy="evict_first")  # each weight is read once: keep L2 for x
            acc, sx, sxx = _accumulate(acc, sx, sxx, w, x_ptr, g_ptr, cols, col_ok, LN, GAMMA)
        y = tl.sum(acc, axis=1)
        if LN:
            mean = tl.sum(sx, axis=0) / K
            rstd = 1.0 / tl.sqrt(tl.maximum(tl.sum(sxx, axis=0) / K - mean * mean, 0.0) + eps)
            c1 = tl.load(c1_ptr + rows, mask=row_ok, other=0.0)
            c2 = tl.load(c2_ptr + rows, mask=row_ok, other=0.0)
            y = rstd * (y - mean * c1) + c2
        return rows, row_ok, y

    @triton.jit
    def _ln_gemv_kernel(x_ptr, g_ptr, w_ptr, b_ptr, c1_ptr, c2_ptr, y_ptr, N, K, eps,
                        LN: tl.constexpr, GAMMA: tl.constexpr, HAS_BIAS: tl.constexpr,
                        GELU: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        EARLY: tl.constexpr, PDL: tl.constexpr):
        # LayerNorm (LN; the bias is in c2 then), the weight stream, bias and GELU: one kernel.
        if not EARLY:
            _after_previous(PDL)
        rows, row_ok, y = _dot(x_ptr, g_ptr, w_ptr, c1_ptr, c2_ptr, N, K, eps, tl.program_id(0),
                               LN, GAMMA, BLOCK_N, BLOCK_K, EARLY, PDL)
        if HAS_BIAS:
            y += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        if GELU:  # tanh approximation: 0.5·y·(1 + tanh(u)) = y·sigmoid(2u), stable for any |u|
            u = 0.7978845608028654 * (y + 0.044715 * y * y * y)
            y = y / (1.0 + tl.exp(-2.0 * u))
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)

    @triton.jit
    def _gemv_residual_kernel(x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, N, K, HAS_BIAS: tl.constexpr,
                              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EARLY: tl.constexpr,
                              PDL: tl.constexpr):
        # The residual add rides in the epilogue of the weight stream, one rounding at the end.
        if not EARLY:
            _after_previous(PDL)
        rows, row_ok, y = _dot(x_ptr, x_ptr, w_ptr, x_ptr, x_ptr, N, K, 0.0, tl.program_id(0),
                               False, False, BLOCK_N, BLOCK_K, EARLY, PDL)
        y += tl.load(r_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)

    @triton.jit
    def _argmax_key(y, rows):
        # Same packing as decode_reference.argmax_key: ordered fp32 bits high, 0xFFFFFFFF - row low.
        y = tl.where(y == 0.0, 0.0, y)
        bits = y.to(tl.int32, bitcast=True)
        ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        ordered = tl.where(y != y, 0x7FFFFFFF, ordered)
        low = tl.full((), 0xFFFFFFFF, tl.int64) - rows.to(tl.int64)
        return (ordered.to(tl.int64) << 32) | low

    @triton.jit
    def _ln_gemv_argmax_kernel(x_ptr, g_ptr, w_ptr, c1_ptr, c2_ptr, key_ptr, done_ptr, out_ptr,
                               pos_ptr, token_ptr, tokens_ptr, tokens_stride, N, K, eps,
                               LN: tl.constexpr, GAMMA: tl.constexpr, FINISH: tl.constexpr,
                               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCKS: tl.constexpr,
                               PDL: tl.constexpr):
        # Each program reduces BLOCKS consecutive row blocks to one packed key and does one
        # atomic max; the last program to finish (counted by an atomic) decodes the winner and
        # resets key and count, so the logits never leave registers and no other kernel has to
        # reset anything. BLOCKS > 1 keeps the same-address atomics few (a vocabulary-wide weight
        # has up to 25k row blocks).
        _after_previous(PDL)
        lowest = tl.full((), 1, tl.int64) << 63  # INT64_MIN
        best = lowest
        for i in range(BLOCKS):
            rows, row_ok, y = _dot(x_ptr, g_ptr, w_ptr, c1_ptr, c2_ptr, N, K, eps,
                                   tl.program_id(0) * BLOCKS + i, LN, GAMMA, BLOCK_N, BLOCK_K,
                                   False, PDL)
            y = y.to(x_ptr.dtype.element_ty).to(tl.float32)  # the logits the model would argmax
            key = tl.where(row_ok, _argmax_key(y, rows), lowest)
            best = tl.maximum(best, tl.max(key, axis=0))
        # relaxed: the count's release below orders it, and a program's tail is on the step's path
        tl.atomic_max(key_ptr, best, sem="relaxed", scope="gpu")
        tl.debug_barrier()  # the max is issued before the count that says this program is done
        done = tl.atomic_add(done_ptr, 1, sem="acq_rel", scope="gpu")
        if done == tl.num_programs(0) - 1:
            best = tl.atomic_xchg(key_ptr, lowest, sem="acq_rel", scope="gpu")  # read and reset
            token = tl.full((), 0xFFFFFFFF, tl.int64) - (best & tl.full((), 0xFFFFFFFF, tl.int64))
            tl.store(out_ptr, token)
            tl.store(done_ptr, 0)
            if FINISH:
                pos = tl.load(pos_ptr)
                tl.store(token_ptr, token)
                tl.store(tokens_ptr + (pos + 1) * tokens_stride, token)
                tl.store(pos_ptr, pos + 1)

    @triton.jit
    def _finish_kernel(out_ptr, pos_ptr, token_ptr, tokens_ptr, tokens_stride, PDL: tl.constexpr):
        # One program, a handful of scalars: the step's bookkeeping with no host round trip.
        _after_previous(PDL)
        token = tl.load(out_ptr)
        pos = tl.load(pos_ptr)
        tl.store(token_ptr, token)
        tl.store(tokens_ptr + (pos + 1) * tokens_stride, token)
        tl.store(pos_ptr, pos + 1)

    @triton.jit
    def _combine(acc_ptr, ml_ptr, h, S, n_split, D_P2: tl.constexpr, SPLIT_BLOCK: tl.constexpr):
        # Online-softmax merge of the splits' (max, sum, unnormalised output), SPLIT_BLOCK at a
        # time; .cg loads read L2, where the other programs' partials are, not a stale L1.
        d = tl.arange(0, D_P2)
        m = tl.full((), float("-inf"), tl.float32)
        denom = tl.zeros((), dtype=tl.float32)
        acc = tl.zeros([D_P2], dtype=tl.float32)
        for s0 in range(0, n_split, SPLIT_BLOCK):
            s = s0 + tl.arange(0, SPLIT_BLOCK)
            ok = s < n_split
            at = h * S + s
            ms = tl.load(ml_ptr + at * 2, mask=ok, other=float("-inf"), cache_modifier=".cg")
            ls = tl.load(ml_ptr + at * 2 + 1, mask=ok, other=0.0, cache_modifier=".cg")
            accs = tl.load(acc_ptr + at[:, None] * D_P2 + d[None, :], mask=ok[:, None], other=0.0,
                           cache_modifier=".cg")
            m_new = tl.maximum(m, tl.max(ms, axis=0))
            alpha = tl.exp2(m - m_new)
            w = tl.exp2(ms - m_new)
            denom = denom * alpha + tl.sum(ls * w, axis=0)
            acc = acc * alpha + tl.sum(accs * w[:, None], axis=0)
            m = m_new
        return acc / denom

    @triton.jit
    def _store_partial(acc_ptr, ml_ptr, h, s, S, m, denom, acc, D_P2: tl.constexpr):
        # fp32, one row per (head, split): what `_combine` merges.
        at = h * S + s
        tl.store(acc_ptr + at * D_P2 + tl.arange(0, D_P2), acc)
        tl.store(ml_ptr + at * 2, m)
        tl.store(ml_ptr + at * 2 + 1, denom)

    @triton.jit
    def _attend(m, denom, acc, q, kt, vt, j_ok, qk_scale):
        # One tile of cached positions folded into the running (max, sum, output): online softmax
        # in log2 units (qk_scale = log2(e)/sqrt(D)) so exp2 does it.
        sc = tl.where(j_ok, tl.sum(kt.to(tl.float32) * q[None, :], axis=1) * qk_scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(sc, axis=0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(sc - m_new)
        denom = denom * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * vt.to(tl.float32), axis=0)
        return m_new, denom, acc

    @triton.jit
    def _attention_kernel(qkv_ptr, k_ptr, v_ptr, pos_ptr, acc_ptr, ml_ptr, done_ptr, y_ptr,
                          C, S, k_sh, k_sl, v_sh, v_sl, qk_scale,
                          D: tl.constexpr, D_P2: tl.constexpr, CHUNK: tl.constexpr,
                          BLOCK_L: tl.constexpr, SPLIT_BLOCK: tl.constexpr, FUSED: tl.constexpr,
                          PREFETCH: tl.constexpr, PDL: tl.constexpr):
        # Grid (head, split): split s attends over positions [s·CHUNK, (s+1)·CHUNK) ∩ [0, pos], so
        # a long context spreads over many SMs; splits past pos exit at once. The split holding
        # pos takes the new k, v from registers (and writes them to the cache), so no program
        # reads what another writes. With FUSED the last split of a head to finish (an atomic
        # count) merges the partials; a lone split writes y directly, with no atomic at all.
        # PREFETCH: pos and the cached positions (< pos) were written by earlier steps, so the
        # split's first tile is loaded before the PDL wait, under the qkv kernel's tail; only q
        # and the new k, v wait for it.
        if not PREFETCH:
            _after_previous(PDL)
        h = tl.program_id(0)
        s = tl.program_id(1)
        pos = tl.load(pos_ptr).to(tl.int32)
        start = s * CHUNK
        if start <= pos:
            d = tl.arange(0, D_P2)
            d_ok = d < D
            end = tl.minimum(start + CHUNK, pos)  # cached positions only; pos itself is done
            k_head = k_ptr + h * k_sh + d[None, :]
            v_head = v_ptr + h * v_sh + d[None, :]
            j = start + tl.arange(0, BLOCK_L)
            j_ok = j < end
            kt = tl.load(k_head + j[:, None] * k_sl, mask=j_ok[:, None] & d_ok[None, :], other=0.0)
            vt = tl.load(v_head + j[:, None] * v_sl, mask=j_ok[:, None] & d_ok[None, :], other=0.0)
            if PREFETCH:
                _after_previous(PDL)
            head = qkv_ptr + h * D + d
            q = tl.load(head, mask=d_ok, other=0.0).to(tl.float32)
            k_new = tl.load(head + C, mask=d_ok, other=0.0)
            v_new = tl.load(head + 2 * C, mask=d_ok, other=0.0)
            n_split = pos // CHUNK + 1
            own = s == n_split - 1
            # d_ok where this split owns pos (a select, not `d_ok & own`: Triton's interpreter
            # refuses a mask made of a block and a scalar)
            own_d = tl.where(own, d_ok, False)
            tl.store(k_ptr + h * k_sh + pos * k_sl + d, k_new.to(k_ptr.dtype.element_ty), mask=own_d)
            tl.store(v_ptr + h * v_sh + pos * v_sl + d, v_new.to(v_ptr.dtype.element_ty), mask=own_d)
            # the own split starts from the new position (its score may then face a tile of none)
            m = tl.where(own, tl.sum(q * k_new.to(tl.float32), axis=0) * qk_scale, float("-inf"))
            denom = tl.where(own, 1.0, 0.0)
            acc = tl.where(own, v_new.to(tl.float32), 0.0)
            m, denom, acc = _attend(m, denom, acc, q, kt, vt, j_ok, qk_scale)
            for j0 in range(start + BLOCK_L, end, BLOCK_L):
                j = j0 + tl.arange(0, BLOCK_L)
                j_ok = j < end
                tile_ok = j_ok[:, None] & d_ok[None, :]
                kt = tl.load(k_head + j[:, None] * k_sl, mask=tile_ok, other=0.0)
                vt = tl.load(v_head + j[:, None] * v_sl, mask=tile_ok, other=0.0)
                m, denom, acc = _attend(m, denom, acc, q, kt, vt, j_ok, qk_scale)
            if FUSED:
                if n_split == 1:
                    tl.store(y_ptr + h * D + d, (acc / denom).to(y_ptr.dtype.element_ty), mask=d_ok)
                else:
                    _store_partial(acc_ptr, ml_ptr, h, s, S, m, denom, acc, D_P2)
                    tl.debug_barrier()  # every thread's partial is stored before the count
                    done = tl.atomic_add(done_ptr + h, 1, sem="acq_rel", scope="gpu")
                    if done == n_split - 1:
                        y = _combine(acc_ptr, ml_ptr, h, S, n_split, D_P2, SPLIT_BLOCK)
                        tl.store(y_ptr + h * D + d, y.to(y_ptr.dtype.element_ty), mask=d_ok)
                        tl.store(done_ptr + h, 0)
            else:
                _store_partial(acc_ptr, ml_ptr, h, s, S, m, denom, acc, D_P2)

    @triton.jit
    def _attention_combine_kernel(acc_ptr, ml_ptr, pos_ptr, y_ptr, S, D: tl.constexpr,
                                  D_P2: tl.constexpr, CHUNK: tl.constexpr,
                                  SPLIT_BLOCK: tl.constexpr, PDL: tl.constexpr):
        # One program per head: the unfused second pass (fused_combine=False).
        _after_previous(PDL)
        h = tl.program_id(0)
        n_split = tl.load(pos_ptr).to(tl.int32) // CHUNK + 1
        y = _combine(acc_ptr, ml_ptr, h, S, n_split, D_P2, SPLIT_BLOCK)
        d = tl.arange(0, D_P2)
        tl.store(y_ptr + h * D + d, y.to(y_ptr.dtype.element_ty), mask=d < D)


# -- the public functions --------------------------------------------------------------------


def fused_tile(n: int, k: int, ln: bool) -> tuple[int, int, int]:
    """(rows per program, columns per step, warps) of `ln_gemv` (`ln`: with its LayerNorm) and
    `gemv_residual` for a weight of n×k, measured inside the captured step (PDL, each kernel after
    the one it reads from), where the isolated sweeps' tiles (`gemv_config`) lost to these
    (benchmarks/gpu_decode_tune.py `in_step`, `in_step_wide`; BENCHMARKS.md, "The fused decode
    step tuned in the step")."""
    if n >= 32768 and k <= 1024:  # a vocabulary-wide weight of short rows (an LM head)
        return ARGMAX_TILE
    if ln:
        if n >= 4 * k and k >= 1536:  # the MLP's up projection from gpt2-xl's width on
            return 16, 256, 8
        # 512 columns a step unless that pads a row by more than 10% (768, 1280, 1600 wide)
        return (4, 512, 4) if -(-k // 512) * 512 <= 1.1 * k else (4, 256, 4)
    if k >= 6144:  # long rows: the MLP's down projection from gpt2-xl's width on
        return 1, 1024, 4
    if k >= 2 * n:
        return 2, 2048, 8
    return (4, 512, 4) if k >= 2048 else (2, 1024, 4)


def _tile(n: int, k: int, ln: bool, config: tuple[int, int, int] | None) -> tuple[int, int, int]:
    return config or fused_tile(n, k, ln)


def _out(out: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty((1, 1, n), device=like.device, dtype=like.dtype) if out is None else out


def embed(token: torch.Tensor, pos: torch.Tensor, wte: torch.Tensor, wpe: torch.Tensor, *,
          out: torch.Tensor | None = None, reference: bool = False,
          tuning: KernelTuning = DEFAULT_TUNING) -> torch.Tensor:
    """wte[token] + wpe[pos] -> (1, 1, C) in wte's dtype; token (1, 1) and pos () on the device."""
    if reference or not _use_triton(wte):
        x = embed_reference(token, pos, wte, wpe)
        return x if out is None else out.copy_(x)
    C = wte.size(1)
    out = _out(out, C, wte)
    block = min(triton.next_power_of_2(C), 1024)
    _embed_kernel[(triton.cdiv(C, block),)](token, pos, wte, wpe, out, C, BLOCK=block,
                                            **_launch(wte, tuning))
    return out


def _folded(folded: FoldedNorm | None, weight: torch.Tensor, bias: torch.Tensor | None,
            ln_weight: torch.Tensor, ln_bias: torch.Tensor, tuning: KernelTuning) -> FoldedNorm:
    if folded is not None:
        return folded
    return fold_layer_norm(weight, bias, ln_weight, ln_bias, tuning=tuning)


def _folded_bias(folded: FoldedNorm | None, bias: torch.Tensor | None, what: str) -> torch.Tensor | None:
    """The gemv's one bias: `folded`'s, which its c2 holds, where `folded` is given (a `bias`
    beside it must be that very tensor), else `bias`."""
    if folded is None:
        return bias
    if bias is not None and bias is not folded.bias:
        raise ValueError(f"{what}: `bias` is not the bias folded into `folded` (its c2 holds the "
                         "bias the kernel adds); pass bias=None or the tensor given to fold_layer_norm")
    return folded.bias


def ln_gemv(x: torch.Tensor, ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None,
            eps: float, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False, *,
            folded: FoldedNorm | None = None,
            out: torch.Tensor | None = None, config: tuple[int, int, int] | None = None,
            reference: bool = False, tuning: KernelTuning = DEFAULT_TUNING) -> torch.Tensor:
    """weight · LayerNorm(x) + bias [then GELU, tanh approximation]: x (1, 1, K) -> (1, 1, N);
    with `ln_weight` None, weight · x + bias.

    The LayerNorm is computed inside the single pass over the weight (`_dot`) from `folded` =
    `fold_layer_norm(weight, bias, ln_weight, ln_bias)`, computed here when not given (give it:
    it reads the whole weight); where it holds a γ-scaled copy, that copy is streamed. With
    `folded` the bias is the one folded into it (`bias` may be omitted, or must be that tensor).
    `config` overrides `fused_tile`'s (rows per program, columns per step, warps). `out` must not
    be `x` (every program reads all of x). `tuning`: the launch settings (`KernelTuning`).
    """
    ln = ln_weight is not None
    if ln:
        bias = _folded_bias(folded, bias, "ln_gemv")
    if reference or not _use_triton(x):
        y = (ln_gemv_reference(x, ln_weight, ln_bias, eps, weight, bias, gelu) if ln
             else gemv_reference(x, weight, bias, gelu))
        return y if out is None else out.copy_(y)
    n, k = weight.shape
    out = _out(out, n, x)
    f = _folded(folded, weight, bias, ln_weight, ln_bias, tuning) if ln else FoldedNorm(x, x)
    streamed, gamma = f.streamed(weight)
    block_n, block_k, warps = _tile(n, k, ln, config)
    _ln_gemv_kernel[(triton.cdiv(n, block_n),)](
        x, ln_weight if ln else x, streamed, bias if bias is not None else weight, f.c1, f.c2, out,
        n, k, float(eps), LN=ln, GAMMA=ln and gamma, HAS_BIAS=bias is not None and not ln,
        GELU=gelu, BLOCK_N=block_n, BLOCK_K=block_k, EARLY=tuning.early_weight_loads,
        num_warps=warps, **_launch(x, tuning))
    return out


def gemv_residual(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  residual: torch.Tensor, *, out: torch.Tensor | None = None,
                  config: tuple[int, int, int] | None = None,
                  reference: bool = False, tuning: KernelTuning = DEFAULT_TUNING) -> torch.Tensor:
    """residual + weight · y + bias: y (1, 1, K) -> a new (1, 1, N) tensor, or `out`, which may
    be `residual` itself (each program reads only the residual rows it writes)."""
    if reference or not _use_triton(y):
        r = gemv_residual_reference(y, weight, bias, residual)
        return r if out is None else out.copy_(r)
    n, k = weight.shape
    out = _out(out, n, residual)
    block_n, block_k, warps = _tile(n, k, False, config)
    _gemv_residual_kernel[(triton.cdiv(n, block_n),)](
        y, weight, bias if bias is not None else weight, residual, out, n, k,
        HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=block_k,
        EARLY=tuning.early_weight_loads, num_warps=warps, **_launch(y, tuning))
    return out


def decode_attention(qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     pos: torch.Tensor, n_head: int, *, chunk: int | None = None,
                     block: int | None = None, split_block: int | None = None,
                     num_warps: int | None = None,
                     fused_combine: bool = True,
                     scratch: DecodeScratch | None = None, out: torch.Tensor | None = None,
                     reference: bool = False, tuning: KernelTuning = DEFAULT_TUNING) -> torch.Tensor:
    """One new token's attention: writes its k, v at `pos` of the (1, H, Lmax, D) caches (in
    place), returns softmax(q·K[0..pos]ᵀ/sqrt(D))·V[0..pos] per head as (1, 1, C).

    `qkv` (1, 1, 3C) is c_attn's output (q | k | v, head h in columns h·D..(h+1)·D of each).
    Only positions <= pos are read; pos must be < Lmax (not checked: that would synchronise).
    `chunk` positions per program (default: `default_chunk(Lmax, D, its element size)`), `block`
    positions per loop step and `split_block` splits per merge step (powers of two), `num_warps`
    (default ATTENTION_WARPS); the grid is (H, ceil(Lmax / chunk)). `fused_combine=False`
    merges the splits in a second kernel instead of in the last program of each head. Without
    `scratch` a fresh one is allocated (a fill).
    """
    if reference or not _use_triton(qkv):
        y = decode_attention_reference(qkv, k_cache, v_cache, pos, n_head)
        return y if out is None else out.copy_(y)
    C = qkv.size(-1) // 3
    D = C // n_head
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("decode_attention needs caches with contiguous head dimensions")
    d_p2 = triton.next_power_of_2(D)
    chunk = chunk or default_chunk(k_cache.size(2), D, k_cache.element_size())
    block = block or min(triton.next_power_of_2(chunk), max(16, 4096 // d_p2))
    splits = triton.cdiv(k_cache.size(2), chunk)
    split_block = split_block or min(max(2, triton.next_power_of_2(splits)), max(2, 4096 // d_p2))
    num_warps = num_warps or ATTENTION_WARPS
    scratch = scratch or DecodeScratch.new(n_head, qkv.device)
    out = _out(out, C, qkv)
    acc = torch.empty((n_head, splits, d_p2), device=qkv.device, dtype=torch.float32)
    ml = torch.empty((n_head, splits, 2), device=qkv.device, dtype=torch.float32)
    _attention_kernel[(n_head, splits)](
        qkv, k_cache, v_cache, pos, acc, ml, scratch.attention_done, out, C, splits,
        k_cache.stride(1), k_cache.stride(2), v_cache.stride(1), v_cache.stride(2),
        _LOG2E / math.sqrt(D), D=D, D_P2=d_p2, CHUNK=chunk, BLOCK_L=block,
        SPLIT_BLOCK=split_block, FUSED=fused_combine, PREFETCH=tuning.attention_prefetch,
        num_warps=num_warps, **_launch(qkv, tuning))
    if not fused_combine:
        _attention_combine_kernel[(n_head,)](acc, ml, pos, out, splits, D=D, D_P2=d_p2,
                                             CHUNK=chunk, SPLIT_BLOCK=split_block,
                                             num_warps=num_warps, **_launch(qkv, tuning))
    return out


def ln_gemv_argmax(x: torch.Tensor, ln_weight: torch.Tensor | None, ln_bias: torch.Tensor | None,
                   eps: float, weight: torch.Tensor, *,
                   folded: FoldedNorm | None = None,
                   scratch: DecodeScratch | None = None,
                   finish: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                   out: torch.Tensor | None = None, config: tuple[int, int, int] | None = None,
                   blocks: int | None = None, reference: bool = False,
                   tuning: KernelTuning = DEFAULT_TUNING) -> torch.Tensor:
    """Greedy next token (1,) long: argmax over rows of weight · LayerNorm(x), logits never stored
    (LayerNorm and `folded` as in `ln_gemv`; `ln_weight` None: of weight · x). `config` overrides
    ARGMAX_TILE; `blocks` row blocks a program (default `argmax_blocks`).

    Ties go to the smallest index and a NaN logit wins (the first NaN), as in torch.argmax; the
    logits are rounded to x's dtype before the comparison, as the model's are. With
    `finish=(pos, token_buf, tokens_buf)` the kernel also does `finish` (one kernel fewer).
    Without `scratch` a fresh one is allocated (two fills).
    """
    if blocks is not None and (not isinstance(blocks, int) or blocks < 1):
        raise ValueError(f"blocks must be a positive number of row blocks a program, got {blocks!r}")
    ln = ln_weight is not None
    if ln and folded is not None and folded.bias is not None:
        raise ValueError("ln_gemv_argmax: `folded` holds a bias; the LM head it picks from has none "
                         "(fold_layer_norm(weight, None, ...))")
    if reference or not _use_triton(x):
        token = ln_gemv_argmax_reference(x, ln_weight, ln_bias, eps, weight)
        token = token if out is None else out.copy_(token)
        if finish is not None:
            finish_reference(token, *finish)
        return token
    n, k = weight.shape
    scratch = scratch or DecodeScratch.new(1, x.device)
    out = torch.empty(1, device=x.device, dtype=torch.long) if out is None else out
    pos, token_buf, tokens_buf = finish if finish is not None else (out, out, out)
    f = _folded(folded, weight, None, ln_weight, ln_bias, tuning) if ln else FoldedNorm(x, x)
    streamed, gamma = f.streamed(weight)
    block_n, block_k, warps = config or ARGMAX_TILE
    blocks = blocks if blocks is not None else argmax_blocks(n, block_n)
    _ln_gemv_argmax_kernel[(triton.cdiv(triton.cdiv(n, block_n), blocks),)](
        x, ln_weight if ln else x, streamed, f.c1, f.c2,
        scratch.argmax_key, scratch.argmax_done, out, pos, token_buf, tokens_buf,
        tokens_buf.stride(-1), n, k, float(eps), LN=ln, GAMMA=ln and gamma,
        FINISH=finish is not None, BLOCK_N=block_n, BLOCK_K=block_k, BLOCKS=blocks,
        num_warps=warps, **_launch(x, tuning))
    return out


def finish(token: torch.Tensor, pos: torch.Tensor, token_buf: torch.Tensor,
           tokens_buf: torch.Tensor, *, reference: bool = False,
           tuning: KernelTuning = DEFAULT_TUNING) -> None:
    """token_buf[0, 0] = token; tokens_buf[0, pos + 1] = token; pos += 1 (all on the device)."""
    if reference or not _use_triton(token):
        finish_reference(token, pos, token_buf, tokens_buf)
        return
    _finish_kernel[(1,)](token, pos, token_buf, tokens_buf, tokens_buf.stride(-1),
                         **_launch(token, tuning))
