"""The per-kernel model under `gptperf ceilings`: what one kernel costs beyond its bytes.

t(S) = α + S/β, fitted per row class M (`fit_kernel_line`) to weight-streaming matmuls y = x·Wᵀ (x
of M rows, W N×K as nn.Linear keeps it) over a log sweep of weight sizes, and to a small
elementwise kernel; many kernels per CUDA graph (distinct weights, more than the L2 cache holds,
so every replay streams from memory), eager calls on a CPU. Beside it, the one-query attention of a
decode step and LayerNorm, whose α is what matters at batch 1. `measure_kernel_model` returns the
table `Hardware.extra['kernel_model']` keeps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from gptperf.measure.timer import Progress, time_fn
from gptperf.runtime import cuda_graph
from gptperf.units import MIB

# Matmul row classes, weight sizes (bytes of W), shapes N/K (attn.proj, attn.qkv,
# mlp.fc, mlp.proj), elementwise sizes (bytes of the input), and the weights cycled through in one
# timed call: 256 MiB, 5x the H100's 50 MiB L2, so small weights are not served from cache.
KM_ROWS = (1, 4, 16, 64)
KM_CUDA_SIZES = tuple(MIB // 2 * 2**i for i in range(11))  # 0.5 MiB .. 512 MiB
KM_CUDA_QUICK_SIZES = tuple(MIB // 2 * 4**i for i in range(6))  # 0.5 MiB .. 512 MiB
KM_RATIOS = (1.0, 3.0, 4.0, 0.25)
KM_QUICK_RATIOS = (1.0, 4.0)
KM_CUDA_ELEMENTWISE = tuple(16 * 1024 * 4**i for i in range(8))  # 16 KiB .. 256 MiB
KM_CUDA_POOL = 256 * MIB
KM_CPU_ROWS = (1, 16)
KM_CPU_SIZES = (MIB // 4, MIB, 4 * MIB)  # a coarse CPU variant: eager calls, few points
KM_CPU_ELEMENTWISE = (16 * 1024, MIB)
KM_CPU_POOL = 16 * MIB
KM_MAX_KERNELS = 256  # elementwise kernels per timed call (CPU: matmuls too, 16)
KM_CPU_MAX_KERNELS = 4
# One-query attention (a decode step's SDPA with the static cache, its mask made once): (heads, head
# dim) of gpt2 and a 7B shape, batch and context; LayerNorm rows and widths (α only matters).
KM_ATTENTION_HEADS = ((12, 64), (32, 128))
KM_ATTENTION_BATCHES = (1, 4, 16, 64)
KM_ATTENTION_CONTEXTS = (128, 1024)
KM_CPU_ATTENTION = ((4, 16, 128),)  # (batch, heads·head dim, context) on CPU: two points
KM_NORM_SHAPES = ((1, 768), (16, 768), (64, 768), (1, 4096), (16, 4096), (64, 4096))


def fit_kernel_line(nbytes: list[float], times: list[float]) -> tuple[float, float, float]:
    """(α s, β bytes/s, largest relative residual) of t = α + S/β, least squares on relative
    errors (Σ((α + S/β − t)/t)²), so microsecond kernels weigh as much as millisecond ones.
    α is kept >= 0 (refitted through the origin if the free fit goes below)."""
    if len(nbytes) != len(times) or len(nbytes) < 2:
        raise ValueError(f"need two or more (bytes, time) points, got {len(nbytes)} and {len(times)}")
    if any(t <= 0 for t in times) or any(b <= 0 for b in nbytes):
        raise ValueError("bytes and times must be positive")
    # weighted rows (1/t, S/t) against 1: the 2×2 normal equations
    u = [1 / t for t in times]
    v = [b / t for b, t in zip(nbytes, times, strict=True)]
    suu, svv, suv = sum(x * x for x in u), sum(x * x for x in v), sum(x * y for x, y in zip(u, v, strict=True))
    su, sv = sum(u), sum(v)
    det = suu * svv - suv * suv
    alpha, inv_beta = ((su * svv - sv * suv) / det, (suu * sv - suv * su) / det) if det > 0 else (-1, 0)
    if alpha < 0 or inv_beta <= 0:
        alpha, inv_beta = 0.0, sv / svv
    residual = max(abs(alpha + b * inv_beta - t) / t for b, t in zip(nbytes, times, strict=True))
    return alpha, 1 / inv_beta, residual


def _replayer(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """`fn` captured as a CUDA graph (its replay), or `fn` itself on CPU."""
    if device.type != "cuda":
        return fn
    return cuda_graph(fn, device).replay


def per_kernel_time(fn: Callable[[], Any], kernels: int, device: torch.device, repeats: int) -> float:
    """Median seconds per kernel of `fn`, which launches `kernels` of them: replayed as one CUDA
    graph on a GPU (`_replayer`), called eagerly on a CPU."""
    replay = _replayer(fn, device)
    return time_fn(replay, warmup=2, repeats=repeats, device=device).median / kernels


def _stream_shape(weight_bytes: int, ratio: float, esize: int) -> tuple[int, int]:
    """(K, N) with N/K ≈ ratio and K·N·esize ≈ weight_bytes, both multiples of 64."""
    k = max(64, round(math.sqrt(weight_bytes / esize / ratio) / 64) * 64)
    n = max(64, round(weight_bytes / esize / k / 64) * 64)
    return k, n


def measure_kernel_model(
    device: torch.device, *, quick: bool = False, progress: Progress | None = None,
    rows: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The per-kernel model t(S) = α + S/β: weight-streaming matmuls per row class M and a small
    elementwise kernel, many kernels per CUDA graph (eager calls on CPU), median per kernel.

    Returns a table for `Hardware.extra['kernel_model']`: rows, alpha_s, beta (bytes/s),
    elementwise_alpha_s, elementwise_beta, the fit residuals and the raw curves.
    """
    from gptperf.steps import gemv  # deferred: loads triton

    cuda = device.type == "cuda"
    tdtype = torch.bfloat16 if cuda else torch.float32
    esize = tdtype.itemsize
    rows = rows or (KM_ROWS if cuda else KM_CPU_ROWS)
    sizes = (KM_CUDA_QUICK_SIZES if quick else KM_CUDA_SIZES) if cuda else (
        KM_CPU_SIZES[:2] if quick else KM_CPU_SIZES)
    ratios = KM_RATIOS if cuda and not quick else KM_QUICK_RATIOS if cuda else (1.0,)
    cap = KM_MAX_KERNELS if cuda else KM_CPU_MAX_KERNELS
    pool_bytes = KM_CUDA_POOL if cuda else KM_CPU_POOL
    ew_sizes = KM_CUDA_ELEMENTWISE if cuda else KM_CPU_ELEMENTWISE
    repeats = 10 if cuda and not quick else 5 if cuda else 3
    if cuda:
        free, _ = torch.cuda.mem_get_info(device)
        sizes = tuple(s for s in sizes if 2.5 * max(s, pool_bytes) < free) or sizes[:1]
    # 10% slack: shapes are rounded to multiples of 64, so W may be a little over its size
    pool = torch.randn(int(1.1 * max(max(sizes), pool_bytes)) // esize, device=device).to(tdtype)
    table: dict[str, Any] = {
        "dtype": "bf16" if cuda else "fp32", "rows": list(rows), "alpha_s": [], "beta": [],
        "max_rel_residual": [], "curves": {},
        "where": (f"y = x·Wᵀ (torch.mm, W N×K {'bf16' if cuda else 'fp32'}; one row: "
                  f"{'gptperf.inference.gemv' if cuda and gemv.available() else 'torch.mm'}), "
                  + ("many kernels per CUDA graph" if cuda else "eager calls")
                  + f", distinct weights cycled over {pool_bytes // MIB} MiB; S = bytes of x, W, y"),
    }
    done, total = 0, len(rows) * len(sizes) * len(ratios) + len(ew_sizes)
    for m in rows:
        # one row: the fast decode path's own kernel when it runs here (gptperf.inference.gemv)
        one_row = m == 1 and cuda and gemv.available()
        curve: dict[str, list[Any]] = {"k": [], "n": [], "bytes": [], "time_s": []}
        for size in sizes:
            for ratio in ratios:
                k, n = _stream_shape(size, ratio, esize)
                count = max(1, min(pool_bytes // (k * n * esize), cap if not cuda else 1 << 30))
                count = max(1, min(count, pool.numel() // (k * n)))
                weights = [pool[i * k * n:(i + 1) * k * n].view(n, k) for i in range(count)]
                kernels = max(count, 8 if cuda else 2)
                x = torch.randn(m, k, device=device).to(tdtype)
                ys = [torch.empty(m, n, device=device, dtype=tdtype) for _ in range(min(kernels, 16))]

                def run(weights=weights, x=x, ys=ys, kernels=kernels, one_row=one_row) -> None:
                    for i in range(kernels):
                        if one_row:
                            gemv.launch(x[0], weights[i % len(weights)], None, ys[i % len(ys)][0])
                        else:
                            torch.mm(x, weights[i % len(weights)].t(), out=ys[i % len(ys)])

                t = per_kernel_time(run, kernels, device, repeats)
                curve["k"].append(k)
                curve["n"].append(n)
                curve["bytes"].append((m * k + k * n + m * n) * esize)
                curve["time_s"].append(t)
                done += 1
                if progress:
                    progress("kernel model", done, total)
        alpha, beta, resid = fit_kernel_line(curve["bytes"], curve["time_s"])
        table["alpha_s"].append(alpha)
        table["beta"].append(beta)
        table["max_rel_residual"].append(resid)
        table["curves"][f"m{m}"] = curve
    del pool
    ew: dict[str, list[Any]] = {"bytes": [], "time_s": []}
    for size in ew_sizes:
        numel = size // esize
        # inputs of small elementwise kernels sit in L2 in a real step too: 256 kernels at most
        count = min(max(1, pool_bytes // size), cap)
        src = torch.randn(count * numel, device=device).to(tdtype)
        dst = torch.empty_like(src)
        kernels = max(count, 32 if cuda else 2)

        def add(src=src, dst=dst, numel=numel, count=count, kernels=kernels) -> None:
            for i in range(kernels):
                j = (i % count) * numel
                torch.add(src[j:j + numel], 1.0, out=dst[j:j + numel])

        ew["bytes"].append(2 * size)
        ew["time_s"].append(per_kernel_time(add, kernels, device, repeats))
        del src, dst
        done += 1
        if progress:
            progress("kernel model", done, total)
    alpha, beta, resid = fit_kernel_line(ew["bytes"], ew["time_s"])
    table.update(elementwise_alpha_s=alpha, elementwise_beta=beta,
                 elementwise_max_rel_residual=resid)
    table["curves"]["elementwise"] = ew
    table["where"] += "; elementwise: out = x + 1, bytes read + written"
    att = attention_curve(device, tdtype, pool_bytes, cap, repeats)
    alpha, beta, resid = fit_kernel_line(att["bytes"], att["time_s"])
    table.update(attention_alpha_s=alpha, attention_beta=beta, attention_max_rel_residual=resid)
    table["curves"]["attention"] = att
    table["where"] += ("; attention: SDPA of one query over L keys with an additive mask, "
                       "bytes = q, K, V read + output written")
    norm = _norm_curve(device, tdtype, repeats)
    alpha, beta, resid = fit_kernel_line(norm["bytes"], norm["time_s"])
    table.update(norm_alpha_s=alpha, norm_max_rel_residual=resid)
    table["curves"]["norm"] = norm
    table["where"] += "; norm: F.layer_norm of M×C rows"
    if progress:
        progress("kernel model", total, total)
    if cuda:
        torch.cuda.empty_cache()
    return table


def attention_curve(device: torch.device, tdtype: torch.dtype, pool_bytes: int, cap: int,
                     repeats: int) -> dict[str, list[Any]]:
    """Per-call time of decode attention: q (B, H, 1, D) against distinct K, V (B, H, L, D)
    cycled over `pool_bytes`, with a (1, L) additive mask, as a compiled static-KV-cache step
    calls the attention kernel."""
    import torch.nn.functional as F

    cuda = device.type == "cuda"
    backend = _decode_attention_backend(device, tdtype)
    if cuda:
        shapes = [(b, h, d, n) for h, d in KM_ATTENTION_HEADS for b in KM_ATTENTION_BATCHES
                  for n in KM_ATTENTION_CONTEXTS]
    else:
        shapes = [(b, 4, c // 4, n) for b, c, n in KM_CPU_ATTENTION] + [(1, 4, 4, 64)]
    curve: dict[str, list[Any]] = {"batch": [], "heads": [], "head_dim": [], "context": [],
                                   "bytes": [], "time_s": []}
    esize = tdtype.itemsize
    for b, h, d, n in shapes:
        kv = b * h * n * d
        count = max(1, min(pool_bytes // (2 * kv * esize), cap if not cuda else KM_MAX_KERNELS))
        k = torch.randn(count, b, h, n, d, device=device).to(tdtype)
        v = torch.randn(count, b, h, n, d, device=device).to(tdtype)
        q = torch.randn(b, h, 1, d, device=device).to(tdtype)
        # the additive mask, made once: a compiled step builds it in a kernel of its own per layer
        mask = torch.zeros(1, n, device=device, dtype=tdtype)
        kernels = max(count, 8 if cuda else 2)

        def run(q=q, k=k, v=v, mask=mask, kernels=kernels, count=count) -> None:
            with backend():
                for i in range(kernels):
                    F.scaled_dot_product_attention(q, k[i % count], v[i % count], attn_mask=mask)

        curve["batch"].append(b)
        curve["heads"].append(h)
        curve["head_dim"].append(d)
        curve["context"].append(n)
        curve["bytes"].append((2 * kv + 2 * b * h * d) * esize)
        curve["time_s"].append(per_kernel_time(run, kernels, device, repeats))
        del k, v
    return curve


def _decode_attention_backend(device: torch.device, tdtype: torch.dtype) -> Callable[[], Any]:
    """The SDPA backend of a compiled decode step: cuDNN (the kernel inductor calls there), where
    it takes a masked one-query call like the curve's; else the default choice."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type == "cuda":
        q = torch.zeros(1, 1, 1, 64, device=device, dtype=tdtype)
        kv = torch.zeros(1, 1, 8, 64, device=device, dtype=tdtype)
        mask = torch.zeros(1, 8, device=device, dtype=tdtype)  # additive, as in the curve
        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask)
            return lambda: sdpa_kernel(SDPBackend.CUDNN_ATTENTION)
        except RuntimeError:  # no cuDNN attention for this call here: the default choice
            pass
    return contextlib.nullcontext


def _norm_curve(device: torch.device, tdtype: torch.dtype, repeats: int) -> dict[str, list[Any]]:
    """Per-call time of F.layer_norm on M×C rows (a decode step's LayerNorms)."""
    import torch.nn.functional as F

    curve: dict[str, list[Any]] = {"rows": [], "width": [], "bytes": [], "time_s": []}
    cuda = device.type == "cuda"
    kernels = 64 if cuda else 2
    for m, c in KM_NORM_SHAPES if cuda else (KM_NORM_SHAPES[0], KM_NORM_SHAPES[-1]):
        xs = torch.randn(kernels, m, c, device=device).to(tdtype)
        w = torch.ones(c, device=device, dtype=tdtype)
        bias = torch.zeros(c, device=device, dtype=tdtype)

        def run(xs=xs, w=w, bias=bias, c=c) -> None:
            for i in range(kernels):
                F.layer_norm(xs[i], (c,), w, bias)

        curve["rows"].append(m)
        curve["width"].append(c)
        curve["bytes"].append((2 * m * c + 2 * c) * tdtype.itemsize)
        curve["time_s"].append(per_kernel_time(run, kernels, device, repeats))
    return curve
