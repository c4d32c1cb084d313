"""`gptperf report`'s calibrated prediction: the calibration stage (before anything is measured),
the "How good is the prediction" section from validate's quick sweep within the report's time
budget, the two predictions labelled side by side — with `calibrate`/`validate` stood in for by
small typed fakes, so nothing is measured here."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_expected import flat_calibration

from gptperf.errors import UserError
from gptperf.output import to_json
from gptperf.report import ReportOptions, Stage, build_report
from gptperf.report import stages as report_stages
from gptperf.report.context import ReportData, StageRecord
from gptperf.report.html import esc
from gptperf.report.page import render_page
from gptperf.report.results import CalibrationStage, ValidationStage
from gptperf.report.validation import case_cost, run_validation, validation_budget
from gptperf.validate.results import (
    CalibrationInfo,
    HostTrace,
    OpErrors,
    OpPair,
    Skipped,
    ValidationPoint,
    ValidationResult,
)
from gptperf.validate.sweep import cases

EVIL = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;"


# --- fakes ----------------------------------------------------------------------------------------


class FakeValidate:
    """`gptperf.validate.run.validate`, one point per case asked for: measured = expected · the
    case's ratio (RATIOS, in sweep order), a profile's operations when the case says so, one case
    skipped with a hostile reason. Remembers each call's cases and calibration."""

    RATIOS = (1.02, 0.97, 1.05, 1.00, 0.90, 1.20, 1.03, 0.99)

    def __init__(self, device_type: str = "cpu", clock: Any = None, took: Any = None) -> None:
        self.device_type = device_type
        self.calls: list[tuple[list[Any], Any]] = []
        self.order = [c.name for c in cases(device_type, quick=True)]
        self.clock, self.took = clock, took  # a fake clock advanced by took(case)
        self.spells: list[tuple[float, float]] = []  # (clock at the call, spell_budget_s)

    def __call__(self, device: Any, quick: bool = False, progress: Any = None,
                 calibration: Any = None, *, sweep: Any = None,
                 sweep_notes: bool = True, spell_budget_s: float | None = None) -> ValidationResult:
        # one case a call, its notes over the sweep left to the report's merge
        assert quick and sweep is not None and len(sweep) == 1 and not sweep_notes
        assert spell_budget_s is not None  # the report bounds the spell retries itself
        self.calls.append((list(sweep), calibration))
        self.spells.append((self.clock.now if self.clock is not None else 0.0, spell_budget_s))
        case = sweep[0]
        if progress is not None:
            progress("measuring", 0, 1)
        if self.clock is not None:
            self.clock.now += self.took(case)
        i = self.order.index(case.name)
        w = case.workload
        result = ValidationResult(self.device_type, "Test CPU", True, CalibrationInfo.of(calibration),
                                  notes=[f"validate's note {EVIL}"], environment={"torch": "x"})
        if i == 3:
            result.skipped.append(Skipped(case.name, f"out of memory: {EVIL}"))
            return result
        expected_s = 0.01 * (i + 1)
        m = expected_s * self.RATIOS[i]
        trace = HostTrace((0.9 * m, m, m, 1.2 * m)) if i % 2 == 0 else None  # p10 0.9, p90 1.2
        # the even cases' predicted host time is 0.9 of their device time (the CPU splits nothing)
        result.points.append(ValidationPoint(case.name, w.kind, case.config.name, w.batch, w.seq,
                                             w.dtype, case.plan, m, expected_s, expected_s / 3,
                                             trace=trace, expected_host_s=(0.9 if i % 2 == 0 else 0.2)
                                             * expected_s, expected_device_s=expected_s))
        if case.profile:
            result.per_op.append(OpErrors(case.name, (
                OpPair("h.0.mlp.fc", "fwd", 2e-3, 1.8e-3), OpPair("lm_head", "fwd", 1e-3, 1.1e-3))))
        return result


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """No cached calibration; ensure_calibration 'measures' a synthetic one (its device name
    hostile text); validate is FakeValidate. A private cache."""
    import gptperf.measure.calibrate as cal
    import gptperf.validate.run as validate_run

    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))
    calibration = flat_calibration("cpu", device_name=f"Test CPU {EVIL}",
                                   notes=["quick calibration: fewer sizes and repeats"])
    state: dict[str, Any] = {"calibration": calibration, "ensured": [], "validate": FakeValidate()}

    def ensure(device: Any, *, quick: bool = False, force: bool = False, progress: Any = None,
               hooks: Any = None) -> tuple[Any, bool, Path]:
        state["ensured"].append((device, quick))
        return calibration, False, tmp_path / "cache" / "calibration" / "test.json"

    monkeypatch.setattr(cal, "calibration_for", lambda device, required=False: None)
    monkeypatch.setattr(cal, "ensure_calibration", ensure)
    monkeypatch.setattr(validate_run, "validate", state["validate"])
    return state


