"""`gptperf validate`: the statistics (hand-computed), the sweeps (valid, varied, within budget,
disjoint from the calibration's shapes), the result's JSON round trip, and the command with the
measurement and the prediction stood in for (plus one real, tiny measurement on the CPU)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gptperf.errors import UserError
from gptperf.measure.probe import SpeedProbe
from gptperf.perfmodel import count_parameters
from gptperf.validate.disjoint import overlaps, planned_configs
from gptperf.validate.results import (
    SCHEMA,
    CalibrationInfo,
    HostTrace,
    OpErrors,
    OpPair,
    Skipped,
    ValidationPoint,
    ValidationResult,
)
from gptperf.validate.stats import error_stats, nearest_rank, time_weighted_error
from gptperf.validate.sweep import ValidationCase, cases

pytestmark = pytest.mark.usefixtures("one_thread")
SWEEPS = [(d, q) for d in ("cpu", "cuda") for q in (False, True)]


# --- statistics ---------------------------------------------------------------------------------


def test_error_stats_hand_computed() -> None:
    # errors 0.01 0.02 0.05 0 0.10 0.20 0.02 0.03 0.03 0.10, sorted:
    # 0 .01 .02 .02 .03 .03 .05 .10 .10 .20 -> median (.03+.03)/2, p90 = rank ceil(9) = 9th = .10
    s = error_stats([1.01, 0.98, 1.05, 1.00, 0.90, 1.20, 1.02, 0.97, 1.03, 1.10])
    assert s.n == 10
    assert s.median == pytest.approx(0.03)
    assert s.p90 == pytest.approx(0.10)
    assert s.max == pytest.approx(0.20)
    # odd n: errors 0.1, 0.5, 0 -> median 0.1; p90 rank ceil(2.7) = 3 -> 0.5
    s = error_stats([1.1, 0.5, 1.0])
    assert (s.median, s.p90, s.max) == pytest.approx((0.1, 0.5, 0.5))
    one = error_stats([1.25])
    assert (one.n, one.median, one.p90, one.max) == (1, 0.25, 0.25, 0.25)


def test_p90_is_nearest_rank_not_interpolated() -> None:
    values = [i / 100 for i in range(1, 21)]  # 0.01 .. 0.20
    assert nearest_rank(values, 0.9) == 0.18  # rank 18; interpolation would give 0.181
    assert nearest_rank(values, 1.0) == 0.20
    assert nearest_rank([0.3], 0.9) == 0.3
    assert math.isnan(nearest_rank([], 0.9))
    with pytest.raises(ValueError):
        nearest_rank(values, 0)


def test_error_stats_refuses_broken_ratios_and_handles_none() -> None:
    empty = error_stats([])
    assert empty.n == 0 and math.isnan(empty.median) and math.isnan(empty.max)
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(ValueError):
            error_stats([1.0, bad])


def test_time_weighted_error_hand_computed() -> None:
    # |10-9| + |1-2| + |0.5-0| = 2.5 over 11.5 measured
    assert time_weighted_error([(10, 9), (1, 2), (0.5, 0)]) == pytest.approx(2.5 / 11.5)
    assert time_weighted_error([(3, 3)]) == 0
    # a long op's miss outweighs short ones' bigger relative misses
    assert time_weighted_error([(100, 90), (1, 2), (1, 2)]) == pytest.approx(12 / 102)
    assert math.isnan(time_weighted_error([]))
    with pytest.raises(ValueError):
        time_weighted_error([(1.0, float("nan"))])


# --- the sweeps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("device_type", "quick"), SWEEPS)
def test_every_case_builds(device_type: str, quick: bool) -> None:
    import torch

    from gptperf.perfmodel import get_hardware, memory_breakdown, predict
    from gptperf.steps.build import check_step

    sweep = cases(device_type, quick)
    assert len({c.name for c in sweep}) == len(sweep), "case names must be unique"
    hw = get_hardware("h200" if device_type == "cuda" else "cpu")
    for case in sweep:
        assert isinstance(case, ValidationCase)
        case.plan.check(case.workload.kind)
        check_step(case.config, case.workload, case.plan, torch.device(device_type))
        assert case.name.startswith(case.workload.kind + " ")
        assert not (case.profile and case.plan.cuda_graph)
        bound = predict(case.config, case.workload, hw, case.plan).time_s
        assert bound < (0.1 if device_type == "cuda" else 0.2), (case.name, bound)
        if device_type == "cuda":  # fits the H200 with room to spare
            assert memory_breakdown(case.config, case.workload).total < 100e9, case.name


def test_every_gpu_case_asks_for_the_plan_that_runs_it() -> None:
    # the fused decode kernels run batch 1 only: a fast decode at another batch runs the compiled
    # model, and the case says so rather than being told afterwards
    full = cases("cuda")
    fused = [c for c in full if c.plan.fused_decode]
    assert fused and all(c.workload.kind == "decode" and c.workload.batch == 1 for c in fused)
    wider = [c for c in full if c.workload.kind == "decode" and c.plan.cuda_graph
             and c.workload.batch > 1]
    assert wider and all(c.plan.static_cache and c.plan.one_row_kernel for c in wider)
    assert all(c.plan.label == "compiled + CUDA graph, sdpa, static KV cache, one-row gemv"
               for c in wider)


def test_sweeps_cover_what_the_issue_asks() -> None:
    full = cases("cuda", quick=False)
    assert len(full) >= 20
    assert {c.workload.kind for c in full} == {"train", "forward", "prefill", "decode",
                                               "decode_nocache"}
    assert {c.plan.mode for c in full} == {"eager", "compiled", "cuda_graph"}
    assert {c.workload.dtype for c in full} == {"fp32", "bf16"}
    assert any(c.config.name == "gpt2-xl" for c in full)
    assert any(c.config.n_embd <= 384 for c in full)  # tiny-ish
    seven_b = [c for c in full if (c.config.n_layer, c.config.n_head, c.config.n_embd,
                                   c.config.vocab_size) == (32, 32, 4096, 32000)]
    assert {c.workload.kind for c in seven_b} == {"decode"} and len(seven_b) >= 2
    assert len({c.workload.batch for c in full}) >= 5 and len({c.workload.seq for c in full}) >= 5
    # compiled training of a large model would eat the time budget in compilation
    from gptperf.model import preset

    gpt2_medium = count_parameters(preset("gpt2-medium"))
    assert all(count_parameters(c.config) <= gpt2_medium for c in full if c.plan.compiled
               and c.workload.kind == "train")
    assert 2 <= sum(c.profile for c in full) <= 4

    quick = cases("cuda", quick=True)
    assert 6 <= len(quick) <= 10 and {c.name for c in quick} <= {c.name for c in full}
    assert {c.plan.mode for c in quick} == {"eager", "compiled", "cuda_graph"}
    assert sum(c.profile for c in quick) <= 2

    for quick_cpu in (True, False):
        cpu = cases("cpu", quick=quick_cpu)
        assert {c.plan.mode for c in cpu} == {"eager"} and {c.workload.dtype for c in cpu} == {"fp32"}
        assert {c.workload.kind for c in cpu} == {"train", "forward", "prefill", "decode",
                                                  "decode_nocache"}
    assert 6 <= len(cases("cpu", quick=True)) <= 10 <= len(cases("cpu")) <= 14
    with pytest.raises(UserError, match="tpu"):
        cases("tpu", quick=True)


def test_validation_shapes_disjoint_from_calibration() -> None:
    """No matmul, attention call or model of any case of any sweep is one the calibration (quick
    or full) measures on that device type."""
    from gptperf.measure.calibrate_compiled import record_config
    from gptperf.measure.calibrate_host import HOST_LAYERS, host_config
    from gptperf.measure.calibration_plan import planned_shapes
    from gptperf.perfmodel.kernel_calls import kernel_calls
    from gptperf.plan import COMPILED, EAGER

    # the models the calibration runs (host cost, compiled recording), as `shapes["configs"]` names them
    models = {"configs": [host_config(n, mode).name for mode in (EAGER, COMPILED) for n in HOST_LAYERS]
              + [record_config().name]}
    for device_type in ("cpu", "cuda"):
        plans = [{**planned_shapes(device_type, q), **models} for q in (False, True)]
        every = {c.name: c for quick in (False, True) for c in cases(device_type, quick)}
        assert set(every) == {c.name for c in cases(device_type, False)}  # quick ⊂ full
        for case in every.values():
            calls = kernel_calls(case.config, case.workload, case.plan)
            assert {c.family for c in calls} >= {"attention", "vector"}, case.name
            for planned in plans:
                found = overlaps(calls, planned, case.config)
                assert found == [], f"{device_type} case {case.name!r} measures what the calibration measures: {found}"
    # the check can fail: an eager batch-1 decode of the 7B shape runs (1, 4096, 4096), a point
    # of the calibration's grid (the sweep's batch-1 7B decode takes the one-row gemv instead)
    from gptperf.perfmodel import Workload
    from gptperf.plan import ExecutionPlan

    seven_b = next(c.config for c in cases("cuda") if c.config.n_embd == 4096)
    calls = kernel_calls(seven_b, Workload("decode", 1, 1000, "bf16"), ExecutionPlan())
    assert "matmul bf16 (1, 4096, 4096)" in overlaps(calls, planned_shapes("cuda", False))


def test_every_case_reads_the_matmul_grid_from_inside_not_below_its_first_point() -> None:
    """A grid read below its first point takes that point's time (`Grid.at`): a CPU case of C 96
    was charged 1.3-1.8x for its layers while the CPU axes began at 128."""
    from gptperf.measure.calibration_plan import MATMUL_K, MATMUL_M, MATMUL_N
    from gptperf.perfmodel.kernel_calls import kernel_calls

    for device_type in ("cpu", "cuda"):
        first = (MATMUL_M[device_type][0], MATMUL_N[device_type][0], MATMUL_K[device_type][0])
        for case in cases(device_type):
            for call in kernel_calls(case.config, case.workload, case.plan):
                if call.family == "matmul":
                    below = [a for a, x, lo in zip("MNK", call.point, first, strict=True) if x < lo]
                    assert below == [], f"{device_type} {case.name}: {call.point} below {first}"


def test_overlaps_finds_shared_shapes_in_every_form() -> None:
    call = SimpleNamespace
    calls = [call(family="matmul", key="bf16", point=(3840, 2304, 768)),
             call(family="matmul", key="bf16", point=(64, 1024, 1024)),
             call(family="attention", key="bf16:causal_fwd", point=(72, 640, 64)),
             call(family="attention", key="bf16:one_query", point=(32, 512, 128)),
             call(family="vector", key="add:bf16", point=(12288,)),
             call(family="vector", key="gelu_fwd:bf16", point=(4096,))]
    planned = {"matmul": [[64, 1024, 1024], [4096, 4096, 4096]],
               "attention": [["causal_fwd_bwd", 32, 512, 128]],  # another pass, same shape
               "vector": [["add:fp32", 4096], ["add", 12288]],  # gelu 4096 is not add 4096
               "configs": ["tiny+n_layer=1,n_head=2,n_embd=64", {"n_layer": 2, "n_head": 8,
                                                                  "n_embd": 512, "vocab_size": 8192}]}
    found = overlaps(calls, planned, families=("matmul", "attention", "vector"))
    assert found == ["matmul bf16 (64, 1024, 1024)", "attention bf16:one_query (32, 512, 128)",
                     "vector add:bf16 (12288,)"]
    assert overlaps(calls, planned) == found[:2]  # curves only when asked for
    # the same shapes written as key -> points, and as KernelCall-like objects
    by_key = {"matmul": {"bf16": [[64, 1024, 1024]]}, "attention": {"fp32:one_query": [[32, 512, 128]]}}
    assert len(overlaps(calls, by_key)) == 2
    as_calls = [call(family="matmul", key="fp32", point=(64, 1024, 1024))]
    assert overlaps(calls, as_calls) == ["matmul bf16 (64, 1024, 1024)"]
    assert overlaps(calls[:1], planned) == []

    from gptperf.model import preset

    host = preset("tiny", n_layer=1, n_head=2, n_embd=64)
    recorded = preset("tiny", n_layer=2, n_head=8, n_embd=512, vocab_size=8192)
    assert overlaps([], planned, host) == [f"model {host.name} (the calibration runs it)"]
    assert overlaps([], planned, recorded) != []
    assert overlaps([], planned, preset("tiny")) == []
    assert planned_configs({"configs": ["not a gptperf name"]}) == ["not a gptperf name"]


# --- results ------------------------------------------------------------------------------------


def _calibration(device_name: str = "Test CPU") -> Any:
    import torch

    from gptperf.perfmodel.calibration import Calibration

    created = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).isoformat()
    return Calibration(device_name=device_name, device_type="cpu", torch_version=torch.__version__,
                       created_at=created, seconds=12.0)


def _result(device_type: str = "cuda") -> ValidationResult:
    from gptperf.plan import ExecutionPlan

    eager, graph = ExecutionPlan(), ExecutionPlan("cuda_graph", static_cache=True)
    # the prediction's host and device seconds: train a waits on the host (9 ms ≥ 0.8 · 10 ms),
    # the graph does not (no host), forward c predates them (neither)
    points = [ValidationPoint("train a", "train", "gpt2", 6, 640, "bf16", eager, 0.0105, 0.010, 0.007,
                              clock_share=0.88, expected_host_s=0.009, expected_device_s=0.010),
              ValidationPoint("decode b", "decode", "gpt2", 8, 1000, "bf16", graph, 0.00049, 0.0005, None,
                              expected_host_s=0.0, expected_device_s=0.0005),
              ValidationPoint("forward c", "forward", "gpt2", 8, 1000, "fp32", eager, 0.044, 0.040, 0.03,
                              1.25, 1.25, None, HostTrace((0.045, 0.044, 0.043), (0.002,), (2,)))]
    ops = (OpPair("h.0.mlp.fc", "fwd", 1e-3, 0.95e-3), OpPair("lm_head", "bwd", 2e-3, 2.1e-3))
    return ValidationResult(device_type, "NVIDIA H200", True, CalibrationInfo.of(_calibration()),
                            points=points, per_op=[OpErrors("train a", ops)],
                            skipped=[Skipped("decode 7B", "out of memory: CUDA out of memory")],
                            wall_time_s=81.5, notes=["a note"], environment={"torch": "x"})


def test_result_round_trip_and_derived_numbers() -> None:
    from gptperf.output import to_json

    r = _result()
    doc = json.loads(to_json(r.to_dict()))
    assert doc["schema"] == "gptperf.validate/1" == SCHEMA
    back = ValidationResult.from_dict(doc)
    assert back.to_dict() == r.to_dict()
    assert back.points == r.points and back.per_op == r.per_op and back.skipped == r.skipped
    assert doc["points"][2]["trace"] == {"steps_s": [0.045, 0.044, 0.043], "samples_s": [0.002],
                                         "after_step": [2]}
    assert doc["points"][0]["trace"] is None and back.points[2].trace.after_step == (2,)
    # the steps' p10 and p90 over their median 0.044, written beside the trace
    assert doc["points"][2]["step_spread"] == pytest.approx([0.043 / 0.044, 0.045 / 0.044])
    assert doc["points"][0]["step_spread"] is None
    # errors 0.05, 0.02, 0.10 -> median 0.05, p90 rank 3 -> 0.10
    assert (doc["stats"]["n"], doc["stats"]["median"], doc["stats"]["p90"], doc["stats"]["max"]) == \
        pytest.approx((3, 0.05, 0.10, 0.10))
    assert doc["per_op"]["error"] == pytest.approx((0.05e-3 + 0.1e-3) / 3e-3)
    # apart by what holds the step up: train a (error 0.05) the host, decode b (0.02) the device
    assert [p.host_bound for p in back.points] == [True, False, None]
    assert doc["by_bound"]["host_share"] == 0.8
    assert (doc["by_bound"]["host"]["n"], doc["by_bound"]["host"]["max"]) == (1, pytest.approx(0.05))
    assert (doc["by_bound"]["device"]["n"], doc["by_bound"]["device"]["max"]) == (1, pytest.approx(0.02))
    # a document from before the split was kept: its points read None, and no split is made
    old = {**doc, "points": [{k: v for k, v in p.items() if not k.startswith("expected_") or k == "expected_s"}
                             for p in doc["points"]]}
    older = ValidationResult.from_dict(old)
    assert all(p.expected_host_s is None and p.host_bound is None for p in older.points)
    assert older.bound_stats() is None and older.to_dict()["by_bound"] is None
    # a CPU's host and kernels run in series: nothing waits on the host, no split
    assert _result("cpu").bound_stats() is None and _result("cpu").to_dict()["by_bound"] is None
    assert doc["points"][0]["ratio"] == pytest.approx(1.05)
    assert doc["points"][1]["plan_label"].startswith("compiled + CUDA graph")
    verdicts = {v["name"]: v for v in doc["targets"]}
    assert set(verdicts) == {"median", "p90", "max", "per_op"}
    assert verdicts["median"]["verdict"] == "MISS" and verdicts["max"]["verdict"] == "PASS"
    assert verdicts["p90"]["verdict"] == "MISS" and verdicts["per_op"]["passed"] is True
    assert verdicts["median"]["target"] == 0.03 and verdicts["per_op"]["target"] == 0.10
    assert doc["calibration"]["age_days"] == pytest.approx(2, abs=0.01)
    cpu = {v.name: v for v in _result("cpu").verdicts()}
    assert set(cpu) == {"median"} and cpu["median"].passed is True  # 5% <= 10%
    with pytest.raises(UserError, match="gptperf.validate/1"):
        ValidationResult.from_dict({**doc, "schema": "gptperf.bench/1"})


@pytest.mark.parametrize("samples, after", [((0.1,), ()), ((0.1,), (0,)), ((0.1,), (4,))])
def test_host_trace_refuses_samples_that_follow_no_step(samples: tuple[float, ...],
                                                        after: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="host sample"):
        HostTrace((0.01, 0.02, 0.03), samples, after)


def test_host_trace_spread_is_the_steps_p10_and_p90_over_their_median() -> None:
    # sorted: 0.9, 1.0 ×7, 1.1, 2.0; median 1.0; ranks ⌈0.1·10⌉ = 1 and ⌈0.9·10⌉ = 9
    trace = HostTrace((1.0, 1.1, 0.9, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    assert trace.spread() == pytest.approx((0.9, 1.1))
    assert HostTrace((0.02, 0.04)).spread() == pytest.approx((2 / 3, 4 / 3))  # median 0.03
    assert HostTrace(()).spread() is None


def test_a_note_is_printed_as_written_in_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """Notes quote error messages: their brackets are text, not rich markup, in every command."""
    import gptperf
    from gptperf.output import console, print_note

    note = "the launch gap failed: expected [batch, seq], got [/dev/shm]"
    print_note(console, note)
    print_note(console, note, "yellow", indent="  ")
    assert capsys.readouterr().out.splitlines() == [f"note: {note}", f"  note: {note}"]
    # no command prints a note of its own way
    sources = list((Path(gptperf.__file__).parent / "commands").glob("*.py"))
    assert len(sources) > 10
    for path in sources:
        assert "note: {" not in path.read_text(), path


def test_a_value_a_hair_over_its_target_never_prints_as_the_target() -> None:
    from gptperf.output import apart_digits, percent

    assert apart_digits(0.0801, 0.08) == 2 and percent(0.0801, 2) == "8.01%"
    assert apart_digits(0.08001, 0.08) == 3 and apart_digits(0.065, 0.08) == 1
    assert apart_digits(0.08, 0.08) == 1


def test_percent_and_ratio_range_as_the_tables_print_them() -> None:
    from gptperf.output import percent, ratio_range

    assert percent(0.049) == "4.9%" and percent(0.0) == "0.0%" and percent(1.5) == "150.0%"
    assert percent(None) == percent(float("nan")) == percent(float("inf")) == "—"
    assert ratio_range((0.881, 1.384)) == "0.88–1.38×" and ratio_range(None) == "—"


def test_op_pairs_joins_both_sides_above_the_floor() -> None:
    from gptperf.validate.run import op_pairs

    op = SimpleNamespace
    measured = {("lm_head", "fwd"): 100e-6, ("ln_f", "fwd"): 5e-6, ("embed", "fwd"): 30e-6}
    expected = {("lm_head", "fwd"): op(device_s=90e-6), ("ln_f", "fwd"): op(device_s=8e-6),
                ("loss", "fwd"): op(device_s=40e-6)}
    pairs = op_pairs(measured, expected)
    assert [(p.name, p.measured_s, p.expected_s) for p in pairs] == [
        ("lm_head", 100e-6, 90e-6), ("embed", 30e-6, 0.0), ("loss", 0.0, 40e-6)]


# --- the command, measurement and prediction stood in for ---------------------------------------


class _Expected:
    def __init__(self, seconds: float, host_share: float = 0.2) -> None:
        self.step_time_s = seconds
        self.host_s, self.device_s = host_share * seconds, seconds

    def by_key(self) -> dict[tuple[str, str], Any]:
        return {("lm_head", "fwd"): SimpleNamespace(device_s=0.8 * self.step_time_s),
                ("h.0.mlp.fc", "fwd"): SimpleNamespace(device_s=0.1 * self.step_time_s)}


@pytest.fixture
def stood_in(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """measure -> a time per case; predict -> 1 ms·(index + 1); profile -> a fixed table. Returns
    the measured/predicted ratio of each case."""
    import gptperf.validate.run as run

    sweep = cases("cpu", quick=True)
    ratios = {c.name: 1 + (i - 3) / 50 for i, c in enumerate(sweep)}  # -6% .. +8%
    ratios[sweep[1].name] = None  # this one fails to run

    def measure(case: ValidationCase, device: Any, repeats: int | None = None,
                sample_host: str | None = None) -> Any:
        if ratios[case.name] is None:
            raise RuntimeError("CPU out of memory (tried to allocate 1 TB)")
        i = [c.name for c in sweep].index(case.name)
        return run.CaseTiming(1e-3 * (i + 1) * ratios[case.name], case.plan)

    monkeypatch.setattr("gptperf.measure.calibrate.calibration_for", lambda device, required=False: _calibration())
    monkeypatch.setattr(run, "measure_case", measure)
    index = {c.name: i for i, c in enumerate(sweep)}  # the even cases wait on the host
    monkeypatch.setattr(run, "expected_case", lambda case, plan, cal, speed=None, phases=None, parallel=None:
                        _Expected(1e-3 * (index[case.name] + 1), host_share=0.9 if index[case.name] % 2 == 0 else 0.2))
    monkeypatch.setattr(run, "profile_case", lambda case, plan, device, out: {
        ("lm_head", "fwd"): 1e-3, ("h.0.mlp.fc", "fwd"): 1e-4})
    # nothing stood-in allocates; a full collection per case costs seconds late in a long session
    monkeypatch.setattr(run, "release_memory", lambda *a, **k: None)
    return ratios


def test_a_case_is_charged_at_the_host_sampled_among_its_steps_else_probed_after_else_the_median(
        stood_in: dict[str, float], monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import gptperf.validate.run as run

    unit = 4e-4  # the calibration's host-model step (decode; train 4x as long)
    units = {"decode": unit, "train": 4 * unit}
    speeds = iter([1.25, None, None, 2.0])  # sampled among each case's steps
    after = iter([0.8, None])  # probed for a second after each case without a sample
    forks = iter([0.5e-6, None, 2e-6, 1e-6])  # a parallel add among the steps (the unit: 1 µs)
    asked: list[Any] = []
    seen: list[Any] = []

    def measure(case: ValidationCase, device: Any, repeats: int | None = None,
                sample_host: str | None = None) -> Any:
        asked.append((case.workload.kind, sample_host))
        speed = next(speeds)
        phases = {"fwd": 3e-4, "bwd": 2e-4} if sample_host == "train" else {}  # the train probe's
        return run.CaseTiming(1e-3, case.plan, None if speed is None else speed * units[sample_host],
                              host_phase_s=phases, fork_s=next(forks))

    def probe_after(cal: Any, device: Any, probe: str = "decode") -> Any:
        asked.append(("after", probe))
        return next(after)

    cal = dataclasses.replace(_calibration(), probes={"host": {
        "step_s": unit, "train_step_s": 4 * unit, "train_fwd_s": 1e-4, "train_bwd_s": 4e-4},
        "fork": {"unit_s": 1e-6}})
    monkeypatch.setattr(run, "measure_case", measure)
    monkeypatch.setattr(run, "expected_step_s", lambda case, cal: None)  # the timed-step estimate
    monkeypatch.setattr(run, "host_speeds", lambda *a, **k: (probe_after(*a, **k), None))
    seen_phases: list[Any] = []
    seen_parallel: list[Any] = []
    monkeypatch.setattr(run, "expected_case", lambda case, plan, cal, speed=None, phases=None, parallel=None: (
        seen.append(speed), seen_phases.append(phases), seen_parallel.append(parallel), _Expected(1e-3))[3])
    steady = SpeedProbe(1e-6, 1e-3, 1e-3)  # the machine's speed probe, the same throughout
    monkeypatch.setattr(run, "take_probe", lambda device: steady)
    monkeypatch.setattr(run, "compare_speed", lambda *a: steady)
    sweep = [c for c in cases("cpu", quick=True) if stood_in[c.name] is not None][:4]
    kinds = [c.workload.kind for c in sweep]
    assert kinds[0] == "train" and "train" not in kinds[1:]
    result = run.validate("cpu", quick=True, sweep=sweep, calibration=cal)
    # each case samples its own kind's probe (a train step the train probe), probed after likewise
    assert asked == [("train", "train"), (kinds[1], "decode"), ("after", "decode"),
                     (kinds[2], "decode"), ("after", "decode"), (kinds[3], "decode")]
    # the third has neither: the median of what the others of its probe were charged at (0.8 and
    # 2.0; the train case's 1.25 is in another unit)
    assert seen == pytest.approx([1.25, 0.8, 1.4, 2.0])
    # the train case's phases each over its own unit; the decode probe has one phase
    assert seen_phases == [pytest.approx({"fwd": 3.0, "bwd": 0.5}), None, None, None]
    # and each case's parallel kernels at its own parallel adds over the calibration's (none: as
    # calibrated)
    assert seen_parallel == [0.5, None, 2.0, 1.0]
    assert result.points[0].host_phase_speeds == pytest.approx({"fwd": 3.0, "bwd": 0.5})
    first = ValidationPoint.from_dict(json.loads(json.dumps(result.points[0].to_dict())))
    assert first.host_phase_speeds == pytest.approx({"fwd": 3.0, "bwd": 0.5})
    assert [p.host_probe for p in result.points] == pytest.approx([1.25, None, None, 2.0])
    assert [p.host_probe_after for p in result.points] == [None, 0.8, None, None]
    assert [p.host_speed for p in result.points] == pytest.approx([1.25, 0.8, 1.4, 2.0])
    assert run.sweep_host_speed([None, None]) is None and run.sweep_host_speed([]) is None
    again = ValidationPoint.from_dict(json.loads(json.dumps(result.points[1].to_dict())))
    assert (again.host_probe, again.host_probe_after, again.host_speed) == (None, 0.8, 0.8)
    assert run.sweep_host_speed([1.25, None, 0.8, 2.0]) == 1.25


def test_a_cuda_graph_case_takes_no_host_probe(stood_in: dict[str, float],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # a graph step is timed in a run and charged no host cost: neither sampled among its steps
    # nor probed after them, and no speed is recorded for it; the eager case beside it still is
    import dataclasses

    import gptperf.validate.run as run

    asked: list[Any] = []

    def measure(case: ValidationCase, device: Any, repeats: int | None = None,
                sample_host: str | None = None) -> Any:
        asked.append((case.plan.mode, sample_host))
        return run.CaseTiming(1e-3, case.plan, None if sample_host is None else 5e-4)

    cal = dataclasses.replace(_calibration(), probes={"host": {"step_s": 4e-4, "train_step_s": 1.6e-3}})
    monkeypatch.setattr(run, "measure_case", measure)
    monkeypatch.setattr(run, "expected_step_s", lambda case, cal: None)
    monkeypatch.setattr(run, "host_speeds", lambda *a, **k: asked.append("after") or (0.9, None))
    monkeypatch.setattr(run, "expected_case", lambda *a, **k: _Expected(1e-3))
    steady = SpeedProbe(1e-6, 1e-3, 1e-3)  # the machine's speed probe, the same throughout
    monkeypatch.setattr(run, "take_probe", lambda device: steady)
    monkeypatch.setattr(run, "compare_speed", lambda *a: steady)
    quick = cases("cuda", quick=True)
    graph = next(c for c in quick if c.plan.cuda_graph and c.workload.kind == "decode")
    eager = next(c for c in quick if c.plan.mode == "eager" and c.workload.kind == "decode")
    result = run.validate("cpu", quick=True, sweep=[graph, eager], calibration=cal)
    assert sorted(asked) == [("cuda_graph", None), ("eager", "decode")]  # and no probe after
    assert not result.skipped, result.skipped
    by_mode = {p.plan.mode: p for p in result.points}
    assert by_mode["cuda_graph"].host_speed is None and by_mode["cuda_graph"].host_probe is None
    assert by_mode["eager"].host_speed == pytest.approx(1.25)


def test_command_json_out_and_plot(stood_in: dict[str, float], cli_json: Any, tmp_path: Path) -> None:
    out, plots = tmp_path / "sub" / "v.json", tmp_path / "plots"
    doc = cli_json("validate", "--quick", "--device", "cpu", "--out", str(out),
                   "--plot-dir", str(plots))
    assert doc["schema"] == "gptperf.validate/1"
    assert doc["device"]["type"] == "cpu" and doc["sweep"] == "quick"
    assert len(doc["points"]) == len(cases("cpu", quick=True)) - 1
    assert doc["skipped"][0]["reason"].startswith("out of memory")
    measured_ratios = sorted(r for r in stood_in.values() if r is not None)
    errors = sorted(abs(r - 1) for r in measured_ratios)
    assert doc["stats"]["max"] == pytest.approx(errors[-1])
    assert doc["stats"]["p90"] == pytest.approx(errors[math.ceil(0.9 * len(errors)) - 1])
    assert [p["ratio"] for p in doc["points"]] == pytest.approx(
        [r for r in stood_in.values() if r is not None])
    assert doc["targets"] == [{"name": "median", "label": "median |m/p − 1|",
                               "value": pytest.approx(doc["stats"]["median"]), "target": 0.10,
                               "passed": True, "verdict": "PASS"}]
    assert doc["per_op"]["cases"] and doc["per_op"]["operations"] == 2 * len(doc["per_op"]["cases"])
    assert all(p["roofline_s"] > 0 for p in doc["points"])  # the 'cpu' datasheet entry
    # each point keeps the prediction's host and device seconds; a CPU's are not split
    sweep = [c.name for c in cases("cpu", quick=True)]
    for p in doc["points"]:
        share = 0.9 if sweep.index(p["case"]) % 2 == 0 else 0.2
        assert p["expected_host_s"] == pytest.approx(share * p["expected_s"])
        assert p["expected_device_s"] == pytest.approx(p["expected_s"])
    assert doc["by_bound"] is None
    assert json.loads(out.read_text()) == doc
    assert (plots / "validation.png").stat().st_size > 1000 and (plots / "validation.svg").exists()


def test_command_table_says_units_targets_and_calibration(stood_in: dict[str, float],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.cli import main

    assert main(["validate", "--quick", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("Calibration: Test CPU") and "2.0 days old" in lines[0]
    assert "Test CPU" in err  # printed before the sweep starts
    assert "train tiny-c96 fp32 B=6 T=72 eager" in out and " ms" in out and "×" in out
    assert "median |m/p − 1|" in out and "PASS" in out and "≤ 10.0%" in out
    assert "skipped" in out and "out of memory" in out
    assert "host now/then" in out and "charged at it" not in " ".join(out.split())  # no probe here
    assert "Host-bound" not in out  # a CPU's steps are not split by what holds them up


def test_the_table_shows_each_cases_own_step_spread(stood_in: dict[str, float], monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    import gptperf.validate.run as run
    from gptperf.cli import main

    measure = run.measure_case

    def traced(case: ValidationCase, *args: Any, **kwargs: Any) -> Any:
        timing = measure(case, *args, **kwargs)
        m = timing.step_s  # sorted 0.9m, m, m, 1.25m: p10 at rank 1, p90 at rank 4
        return dataclasses.replace(timing, trace=HostTrace((m, 0.9 * m, 1.25 * m, m)))

    monkeypatch.setattr(run, "measure_case", traced)
    assert main(["validate", "--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("0.90–1.25×") == len(cases("cpu", quick=True)) - 1  # each case that ran
    assert "10th and 90th percentile over their median" in " ".join(out.split())


def test_cases_run_below_the_boost_clock_are_named_in_a_note(stood_in: dict[str, float],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    import gptperf.validate.run as run
    from gptperf.cli import main

    measure = run.measure_case
    held = cases("cpu", quick=True)[2].name  # one case at 85% of the maximum clock, the rest 99%

    def clocked(case: ValidationCase, *args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(measure(case, *args, **kwargs),
                                   clock_share=0.85 if case.name == held else 0.99)

    monkeypatch.setattr(run, "measure_case", clocked)
    assert main(["validate", "--quick", "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {p["case"]: p["clock_share"] for p in doc["points"]}[held] == 0.85
    notes = [n for n in doc["notes"] if "maximum SM clock" in n]
    assert len(notes) == 1 and f"{held} (85.0%," in notes[0] and "in 1 case(s)" in notes[0]
    assert run.throttled_note([ValidationPoint.from_dict(p) for p in doc["points"]
                               if p["case"] != held]) is None
    one = [c for c in cases("cpu", quick=True) if c.name == held]
    for said in (True, False):  # the report asks for a case a call and says them over all once
        r = run.validate("cpu", quick=True, sweep=one, sweep_notes=said)
        assert any("maximum SM clock" in n for n in r.notes) is said


def test_the_table_shows_each_cases_host_speed(stood_in: dict[str, float], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    import gptperf.validate.run as run
    from gptperf.cli import main

    units = {"step_s": 1e-3, "train_step_s": 4e-3, "train_fwd_s": 1e-3}  # the train probe's phases
    monkeypatch.setattr("gptperf.measure.calibrate.calibration_for", lambda device, required=False: dataclasses.replace(
        _calibration(), probes={"host": units}))
    monkeypatch.setattr(run, "host_speeds", lambda cal, device, probe="decode": (
        1.375, {"fwd": 1.25} if probe == "train" else None))
    assert main(["validate", "--quick", "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    trains = sum(p["kind"] == "train" for p in doc["points"])
    assert trains and [p["host_phase_speeds"] for p in doc["points"] if p["kind"] == "train"] == [
        {"fwd": 1.25}] * trains
    assert main(["validate", "--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("1.375×") == len(cases("cpu", quick=True)) - 1  # each case that ran (one failed)
    assert out.count("fwd 1.250×") == trains  # a train case's phases, under its step's speed
    assert "each case's host costs are charged at it" in " ".join(out.split())


def test_cases_run_in_a_spell_of_fork_and_join_are_named_and_counted_apart(
        stood_in: dict[str, float], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    import gptperf.validate.run as run
    from gptperf.cli import main

    unit = 4e-6  # a parallel add in the calibration's last speed probe
    monkeypatch.setattr("gptperf.measure.calibrate.calibration_for", lambda device, required=False: dataclasses.replace(
        _calibration(), probes={"end": {"host_s": 1e-6, "matmul_s": 1e-3, "copy_s": 1e-3,
                                        "fork_s": unit}}))
    stood = run.measure_case
    sweep = cases("cpu", quick=True)
    spelled = sweep[0].name  # ratio 0.94; the others run out of spells
    monkeypatch.setattr(run, "measure_case", lambda case, *a, **k: dataclasses.replace(
        stood(case, *a, **k), fork_s=unit * (1.5 if case.name == spelled else 1.1)))
    monkeypatch.setattr(run, "SPELL_BUDGET_S", {True: 0.0, False: 0.0})  # none measured again
    assert main(["validate", "--quick", "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    speeds = {p["case"]: p["fork_speed"] for p in doc["points"]}
    assert speeds[spelled] == pytest.approx(1.5)
    assert all(v == pytest.approx(1.1) for k, v in speeds.items() if k != spelled)
    notes = [n for n in doc["notes"] if "spell" in n]
    assert len(notes) == 1 and notes[0].startswith("1 case(s)") and f"{spelled} (×1.50, m/p 0.94)" in notes[0]
    # the verdict stays on every case; the statistic without the spelled case beside it
    ratios = [r for r in stood_in.values() if r is not None]
    assert doc["stats"]["n"] == len(ratios) and doc["spells"]["cases"] == 1
    assert doc["spells"]["stats_without"]["n"] == len(ratios) - 1
    assert doc["spells"]["stats_without"]["max"] == pytest.approx(max(abs(r - 1) for r in ratios[1:]))
    back = ValidationResult.from_dict(doc)
    assert back.spell_count == 1 and [p.in_spell for p in back.points].count(True) == 1
    assert main(["validate", "--quick", "--device", "cpu"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fork 1.500×" in out and "Without the 1 case(s) run in a spell of the machine" in out


def test_a_case_run_in_a_slow_spell_is_measured_again_once_it_passes(
        stood_in: dict[str, float], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    import gptperf.validate.run as run
    import gptperf.validate.spells as spells
    from gptperf.cli import main

    unit = 4e-6
    monkeypatch.setattr("gptperf.measure.calibrate.calibration_for", lambda device, required=False: dataclasses.replace(
        _calibration(), probes={"fork": {"unit_s": unit}}))
    stood = run.measure_case
    spelled = cases("cpu", quick=True)[0].name
    calls: list[str] = []

    def measure(case: ValidationCase, *a: Any, **k: Any) -> Any:
        calls.append(case.name)
        first = calls.count(case.name) == 1
        return dataclasses.replace(stood(case, *a, **k), step_s=0.5 if first and case.name == spelled
                                   else stood(case, *a, **k).step_s,
                                   fork_s=unit * (1.5 if first and case.name == spelled else 1.02))

    waited: list[float] = []
    monkeypatch.setattr(run, "measure_case", measure)
    monkeypatch.setattr(spells, "wait_out_of_spell", lambda unit_s, limit_s: waited.append(unit_s) or True)
    assert main(["validate", "--quick", "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert calls.count(spelled) == 2 and waited == [unit]  # that case alone, after the spell
    point = next(p for p in doc["points"] if p["case"] == spelled)
    assert point["fork_speed"] == pytest.approx(1.02) and point["measured_s"] != 0.5
    assert doc["spells"]["cases"] == 0
    assert any(n.startswith(f"{spelled}: ran in a spell (parallel adds ×1.50); measured again after "
                            "it, adds ×1.02: kept the second") for n in doc["notes"])


class _Timing:
    def __init__(self, fork_s: float | None, tag: str) -> None:
        self.fork_s, self.tag = fork_s, tag


@pytest.mark.parametrize("first, second, waits, kept, said", [
    (1.5, 1.05, True, "second", "measured again after it, adds ×1.05: kept the second"),
    (1.5, 1.6, True, "first", "measured again after it, adds ×1.60: kept the first"),
    (1.5, None, True, "first", "measured again after it, adds not read: kept the first"),
    (1.5, 1.0, False, "first", "ran in a spell (parallel adds ×1.50) that outlasted"),
    (1.1, 1.0, True, "first", None),  # out of the spell: no second measurement
    (0.7, 1.0, True, "first", None),  # faster than the calibration's: waiting would not help
    (None, 1.0, True, "first", None),  # no adds read
])
def test_spell_retry_keeps_the_measurement_nearer_the_calibrations_adds(
        first: float | None, second: float | None, waits: bool, kept: str, said: str | None) -> None:
    from gptperf.validate.spells import SpellRetry

    unit = 2e-6
    clock = iter([0.0, 7.0])
    retry = SpellRetry(SimpleNamespace(probes={"fork": {"unit_s": unit}}), 60.0,
                       wait=lambda limit_s: waits, clock=lambda: next(clock))
    ran: list[str] = []

    def again() -> _Timing:
        ran.append("second")
        return _Timing(None if second is None else second * unit, "second")

    got = retry.again("case a", _Timing(None if first is None else first * unit, "first"), again)
    assert got.tag == kept
    if said is None:
        assert not retry.notes and not ran and retry.budget_s == 60.0
    else:
        assert len(retry.notes) == 1 and retry.notes[0].startswith("case a: ") and said in retry.notes[0]
        assert retry.budget_s == 53.0 and ran == (["second"] if waits else [])


def test_a_failed_second_measurement_keeps_the_first_and_spends_its_time() -> None:
    from gptperf.validate.spells import SpellRetry

    clock = iter([0.0, 9.0])
    retry = SpellRetry(SimpleNamespace(probes={"fork": {"unit_s": 1e-6}}), 60.0,
                       wait=lambda limit_s: True, clock=lambda: next(clock))
    timing = _Timing(3e-6, "first")

    def fails() -> _Timing:
        raise RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")

    assert retry.again("case a", timing, fails) is timing
    assert retry.budget_s == 51.0
    assert len(retry.notes) == 1 and "again failed (RuntimeError: CUDA out of memory); kept" in retry.notes[0]


def test_spell_retry_spends_no_more_than_its_budget() -> None:
    from gptperf.validate.spells import SpellRetry

    limits: list[float] = []
    retry = SpellRetry(SimpleNamespace(probes={"fork": {"unit_s": 1e-6}}), 0.0,
                       wait=lambda limit_s: limits.append(limit_s) or True)
    timing = _Timing(3e-6, "first")
    assert retry.again("case a", timing, lambda: _Timing(1e-6, "second")) is timing
    assert not limits and not retry.notes


def test_missed_targets_still_exit_0(monkeypatch: pytest.MonkeyPatch, stood_in: dict[str, float],
                                     cli_json: Any) -> None:
    import gptperf.validate.run as run

    monkeypatch.setattr(run, "expected_case", lambda case, plan, cal, speed=None, phases=None, parallel=None: _Expected(1e-6))
    doc = cli_json("validate", "--quick", "--device", "cpu")
    assert doc["targets"][0]["verdict"] == "MISS"


def test_without_calibration_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.cli import main

    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert main(["validate", "--quick", "--device", "cpu", "--json"]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "gptperf calibrate" in err
    assert json.loads(out)["schema"] == "gptperf.error/1"


def test_bad_output_paths_fail_before_any_work(stood_in: dict[str, float], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["validate", "--device", "cpu", "--out", str(tmp_path / "v.txt")]) == 2
    assert main(["validate", "--device", "cpu", "--plot-dir", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--plot-dir" in err
    # a folder where a picture goes would fail only after the sweep: refused before it
    (tmp_path / "plots" / "validation.svg").mkdir(parents=True)
    assert main(["validate", "--device", "cpu", "--plot-dir", str(tmp_path / "plots"),
                 "--out", str(tmp_path / "v.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--plot-dir" in err[0] and "validation.svg" in err[0]
    assert not (tmp_path / "v.json").exists()
    # a user's own file is not replaced; an earlier validate result is
    mine = tmp_path / "mine.json"
    for content in ('{"precious": true}', "not json", '{"schema": "gptperf.bench/1"}'):
        mine.write_text(content)
        assert main(["validate", "--device", "cpu", "--out", str(mine)]) == 2
        assert mine.read_text() == content
        assert capsys.readouterr().err.strip() == (
            f"gptperf validate: error: --out {str(mine)!r} exists and holds no gptperf validate "
            "result: it is not replaced; give a new file name, or remove it first")
    from gptperf.validate.results import SCHEMA
    from gptperf.writable import check_replaceable_file

    mine.write_text(json.dumps({"schema": SCHEMA}))
    assert check_replaceable_file(mine, "--out", what="validate result",
                                  is_ours=lambda doc: doc.get("schema") == SCHEMA) == mine


# --- one real measurement and profile ------------------------------------------------------------


def test_real_tiny_case_is_measured_and_profiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_bench and the profiler really run (one small CPU case); only the prediction is stood in."""
    import gptperf.validate.run as run
    from gptperf.model import preset
    from gptperf.perfmodel import Workload
    from gptperf.plan import ExecutionPlan

    monkeypatch.setattr(run, "expected_case", lambda case, plan, cal, speed=None, phases=None, parallel=None: _Expected(1e-3))
    config = preset("tiny", n_layer=1, n_head=2, n_embd=48, block_size=64)
    case = ValidationCase("forward tiny-1L", config, Workload("forward", 2, 24), ExecutionPlan(),
                          profile=True)
    r = run.validate("cpu", quick=True, calibration=_calibration(), sweep=[case])
    assert r.skipped == [] and len(r.points) == 1
    p = r.points[0]
    assert 0 < p.measured_s < 1 and p.expected_s == 1e-3 and p.roofline_s and p.roofline_s > 0
    assert p.config == config.name and p.plan == ExecutionPlan()
    (errors,) = r.per_op
    names = {o.name for o in errors.ops}
    assert "lm_head" in names and all(o.measured_s >= 0 for o in errors.ops)
    assert r.calibration.device_name == "Test CPU" and r.wall_time_s > 0


