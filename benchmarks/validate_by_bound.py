"""Stored validate runs' statistics apart by what holds each step up, as `gptperf validate` now
splits them (`ValidationResult.bound_stats`): each case re-predicted on its run's calibration at the
host speeds it was charged at, its predicted host and device seconds kept on its point. Runs
anywhere (no device needed).

    python benchmarks/validate_by_bound.py RUN_DIR [RUN_DIR ...]

A RUN_DIR holds validate.json and the calibration.json it was scored against. Prints one row per
run: the cases the host holds up (predicted host time >= HOST_BOUND_SHARE of device time) and
the others, each with its count, median and max |measured/predicted - 1|; a case whose re-made
prediction differs from the stored one by more than 0.1% is named (the tree predicts otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import expected
from gptperf.validate.results import HOST_BOUND_SHARE, ValidationResult

TOLERANCE = 1e-3  # re-made prediction against the stored one


def split_run(run: Path) -> tuple[ValidationResult, list[str]]:
    """The run's result with each point's predicted host and device seconds filled in, and the
    cases whose prediction the tree no longer makes as stored."""
    cal = Calibration.from_dict(json.loads((run / "calibration.json").read_text()))
    result = ValidationResult.from_dict(json.loads((run / "validate.json").read_text()))
    moved, points = [], []
    for p in result.points:
        case = p.as_case()
        if case is None:
            points.append(p)
            continue
        exp = expected(case.config, case.workload, p.plan, cal, host_speed=p.host_speed,
                       phase_speeds=p.host_phase_speeds)
        if abs(exp.step_time_s / p.expected_s - 1) > TOLERANCE:
            moved.append(f"{p.case} ({exp.step_time_s / p.expected_s:.3f})")
        points.append(dataclasses.replace(p, expected_host_s=exp.host_s, expected_device_s=exp.device_s))
    result.points = points
    return result, moved


def main(runs: list[str]) -> None:
    print(f"host-bound: predicted host time >= {HOST_BOUND_SHARE:g}x device time; |m/p - 1| as stored")
    print(f"{'run':40s} {'host: n, median, max':>26s} {'device: n, median, max':>26s}")
    for name in runs:
        result, moved = split_run(Path(name))
        cells = [f"{s.n:3d} {100 * s.median:6.1f}% {100 * s.max:6.1f}%" if s.n else f"{0:3d}"
                 for s in result.bound_stats().values()]
        print(f"{Path(name).name[-40:]:40s} {cells[0]:>26s} {cells[1]:>26s}")
        if moved:
            print(f"  predicted otherwise by this tree: {', '.join(moved)}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
