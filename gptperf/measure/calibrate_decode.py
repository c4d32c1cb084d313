"""The GPU calibration's families for gptperf's own batch-1 decode kernels (`steps.gemv`,
`steps.decode_kernels`): the one-row gemv over weight bytes; the fused decode step's LayerNorm +
gemv and gemv + residual kernels in a chain, its LM head with the argmax, its attention over
(heads, cache length, head size); and its four layer kernels timed inside a captured step of
synthetic models, read from one profiled replay. Each returns None where its kernel does not run
(no CUDA, no Triton, a dtype it has no kernel for); `calibrate_kernels` measures the other
families and keeps these beside them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any

import torch

from gptperf import names
from gptperf.dtypes import check_dtype, dtype_bytes
from gptperf.measure.calibration_plan import (
    ATTENTION_GROWTH,
    FUSED_ATTENTION_DTYPES,
    FUSED_STEP_CONTEXT,
    FUSED_STEP_VOCAB,
    GEMV_SIZES,
    GEMV_SKIPPED_DTYPES,
    argmax_shapes,
    fused_attention_axes,
    fused_step_models,
    gemv_shape,
    thin_points,
)
from gptperf.measure.calibration_tables import fill_grid, grid_note, report
from gptperf.measure.kernel_timer import POOL_BYTES, Call, KernelTimer, OperandPool, random_tensor
from gptperf.measure.timer import Progress
from gptperf.model.config import LAYER_WEIGHTS
from gptperf.perfmodel.calibration import (
    FUSED_ATTENTION_PASS,
    GEMV_ARGMAX_CHAIN,
    GEMV_CHAIN,
    GEMV_RESIDUAL_CHAIN,
    attention_key,
    fused_step_key,
    gemv_key,
)
from gptperf.perfmodel.curves import Curve, Grid
from gptperf.runtime import TORCH_DTYPES, as_device
from gptperf.units import MIB

# A weight-streaming kernel to time: (weight (N, K), the other inputs it needs) -> call(j).
StreamCall = Callable[[list[list[torch.Tensor]], torch.dtype, torch.device, int, int], Call]


def _weight_stream_curve(device: torch.device, dtype: str, quick: bool, progress: Progress | None,
                         timer: KernelTimer, label: str, square: bool, make_call: StreamCall,
                         shapes: Sequence[tuple[int, int]] | None = None) -> tuple[list, list]:
    """(bytes, seconds) of a one-row kernel over GEMV_SIZES of weight (or the (N, K) `shapes`),
    distinct weights cycled from the pool; `square` weights (K×K) when the kernel's output feeds
    its next call."""
    tdtype = TORCH_DTYPES[dtype]
    pool = OperandPool(device, tdtype)
    if shapes is None:
        shapes = [gemv_shape(size, tdtype.itemsize) for size in thin_points(GEMV_SIZES, quick)]
        shapes = [(k, k) if square else (n, k) for n, k in shapes]
    xs: list[float] = []
    seconds: list[float] = []
    for i, (n, k) in enumerate(shapes):
        sets = pool.copies([(n, k)])
        if not xs or n * k * tdtype.itemsize > xs[-1]:
            seconds.append(timer(make_call(sets, tdtype, device, n, k), f"{label} {dtype} {n}×{k}"))
            xs.append(n * k * tdtype.itemsize)
        del sets
        report(progress, f"{label} {dtype}", i + 1, len(shapes))
    return xs, seconds


def measure_gemv(device: torch.device | str, dtype: str, quick: bool = False,
                 progress: Progress | None = None, timer: KernelTimer | None = None) -> Curve | None:
    """Curve over x = weight bytes N·K·e of gptperf's one-row Triton kernel (`steps.gemv`),
    distinct weights cycled, each point timed by `timer` (default: a KernelTimer of its own);
    None without CUDA and Triton."""
    from gptperf.steps import gemv  # deferred: loads triton

    device, dtype = as_device(device), check_dtype(dtype)
    if device.type != "cuda" or not gemv.available() or dtype in GEMV_SKIPPED_DTYPES:
        return None
    timer = KernelTimer(device, quick) if timer is None else timer

    def make_call(sets: list[list[torch.Tensor]], tdtype: torch.dtype, device: torch.device,
                  n: int, k: int) -> Call:
        x, y = random_tensor((k,), tdtype, device), torch.empty(n, device=device, dtype=tdtype)
        return lambda j: gemv.launch(x, sets[j % len(sets)][0], None, y)

    xs, seconds = _weight_stream_curve(device, dtype, quick, progress, timer, "gemv", False, make_call)
    return Curve(tuple(xs), tuple(seconds), what=(
        f"s per y = W·x of gptperf.steps.gemv (one row, W N×K {dtype}, N ≈ K) over x = N·K·e "
        f"bytes; distinct weights cycled over {POOL_BYTES['cuda'] // MIB} MiB"))


def measure_gemv_chain(device: torch.device, dtype: str, quick: bool, progress: Progress | None,
                       timer: KernelTimer, residual: bool = False) -> Curve | None:
    """Curve over weight bytes of the fused decode step's LayerNorm + gemv kernel
    (`steps.decode_kernels.ln_gemv`), or with `residual` its gemv + bias + residual kernel
    (`gemv_residual`), in a chain: each call reads the vector the one before wrote, as every
    kernel of that step does (with programmatic dependent launch where the step has it), so the
    time a kernel spends waiting for its input and ramping up is in each point."""
    from gptperf.steps import decode_kernels  # deferred: loads triton

    if device.type != "cuda" or not decode_kernels.available() or dtype in GEMV_SKIPPED_DTYPES:
        return None

    def make_call(sets: list[list[torch.Tensor]], tdtype: torch.dtype, device: torch.device,
                  n: int, k: int) -> Call:
        v = [random_tensor((1, 1, k), tdtype, device) for _ in range(2)]
        g, b = random_tensor((k,), tdtype, device), random_tensor((k,), tdtype, device)
        if residual:
            r = random_tensor((1, 1, k), tdtype, device)
            return lambda j: decode_kernels.gemv_residual(v[j % 2], sets[j % len(sets)][0], b, r,
                                                          out=v[(j + 1) % 2])
        folded = decode_kernels.fold_for_copies([s[0] for s in sets], g, b)
        return lambda j: decode_kernels.ln_gemv(v[j % 2], g, b, 1e-5, sets[j % len(sets)][0],
                                                folded=folded[j % len(sets)], out=v[(j + 1) % 2])

    label = "gemv residual chain" if residual else "gemv chain"
    xs, seconds = _weight_stream_curve(device, dtype, quick, progress, timer, label, True, make_call)
    what = ("r + W·x + b of gptperf.steps.decode_kernels.gemv_residual" if residual
            else "LayerNorm + y = W·x of gptperf.steps.decode_kernels.ln_gemv")
    return Curve(tuple(xs), tuple(seconds), what=(
        f"s per {what} (W K×K {dtype}), each call reading the previous call's output, over "
        f"x = K·K·e bytes; distinct weights cycled over {POOL_BYTES['cuda'] // MIB} MiB"))


def measure_argmax_chain(device: torch.device, dtype: str, quick: bool, progress: Progress | None,
                         timer: KernelTimer) -> Curve | None:
    """Curve over weight bytes of the fused decode step's LM head kernel
    (`steps.decode_kernels.ln_gemv_argmax`: LayerNorm, a vocabulary-wide gemv, the argmax) at
    `argmax_shapes`, each call waiting for the one before (one scratch, stream order), as the
    step's waits for its last projection."""
    from gptperf.steps import decode_kernels  # deferred: loads triton

    if device.type != "cuda" or not decode_kernels.available() or dtype in GEMV_SKIPPED_DTYPES:
        return None

    def make_call(sets: list[list[torch.Tensor]], tdtype: torch.dtype, device: torch.device,
                  n: int, k: int) -> Call:
        x = random_tensor((1, 1, k), tdtype, device)
        g, b = random_tensor((k,), tdtype, device), random_tensor((k,), tdtype, device)
        folded = decode_kernels.fold_for_copies([s[0] for s in sets], g, b)
        scratch = decode_kernels.DecodeScratch.new(1, device)
        token = torch.empty(1, device=device, dtype=torch.long)
        return lambda j: decode_kernels.ln_gemv_argmax(x, g, b, 1e-5, sets[j % len(sets)][0],
                                                       folded=folded[j % len(sets)], scratch=scratch,
                                                       out=token)

    xs, seconds = _weight_stream_curve(device, dtype, quick, progress, timer, "LM head argmax chain",
                                       False, make_call, argmax_shapes(dtype, quick))
    return Curve(tuple(xs), tuple(seconds), what=(
        f"s per LayerNorm + W·x + argmax of gptperf.steps.decode_kernels.ln_gemv_argmax (W N×K "
        f"{dtype}: N×K = {', '.join(f'{n}×{k}' for n, k in argmax_shapes(dtype, quick))}), each "
        f"call after the previous one, over x = N·K·e bytes; distinct weights cycled over "
        f"{POOL_BYTES['cuda'] // MIB} MiB"))


