"""The plan's master weights (`gptperf.steps.master_weights`): a model whose blocks' Linear weights
are bf16, stepped through fp32 copies, against AdamW run by hand on fp32 copies of the same
gradients; its checkpoints, its plan rules, and what the performance model charges for it."""

from __future__ import annotations

import pytest
import torch

from gptperf import names
from gptperf.checkpoint import load_checkpoint
from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.perfmodel import Workload, adhoc_hardware, count_parameters, predict
from gptperf.perfmodel.kernel_calls import step_ops
from gptperf.perfmodel.memory import memory_breakdown
from gptperf.perfmodel.workload import master_copied_parameters
from gptperf.plan import ExecutionPlan
from gptperf.runtime import autocast
from gptperf.steps.build import build_step
from gptperf.steps.master_weights import MasterWeights
from gptperf.steps.train import TrainSettings

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CFG = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
EAGER = ExecutionPlan.eager(CFG.attention)
BF16 = Workload("train", 2, 8, "bf16")
LINEARS = ("c_attn", "c_proj", "c_fc")  # the blocks' Linear layers, by name (the head is the embedding)


def _copied(name: str) -> bool:
    return any(f".{layer}." in name for layer in LINEARS)


def _batches(n: int):
    """`n` random (inputs, targets) of 2 sequences of 8 tokens, the same every call."""
    tokens = torch.randint(0, CFG.vocab_size, (n, 2, 9), generator=torch.Generator().manual_seed(1))
    return [(t[:, :-1], t[:, 1:]) for t in tokens]


def _step(plan: ExecutionPlan, clip: float = 0.05):
    return build_step(CFG, BF16, plan, "cpu", seed=5, train_settings=TrainSettings(grad_clip=clip))


def test_copies_are_the_fp32_weights_from_before_the_cast() -> None:
    ref = _step(EAGER)
    step = _step(EAGER.replace(master_weights=True))
    assert step.train.master is not None
    master = step.train.master
    copy_of = {id(p): m for p, m in zip(master.params, master.master, strict=True)}
    for (name, p), q in zip(step.model.named_parameters(), ref.model.parameters(), strict=True):
        if _copied(name):
            m = copy_of[id(p)]
            assert p.dtype == torch.bfloat16 and m.dtype == torch.float32, name
            assert torch.equal(m, q) and torch.equal(p, q.to(torch.bfloat16)), name
        else:  # embeddings (the tied head), LayerNorms: fp32, stepped as they are
            assert id(p) not in copy_of and p.dtype == torch.float32 and torch.equal(p, q), name
    assert len(master.params) == 4 * 2 * CFG.n_layer
    stepped = [p for g in step.train.optimizer.param_groups for p in g["params"]]
    fp32_params = [p for p in step.model.parameters() if id(p) not in copy_of]
    assert sorted(id(p) for p in stepped) == sorted(id(t) for t in master.master + fp32_params)
    assert [id(t) for t in master.stepped] == [id(copy_of.get(id(p), p)) for p in step.model.parameters()]


@pytest.mark.parametrize("fused", [True, False], ids=["in-kernel", "clip_grad_norm_"])
def test_a_step_is_adamw_on_fp32_copies_of_the_bf16_gradients(fused: bool) -> None:
    """Both update paths (the fused kernel's in-kernel clip, and clip_grad_norm_ then AdamW)
    against the textbook step on fp32 copies; a clip small enough that every step is clipped."""
    step = _step(EAGER.replace(fused_optimizer=fused, master_weights=True))
    ref = _step(EAGER)
    model = ref.model
    copies = [q.detach().clone().requires_grad_(True) for q in model.parameters()]  # fp32
    with torch.no_grad():  # the same bf16 Linear weights, stepped by hand
        for name, p in model.named_parameters():
            if _copied(name):
                p.data = p.data.to(torch.bfloat16)
    params = list(model.parameters())
    decay = [c for c in copies if c.dim() >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": [c for c in copies if c.dim() < 2], "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.99))
    for x, y in _batches(3):
        step.train.next_batch = lambda x=x, y=y: (x, y)
        loss = step.train.run()
        with autocast(torch.device("cpu"), "bf16"):
            _, ref_loss = model(x, y)
        ref_loss.backward()
        for c, p in zip(copies, params, strict=True):
            c.grad = p.grad.float()
        torch.nn.utils.clip_grad_norm_(copies, 0.05)
        opt.step()
        with torch.no_grad():
            for c, p in zip(copies, params, strict=True):
                p.copy_(c)
                p.grad = None
        assert loss == pytest.approx(ref_loss.item(), rel=1e-6)
    master = step.train.master
    copy_of = {id(p): m for p, m in zip(master.params, master.master, strict=True)}
    for (name, p), c in zip(step.model.named_parameters(), copies, strict=True):
        torch.testing.assert_close(copy_of.get(id(p), p).float(), c, rtol=1e-5, atol=1e-6, msg=name)
        if id(p) in copy_of:  # the model holds the copies, rounded
            assert torch.equal(p, copy_of[id(p)].to(torch.bfloat16)), name


