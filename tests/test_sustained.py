"""The sustained-load slowdown: its arithmetic, how a calibration reads it at a step's FLOP rate
(hand-computed), its JSON, how `expected` charges a busy step's matmul and attention kernels, and
on a GPU the measurement itself."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_expected import T0, flat_calibration

from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import call_time, expected
from gptperf.perfmodel.kernel_calls import KernelCall, compute_flops, step_ops
from gptperf.plan import ExecutionPlan


def sustained(rates: list[float], slowdowns: list[float]) -> dict:
    return {"dtype": "bf16", "rates": rates, "slowdowns": slowdowns, "duties": [1.0] * len(rates),
            "hold_s": 1.2}


def test_the_matmuls_slowdown_leaves_the_copies_out() -> None:
    from gptperf.measure.sustained import slowdown

    # a 2 ms period, 1 ms of it copies: held 2.3 ms means the matmul took 1.3 ms for 1
    assert slowdown(2e-3, 2.3e-3, 1e-3) == pytest.approx(1.3)
    assert slowdown(1e-3, 1.1e-3, 0.0) == pytest.approx(1.1)


def test_the_slowdown_is_read_linearly_in_the_rate_from_one_at_rest() -> None:
    cal = flat_calibration(sustained=sustained([300e12, 600e12], [1.05, 1.15]))
    expect = {0.0: 1.0, 150e12: 1.025, 300e12: 1.05, 450e12: 1.10, 600e12: 1.15, 900e12: 1.15}
    for rate, slow in expect.items():
        assert cal.sustained_slowdown(rate) == pytest.approx(slow), rate
    # a lighter load that measured slower than a denser one: never less at a higher rate
    dip = flat_calibration(sustained=sustained([600e12, 300e12], [1.04, 1.08]))
    assert dip.sustained_slowdown(450e12) == pytest.approx(1.08)
    assert dip.sustained_slowdown(600e12) == pytest.approx(1.08)
    # a load measured faster held than in a burst is noise: no speed-up
    assert flat_calibration(sustained=sustained([300e12], [0.97])).sustained_slowdown(300e12) == 1.0
    assert flat_calibration().sustained_slowdown(600e12) == 1.0  # not measured
    # a measurement where no duty gave a reading: kept, read as no slowdown, and said so
    from gptperf.measure.sustained import sustained_note

    empty = sustained([], [])
    assert flat_calibration(sustained=empty).sustained_slowdown(600e12) == 1.0
    assert "no duty gave a reading" in sustained_note(empty)
    assert sustained_note(sustained([300e12], [1.05])).startswith(
        "sustained load: a bf16 matmul kept up 1.2 s takes ×1.050 at 300 TFLOP/s (100% of the time)")


def test_the_table_round_trips_and_a_broken_one_is_a_one_line_error() -> None:
    cal = flat_calibration(sustained=sustained([300e12, 600e12], [1.05, 1.15]))
    back = Calibration.from_dict(cal.to_dict())
    assert back.sustained == cal.sustained and back.sustained_slowdown(450e12) == pytest.approx(1.1)
    old = cal.to_dict()
    del old["sustained"]
    assert Calibration.from_dict(old).sustained == {}
    for broken in (sustained([300e12], []), sustained([300e12], [float("nan")]),
                   sustained([-1.0], [1.1]), {"rates": 3, "slowdowns": 1.1}):
        with pytest.raises(UserError, match="sustained needs as many positive rates as slowdowns"):
            flat_calibration(sustained=broken)


def test_compute_flops_of_the_tensor_core_kernels_only() -> None:
    assert compute_flops(KernelCall("matmul", "bf16", (4.0, 5.0, 6.0), 2)) == 2 * 2 * 4 * 5 * 6
    assert compute_flops(KernelCall("attention", "bf16:causal_fwd", (8.0, 100.0, 64.0))) == 2 * 100**2 * 8 * 64
    assert compute_flops(KernelCall("attention", "bf16:causal_bwd", (8.0, 100.0, 64.0))) == 5 * 100**2 * 8 * 64
    assert compute_flops(KernelCall("attention", "bf16:one_query", (8.0, 100.0, 64.0))) == 4 * 100 * 8 * 64
    assert compute_flops(KernelCall("vector", "add:bf16", (1e6,))) == 0.0
    assert compute_flops(KernelCall("gemv", "bf16", (1e6,))) == 0.0


def test_a_busy_steps_matmul_and_attention_are_charged_the_slowdown_at_its_rate() -> None:
    """A CUDA-graph prefill on the flat calibration (every kernel T0, the masked attention 2·T0):
    the step is its kernels back to back; with the slowdown measured at twice the step's rate (×1.2 there), its matmul and
    attention kernels take ×1.1 and nothing else changes."""
    cfg = preset("gpt2", n_layer=2)
    w = Workload("prefill", 4, 128, "bf16")
    plan = ExecutionPlan.default("prefill", "cuda", fast=True)
    assert plan.cuda_graph
    seq = step_ops(cfg, w, plan)
    calls = [k for _, _, _, cs in seq for k in cs]
    flat = flat_calibration()
    compute = sum(call_time(k, flat) for k in calls if compute_flops(k) > 0)
    assert compute == pytest.approx(T0 * (sum(k.count for k in calls if k.family == "matmul")
                                          + 2 * sum(k.count for k in calls if k.family == "attention")))
    base = expected(cfg, w, plan, flat)
    assert base.step_time_s == pytest.approx(sum(call_time(k, flat) for k in calls))
    rate = sum(compute_flops(k) for k in calls) / base.step_time_s
    busy = expected(cfg, w, plan, flat_calibration(sustained=sustained([2 * rate], [1.2])))
    assert busy.step_time_s == pytest.approx(base.step_time_s + 0.1 * compute)
    assert any("sustained load: matmul and attention ×1.100" in n for n in busy.notes)
    by = base.by_key()
    for key, op in busy.by_key().items():  # the LayerNorms and adds are charged as before
        if op.component in ("ln_1", "ln_2", "residual"):
            assert op.device_s == pytest.approx(by[key].device_s)
    # a CPU calibration has no power cap to speak of: nothing changes
    cpu = flat_calibration("cpu", sustained=sustained([2 * rate], [1.2]))
    assert expected(cfg, w, ExecutionPlan.eager(), cpu).step_time_s == pytest.approx(
        expected(cfg, w, ExecutionPlan.eager(), dataclasses.replace(cpu, sustained={})).step_time_s)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_sustained_matmul_is_measured_at_both_duties() -> None:
    from gptperf.measure.sustained import DUTIES, measure_sustained, sustained_note

    out = measure_sustained(torch.device("cuda"), clock=lambda: 1000.0)
    assert len(out["rates"]) == len(out["slowdowns"]) == len(out["duties"]) == len(DUTIES)
    assert out["duties"] == pytest.approx(list(DUTIES), abs=0.2)
    assert out["rates"][0] > out["rates"][1] > 1e12  # the denser load runs at the higher rate
    assert all(0.8 < s < 2.0 for s in out["slowdowns"]) and out["clock_mhz"] == [1000.0, 1000.0]
    assert flat_calibration(sustained=out).sustained_slowdown(out["rates"][0]) >= 1.0
    assert "TFLOP/s" in sustained_note(out)
