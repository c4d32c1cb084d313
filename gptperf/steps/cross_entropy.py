"""A one-pass cross-entropy for the compiled train step on a GPU: each row of logits is read once
in the forward (an online log-sum-exp) and once in the backward (softmax − one-hot written in
the same pass), as two Triton kernels behind one custom op that torch.compile keeps whole.

Inductor's own loss reads the logits at 1.5 TB/s in its forward (gpt2, B=12, T=1024: 12288 ×
50304 bf16, 0.83 ms, then 0.75 ms backward); these kernels take 0.46 and 0.65 ms
(`benchmarks/gpu_cross_entropy.py`, H200). The logits stay in their dtype (bf16 under autocast);
the arithmetic is fp32, as autocast's fp32 cross-entropy.
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch only
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU builds: `available()` says no
    triton = None

BLOCK = 4096  # columns a program holds at once: a row of 50304 in 13 steps
NUM_WARPS = 8


def available(device: torch.device) -> bool:
    """Whether the fused loss can run on `device` (a CUDA device with Triton)."""
    return device.type == "cuda" and triton is not None


if triton is not None:

    @triton.jit
    def _forward_kernel(z_ptr, t_ptr, lse_ptr, loss_ptr, V, stride, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = z_ptr + row * stride
        m = tl.full([BLOCK], -1e30, tl.float32)  # per lane running max and sum: one read of the row
        s = tl.zeros([BLOCK], tl.float32)
        for v0 in range(0, V, BLOCK):
            cols = v0 + tl.arange(0, BLOCK)
            z = tl.load(base + cols, mask=cols < V, other=-1e30, eviction_policy="evict_first").to(tl.float32)
            m_new = tl.maximum(m, z)
            s = s * tl.exp(m - m_new) + tl.exp(z - m_new)
            m = m_new
        top = tl.max(m, 0)
        lse = top + tl.log(tl.sum(s * tl.exp(m - top), 0))
        t = tl.load(t_ptr + row)
        valid = (t >= 0) & (t < V)
        zt = tl.load(base + tl.where(valid, t, 0)).to(tl.float32)
        tl.store(lse_ptr + row, lse)
        tl.store(loss_ptr + row, tl.where(valid, lse - zt, 0.0))

    @triton.jit
    def _backward_kernel(z_ptr, t_ptr, lse_ptr, g_ptr, dz_ptr, V, stride, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        t = tl.load(t_ptr + row)
        lse = tl.load(lse_ptr + row)
        # d loss / d row loss; an ignored row's loss is a constant 0, whatever autograd hands in
        g = tl.where((t >= 0) & (t < V), tl.load(g_ptr + row), 0.0)
        for v0 in range(0, V, BLOCK):
            cols = v0 + tl.arange(0, BLOCK)
            ok = cols < V
            z = tl.load(z_ptr + row * stride + cols, mask=ok, other=0.0, eviction_policy="evict_first").to(tl.float32)
            p = tl.exp(z - lse) - tl.where(cols == t, 1.0, 0.0)
            tl.store(dz_ptr + row * stride + cols, (p * g).to(dz_ptr.dtype.element_ty), mask=ok)

    @torch.library.triton_op("gptperf::cross_entropy_rows", mutates_args=())
    def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss per row, log-sum-exp per row), fp32; a row whose target is out of range (-1)
        has loss 0."""
        n, v = logits.shape
        lse = torch.empty(n, device=logits.device, dtype=torch.float32)
        rows = torch.empty_like(lse)
        torch.library.wrap_triton(_forward_kernel)[(n,)](logits, targets, lse, rows, v, logits.stride(0),
                                                         BLOCK=BLOCK, num_warps=NUM_WARPS)
        return rows, lse

    @torch.library.triton_op("gptperf::cross_entropy_rows_backward", mutates_args=())
    def cross_entropy_rows_backward(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor,
                                    grad_rows: torch.Tensor) -> torch.Tensor:
        """d loss / d logits = (softmax(row) − one-hot(target)) · grad_rows[row] (0 for an ignored
        row), in the logits' dtype."""
        n, v = logits.shape
        dz = torch.empty_like(logits)
        torch.library.wrap_triton(_backward_kernel)[(n,)](logits, targets, lse, grad_rows.contiguous(), dz, v,
                                                          logits.stride(0), BLOCK=BLOCK, num_warps=NUM_WARPS)
        return dz

    def _setup(ctx: object, inputs: tuple, output: tuple) -> None:
        logits, targets = inputs
        ctx.save_for_backward(logits, targets, output[1])  # type: ignore[attr-defined]

    def _backward(ctx: object, grad_rows: torch.Tensor, _grad_lse: torch.Tensor | None) -> tuple:
        logits, targets, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        return cross_entropy_rows_backward(logits, targets, lse, grad_rows), None

    cross_entropy_rows.register_autograd(_backward, setup_context=_setup)


def fused_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `logits` (N, V) against `targets` (N,), targets of -1 ignored: what
    `F.cross_entropy(logits.float(), targets, ignore_index=-1)` returns, in two Triton kernels."""
    rows, _ = torch.ops.gptperf.cross_entropy_rows(logits.contiguous(), targets.contiguous())
    return rows.sum() / (targets != -1).sum()
