"""The one-pass master update (`gptperf.steps.master_adamw`, the plan's `fused_master_update`)
against torch's AdamW stepping fp32 copies of the same bf16 gradients: every copy, moment and
step count, with a gradient scale and a skipped step; the bf16 weights written as the copies
rounded; the optimizer state it keeps loadable by torch's AdamW. On the CPU with
TRITON_INTERPRET=1 and Triton installed the kernel runs in Triton's interpreter (which rounds
fp32 to bf16 by truncation: the weights are held to one bf16 step there, exactly on CUDA); the
`gpu` tests run it on CUDA, and a whole train step against the plain master update. Everywhere:
the plan's rules, the refusal without CUDA, and the fp32 norm of mixed-dtype gradients."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps import master_adamw
from gptperf.steps.build import build_step
from gptperf.steps.train import TrainSettings, make_optimizer, total_norm

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and master_adamw.triton is not None
interpreter = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 and triton")
cuda = pytest.mark.skipif(not (torch.cuda.is_available() and master_adamw.triton is not None),
                          reason="needs CUDA and Triton")
# ragged against the kernel's block (1024): tails, a tensor smaller than a block;
# then sizes of whole 16-byte vectors (the kernel's aligned variant)
SHAPES = [(7, 300), (300,), (64, 64), (5000,), (3, 2048)]
ALIGNED_SHAPES = [(96, 32), (96,), (32, 128), (32,)]
SETTINGS = TrainSettings(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)


def _adamw(tensors: list[torch.Tensor]) -> torch.optim.AdamW:
    """torch's AdamW as the train step builds it (`make_optimizer`: decay on 2-D tensors only)."""
    return make_optimizer(tensors, SETTINGS)


def _bf16_step(w: torch.Tensor) -> torch.Tensor:
    """One bf16 step (unit in the last place) at each of `w`'s values."""
    exp = torch.floor(torch.log2(w.abs().clamp_min(1e-30)))
    return torch.exp2(exp - 7)


def _compare(device: str, exact_rounding: bool, shapes: list[tuple[int, ...]]) -> None:
    torch.manual_seed(0)
    w32 = [torch.randn(s, device=device) for s in shapes]
    weights = [torch.nn.Parameter(t.to(torch.bfloat16)) for t in w32]
    copies = [t.clone().requires_grad_(True) for t in w32]
    ours = master_adamw.MasterAdamW(weights, copies, _adamw(copies))
    ref = [t.clone().requires_grad_(True) for t in w32]
    ref_opt = _adamw(ref)
    for i in range(4):
        skip, scale = i == 2, 1.0 + i  # the third step is skipped (a non-finite norm, say)
        for w, r in zip(weights, ref, strict=True):
            w.grad = torch.randn(w.shape, device=device).to(torch.bfloat16)
            r.grad = w.grad.float() / scale
        ours.step(torch.tensor(scale, device=device), torch.tensor(float(skip), device=device))
        if not skip:
            ref_opt.step()
        for c, r, w in zip(copies, ref, weights, strict=True):
            torch.testing.assert_close(c, r, rtol=3e-6, atol=1e-6)
            s, rs = ours.optimizer.state[c], ref_opt.state[r]
            torch.testing.assert_close(s["exp_avg"], rs["exp_avg"], rtol=3e-6, atol=1e-7)
            torch.testing.assert_close(s["exp_avg_sq"], rs["exp_avg_sq"], rtol=3e-6, atol=1e-9)
            assert s["step"].item() == rs["step"].item() == i + 1 - (i >= 2)
            if exact_rounding:
                assert torch.equal(w, c.detach().to(torch.bfloat16))
            else:
                assert ((w.float() - c.detach()).abs() <= _bf16_step(c.detach())).all()
    assert all(g is not None for g in (w.grad for w in weights))  # left as they were


@interpreter
@pytest.mark.parametrize("shapes", [SHAPES, ALIGNED_SHAPES], ids=["ragged", "aligned"])
def test_interpreted_kernel_is_adamw_on_fp32_copies(shapes: list[tuple[int, ...]]) -> None:
    _compare("cpu", exact_rounding=False, shapes=shapes)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("shapes", [SHAPES, ALIGNED_SHAPES], ids=["ragged", "aligned"])
def test_kernel_is_adamw_on_fp32_copies_on_cuda(shapes: list[tuple[int, ...]]) -> None:
    _compare("cuda", exact_rounding=True, shapes=shapes)


@interpreter
def test_its_state_is_adamws() -> None:
    """A checkpoint's optimizer state after the one-pass update loads into torch's AdamW, which
    then steps on exactly as the update would."""
    torch.manual_seed(1)
    w32 = [torch.randn(s) for s in SHAPES]
    weights = [torch.nn.Parameter(t.to(torch.bfloat16)) for t in w32]
    copies = [t.clone().requires_grad_(True) for t in w32]
    ours = master_adamw.MasterAdamW(weights, copies, _adamw(copies))
    for w in weights:
        w.grad = torch.randn(w.shape).to(torch.bfloat16)
    ours.step()
    other = [c.detach().clone().requires_grad_(True) for c in copies]
    other_opt = _adamw(other)
    other_opt.load_state_dict(copy.deepcopy(ours.optimizer.state_dict()))  # as a checkpoint holds it
    for w, o in zip(weights, other, strict=True):  # another gradient: with the same one a fresh
        w.grad = torch.randn(w.shape).to(torch.bfloat16)  # AdamW's step would be the same
        o.grad = w.grad.float()
    ours.step()
    other_opt.step()
    for c, o in zip(copies, other, strict=True):
        torch.testing.assert_close(c, o, rtol=1e-6, atol=1e-6)