def test_state_dict_holds_the_copies_and_loads_them_exactly() -> None:
    step = _step(EAGER.replace(master_weights=True))
    step.train.run()
    master = step.train.master
    state = master.state_dict()
    tied = state["lm_head.weight"], state["transformer.wte.weight"]
    assert tied[0].data_ptr() == tied[1].data_ptr()  # tied: one tensor under two names
    assert all(v.dtype == torch.float32 for v in state.values())
    fresh = _step(EAGER.replace(master_weights=True))
    fresh.train.master.load_state_dict(state)
    for a, b in zip(fresh.train.master.master, master.master, strict=True):
        assert torch.equal(a, b)
    for (name, p), q in zip(fresh.model.named_parameters(), step.model.parameters(), strict=True):
        assert p.dtype == q.dtype and torch.equal(p, q), name
    master.restore()
    for name, p in step.model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, state[name]), name


def test_optimizer_state_moves_between_plans_parameter_by_parameter() -> None:
    """The optimizer steps the copies in their weights' places: AdamW's state saved without master
    weights loads into a step with them (and back) onto the same parameters."""
    plain, master = _step(EAGER.replace(fused_optimizer=True)), _step(EAGER.replace(fused_optimizer=True,
                                                                                   master_weights=True))
    plain.train.run()
    saved = plain.train.optimizer.state_dict()
    master.train.optimizer.load_state_dict(saved)
    params = [p for g in plain.train.optimizer.param_groups for p in g["params"]]
    stepped = [p for g in master.train.optimizer.param_groups for p in g["params"]]
    for p, t in zip(params, stepped, strict=True):
        state = master.train.optimizer.state[t]
        assert state["exp_avg"].shape == t.shape == p.shape
        assert torch.equal(state["exp_avg"], plain.train.optimizer.state[p]["exp_avg"])
    master.train.run()  # and it steps from there
    plain.train.optimizer.load_state_dict(master.train.optimizer.state_dict())


def test_a_parameter_without_gradient_is_an_error() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    master = MasterWeights(model)
    model[0](torch.ones(1, 2, dtype=torch.bfloat16)).sum().backward()
    with pytest.raises(RuntimeError, match="2 parameter"):
        master.gradients_in()


@pytest.mark.parametrize(("kind", "dtype", "needle"), [
    ("train", "fp32", "not a train step in fp32"),
    ("train", "fp16", "in fp16"),
    ("forward", "bf16", "not a forward step"),
])
def test_master_weights_are_for_bf16_train_steps(kind: str, dtype: str, needle: str) -> None:
    plan = ExecutionPlan("compiled", master_weights=True)
    with pytest.raises(UserError, match=needle) as err:
        plan.check(kind, dtype)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=needle):
        build_step(CFG, Workload(kind, 2, 8, dtype), plan, "cpu")
    with pytest.raises(UserError, match=needle):
        predict(CFG, Workload(kind, 2, 8, dtype), adhoc_hardware(100, 1000), plan)


