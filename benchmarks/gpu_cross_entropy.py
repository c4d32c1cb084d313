"""Would a one-pass cross-entropy speed up the gpt2 train step? A prototype measured beside what
inductor generates, on the step's logits (12288 × 50304 bf16, gpt2 B=12 T=1024).

    python benchmarks/gpu_cross_entropy.py          # CUDA: parity, then timing
    TRITON_INTERPRET=1 python benchmarks/gpu_cross_entropy.py --cpu   # parity only, small shape

In the compiled step inductor's forward takes 0.84 ms for one 1.24 GB read of the logits
(1.5 TB/s) and its backward 0.73 ms (BENCHMARKS.md, "The training step's last 2 ms"). Here the
forward streams each row once with an online log-sum-exp (4 bytes a row kept) and the backward
writes softmax − one-hot in one pass. Parity: loss and gradient against a float64 computation.
Prints one table. A prototype: the train step does not use it.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

ROWS, VOCAB = 12 * 1024, 50304
BLOCK = 4096


@triton.jit
def _ce_forward(z_ptr, t_ptr, lse_ptr, loss_ptr, V, stride, BLOCK: tl.constexpr):
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
def _ce_backward(z_ptr, t_ptr, lse_ptr, g_ptr, dz_ptr, V, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    t = tl.load(t_ptr + row)
    lse = tl.load(lse_ptr + row)
    g = tl.load(g_ptr + row)  # d loss / d row loss (0 for an ignored row)
    for v0 in range(0, V, BLOCK):
        cols = v0 + tl.arange(0, BLOCK)
        ok = cols < V
        z = tl.load(z_ptr + row * stride + cols, mask=ok, other=0.0, eviction_policy="evict_first").to(tl.float32)
        p = tl.exp(z - lse) - tl.where(cols == t, 1.0, 0.0)
        tl.store(dz_ptr + row * stride + cols, (p * g).to(dz_ptr.dtype.element_ty), mask=ok)


class OnePassCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits (N, V) against targets (N,), -1 ignored."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, v = logits.shape
        lse = torch.empty(n, device=logits.device, dtype=torch.float32)
        rows = torch.empty_like(lse)
        _ce_forward[(n,)](logits, targets, lse, rows, v, logits.stride(0), BLOCK=BLOCK, num_warps=8)
        count = (targets != -1).sum()
        ctx.save_for_backward(logits, targets, lse, count)
        return rows.sum() / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        logits, targets, lse, count = ctx.saved_tensors
        n, v = logits.shape
        per_row = ((targets != -1).float() * (grad / count)).contiguous()
        dz = torch.empty_like(logits)
        _ce_backward[(n,)](logits, targets, lse, per_row, dz, v, logits.stride(0), BLOCK=BLOCK, num_warps=8)
        return dz, None


def parity(device: str, rows: int, vocab: int) -> tuple[float, float]:
    """Largest |loss − ref| and |grad − ref| / max |ref grad| against float64."""
    torch.manual_seed(0)
    z = (torch.randn(rows, vocab, device=device) * 3).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, vocab, (rows,), device=device)
    t[::7] = -1
    loss = OnePassCrossEntropy.apply(z, t)
    loss.backward()
    z64 = z.detach().double().requires_grad_()
    ref = F.cross_entropy(z64, t, ignore_index=-1)
    ref.backward()
    grad_err = ((z.grad.double() - z64.grad).abs().max() / z64.grad.abs().max()).item()
    return abs(loss.item() - ref.item()), grad_err


def main() -> int:
    if "--cpu" in sys.argv:
        loss_err, grad_err = parity("cpu", 6, 5000)
        print(f"parity (interpreter, 6 × 5000): loss {loss_err:.2e}, grad {grad_err:.2e} of its largest")
        return 0 if loss_err < 1e-3 and grad_err < 1e-2 else 1
    from gptperf.measure.timer import time_fn

    loss_err, grad_err = parity("cuda", 64, VOCAB)
    dev = torch.device("cuda")
    z = (torch.randn(ROWS, VOCAB, device=dev) * 3).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, VOCAB, (ROWS,), device=dev)

    def inductor_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, ignore_index=-1)  # as autocast runs it

    compiled = torch.compile(inductor_loss)
    rows = []
    for label, fn in (("inductor (as the step)", lambda: compiled(z, t)),
                      ("one pass (prototype)", lambda: OnePassCrossEntropy.apply(z, t))):
        fwd = time_fn(lambda fn=fn: fn(), warmup=5, repeats=30, device=dev).median
        # autograd.grad: the gradient returned, not accumulated into z.grad (another 3.7 GB pass)
        both = time_fn(lambda fn=fn: torch.autograd.grad(fn(), z), warmup=5, repeats=30, device=dev).median
        rows.append((label, fwd, both))
    gb = ROWS * VOCAB * 2 / 1e9
    print(f"parity (64 × {VOCAB}, bf16 logits): loss {loss_err:.2e}, grad {grad_err:.2e} of its largest")
    print(f"\n{'cross-entropy, ' + str(ROWS) + ' × ' + str(VOCAB) + ' bf16 (H200)':44} {'forward ms':>10} "
          f"{'fwd+bwd ms':>10} {'fwd GB/s':>9}")
    for label, fwd, both in rows:
        print(f"{label:44} {fwd * 1e3:10.3f} {both * 1e3:10.3f} {gb / fwd:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