STAGE_NAMES = ("calibration", "model", "validation")


def _stages(*names: str) -> list[Stage]:
    return [s for s in report_stages.STAGES if s.name in names]


def _reloaded_page_is_identical(out: Path) -> ReportData:
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    report = ReportData.from_dict(doc)
    assert json.loads(to_json(report.to_dict())) == doc
    with open(out / "index.html", encoding="utf-8", newline="") as f:
        assert render_page(report, out) == f.read()
    return report


def _section(page: str, sid: str) -> str:
    part = page[page.index(f'<section id="{sid}"'):]
    return part[:part.index("</section>")]


# --- the stage order ------------------------------------------------------------------------------


def test_calibration_comes_before_every_measurement_and_validation_last() -> None:
    names = [s.name for s in report_stages.STAGES]
    first_measured = min(names.index(n) for n in ("train", "bench", "profile", "inference",
                                                  "scaling", "model"))
    assert names.index("device") < names.index("calibration") < first_measured
    assert names.index("calibration") < names.index("bench")
    assert names[-1] == "validation"  # takes what is left of the budget


# --- the section from typed data, round trip, escaping ------------------------------------------


def test_prediction_section_renders_from_typed_data_and_round_trips(
        tmp_path: Path, fakes: dict[str, Any]) -> None:
    out = tmp_path / "rep"
    result = build_report(ReportOptions(out=out, device="cpu"), _stages(*STAGE_NAMES))
    assert result.ok, result.summary()
    report = _reloaded_page_is_identical(out)

    # the calibration was measured (quick: no usable one was cached) and handed to validate
    assert fakes["ensured"] == [("cpu", True)]
    cal = report.calibration
    assert isinstance(cal, CalibrationStage) and cal.usable and not cal.cached and cal.quick
    assert cal.info.device_name == fakes["calibration"].device_name
    assert cal.info.label.startswith(f"calibrated on {fakes['calibration'].device_name}")
    assert cal.curves == len(fakes["calibration"].residuals())
    calls = fakes["validate"].calls
    assert calls and all(c is fakes["calibration"] for _, c in calls)

    # every case of the quick sweep, one a call, profiled as the sweep says (the budget allows)
    val = report.validation
    assert isinstance(val, ValidationStage) and isinstance(val.result, ValidationResult)
    sweep = cases("cpu", quick=True)
    assert [asked[0].name for asked, _ in calls] == [c.name for c in sweep]
    assert [c[0].profile for c, _ in calls] == [c.profile for c in sweep]
    assert not val.left_out and not val.profiles_skipped and val.sweep_cases == len(sweep)
    r = val.result
    assert len(r.points) == len(sweep) - 1 and [s.case for s in r.skipped] == [sweep[3].name]
    assert len(r.per_op) == sum(c.profile for c in sweep)
    assert (tmp_path / "rep" / report.pictures["validation"]).is_file()

    # the model stage has the calibrated time of each predicted step beside the roofline bound
    assert set(report.model.expected) == set(report.model.predictions)
    assert all(e.step_time_s > 0 and e.label for e in report.model.expected.values())

    page = (out / "index.html").read_text(encoding="utf-8")
    sec = _section(page, "prediction")
    assert "How good is the prediction" in sec and 'id="pic-validation"' in sec
    # the verdict of the one CPU target, as computed from the points
    (verdict,) = r.verdicts()
    assert verdict.name == "median" and verdict.target == pytest.approx(0.10)
    assert re.search(rf'median \|m/p − 1\|.*?{verdict.word}</span>', sec, flags=re.S)
    assert f"{100 * r.stats.median:.1f} %" in sec
    # a CPU's host and kernels run in series: no host-bound split, no rows for one
    assert r.bound_stats() is None and "holds up" not in sec
    # the case table: each measured case with its measured, calibrated, m/p and roofline bound
    table = sec[sec.index('id="prediction-cases"'):]
    table = table[:table.index("</table>")]
    for p in r.points:
        assert p.case in table and f'data-v="{float(p.ratio)!r}"' in table
        assert f'data-v="{float(p.roofline_s)!r}"' in table
    # each traced case's own steps at p10 and p90 over their median
    assert table.count("0.90–1.20×") == sum(p.trace is not None for p in r.points) > 0
    for words in ("roofline bound", "calibrated expected", "measured / calibrated",
                  "what the hardware allows", "what this machine will take", "days old"):
        assert words in sec, words
    # hostile text from the calibration's device, a skipped case and validate's notes: escaped
    assert ESCAPED in sec and "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script>") == 1  # the page's own sorting script
    # the model table labels both times
    model = _section(page, "model")
    assert "time: roofline bound" in model and "time: calibrated" in model
    assert "src-calibrated" in model
    # the reproduce section has the commands
    assert any(c.command.startswith("gptperf validate --quick") for c in report.commands)
    assert any(c.command.startswith("gptperf calibrate --quick") for c in report.commands)


