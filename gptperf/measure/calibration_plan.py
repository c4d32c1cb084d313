"""What the calibration measures, planned without torch: the points of each kernel family
(matmul, attention, vector ops, AdamW, gemv), pruned by a roofline estimate so no call takes more
than `MAX_CALL_S`, the bytes each vector op's x counts, and `planned_shapes` — the list a
validation sweep must stay off (`gptperf.validate.disjoint`). `calibrate_kernels` measures them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import product
from typing import Any

from gptperf.dtypes import DTYPES, check_dtype, dtype_bytes
from gptperf.errors import UserError
from gptperf.perfmodel.calibration import (
    FUSED_ATTENTION_PASS,
    ONE_QUERY_WARM,
    attention_key,
    vector_key,
)
from gptperf.perfmodel.workload import block_shapes
from gptperf.units import GIB, KIB, MIB

# --- the points ----------------------------------------------------------------------------------

DEFAULT_DTYPES: dict[str, tuple[str, ...]] = {"cuda": ("bf16", "fp32"), "cpu": ("fp32",)}
COMPILED_DTYPE = "bf16"  # compiled host costs and recordings: the dtype compiled steps train in

# Every row count below 4 on a CPU: the library streams the weight once per row there and
# switches to a blocked matmul from 4 rows on (2 cores, 50304×384 fp32: 1, 2, 3, 4 rows took
# 12, 27, 45, 23 ms: benchmarks/cpu_calibration_gaps.py), a step that interpolating between
# 2 and 4 rows cannot see.
# From 1024 to 16384 rows the GPU's M axis steps by 1.5 and 4/3: between powers of four, fp32
# cuBLAS switches tile shapes (64×32 to 128×256), some split over K, as M grows, so a layer's time
# read between 1024, 4096 and 16384 rows missed 12 GPT widths by 6–8% (median, 1-D along M, with
# or without bias), and by 3% with these points (H200, 2026-12-02; BENCHMARKS.md). Beyond 16384
# rows every GPT layer fills the card: time grows with M (the Grid's growth).
MATMUL_M = {"cuda": (1, 4, 16, 64, 256, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384),
            "cpu": (1, 2, 3, 4, 16, 64, 256, 1024, 4096)}
# Rows measured in the quick grid too (`thin_points` keeps every other point of MATMUL_M): a CPU's
# library runs a batch-8 decode's few-row matmuls slower than both 4 and 16 rows (2 cores, Intel
# VM, fp32, weights cycled through 512 MiB, 2026-12-05: 768×3072 took 0.79, 1.05, 0.86 ms at 4, 8,
# 16 rows; 50304×768 11.0, 18.5, 14.4 ms), which reading between 4 and 16 rows cannot see.
MATMUL_M_KEPT = {"cuda": (), "cpu": (8,)}
# A CPU matmul's time is near proportional to N and K below 128 (2 cores, 800 rows: N 384, K 64,
# 96, 128 took 214, 307, 459 µs), so the CPU axes start at 32: a grid read below its first point
# takes that point's time, which charged a C 96 model's layers 1.3-1.8x what they took when the
# axes started at 128, and drawn models of width 32 (two heads of 16) 1.16-1.20x with 64.
MATMUL_N = {"cuda": (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536),
            "cpu": (32, 64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536)}
MATMUL_K = {"cuda": (128, 256, 512, 1024, 2048, 4096, 8192, 16384),
            "cpu": (32, 64, 128, 256, 512, 1024, 2048, 4096)}
MATMUL_MAX_MNK = 2**42  # beyond it a matmul is saturated: extrapolated, not measured
# What a CPU's operands are cycled through where a step reads them from memory (the matmul grid's
# pool, AdamW's cold loop): past the last-level cache. The Intel VM (300 MiB of L3, 2026-12-05)
# read gpt2's one-row decode matmuls at 49-52 GB/s through 64 MiB, 27-29 GB/s through 256 MiB
# or 1 GiB.
CPU_POOL_BYTES = 256 * MIB
# A CPU step whose tensors fit in the last-level cache finds a small matmul's weight there, where
# the grid (operands cycled through 256 MiB) reads it from memory: on the 2-core VM (32 MiB of L3)
# 6×640×160 took 83 µs cycled through 64 MiB, 35 µs through 8 MiB, 30 µs on one operand set,
# and 33–41 µs inside the decode step of a 12 MB model (2026-12-05). The grid's rows up to
# WARM_M are timed again with their operands cycled through WARM_POOL_BYTES, where their
# operands (and two copies) fit: the "<dtype>:warm" grid (`perfmodel.calibration.WARM`), read as
# far as the cache reach (below) says a step's tensors stay in the cache.
WARM_M = 16  # a decode step's rows (its batch)
WARM_POOL_BYTES = 8 * MIB
# A CPU's library runs few-row matmuls in blocks of rows: on the 2-core AMD VM (2026-12-07) a
# linear layer of 512 x 128 took 11.4-11.7 µs for 3 to 8 rows, 16.2-16.5 µs for 9 to 16 and
# 20.5 µs for 17, so a batch-9 decode read between the grid's rows 8 and 16 was charged 0.75 of
# its time. Every row up to WARM_M is timed on these layers (N, K), from the cache, and each row's
# time over its reading between the grid's rows is kept (`gptperf.measure.matmul_rows`).
MATMUL_ROW_LAYERS = ((520, 136), (776, 776))
# Inside a decode step a few-row matmul follows a LayerNorm, a GELU or an add, and there it takes
# longer than back to back: on the 2-core AMD VM (2026-12-07) 1.05-1.16x for weights of 0.2-1
# MiB, about 1.0x for 3-4 MiB (benchmarks/cpu_decode_in_context.py). Layers (N, K) of these
# sizes, off GPT widths, are timed both ways at MATMUL_IN_STEP_ROWS rows, MATMUL_IN_STEP_ROUNDS
# times, and each size's median ratio kept (`gptperf.measure.matmul_in_step`).
MATMUL_IN_STEP_LAYERS = ((392, 136), (264, 520), (1160, 200), (776, 680), (1544, 680))
MATMUL_IN_STEP_ROWS = (1, 2, 4, 8)
# From memory a step reads weights no cache holds, where the plain grid's pool holds at most 256
# copies of a layer (51 MiB of a 0.2 MiB one, past the L3 only in part): its copies fill this.
IN_STEP_MEMORY_BYTES = 128 * MIB
MATMUL_IN_STEP_ROUNDS = 5  # every probe once a round (one quick round read a 0.2 MiB layer at 0.71)
# How far the cache reaches for a step (`gptperf.measure.cache_reach`): one decode-like layer of
# few-row matmuls at C 256 (qkv-like with N rounded up to the fc's 1024, proj, fc, fc2; cells of
# the full grid), its weights cycled through 1 to 80 such layers (3.25 to 260 MiB, the grid's
# pool). The AMD VM's 32 MiB of L3 did not hold a 13 MiB decode step, and the Intel VM's 300 MiB
# held 65 MiB of weights in part (2026-12-05): the share a process gets is measured, not read
# from the cache's size.
CACHE_REACH_LAYER: tuple[tuple[int, int, int], ...] = ((2, 1024, 256), (2, 256, 256), (2, 1024, 256),
                                                       (2, 256, 1024))
CACHE_REACH_LAYERS = (1, 2, 3, 4, 5, 7, 10, 20, 40, 80)
CACHE_REACH_ROUNDS = 5  # each count once a round, the median kept (the VM's shares moved by 0.3-0.5 run to run)
# (M, N, K) off the grid's powers of two, the layers of GPT widths (384 to 4096, the vocabulary),
# timed plain and with a bias: their mean time over the grid's reading is what a matmul off the
# grid's points is charged (`matmul_offgrid`), their median bias ratio what a layer's bias costs
# (`matmul_bias`). On a CPU the layers of the small widths it trains (128 to 1536): there a bias is
# a pass over the output before the matmul accumulates into it (MKL's addmm), +15% for a
# 2048×128 -> 384 layer on the 2-core VM (2026-12-03).
MATMUL_PROBES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "cuda": tuple((m, n, k) for m in (1200, 10000) for k, n in (
        (384, 1152), (768, 768), (768, 2304), (768, 3072), (3072, 768), (1024, 4096), (4096, 1024),
        (1280, 3840), (1280, 5120), (1600, 4800), (6400, 1600), (4096, 12288), (768, 50304))),
    "cpu": tuple((1200, n, k) for k, n in (
        (128, 384), (192, 576), (384, 1152), (512, 128), (640, 160), (1536, 384)))}

# A linear layer whose output width is not 16-byte aligned in any dtype (as gpt2's 50257-token
# head is in bf16), (rows, output width, input width): its three matmuls timed on a GPU
# (`measure_unaligned`). On an H100 (2026-12-06) the LM head's at 50257 tokens ran at 95-151
# TFLOP/s, 5-8x its time at 50304 (BENCHMARKS.md, "Session 55").
UNALIGNED_LAYER = (4096, 16381, 1024)

# ONE_QUERY_WARM: a CPU's one-query pass again, the KV cache cycled through WARM_POOL_BYTES and no
# eviction: a decode step whose tensors fit in the last-level cache finds its KV cache there, where the
# one-query grid (cycled through 256 MiB) reads it from memory. On the 2-core AMD VM (32 MiB of
# L3, 2026-12-07) a step of 3 blocks, 10 × 7 heads of 16 over 298 positions, ran its sdpa in 44 µs
# a layer against the grid's 177 (its head size read at 32's), the step at 0.63 of its prediction.
ATTENTION_PASSES = ("causal_fwd", "causal_fwd_bwd", "one_query", "masked_fwd", ONE_QUERY_WARM)
ONE_QUERY_PASSES = ("one_query", ONE_QUERY_WARM)  # one query over a KV cache: axes (BH, L, D)
# The static KV cache's prefill (CUDA plans only): sdpa with the cache's (T, T) boolean mask,
# which runs another kernel than is_causal. On the H200 (2026-12-02) it took 1.0x twice the
# causal kernel's time at T <= 512 or BH = 16, and 1.27-1.35x at T 768-1024 with BH 48-128
# (bf16), where fp32's masked kernel took 0.62-0.98x.
MASKED_BH, MASKED_T = (8, 128, 512), (128, 512, 2048)
ATTENTION_BH = {"cuda": (8, 32, 128, 512), "cpu": (4, 16)}
ATTENTION_T = {"cuda": (128, 256, 512, 1024, 2048, 8192), "cpu": (32, 128, 512)}
# Head size 16 on a CPU, where drawn configurations have it (`validate.drawn`): on the 2-core AMD
# VM (2026-12-07) causal sdpa at 8 × 7 heads of 16 over 290 positions took 0.63 of head size
# 32's time (and head size 8 0.78), so a grid edge held at 32 charged a prefill 1.2x its time.
ATTENTION_D = {"cuda": (64, 128), "cpu": (16, 32, 64)}
ONE_QUERY_BH = {"cuda": (8, 32, 128, 512, 2048), "cpu": (4, 16, 64)}
ONE_QUERY_L = {"cuda": (128, 512, 2048, 8192), "cpu": (64, 256, 1024)}
# Every head size kept in a quick sweep too: a decode's head size is read at its point, never
# between two. Head size 32 on CUDA: on an H100 (session 66) one-query sdpa at D 32 took 0.76-0.90
# of D 64's time in fp32 and 0.60-0.87 in bf16 (benchmarks/gpu_one_query_head_size.py), and a fast
# fp32 decode of 17 heads of 32, charged D 64's time, read 0.85-0.86 of its prediction.
ONE_QUERY_D = {"cuda": (32, 64, 128), "cpu": (16, 32, 64)}
ATTENTION_GROWTH = {"causal_fwd": (1.0, 2.0, 1.0), "causal_fwd_bwd": (1.0, 2.0, 1.0),
                    "one_query": (1.0, 1.0, 1.0), "masked_fwd": (1.0, 2.0, 1.0),
                    ONE_QUERY_WARM: (1.0, 1.0, 1.0)}

# Vector-op sizes: the bytes each op moves (x, as VECTOR_X defines it), x4 steps from 4 KiB.
VECTOR_SIZES = {"cuda": tuple(4 * KIB * 4**i for i in range(10)),  # 4 KiB .. 1 GiB
                "cpu": tuple(4 * KIB * 4**i for i in range(9))}  # 4 KiB .. 256 MiB
VECTOR_OPS = ("add", "add_mixed", "copy", "cat", "cast_to_fp32", "cast_to_bf16",
              "cast_weight_to_bf16", "layernorm_fwd", "layernorm_bwd", "gelu_fwd", "gelu_bwd",
              "softmax_fwd", "softmax_bwd", "cross_entropy_fwd", "cross_entropy_bwd", "embedding_fwd",
              "embedding_bwd", "sum_rows")
# Ops whose input a step reads from memory, timed over distinct copies (`OperandPool`) where the
# rest reuse one buffer: autocast's cast of an fp32 weight, which on an H100 ran at about 2 TB/s in the
# eager gpt2 step against 4.7 TB/s for one 14 MB buffer cast again and again from the L2
# (BENCHMARKS.md, "Session 69").
VECTOR_COLD_OPS = ("cast_weight_to_bf16",)
VECTOR_MIN_STEP = 1.5  # a point whose x is within this factor of the last one adds nothing
ROW = 1024  # width of the layernorm, softmax and sum_rows rows
VOCAB, EMBED = 50304, 768  # cross entropy's and the embedding's table
EMBED_BWD_VOCAB = 1024  # the embedding backward's table: its zero fill is negligible
COPY_HEADS, COPY_HEAD_DIM = 16, 64  # copy: (B, 16, T, 64).transpose(1, 2).contiguous()
CAT_WIDTH = 1024  # cat: three (rows, 1024) tensors into (rows, 3072), as q, k, v's gradients
VECTOR_X = {
    "add": "3·n·e (a + b)",
    "add_mixed": "n·(4 + e + 4) (fp32 a + b of the dtype into fp32: autocast's residual add)",
    "copy": "2·n·e ((B,16,T,64).transpose(1,2).contiguous())",
    "cat": "2·n·e (torch.cat of three (rows, 1024) into (rows, 3072): the qkv split's gradient)",
    "cast_to_fp32": "n·(e_in + e_out)", "cast_to_bf16": "n·(e_in + e_out)",
    "cast_weight_to_bf16": "n·(4 + 2) (an fp32 weight's cast, read from memory)",
    "layernorm_fwd": "2·n·e (rows of 1024, weight and bias)",
    "layernorm_bwd": "3·n·e (native_layer_norm_backward, all three grads)",
    "gelu_fwd": "2·n·e (tanh)", "gelu_bwd": "3·n·e (gelu_backward, tanh)",
    "softmax_fwd": "2·n·e (rows of 1024)", "softmax_bwd": "3·n·e (_softmax_backward_data)",
    "cross_entropy_fwd": "n_logits·e (rows of 50304)",
    "cross_entropy_bwd": "2·n_logits·e (nll_loss_backward + _log_softmax_backward_data)",
    "embedding_fwd": "2·rows·768·e (table 50304×768)",
    "embedding_bwd": "rows·768·e (embedding_dense_backward into a 1024-row table)",
    "sum_rows": "n·e (y.sum(0) over rows of 1024)",
}

# AdamW over GPT-block-shaped fp32 parameters on a GPU: (width C, blocks), 12C² + 13C parameters
# a block, spread over each count of OPTIMIZER_TENSORS (its multi-tensor kernels).
OPTIMIZER_BLOCKS = {
    "cuda": ((128, 1), (256, 1), (512, 1), (512, 4), (1024, 4), (1024, 16), (2048, 16), (2048, 40)),
}
OPTIMIZER_BYTES_PER_PARAM = 24  # param, grad, m, v and the foreach temporaries (fp32)
# A CPU's AdamW is torch's per-tensor loop: a step costs the sum of its tensors' steps, and a
# tensor's depends on its own size (ten passes over it: from the cache while it fits, from memory
# beyond). The loop is timed per tensor at these sizes (parameters). On the 2-core VM a grid of
# equal tensors charged AdamW in mini-v8k's step (one 3.07M-parameter embedding) 0.81× its time,
# in a step with an 8.2M-parameter embedding 0.68×; the loop 1.01× and 0.93× (2026-12-05,
# benchmarks/cpu_optimizer_loop.py).
OPTIMIZER_LOOP_SIZES = tuple(256 * 4**i for i in range(9))  # 256 (a LayerNorm's) .. 16.8M
OPTIMIZER_LOOP_PARAMS = 2**20  # a point steps this many parameters in all (1 to 64 tensors)
# The loop again with its tensors in memory (`adamw_loop_cold`): each call steps another copy of
# the point's tensors, cycled through this much (or OPTIMIZER_COLD_COPIES copies). A step whose
# tensors outgrow the cache finds each one in memory, where the loop repeated on one set finds it
# in the cache: on the 2-core Intel VM (300 MiB of L3) a 1M-parameter tensor took 1.27 ms on one
# set, 1.97 ms cycled, and gpt2's AdamW inside its train step 225 ms against 167 on the warm loop
# (2026-12-05).
OPTIMIZER_COLD_POOL_BYTES = CPU_POOL_BYTES
OPTIMIZER_COLD_COPIES = 32
OPTIMIZER_STATE_BYTES = 16  # a copy keeps param, grad, m and v (fp32)
# Parameter tensors an AdamW step is measured over on a GPU, at each of those parameter counts: a
# step's cost per tensor (the fused kernel's chunking) is as real as its cost per byte (a 12-layer
# GPT has 148 tensors, gpt2-xl 580: the grid grows linearly beyond its last count, which charged
# gpt2-xl's step 21% more than 480 tensors' where the time no longer grows).
OPTIMIZER_TENSORS = {"cuda": (12, 96, 960)}

GEMV_SIZES = tuple(256 * KIB * 4**i for i in range(7))  # weight bytes 256 KiB .. 1 GiB
# The LM head's argmax kernel, (N, K) of its weight: two small heads, then GPT-2's padded
# vocabulary at widths 64 .. 7168 (the kernel's time follows its programs, N rows in tiles, not
# only its bytes, so the points keep the vocabulary-wide shape the step has; no width is a
# preset's or the validation's, so no LM head there is a point measured here)
ARGMAX_SHAPES = ((2048, 128), (8192, 128)) + tuple(
    (50304, k) for k in (64, 128, 256, 512, 896, 1792, 3584, 7168))
ARGMAX_MAX_BYTES = GIB  # a larger fp32 head is extrapolated
# dtypes the one-row kernels are not measured in (tf32 is fp32 in memory; fp64 has no kernel)
GEMV_SKIPPED_DTYPES = ("tf32", "fp64")

# --- timing figures (calibrate_kernels times with them) ----------------------------------------

TARGET_REPLAY_S = 1e-3  # one CUDA-graph replay of R calls (1 ms: launch costs under 0.5%)
# Two timed replays, not three: every bf16 matmul cell read the same (median ratio 1.0005 and 0.9998
# in two rounds, no drift from 1 µs to 3 ms calls; the cells' spread 3.8-4.3% at p90, where three
# replays read again spread 4.8%) and the family took 6.0 s, not 7.1 (H200, 2026-12-03,
# benchmarks/gpu_calibration_cost.py, then --timers torch replays2; now torch replays3)
REPLAYS = 2
CPU_POINT_S = {False: 0.02, True: 0.008}  # timed seconds per CPU point (quick: True)
CPU_MIN_REPEATS, CPU_MAX_REPEATS = 3, 15
CPU_SAMPLE_S = 2e-4  # calls per CPU sample so one sample lasts at least this

# --- the cost model that prunes the points (a roofline; no torch) --------------------------------

PEAK_FLOPS = {"cuda": {"bf16": 700e12, "fp16": 700e12, "tf32": 350e12, "fp32": 50e12, "fp64": 50e12},
              "cpu": {"bf16": 100e9, "fp16": 100e9, "tf32": 100e9, "fp32": 100e9, "fp64": 50e9}}
BANDWIDTH = {"cuda": 4e12, "cpu": 10e9}
CALL_FLOOR_S = {"cuda": 3e-6, "cpu": 5e-6}
# the longest call measured (longer ones are extrapolated); CPU: the 35 s budget of a 2-core CPU
MAX_CALL_S = {"cuda": 0.03, "cpu": 0.012}

# The fused decode step measured whole: synthetic models of these widths (batch 1, a cache of
# FUSED_STEP_CONTEXT positions), each layer kernel's time inside the captured step read by the
# profiler. Chained after itself a kernel runs up to 25% off its time among the step's other
# kernels (H200, 2026-12-02: the 7B shape's attn.proj 13.3 µs chained, 10.6 in its step). No
# width is a preset's or a validation config's (a test checks it); heads of 64 below 2048, 128
# from there; enough layers that a step streams FUSED_STEP_BYTES of weights (HBM, not L2). 3584:
# a kernel's speed follows its grid's fill of the card, not its bytes alone, and the kernels at
# 2816 fill a wave far less than those at 3584-4096: the 7B shape's step, measured over predicted,
# was 0.995 and 1.016 with 3584, 0.961 and 0.979 without (H200; BENCHMARKS.md, "The master update
# in one kernel").
FUSED_STEP_WIDTHS = (512, 1152, 1920, 2816, 3584, 5120, 8192)
FUSED_STEP_CONTEXT = 256
FUSED_STEP_VOCAB = 512
FUSED_STEP_BYTES = 256 * MIB


def fused_step_models(dtype: str, quick: bool) -> list[tuple[int, int, int]]:
    """(n_embd, n_head, n_layer) of the synthetic fused decode steps the calibration profiles."""
    e = dtype_bytes(dtype)
    out = []
    for c in thin_points(FUSED_STEP_WIDTHS, quick):
        head_dim = 64 if c < 2048 else 128
        layers = min(48, max(3, math.ceil(FUSED_STEP_BYTES / (12 * c * c * e))))
        out.append((c, c // head_dim, layers))
    return out


# ==================================================================================================
# The plan (pure Python)


def _default_dtypes(device_type: str) -> tuple[str, ...]:
    return DEFAULT_DTYPES["cuda" if device_type == "cuda" else "cpu"]


def _kind(device_type: str) -> str:
    if device_type not in ("cpu", "cuda"):
        raise UserError(f"unknown device type {device_type!r}; valid: cpu, cuda")
    return device_type


def thin_points(points: Sequence[Any], quick: bool, from_top: bool = False) -> tuple[Any, ...]:
    """Quick mode: every other point, the largest always kept (and the smallest, unless
    `from_top`: counted down from the largest, for curves whose large points cost the most)."""
    if not quick:
        return tuple(points)
    if from_top:
        return tuple(points[::-2][::-1])
    kept = list(points[::2])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return tuple(kept)


def _estimate_s(device_type: str, dtype: str, flops: float, nbytes: float) -> float:
    """A roofline guess of one call (an optimistic one: it only prunes)."""
    return (CALL_FLOOR_S[device_type] + max(flops / PEAK_FLOPS[device_type][dtype],
                                            nbytes / BANDWIDTH[device_type]))


def matmul_bytes(dtype: str, m: int, n: int, k: int) -> int:
    """Bytes of x, W and y of y = x·Wᵀ (what the call reads and writes)."""
    return (m * k + n * k + m * n) * dtype_bytes(dtype)


def attention_bytes(dtype: str, pass_: str, bh: int, t: int, d: int) -> int:
    """Bytes one attention call of `pass_` holds, reads and writes: q, k, v and the output of `t`
    positions (and their gradients with the backward; flash and memory-efficient kernels keep no
    T×T scores); a one-query call's k and v span the `t` cached positions, its q and output one;
    the masked pass reads its T×T mask too."""
    e = dtype_bytes(dtype)
    if pass_ in ONE_QUERY_PASSES:
        return (2 * bh * t * d + 2 * bh * d) * e
    if pass_ == "masked_fwd":
        return 4 * bh * t * d * e + t * t
    return (4 if pass_ == "causal_fwd" else 8) * bh * t * d * e


def _matmul_cost(device_type: str, dtype: str, m: int, n: int, k: int) -> tuple[float, int]:
    """(estimated seconds, bytes of x, W and y) of y = x·Wᵀ."""
    nbytes = matmul_bytes(dtype, m, n, k)
    return _estimate_s(device_type, dtype, 2 * m * n * k, nbytes), nbytes


def _attention_cost(device_type: str, dtype: str, pass_: str, bh: int, t: int, d: int) -> tuple[float, int]:
    """(estimated seconds, bytes held: `attention_bytes`) of one attention call of `pass_`."""
    nbytes = attention_bytes(dtype, pass_, bh, t, d)
    if pass_ in ONE_QUERY_PASSES:
        return _estimate_s(device_type, dtype, 4 * bh * t * d, nbytes), nbytes
    flops = 2 * bh * t * t * d  # QKᵀ and PV, 2·T²·D each, half of them under the causal mask
    if pass_ == "masked_fwd":  # every score computed, then masked
        return _estimate_s(device_type, dtype, 2 * flops, nbytes), nbytes
    if pass_ == "causal_fwd_bwd":
        flops *= 3.5  # the backward recomputes the scores: 5 matmuls to the forward's 2
    return _estimate_s(device_type, dtype, flops, nbytes), nbytes


def _fits(nbytes: int, memory_bytes: int | None) -> bool:
    return memory_bytes is None or nbytes <= memory_bytes // 4


def matmul_axes(device_type: str, quick: bool) -> tuple[tuple[int, ...], ...]:
    rows = tuple(sorted({*thin_points(MATMUL_M[device_type], quick), *MATMUL_M_KEPT[device_type]}))
    return rows, thin_points(MATMUL_N[device_type], quick), thin_points(MATMUL_K[device_type], quick)


def matmul_cells(device_type: str, dtype: str, quick: bool,
                  memory_bytes: int | None) -> list[tuple[int, int, int]]:
    """The (M, N, K) measured, in grid order: estimated under MAX_CALL_S, M·N·K at most
    MATMUL_MAX_MNK, fitting in memory; the smallest cell always."""
    axes = matmul_axes(device_type, quick)
    cells = []
    for m, n, k in product(*axes):
        seconds, nbytes = _matmul_cost(device_type, dtype, m, n, k)
        smallest = (m, n, k) == tuple(a[0] for a in axes)
        if smallest or (seconds <= MAX_CALL_S[device_type] and m * n * k <= MATMUL_MAX_MNK
                        and _fits(nbytes, memory_bytes)):
            cells.append((m, n, k))
    return cells


def warm_matmul_cells(dtype: str, quick: bool) -> list[tuple[int, int, int]]:
    """The CPU grid's cells of at most WARM_M rows whose operands (x, W, y) fit twice in
    WARM_POOL_BYTES, in grid order: timed again from the cache."""
    e = dtype_bytes(dtype)
    M, N, K = matmul_axes("cpu", quick)
    return [(m, n, k) for m, n, k in product(M, N, K)
            if m <= WARM_M and 2 * e * (m * k + n * k + m * n) <= WARM_POOL_BYTES]


def matmul_row_cells() -> list[tuple[int, int, int]]:
    """(M, N, K) of a CPU's row probes: every row up to WARM_M on each of MATMUL_ROW_LAYERS."""
    return [(m, n, k) for n, k in MATMUL_ROW_LAYERS for m in range(1, WARM_M + 1)]