def _fused_attention_call(device: torch.device, tdtype: torch.dtype, h: int, n: int, d: int,
                          pool: OperandPool) -> Call:
    """The fused decode step's attention (`steps.decode_kernels.decode_attention`, batch 1) of
    the new token at the last of n positions, each call on the next of the pool's caches."""
    from gptperf.steps import decode_kernels  # deferred: loads triton

    sets = pool.copies([(1, h, n, d), (1, h, n, d)])
    qkv = random_tensor((1, 1, 3 * h * d), tdtype, device)
    pos = torch.tensor(n - 1, device=device)
    scratch = decode_kernels.DecodeScratch.new(h, device)
    out = torch.empty((1, 1, h * d), device=device, dtype=tdtype)

    def call(j: int) -> torch.Tensor:
        k, v = sets[j % len(sets)]
        return decode_kernels.decode_attention(qkv, k, v, pos, h, scratch=scratch, out=out)

    return call


def measure_fused_attention(device: torch.device, dtype: str, quick: bool,
                            progress: Progress | None, timer: KernelTimer,
                            record: list | None = None,
                            axes: Sequence[Sequence[int]] | None = None) -> Grid | None:
    """Grid over (heads, cache length L, D) — `axes`, default `fused_attention_axes` — of the
    fused decode step's attention kernel at the cache's last position, as a decode step of
    context L runs it: each call after the one before, distinct caches cycled."""
    from gptperf.steps import decode_kernels  # deferred: loads triton

    if device.type != "cuda" or not decode_kernels.available() or dtype not in FUSED_ATTENTION_DTYPES:
        return None
    tdtype = TORCH_DTYPES[dtype]
    pool = OperandPool(device, tdtype)
    axes = tuple(tuple(a) for a in axes) if axes is not None else fused_attention_axes(quick)
    cells = list(product(*axes))
    measured: dict[tuple[int, ...], float] = {}
    for i, (h, n, d) in enumerate(cells):
        call = _fused_attention_call(device, tdtype, h, n, d, pool)
        measured[(h, n, d)] = timer(call, f"fused decode attention {dtype} {h}×{n}×{d}")
        if record is not None:
            record.append([attention_key(dtype, FUSED_ATTENTION_PASS), h, n, d])
        del call
        report(progress, f"fused decode attention {dtype}", i + 1, len(cells))
    growth = ATTENTION_GROWTH["one_query"]
    return Grid(("H", "L", "D"), axes, tuple(fill_grid(axes, measured, growth)), growth, what=(
        f"s per gptperf.steps.decode_kernels.decode_attention (batch 1: H heads, a cache of L "
        f"positions, the new token's the last; it writes k, v there), {dtype}, each call after "
        f"the previous one, distinct caches cycled over {POOL_BYTES['cuda'] // MIB} MiB; "
        + grid_note(axes, len(measured))))


