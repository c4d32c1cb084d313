"""The calibration's kernel micro-benchmarks: seconds per call of the matmuls, attention, vector
ops, AdamW and the batch-1 gemv a GPT step runs, over the sizes the calibration's design lists,
returned as `perfmodel.calibration` Grids and Curves for `gptperf.measure.calibrate` to keep
(gptperf's own decode kernels are measured in `calibrate_decode` and AdamW in
`calibrate_optimizer`, and kept here with the rest).

Every time is the device time of one call among back-to-back calls, as
`gptperf.measure.kernel_timer` times it (a CUDA graph on a GPU, a timed loop on a CPU); on a CPU
every point is measured in two passes over the whole plan, merged (`merge_passes`), since a
stall of seconds can hold up every call of the points it spans. Inputs a step reads from memory
rather than from the cache — a layer's weights (matmul, gemv, autocast's cast of a weight) and
its KV cache (one-query attention) — are cycled over distinct copies (`OperandPool`); activations
(the other vector ops, causal attention) are the same buffers every call, as a step's freshly
written activations are.

What is measured is planned without torch (`planned_shapes`): the points of each family are
pruned by a roofline estimate (`PEAK_FLOPS`, `BANDWIDTH`) so no call takes more than
`MAX_CALL_S`; a Grid cell left out is extrapolated from the largest measured cell below it by the
Grid's growth exponents (where the kernels are saturated), and is not listed as measured.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from itertools import product
from typing import Any

import torch
import torch.nn.functional as F

from gptperf.dtypes import check_dtype
from gptperf.errors import UserError
from gptperf.measure.cache_reach import measure_cache_reach, reach_note
from gptperf.measure.calibrate_decode import measure_decode_families
from gptperf.measure.calibrate_optimizer import measure_optimizer
from gptperf.measure.calibration_passes import (
    CPU_PASSES,
    CPU_RETRY_S,
    FORK_READ_S,
    PASS_DISAGREE,
    Shape,
    combine_passes,
    passes_out_of_spells,
    probes_of_passes,
    retry_spells,
)
from gptperf.measure.calibration_plan import (  # noqa: F401 - the plan, re-exported beside its measurement
    ATTENTION_GROWTH,
    ATTENTION_PASSES,
    CACHE_REACH_LAYER,
    CAT_WIDTH,
    COPY_HEAD_DIM,
    COPY_HEADS,
    CPU_MAX_REPEATS,
    CPU_MIN_REPEATS,
    CPU_POINT_S,
    EMBED,
    EMBED_BWD_VOCAB,
    GIB,
    KIB,
    MIB,
    ONE_QUERY_PASSES,
    ONE_QUERY_WARM,
    REPLAYS,
    ROW,
    TARGET_REPLAY_S,
    UNALIGNED_LAYER,
    VECTOR_COLD_OPS,
    VECTOR_OPS,
    VECTOR_X,
    VOCAB,
    WARM_M,
    WARM_POOL_BYTES,
    attention_axes,
    attention_bytes,
    attention_cells,
    attention_passes,
    block_shapes,
    check_dtypes,
    matmul_axes,
    matmul_bytes,
    matmul_cells,
    matmul_in_step_cells,
    matmul_probe_shapes,
    matmul_row_cells,
    optimizer_params,
    thin_points,
    vector_dtypes,
    vector_ops,
    vector_points,
    warm_matmul_cells,
)
from gptperf.measure.calibration_tables import fill_grid, grid_note, report
from gptperf.measure.gpu_lock import NO_LOCK, GpuLock
from gptperf.measure.kernel_timer import (
    POOL_BYTES,
    Call,
    KernelTimer,
    MatmulPrecision,
    OperandPool,
    linear_call,
    random_tensor,
)
from gptperf.measure.matmul_in_step import in_step_note, measure_matmul_in_step
from gptperf.measure.matmul_rows import measure_matmul_rows, rows_note
from gptperf.measure.probe import fork_op_s
from gptperf.measure.timer import Progress
from gptperf.perfmodel.calibration import (
    UNALIGNED_ORIENTATIONS,
    WARM,
    attention_key,
    matmul_warm_key,
    unaligned_rates_text,
    vector_key,
)
from gptperf.perfmodel.curves import Curve, Grid
from gptperf.runtime import TORCH_DTYPES, as_device


def _memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return None  # the CPU points are small beside any machine's memory


# ==================================================================================================
# The families


def measure_matmul(device: torch.device | str, dtype: str, quick: bool = False,
                   progress: Progress | None = None, timer: KernelTimer | None = None,
                   record: list | None = None,
                   probes: dict[str, list[tuple[Shape, float]]] | None = None,
                   biased: dict[str, list[float]] | None = None) -> Grid:
    """Grid over (M, N, K) of y = F.linear(x, W), x M×K, W N×K, no bias (seconds per call), each
    cell timed by `timer` (default: a KernelTimer of its own) and added to `record`; with
    `probes`, the off-grid `MATMUL_PROBES` too, as probes[dtype]; with `biased` as well, each
    probe again with a bias, its time over the plain one in biased[dtype]."""
    device, dtype = as_device(device), check_dtype(dtype)
    timer = KernelTimer(device, quick) if timer is None else timer
    kind = device.type
    tdtype = TORCH_DTYPES[dtype]
    axes = matmul_axes(kind, quick)
    cells = matmul_cells(kind, dtype, quick, _memory_bytes(device))
    off_grid = matmul_probe_shapes(kind) if probes is not None else []
    total = len(cells) + len(off_grid)
    pool = OperandPool(device, tdtype)

    def seconds(m: int, n: int, k: int, bias: bool = False) -> float:
        if record is not None and not bias:
            record.append([m, n, k])
        return timer(linear_call(pool, m, n, k, bias),
                     f"matmul {dtype} {m}×{n}×{k}{' with bias' if bias else ''}",
                     nbytes=matmul_bytes(dtype, m, n, k))

    measured: dict[tuple[int, ...], float] = {}
    with MatmulPrecision(dtype):
        for i, cell in enumerate(cells):
            measured[cell] = seconds(*cell)
            report(progress, f"matmul {dtype}", i + 1, total)
        for i, cell in enumerate(off_grid):
            assert probes is not None  # off_grid is empty without it
            plain = seconds(*cell)
            probes.setdefault(dtype, []).append((cell, plain))
            if biased is not None:
                biased.setdefault(dtype, []).append(seconds(*cell, bias=True) / plain)
            report(progress, f"matmul {dtype}", len(cells) + i + 1, total)
    return Grid(("M", "N", "K"), axes, tuple(fill_grid(axes, measured, (1, 1, 1))), (1, 1, 1),
                what=f"s per y = F.linear(x, W), x M×K, W N×K, {dtype}, no bias; distinct "
                     f"operands cycled over {POOL_BYTES[kind] // MIB} MiB; "
                     + grid_note(axes, len(measured)))


def measure_unaligned(device: torch.device | str, dtype: str, timer: KernelTimer | None = None,
                      record: list | None = None, layer: Shape = UNALIGNED_LAYER) -> dict[str, float]:
    """A linear layer of `layer` = (rows, output width, input width), its output width not
    16-byte aligned: {"fwd", "dgrad", "wgrad": FLOP/s of y = x·Wᵀ, dX = dY·W, dW = dYᵀ·X, each
    timed by `timer` over distinct operands; "m", "n", "k": the layer}. cuBLAS runs such rows on
    kernels that do not load 16 bytes at a time, whose rate the grid's aligned shapes do not show."""
    device, dtype = as_device(device), check_dtype(dtype)
    timer = KernelTimer(device, quick=False) if timer is None else timer
    m, n, k = layer
    pool = OperandPool(device, TORCH_DTYPES[dtype])
    operands = {"fwd": [(m, k), (n, k)], "dgrad": [(m, n), (n, k)], "wgrad": [(m, n), (m, k)]}
    products = {"fwd": lambda x, w: F.linear(x, w), "dgrad": lambda g, w: g @ w,
                "wgrad": lambda g, x: g.t() @ x}
    rates: dict[str, float] = {"m": float(m), "n": float(n), "k": float(k)}
    with MatmulPrecision(dtype):
        for orientation in UNALIGNED_ORIENTATIONS:
            sets = pool.copies(operands[orientation])
            product_of = products[orientation]

            def call(j: int, sets: list = sets, product_of: Any = product_of) -> torch.Tensor:
                return product_of(*sets[j % len(sets)])

            seconds = timer(call, f"matmul {dtype} {m}×{n}×{k} unaligned, {orientation}",
                            nbytes=matmul_bytes(dtype, m, n, k))
            rates[orientation] = 2.0 * m * n * k / seconds
    if record is not None:
        record.append([m, n, k])
    return rates