def test_a_case_measured_in_a_fresh_process_reports_its_time_and_plan() -> None:
    """On CUDA every case is measured in a fresh process (`gptperf.validate.child`): the step's
    median time and the plan that ran come back, and a failure comes back as a one-line error."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from gptperf.validate.run import counts, measure_case_isolated

    def run_counts(c: ValidationCase) -> int:
        return counts(c.workload.kind, "cpu")[1]

    case = min(cases("cpu", quick=True), key=lambda c: c.config.n_layer * c.workload.tokens)
    case = dataclasses.replace(case, config=dataclasses.replace(case.config, n_layer=1))
    bad = dataclasses.replace(case, workload=dataclasses.replace(case.workload, dtype="fp16"))
    # Both processes at once: each mostly starts Python and torch on one core of the two.
    with ThreadPoolExecutor(2) as pool:
        good_run = pool.submit(measure_case_isolated, case, torch.device("cpu"))
        bad_run = pool.submit(measure_case_isolated, bad, torch.device("cpu"))
        timing = good_run.result()
        assert 0 < timing.step_s < 5 and timing.plan == case.plan and timing.host_step_s is None
        steps = timing.trace.steps_s  # its timed steps come back too, three builds' on a CPU
        assert len(steps) == 3 * run_counts(case) and not timing.trace.samples_s
        with pytest.raises(RuntimeError, match="fp16"):
            bad_run.result()


def test_a_case_is_the_median_of_its_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from gptperf.measure import bench
    from gptperf.validate import run

    times = iter([0.3, 0.1, 0.2])
    clocks = iter([0.9, None, 0.8])  # a build whose clock was not read counts in no mean
    calls: list[dict[str, Any]] = []

    def fake_run_bench(*args: Any, **kwargs: Any) -> SimpleNamespace:
        calls.append(kwargs)
        t = next(times)
        return SimpleNamespace(step_time_s=t, plan=kwargs["plan"],
                               timing=SimpleNamespace(total=SimpleNamespace(samples=[t, 2 * t])),
                               utilization=SimpleNamespace(clock_share=next(clocks)))

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    case = cases("cpu", True)[0]
    timing = run.measure_case(case, torch.device("cpu"))
    assert run.builds("cpu") == len(calls) == 3 and run.builds("cuda") == 1
    assert timing == run.CaseTiming(0.2, case.plan, None, HostTrace((0.3, 0.6, 0.1, 0.2, 0.2, 0.4)),
                                    clock_share=pytest.approx(0.85))
    assert all(kw["calibrated"] is False for kw in calls)  # validate makes its own prediction


def test_a_trace_that_does_not_fit_its_steps_is_dropped_not_the_case(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from gptperf.measure import bench
    from gptperf.validate import run

    class OffSampler:  # a sample said to follow a step the bench never timed
        samples, after_step, phase_samples = [1e-3], [5], {}

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def step_s(self) -> float:
            return 1e-3

        def phase_s(self) -> dict[str, float]:
            return {}

        def fork_s(self) -> None:
            return None

    monkeypatch.setattr(run, "HostSampler", OffSampler)
    monkeypatch.setattr(bench, "run_bench", lambda *a, **kw: SimpleNamespace(
        step_time_s=0.1, plan=kw["plan"], timing=SimpleNamespace(total=SimpleNamespace(samples=[0.1])),
        utilization=None))
    timing = run.measure_case(cases("cpu", True)[0], torch.device("cpu"), sample_host="decode")
    assert timing.step_s == 0.1 and timing.host_step_s == 1e-3 and timing.trace is None


def test_timed_steps_span_the_devices_window_at_the_expected_step_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.validate import run

    case = next(c for c in cases("cuda") if c.workload.kind == "train")
    _, default = run.counts("train", "cuda")
    step = {"s": 0.01}

    def fake_expected(case: Any, plan: Any, cal: Any, speed: Any = None) -> Any:
        if step["s"] is None:
            raise UserError("no curve for this shape")
        return _Expected(step["s"])

    monkeypatch.setattr(run, "expected_case", fake_expected)

    def timed(device_type: str = "cuda") -> int:
        return run.timed_steps("train", device_type, run.expected_step_s(case, None))

    from gptperf.measure import bench

    assert bench.MIN_WINDOW_S["cuda"] == 1.0
    assert timed() == 100  # 1 s of 10 ms steps
    step["s"] = 1e-5
    assert timed() == bench.MAX_TIMED
    step["s"] = 0.5
    assert timed() == default  # never fewer than the default
    step["s"] = float("nan")
    assert run.expected_step_s(case, None) is None and timed() == default  # not a time: unknown
    step["s"] = None
    assert run.expected_step_s(case, None) is None and timed() == default  # no estimate: the default
    step["s"] = 0.01
    assert timed("cpu") == run.counts("train", "cpu")[1]  # no window on a CPU


# --- configurations drawn at random (`validate --random N`) -------------------------------------


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_random_cases_repeat_by_seed_and_lie_off_every_calibrated_shape(device_type: str) -> None:
    """The same seed draws the same cases, another seed others; every case runs (it builds), is
    affordable on the device type's datasheet entry, is none of the fixed sweep's and shares no
    matmul, attention call or model with the full or the quick calibration."""
    from gptperf.perfmodel import get_hardware, predict
    from gptperf.perfmodel.kernel_calls import kernel_calls
    from gptperf.validate.drawn import SPACES, calibrated_shapes, draw_cases

    drawn = draw_cases(device_type, 24, seed=5)
    assert [c.name for c in drawn] == [c.name for c in draw_cases(device_type, 24, seed=5)]
    assert [c.name for c in drawn] != [c.name for c in draw_cases(device_type, 24, seed=6)]
    assert len({c.name for c in drawn}) == 24
    fixed = {c.name for q in (False, True) for c in cases(device_type, q)}
    space, planned = SPACES[device_type], calibrated_shapes(device_type)
    for case in drawn:
        assert case.name not in fixed
        p = predict(case.config, case.workload, get_hardware(space.datasheet), case.plan)
        assert space.step_s[0] <= p.time_s <= space.step_s[1] and p.memory.total <= space.memory_bytes
        calls = kernel_calls(case.config, case.workload, case.plan)
        assert all(overlaps(calls, shapes, case.config) == [] for shapes in planned), case.name
    assert {c.workload.kind for c in drawn} == {"train", "forward", "prefill", "decode", "decode_nocache"}
    if device_type == "cuda":  # every plan and both dtypes turn up in 24 draws
        assert {c.workload.dtype for c in drawn} == {"bf16", "fp32"}
        assert any(c.plan.compiled and not c.plan.cuda_graph for c in drawn)
        assert any(c.plan.cuda_graph for c in drawn) and any(not c.plan.compiled for c in drawn)
        compiled = [c for c in drawn if c.plan.compiled and not c.plan.cuda_graph]
        assert all(count_parameters(c.config) <= space.compiled_max_params for c in compiled)
    else:  # the CPU's sweeps are eager fp32
        assert all(c.workload.dtype == "fp32" and not c.plan.compiled for c in drawn)


def test_random_draw_refuses_a_count_out_of_range() -> None:
    from gptperf.validate.drawn import MAX_CASES, draw_cases

    for n in (0, MAX_CASES + 1):
        with pytest.raises(UserError, match=f"cannot draw {n} cases"):
            draw_cases("cpu", n, seed=1)
    with pytest.raises(UserError, match="unknown device type 'tpu'"):
        draw_cases("tpu", 3, seed=1)


def test_command_random_sweep_measures_the_drawn_cases_and_keeps_the_seed(
        monkeypatch: pytest.MonkeyPatch, cli_json: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import gptperf.validate.run as run
    from gptperf.cli import main
    from gptperf.validate.drawn import draw_cases

    monkeypatch.setattr("gptperf.measure.calibrate.calibration_for", lambda device, required=False: _calibration())
    monkeypatch.setattr(run, "measure_case", lambda case, device, repeats=None, sample_host=None:
                        run.CaseTiming(1.07e-3, case.plan))
    monkeypatch.setattr(run, "expected_case", lambda case, plan, cal, speed=None, phases=None, parallel=None:
                        _Expected(1e-3))
    monkeypatch.setattr(run, "release_memory", lambda *a, **k: None)
    doc = cli_json("validate", "--random", "3", "--seed", "9", "--device", "cpu")
    assert doc["sweep"] == "random" and doc["seed"] == 9
    assert [p["case"] for p in doc["points"]] == [c.name for c in draw_cases("cpu", 3, seed=9)]
    assert doc["stats"]["median"] == pytest.approx(0.07)
    back = ValidationResult.from_dict(doc)
    assert back.seed == 9 and back.sweep_label == "random (seed 9)" and not back.quick
    # without --seed a new one is drawn and printed, first on stderr (before any case runs)
    assert main(["validate", "--random", "2", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    seed = int(out.split("random (seed ")[1].split(")")[0])
    assert (f"2 cases drawn with seed {seed} (gptperf validate --device cpu --random 2 --seed {seed} "
            "draws them again)") in " ".join(err.split())
    assert f"The same cases again: gptperf validate --device cpu --random 2 --seed {seed}" in out


@pytest.mark.parametrize("argv, said", [
    (["--random", "0"], "--random 0: draw 1 to 64 cases"),
    (["--random", "65"], "--random 65: draw 1 to 64 cases"),
    (["--random", "3", "--quick"], "leave out --quick"),
    (["--seed", "3"], "--seed 3 seeds --random N"),
])
def test_command_random_flags_checked_before_any_work(argv: list[str], said: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.cli import main

    assert main(["validate", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and said in err


def test_a_stored_point_rebuilds_the_case_it_measured() -> None:
    """The fixed sweep's and drawn cases come back from a point's JSON alone (config name,
    workload, plan), as the offline re-prediction scripts read them."""
    from gptperf.validate.drawn import draw_cases

    for case in cases("cuda")[:4] + draw_cases("cuda", 4, seed=3):
        w = case.workload
        point = ValidationPoint(case.name, w.kind, case.config.name, w.batch, w.seq, w.dtype,
                                case.plan, 0.011, 0.010, None)
        back = ValidationPoint.from_dict(json.loads(json.dumps(point.to_dict()))).as_case()
        assert (back.name, back.config, back.workload, back.plan) == (case.name, case.config, w, case.plan)
        assert back.config.name == case.config.name
    odd = ValidationPoint("x", "train", "nopreset+n_layer=2", 1, 64, "fp32", cases("cpu")[0].plan,
                          0.01, 0.01, None)
    assert odd.as_case() is None


def test_the_terminal_splits_a_gpu_sweep_by_what_holds_each_step_up(
        capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from gptperf.commands.validate import print_result

    r = _result("cuda")  # train a waits on the host (error 0.05), decode b does not (0.02)
    print_result(r, [], None)
    out = " ".join(capsys.readouterr().out.split())
    assert ("Host-bound steps (predicted host time ≥ 0.8× device time): 1 case, median 5.0%, "
            "p90 5.0%, max 5.0%; device-bound: 1 case, median 2.0%, p90 2.0%, max 2.0%") in out
    # the host-bound case is marked in the table (once), and the mark explained below it
    assert out.count("holds it up") == 2 and "holds it up: the case's predicted host time is ≥ 0.8×" in out
    # no line when one side is empty: every step device-bound
    r.points = [dataclasses.replace(p, expected_host_s=0.0) for p in r.points]
    assert r.bound_stats()["host"].n == 0
    print_result(r, [], None)
    assert "Host-bound" not in capsys.readouterr().out


def test_the_terminal_prints_outside_text_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """Skip reasons and notes are exception text: brackets in them are not rich markup."""
    from gptperf.commands.validate import print_result

    r = _result("cpu")
    r.skipped = [Skipped("decode 7B", "expected [batch, seq] input, got [/dev/shm] full")]
    r.notes = ["a [bold]note[/bold] from [/tmp]"]
    r.seed = 77
    print_result(r, [], None)
    out = " ".join(capsys.readouterr().out.split())
    assert "expected [batch, seq] input, got [/dev/shm] full" in out
    assert "note: a [bold]note[/bold] from [/tmp]" in out
    # the command that draws the same cases names the device: the draw depends on it
    assert "gptperf validate --device cpu --random 4 --seed 77" in out


def test_the_terminal_prints_both_speed_probe_readings(capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.commands.validate import print_result

    r = _result("cpu")
    r.speed_vs_calibration = {"host_s": 1.5, "matmul_s": 0.8}
    r.speed_drift = {"host_s": 0.9, "fork_s": 1.25}
    print_result(r, [], None)
    out = " ".join(capsys.readouterr().out.split())
    assert ("Speed probe, time at validation's start over time at calibration (this device): "
            "host ops ×1.50, the matmul ×0.80") in out
    assert ("Speed probe, time at validation's end over time at its start (this device): host ops "
            "×0.90, parallel CPU ops ×1.25") in out
    r.speed_vs_calibration, r.speed_drift = {}, {}  # an older calibration, an older document
    print_result(r, [], None)
    assert "Speed probe" not in capsys.readouterr().out


def test_a_case_is_marked_beyond_its_devices_target(capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.commands.validate import print_result

    # errors 0.05, 0.02, 0.10: on a GPU the forward (beyond the p90 target 8%) alone is marked
    print_result(_result("cuda"), [], None)
    out = capsys.readouterr().out
    assert out.count("!") == 2 and "!: |m/p − 1| above 8.0%" in " ".join(out.split())
    # a CPU's only target is the median's 10%: nothing beyond it
    print_result(_result("cpu"), [], None)
    assert "!" not in capsys.readouterr().out


def test_a_stored_point_is_predicted_again_at_the_speeds_it_was_charged() -> None:
    import dataclasses

    from test_expected import flat_calibration

    from gptperf.model.config import preset
    from gptperf.perfmodel.expected import expected
    from gptperf.perfmodel.workload import Workload
    from gptperf.plan import ExecutionPlan

    cal, plan = flat_calibration("cuda"), ExecutionPlan.eager("sdpa")
    config, w = preset("tiny"), Workload("train", 4, 64, "fp32")
    charged = expected(config, w, plan, cal, host_speed=2.0, phase_speeds={"bwd": 3.0})
    point = ValidationPoint("train tiny", "train", config.name, 4, 64, "fp32", plan, 1e-3,
                            charged.step_time_s, host_speed=2.0, host_phase_speeds={"bwd": 3.0})
    again = point.expected_on(cal)
    assert again.step_time_s == pytest.approx(charged.step_time_s)
    assert again.host_s == pytest.approx(charged.host_s) != expected(config, w, plan, cal).host_s
    # a CPU point's parallel kernels at the parallel adds it sampled
    cpu = flat_calibration("cpu", cache_bytes=2**30)
    forked = dataclasses.replace(point, fork_speed=0.6).expected_on(cpu)
    assert forked.parallel_speed == 0.6
    assert forked.device_s == pytest.approx(expected(config, w, plan, cpu, parallel_speed=0.6).device_s)
    assert forked.device_s < expected(config, w, plan, cpu).device_s
    # a config name `preset` does not spell cannot be rebuilt
    assert ValidationPoint("x", "train", "not a name", 4, 64, "fp32", plan, 1e-3, 1e-3).expected_on(cal) is None