def test_gpu_targets_render_with_pass_and_miss() -> None:
    from gptperf.plan import ExecutionPlan
    from gptperf.report import resolve_settings

    cal = flat_calibration("cuda")
    plan = ExecutionPlan.eager("sdpa")
    # errors 0.01, 0.02, 0.02, 0.20 -> median 0.02 (PASS), p90 0.20 (MISS), max 0.20 (MISS);
    # host 0.9, 0.8, 0.5 and 0.1 of device: cases 0 and 1 (errors 0.01, 0.02) wait on the host
    points = [ValidationPoint(f"case {i}", "train", "gpt2", 1, 64, "bf16", plan, m, 1.0, 0.5,
                              expected_host_s=h, expected_device_s=1.0)
              for i, (m, h) in enumerate(((1.01, 0.9), (0.98, 0.8), (1.02, 0.5), (1.20, 0.1)))]
    r = ValidationResult("cuda", "Test GPU", True, CalibrationInfo.of(cal), points=points,
                         per_op=[OpErrors("case 0", (OpPair("lm_head", "fwd", 1e-3, 0.95e-3),))])
    report = ReportData(resolve_settings(ReportOptions(device="cpu")))
    report.put("calibration", CalibrationStage.of(cal, cached=True, path=None))
    report.records = {n: StageRecord(n, n, status="ok") for n in ("calibration", "validation")}

    def rendered(stage: ValidationStage) -> tuple[str, str, list[tuple[str, str]]]:
        report.put("validation", stage)
        page = render_page(report, Path("."))
        sec = _section(page, "prediction")
        targets = sec[sec.index('id="prediction-targets"'):]
        targets = targets[:targets.index("</table>")]
        assert all(str(esc(v.label)) in targets for v in r.verdicts())
        # the reloaded data draws the same page
        doc = json.loads(to_json(report.to_dict()))
        assert render_page(ReportData.from_dict(doc), Path(".")) == page
        return page, sec, re.findall(r'<span class="verdict-(\w+)">(\w+)</span>', targets)

    words = {v.name: v.word for v in r.verdicts()}
    assert words == {"median": "PASS", "p90": "MISS", "max": "MISS", "per_op": "PASS"}
    page, sec, found = rendered(ValidationStage(r, budget_s=30.0, sweep_cases=4))
    assert found == [(v.word.lower(), v.word) for v in r.verdicts()]
    assert "(GPU), over 4 cases" in sec and "PARTIAL" not in sec
    # the statistics apart: host-bound median 0.015, max 0.02; device-bound median 0.11, max 0.20
    for words, median, worst in (("the 2 steps the host holds up (predicted host time ≥ 0.8× device "
                                  "time)", 1.5, 2.0), ("the 2 steps the device holds up", 11.0, 20.0)):
        row = sec[sec.index(words):]
        row = row[:row.index("</tr>")]
        assert f"{median:.1f} %" in row and f"{worst:.1f} %" in row
    assert "median |measured / calibrated − 1|, 4 cases</" in page
    assert "could not be drawn" not in page
    # a sweep cut short for time: its figures, but no verdict on targets set for the whole sweep
    page, sec, found = rendered(ValidationStage(r, budget_s=30.0, sweep_cases=8,
                                                left_out=["a compiled case"]))
    assert found == [("none", "PARTIAL")] * len(r.verdicts())
    assert "(GPU), over 4 of the quick sweep&#x27;s 8 cases" in sec
    assert "4 cases of the sweep&#x27;s 8 (the rest left out for time)" in page


