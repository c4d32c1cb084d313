"""What reading a curve below its first point on the line through its first two points (as built,
`perfmodel.curves.Curve`) does to stored runs, against holding the first point's time (before):
every case re-predicted both ways on the run's calibration, at the host speeds the run charged
it. Runs anywhere (no device needed).

    python benchmarks/curve_below_first_point.py CALIBRATION.json RUN.json [RUN.json ...]

RUN.json: a `gptperf validate --out` document (the fixed sweep or `--random`), or a
`gptperf inference --json` document, whose graphed points (no host in their loop) are
re-predicted as they ran. Prints, per run, the median, p90 and max |measured/predicted − 1| held
and on the line, and every case whose ratio moved by 0.5% or more.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gptperf.model.config import GPTConfig
from gptperf.perfmodel import curves
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import expected
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.validate.results import ValidationPoint
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


def validate_ratios(doc: dict, cal: Calibration) -> list[tuple[str, Callable[[], float | None]]]:
    points = map(ValidationPoint.from_dict, doc["points"])
    return [(p.case, lambda p=p: p.ratio_on(cal)) for p in points]  # scored as validate scores


def inference_ratios(doc: dict, cal: Calibration) -> list[tuple[str, Callable[[], float | None]]]:
    config = GPTConfig.from_dict(doc["config"])
    out = []
    for p in doc["cache_vs_recompute"]["cache"] + doc["batch_sweep"]["points"]:
        plan = ExecutionPlan.from_dict(p["plan"])
        if not plan.cuda_graph:
            continue  # its host was charged at a sample this document does not keep
        work = Workload(p["kind"], p["batch"], p["seq"], doc["dtype"])
        name = f"{p['kind']} {config.name} B={p['batch']} L={p['seq']} {plan.label}"
        out.append((name, lambda w=work, pl=plan, t=p["time_s"]:
                    t / expected(config, w, pl, cal).step_time_s))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    cal = Calibration.from_dict(json.loads(args.calibration.read_text()))
    for run in args.runs:
        doc = json.loads(run.read_text())
        cases = (inference_ratios if doc.get("schema", "").startswith("gptperf.inference")
                 else validate_ratios)(doc, cal)
        with held():
            before = [ratio() for _, ratio in cases]
        after = [ratio() for _, ratio in cases]
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
