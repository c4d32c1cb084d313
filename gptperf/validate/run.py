"""`validate`: measure every case of a sweep with the project's own steps and timer, predict it from
this device's calibration (and bound it by the roofline), and profile a few cases to score the
prediction per operation — the numbers behind `gptperf validate`.

A case that cannot run (out of memory, a plan this machine lacks, a prediction that fails) is
recorded as skipped with its one-line reason; the sweep goes on. Memory is freed between cases
(and torch.compile's caches reset after a compiled one, so no case inherits another's graphs).
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.envinfo import device_name as name_of
from gptperf.envinfo import environment
from gptperf.errors import UserError
from gptperf.measure.bench import window_repeats
from gptperf.measure.fresh_process import run_json_child
from gptperf.measure.metrics import THROTTLED_SHARE, THROTTLED_WHY
from gptperf.measure.probe import (
    RECALIBRATE,
    HostSampler,
    SpeedProbe,
    against_calibration,
    fork_speed,
    host_speeds,
    host_unit,
    phase_speeds_over,
    probe_for,
    speed_note,
    speed_over,
    speed_range_note,
    take_probe,
)
from gptperf.measure.timer import Progress
from gptperf.memguard import is_out_of_memory, release_memory
from gptperf.perfmodel import predict, resolve_hardware
from gptperf.perfmodel.expected import expected
from gptperf.plan import ExecutionPlan
from gptperf.profiling.run import profile_workload
from gptperf.validate.results import (
    OP_FLOOR_S,
    CalibrationInfo,
    HostTrace,
    OpErrors,
    OpPair,
    Skipped,
    ValidationPoint,
    ValidationResult,
)
from gptperf.validate.spells import SPELL_BUDGET_S, SpellRetry
from gptperf.validate.sweep import ValidationCase, cases

if TYPE_CHECKING:
    import torch

    from gptperf.perfmodel.calibration import Calibration
    from gptperf.perfmodel.expected import Expected
    from gptperf.perfmodel.hardware import Hardware

# (warm-up, timed) steps per case. GPU: bench's defaults (decode: more, shorter steps). CPU:
# fewer, so the quick sweep stays within its minute on two cores.
COUNTS: dict[str, dict[str, tuple[int, int]]] = {
    "cuda": {"step": (3, 10), "decode": (5, 50)},
    "cpu": {"step": (2, 5), "decode": (3, 20)},
}
PROFILE_SCHEDULE = {"wait": 1, "warmup": 1, "active": 3}
# Times a case is built and measured, the median kept. On a CPU a step's speed is settled when its
# model is built (where its tensors land), so more steps of one build do not help (BENCHMARKS.md,
# "The CPU: freed memory kept, and three builds a case").
BUILDS: dict[str, int] = {"cuda": 1, "cpu": 3}


def counts(kind: str, device_type: str) -> tuple[int, int]:
    """(warm-up, timed) steps of a case of `kind` on `device_type`."""
    table = COUNTS.get(device_type, COUNTS["cpu"])
    return table["decode" if kind.startswith("decode") else "step"]


def builds(device_type: str) -> int:
    """How many builds of a case on `device_type` are measured (`BUILDS`)."""
    return BUILDS.get(device_type, BUILDS["cpu"])


def expected_step_s(case: ValidationCase, calibration: Calibration) -> float | None:
    """The case's calibrated expected step time under the plan it asks for (host costs as
    calibrated): an estimate, None where the calibration cannot cost it."""
    try:
        step_s = float(expected_case(case, case.plan, calibration).step_time_s)
    except Exception:  # noqa: BLE001 - an estimate only: measuring the case says what fails
        return None
    return step_s if math.isfinite(step_s) and step_s > 0 else None


def timed_steps(kind: str, device_type: str, step_s: float | None) -> int:
    """Timed steps of a case of `kind`: `counts`', or enough to span the device's window at the
    expected step time `step_s` (`expected_step_s`; None: unknown; `measure.bench.window_repeats`)."""
    return window_repeats(counts(kind, device_type)[1], device_type, step_s)


# --- the four things done to a case (apart, so tests can stand in for each) -------------------


@dataclass(frozen=True)
class CaseTiming:
    """A case measured: its median step (s), the plan that ran, and the host model's step (s)
    of the probe asked for, sampled between its steps (`probe.HostSampler`; None: not sampled);
    and the record behind them: every timed step (s, in order, the builds one after another) and
    every host sample (s) with the step it followed (`HostTrace`); `host_phase_s`: the median
    seconds of each phase of that step where it has several (the train probe's; {}: none);
    `clock_share`: the GPU's mean SM clock over its maximum while the steps were timed, the mean
    over the builds (None: not read); `fork_s`: a parallel CPU add's seconds sampled with the host
    (`probe.HostSampler.fork_s`; None: not sampled, or not a CPU)."""

    step_s: float
    plan: ExecutionPlan
    host_step_s: float | None = None
    trace: HostTrace | None = None
    host_phase_s: dict[str, float] = field(default_factory=dict)
    clock_share: float | None = None
    fork_s: float | None = None


def measure_case(case: ValidationCase, device: torch.device, repeats: int | None = None,
                 sample_host: str | None = None) -> CaseTiming:
    """Median step time (s) of the case over `repeats` timed steps (default: `counts`'), timed by
    `run_bench` (the step `bench` times) in each of `builds(device type)` builds, the median of
    those; the plan that ran (the one-row kernel is dropped where Triton is missing); and, with
    `sample_host` (a probe of `probe.HOST_PROBES`), the host model's step of that probe sampled
    between the timed steps."""
    from gptperf.measure.bench import run_bench  # deferred: tests patch it

    w = case.workload
    warmup, default = counts(w.kind, device.type)
    repeats = repeats or default
    sampler = HostSampler(device, probe=sample_host) if sample_host else None
    times, steps, clocks = [], [], []
    for _ in range(builds(device.type)):
        bench = run_bench(case.config, w.kind, w.batch, w.seq, w.dtype, device, plan=case.plan,
                          warmup=warmup, repeats=repeats, calibrated=False,  # predicted here
                          between_steps=sampler)
        times.append(bench.step_time_s)
        steps += bench.timing.total.samples
        if bench.utilization is not None and bench.utilization.clock_share is not None:
            clocks.append(bench.utilization.clock_share)
    try:  # a record for judging the host's reading afterwards: never the reason a case fails
        trace = HostTrace(tuple(steps), tuple(sampler.samples) if sampler else (),
                          tuple(sampler.after_step) if sampler else (),
                          {k: tuple(v) for k, v in sampler.phase_samples.items()} if sampler else {})
    except ValueError:
        trace = None
    return CaseTiming(statistics.median(times), bench.plan, sampler.step_s() if sampler else None,
                      trace, sampler.phase_s() if sampler else {},
                      statistics.fmean(clocks) if clocks else None,
                      sampler.fork_s() if sampler else None)


def measure_case_isolated(case: ValidationCase, device: torch.device, repeats: int | None = None,
                          sample_host: str | None = None) -> CaseTiming:
    """`measure_case` in a fresh Python process (`gptperf.validate.child`), as `gptperf bench`
    runs: on the H200 machine a host-bound eager step measured in a process that had already
    built and run other models took up to 1.5x longer than in a fresh one."""
    doc = {"name": case.name, "config": case.config.to_dict(), "workload": case.workload.to_dict(),
           "plan": case.plan.to_dict(), "device": str(device), "repeats": repeats,
           "sample_host": sample_host}
    out = run_json_child(["-m", "gptperf.validate.child"], json.dumps(doc))
    if "error" in out:
        raise RuntimeError(out["error"])
    host = out.get("host_step_s")
    trace = HostTrace.from_dict(out["trace"]) if out.get("trace") else None
    clock, fork = out.get("clock_share"), out.get("fork_s")
    return CaseTiming(float(out["step_time_s"]), ExecutionPlan.from_dict(out["plan"]),
                      None if host is None else float(host), trace,
                      {k: float(v) for k, v in out.get("host_phase_s", {}).items()},
                      None if clock is None else float(clock), None if fork is None else float(fork))


def expected_case(case: ValidationCase, plan: ExecutionPlan, calibration: Calibration,
                  host_speed: float | None = None,
                  phase_speeds: dict[str, float] | None = None,
                  parallel_speed: float | None = None) -> Expected:
    """The calibrated prediction (`perfmodel.expected.Expected`) of the case under `plan`, its
    host costs scaled by `host_speed` (`measure.probe.host_speed`), a CPU's parallel kernels by
    `parallel_speed` (`measure.probe.fork_speed`)."""
    return expected(case.config, case.workload, plan, calibration, host_speed=host_speed,
                    phase_speeds=phase_speeds, parallel_speed=parallel_speed)


def roofline_case(case: ValidationCase, plan: ExecutionPlan, hardware: Hardware | None) -> float | None:
    """The roofline bound (s) of the case on `hardware` (None: no hardware for this device)."""
    if hardware is None:
        return None

    return predict(case.config, case.workload, hardware, plan).time_s


def profile_case(case: ValidationCase, plan: ExecutionPlan, device: torch.device,
                 out_dir: Path) -> dict[tuple[str, str], float]:
    """Measured device time per step of each (name, phase) of the case, from torch.profiler
    attribution (`gptperf profile`'s), without pictures or overhead runs."""
    w = case.workload
    result = profile_workload(case.config, w.kind, w.batch, w.seq, w.dtype, device, plan=plan,
                              out_dir=out_dir, plot=False, overhead=False, **PROFILE_SCHEDULE)
    return {(r.name, r.phase): r.measured_s for r in result.comparison.ops
            if math.isfinite(r.measured_s) and r.measured_s > 0}


# --- helpers -----------------------------------------------------------------------------------


def op_pairs(measured: Mapping[tuple[str, str], float], expected_ops: Mapping[tuple[str, str], Any],
             floor_s: float = OP_FLOOR_S) -> tuple[OpPair, ...]:
    """Measured beside predicted device time of every (name, phase) either side has, leaving out
    operations under `floor_s` on both sides (a missing side counts as 0 s), longest first."""
    pairs = []
    for key in set(measured) | set(expected_ops):
        m = float(measured.get(key, 0.0))
        op = expected_ops.get(key)
        p = float(op.device_s) if op is not None else 0.0
        if max(m, p) >= floor_s:
            pairs.append(OpPair(key[0], key[1], m, p))
    return tuple(sorted(pairs, key=lambda o: (-o.measured_s, o.name, o.phase)))


def _reason(err: BaseException) -> str:
    """One line saying why a case gave no point."""
    text = " ".join(str(err).split()) or type(err).__name__
    if is_out_of_memory(err):
        return f"out of memory: {text}"[:240]
    if isinstance(err, UserError):
        return text[:240]
    return f"{type(err).__name__}: {text}"[:240]


def _hardware(device_name: str, device_type: str, dtype: str, cache: dict[str, Hardware | None],
              notes: list[str]) -> Hardware | None:
    """The roofline's machine for `dtype` (perfmodel's one default), None when there is none."""
    if dtype not in cache:
        try:
            cache[dtype] = resolve_hardware(None, device_name, device_type, dtype=dtype)
        except UserError as err:
            cache[dtype] = None
            notes.append(f"no roofline bound for {dtype}: {err}")
    return cache[dtype]


@dataclass(frozen=True)
class _Ran:
    """A case measured in the sweep, with the host's speed then (over the calibration's unit)."""

    case: ValidationCase
    plan: ExecutionPlan  # the plan that ran
    step_s: float
    sampled: float | None  # sampled among its steps
    after: float | None  # without a sample: probed for a second after them
    unit_probe: str  # the host model's step both are of
    trace: HostTrace | None = None
    phase_speeds: dict[str, float] | None = None  # each phase of that step sampled, if several
    clock_share: float | None = None  # the GPU's mean SM clock over its maximum as it ran
    fork_speed: float | None = None  # a parallel CPU add sampled among its steps, over calibration's

    @property
    def own_speed(self) -> float | None:
        return self.sampled if self.sampled is not None else self.after


@dataclass
class _Sweep:
    """What every stage of one validation shares: the device, its calibration, the result being
    filled, the progress callback, and the roofline's machine per dtype (`_hardware`'s cache)."""

    dev: torch.device
    dev_name: str
    calibration: Calibration
    result: ValidationResult
    progress: Progress | None
    hardware: dict[str, Hardware | None] = field(default_factory=dict)


def validate(device: torch.device | str = "auto", quick: bool = False, progress: Progress | None = None,
             calibration: Calibration | None = None, *, sweep: Sequence[ValidationCase] | None = None,
             isolate: bool = False, seed: int | None = None,
             sweep_notes: bool = True, spell_budget_s: float | None = None) -> ValidationResult:
    """Measure, predict and score every case of the sweep on `device` ("auto", "cpu", "cuda[:N]"
    or a torch.device).

    `calibration` (a `perfmodel.calibration.Calibration`): None loads this device's, a one-line
    UserError when there is none. `sweep`: the cases (default: `cases(device type, quick)`).
    `progress(stage, done, total)` hears of each case measured and each profile taken.
    `isolate`: measure each case in a fresh process (`measure_case_isolated`), as `gptperf bench`
    would; it costs a process start and, for compiled cases, a compilation each. `seed`: the
    seed `sweep` was drawn from (`drawn.draw_cases`), kept in the result. `sweep_notes`: end
    the notes with those said over the sweep's cases (`notes_over`); a caller that runs one case
    a call and merges the results (the report) says them once, over all of them.
    `spell_budget_s`: the seconds a CPU sweep may spend waiting out slow spells and measuring
    cases again (`spells.SpellRetry`; default `SPELL_BUDGET_S` by `quick`).
    """
    started = time.perf_counter()

    from gptperf.runtime import as_device  # deferred: loads torch

    dev = as_device(device)
    dev_name = name_of(dev)
    if calibration is None:
        from gptperf.measure.calibrate import calibration_for  # deferred: loads torch

        calibration = calibration_for(dev, required=True)
    todo = cases(dev.type, quick) if sweep is None else list(sweep)
    # eager cases first: torch.compile leaves worker processes and caches behind that can slow
    # the host of the eager steps measured after it
    todo.sort(key=lambda c: c.plan.compiled)
    result = ValidationResult(dev.type, dev_name, quick, CalibrationInfo.of(calibration),
                              environment=environment(dev), seed=seed)
    first = compare_speed(calibration, dev, result)
    state = _Sweep(dev, dev_name, calibration, result, progress)
    spells_s = SPELL_BUDGET_S[quick] if spell_budget_s is None else spell_budget_s
    retry = SpellRetry(calibration, spells_s) if dev.type == "cpu" else None

    ran = _measure_cases(state, todo, isolate=isolate, retry=retry)
    to_profile = _predict_cases(state, ran)
    _profile_cases(state, to_profile)

    result.speed_drift = take_probe(dev).slowdown(first)
    if retry is not None:
        result.notes += retry.notes
    if sweep_notes:
        result.notes += notes_over([result])
    result.wall_time_s = time.perf_counter() - started
    return result


def _measure_cases(state: _Sweep, todo: Sequence[ValidationCase], *, isolate: bool,
                   retry: SpellRetry | None) -> list[_Ran]:
    """Measure each case in turn (one that fails: skipped, with its reason), freeing memory after
    each."""
    sample = host_unit(state.calibration) is not None
    ran: list[_Ran] = []
    for i, case in enumerate(todo):
        if state.progress:
            state.progress("measuring", i, len(todo))
        try:
            ran.append(_measure_one(state, case, isolate=isolate, sample=sample, retry=retry))
        except Exception as err:  # noqa: BLE001 - a failed case is a recorded result, not a crash
            state.result.skipped.append(Skipped(case.name, _reason(err)))
        finally:
            release_memory(state.dev.type, compiled=case.plan.compiled)
    if state.progress:
        state.progress("measuring", len(todo), len(todo))
    return ran


def _measure_one(state: _Sweep, case: ValidationCase, *, isolate: bool, sample: bool,
                 retry: SpellRetry | None) -> _Ran:
    """Measure one case (again, on a CPU, if it ran in a slow spell) and the host's speed as it
    ran."""
    calibration, dev = state.calibration, state.dev
    measure = measure_case_isolated if isolate else measure_case
    timed = timed_steps(case.workload.kind, dev.type, expected_step_s(case, calibration))
    unit_probe = probe_for(calibration, case.workload.kind)
    # a CUDA-graph step is timed in a run and charged no host costs: no host probe
    graphed = case.plan.cuda_graph
    run_case = functools.partial(measure, case, dev, timed,
                                 sample_host=unit_probe if sample and not graphed else None)
    m = run_case()
    if retry is not None:  # a CPU case measured in a slow spell: again once it passes
        m = retry.again(case.name, m, run_case)
    # the host's speed sampled among the case's steps; without a sample (too few or too
    # short steps), probed for a second after them
    sampled = speed_over(calibration, m.host_step_s, unit_probe)
    if graphed:
        after, phases = None, {}
    elif sampled is None:
        after, phases = host_speeds(calibration, dev, probe=unit_probe)
    else:
        after, phases = None, phase_speeds_over(calibration, m.host_phase_s, unit_probe)
    return _Ran(case, m.plan, m.step_s, sampled, after, unit_probe, m.trace, phases,
                m.clock_share, fork_speed(calibration, m.fork_s))


def _predict_cases(state: _Sweep, ran: Sequence[_Ran]) -> list[tuple[ValidationCase, ExecutionPlan, Expected]]:
    """Predict each measured case and add its point to the result (a prediction that fails:
    skipped); the cases to profile, with the plan that ran and its prediction."""
    fallback = {p: sweep_host_speed([r.own_speed for r in ran if r.unit_probe == p])
                for p in {r.unit_probe for r in ran}}
    to_profile: list[tuple[ValidationCase, ExecutionPlan, Expected]] = []
    for r in ran:
        speed = r.own_speed if r.own_speed is not None or r.plan.cuda_graph else fallback[r.unit_probe]
        try:
            exp = _add_point(state, r, speed)
            if r.case.profile and not r.plan.cuda_graph:
                to_profile.append((r.case, r.plan, exp))
        except Exception as err:  # noqa: BLE001 - a prediction that fails is recorded, not a crash
            state.result.skipped.append(Skipped(r.case.name, _reason(err)))
    return to_profile


def _add_point(state: _Sweep, r: _Ran, speed: float | None) -> Expected:
    """Predict a measured case with the host at `speed` and add its point to the result; the
    prediction."""
    case, plan, result = r.case, r.plan, state.result
    if plan != case.plan:
        result.notes.append(f"{case.name}: ran as {plan.label!r} (asked: {case.plan.label!r}); "
                            "predicted for what ran")
    exp = expected_case(case, plan, state.calibration, speed, r.phase_speeds, r.fork_speed)
    expected_s = float(exp.step_time_s)
    if not (math.isfinite(expected_s) and expected_s > 0):
        raise ValueError(f"calibrated prediction {expected_s!r} s is not a positive time")

    def predict_at(host: float | None, phases: dict[str, float] | None) -> float:
        return float(expected_case(case, plan, state.calibration, host, phases, r.fork_speed).step_time_s)

    paired = (r.trace.paired_ratio(state.calibration, r.unit_probe, predict_at)
              if r.trace is not None and r.sampled is not None else None)
    hw = _hardware(state.dev_name, state.dev.type, case.workload.dtype, state.hardware, result.notes)
    w = case.workload
    result.points.append(ValidationPoint(
        case.name, w.kind, case.config.name, w.batch, w.seq, w.dtype, plan, r.step_s,
        expected_s, roofline_case(case, plan, hw), speed, r.sampled, r.after, r.trace,
        r.phase_speeds, r.clock_share, r.fork_speed,
        expected_host_s=exp.host_s, expected_device_s=exp.device_s, paired_ratio=paired))
    return exp


def _profile_cases(state: _Sweep, to_profile: Sequence[tuple[ValidationCase, ExecutionPlan, Expected]]
                   ) -> None:
    """Profile each case and score its prediction per operation (a profile that fails: a note)."""
    result, progress = state.result, state.progress
    with tempfile.TemporaryDirectory(prefix="gptperf-validate-") as tmp:
        for j, (case, plan, exp) in enumerate(to_profile):
            if progress:
                progress("profiling", j, len(to_profile))
            try:
                measured_ops = profile_case(case, plan, state.dev, Path(tmp) / f"case-{j}")
                result.per_op.append(OpErrors(case.name, op_pairs(measured_ops, exp.by_key())))
            except Exception as err:  # noqa: BLE001
                result.notes.append(f"no per-operation profile of {case.name}: {_reason(err)}")
            finally:
                release_memory(state.dev.type, compiled=plan.compiled)
        if progress and to_profile:
            progress("profiling", len(to_profile), len(to_profile))


def throttled_note(points: Sequence[ValidationPoint]) -> str | None:
    """A note naming the cases whose GPU ran below its maximum SM clock on average
    (`measure.metrics.THROTTLED_SHARE`) while their steps were timed, None when none did."""
    held = [p for p in points if p.clock_share is not None and p.clock_share < THROTTLED_SHARE]
    if not held:
        return None
    cases = ", ".join(f"{p.case} ({p.clock_share:.1%}, m/p {p.ratio:.2f})" for p in held)
    return (f"the card ran below its maximum SM clock (mean over maximum) in {len(held)} "
            f"case(s): {cases}; {THROTTLED_WHY}")


def spells_note(points: Sequence[ValidationPoint]) -> str | None:
    """A note naming the cases whose steps ran in a spell of the machine's fork and join
    (`ValidationPoint.in_spell`), None when none did."""
    off = [p for p in points if p.in_spell]
    if not off:
        return None
    cases = ", ".join(f"{p.case} (×{p.fork_speed:.2f}, m/p {p.ratio:.2f})" for p in off)
    return (f"{len(off)} case(s) ran while parallel CPU ops took another time than at calibration "
            f"(a slow or fast spell of this machine's fork and join; their parallel kernels are "
            f"charged at that speed, their matmuls and host costs are not): {cases}")


# the notes made over a sweep's cases, each naming those it is about
CASE_NOTES: tuple[Callable[[Sequence[ValidationPoint]], str | None], ...] = (throttled_note, spells_note)


def notes_over(results: Sequence[ValidationResult]) -> list[str]:
    """The notes said over the cases of one validation, or of several that ran a case each: the
    speed probes' (`speed_notes`), then those naming cases (`CASE_NOTES`) over all their points."""
    points = [p for r in results for p in r.points]
    return speed_notes(results) + [n for n in (make(points) for make in CASE_NOTES) if n]


def sweep_host_speed(probes: Sequence[float | None]) -> float | None:
    """The host's speed a case with neither a sample nor a probe of its own is charged at: the
    median of the others' of the same host probe (None without any).

    A case is charged at the host sampled among its own steps (`probe.HostSampler`), else at a
    probe for a second right after it; this median is the last resort, the least close of the
    three (BENCHMARKS.md, "The host sampled among the measured steps")."""
    taken = [p for p in probes if p is not None]
    return statistics.median(taken) if taken else None


def compare_speed(calibration: Calibration, device: torch.device, result: ValidationResult) -> SpeedProbe:
    """Probe the machine now; record how it compares with the machine at calibration
    (`probe.against_calibration`: per part, the nearer of its two probes) in
    `result.speed_vs_calibration` (`speed_notes` says it). Returns the probe."""
    now = take_probe(device)
    result.speed_vs_calibration = against_calibration(now, calibration) or {}
    return now


def speed_notes(results: Sequence[ValidationResult]) -> list[str]:
    """Notes on the speed probes of one validation, or of several that ran a case each (the
    report's): the machine as each began against its calibration, and at each one's end against
    its start, where a part moved beyond the tolerance; over several, each part's range of
    factors and how many cases read it, in one note of each kind."""
    if len(results) == 1:
        r = results[0]
        at_start = speed_note(r.speed_vs_calibration, "calibration")
        during = speed_note(r.speed_drift, "validation's start")
    else:
        at_start = speed_range_note([r.speed_vs_calibration for r in results], "calibration")
        during = speed_range_note([r.speed_drift for r in results], "each case's start")
    return [n for n in (at_start and f"{at_start}; {RECALIBRATE}", during) if n]
