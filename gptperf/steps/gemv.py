"""One-row matrix products (batch-1 decode) as a Triton kernel with a fixed tile per shape.

At batch 1 every weight matmul of a decode step is a matrix-vector product that streams the
weight once. Inductor can emit it as a reduction and tune its tile by coordinate descent, but that
search lands on a different tile in every fresh compile, and the slow ones cost 10-20% of a 7B
step (BENCHMARKS.md, "The batch-1 matrix-vector kernel"). This kernel always uses the tile chosen by
`gemv_config`, which `benchmarks/gpu_gemv.py` measured on an H100.

`gemv(x, weight, bias)` is a custom op: torch.compile keeps it as one kernel and fuses what is
around it (LayerNorm, GELU, the residual add) into its own kernels.
"""

from __future__ import annotations

import torch

try:  # Triton comes with CUDA builds of torch; CPU builds have none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on CPU-only installs
    triton = None


def gemv_config(n: int, k: int) -> tuple[int, int, int]:
    """(rows per program, columns per step, warps) for y = W·x with W of n×k.

    From benchmarks/gpu_gemv.py on an H100 (BENCHMARKS.md): 2 rows × 1024 columns with 4 warps
    is within 2% of the best of 24 tiles for every 7B-shaped and gpt2 weight but two: long rows
    (k >= 8192) stream best in 2048-column steps, and a short-row, very tall matrix (the gpt2
    LM head) in 8 rows × 256 columns.
    """
    if k >= 8192:
        return 2, 2048, 8
    if k <= 1024 and n >= 32768:
        return 8, 256, 4
    return 2, 1024, 4


def available() -> bool:
    """True when the Triton kernel can run (a CUDA device and Triton)."""
    return triton is not None and torch.cuda.is_available()


if triton is not None:

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, K,
                     HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            col_ok = cols < K
            w = tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=row_ok[:, None] & col_ok[None, :],
                        other=0.0, eviction_policy="evict_first")  # each weight is read once: keep L2 for x
            x = tl.load(x_ptr + cols, mask=col_ok, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        y = tl.sum(acc, axis=1)
        if HAS_BIAS:
            y += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)

    def _run(kernel, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
             config: tuple[int, int, int] | None) -> None:
        n, k = weight.shape
        block_n, block_k, warps = config or gemv_config(n, k)
        kernel[(triton.cdiv(n, block_n),)](x, weight, bias if bias is not None else x, out, n, k,
                                           HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=block_k,
                                           num_warps=warps)

    def launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
               config: tuple[int, int, int] | None = None) -> None:
        """out (n,) = weight (n×k) · x (k,) [+ bias], fp32 accumulation; `config` overrides the tile."""
        _run(_gemv_kernel, x, weight, bias, out, config)

    @torch.library.triton_op("gptperf::gemv", mutates_args=())
    def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (…, k) with one row · weight (n, k)ᵀ [+ bias (n,)] -> (…, n)."""
        n, k = weight.shape
        out = torch.empty((*x.shape[:-1], n), device=x.device, dtype=x.dtype)
        _run(torch.library.wrap_triton(_gemv_kernel), x.reshape(k), weight, bias, out.view(n), None)
        return out
