"""What the sustained-load slowdown does to stored validate runs: every case re-predicted with
and without `Calibration.sustained`, at the host speeds the run charged it. Runs anywhere (no
device needed).

    python benchmarks/validate_sustained.py CALIBRATION.json RUN.json [RUN.json ...]
    python benchmarks/validate_sustained.py --from OTHER.json CALIBRATION.json RUN.json ...

RUN.json: `gptperf validate --out` documents (the fixed sweep or `--random`) scored against
CALIBRATION.json. `--from OTHER.json` takes the sustained table of another calibration (for runs
from before it was measured). Prints, per run, the median, p90 and max |measured/predicted − 1|
without and with it, and every case whose ratio moved by 0.5% or more.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from gptperf.perfmodel.calibration import Calibration
from gptperf.validate.results import ValidationPoint
from gptperf.validate.stats import error_stats

MOVED = 0.005


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="take the sustained table from here")
    parser.add_argument("calibration", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    cal = Calibration.from_dict(json.loads(args.calibration.read_text()))
    if args.source is not None:
        cal = dataclasses.replace(cal, sustained=Calibration.from_dict(
            json.loads(args.source.read_text())).sustained)
    if not cal.sustained:
        print(f"{args.calibration} has no sustained table; give --from", file=sys.stderr)
        return 2
    without = dataclasses.replace(cal, sustained={})
    for run in args.runs:
        doc = json.loads(run.read_text())
        off, on = [], []
        moved = []
        for p in map(ValidationPoint.from_dict, doc["points"]):
            r_off, r_on = p.ratio_on(without), p.ratio_on(cal)  # scored as validate scores
            if r_off is None or r_on is None:
                print(f"{run}: cannot rebuild {p.config!r}; skipped", file=sys.stderr)
                continue
            off.append(r_off)
            on.append(r_on)
            if abs(r_on - r_off) >= MOVED:
                moved.append(f"    {p.case:<54} {r_off:.3f} -> {r_on:.3f}")
        a, b = error_stats(off), error_stats(on)
        print(f"{run} ({doc['sweep']}{', seed ' + str(doc['seed']) if doc.get('seed') is not None else ''}, "
              f"{a.n} cases): median {a.median:.1%} -> {b.median:.1%}, p90 {a.p90:.1%} -> {b.p90:.1%}, "
              f"max {a.max:.1%} -> {b.max:.1%}")
        print("\n".join(moved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
