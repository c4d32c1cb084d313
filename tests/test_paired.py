"""Each timed step paired with the host sample nearest it (`gptperf.measure.paired`): which sample
a step gets, the median of the paired ratios on hand-computed hosts, the sample's phases charged
phase by phase, and a validation point scored so."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gptperf.measure.paired import host_paired_ratio, nearest_sample, paired_ratio
from gptperf.validate.results import HostTrace, ValidationPoint


def test_a_step_gets_the_sample_nearest_it_the_earlier_of_two_as_near() -> None:
    after = (2, 5)  # taken between steps 1 and 2, and 4 and 5 (0-based)
    assert [nearest_sample(after, i) for i in range(7)] == [0, 0, 0, 0, 1, 1, 1]
    assert nearest_sample((1,), 9) == 0
    with pytest.raises(ValueError, match="no host samples"):
        nearest_sample((), 0)


def test_the_paired_ratio_follows_a_host_that_slowed_down_where_the_medians_do_not() -> None:
    # A host-bound step of 10 ms at the calibration's host speed (prediction 10 ms × speed). The
    # host halves its speed for the last two steps; sampled by time, the slow stretch holds half
    # the samples. The median step (10 ms) over the prediction at the samples' median speed (1.5:
    # 15 ms) is 0.667; each step over its own sample's prediction is 1 but for the step the slow
    # spell began on, paired with the sample before it.
    steps = (0.010, 0.010, 0.010, 0.010, 0.020, 0.020)
    after = (2, 4, 5, 6)
    speeds = (1.0, 1.0, 2.0, 2.0)
    asked: list[int] = []

    def predict(j: int) -> float:
        asked.append(j)
        return 0.010 * speeds[j]

    assert paired_ratio(steps, after, predict) == pytest.approx(1.0)  # ratios 1, 1, 1, 1, 2, 1
    assert sorted(asked) == [0, 1, 2]  # each sample predicted once; the last paired with none
    assert paired_ratio((), after, predict) is None
    assert paired_ratio(steps, (), predict) is None
    # a steady host: the same as the median step over the prediction
    assert paired_ratio((0.011, 0.012, 0.013), (1, 2), lambda j: 0.010) == pytest.approx(1.2)


def _calibration(host: dict[str, float]) -> SimpleNamespace:
    return SimpleNamespace(probes={"host": host})


def test_each_sample_is_read_over_the_calibrations_unit_phase_by_phase() -> None:
    cal = _calibration({"train_step_s": 4e-3, "train_fwd_s": 1e-3, "train_bwd_s": 2e-3,
                        "train_opt_s": 1e-3})
    samples = (4e-3, 8e-3)  # the whole train step at ×1, then ×2
    phases = {"fwd": (1e-3, 3e-3), "bwd": (2e-3, 4e-3), "opt": (1e-3, 1e-3)}
    seen: list[tuple[float | None, dict[str, float] | None]] = []

    def predict(speed: float | None, phase_speeds: dict[str, float] | None) -> float:
        seen.append((speed, phase_speeds))
        return 0.010 * speed

    ratio = host_paired_ratio((0.010, 0.020, 0.020), samples, (1, 2), phases, cal, "train", predict)
    assert ratio == pytest.approx(1.0)  # steps 0, 1 with sample 0, step 2 with sample 1: 1, 2, 1
    assert seen[0] == (pytest.approx(1.0), pytest.approx({"fwd": 1.0, "bwd": 1.0, "opt": 1.0}))
    assert seen[1] == (pytest.approx(2.0), pytest.approx({"fwd": 3.0, "bwd": 2.0, "opt": 1.0}))
    # no unit to read a sample over (a calibration without the train probe): no paired ratio
    assert host_paired_ratio((0.01,), (4e-3,), (1,), {}, _calibration({"step_s": 1e-3}), "train",
                             predict) is None
    assert host_paired_ratio((0.01,), (), (), {}, cal, "train", predict) is None


def test_a_trace_keeps_each_samples_phases_and_refuses_a_phase_short_of_samples() -> None:
    trace = HostTrace((0.01, 0.02), (1e-3, 2e-3), (1, 2), {"fwd": (3e-4, 6e-4)})
    assert HostTrace.from_dict(trace.to_dict()) == trace
    assert HostTrace.from_dict({"steps_s": [0.01], "samples_s": [1e-3], "after_step": [1]}) == \
        HostTrace((0.01,), (1e-3,), (1,))  # a document from before the phases were kept
    with pytest.raises(ValueError, match="1 samples of phase 'fwd' but 2 host samples"):
        HostTrace((0.01, 0.02), (1e-3, 2e-3), (1, 2), {"fwd": (3e-4,)})


def test_a_point_is_scored_by_its_paired_ratio_where_it_has_one(tmp_path) -> None:
    from gptperf.plan import ExecutionPlan

    plan = ExecutionPlan()
    plain = ValidationPoint("c", "decode", "tiny", 1, 8, "fp32", plan, measured_s=0.010,
                            expected_s=0.015)
    paired = ValidationPoint("c", "decode", "tiny", 1, 8, "fp32", plan, measured_s=0.010,
                             expected_s=0.015, paired_ratio=1.02)
    assert plain.ratio == pytest.approx(2 / 3) and plain.error == pytest.approx(1 / 3)
    assert paired.ratio == pytest.approx(1.02) and paired.error == pytest.approx(0.02)
    back = ValidationPoint.from_dict(paired.to_dict())
    assert back.paired_ratio == pytest.approx(1.02) and back.ratio == pytest.approx(1.02)
    older = {k: v for k, v in paired.to_dict().items() if k != "paired_ratio"}
    assert ValidationPoint.from_dict(older).ratio == pytest.approx(2 / 3)


def test_validate_scores_a_case_by_each_step_paired_with_its_host_sample(monkeypatch) -> None:
    import dataclasses

    import torch
    from test_validate import _calibration, _Expected

    import gptperf.validate.run as run
    from gptperf.measure.probe import SpeedProbe
    from gptperf.validate.sweep import cases

    unit = 1e-3  # the calibration's decode probe
    cal = dataclasses.replace(_calibration(), probes={"host": {"step_s": unit}})
    case = next(c for c in cases("cpu", quick=True) if c.workload.kind != "train")
    # the host slows to half speed for the last two steps: the samples' median reads ×1.5
    trace = HostTrace((0.010, 0.010, 0.010, 0.010, 0.020, 0.020),
                      (unit, unit, 2 * unit, 2 * unit), (2, 4, 5, 6))
    monkeypatch.setattr(run, "measure_case", lambda *a, **k: run.CaseTiming(
        0.010, case.plan, 1.5 * unit, trace))
    monkeypatch.setattr(run, "expected_step_s", lambda case, cal: None)
    # a host-bound step: 10 ms at the calibration's host speed, scaled with it
    monkeypatch.setattr(run, "expected_case", lambda case, plan, cal, speed=None, phases=None, parallel=None:
                        _Expected(0.010 * (speed or 1.0), host_share=0.9))
    steady = SpeedProbe(1e-6, 1e-3, 1e-3)
    monkeypatch.setattr(run, "take_probe", lambda device: steady)
    monkeypatch.setattr(run, "compare_speed", lambda *a: steady)
    monkeypatch.setattr(run, "release_memory", lambda *a, **k: None)
    (point,) = run.validate(torch.device("cpu"), quick=True, sweep=[case], calibration=cal).points
    assert point.expected_s == pytest.approx(0.015)  # charged at the samples' median
    assert point.measured_s / point.expected_s == pytest.approx(2 / 3)
    assert point.paired_ratio == pytest.approx(1.0) and point.error == pytest.approx(0.0)


def test_a_stored_point_predicted_again_is_scored_paired_as_validate_scores_it() -> None:
    import dataclasses

    from test_expected import flat_calibration

    from gptperf.perfmodel.expected import expected
    from gptperf.plan import ExecutionPlan
    from gptperf.validate.sweep import cases

    unit = 1e-3
    cal = dataclasses.replace(flat_calibration("cpu"), probes={"host": {"step_s": unit}})
    case = next(c for c in cases("cpu", quick=True) if c.workload.kind == "decode")
    plan = ExecutionPlan()

    def at(speed: float) -> float:
        return expected(case.config, case.workload, plan, cal, host_speed=speed).step_time_s

    slow, fast = at(2.0), at(1.0)
    assert slow > fast  # the flat calibration charges host costs: the speed moves the step
    # four steps paired with samples ×1, ×1, ×2, ×2 (after steps 1..4): ratios 1, 1, 1, 1
    trace = HostTrace((fast, fast, fast, slow), (unit, unit, 2 * unit, 2 * unit), (1, 2, 3, 4))
    point = ValidationPoint(case.name, "decode", case.config.name, case.workload.batch,
                            case.workload.seq, case.workload.dtype, plan, measured_s=fast,
                            expected_s=at(1.5), host_speed=1.5, host_probe=1.5, trace=trace)
    # steps 0, 1 with sample 0; step 2 with sample 1 (×1); step 3 with sample 2 (×2)
    assert point.ratio_on(cal) == pytest.approx(1.0)
    # without samples: the median step over the prediction at its host speed
    unsampled = dataclasses.replace(point, host_probe=None, host_probe_after=1.5)
    assert unsampled.ratio_on(cal) == pytest.approx(fast / at(1.5))
    assert dataclasses.replace(point, config="no-such-preset").ratio_on(cal) is None
    # charged phase by phase, but stored before the samples' phases were kept: scored as it was
    phased = dataclasses.replace(point, host_phase_speeds={"fwd": 1.5})
    assert phased.ratio_on(cal) == pytest.approx(fast / expected(
        case.config, case.workload, plan, cal, host_speed=1.5, phase_speeds={"fwd": 1.5}).step_time_s)
    kept = dataclasses.replace(phased, trace=dataclasses.replace(
        trace, phase_samples_s={"fwd": (unit, unit, unit, unit)}))
    assert kept.ratio_on(cal) == pytest.approx(1.0)  # paired again once they are kept


def test_the_reports_roofline_row_shows_the_benchs_paired_ratio() -> None:
    from gptperf.report.results import RooflineRow

    row = RooflineRow("train", 100.0, 1e12, predicted_s=0.010, measured_s=0.030, expected_s=0.020)
    assert row.expected_ratio == pytest.approx(1.5)  # no bench ratio: measured over expected
    paired = RooflineRow("train", 100.0, 1e12, 0.010, 0.030, expected_s=0.020, paired_ratio=1.4)
    assert paired.expected_ratio == pytest.approx(1.4)
    assert RooflineRow.from_dict(paired.to_dict()).expected_ratio == pytest.approx(1.4)
    older = {k: v for k, v in paired.to_dict().items() if k != "paired_ratio"}
    assert RooflineRow.from_dict(older).expected_ratio == pytest.approx(1.5)


def test_the_validate_table_says_how_a_paired_ratio_is_made_and_scores_by_it(capsys) -> None:
    import dataclasses

    from test_validate import _result

    from gptperf.commands.validate import print_result

    plain = _result()
    print_result(plain, [], None)
    assert "sampled nearest it" not in " ".join(capsys.readouterr().out.split())
    points = list(plain.points)
    points[2] = dataclasses.replace(points[2], paired_ratio=1.5)  # forward c: 0.044 / 0.040 unpaired
    paired = dataclasses.replace(plain, points=points)
    assert paired.stats.max == pytest.approx(0.5)  # the statistics take the paired ratio
    print_result(paired, [], None)
    out = " ".join(capsys.readouterr().out.split())
    assert "the prediction at the host sampled nearest it" in out and "1.500×" in out