# The fused step's layer kernels in launch order: the block's weights (LAYER_WEIGHTS), the
# attention after the first.
STEP_LAYER = (names.ATTN_QKV, names.ATTN_SDPA, names.ATTN_PROJ, names.MLP_FC, names.MLP_PROJ)


def replay_kernels(decoder: Any, length: int) -> list[tuple[str, float, float]]:
    """(name, start µs, duration µs) of every kernel of one step of a `FastDecoder` writing
    position `length`, in launch order, from one profiled replay after a warm one."""
    from gptperf.measure.device_kernels import kernels_of

    decoder.set_length(length)
    decoder.step()
    decoder.set_length(length)
    return [(k.name, k.start_us, k.duration_us) for k in kernels_of(decoder.step)]


def step_layer_times(kernels: list[tuple[str, float, float]], layers: int) -> dict[str, float]:
    """Seconds of each of the fused step's layer kernels (`STEP_LAYER`) from one replay's kernels
    (`replay_kernels`): its end minus the previous kernel's end (under programmatic dependent
    launch a kernel starts before the one it waits for ends), the median over the layers after
    the first."""
    per_layer = len(STEP_LAYER)
    if len(kernels) != 2 + per_layer * layers:
        raise RuntimeError(f"the fused step ran {len(kernels)} kernels, not the {2 + per_layer * layers} "
                           f"of embed, {per_layer} a layer for {layers} layers and the head")
    ends = [start + took for _, start, took in kernels]
    return {component: statistics.median(ends[1 + per_layer * layer + j] - ends[per_layer * layer + j]
                                         for layer in range(1, layers)) * 1e-6
            for j, component in enumerate(STEP_LAYER)}