def matmul_in_step_cells() -> list[tuple[int, int, int]]:
    """(M, N, K) of a CPU's in-step probes: MATMUL_IN_STEP_ROWS on each of MATMUL_IN_STEP_LAYERS."""
    return [(m, n, k) for n, k in MATMUL_IN_STEP_LAYERS for m in MATMUL_IN_STEP_ROWS]


def matmul_probe_shapes(device_type: str) -> list[tuple[int, int, int]]:
    """The off-grid probes every dtype measures (`MATMUL_PROBES`)."""
    return list(MATMUL_PROBES[device_type])


# The fused decode step's attention kernel (`steps.decode_kernels.decode_attention`, batch 1: BH
# is the heads), on a GPU with Triton: heads × cache length (its last position the new token's) × D,
# its key "<dtype>:" + FUSED_ATTENTION_PASS.
# (benchmarks/gpu_fused_attention_grid.py, H200: with 16 heads and L = 1024 on the axes this grid
# reads gpt2's, gpt2-large's and the 7B shape's cells within 2.6% of their direct time; without,
# 6-12% over)
FUSED_ATTENTION_AXES = ((8, 16, 32, 128), (128, 512, 1024, 2048, 8192), (64, 128))
# Each (L, D) compiles its own kernel (chunk and merge width follow L): measured where the fused
# step runs in practice; fp32 is charged as bf16 at twice the length
# (`expected.wide_fused_attention`).
FUSED_ATTENTION_DTYPES = ("bf16", "fp16")


