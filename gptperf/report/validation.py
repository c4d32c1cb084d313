"""The report's run of `gptperf validate`'s quick sweep within a time budget: each case measured
(and profiled per operation, where the time allows) by `validate` itself, one case a call, the
cases that would overrun left out — judged by each case's own calibrated expected time, scaled
by how far the cases run so far took longer than estimated.

Measuring every case comes before profiling any: a profile is taken only when the cases still
to measure fit in what would be left. The first case always runs, so the section has a number.
On a CPU a case measured in a slow spell of the machine is measured again after it
(`validate.spells`) only within the case's share of the section's time left.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptperf.report.results import ValidationStage
from gptperf.validate import run as validate_run
from gptperf.validate.results import ValidationResult
from gptperf.validate.run import PROFILE_SCHEDULE, builds, counts, notes_over, timed_steps
from gptperf.validate.spells import SPELL_BUDGET_S
from gptperf.validate.sweep import cases

if TYPE_CHECKING:
    from gptperf.perfmodel.calibration import Calibration
    from gptperf.validate.sweep import ValidationCase

# The whole report's wall time (the goal: under 3 minutes on a 2-core CPU, 6 on an H200) less
# what writing the page and the stage bookkeeping after the validation take.
REPORT_BUDGET_S: dict[str, float] = {"cpu": 180.0, "cuda": 360.0}
PAGE_RESERVE_S: dict[str, float] = {"cpu": 10.0, "cuda": 15.0}
QUICK_BUDGET_S = 5.0  # --quick tests the pipeline: a case or two
# The section's least time whatever the stages before took: a median over a few cases, not one
# (a CPU case takes 2–3 s). On the CPU the training run gives back what the stages before it ran
# over (`stages.training_seconds`), so the report stays within its budget all the same.
VALIDATION_FLOOR_S: dict[str, float] = {"cpu": 15.0, "cuda": 60.0}
# Guesses a case's cost is built from (seconds): building its model and step and freeing it,
# torch.compile of a compiled case, the profiler's own setup and trace analysis; a step that
# the calibration cannot cost; the profiler's slowdown of a profiled step.
SETUP_S: dict[str, float] = {"cpu": 1.0, "cuda": 3.0}
COMPILE_S: dict[str, float] = {"cpu": 40.0, "cuda": 30.0}
PROFILE_SETUP_S: dict[str, float] = {"cpu": 2.0, "cuda": 4.0}
DEFAULT_STEP_S: dict[str, float] = {"cpu": 0.3, "cuda": 0.02}
PROFILER_SLOWDOWN = 2.0


def _kind(device_type: str) -> str:
    return "cuda" if device_type == "cuda" else "cpu"


def validation_budget(device_type: str, quick: bool, elapsed_s: float) -> float:
    """Seconds the validation may take when the report has run for `elapsed_s`: what is left
    of the report's budget, and never less than `VALIDATION_FLOOR_S`."""
    if quick:
        return QUICK_BUDGET_S
    kind = _kind(device_type)
    return max(VALIDATION_FLOOR_S[kind], REPORT_BUDGET_S[kind] - PAGE_RESERVE_S[kind] - elapsed_s)


@dataclass(frozen=True)
class CaseCost:
    """Estimated seconds of a case: measured (`measure_s`) and, on top, profiled (`profile_s`)."""

    measure_s: float
    profile_s: float


def case_cost(case: ValidationCase, calibration: Calibration | None, device_type: str, scale: float = 1.0) -> CaseCost:
    """What validating `case` should take: its warm-up and timed steps at the calibrated expected
    step time (a default where the calibration cannot cost it), setup and compilation on top;
    `scale` corrects the step time by what the cases so far took."""
    kind = _kind(device_type)
    estimate = validate_run.expected_step_s(case, calibration)
    step_s = DEFAULT_STEP_S[kind] if estimate is None else estimate
    warmup, _ = counts(case.workload.kind, device_type)
    timed = timed_steps(case.workload.kind, device_type, estimate)
    compile_s = COMPILE_S[kind] if case.plan.compiled else 0.0
    measure = builds(device_type) * (SETUP_S[kind] + compile_s + (warmup + timed) * step_s * scale)
    profiled_steps = sum(PROFILE_SCHEDULE.values())
    profile = (PROFILE_SETUP_S[kind] + compile_s
               + profiled_steps * step_s * scale * PROFILER_SLOWDOWN)
    return CaseCost(measure, profile)