def test_master_weights_are_refused_under_ddp(tmp_path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from gptperf.model import GPT
    from gptperf.steps.train import TrainStep

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        model = DDP(GPT(CFG))
        with pytest.raises(UserError, match="under DDP use master_weights=false"):
            TrainStep(model, EAGER.replace(master_weights=True), torch.device("cpu"), "bf16",
                      lambda: _batches(1)[0])
        assert all(p.dtype == torch.float32 for p in model.parameters())  # refused before any cast
        # DDP's reducer gone while the group still lives: dropped last, at the function's end, it
        # destroyed the group holding the GIL, and joined a gloo thread that waited for the GIL
        # to free a broadcast's tensors (a hang seen once in CI)
        del model
    finally:
        dist.destroy_process_group()


def test_defaults_keep_master_weights_for_the_compiled_bf16_cuda_step() -> None:
    d = ExecutionPlan.default
    on = d("train", "cuda", compile=True, dtype="bf16")
    assert on.master_weights and on.fused_master_update
    assert on.label.endswith("bf16 matmul weights, fp32 master, one-pass master AdamW")
    for off in (d("train", "cuda", compile=True, dtype="fp32"), d("train", "cuda", compile=True),
                d("train", "cuda", dtype="bf16"), d("train", "cpu", compile=True, dtype="bf16"),
                d("train", "cuda", compile=True, dtype="bf16", ddp=True)):
        assert not off.master_weights and not off.fused_master_update, off
    plan = d("train", "cuda", compile=True, dtype="bf16")
    assert ExecutionPlan.from_dict(plan.to_dict()) == plan


def test_resume_with_master_weights_reproduces_the_run_and_saves_fp32(tmp_path, monkeypatch) -> None:
    """`gptperf train` under master weights (forced on the CPU): the checkpoint holds the fp32
    copies, a resumed run repeats the uninterrupted one bitwise, the result's model is fp32."""
    from gptperf.train import TrainConfig, train

    plan = ExecutionPlan("eager", CFG.attention, fused_optimizer=True, master_weights=True)
    monkeypatch.setattr(ExecutionPlan, "default", classmethod(lambda cls, *a, **k: plan))

    def cfg(out, **over):
        values = dict(model=dict(n_layer=1, n_head=2, n_embd=32, block_size=32), batch=4, seq=32,
                      lr=3e-3, warmup_iters=2, eval_interval=3, eval_iters=1, device="cpu",
                      dtype="bf16", out_dir=str(out))
        return TrainConfig.for_preset("tiny", **{**values, **over})

    straight = train(cfg(tmp_path / "a", max_iters=6))
    assert straight.plan.master_weights
    assert all(p.dtype == torch.float32 for p in straight.model.parameters())
    half = train(cfg(tmp_path / "b", max_iters=3))
    saved = load_checkpoint(half.checkpoint)["model"]
    assert all(v.dtype == torch.float32 for v in saved.values())
    for name, p in half.model.named_parameters():  # the result's model: the copies themselves
        assert torch.equal(p, saved[name]), name
    resumed = train(cfg(tmp_path / "b", max_iters=6, resume=True))
    assert resumed.losses == straight.losses
    a, b = (load_checkpoint(r.checkpoint)["model"] for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- what the performance model charges --------------------------------------------------------


def test_kernel_calls_drop_the_weight_casts_and_add_two_to_the_optimizer() -> None:
    config, w = preset("gpt2"), Workload("train", 12, 1024, "bf16")
    plan = ExecutionPlan("compiled", fused_optimizer=True, fused_loss=True)
    P = count_parameters(config)

    def calls(p: ExecutionPlan, comp: str, phase: str) -> list:
        return [c for name, ph, layer, cs in step_ops(config, w, p) if name == comp and ph == phase
                and layer in (0, None) for c in cs]

    Q = master_copied_parameters(config)
    master = plan.replace(master_weights=True)
    # mlp.fc: its input (the fp32 LayerNorm output) cast, then its weight and its bias (read from
    # memory: a curve of their own), then the matmul
    assert [c.key for c in calls(plan, names.MLP_FC, names.FORWARD)] == [
        "cast_to_bf16:fp32", "cast_weight_to_bf16:fp32", "cast_weight_to_bf16:fp32", "bf16"]
    assert [c.key for c in calls(master, names.MLP_FC, names.FORWARD)] == ["cast_to_bf16:fp32", "bf16"]
    # its backward: the weight's and the bias's gradients cast back to fp32 (none with master
    # weights), then its input's (the LayerNorm output's, both ways)
    N, C = w.batch * w.seq, config.n_embd
    casts = {p_.master_weights: [c.point for c in calls(p_, names.MLP_FC, names.BACKWARD)
                                 if c.key.startswith("cast_")] for p_ in (plan, master)}
    assert casts == {False: [(6.0 * C * 4 * C,), (6.0 * 4 * C,), (6.0 * N * C,)], True: [(6.0 * N * C,)]}
    for phase in (names.FORWARD, names.BACKWARD):  # the head is the fp32 embedding: cast as before
        assert calls(master, names.LM_HEAD, phase) == calls(plan, names.LM_HEAD, phase)
    opt = calls(master, names.OPTIMIZER, names.OPTIMIZER_PHASE)
    assert [(c.key, c.point) for c in opt] == [
        ("cast_to_fp32:bf16", (6.0 * Q,)), ("adamw_fused", (148.0, float(P))),
        ("sum_rows:fp32", (4.0 * P,)), ("cast_to_bf16:fp32", (6.0 * Q,))]


def test_roofline_and_memory_follow_the_bf16_weights_and_fp32_copies() -> None:
    config, w = preset("gpt2"), Workload("train", 12, 1024, "bf16")
    plan = ExecutionPlan("compiled", fused_optimizer=True, fused_loss=True)
    master = plan.replace(master_weights=True)
    P, buffers = count_parameters(config), config.n_layer * config.block_size ** 2
    Q = master_copied_parameters(config)
    C, V = config.n_embd, config.vocab_size
    assert Q == config.n_layer * (12 * C * C + 9 * C)
    hw = adhoc_hardware(100, 1000)
    opt = predict(config, w, hw, master).op(names.OPTIMIZER, names.OPTIMIZER_PHASE)
    assert (opt.bytes_read, opt.bytes_written) == (16 * P + 6 * Q, 12 * P + 6 * Q)
    qkv = predict(config, w, hw, master).op(names.layer_name(0, names.ATTN_QKV))
    qkv_autocast = predict(config, w, hw, plan).op(names.layer_name(0, names.ATTN_QKV))
    assert qkv_autocast.bytes_read - qkv.bytes_read == 2 * (3 * C * C + 3 * C)  # weight, bias: 4 -> 2 bytes
    m, a = memory_breakdown(config, w, master), memory_breakdown(config, w, plan)
    assert (m.weights, m.gradients, m.optimizer_state, m.weight_copies) == (
        4 * P + 2 * Q + buffers, 4 * P - 2 * Q, 8 * P + 4 * Q, V * C * 2)
    assert (a.weights, a.gradients, a.optimizer_state) == (4 * P + buffers, 4 * P, 8 * P)
    assert m.activations == a.activations  # the residual stream stays fp32
    # the one-pass update: reads the bf16 gradients, writes the bf16 weights; no fp32 gradient copies
    one = master.replace(fused_master_update=True)
    opt = predict(config, w, hw, one).op(names.OPTIMIZER, names.OPTIMIZER_PHASE)
    assert (opt.bytes_read, opt.bytes_written) == (16 * P - 2 * Q, 12 * P + 2 * Q)
    o = memory_breakdown(config, w, one)
    assert (o.weights, o.gradients, o.optimizer_state) == (m.weights, m.gradients, 8 * P)
    assert o.total == m.total - 4 * Q  # the copies' gradients are alive all step
    for eager in (master, one):  # the eager model keeps the same state
        e = memory_breakdown(config, w, eager.replace(mode="eager", fused_loss=False))
        assert e.optimizer_state == (8 * P if eager.fused_master_update else 8 * P + 4 * Q)