def fused_attention_axes(quick: bool) -> tuple[tuple[int, ...], ...]:
    """The fused decode attention grid's axes (quick: thinned as the others)."""
    return tuple(thin_points(a, quick) for a in FUSED_ATTENTION_AXES)


def attention_passes(device_type: str) -> tuple[str, ...]:
    """The attention passes measured on `device_type`: the masked one only where the static KV
    cache runs (a GPU), the one-query pass from the cache only where a step's tensors are read
    toward their timing from the cache (a CPU)."""
    only = {"masked_fwd": "cuda", ONE_QUERY_WARM: "cpu"}
    return tuple(p for p in ATTENTION_PASSES if only.get(p, _kind(device_type)) == _kind(device_type))


def attention_axes(device_type: str, pass_: str, quick: bool) -> tuple[tuple[int, ...], ...]:
    if pass_ == "masked_fwd":
        return thin_points(MASKED_BH, quick), thin_points(MASKED_T, quick), thin_points(ATTENTION_D[device_type], quick)
    if pass_ in ONE_QUERY_PASSES:
        return (thin_points(ONE_QUERY_BH[device_type], quick), thin_points(ONE_QUERY_L[device_type], quick),
                ONE_QUERY_D[device_type])
    # a CPU's quick sweep keeps every length and head size: its causal pass bends between 32 and
    # 512, so 32 and 512 alone over-read 128 (2x the tiny forward's sdpa while short calls were
    # evicted too, 2026-12-03), and bends with the head size; the cells cost little there
    thin = quick and device_type == "cuda"
    return (thin_points(ATTENTION_BH[device_type], quick), thin_points(ATTENTION_T[device_type], thin),
            thin_points(ATTENTION_D[device_type], thin))


