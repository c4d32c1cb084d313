"""The measured kernel model: the α–β fit, its place in `Hardware` (TOML round trip) and what it
changes in `predict` (weight-streaming bandwidth per row class, per-kernel α, compiled counts)."""

from __future__ import annotations

import math
import random

import pytest

from gptperf import names
from gptperf.errors import UserError
from gptperf.measure.kernel_model import fit_kernel_line
from gptperf.model import GPTConfig
from gptperf.perfmodel import (
    Hardware,
    KernelModel,
    Workload,
    get_hardware,
    hardware_from_toml,
    predict,
    save_measured_hardware,
)
from gptperf.perfmodel.transformer import COMPILED_KERNELS, WEIGHT_MATMULS
from gptperf.plan import ExecutionPlan

KM = {"rows": [1, 4], "alpha_s": [2e-6, 3e-6], "beta": [0.5e12, 0.8e12],
      "elementwise_alpha_s": 1e-6, "elementwise_beta": 1e12, "attention_alpha_s": 4e-6,
      "attention_beta": 0.25e12, "norm_alpha_s": 1.5e-6, "dtype": "bf16",
      "curves": {"m1": {"bytes": [1.0, 2.0], "time_s": [3.0, 4.0]}}}
CFG = GPTConfig(block_size=64, vocab_size=256, n_layer=1, n_head=4, n_embd=64)
# The fast decode plan (FastDecoder on a GPU): compiled, one CUDA graph, static KV cache.
FAST = ExecutionPlan("cuda_graph", CFG.attention, static_cache=True, one_row_kernel=True)


def machine(kernel_model: dict | None = None) -> Hardware:
    return Hardware(name="toy", peak_flops={"bf16": 1e15, "fp32": 1e14}, bandwidth=1e12,
                    memory_bytes=2**34, launch_latency_s=1e-6, source="file",
                    extra={"kernel_model": kernel_model} if kernel_model else {})


# --- the fit ------------------------------------------------------------------------------------


def test_fit_recovers_alpha_and_beta_from_synthetic_timings() -> None:
    rng = random.Random(0)
    alpha, beta = 2.7e-6, 2.4e12
    sizes = [2**19 * 2**i for i in range(11)]  # 0.5 MiB .. 512 MiB
    exact = [alpha + s / beta for s in sizes]
    a, b, resid = fit_kernel_line(sizes, exact)
    assert a == pytest.approx(alpha, rel=1e-9) and b == pytest.approx(beta, rel=1e-9)
    assert resid < 1e-9
    noisy = [t * (1 + rng.uniform(-0.02, 0.02)) for t in exact]  # 2% timing noise
    a, b, resid = fit_kernel_line(sizes, noisy)
    assert a == pytest.approx(alpha, rel=0.1) and b == pytest.approx(beta, rel=0.03)
    assert 0 < resid < 0.05


def test_fit_keeps_alpha_non_negative_and_rejects_bad_input() -> None:
    sizes = [1e6, 1e7, 1e8]
    a, b, _ = fit_kernel_line(sizes, [s / 2e12 - 1e-7 * (i == 0) for i, s in enumerate(sizes)])
    assert a == 0.0 and b == pytest.approx(2e12, rel=0.1)
    with pytest.raises(ValueError):
        fit_kernel_line([1e6], [1e-6])
    with pytest.raises(ValueError):
        fit_kernel_line([1e6, 2e6], [1e-6, 0.0])


# --- Hardware -----------------------------------------------------------------------------------


def test_datasheet_hardware_has_no_kernel_model() -> None:
    hw = get_hardware("h100-sxm")
    assert hw.kernel_model is None
    assert hw.streaming_bandwidth(1) is None and hw.kernel_overhead_s() is None
    assert "kernel_model" not in hw.to_dict() and "kernel_model" not in hw.to_toml()