# The seconds of each of a warmed FastDecoder's layer kernels (`STEP_LAYER`), given its layers.
LayerTimes = Callable[[Any, int], dict[str, float]]


def profiled_layer_times(decoder: Any, layers: int) -> dict[str, float]:
    """`step_layer_times` of one profiled replay of `decoder`'s step at the calibration's context."""
    return step_layer_times(replay_kernels(decoder, FUSED_STEP_CONTEXT - 1), layers)


def measure_fused_step(device: torch.device, dtype: str, quick: bool,
                       progress: Progress | None,
                       layer_times: LayerTimes = profiled_layer_times) -> dict[str, Curve] | None:
    """Curves over weight bytes of the fused decode step's four weight kernels (qkv and mlp.fc
    with their LayerNorm, the projections with the residual), keyed by
    `fused_step_key(component, dtype)`:
    each kernel's time inside a captured step of synthetic models (`fused_step_models`), as
    `layer_times` reads it (default: from one profiled replay)."""
    from gptperf.steps import decode_kernels  # deferred: loads triton

    if device.type != "cuda" or not decode_kernels.available() or dtype not in FUSED_ATTENTION_DTYPES:
        return None
    from gptperf.model import GPTConfig
    from gptperf.steps.fast_decode import FastDecoder, build_model  # deferred: loads triton

    points: dict[str, list[tuple[float, float]]] = {c: [] for c in LAYER_WEIGHTS}
    models = fused_step_models(dtype, quick)
    for i, (width, heads, layers) in enumerate(models):
        config = GPTConfig(n_layer=layers, n_head=heads, n_embd=width, vocab_size=FUSED_STEP_VOCAB,
                           block_size=FUSED_STEP_CONTEXT, name=f"fused-step-{width}")
        decoder = FastDecoder(build_model(config, device, TORCH_DTYPES[dtype]), 1, fused=True)
        decoder.warmup()
        times = layer_times(decoder, layers)
        for component, pts in points.items():
            pts.append((math.prod(config.weight_shape(component)) * dtype_bytes(dtype), times[component]))
        del decoder
        torch.cuda.empty_cache()
        report(progress, f"fused decode step {dtype}", i + 1, len(models))
    return {fused_step_key(component, dtype): Curve(
        tuple(x for x, _ in sorted(pts)), tuple(t for _, t in sorted(pts)), what=(
            f"s of the fused decode step's {component} kernel (steps.decode_kernels, {dtype}) inside "
            f"a captured batch-1 step of synthetic models (widths {', '.join(str(m[0]) for m in models)}, "
            f"cache {FUSED_STEP_CONTEXT}), over its weight bytes: its end minus the previous kernel's "
            f"end in a profiled replay, the median over the layers after the first"))
        for component, pts in points.items()}


def measure_decode_families(device: torch.device, dtype: str, quick: bool, progress: Progress | None,
                            timer: KernelTimer, record: list | None = None,
                            layer_times: LayerTimes = profiled_layer_times
                            ) -> tuple[dict[str, Curve], dict[str, Grid]]:
    """Every family of this module in `dtype`, in the calibration's order: ({gemv key: Curve},
    {attention key: Grid}), empty where the kernels do not run. The fused step's in-step curves
    stand for the chains where they were measured (the chains are what the model reads for the
    step's kernels otherwise). `record` collects the fused attention's cells."""
    gemv: dict[str, Curve] = {}
    curve = measure_gemv(device, dtype, quick, progress, timer)
    if curve is not None:
        gemv[gemv_key(dtype)] = curve
    in_step = measure_fused_step(device, dtype, quick, progress, layer_times)
    if in_step is not None:
        gemv.update(in_step)
    for prefix, residual in () if in_step else ((GEMV_CHAIN, False), (GEMV_RESIDUAL_CHAIN, True)):
        chain = measure_gemv_chain(device, dtype, quick, progress, timer, residual)
        if chain is not None:
            gemv[gemv_key(dtype, prefix)] = chain
    head = measure_argmax_chain(device, dtype, quick, progress, timer)
    if head is not None:
        gemv[gemv_key(dtype, GEMV_ARGMAX_CHAIN)] = head
    fused = measure_fused_attention(device, dtype, quick, progress, timer, record)
    attention = {attention_key(dtype, FUSED_ATTENTION_PASS): fused} if fused is not None else {}
    return gemv, attention