def test_plan_rules() -> None:
    train = ExecutionPlan("compiled", fused_optimizer=True, master_weights=True, fused_master_update=True)
    train.check("train", "bf16")
    for bad in (train.replace(master_weights=False), train.replace(fused_optimizer=False)):
        with pytest.raises(UserError, match="fused_master_update"):
            bad.check("train", "bf16")
    with pytest.raises(UserError, match="fused_master_update must be true or false"):
        ExecutionPlan(fused_master_update="yes")
    assert ExecutionPlan.from_dict(train.to_dict()) == train
    assert ExecutionPlan.from_dict({"mode": "eager"}).fused_master_update is False  # older records


def test_train_step_refuses_it_without_cuda() -> None:
    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    plan = ExecutionPlan("eager", cfg.attention, fused_optimizer=True, master_weights=True,
                         fused_master_update=True)
    with pytest.raises(UserError, match="fused_master_update runs a Triton kernel on a CUDA GPU"):
        build_step(cfg, Workload("train", 2, 8, "bf16"), plan, "cpu", seed=0)


def test_total_norm_is_fp32_over_mixed_dtypes() -> None:
    torch.manual_seed(2)
    grads = [torch.randn(1000).to(torch.bfloat16), torch.randn(30, 7), torch.randn(5).to(torch.bfloat16)]
    want = torch.cat([g.double().flatten() for g in grads]).norm()
    got = total_norm(grads)
    assert got.dtype == torch.float32
    assert abs(got.item() / want.item() - 1) < 1e-6
    ref = torch.nn.utils.get_total_norm(grads[1:2], foreach=True)  # fp32 alone: the same as torch's
    assert torch.equal(total_norm(grads[1:2]), ref)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("clip", [1e-3, 0.0], ids=["clipped", "unclipped"])
def test_train_step_matches_the_plain_master_update_on_cuda(clip: float) -> None:
    """An eager bf16 step of a small GPT with the one-pass update and with the casts around
    AdamW's kernel, from the same weights and batch: the same copies to fp32 rounding, and each
    path's bf16 weights its copies rounded. Then seven more: the same losses to 0.5% (the two runs' weights
    part by a rounding now and then, and AdamW magnifies what that does to small gradients)."""
    cfg = preset("tiny", n_layer=2, n_embd=64, n_head=2, block_size=64, attention="math")
    work = Workload("train", 4, 32, "bf16")
    plain = ExecutionPlan("eager", cfg.attention, fused_optimizer=True, master_weights=True)
    steps = [build_step(cfg, work, p, "cuda", seed=3, train_settings=TrainSettings(grad_clip=clip))
             for p in (plain, plain.replace(fused_master_update=True))]
    first = [s.train.run() for s in steps]
    assert first[0] == first[1]
    a, b = (s.train.master for s in steps)
    assert steps[1].train.master_update is not None and all(c.grad is None for c in b.master)
    for x, y in zip(a.master, b.master, strict=True):
        torch.testing.assert_close(x, y, rtol=3e-6, atol=1e-7)
    for path in (a, b):  # each path's bf16 weights are its copies rounded
        assert all(torch.equal(w, c.detach().to(torch.bfloat16)) for w, c in zip(path.params, path.master, strict=True))
    for _ in range(7):
        losses = [s.train.run() for s in steps]
        assert losses[1] == pytest.approx(losses[0], rel=5e-3)


@interpreter
def test_resume_under_the_one_pass_update_continues_the_run(tmp_path, monkeypatch) -> None:
    """`gptperf train` with the one-pass update (forced on the CPU, the kernel interpreted): a run
    stopped at step 3 and resumed continues the uninterrupted one, its copies, moments and step
    counts coming back from the checkpoint. (Not bitwise here: the interpreter rounds the copies
    to bf16 by truncation and the resume rounds them to nearest; the CUDA kernel rounds to
    nearest too.)"""
    from gptperf.checkpoint import load_checkpoint
    from gptperf.train import TrainConfig, train

    plan = ExecutionPlan("eager", "sdpa", fused_optimizer=True, master_weights=True, fused_master_update=True)
    monkeypatch.setattr(ExecutionPlan, "default", classmethod(lambda cls, *a, **k: plan))
    monkeypatch.setattr(master_adamw, "available", lambda device: True)

    def cfg(out, **over):
        values = dict(model=dict(n_layer=1, n_head=2, n_embd=32, block_size=32, attention="sdpa"), batch=4,
                      seq=32, lr=3e-3, warmup_iters=2, eval_interval=3, eval_iters=1, device="cpu",
                      dtype="bf16", out_dir=str(out))
        return TrainConfig.for_preset("tiny", **{**values, **over})

    straight = train(cfg(tmp_path / "a", max_iters=6))
    assert straight.plan.fused_master_update
    train(cfg(tmp_path / "b", max_iters=3))
    resumed = train(cfg(tmp_path / "b", max_iters=6, resume=True))
    assert resumed.losses[:3] == straight.losses[:3]
    assert resumed.losses[3:] == pytest.approx(straight.losses[3:], rel=2e-3)
    a, b = (load_checkpoint(r.checkpoint)["optimizer"]["state"] for r in (straight, resumed))
    assert len(a) == len(b) == len(list(straight.model.parameters()))  # the copies' state is there
    for i, s in a.items():  # moments carried over, not begun again at the resume (a quarter off, then)
        assert s["step"].item() == b[i]["step"].item() == 6
        scale = s["exp_avg"].abs().max()
        assert ((s["exp_avg"] - b[i]["exp_avg"]).abs() <= 0.25 * scale).all()