def test_kernel_model_row_classes() -> None:
    hw = machine(KM)
    km = hw.kernel_model
    assert isinstance(km, KernelModel)
    assert [km.row_class(r) for r in (1, 2, 4, 5, 1000)] == [0, 1, 1, 1, 1]
    assert hw.streaming_bandwidth(1) == 0.5e12 and hw.streaming_bandwidth(3) == 0.8e12
    assert hw.streaming_bandwidth(64) == 0.8e12  # beyond the largest class: the largest
    assert hw.kernel_overhead_s(1) == 2e-6 and hw.kernel_overhead_s(4) == 3e-6
    assert hw.kernel_overhead_s() == 1e-6


def test_kernel_model_round_trips_through_toml(tmp_path, monkeypatch) -> None:
    hw = machine(KM)
    back = hardware_from_toml(hw.to_toml())
    assert back.kernel_model == hw.kernel_model
    assert back.extra["kernel_model"]["curves"]["m1"]["bytes"] == [1.0, 2.0]  # raw curve kept
    assert back.to_dict()["kernel_model"]["beta"] == [0.5e12, 0.8e12]
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path))
    save_measured_hardware(hw, "Toy GPU")
    measured = get_hardware("measured", device_name="Toy GPU")
    assert measured.source == "measured" and measured.kernel_model == hw.kernel_model
    # a KernelModel object is accepted too, stored as its table
    assert machine(None).kernel_model is None
    as_object = Hardware(**{**hw.__dict__, "extra": {"kernel_model": hw.kernel_model}})
    assert as_object.kernel_model == hw.kernel_model


@pytest.mark.parametrize("bad", [
    {**KM, "beta": [1e12]},  # lengths differ
    {**KM, "rows": [4, 1]},  # not increasing
    {**KM, "beta": [0.0, 1e12]},
    {k: v for k, v in KM.items() if k != "elementwise_alpha_s"},
])
def test_malformed_kernel_model_is_a_user_error(bad: dict) -> None:
    with pytest.raises(UserError) as err:
        machine(bad)
    assert "kernel model" in str(err.value) and "\n" not in str(err.value)


# --- predict ------------------------------------------------------------------------------------


def test_compiled_decode_with_kernel_model_matches_hand_computation() -> None:
    """One layer, decode B=2 at L=16 in bf16 (a = w = 2 bytes): every op is memory-bound on this
    machine, so time = Σ bytes/β(op) + Σ α(op), written out here op by op."""
    hw = machine(KM)
    B, L, C, V, a = 2, 16, 64, 256, 2
    N = B  # one new token per sequence
    bw, mm, att = 1e12, 0.8e12, 0.25e12  # copy; matmul class M=4 (rows 2); attention
    a_mm, a_ew, a_att, a_norm = 3e-6, 1e-6, 4e-6, 1.5e-6
    ln = (2 * N * C * a + 2 * C * a) / bw + a_norm
    expected = {
        names.EMBED: (N * 8 + N * C * a + C * a + N * C * a) / bw + a_ew,
        names.LN_1: ln,
        names.ATTN_QKV: (N * C * a + 3 * C * C * a + 3 * C * a + 2 * N * C * a
                         + 3 * N * C * a + 2 * N * C * a) / mm + a_mm + 2 * a_ew,  # + the 2 cache writes
        names.ATTN_SDPA: (N * C * a + 2 * B * L * C * a + N * C * a) / att + a_att + a_ew,  # + its mask
        names.ATTN_PROJ: (N * C * a + C * C * a + C * a + N * C * a) / mm + a_mm,
        names.RESIDUAL: (2 * N * C * 2 * a + 2 * N * C * a) / bw,  # fused into the LayerNorms
        names.LN_2: ln,
        names.MLP_FC: (N * C * a + 4 * C * C * a + 4 * C * a + 4 * N * C * a) / mm + a_mm,
        names.MLP_ACT: (8 * N * C * a) / bw + a_ew,
        names.MLP_PROJ: (4 * N * C * a + 4 * C * C * a + C * a + N * C * a) / mm + a_mm,
        names.LN_F: ln,
        # + the greedy pick: the logits read back, argmax and token bookkeeping kernels
        names.LM_HEAD: (N * C * a + V * C * a + N * V * a + N * V * a) / mm + a_mm + 4 * a_ew,
    }
    p = predict(CFG, Workload("decode", B, L, "bf16"), hw, FAST)
    assert p.compiled and p.to_dict()["compiled"] is True and p.to_dict()["kernel_model"] is True
    for op in p.ops:
        assert op.time_s == pytest.approx(expected[op.component], rel=1e-12), op.name
    assert p.time_s == pytest.approx(sum(expected.values()), rel=1e-12)
    assert sum(o.count for o in p.ops) == 18  # 11 per layer + embed, ln_f, lm_head + 4 for the pick
    assert p.to_dict()["totals"]["kernel_launches"] == 18