def attention_cells(device_type: str, dtype: str, pass_: str, quick: bool,
                     memory_bytes: int | None) -> list[tuple[int, int, int]]:
    axes = attention_axes(device_type, pass_, quick)
    cells = []
    for bh, t, d in product(*axes):
        seconds, nbytes = _attention_cost(device_type, dtype, pass_, bh, t, d)
        smallest = (bh, t, d) == tuple(a[0] for a in axes)
        if smallest or (seconds <= MAX_CALL_S[device_type] and _fits(nbytes, memory_bytes)):
            cells.append((bh, t, d))
    return cells


def vector_ops(device_type: str, dtype: str) -> list[str]:
    """The ops measured in `dtype` (a cast to the dtype itself is no kernel; a weight's cast is of
    an fp32 weight, and on a GPU alone: a CPU's timer already reads every call of a megabyte or
    more from memory, `kernel_timer.CPU_EVICT_MIN_BYTES`)."""
    return [op for op in VECTOR_OPS
            if not (op in ("cast_to_fp32", "add_mixed") and dtype in ("fp32", "tf32"))
            and not (op == "cast_to_bf16" and dtype == "bf16")
            and not (op in VECTOR_COLD_OPS and (dtype != "fp32" or device_type != "cuda"))]


def _vector_shape(op: str, dtype: str, target: int) -> tuple[dict[str, int], int]:
    """(shape, x): the shape of `op` moving about `target` bytes, and the bytes x it moves by
    VECTOR_X. Sizes round down to whole rows (at least one, or two for copy's transpose)."""
    e = dtype_bytes(dtype)
    if op == "add":
        n = max(1, target // (3 * e))
        return {"n": n}, 3 * n * e
    if op == "add_mixed":
        n = max(1, target // (8 + e))
        return {"n": n}, n * (8 + e)
    if op == "copy":
        t = max(2, target // (2 * e * COPY_HEADS * COPY_HEAD_DIM))  # T = 1 would be no copy at all
        return {"b": 1, "t": t}, 2 * COPY_HEADS * t * COPY_HEAD_DIM * e
    if op == "cat":
        rows = max(1, target // (2 * 3 * CAT_WIDTH * e))
        return {"rows": rows}, 2 * 3 * rows * CAT_WIDTH * e
    if op in ("cast_to_fp32", "cast_to_bf16", "cast_weight_to_bf16"):
        e_out = 4 if op == "cast_to_fp32" else 2
        n = max(1, target // (e + e_out))
        return {"n": n}, n * (e + e_out)
    if op in ("layernorm_fwd", "softmax_fwd", "layernorm_bwd", "softmax_bwd", "sum_rows"):
        factor = 3 if op.endswith("_bwd") else 1 if op == "sum_rows" else 2
        rows = max(1, target // (factor * ROW * e))
        return {"rows": rows}, factor * rows * ROW * e
    if op in ("gelu_fwd", "gelu_bwd"):
        factor = 3 if op == "gelu_bwd" else 2
        n = max(1, target // (factor * e))
        return {"n": n}, factor * n * e
    if op in ("cross_entropy_fwd", "cross_entropy_bwd"):
        factor = 2 if op == "cross_entropy_bwd" else 1
        rows = max(1, target // (factor * VOCAB * e))
        return {"rows": rows}, factor * rows * VOCAB * e
    if op in ("embedding_fwd", "embedding_bwd"):
        factor = 2 if op == "embedding_fwd" else 1
        rows = max(1, target // (factor * EMBED * e))
        x = factor * rows * EMBED * e
        return {"rows": rows}, x
    raise UserError(f"unknown vector op {op!r}; valid: {', '.join(VECTOR_OPS)}")


def vector_points(device_type: str, dtype: str, op: str, quick: bool) -> list[tuple[dict[str, int], int]]:
    """[(shape, x)] of `op`, x growing by VECTOR_MIN_STEP at least from point to point (sizes
    that round to the same shape are one point), the largest size always kept."""
    points: list[tuple[dict[str, int], int]] = []
    for target in thin_points(VECTOR_SIZES[device_type], quick, from_top=True):
        point = _vector_shape(op, dtype, target)
        if not points or point[1] >= VECTOR_MIN_STEP * points[-1][1]:
            points.append(point)
        elif target == VECTOR_SIZES[device_type][-1] and point[1] > points[-1][1]:
            points[-1 if len(points) > 1 else len(points):] = [point]
    return points


def _optimizer_blocks(device_type: str, quick: bool) -> tuple[tuple[int, int], ...]:
    return thin_points(OPTIMIZER_BLOCKS[device_type], quick, from_top=True)


def optimizer_axes(device_type: str, quick: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(tensor counts, parameter counts) of the optimizer grid: the parameters of the GPT blocks
    in OPTIMIZER_BLOCKS, each spread over every count of OPTIMIZER_TENSORS."""
    params = tuple(optimizer_params(w, n) for w, n in _optimizer_blocks(device_type, quick))
    return thin_points(OPTIMIZER_TENSORS[device_type], quick), params


def optimizer_loop_sizes(quick: bool) -> tuple[int, ...]:
    """Tensor sizes (parameters) of the CPU's per-tensor AdamW loop (quick: every other one,
    counted from the largest)."""
    return thin_points(OPTIMIZER_LOOP_SIZES, quick, from_top=True)


def optimizer_loop_tensors(size: int) -> int:
    """Equal tensors of `size` parameters a loop point steps: OPTIMIZER_LOOP_PARAMS in all, 1 to 64
    (the step's own fixed cost shared by as many tensors as a small model has)."""
    return max(1, min(64, OPTIMIZER_LOOP_PARAMS // size))


def optimizer_cold_copies(size: int) -> int:
    """Copies of a loop point's tensors that its cold timing cycles through: OPTIMIZER_COLD_POOL_BYTES
    of their state, at most OPTIMIZER_COLD_COPIES (the smallest points' pools stay smaller: there
    a tensor's fixed costs outweigh its bytes)."""
    state = OPTIMIZER_STATE_BYTES * size * optimizer_loop_tensors(size)
    return min(OPTIMIZER_COLD_COPIES, max(1, math.ceil(OPTIMIZER_COLD_POOL_BYTES / state)))


def optimizer_params(width: int, blocks: int) -> int:
    """Parameters of `blocks` GPT blocks of width C: 12C² + 13C each."""
    return blocks * sum(math.prod(s) for s in block_shapes(width))


def argmax_shapes(dtype: str, quick: bool) -> tuple[tuple[int, int], ...]:
    """(N, K) of the LM head argmax kernel's points in `dtype` (ARGMAX_SHAPES up to
    ARGMAX_MAX_BYTES; quick: every other one, the last kept)."""
    fit = tuple(s for s in ARGMAX_SHAPES if s[0] * s[1] * dtype_bytes(dtype) <= ARGMAX_MAX_BYTES)
    return thin_points(fit, quick)


def gemv_shape(weight_bytes: int, esize: int) -> tuple[int, int]:
    """(N, K) of a square-ish weight of about `weight_bytes`, both multiples of 64."""
    k = max(64, round(math.sqrt(weight_bytes / esize) / 64) * 64)
    n = max(64, round(weight_bytes / esize / k / 64) * 64)
    return n, k


def check_dtypes(dtypes: Iterable[str], device_type: str | None = None) -> tuple[str, ...]:
    """`dtypes` as a tuple, each a format of `gptperf.dtypes`, at least one, and, where
    `device_type` is given, each one that runs there (fp16 needs a GPU); else a one-line
    UserError naming the bad value and the valid ones."""
    gpu_only = device_type is not None and device_type != "cuda"
    valid = ", ".join(d for d in DTYPES if not (gpu_only and d == "fp16"))
    out = tuple(check_dtype(d) for d in dtypes)
    if not out:
        raise UserError(f"no dtypes to calibrate; valid{f' on {device_type}' if gpu_only else ''}: {valid}")
    if gpu_only and "fp16" in out:
        raise UserError(f"dtype 'fp16' needs a GPU; valid on {device_type}: {valid}")
    return out


def planned_shapes(device_type: str, quick: bool = False, *, dtypes: Sequence[str] | None = None,
                   memory_bytes: int | None = None) -> dict[str, list]:
    """The shapes the kernel sweep measures on `device_type` ("cpu" | "cuda"), in the format of
    `Calibration.shapes`: "matmul": [[M, N, K], ...] (each once over the dtypes), "attention":
    [["<dtype>:<pass>", BH, T or L, D], ...], "vector": [["<op>:<dtype>", x], ...]. `dtypes`
    default: DEFAULT_DTYPES; `memory_bytes`: the device's memory (None: no shape is too big)."""
    kind = _kind(device_type)
    dtypes = check_dtypes(dtypes if dtypes is not None else _default_dtypes(kind))
    matmul: list[list[int]] = []
    seen: set[tuple[int, int, int]] = set()
    for dtype in dtypes:
        for cell in matmul_cells(kind, dtype, quick, memory_bytes) + matmul_probe_shapes(kind) + (
                list(CACHE_REACH_LAYER) + matmul_row_cells() + matmul_in_step_cells()
                if kind == "cpu" else [UNALIGNED_LAYER]):
            if cell not in seen:
                seen.add(cell)
                matmul.append(list(cell))
    attention = [[attention_key(dtype, pass_), *cell] for dtype in dtypes for pass_ in attention_passes(kind)
                 for cell in attention_cells(kind, dtype, pass_, quick, memory_bytes)]
    if kind == "cuda":  # measured where Triton is; planned (and kept off by a validation) always
        attention += [[attention_key(dtype, FUSED_ATTENTION_PASS), *cell] for dtype in dtypes
                      if dtype in FUSED_ATTENTION_DTYPES for cell in product(*fused_attention_axes(quick))]
    vector = [[vector_key(op, dtype), x] for dtype in vector_dtypes(dtypes) for op in vector_ops(kind, dtype)
              for _, x in vector_points(kind, dtype, op, quick)]
    return {"matmul": matmul, "attention": attention, "vector": vector}


def vector_dtypes(dtypes: Sequence[str]) -> list[str]:
    """tf32 is fp32 in memory: its vector ops are fp32's."""
    return [d for d in dtypes if d != "tf32"]