def spell_budget(remaining_s: float, cases_left: int, estimated_s: float) -> float:
    """Seconds a case may spend waiting out a slow spell, to be measured again after it: what its
    share of the section's time left (`remaining_s` over `cases_left`, itself included) holds
    beyond measuring it twice, and at most a quick sweep's own allowance."""
    share = remaining_s / cases_left
    return max(0.0, min(SPELL_BUDGET_S[True], share - 2 * estimated_s))


def merge(results: Sequence[Any], wall_time_s: float) -> Any:
    """One `ValidationResult` of the results of several `validate` calls (one case each, made
    without the notes said over a sweep): each call's own notes once, then those said over every
    case (`notes_over`: the speed probes', the cases in spells or below their clock)."""
    first, last = results[0], results[-1]
    notes: list[str] = []
    for r in results:
        notes += [n for n in r.notes if n not in notes]
    return ValidationResult(
        first.device_type, first.device_name, first.quick, first.calibration,
        points=[p for r in results for p in r.points], per_op=[e for r in results for e in r.per_op],
        skipped=[s for r in results for s in r.skipped],
        wall_time_s=wall_time_s, notes=notes + notes_over(results), environment=dict(first.environment),
        speed_vs_calibration=dict(first.speed_vs_calibration),
        speed_drift=_end_over_start(first, last))


def _end_over_start(first: Any, last: Any) -> dict[str, float]:
    """Each probe part at `last`'s end over `first`'s start: both calls read the calibration's
    probe, so (last's start / calibration) · (last's end / last's start) / (first's start /
    calibration)."""
    a, b = first.speed_vs_calibration, last.speed_vs_calibration
    return {k: b[k] * v / a[k] for k, v in last.speed_drift.items() if k in a and k in b}


def run_validation(device: Any, calibration: Calibration, budget_s: float,
                   progress: Callable[..., None] | None = None, *,
                   sweep: Sequence[Any] | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> ValidationStage:
    """Validate's quick sweep on `device` against `calibration` (a `Calibration`) in about
    `budget_s` seconds; the stage's result says what was left out and why."""
    device_type = getattr(device, "type", str(device).split(":")[0])
    todo = list(sweep) if sweep is not None else cases(_kind(device_type), quick=True)
    stage = ValidationStage(None, budget_s=budget_s, sweep_cases=len(todo))
    start = clock()
    results: list[Any] = []
    ratios: list[float] = []  # took / estimated, of each case run

    def cost(case: ValidationCase) -> CaseCost:
        scale = statistics.median(ratios) if ratios else 1.0
        return case_cost(case, calibration, device_type, scale)

    for i, case in enumerate(todo):
        remaining = budget_s - (clock() - start)
        c = cost(case)
        if results and c.measure_s > remaining:
            stage.left_out.append(case.name)
            continue
        run = case
        if case.profile:
            later = sum(cost(x).measure_s for x in todo[i + 1:])
            if c.measure_s + c.profile_s + later > remaining:
                run = dataclasses.replace(case, profile=False)
                stage.profiles_skipped.append(case.name)

        def say(what: str = "", done: Any = None, total: Any = None, i: int = i,
                name: str = case.name) -> None:
            if progress is not None:
                progress(i, len(todo), f"{what} {name}".strip())

        estimated = c.measure_s + (c.profile_s if run.profile else 0.0)
        t0 = clock()
        results.append(validate_run.validate(device, quick=True, progress=say,
                                             calibration=calibration, sweep=[run],
                                             sweep_notes=False,
                                             spell_budget_s=spell_budget(remaining, len(todo) - i,
                                                                         estimated)))
        took = clock() - t0
        if estimated > 0 and took > 0:
            ratios.append(took / estimated)
    if results:
        stage.result = merge(results, clock() - start)
    if stage.left_out:
        stage.notes.append(
            f"{len(stage.left_out)} of the sweep's {len(todo)} cases left out to keep the report "
            f"within its time budget ({budget_s:.0f} s for this section): "
            f"{', '.join(stage.left_out)}; `gptperf validate --quick` measures them all")
    if stage.profiles_skipped:
        stage.notes.append(
            f"per-operation profiles of {', '.join(stage.profiles_skipped)} skipped to keep the "
            "report within its time budget (the end-to-end numbers are complete for the cases "
            "measured); `gptperf validate --quick` profiles them")
    return stage
