"""The steps every command runs: build_step for each workload and plan, the one train step shared
by `train`, `bench train` and `profile --workload train`, and the plan each command's JSON records
(the plan that ran, and the one its prediction was made for)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from gptperf import names
from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.perfmodel import Workload, get_hardware, predict
from gptperf.plan import ExecutionPlan
from gptperf.steps.build import build_step
from gptperf.steps.train import TrainSettings, TrainStep

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CFG = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
SMALL = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32"]
EAGER = ExecutionPlan.eager(CFG.attention)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def compile_calls(monkeypatch) -> list:
    """torch.compile replaced by the callable itself, counted: the compiled branch of every step
    runs (and is recorded) without minutes of inductor on a CPU."""
    calls: list = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(fn) or fn)
    return calls


@pytest.mark.parametrize("kind", ["train", "forward", "prefill", "decode", "decode_nocache"])
def test_every_workload_builds_and_runs(kind: str) -> None:
    step = build_step(CFG, Workload(kind, 2, 8), EAGER, "cpu")
    step.step()
    expected = [names.FORWARD, names.BACKWARD, names.OPTIMIZER_PHASE] if kind == "train" else [names.FORWARD]
    assert [n for n, _ in step.phases] == expected
    assert step.plan == EAGER and step.tokens_per_step == (2 if kind.startswith("decode") else 16)
    assert (step.train is not None) == (kind == "train")
    assert next(step.model.parameters()).dtype == torch.float32
    assert step.model.training == (kind == "train") and step.kind == kind


def test_fast_plans_on_cpu(compile_calls) -> None:
    for kind in ("prefill", "decode", "decode_nocache"):
        plan = ExecutionPlan.default(kind, "cpu", fast=True, attention=CFG.attention)
        step = build_step(CFG, Workload(kind, 2, 8), plan, "cpu")
        step.step()
        assert step.plan == plan and plan.compiled and plan.static_cache == (kind != "decode_nocache")
    assert len(compile_calls) == 3


@pytest.mark.parametrize(("plan", "needle"), [
    (ExecutionPlan("cuda_graph", CFG.attention, static_cache=True), "CUDA"),
    (ExecutionPlan("eager", "math"), "attention"),
    (ExecutionPlan("eager", CFG.attention, static_cache=True), "static_cache"),
    (ExecutionPlan("compiled", CFG.attention, fused_loss=True), "fused_loss=false"),  # no Triton on a CPU
])
def test_steps_that_cannot_run_are_one_line_errors(plan: ExecutionPlan, needle: str) -> None:
    kind = "decode" if plan.cuda_graph else "train"
    with pytest.raises(UserError, match=needle) as err:
        build_step(CFG, Workload(kind, 2, 8), plan, "cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="block_size"):
        build_step(CFG, Workload("train", 2, 64), EAGER, "cpu")


def test_one_row_kernel_without_triton_is_dropped_and_said(compile_calls) -> None:
    plan = ExecutionPlan("compiled", CFG.attention, static_cache=True, one_row_kernel=True)
    step = build_step(CFG, Workload("decode", 1, 8), plan, "cpu")
    assert step.plan == plan.replace(one_row_kernel=False)
    assert any("gemv" in n for n in step.notes)


def test_accumulation_repeats_forward_and_backward_per_micro_batch() -> None:
    step = build_step(CFG, Workload("train", 2, 8), EAGER, "cpu",
                      train_settings=TrainSettings(grad_accum=3))
    assert [n for n, _ in step.phases] == ["fwd", "bwd"] * 3 + ["opt"]
    assert step.tokens_per_step == 3 * 2 * 8
    step.step()


def test_phases_are_the_training_step() -> None:
    """Running the phases is running `TrainStep.run`: the same weights and optimizer state after."""
    a = build_step(CFG, Workload("train", 2, 8), EAGER, "cpu", seed=3,
                   train_settings=TrainSettings(grad_accum=2))
    b = build_step(CFG, Workload("train", 2, 8), EAGER, "cpu", seed=3,
                   train_settings=TrainSettings(grad_accum=2))
    for _ in range(2):
        a.step()
        loss = b.train.run()
    assert 0 < loss < 10
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    state_a, state_b = a.train.optimizer.state_dict()["state"], b.train.optimizer.state_dict()["state"]
    assert all(torch.equal(state_a[k]["exp_avg"], state_b[k]["exp_avg"]) for k in state_a)


FUSED = EAGER.replace(fused_optimizer=True)


def _clipped_reference_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x, y, clip: float) -> float:
    """The textbook step: backward, clip_grad_norm_, AdamW, with a host check of the loss."""
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


@pytest.mark.parametrize("clip", [0.05, 0.0])
def test_in_kernel_clipping_is_clip_grad_norm(clip: float) -> None:
    """The fused kernel's grad_scale clips exactly as clip_grad_norm_ (a small clip, so every
    step is clipped; 0: off), without waiting for the device in the step."""
    settings = TrainSettings(grad_clip=clip)
    fast = build_step(CFG, Workload("train", 2, 8), FUSED, "cpu", seed=5, train_settings=settings)
    assert fast.train.in_kernel_update
    ref = build_step(CFG, Workload("train", 2, 8), FUSED, "cpu", seed=5, train_settings=settings)
    ref_opt = ref.train.optimizer
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        tokens = torch.randint(0, CFG.vocab_size, (2, 9), generator=gen)
        x, y = tokens[:, :-1], tokens[:, 1:]
        fast.train.next_batch = lambda x=x, y=y: (x, y)
        loss = fast.train.run()
        if clip:
            ref_loss = _clipped_reference_step(ref.model, ref_opt, x, y, clip)
        else:
            _, out = ref.model(x, y)
            out.backward()
            ref_opt.step()
            ref_opt.zero_grad(set_to_none=True)
            ref_loss = out.item()
        assert loss == pytest.approx(ref_loss, rel=1e-6)
    for (name, pa), pb in zip(fast.model.named_parameters(), ref.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    assert fast.train.optimizer.grad_scale is None and fast.train.optimizer.found_inf is None


def test_in_kernel_clipping_of_bf16_weights() -> None:
    """Weights in bf16 (gpu_train_levers' `bf16params`): the norm comes out in bf16, and the fused
    kernel takes its scale in fp32 only; the step still clips as clip_grad_norm_ does."""
    settings = TrainSettings(grad_clip=0.05)
    fast, ref = (build_step(CFG, Workload("train", 2, 8), FUSED, "cpu", seed=5, train_settings=settings)
                 for _ in range(2))
    fast.model.to(torch.bfloat16)
    ref.model.to(torch.bfloat16)
    x, y = fast.train.next_batch()
    loss = fast.train.run()
    assert loss == pytest.approx(_clipped_reference_step(ref.model, ref.train.optimizer, x, y, 0.05), rel=1e-2)
    for (name, pa), pb in zip(fast.model.named_parameters(), ref.model.parameters(), strict=True):
        assert pa.dtype == torch.bfloat16, name
        torch.testing.assert_close(pa, pb, rtol=1.6e-2, atol=1e-3, msg=name)


def test_in_kernel_update_skips_a_non_finite_step() -> None:
    step = build_step(CFG, Workload("train", 2, 8), FUSED, "cpu", seed=2)
    step.train.run()
    with torch.no_grad():
        step.model.transformer.wpe.weight[0, 0] = float("inf")  # every loss from here is NaN
    before = {n: p.detach().clone() for n, p in step.model.named_parameters()}
    state = {k: {s: t.clone() for s, t in v.items()} for k, v in step.train.optimizer.state.items()}
    loss = step.train.run()
    assert loss != loss  # NaN comes back for the loop to stop on
    for n, p in step.model.named_parameters():
        assert torch.equal(p, before[n]) or torch.equal(p.isnan(), before[n].isnan()), n
        assert torch.equal(p.nan_to_num(), before[n].nan_to_num()), n
    for k, v in step.train.optimizer.state.items():
        for s, t in v.items():
            assert torch.equal(t.nan_to_num(), state[k][s].nan_to_num()), s
    assert int(next(iter(step.train.optimizer.state.values()))["step"]) == 1


def test_compiled_training_graph_returns_the_loss_alone(compile_calls) -> None:
    step = build_step(CFG, Workload("train", 2, 8), ExecutionPlan("compiled", CFG.attention), "cpu")
    logits, loss = compile_calls[0](*step.train.next_batch())
    assert logits is None and loss.dim() == 0 and loss.requires_grad


def test_compiling_ahead_leaves_the_first_step_of_a_run_nothing_to_compile(monkeypatch) -> None:
    """`gptperf train` compiles before its first timed step; that step must not compile again.
    Dynamo runs with a counting backend in place of inductor: every frame is compiled in
    `compile_now`, none in the steps (one tensor passed as both inputs and targets there had made
    the first step compile everything again: dynamo guards on aliasing)."""
    from torch._dynamo.testing import CompileCounter

    from gptperf.train import TrainConfig, train

    counter, real_compile, ahead = CompileCounter(), torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=counter))
    compile_now = TrainStep.compile_now
    monkeypatch.setattr(TrainStep, "compile_now", lambda self, *a: (
        compile_now(self, *a), ahead.append(counter.frame_count)))
    torch._dynamo.reset()
    cfg = TrainConfig.for_preset("tiny", model=dict(n_layer=1, n_embd=32, n_head=2, block_size=32),
                                 batch=2, seq=16, max_iters=3, eval_iters=1, out_dir=None, compile=True,
                                 device="cpu")
    try:
        train(cfg)
    finally:
        torch._dynamo.reset()
    assert ahead[0] >= 1 and counter.frame_count == ahead[0]


def test_bench_train_profile_train_and_train_run_the_same_step(monkeypatch, tmp_path, cli_json) -> None:
    calls: Counter[str] = Counter()
    for method in ("forward", "backward", "optimizer_step"):
        original = getattr(TrainStep, method)

        def counted(self, _original=original, _name=method) -> None:
            calls[_name] += 1
            _original(self)

        monkeypatch.setattr(TrainStep, method, counted)

    def ran() -> Counter[str]:
        seen = Counter(calls)
        calls.clear()
        return seen

    doc = cli_json("bench", "train", *SMALL, "--batch", "2", "--seq", "8", "--warmup", "1",
                   "--repeats", "2", "--device", "cpu")
    assert doc["plan"] == EAGER.to_dict()
    assert ran() == {"forward": 3, "backward": 3, "optimizer_step": 3}  # 1 warm-up + 2 timed

    from gptperf.profiling.run import profile_workload

    result = profile_workload(CFG, "train", batch=2, seq=8, out_dir=tmp_path / "prof", wait=0,
                              warmup=1, active=1, overhead=False, plot=False, hardware="cpu")
    assert result.workload["plan"] == EAGER.to_dict()
    assert json.loads((tmp_path / "prof" / "profile.json").read_text())["workload"]["plan"] == EAGER.to_dict()
    seen = ran()
    assert seen["forward"] == seen["backward"] == seen["optimizer_step"] == 3  # 1 before + 2 recorded

    from gptperf.train import TrainConfig, train

    cfg = TrainConfig.for_preset("tiny", model=dict(n_layer=1, n_embd=32, n_head=2, block_size=32),
                                 batch=2, seq=8, max_iters=3, eval_iters=1, device="cpu",
                                 out_dir=None)
    trained = train(cfg)
    assert trained.to_dict()["plan"] == EAGER.to_dict()
    assert ran() == {"forward": 3, "backward": 3, "optimizer_step": 3}


def test_json_records_the_plan_that_ran_and_predicts_for_it(compile_calls, cli_json) -> None:
    hw = get_hardware("cpu")
    for flags, mode in (([], "eager"), (["--compile"], "compiled")):
        before = len(compile_calls)
        doc = cli_json("bench", "decode", *SMALL, "--batch", "2", "--seq", "8", "--warmup", "1",
                       "--repeats", "2", "--device", "cpu", "--hardware", "cpu", *flags)
        plan = ExecutionPlan.from_dict(doc["plan"])
        assert plan.mode == mode and doc["workload"]["compile"] == (mode == "compiled")
        assert len(compile_calls) - before == (mode == "compiled")
        expected = predict(CFG, Workload("decode", 2, 8), hw, plan)
        assert doc["predictions"][0]["step_time_s"] == pytest.approx(expected.time_s)
    compiled = predict(CFG, Workload("decode", 2, 8), hw, plan)
    eager = predict(CFG, Workload("decode", 2, 8), hw, EAGER)
    assert compiled.time_s != eager.time_s  # a different kernel count: the plan is in the figure

    fast = cli_json("bench", "decode", *SMALL, "--batch", "1", "--seq", "8", "--warmup", "1",
                    "--repeats", "2", "--device", "cpu", "--fast")
    assert fast["plan"]["mode"] == "compiled" and fast["plan"]["static_cache"] is True


def test_inference_points_record_their_own_plans(compile_calls) -> None:
    from gptperf.inference.sweep import predict_inference, run_inference_study

    hw = get_hardware("cpu")
    r = run_inference_study(CFG, "cpu", "fp32", contexts=[8, 16], batches=[1, 2], fast=True,
                            hardware="cpu")
    doc = r.to_dict()
    fast = ExecutionPlan.default("decode", "cpu", fast=True, attention=CFG.attention)
    cvr = doc["cache_vs_recompute"]
    assert [p["plan"] for p in cvr["cache"] + doc["batch_sweep"]["points"]] == [fast.to_dict()] * 4
    assert [p["plan"] for p in cvr["recompute"] + doc["prefill"]] == [EAGER.to_dict()] * 4
    assert r.fast and {p.path for p in r.cache} == {"fast"} and {p.path for p in r.recompute} == {"eager"}
    for p in r.cache + r.recompute + r.prefill + r.batches:
        assert p.predicted_s == predict_inference(CFG, p.kind, p.batch, p.seq, "fp32", hw, plan=p.plan).time_s
    assert len(compile_calls) == 4  # one fast decode step per point


def test_train_records_a_compiled_plan(compile_calls) -> None:
    from gptperf.train import TrainConfig, train

    cfg = TrainConfig.for_preset("tiny", model=dict(n_layer=1, n_embd=32, n_head=2, block_size=32),
                                 batch=2, seq=8, max_iters=2, eval_iters=1, device="cpu",
                                 out_dir=None, compile=True)
    result = train(cfg)
    assert result.plan == ExecutionPlan("compiled", CFG.attention)
    assert result.to_dict()["plan"]["mode"] == "compiled" and len(compile_calls) == 1


# --- GPU --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["prefill", "decode", "decode_nocache"])
def test_cuda_graph_steps_run_and_record_their_plan(kind: str) -> None:
    cfg = preset("gpt2", n_layer=2, block_size=128)
    plan = ExecutionPlan.default(kind, "cuda", fast=True, attention=cfg.attention)
    step = build_step(cfg, Workload(kind, 2, 64, "bf16"), plan, "cuda")
    for _ in range(3):
        step.step()
    torch.cuda.synchronize()
    assert step.plan.cuda_graph and step.plan.static_cache == (kind != "decode_nocache")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["prefill", "decode_nocache"])
def test_a_cuda_graph_step_keeps_the_buffers_it_was_captured_on(kind: str) -> None:
    """The graph replays on the addresses of its tokens and cache: after the memory the allocator
    holds free is handed out and filled with out-of-vocabulary ids, the step still reads its own
    tokens (a freed token buffer made the embedding's bounds check fire)."""
    import gc

    cfg = preset("gpt2", n_layer=2, block_size=128)
    plan = ExecutionPlan("cuda_graph", cfg.attention, static_cache=kind == "prefill")
    step = build_step(cfg, Workload(kind, 2, 64, "bf16"), plan, "cuda")
    gc.collect()
    filler = [torch.full((n,), 2**40, dtype=torch.long, device="cuda")
              for n in (64, 128, 256, 512, 1024, 4096) for _ in range(200)]
    for _ in range(3):
        step.step()
    torch.cuda.synchronize()  # a device-side assert would surface here
    assert int(filler[0][0]) == 2**40  # the filler was not written by the step either


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_inference_study_measures_decode_on_the_fast_path() -> None:
    from gptperf.inference.sweep import run_inference_study

    cfg = preset("gpt2", n_layer=2, block_size=128)
    r = run_inference_study(cfg, "cuda", "bf16", contexts=[128], batches=[1, 4], hardware="h100-sxm")
    assert all(p.plan.cuda_graph for p in r.cache + r.batches), r.notes
    assert all(p.plan == ExecutionPlan.eager(cfg.attention) for p in r.recompute + r.prefill)
