"""The communication model (gptperf.perfmodel.comm) on hand-computed numbers: ring all-reduce,
bus bandwidth, the α–β fit, DDP's buckets and the overlap of all-reduce with backward."""

from __future__ import annotations

import math

import pytest

from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.perfmodel import Workload, get_hardware, predict
from gptperf.perfmodel.comm import (
    MIB,
    AlphaBeta,
    Bucket,
    GradTensor,
    backward_ready_fractions,
    busbw,
    ddp_buckets,
    fit_alpha_beta,
    gradient_tensors,
    phase_times,
    predict_ddp_step,
    ring_allreduce_time,
    what_if,
    whatif_link,
)


def test_ring_allreduce_and_bus_bandwidth_by_hand() -> None:
    # p = 4, α = 10 µs, β = 1 GB/s, 1 MB: 2·3·10 µs + 2·3/4 · 1e6/1e9 s = 60 µs + 1.5 ms
    assert ring_allreduce_time(1e6, 4, 10e-6, 1e9) == pytest.approx(1.56e-3)
    assert ring_allreduce_time(1e6, 1, 10e-6, 1e9) == 0.0  # nothing to reduce on one rank
    # nccl-tests: algbw = 1 MB / 2 ms = 500 MB/s; busbw = algbw · 2(p−1)/p = 750 MB/s for p = 4
    assert busbw(1e6, 2e-3, 4) == pytest.approx(750e6)
    assert busbw(1e6, 2e-3, 2) == pytest.approx(500e6)
    assert busbw(1e6, 2e-3, 1) == 0.0
    # on large messages busbw of the ring model tends to β
    assert busbw(1e12, ring_allreduce_time(1e12, 8, 5e-6, 4e11), 8) == pytest.approx(4e11, rel=1e-4)


def test_fit_recovers_alpha_beta_and_reports_residual() -> None:
    alpha, beta, p = 50e-6, 2e9, 2
    sizes = [4096 * 4**k for k in range(6)]
    exact = [ring_allreduce_time(n, p, alpha, beta) for n in sizes]
    fit = fit_alpha_beta(sizes, exact, p)
    assert fit.alpha_s == pytest.approx(alpha, rel=1e-9)
    assert fit.beta == pytest.approx(beta, rel=1e-9)
    assert fit.residual == pytest.approx(0.0, abs=1e-12)
    assert fit.points == len(sizes)
    noisy = [t * (1.1 if i % 2 else 0.9) for i, t in enumerate(exact)]
    assert 0.05 < fit_alpha_beta(sizes, noisy, p).residual < 0.15
    # p = 4: the same line t = a + b·n gives α = a/6, β = 6/(4b)
    fit4 = fit_alpha_beta([1e6, 2e6], [1e-3, 1.5e-3], 4)
    assert fit4.alpha_s == pytest.approx(0.5e-3 / 6)
    assert fit4.beta == pytest.approx(6 / (4 * 0.5e-9))
    with pytest.raises(UserError):
        fit_alpha_beta([1e6], [1e-3], 2)
    with pytest.raises(UserError):
        fit_alpha_beta([1e6, 2e6], [1e-3, 1e-3], 1)


