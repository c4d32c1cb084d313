"""What reading a curve below its first point on the line through its first two points (as built,
`perfmodel.curves.Curve`) does to stored runs, against holding the first point's time (before):
every case re-predicted both ways on the run's calibration, at the host speeds the run charged
it. Runs anywhere (no device needed).

    python benchmarks/curve_below_first_point.py CALIBRATION.json RUN.json [RUN.json ...]

RUN.json: a stored run (`stored_runs`: a validate, inference or bench document; an inference
run's graphed points alone, whose host is not in their loop, re-predicted as they ran). Prints, per run, the median, p90 and max |measured/predicted − 1| held
and on the line, and every case whose ratio moved by 0.5% or more.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

from stored_runs import arguments  # benchmarks/, beside this script
from stored_runs import cases as stored_cases

from gptperf.perfmodel import curves
from gptperf.validate.stats import error_stats

MOVED = 0.005


@contextmanager
def held() -> Any:
    """Curves read below their first point at its time (the rule before the line)."""
    line = curves.Curve._below
    curves.Curve._below = lambda self, x: self.seconds[0]
    try:
        yield
    finally:
        curves.Curve._below = line


def main() -> int:
    _, args, cal = arguments(__doc__.splitlines()[0])
    for run in args.runs:
        cases = stored_cases(json.loads(run.read_text()))
        with held():
            before = [ratio(cal) for _, ratio in cases]
        after = [ratio(cal) for _, ratio in cases]
        kept = [(n, b, a) for (n, _), b, a in zip(cases, before, after, strict=True)
                if b is not None and a is not None]
        x, y = error_stats([b for _, b, _ in kept]), error_stats([a for _, _, a in kept])
        print(f"{run} ({len(kept)} cases): median {x.median:.1%} -> {y.median:.1%}, "
              f"p90 {x.p90:.1%} -> {y.p90:.1%}, max {x.max:.1%} -> {y.max:.1%}")
        for name, b, a in kept:
            if abs(a - b) >= MOVED:
                print(f"    {name:<72} {b:.3f} -> {a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
