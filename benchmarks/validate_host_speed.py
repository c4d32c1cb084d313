"""How a validate run's host speed was read, and what each case's steps needed: re-predicts every
case of a stored run (its validate.json with the cases' traces, and the calibration.json it was
scored against) under several readings of the host's speed. Runs anywhere (no device needed).

    python benchmarks/validate_host_speed.py RUN_DIR [RUN_DIR ...]

A RUN_DIR holds calibration.json and validate.json, random.json or both (`gpu_validate.py`'s fixed
sweep and its `--random` one; each case is rebuilt from its point), each read in turn.

Readings of a case's host speed (the host model's step over the calibration's unit):
  sampled   the median of the samples taken among the case's steps (whole steps only)
  phases    sampled, each phase of a train case at its own phase's samples (what validate
            charges since the train probe's phases are kept; as sampled for a run before that)
  near      the median of the samples whose neighbouring steps (the one before and the one after)
            are both within 10% of the case's median step: the host as it ran the steps the
            median is made of (falls back to `sampled` when no sample qualifies)
  sweep     the median over the run's cases of the same probe (one speed for the whole sweep)
  none      the calibration's own speed (1.0)
  per-step  each timed step predicted at the speed of the sample nearest it, the case's ratio the
            median of the steps' measured/predicted (a case without samples: as sampled)
  paired    per-step, a train case's phases too: each at the sample's own phases where the trace
            kept them (`HostTrace.phase_samples_s`, what validate scores since session 67), else
            at the case's phase speeds scaled by the sample over the samples' median
and `needed`, the speed at which the prediction equals the measurement (bisection; '-' when no
speed in 0.05-5 does: the case's host costs do not set its time). Prints each case's readings and
ratios, then the median, p90 and max |measured/predicted - 1| under each reading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from gptperf.measure.probe import phase_units, probe_for, speed_over
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import expected
from gptperf.validate.results import HostTrace, ValidationPoint
from gptperf.validate.stats import nearest_rank

NEAR = 0.10  # neighbouring steps within this of the median step
READINGS = ("sampled", "phases", "near", "sweep", "none", "per-step", "paired")


def near_median(trace: HostTrace) -> list[float]:
    """The samples whose neighbouring steps both lie within NEAR of the median step."""
    steps = trace.steps_s
    median = statistics.median(steps)
    kept = []
    for sample, after in zip(trace.samples_s, trace.after_step, strict=True):
        around = steps[after - 1:after + 1]  # the step before the sample, and the one after it
        if all(abs(t / median - 1) <= NEAR for t in around):
            kept.append(sample)
    return kept


def per_step_ratio(trace: HostTrace, probe: str, cal: Calibration, predict: Any) -> float:
    """The median over the timed steps of measured / predicted, each step predicted at the speed
    of the sample taken nearest it (a sample after step a lies between steps a and a + 1)."""
    at = [a - 0.5 for a in trace.after_step]  # 0-based step positions
    predicted: dict[int, float] = {}
    ratios = []
    for i, seconds in enumerate(trace.steps_s):
        j = min(range(len(at)), key=lambda s: abs(at[s] - i))
        if j not in predicted:
            predicted[j] = predict(speed_over(cal, trace.samples_s[j], probe))
        ratios.append(seconds / predicted[j])
    return statistics.median(ratios)


def paired(trace: HostTrace, probe: str, cal: Calibration, predict: Any,
           phase_speeds: dict[str, float] | None) -> float | None:
    """The `paired` reading: `HostTrace.paired_ratio`, with each sample's phases estimated from
    the case's for a trace from before they were kept."""
    if phase_speeds and not trace.phase_samples_s:
        mid = statistics.median(trace.samples_s)
        units = phase_units(cal, probe)
        trace = dataclasses.replace(trace, phase_samples_s={
            name: tuple(speed * units[name] * s / mid for s in trace.samples_s)
            for name, speed in phase_speeds.items() if name in units})
    return trace.paired_ratio(cal, probe, lambda speed, phases: predict(speed, phases=phases))