def test_a_sweep_that_gives_no_bandwidth_is_measured_again() -> None:
    """A noisy sweep (times falling with size) is measured again; the first that fits is kept
    with a note of each one dropped; after the last attempt, the fit's one-line error."""
    from gptperf.measure.collectives import CollectivePoint, fitted_sweep

    sizes = [4096 * 4**k for k in range(4)]
    good = [ring_allreduce_time(n, 2, 50e-6, 2e9) for n in sizes]
    noisy = list(reversed(good))  # the small messages stalled: no growth with size
    sweeps = iter([noisy, noisy, good])
    ran: list[int] = []

    def sweep() -> list[CollectivePoint]:
        ran.append(1)
        return [CollectivePoint(n, t, n / t, n / t) for n, t in zip(sizes, next(sweeps), strict=True)]

    points, fit, notes = fitted_sweep(sweep, 2, "test")
    assert len(ran) == 3 and [pt.time_s for pt in points] == good
    assert fit.beta == pytest.approx(2e9) and fit.alpha_s == pytest.approx(50e-6)
    assert len(notes) == 2 and all(n.endswith("cannot give a bandwidth; measured again") for n in notes)
    sweeps, ran[:] = iter([noisy] * 3), []
    with pytest.raises(UserError, match=r"do not grow .* \(in 3 sweeps: a busy or noisy machine\)"):
        fitted_sweep(sweep, 2, "test")
    assert len(ran) == 3  # no more than SWEEP_ATTEMPTS sweeps
    sweeps, ran[:] = iter([good]), []
    assert fitted_sweep(sweep, 2, "test")[2] == [] and len(ran) == 1  # a clean sweep: once
    with pytest.raises(UserError, match="attempts must be at least 1, got 0"):
        fitted_sweep(sweep, 2, "test", attempts=0)
    assert len(ran) == 1  # refused before any sweep


def test_buckets_follow_backward_order_and_caps() -> None:
    t = [GradTensor("a", 300_000, "embed"), GradTensor("b", 200_000, "h.0.mlp.fc"),
         GradTensor("c", 100_000, "h.0.mlp.proj"), GradTensor("d", 50_000, "ln_f")]
    # fp32: d+c = 600 kB < 1 MiB, + b = 1.4 MB >= 1 MiB closes the first bucket; a is the rest
    b = ddp_buckets(t, 4, ready={"ln_f": 0.1, "h.0.mlp.proj": 0.3, "h.0.mlp.fc": 0.6, "embed": 1.0})
    assert [x.params for x in b] == [("d", "c", "b"), ("a",)]
    assert [x.bytes for x in b] == [1_400_000, 1_200_000]
    assert [x.ready_fraction for x in b] == [0.6, 1.0]
    # a later bucket closes at its own cap (here 1 MB), so a stays alone
    b2 = ddp_buckets(t, 4, bucket_bytes=1_000_000, first_bucket_bytes=500_000)
    assert [x.params for x in b2] == [("d", "c"), ("b", "a")]


def test_gradient_tensors_are_the_models_parameters() -> None:
    from gptperf.model import GPT

    config = preset("tiny").replace(n_layer=2)
    ours = [(g.name, g.numel) for g in gradient_tensors(config)]
    assert ours == [(n, p.numel()) for n, p in GPT(config).named_parameters()]
    total = sum(n for _, n in ours) * 4
    assert sum(b.bytes for b in ddp_buckets(gradient_tensors(config))) == total


