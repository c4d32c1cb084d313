"""The one-pass cross-entropy of the compiled train step (`gptperf.steps.cross_entropy`) beside
what inductor generates for the model's own F.cross_entropy, on the step's logits (12288 × 50304
bf16, gpt2 B=12 T=1024).

    python benchmarks/gpu_cross_entropy.py          # CUDA: parity, then timing

In the compiled step inductor's forward took 0.84 ms for one 1.24 GB read of the logits
(1.5 TB/s) and its backward 0.73 ms (BENCHMARKS.md, "The training step's last 2 ms"); the
one-pass kernels read each row once forward and read and write it once backward. Parity: loss
and gradient against a float64 computation. Prints one table.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from gptperf.steps.cross_entropy import fused_cross_entropy

ROWS, VOCAB = 12 * 1024, 50304


def parity(device: str, rows: int, vocab: int) -> tuple[float, float]:
    """Largest |loss − ref| and |grad − ref| / max |ref grad| against float64."""
    torch.manual_seed(0)
    z = (torch.randn(rows, vocab, device=device) * 3).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, vocab, (rows,), device=device)
    t[::7] = -1
    loss = fused_cross_entropy(z, t)
    loss.backward()
    z64 = z.detach().double().requires_grad_()
    ref = F.cross_entropy(z64, t, ignore_index=-1)
    ref.backward()
    grad_err = ((z.grad.double() - z64.grad).abs().max() / z64.grad.abs().max()).item()
    return abs(loss.item() - ref.item()), grad_err


def main() -> int:
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
                      ("one pass (gptperf)", lambda: fused_cross_entropy(z, t))):
        fwd = time_fn(lambda fn=fn: fn(), warmup=5, repeats=30, device=dev).median
        # autograd.grad: the gradient returned, not accumulated into z.grad (another 3.7 GB pass)
        both = time_fn(lambda fn=fn: torch.autograd.grad(fn(), z), warmup=5, repeats=30, device=dev).median
        rows.append((label, fwd, both))
    gb = ROWS * VOCAB * 2 / 1e9
    print(f"parity (64 × {VOCAB}, bf16 logits): loss {loss_err:.2e}, grad {grad_err:.2e} of its largest")
    print(f"\n{torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    print(f"{'cross-entropy, ' + str(ROWS) + ' × ' + str(VOCAB) + ' bf16':44} {'forward ms':>10} "
          f"{'fwd+bwd ms':>10} {'fwd GB/s':>9}")
    for label, fwd, both in rows:
        print(f"{label:44} {fwd * 1e3:10.3f} {both * 1e3:10.3f} {gb / fwd:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