@pytest.mark.parametrize(("C", "batch", "split"), [(512, 2, True), (512, 1, False), (256, 2, False)])
def test_compiled_split_k_reduction_is_counted_for_long_row_projections(C: int, batch: int, split: bool) -> None:
    """mlp.proj (K = 4C) gets a split-K reduction kernel from K = 2048 on, at more than one row."""
    cfg = GPTConfig(n_layer=1, n_head=4, n_embd=C, vocab_size=256, block_size=64)
    p = predict(cfg, Workload("decode", batch, 16, "bf16"), machine(KM), FAST)
    assert p.op(names.layer_name(0, names.MLP_PROJ)).count == 1 + int(split)
    assert p.op(names.layer_name(0, names.ATTN_PROJ)).count == 1  # K = C < 2048


def test_batch_one_uses_the_one_row_class() -> None:
    p = predict(CFG, Workload("decode", 1, 16, "bf16"), machine(KM), FAST)
    qkv = p.op(names.layer_name(0, names.ATTN_QKV))
    assert qkv.bandwidth == 0.5e12 and qkv.overhead_s == pytest.approx(2e-6 + 2 * 1e-6)  # + 2 cache writes


def test_without_kernel_model_predictions_are_unchanged() -> None:
    hw = machine(None)
    for workload in (Workload("decode", 4, 32, "bf16"), Workload("train", 2, 16, "bf16"),
                     Workload("prefill", 2, 16, "fp32")):
        p = predict(CFG, workload, hw)
        assert not p.compiled
        for op in p.ops:
            assert op.bandwidth == hw.bandwidth and op.overhead_s is None
            assert op.time_s == max(op.flops / op.peak_flops, op.bytes / hw.bandwidth) + op.count * 1e-6
    # compiled counts without a kernel model: the launch latency per compiled kernel
    p = predict(CFG, Workload("decode", 4, 32, "bf16"), hw, FAST)
    for op in p.ops:
        pick = 4 if op.component == names.LM_HEAD else 0  # the greedy pick's kernels
        assert op.count == COMPILED_KERNELS[op.component] + pick and op.overhead_s is None
        assert op.kernel_time_s == op.count * 1e-6


def test_eager_with_kernel_model_streams_weights_at_the_measured_rate() -> None:
    eager = predict(CFG, Workload("decode", 2, 16, "bf16"), machine(KM))
    plain = predict(CFG, Workload("decode", 2, 16, "bf16"), machine(None))
    for op, ref in zip(eager.ops, plain.ops, strict=True):
        assert op.count == ref.count and op.overhead_s is None  # eager counts, launch latency
        if op.component in WEIGHT_MATMULS:
            assert op.bandwidth == 0.8e12
        elif op.component == names.ATTN_SDPA:
            assert op.bandwidth == 0.25e12
        else:
            assert op.bandwidth == 1e12 and op.time_s == ref.time_s
    # the backward of a training step keeps the copy bandwidth
    train = predict(CFG, Workload("train", 2, 16, "bf16"), machine(KM))
    assert all(o.bandwidth == 1e12 for o in train.ops if o.phase != names.FORWARD)