def test_ddp_step_hides_what_backward_covers() -> None:
    link = AlphaBeta(0.0, 1e6, 2, "test")  # p = 2: t = bytes / β
    buckets = [Bucket(0, 400_000, ("x",), 0.5), Bucket(1, 800_000, ("y",), 1.0)]
    s = predict_ddp_step(buckets, forward_s=1.0, backward_s=2.0, optimizer_s=0.5, link=link,
                         world_size=2, label="t")
    # bucket 0 ready at 1 + 0.5·2 = 2 s, reduced by 2.4 s (hidden); bucket 1 ready at 3 s, done 3.8 s
    assert [(b.ready_s, b.start_s, b.end_s) for b in s.buckets] == [
        (2.0, 2.0, pytest.approx(2.4)), (3.0, 3.0, pytest.approx(3.8))]
    assert s.comm_total_s == pytest.approx(1.2)
    assert s.comm_exposed_s == pytest.approx(0.8)
    assert s.step_s == pytest.approx(3.5 + 0.8)
    assert s.busbw == pytest.approx(1.2e6 / 1.2)  # p = 2: busbw = algbw
    # a first bucket that outlasts backward delays the second: exposed 3.5 + 0.8 − 3
    slow = [Bucket(0, 1_500_000, ("x",), 0.5), Bucket(1, 800_000, ("y",), 1.0)]
    s2 = predict_ddp_step(slow, forward_s=1.0, backward_s=2.0, optimizer_s=0.5, link=link,
                          world_size=2, label="t")
    assert s2.buckets[1].start_s == pytest.approx(3.5)
    assert s2.comm_exposed_s == pytest.approx(1.3)
    # no core to spare (gloo with every core computing): nothing is hidden
    serial = predict_ddp_step(buckets, forward_s=1.0, backward_s=2.0, optimizer_s=0.5, link=link,
                              world_size=2, label="t", overlap=False)
    assert serial.comm_exposed_s == pytest.approx(1.2) and serial.step_s == pytest.approx(4.7)
    one = predict_ddp_step(buckets, forward_s=1.0, backward_s=2.0, optimizer_s=0.5, link=None,
                           world_size=1, label="t")
    assert one.step_s == 3.5 and one.comm_total_s == 0.0 and one.busbw == 0.0
    with pytest.raises(UserError):
        predict_ddp_step(buckets, forward_s=1.0, backward_s=2.0, optimizer_s=0.5, link=None,
                         world_size=2, label="t")


def test_ready_fractions_follow_reverse_layer_order() -> None:
    config = preset("tiny")
    p = predict(config, Workload("train", 4, 64), get_hardware("cpu"))
    r = backward_ready_fractions(p.ops)
    last = config.n_layer - 1
    assert r["ln_f"] < r[f"h.{last}.mlp.proj"] < r[f"h.{last}.ln_1"] < r["h.0.mlp.proj"] < r["embed"]
    assert r["embed"] == pytest.approx(1.0)
    fwd, bwd, opt = phase_times(p.ops)
    assert fwd + bwd + opt == pytest.approx(p.time_s)
    buckets = ddp_buckets(gradient_tensors(config), ready=r)
    assert buckets[-1].ready_fraction == pytest.approx(1.0)  # the embeddings are ready last
    assert all(a.ready_fraction <= b.ready_fraction for a, b in zip(buckets, buckets[1:], strict=False))
    assert buckets[0].bytes >= MIB and all(b.bytes <= 25 * MIB + 4 * 768 * 3072 for b in buckets)


def test_what_if_is_a_labelled_prediction() -> None:
    config = preset("gpt2")
    hw = get_hardware("h100-sxm")
    one_node = whatif_link(1, 8, "nvlink4", "ib-ndr")
    two_nodes = whatif_link(2, 8, "nvlink4", "ib-ndr")
    assert one_node.beta == 450e9 and two_nodes.beta == 50e9  # the ring waits for the slower link
    assert "datasheet" in two_nodes.source
    single = what_if(config, nodes=1, gpus_per_node=1, per_gpu_batch=8, seq=1024, dtype="bf16", hardware=hw)
    assert single.step.comm_total_s == 0.0
    eight = what_if(config, nodes=1, gpus_per_node=8, per_gpu_batch=8, seq=1024, dtype="bf16", hardware=hw)
    sixteen = what_if(config, nodes=2, gpus_per_node=8, per_gpu_batch=8, seq=1024, dtype="bf16", hardware=hw)
    grad = 4 * sum(g.numel for g in gradient_tensors(config))
    assert eight.step.gradient_bytes == grad
    assert eight.step.comm_total_s > 0 and sixteen.step.comm_total_s > eight.step.comm_total_s
    assert sixteen.step.step_s >= single.step.step_s
    assert "prediction" in sixteen.to_dict()["label"]
    assert math.isclose(sixteen.tokens_per_s, 16 * 8 * 1024 / sixteen.step.step_s)
    with pytest.raises(UserError):
        whatif_link(1, 8, "nvlink9", "ib-ndr")