def needed_speed(case: Any, cal: Calibration, measured_s: float) -> float | None:
    def step(speed: float) -> float:
        return expected(case.config, case.workload, case.plan, cal, host_speed=speed).step_time_s

    lo, hi = 0.05, 5.0
    if not step(lo) <= measured_s <= step(hi):
        return None
    for _ in range(50):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if step(mid) < measured_s else (lo, mid)
    return math.sqrt(lo * hi)


def readings(point: dict[str, Any], trace: HostTrace | None, cal: Calibration,
             sweep: dict[str, float]) -> dict[str, float | None]:
    probe = probe_for(cal, point["kind"])
    sampled = point.get("host_speed")
    near = sampled
    if trace is not None and trace.samples_s:
        kept = near_median(trace)
        if kept:
            near = speed_over(cal, statistics.median(kept), probe)
    return {"sampled": sampled, "phases": sampled, "near": near,
            "sweep": sweep.get(probe) if sampled else None, "none": None}


def report(run: Path, file: str = "validate.json") -> None:
    doc = json.loads((run / file).read_text())
    cal = Calibration.from_dict(json.loads((run / "calibration.json").read_text()))
    by_name = {p["case"]: ValidationPoint.from_dict(p).as_case() for p in doc["points"]}
    points = [p for p in doc["points"] if by_name[p["case"]] is not None]
    speeds: dict[str, list[float]] = {}
    for p in points:
        if p.get("host_speed") is not None:
            speeds.setdefault(probe_for(cal, p["kind"]), []).append(p["host_speed"])
    sweep = {k: statistics.median(v) for k, v in speeds.items()}
    errors: dict[str, list[float]] = {r: [] for r in READINGS}
    print(f"{run / file}: {len(points)} cases")
    print(f"{'case':46s} {'needed':>6s}  " + "  ".join(f"{r:>14s}" for r in READINGS))
    for p in points:
        case, measured = by_name[p["case"]], p["measured_s"]
        row = []

        def predict(speed: float | None, case: Any = case, phases: Any = None) -> float:
            return expected(case.config, case.workload, case.plan, cal, host_speed=speed,
                            phase_speeds=phases).step_time_s

        trace = HostTrace.from_dict(p["trace"]) if p.get("trace") else None
        for name, speed in readings(p, trace, cal, sweep).items():
            ratio = measured / predict(speed, phases=p.get("host_phase_speeds")
                                       if name == "phases" else None)
            errors[name].append(abs(ratio - 1))
            row.append(f"{'-' if speed is None else f'{speed:.2f}':>5s} {ratio:6.3f}x")
        if trace is not None and trace.samples_s and p.get("host_speed") is not None:
            ratio = per_step_ratio(trace, probe_for(cal, p["kind"]), cal, predict)
        else:
            ratio = measured / predict(p.get("host_speed"))
        errors["per-step"].append(abs(ratio - 1))
        row.append(f"{'':>5s} {ratio:6.3f}x")
        both = (paired(trace, probe_for(cal, p["kind"]), cal, predict, p.get("host_phase_speeds"))
                if trace is not None and trace.samples_s and p.get("host_speed") is not None
                else None)
        ratio = both if both is not None else measured / predict(
            p.get("host_speed"), phases=p.get("host_phase_speeds"))
        errors["paired"].append(abs(ratio - 1))
        row.append(f"{'':>5s} {ratio:6.3f}x")
        need = needed_speed(case, cal, measured)
        print(f"{p['case'][:46]:46s} {'-' if need is None else f'{need:.2f}':>6s}  " + "  ".join(f"{c:>14s}" for c in row))
    for name, errs in errors.items():
        print(f"  {name:8s} median {statistics.median(errs):6.1%}  p90 {nearest_rank(errs, 0.9):6.1%}  max {max(errs):6.1%}")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for run in map(Path, sys.argv[1:]):
        sweeps = [name for name in ("validate.json", "random.json") if (run / name).exists()]
        if not sweeps:
            sys.exit(f"{run}: no validate.json or random.json")
        for name in sweeps:
            report(run, name)


if __name__ == "__main__":
    main()