def test_compiled_kernel_counts_are_for_inference_workloads_only() -> None:
    """A compiled train step is predicted op by op as eager (inductor's fusion of training
    kernels is not modelled yet), and the prediction carries its plan and says so."""
    compiled = ExecutionPlan("compiled", CFG.attention, fused_optimizer=True)
    p = predict(CFG, Workload("train", 2, 16, "bf16"), machine(KM), compiled)
    eager = predict(CFG, Workload("train", 2, 16, "bf16"), machine(KM))
    assert p.plan == compiled and not p.compiled and eager.plan == ExecutionPlan.eager(CFG.attention)
    assert p.to_dict()["plan"] == compiled.to_dict() and p.to_dict()["compiled"] is False
    assert any("fusion" in n and "not modelled" in n for n in p.notes) and not eager.notes
    assert p.to_dict()["notes"] == p.notes
    assert [o.count for o in p.ops] == [o.count for o in eager.ops]
    assert p.time_s == eager.time_s
    # a plan that cannot run a train step is a one-line error
    with pytest.raises(UserError) as err:
        predict(CFG, Workload("train", 2, 16, "bf16"), machine(KM), FAST)
    assert "CUDA graph" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="attention"):
        predict(CFG, Workload("decode", 2, 16, "bf16"), machine(KM), FAST.replace(attention="math"))


def test_measured_kernel_model_on_cpu_is_usable(tmp_path) -> None:
    import torch

    from gptperf.measure.kernel_model import measure_kernel_model

    table = measure_kernel_model(torch.device("cpu"), quick=True)
    assert table["rows"] == sorted(table["rows"]) and len(table["alpha_s"]) == len(table["rows"])
    assert all(b > 0 and math.isfinite(b) for b in table["beta"])
    for name in ("m1", "elementwise", "attention", "norm"):
        curve = table["curves"][name]
        assert len(curve["bytes"]) == len(curve["time_s"]) >= 2
        assert all(t > 0 for t in curve["time_s"])
    hw = hardware_from_toml(machine(table).to_toml())
    assert hw.kernel_model.rows == tuple(table["rows"])
    p = predict(CFG, Workload("decode", 1, 16, "bf16"), hw, FAST)
    assert p.time_s > 0 and math.isfinite(p.time_s)


def test_ceilings_carry_the_kernel_model_into_hardware() -> None:
    from gptperf.measure.ceilings import Ceilings

    c = Ceilings(device="Toy GPU", device_type="cuda", measured_at="2026-01-01T00:00:00+00:00",
                 quick=False, threads=1, torch_version="x", memory_bytes=2**34,
                 bandwidth={"copy": {"best_bytes_per_s": 3e12, "points": []}},
                 matmul={"bf16": {"points": [{"n": 8}], "best_flops_per_s": 8e14}},
                 launch_latency_s=5e-6, kernel_model=dict(KM))
    hw = c.to_hardware()
    assert hw.kernel_model is not None and hw.kernel_model.beta == (0.5e12, 0.8e12)
    assert Ceilings.from_dict(c.to_dict()).kernel_model == c.kernel_model
    assert Ceilings.from_dict({**c.to_dict(), "kernel_model": None}).to_hardware().kernel_model is None
    on_cpu = Ceilings.from_dict({**c.to_dict(), "device_type": "cpu"})
    assert on_cpu.kernel_model and on_cpu.to_hardware().kernel_model is None  # curves file only


def test_graph_alpha_and_greedy_pick_follow_the_plan() -> None:
    """α inside a CUDA graph only for a graphed step; the greedy pick only in the static-cache
    decode step (FastDecoder's); a compiled step without a graph pays the launch latency."""
    compiled = ExecutionPlan("compiled", CFG.attention)  # torch.compile'd, the growing KV cache
    p = predict(CFG, Workload("decode", 2, 16, "bf16"), machine(KM), compiled)
    fast = predict(CFG, Workload("decode", 2, 16, "bf16"), machine(KM), FAST)
    assert p.compiled and fast.compiled
    for op, ref in zip(p.ops, fast.ops, strict=True):
        assert op.overhead_s is None and op.kernel_time_s == pytest.approx(op.count * 1e-6)
        assert ref.overhead_s is not None
        assert op.count == ref.count - (4 if op.component == names.LM_HEAD else 0)