# --- no calibration: a clear note, not a crash ---------------------------------------------------


def test_no_cached_calibration_and_none_measured_is_a_clear_note(
        tmp_path: Path, fakes: dict[str, Any]) -> None:
    out = tmp_path / "rep"
    result = build_report(ReportOptions(out=out, device="cpu", calibrate=False),
                          _stages(*STAGE_NAMES))
    assert result.ok and result.written, result.summary()
    assert fakes["ensured"] == [] and fakes["validate"].calls == []  # nothing measured
    report = _reloaded_page_is_identical(out)
    assert report.calibration.info is None and report.validation.result is None
    assert report.model.expected == {} and report.model.expected_notes
    sec = _section((out / "index.html").read_text(encoding="utf-8"), "prediction")
    for words in ("no calibration of", "gptperf calibrate", "no validation: it needs a calibration"):
        assert words in sec, words
    assert "note-error" not in sec  # a note, not a failure


def test_a_failing_calibration_is_named_and_the_report_goes_on(
        tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.measure.calibrate as cal

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"no curves today {EVIL}\nsecond line")

    monkeypatch.setattr(cal, "ensure_calibration", broken)
    out = tmp_path / "rep"
    result = build_report(ReportOptions(out=out, device="cpu"), _stages(*STAGE_NAMES))
    assert result.ok, result.summary()
    report = _reloaded_page_is_identical(out)
    (why,) = report.calibration.notes
    assert "measuring one failed (RuntimeError: no curves today" in why and "second line" not in why
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "measuring one failed (RuntimeError: no curves today " + ESCAPED in page
    assert "<script>alert" not in page


