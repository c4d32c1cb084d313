"""Stored validate runs' statistics apart by what holds each step up, as `gptperf validate` now
splits them (`ValidationResult.bound_stats`): each case re-predicted on its run's calibration at the
host speeds it was charged at, its predicted host and device seconds kept on its point. Runs
anywhere (no device needed).

    python benchmarks/validate_by_bound.py RUN_DIR [RUN_DIR ...]

A RUN_DIR holds validate.json and the calibration.json it was scored against. Prints one row per
run: the cases the host holds up (predicted host time >= HOST_BOUND_SHARE of device time) and
the others, each with its count, median and max |measured/predicted - 1| (as stored); a case
whose prediction made again differs from the stored one by more than 0.1% is named (the tree
predicts otherwise), and so is one whose config cannot be rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from gptperf.perfmodel.calibration import Calibration
from gptperf.validate.results import HOST_BOUND_SHARE, ValidationResult

TOLERANCE = 1e-3  # re-made prediction against the stored one


def split_run(run: Path) -> tuple[ValidationResult, list[str]]:
    """The run's result with each point's predicted host and device seconds made again on its
    calibration, and notes: the cases whose prediction the tree no longer makes as stored, and
    those it cannot rebuild (in neither group)."""
    cal = Calibration.from_dict(json.loads((run / "calibration.json").read_text()))
    result = ValidationResult.from_dict(json.loads((run / "validate.json").read_text()))
    moved, lost, points = [], [], []
    for p in result.points:
        exp = p.expected_on(cal)
        if exp is None:
            lost.append(p.case)
            points.append(dataclasses.replace(p, expected_host_s=None, expected_device_s=None))
            continue
        if abs(exp.step_time_s / p.expected_s - 1) > TOLERANCE:
            moved.append(f"{p.case} ({exp.step_time_s / p.expected_s:.3f})")
        points.append(dataclasses.replace(p, expected_host_s=exp.host_s, expected_device_s=exp.device_s))
    result.points = points
    notes = ([f"predicted otherwise by this tree (new/stored): {', '.join(moved)}"] if moved else []) + (
        [f"cannot rebuild, in neither group: {', '.join(lost)}"] if lost else [])
    return result, notes


def main(runs: list[str]) -> None:
    print(f"host-bound: predicted host time >= {HOST_BOUND_SHARE:g}x device time; |m/p - 1| as stored")
    print(f"{'run':40s} {'host: n, median, max':>26s} {'device: n, median, max':>26s}")
    for name in runs:
        result, notes = split_run(Path(name))
        split = result.bound_stats()
        if split is None:
            print(f"{Path(name).name[-40:]:40s} no split: a CPU run (host and kernels in series)")
            continue
        cells = [f"{s.n:3d} {100 * s.median:6.1f}% {100 * s.max:6.1f}%" if s.n else f"{0:3d}"
                 for s in split.values()]
        print(f"{Path(name).name[-40:]:40s} {cells[0]:>26s} {cells[1]:>26s}")
        for note in notes:
            print(f"  {note}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