def unaligned_note(dtype: str, rates: dict[str, float]) -> str:
    """What `measure_unaligned` measured, in one line."""
    return (f"matmul {dtype}: a layer whose rows are not 16-byte aligned ({rates['m']:.0f} rows, "
            f"{rates['k']:.0f} → {rates['n']:.0f}) runs at {unaligned_rates_text(rates)}")


def _measure_matmul_warm(device: torch.device, dtype: str, quick: bool, progress: Progress | None,
                         timer: KernelTimer, grid: Grid) -> Grid:
    """The CPU grid's rows up to WARM_M again, operands cycled through WARM_POOL_BYTES (in the
    last-level cache) and no eviction: `grid`'s axes up to those rows. A cell whose operands do
    not fit (`warm_matmul_cells`) is extrapolated from the measured cells below it at their speed
    (growth 1 on every axis), at most `grid`'s time: it is read for a step only as far as the
    step's tensors stay in the cache (`Calibration.warm_share`), and there a weight of 6 MB ran
    at the speed of those of 2 MB (the 2-core AMD VM, 2026-12-07: a batch-1 decode's LM head of
    8000 × 192, 52 GB/s in its step, where the grid's reading from memory charged it 4×)."""
    tdtype = TORCH_DTYPES[dtype]
    cells = warm_matmul_cells(dtype, quick)
    pool = OperandPool(device, tdtype, WARM_POOL_BYTES)
    measured: dict[tuple[int, ...], float] = {}
    with MatmulPrecision(dtype):
        for i, (m, n, k) in enumerate(cells):
            measured[(m, n, k)] = timer(linear_call(pool, m, n, k), f"matmul {dtype} {m}×{n}×{k} from the cache")
            report(progress, f"matmul {dtype} from the cache", i + 1, len(cells))
    rows = tuple(m for m in grid.points[0] if m <= WARM_M)
    axes = tuple(tuple(int(x) for x in a) for a in (rows, *grid.points[1:]))
    filled = fill_grid(axes, measured, (1, 1, 1)) if measured else [math.inf] * math.prod(map(len, axes))
    seconds = tuple(min(t, grid.at(*cell)) for t, cell in zip(filled, product(*axes), strict=True))
    return Grid(("M", "N", "K"), axes, seconds, (1, 1, 1), what=(
        f"s per y = F.linear(x, W), x M×K, W N×K, {dtype}, no bias; operands cycled through "
        f"{WARM_POOL_BYTES // MIB} MiB (in the last-level cache); {len(measured)} cells measured, "
        "the rest extrapolated from them at their speed, at most the grid's time"))


