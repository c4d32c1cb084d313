"""The one-pass cross-entropy kernels (gptperf.steps.cross_entropy) against a float64
F.cross_entropy: loss and gradient, ignored rows, eager and inside torch.compile, and the compiled
train step that runs them against the model's own loss. GPU only (Triton on CUDA)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptperf.steps import cross_entropy as ce

cuda = pytest.mark.skipif(not (torch.cuda.is_available() and ce.available(torch.device("cuda"))),
                          reason="needs CUDA and Triton")
pytestmark = [pytest.mark.gpu, cuda]


def _case(rows: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    z = (torch.randn(rows, vocab, device="cuda") * 3).to(torch.bfloat16)
    t = torch.randint(0, vocab, (rows,), device="cuda")
    t[::7] = -1  # ignored rows
    return z, t


def _reference(z: torch.Tensor, t: torch.Tensor) -> tuple[float, torch.Tensor]:
    z64 = z.detach().double().requires_grad_()
    loss = F.cross_entropy(z64, t, ignore_index=-1)
    loss.backward()
    return loss.item(), z64.grad


@pytest.mark.parametrize("vocab", [50304, 5000, 4096])  # gpt2's; a ragged last block; one block
def test_loss_and_gradient_match_float64(vocab: int) -> None:
    z, t = _case(64, vocab)
    ref_loss, ref_grad = _reference(z, t)
    leaf = z.clone().requires_grad_()
    loss = ce.fused_cross_entropy(leaf, t)
    loss.backward()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-5)
    # bf16 gradient: rounding of each element, 2^-8 of the largest
    assert (leaf.grad.double() - ref_grad).abs().max().item() <= 2 ** -8 * ref_grad.abs().max().item()
    assert leaf.grad[::7].abs().max().item() == 0  # ignored rows get no gradient


def test_compiled_loss_runs_the_same_kernels() -> None:
    z, t = _case(96, 50304)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    eager = ce.fused_cross_entropy(a, t)
    compiled = torch.compile(ce.fused_cross_entropy, fullgraph=True)(b, t)
    eager.backward()
    compiled.backward()
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-6)
    assert torch.equal(a.grad, b.grad)


def test_compiled_train_step_with_the_fused_loss_matches_the_models_own_loss() -> None:
    from gptperf.model import GPT, preset
    from gptperf.steps.train import _LossOnly

    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=5000)).cuda()
    x = torch.randint(0, model.config.vocab_size, (4, 64), device="cuda")
    y = torch.randint(0, model.config.vocab_size, (4, 64), device="cuda")
    y[:, :3] = -1
    losses, grads = [], []
    for loss_fn in (None, ce.fused_cross_entropy):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = torch.compile(_LossOnly(model, loss_fn))(x, y)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.transformer.wte.weight.grad.clone())
    assert losses[1] == pytest.approx(losses[0], rel=2e-3)
    assert torch.allclose(grads[1], grads[0], rtol=0.05, atol=0.02 * grads[0].abs().max().item())