def test_a_stale_cached_calibration_is_measured_again(tmp_path: Path, fakes: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.measure.calibrate as cal

    def stale(device: Any, required: bool = False) -> Any:
        raise UserError("the calibration of 'Test CPU' is 40 days old; run `gptperf calibrate`")

    monkeypatch.setattr(cal, "calibration_for", stale)
    build_report(ReportOptions(out=tmp_path / "rep", device="cpu"), _stages("calibration"))
    report = _reloaded_page_is_identical(tmp_path / "rep")
    assert fakes["ensured"] == [("cpu", True)] and report.calibration.usable
    assert "40 days old" in report.calibration.notes[0]


def test_a_usable_cached_calibration_is_reused(tmp_path: Path, fakes: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.measure.calibrate as cal

    monkeypatch.setattr(cal, "calibration_for", lambda device, required=False: fakes["calibration"])
    build_report(ReportOptions(out=tmp_path / "rep", device="cpu"), _stages("calibration"))
    report = _reloaded_page_is_identical(tmp_path / "rep")
    assert fakes["ensured"] == [] and report.calibration.cached and report.calibration.usable
    assert report.calibration.measured_s == 0.0


def test_a_report_without_the_new_stages_draws_the_section_as_missing(tmp_path: Path) -> None:
    """An earlier report.json (no calibration or validation stage) still reads and draws."""
    from gptperf.report import resolve_settings

    report = ReportData(resolve_settings(ReportOptions(device="cpu")))
    doc = json.loads(to_json(report.to_dict()))
    page = render_page(ReportData.from_dict(doc), tmp_path)
    sec = _section(page, "prediction")
    assert "stage &#x27;calibration&#x27; did not run" in sec and "could not be drawn" not in page


# --- the time budget --------------------------------------------------------------------------


def _timed(monkeypatch: pytest.MonkeyPatch, calibration: Any) -> tuple[FakeValidate, Clock]:
    """FakeValidate on a fake clock: each case takes exactly its estimate (scale stays 1)."""
    import gptperf.validate.run as validate_run

    clock = Clock()

    def took(case: Any) -> float:
        c = case_cost(case, calibration, "cpu")
        return c.measure_s + (c.profile_s if case.profile else 0.0)

    fake = FakeValidate(clock=clock, took=took)
    monkeypatch.setattr(validate_run, "validate", fake)
    return fake, clock


def test_budget_measures_every_case_before_profiling_any(monkeypatch: pytest.MonkeyPatch) -> None:
    cal = flat_calibration("cpu")
    sweep = cases("cpu", quick=True)
    costs = [case_cost(c, cal, "cpu") for c in sweep]
    assert all(c.measure_s > 0 and c.profile_s > 0 for c in costs)

    fake, clock = _timed(monkeypatch, cal)
    everything = sum(c.measure_s + c.profile_s for c in costs)
    stage = run_validation("cpu", cal, everything + 1, clock=clock)
    assert not stage.left_out and not stage.profiles_skipped and not stage.notes
    assert [s[0].profile for s, _ in fake.calls] == [c.profile for c in sweep]

    # room to measure every case, none to profile: every case measured, every profile skipped
    fake, clock = _timed(monkeypatch, cal)
    measured_only = sum(c.measure_s for c in costs)
    stage = run_validation("cpu", cal, measured_only + 0.01, clock=clock)
    assert not stage.left_out
    assert stage.profiles_skipped == [c.name for c in sweep if c.profile]
    assert not any(s[0].profile for s, _ in fake.calls)
    assert clock.now <= measured_only + 0.01
    assert "per-operation profiles of" in stage.notes[0]


def test_budget_leaves_out_what_does_not_fit_but_runs_the_first_case(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cal = flat_calibration("cpu")
    sweep = cases("cpu", quick=True)
    fake, clock = _timed(monkeypatch, cal)
    stage = run_validation("cpu", cal, 0.0, clock=clock)
    assert [s[0].name for s, _ in fake.calls] == [sweep[0].name]  # the first case, always
    assert stage.left_out == [c.name for c in sweep[1:]]
    assert stage.result is not None and len(stage.result.points) == 1
    assert f"{len(sweep) - 1} of the sweep's {len(sweep)} cases left out" in stage.notes[0]

    fake, clock = _timed(monkeypatch, cal)
    budget = sum(case_cost(c, cal, "cpu").measure_s for c in sweep[:4])
    stage = run_validation("cpu", cal, budget, clock=clock)
    ran = [s[0].name for s, _ in fake.calls]
    assert set(ran) | set(stage.left_out) == {c.name for c in sweep} and stage.left_out
    assert clock.now <= budget + case_cost(sweep[0], cal, "cpu").measure_s


def test_a_case_waits_out_a_spell_only_within_its_share_of_the_sections_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A case measured in a slow spell is measured again after it: the wait and the second
    measurement fit the case's share of the time left, so the retries keep the report within its
    budget (each validate call would otherwise allow a quick sweep's whole minute)."""
    from gptperf.validate.spells import SPELL_BUDGET_S

    cal = flat_calibration("cpu")
    sweep = cases("cpu", quick=True)
    estimates = [c.measure_s + (c.profile_s if x.profile else 0.0)
                 for x, c in ((x, case_cost(x, cal, "cpu")) for x in sweep)]
    budget = 3 * sum(estimates)
    fake, clock = _timed(monkeypatch, cal)
    run_validation("cpu", cal, budget, clock=clock)
    assert len(fake.spells) == len(sweep)
    for i, ((now, spell_s), estimate) in enumerate(zip(fake.spells, estimates, strict=True)):
        share = (budget - now) / (len(sweep) - i)
        assert 0 < spell_s <= share - 2 * estimate + 1e-9
    # no time to spare: no retry; time to spare: a quick sweep's allowance, no more
    fake, clock = _timed(monkeypatch, cal)
    run_validation("cpu", cal, 0.0, clock=clock)
    assert fake.spells == [(0.0, 0.0)]
    fake, clock = _timed(monkeypatch, cal)
    run_validation("cpu", cal, 1e6, clock=clock)
    assert {s for _, s in fake.spells} == {SPELL_BUDGET_S[True]}


def test_validation_budget_is_what_the_report_has_left_and_never_less_than_its_floor() -> None:
    assert validation_budget("cpu", False, 100.0) == pytest.approx(180 - 10 - 100)
    assert validation_budget("cuda", False, 200.0) == pytest.approx(360 - 15 - 200)
    # stages that ran long leave the section its floor: a median over a few cases, not one
    assert validation_budget("cpu", False, 165.0) == validation_budget("cpu", False, 400.0) == 15.0
    assert validation_budget("cuda", False, 300.0) == validation_budget("cuda", False, 400.0) == 60.0
    assert 0 < validation_budget("cpu", True, 30.0) <= 10


# --- small pieces -----------------------------------------------------------------------------


def test_bench_entries_written_before_their_label_are_told_apart_by_their_source() -> None:
    from gptperf.measure.bench import CALIBRATED, ROOFLINE, StepPrediction

    def entry(source: str, t: float) -> dict[str, Any]:
        return {"hardware": source, "source": source, "step_time_s": t, "tokens_per_s": 1 / t,
                "measured_step_time_s": 1.0, "measured_over_predicted": 1 / t}

    preds = [StepPrediction.from_dict(entry(s, t))
             for s, t in (("measured", 1.0), ("datasheet", 2.0), ("calibrated", 3.0))]
    assert [p.prediction for p in preds] == [ROOFLINE, ROOFLINE, CALIBRATED]
    assert [p.is_calibrated for p in preds] == [False, False, True]


def test_the_calibration_summary_names_its_worst_curve_and_the_median_residual() -> None:
    """The page's curve fact: the median and the largest leave-one-out residual, with the curve it
    is of; a report written before the curve was named reads back without it, as it was shown."""
    from gptperf.perfmodel.curves import Curve
    from gptperf.report.doc import pct
    from gptperf.report.html import fmt
    from gptperf.report.page_prediction import _curves_fact

    base = flat_calibration("cpu")  # one point a curve: no residual
    bent = Curve((1, 2, 4), (1.0, 3.0, 4.0))  # its middle point read from its neighbours: 1/3 off
    straight = Curve((1, 2, 4), (1.0, 2.0, 4.0))  # read exactly
    cal = CalibrationStage.of(dataclasses.replace(
        base, vector={**base.vector, "add:fp32": bent, "gelu_fwd:fp32": straight}), cached=True, path=None)
    assert (cal.worst_curve, cal.worst_residual) == ("vector:add:fp32", pytest.approx(1 / 3))
    assert cal.median_residual == pytest.approx(1 / 6)
    assert _curves_fact(cal) == (f"{cal.curves}; leave-one-out residual: median "
                                 f"{fmt(pct(1 / 6), '%')}, largest {fmt(pct(1 / 3), '%')} (vector:add:fp32)")
    doc = json.loads(to_json(cal.to_dict()))
    assert CalibrationStage.from_dict(doc) == cal
    old = CalibrationStage.from_dict({k: v for k, v in doc.items() if k not in ("worst_curve", "median_residual")})
    assert old.worst_curve is None and "largest leave-one-out residual" in _curves_fact(old)


def test_new_stage_results_refuse_another_schema_in_one_line() -> None:
    cal = CalibrationStage.of(flat_calibration("cpu"), cached=True, path="/x")
    val = ValidationStage(None, budget_s=1.0, notes=["n"])
    for stage, cls in ((cal, CalibrationStage), (val, ValidationStage)):
        doc = json.loads(to_json(stage.to_dict()))
        assert cls.from_dict(doc).to_dict() == stage.to_dict()
        with pytest.raises(UserError) as err:
            cls.from_dict({**doc, "schema": "gptperf.report.other/9"})
        assert "\n" not in str(err.value) and cls.SCHEMA in str(err.value)


def test_calibrate_flag_and_its_device_default(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.cli import build_parser, main
    from gptperf.report import resolve_settings

    assert resolve_settings(ReportOptions(device="cpu")).calibrate is True
    import torch

    from gptperf import runtime
    from gptperf.report import build

    # a GPU calibrates too (its training run gives the time back)
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(build, "device_name", lambda device: "a fake card")
    gpu = resolve_settings(ReportOptions(device="cuda"))
    assert (gpu.device_type, gpu.compile, gpu.calibrate) == ("cuda", True, True)
    assert resolve_settings(ReportOptions(device="cuda", calibrate=False)).calibrate is False
    monkeypatch.undo()
    assert resolve_settings(ReportOptions(device="cpu", calibrate=False)).calibrate is False
    parser = build_parser()
    assert parser.parse_args(["report", "--no-calibrate"]).calibrate is False
    assert parser.parse_args(["report", "--calibrate"]).calibrate is True
    assert parser.parse_args(["report"]).calibrate is None
    with pytest.raises(SystemExit) as stop:
        main(["report", "--calibrate", "--no-calibrate"])
    assert stop.value.code == 2
    s = dataclasses.replace(resolve_settings(ReportOptions(device="cpu")), calibrate=False)
    assert ReportData.from_dict(json.loads(to_json(ReportData(s).to_dict()))).settings.calibrate \
        is False


def test_cases_run_in_a_spell_are_named_once_over_the_report_and_counted_apart(
        tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.validate.run import spells_note

    fake = fakes["validate"]
    spelled = cases("cpu", quick=True)[5].name  # m/p 1.20

    def in_spells(*args: Any, **kwargs: Any) -> ValidationResult:
        result = FakeValidate.__call__(fake, *args, **kwargs)
        result.points = [dataclasses.replace(p, fork_speed=1.5 if p.case == spelled else 1.05)
                         for p in result.points]
        return result

    monkeypatch.setattr(fake, "__call__", in_spells)
    import gptperf.validate.run as validate_run

    monkeypatch.setattr(validate_run, "validate", in_spells)
    out = tmp_path / "rep"
    assert build_report(ReportOptions(out=out, device="cpu"), _stages(*STAGE_NAMES)).ok
    r = _reloaded_page_is_identical(out).validation.result
    assert r.spell_count == 1 and r.steady_stats.n == r.stats.n - 1
    assert r.steady_stats.max < r.stats.max == pytest.approx(0.20)
    notes = [n for n in r.notes if "spell" in n]
    assert notes == [spells_note(r.points)] and f"{spelled} (×1.50, m/p 1.20)" in notes[0]
    sec = _section((out / "index.html").read_text(encoding="utf-8"), "prediction")
    assert "without the 1 case(s) run in a spell of the machine" in sec
    assert f"{100 * r.steady_stats.max:.1f} %" in sec


def test_the_speed_probes_of_the_cases_are_one_note_of_each_kind_over_the_report(
        tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case's `validate` call probes the machine as it begins (against the calibration) and
    at its end (against its start); the report says each kind once, as ranges over the cases, and
    keeps the machine's speed at the last case's end over the first case's start."""
    import gptperf.validate.run as validate_run

    fake = fakes["validate"]
    order = [c.name for c in cases("cpu", quick=True)]

    def probed(*args: Any, **kwargs: Any) -> ValidationResult:
        result = FakeValidate.__call__(fake, *args, **kwargs)
        i = order.index(kwargs["sweep"][0].name)
        result.speed_vs_calibration = {"host_s": 1.0 + 0.1 * i, "matmul_s": 1.0}  # slower and slower
        result.speed_drift = {"host_s": 1.5 if i % 2 else 1.0, "matmul_s": 1.0}  # odd cases slowed
        return result

    monkeypatch.setattr(validate_run, "validate", probed)
    out = tmp_path / "rep"
    assert build_report(ReportOptions(out=out, device="cpu"), _stages(*STAGE_NAMES)).ok
    r = _reloaded_page_is_identical(out).validation.result
    speed = [n for n in r.notes if "(speed probe)" in n]
    assert len(speed) == 2
    assert "host ops 1.30–1.70× slower in 5 of 8 cases than at calibration" in speed[0]
    assert "host ops 1.50× slower in 4 of 8 cases than at each case's start" in speed[1]
    assert r.speed_vs_calibration == pytest.approx({"host_s": 1.0, "matmul_s": 1.0})  # the first case's
    assert r.speed_drift == pytest.approx({"host_s": 1.7 * 1.5, "matmul_s": 1.0})  # last end / first start


def test_a_target_a_hair_below_its_value_reads_apart_on_the_page() -> None:
    from gptperf.report.page_prediction import _reached_and_target

    reached, target = _reached_and_target(0.0801, 0.08)
    assert ">8.01 %<" in reached and target == "≤ 8.00 %"
    reached, target = _reached_and_target(0.065, 0.08)
    assert ">6.5 %<" in reached and target == "≤ 8.0 %"