def matmul_bias(ratios: dict[str, list[float]]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per dtype what a bias costs a linear layer, from the probes timed with and without one
    (`F.linear` with a bias runs cuBLASLt's bias epilogue, whose kernel choice differs): the
    median ratio, its range and the probe count; and a note each."""
    out: dict[str, dict[str, float]] = {}
    notes = []
    for dtype, rs in ratios.items():
        if not rs:
            continue
        out[dtype] = {"ratio": statistics.median(rs), "low": min(rs), "high": max(rs),
                      "probes": float(len(rs))}
        notes.append(f"matmul {dtype}: a bias takes ×{out[dtype]['ratio']:.3f} of the plain "
                     f"matmul's time (median of {len(rs)} probes, {min(rs):.2f}–{max(rs):.2f})")
    return out, notes


def probe_ratios(grids: dict[str, Grid], probes: dict[str, list[tuple[Shape, float]]],
                 ) -> dict[str, list[list[float]]]:
    """Per dtype each off-grid probe as [M, N, K, its measured time over the grid's reading]."""
    return {dtype: [[*shape, t / grids[dtype].at(*shape)] for shape, t in measured]
            for dtype, measured in probes.items()}


def matmul_offgrid(ratios: dict[str, list[list[float]]]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per dtype, from the off-grid probes' rows (`probe_ratios`: each probe's measured time over
    the grid's reading of it), their mean: what a matmul off the grid's points is charged beyond
    the grid — the mean, since a step's time is a sum over its shapes — with the median, range
    and count; and a note each."""
    out: dict[str, dict[str, float]] = {}
    notes = []
    for dtype, rows in ratios.items():
        rs = [r for *_, r in rows]
        if not rs:
            continue
        out[dtype] = {"ratio": statistics.fmean(rs), "median": statistics.median(rs),
                      "low": min(rs), "high": max(rs), "probes": float(len(rs))}
        notes.append(f"matmul {dtype}: shapes off the grid take ×{out[dtype]['ratio']:.3f} of its "
                     f"reading (mean of {len(rs)} probes, median {out[dtype]['median']:.3f}, "
                     f"{min(rs):.2f}–{max(rs):.2f})")
    return out, notes


def _attention_call(device: torch.device, tdtype: torch.dtype, pass_: str, bh: int, t: int, d: int,
                    pool: OperandPool) -> Call:
    if pass_ in ONE_QUERY_PASSES:
        q = random_tensor((1, bh, 1, d), tdtype, device)
        sets = pool.copies([(1, bh, t, d), (1, bh, t, d)])  # a layer's own KV cache each call

        def one_query(j: int) -> torch.Tensor:
            k, v = sets[j % len(sets)]
            return F.scaled_dot_product_attention(q, k, v)

        return one_query
    grad = pass_ == "causal_fwd_bwd"
    q, k, v = (random_tensor((1, bh, t, d), tdtype, device, requires_grad=grad) for _ in range(3))
    if pass_ == "masked_fwd":  # the mask a static KV cache's prefill builds (steps.fast_decode)
        slots = torch.arange(t, device=device)
        mask = slots[None, :] <= slots[:, None]
        return lambda j: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if not grad:
        return lambda j: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    dout = random_tensor((1, bh, t, d), tdtype, device)

    def fwd_bwd(j: int) -> tuple[torch.Tensor, ...]:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return torch.autograd.grad(out, (q, k, v), dout)

    return fwd_bwd


def measure_attention(device: torch.device | str, dtype: str, quick: bool = False,
                      progress: Progress | None = None, timer: KernelTimer | None = None,
                      record: list | None = None) -> dict[str, Grid]:
    """Grids (by `attention_key`) of passes causal_fwd, causal_fwd_bwd (and on CUDA masked_fwd)
    over (BH, T, D) and one_query over (BH, L, D) of F.scaled_dot_product_attention (torch's
    default backend) on (1, BH, ·, D) tensors (seconds per call), each cell timed by `timer`
    (default: a KernelTimer of its own) and added to `record` as [key, BH, T, D]."""
    device, dtype = as_device(device), check_dtype(dtype)
    timer = KernelTimer(device, quick) if timer is None else timer
    kind = device.type
    tdtype = TORCH_DTYPES[dtype]
    memory = _memory_bytes(device)
    pool, warm_pool = OperandPool(device, tdtype), OperandPool(device, tdtype, WARM_POOL_BYTES)
    plans = {p: (attention_axes(kind, p, quick), attention_cells(kind, dtype, p, quick, memory))
             for p in attention_passes(kind)}
    total, done = sum(len(cells) for _, cells in plans.values()), 0
    out: dict[str, Grid] = {}
    with MatmulPrecision(dtype):
        for pass_, (axes, cells) in plans.items():
            key = attention_key(dtype, pass_)
            measured: dict[tuple[int, ...], float] = {}
            warm = pass_ == ONE_QUERY_WARM  # its KV cache from the cache: no eviction
            for bh, t, d in cells:
                call = _attention_call(device, tdtype, pass_, bh, t, d, warm_pool if warm else pool)
                measured[(bh, t, d)] = timer(call, f"attention {key} {bh}×{t}×{d}",
                                             nbytes=0 if warm else attention_bytes(dtype, pass_, bh, t, d))
                del call
                if record is not None:
                    record.append([key, bh, t, d])
                done += 1
                report(progress, f"attention {dtype}", done, total)
            growth = ATTENTION_GROWTH[pass_]
            one_query = pass_ in ONE_QUERY_PASSES
            axis_names = ("BH", "L", "D") if one_query else ("BH", "T", "D")
            cycled = (f"{WARM_POOL_BYTES // MIB} MiB (in the last-level cache), no eviction"
                      if pass_ == ONE_QUERY_WARM else f"{POOL_BYTES[kind] // MIB} MiB")
            what = ("s per F.scaled_dot_product_attention(q (1,BH,1,D), k, v (1,BH,L,D)), no mask, "
                    f"distinct k, v cycled over {cycled}"
                    if one_query else
                    "s per F.scaled_dot_product_attention(q, k, v (1,BH,T,D), attn_mask=(T,T) "
                    "bool lower triangle)" if pass_ == "masked_fwd" else
                    "s per F.scaled_dot_product_attention(q, k, v (1,BH,T,D), is_causal=True)"
                    + (" + torch.autograd.grad of q, k, v" if pass_ == "causal_fwd_bwd" else ""))
            out[key] = Grid(axis_names, axes, tuple(fill_grid(axes, measured, growth)), growth,
                            what=f"{what}, {dtype}, default backend; " + grid_note(axes, len(measured)))
    return out


def _vector_call(op: str, dtype: str, shape: dict[str, int], device: torch.device,
                 shared: dict[str, torch.Tensor] | None = None) -> Call:
    """The call of `op` on inputs of `shape` (made here, the same every call); `shared` keeps
    the embedding table from one size to the next (filling 39 M numbers takes a while on a CPU)."""
    td = TORCH_DTYPES[dtype]
    aten = torch.ops.aten
    if op == "add":
        a, b = random_tensor((shape["n"],), td, device), random_tensor((shape["n"],), td, device)
        return lambda j: a + b
    if op == "add_mixed":  # one kernel: the bf16 operand is cast as it is read
        a, b = random_tensor((shape["n"],), torch.float32, device), random_tensor((shape["n"],), td, device)
        return lambda j: a + b
    if op == "copy":
        x = random_tensor((shape["b"], COPY_HEADS, shape["t"], COPY_HEAD_DIM), td, device)
        return lambda j: x.transpose(1, 2).contiguous()
    if op == "cat":
        parts = [random_tensor((shape["rows"], CAT_WIDTH), td, device) for _ in range(3)]
        return lambda j: torch.cat(parts, dim=1)
    if op == "cast_weight_to_bf16":  # a weight: read from memory, so a distinct copy each call
        copies = OperandPool(device, td).copies([(shape["n"],)])
        return lambda j: copies[j % len(copies)][0].to(torch.bfloat16)
    if op in ("cast_to_fp32", "cast_to_bf16"):
        x = random_tensor((shape["n"],), td, device)
        target = torch.float32 if op == "cast_to_fp32" else torch.bfloat16
        return lambda j: x.to(target)
    if op.startswith(("layernorm", "softmax")) or op == "sum_rows":
        x = random_tensor((shape["rows"], ROW), td, device)
        if op == "sum_rows":
            return lambda j: x.sum(0)
        if op == "softmax_fwd":
            return lambda j: F.softmax(x, dim=-1)
        if op == "softmax_bwd":
            y, g = F.softmax(x, dim=-1), random_tensor(x.shape, td, device)
            return lambda j: aten._softmax_backward_data(g, y, -1, td)
        w, b = random_tensor((ROW,), td, device), random_tensor((ROW,), td, device)
        if op == "layernorm_fwd":
            return lambda j: F.layer_norm(x, (ROW,), w, b)
        _, mean, rstd = aten.native_layer_norm(x, [ROW], w, b, 1e-5)
        g = random_tensor(x.shape, td, device)
        return lambda j: aten.native_layer_norm_backward(g, x, [ROW], mean, rstd, w, b,
                                                         [True, True, True])
    if op in ("gelu_fwd", "gelu_bwd"):
        x = random_tensor((shape["n"],), td, device)
        if op == "gelu_fwd":
            return lambda j: F.gelu(x, approximate="tanh")
        g = random_tensor((shape["n"],), td, device)
        return lambda j: aten.gelu_backward(g, x, approximate="tanh")
    if op in ("cross_entropy_fwd", "cross_entropy_bwd"):
        logits = random_tensor((shape["rows"], VOCAB), td, device)
        targets = torch.randint(0, VOCAB, (shape["rows"],), device=device)
        if op == "cross_entropy_fwd":
            return lambda j: F.cross_entropy(logits, targets)
        lsm = torch.log_softmax(logits, 1)
        _, total_weight = aten.nll_loss_forward(lsm, targets, None, 1, -100)
        gout = torch.ones((), device=device, dtype=td)

        def ce_bwd(j: int) -> torch.Tensor:
            g = aten.nll_loss_backward(gout, lsm, targets, None, 1, -100, total_weight)
            return aten._log_softmax_backward_data(g, lsm, 1, td)

        return ce_bwd
    if op in ("embedding_fwd", "embedding_bwd"):
        idx = torch.randint(0, VOCAB, (shape["rows"],), device=device)
        if op == "embedding_fwd":
            shared = {} if shared is None else shared
            key = f"table:{dtype}:{VOCAB}x{EMBED}"
            if key not in shared:
                shared[key] = random_tensor((VOCAB, EMBED), td, device)
            table = shared[key]
            return lambda j: F.embedding(idx, table)
        # a small table: the zeroed table gradient is charged apart (`perfmodel.expected`)
        g = random_tensor((shape["rows"], EMBED), td, device)
        small = idx % EMBED_BWD_VOCAB
        return lambda j: aten.embedding_dense_backward(g, small, EMBED_BWD_VOCAB, -1, False)
    raise UserError(f"unknown vector op {op!r}; valid: {', '.join(VECTOR_OPS)}")


def measure_vector(device: torch.device | str, dtype: str, quick: bool = False,
                   progress: Progress | None = None, timer: KernelTimer | None = None,
                   record: list | None = None) -> dict[str, Curve]:
    """Curves (by `vector_key`) over x = the bytes each op moves (VECTOR_X), seconds per call,
    each point timed by `timer` (default: a KernelTimer of its own) and added to `record` as
    [key, x]; none for tf32 (fp32 in memory: the fp32 curves serve)."""
    device, dtype = as_device(device), check_dtype(dtype)
    timer = KernelTimer(device, quick) if timer is None else timer
    if dtype == "tf32":  # fp32 in memory: the fp32 curves serve
        return {}
    ops = {op: vector_points(device.type, dtype, op, quick) for op in vector_ops(device.type, dtype)}
    total, done = sum(len(p) for p in ops.values()), 0
    out: dict[str, Curve] = {}
    shared: dict[str, torch.Tensor] = {}
    for op, points in ops.items():
        key = vector_key(op, dtype)
        xs, seconds = [], []
        for shape, x in points:
            call = _vector_call(op, dtype, shape, device, shared)
            seconds.append(timer(call, f"vector {key} x={x}", nbytes=x))
            xs.append(x)
            del call
            if record is not None:
                record.append([key, x])
            done += 1
            report(progress, f"vector {dtype}", done, total)
        inputs = "distinct inputs each call" if op in VECTOR_COLD_OPS else "the same inputs every call"
        out[key] = Curve(tuple(xs), tuple(seconds), what=f"s per call over x = bytes {VECTOR_X[op]}, "
                                                         f"{dtype}, {inputs}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _measure_pass(device: torch.device, dtypes: Sequence[str], quick: bool,
                  progress: Progress | None, timer: KernelTimer, spent: dict[str, float],
                  probes: dict[str, list[tuple[Shape, float]]] | None = None,
                  biased: dict[str, list[float]] | None = None,
                  waited: dict[str, float] | None = None,
                  forks: dict[str, float] | None = None, only: Sequence[str] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, list]]:
    """Every family once: ({"matmul", "attention", "vector", "optimizer", "gemv"}, shapes); each
    family's wall seconds are added to `spent`, and to `waited` those spent waiting for the
    timer's lock (the side processes' GPU work); with `probes` (and `biased`), the matmul probes
    (and their bias ratios) go there; with `forks`, each family's slower reading of a parallel
    CPU add (`probe.fork_op_s`) before and after it; with `only`, those families alone (the
    others' tables left out)."""
    shapes: dict[str, list] = {"matmul": [], "attention": [], "vector": []}
    matmul_seen: list[list[int]] = []
    result: dict[str, Any] = {"matmul": {}, "attention": {}, "vector": {}, "optimizer": {}, "gemv": {}}
    last_fork = fork_op_s(FORK_READ_S) if forks is not None else 0.0
    clock, lock_clock = time.perf_counter(), timer.lock.waited_s

    def family_done(family: str) -> None:
        nonlocal clock, lock_clock, last_fork
        if forks is not None:  # a spell that began or ended inside the family counts
            read = fork_op_s(FORK_READ_S)
            forks[family] = max(last_fork, read)
            last_fork = read
        now, lock_now = time.perf_counter(), timer.lock.waited_s
        spent[family] = spent.get(family, 0.0) + now - clock
        if waited is not None:
            waited[family] = waited.get(family, 0.0) + lock_now - lock_clock
        clock, lock_clock = now, lock_now

    def measured(family: str) -> bool:
        return only is None or family in only

    if measured("matmul"):
        for dtype in dtypes:
            result["matmul"][dtype] = measure_matmul(device, dtype, quick, progress, timer,
                                                     matmul_seen, probes, biased)
            if device.type == "cuda":
                result.setdefault("matmul_unaligned", {})[dtype] = measure_unaligned(
                    device, dtype, timer, matmul_seen)
                torch.cuda.empty_cache()
            else:
                result["matmul"][matmul_warm_key(dtype)] = _measure_matmul_warm(device, dtype, quick, progress,
                                                                      timer, result["matmul"][dtype])
        family_done("matmul")
    if measured("attention"):
        for dtype in dtypes:
            result["attention"].update(measure_attention(device, dtype, quick, progress, timer,
                                                         shapes["attention"]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        family_done("attention")
    if measured("vector"):
        for dtype in vector_dtypes(dtypes):
            result["vector"].update(measure_vector(device, dtype, quick, progress, timer, shapes["vector"]))
        family_done("vector")
    if measured("optimizer"):
        result["optimizer"] = measure_optimizer(device, quick, progress, timer)
        family_done("optimizer")
    if measured("gemv"):
        for dtype in dtypes:
            gemv, fused_attention = measure_decode_families(device, dtype, quick, progress, timer,
                                                            shapes["attention"])
            result["gemv"].update(gemv)
            result["attention"].update(fused_attention)  # an attention grid, timed with the Triton kernels
        family_done("gemv")
    if only is not None:
        result = {family: tables for family, tables in result.items() if family in only}
    _record(shapes["matmul"], matmul_seen)
    return result, shapes


def _record(measured: list[list[int]], cells: Sequence[Sequence[int]]) -> None:
    """Add `cells` to the shapes `measured`, each once, in order (what a validation stays off)."""
    for cell in map(list, cells):
        if cell not in measured:
            measured.append(cell)


def measure_kernels(device: torch.device | str, dtypes: Sequence[str], quick: bool = False,
                    progress: Progress | None = None, lock: GpuLock = NO_LOCK,
                    budget_s: float | None = None) -> dict[str, Any]:
    """Every family on `device` in `dtypes`: {"matmul": {dtype: Grid}, "attention": {key: Grid},
    "vector": {key: Curve}, "optimizer": {key: Curve}, "gemv": {dtype: Curve}, "shapes": what was
    measured (as `planned_shapes`), "notes": [str], "seconds": wall time, "family_seconds": wall
    time per family, "family_lock_wait_seconds": the part of it spent waiting for `lock`, and on
    CUDA "matmul_bias": {dtype: a bias's cost, `matmul_bias`} and "matmul_offgrid": {dtype: an
    off-grid shape's cost, `matmul_offgrid`} and "matmul_probes": {dtype: each probe's ratio,
    `probe_ratios`} and "matmul_unaligned": {dtype: a layer with unaligned rows, its rates,
    `measure_unaligned`}}, and on a CPU "cache_reach": how far its cache reaches for a step
    (`measure.cache_reach`, a Curve, measured after the passes). On a CPU every point
    is measured in CPU_PASSES passes, merged (`merge_passes`) over each family's passes run out of
    a spell of the machine's fork and join (`passes_out_of_spells`), and "fork_s" is a parallel
    add's time around those passes; a pass more over families measured in spells throughout ends
    within `budget_s` of this call's start, if given (`retry_spells`). `lock` is held while each
    point is timed (`KernelTimer`)."""
    device = as_device(device)
    dtypes = check_dtypes(dtypes)
    start = time.perf_counter()
    timer = KernelTimer(device, quick, lock)
    notes: list[str] = []
    usable = []
    for dtype in dtypes:
        if device.type == "cuda" and dtype == "bf16" and not torch.cuda.is_bf16_supported():
            notes.append("bf16 left out: this GPU has no bf16 support")
            continue
        usable.append(dtype)
    spent: dict[str, float] = {}
    waited: dict[str, float] = {}
    probes: dict[str, list[tuple[Shape, float]]] = {}
    biased: dict[str, list[float]] = {}
    cpu = device.type == "cpu"
    calm_s = fork_op_s(FORK_READ_S) if cpu else 0.0  # the machine as the calibration begins
    forks: list[dict[str, float]] = [{}]
    result, shapes = _measure_pass(device, usable, quick, progress, timer, spent, probes, biased,
                                   waited, forks[0] if cpu else None)
    if cpu and CPU_PASSES > 1:
        # every pass times the off-grid probes too, each read against its own pass's grid: a
        # pass whose grid ran in a spell and whose probes did not read the probes 0.56x
        passes, pass_probes = [result], [(probes, biased)]

        def run_pass(only: Sequence[str] | None = None) -> None:
            k = len(passes) + 1
            told = None if progress is None else (
                lambda stage, done, total: progress(f"{stage}, pass {k}", done, total))
            forks.append({})
            pass_probes.append(({}, {}))
            again, _ = _measure_pass(device, usable, quick, told, timer, spent, *pass_probes[-1],
                                     waited=waited, forks=forks[-1], only=only)
            passes.append(again)

        for _ in range(2, CPU_PASSES + 1):
            run_pass()
        left_s = CPU_RETRY_S if budget_s is None else budget_s - (time.perf_counter() - start)
        notes += retry_spells(run_pass, spent, CPU_PASSES, forks, calm_s, left_s)
        kept = passes_out_of_spells(forks)
        result, disagreed, spell_notes = combine_passes(passes, forks, kept)
        probes, biased = probes_of_passes(passes, pass_probes, kept.get("matmul", [0]), result["matmul"])
        notes += spell_notes
        notes.append(f"CPU: every point measured in {CPU_PASSES} passes; {disagreed} disagreed by "
                     f"more than {PASS_DISAGREE}× (the smaller kept), the rest averaged")
        # the parallel add's time when the kept passes ran: what `validate` compares a case with
        result["fork_s"] = statistics.median(forks[k][f] for f, ks in kept.items() for k in ks)
    if cpu:  # how far the cache reaches for a step, read against the warm and plain grids
        t0 = time.perf_counter()
        result["cache_reach"] = measure_cache_reach(timer)
        # few rows row by row, read against the grid's rows (its blocks of rows)
        result["matmul_rows"] = {dtype: measure_matmul_rows(timer, dtype, grid.points[0])
                                 for dtype, grid in result["matmul"].items() if not dtype.endswith(WARM)}
        # the same rows between a step's small ops, over their time back to back
        in_step = {key: measure_matmul_in_step(timer, dtype, cold) for dtype in result["matmul_rows"]
                   for key, cold in ((dtype, True), (matmul_warm_key(dtype), False))}
        result["matmul_in_step"] = {key: entry for key, entry in in_step.items() if entry is not None}
        spent["matmul"] = spent.get("matmul", 0.0) + time.perf_counter() - t0
        notes.append(reach_note(result["cache_reach"]))
        notes += [rows_note(dtype, entry) for dtype, entry in result["matmul_rows"].items()]
        notes += [in_step_note(key, entry) for key, entry in result["matmul_in_step"].items()]
        _record(shapes["matmul"], CACHE_REACH_LAYER)
        _record(shapes["matmul"], matmul_row_cells())
        _record(shapes["matmul"], matmul_in_step_cells())
    if device.type == "cuda" and not result["gemv"]:
        notes.append("gemv left out: gptperf's Triton kernel does not run here")
    for dtype, rates in result.get("matmul_unaligned", {}).items():
        notes.append(unaligned_note(dtype, rates))
    if probes:
        result["matmul_bias"], bias_notes = matmul_bias(biased)
        result["matmul_probes"] = probe_ratios(result["matmul"], probes)
        result["matmul_offgrid"], offgrid_notes = matmul_offgrid(result["matmul_probes"])
        notes += bias_notes + offgrid_notes
    result["shapes"] = shapes
    result["notes"] = notes + timer.notes
    result["seconds"] = time.perf_counter() - start
    result["family_seconds"] = spent
    result["family_lock_wait_seconds"] = waited
    return result
