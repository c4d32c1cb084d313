"""What the deeper host point changed: stored validate runs and benches predicted again on their
calibration with the host lines' slope past their knee (`perfmodel.calibration.host_line_s`) and
without it (the straight 1-4 line of calibrations before session 65), at the host speeds each case
was charged at. Runs anywhere (no device needed).

    python benchmarks/validate_host_knee.py CALIBRATION.json [VALIDATE.json ...] [--benches BENCHES.json]
                                            [--only MODE]

BENCHES.json holds `gptperf bench --json` documents measured on that calibration: a JSON list, or
`gpu_validate.py`'s bench_checks.json (by label).
--only eager (or compiled) straightens only that mode's lines (each mode's knee judged alone).
Prints per file the cases whose prediction moved (measured/predicted both ways), then median, p90
and max |m/p - 1| both ways.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from gptperf.model.config import GPTConfig
from gptperf.perfmodel import Workload
from gptperf.perfmodel.calibration import HOST_KNEE, Calibration
from gptperf.perfmodel.expected import expected
from gptperf.plan import COMPILED, EAGER, ExecutionPlan
from gptperf.validate.results import ValidationResult
from gptperf.validate.stats import error_stats

MOVED = 1e-4  # a prediction that moved by more than this share is listed


def straight(cal: Calibration, mode: str | None = None) -> Calibration:
    """`cal` with every host line of `mode` (default: every mode) straight (its knee left out)."""
    return replace(cal, host={k: {kk: v for kk, v in line.items()
                                  if kk not in HOST_KNEE or (mode and not k.startswith(f"{mode}:"))}
                              for k, line in cal.host.items()})


def validate_cases(path: Path, cal: Calibration, flat: Calibration) -> list[tuple[str, float, float]]:
    """(case, measured/predicted on `cal`, on `flat`) of a stored validate run, each scored as
    validate scores it (`ValidationPoint.ratio_on`)."""
    result = ValidationResult.from_dict(json.loads(path.read_text()))
    rows = []
    for p in result.points:
        with_knee, without = p.ratio_on(cal), p.ratio_on(flat)
        if with_knee is not None and without is not None:
            rows.append((p.case, with_knee, without))
    return rows


def bench_cases(path: Path, cal: Calibration, flat: Calibration) -> list[tuple[str, float, float]]:
    """The same of a list of `gptperf bench --json` documents (the median step over the
    prediction at the host speeds the bench charged: a document keeps no host samples)."""
    both_ways = (cal, flat)
    rows = []
    docs = json.loads(path.read_text())
    for doc in docs.values() if isinstance(docs, dict) else docs:
        config = GPTConfig.from_dict(doc["config"])
        w = doc["workload"]
        workload = Workload(w["kind"], w["batch"], w["seq"], w["dtype"])
        plan = ExecutionPlan.from_dict(doc["plan"])
        (pred,) = [p for p in doc["predictions"] if p["source"] == "calibrated"]
        speeds = {"host_speed": pred.get("host_speed"), "phase_speeds": pred.get("phase_speeds") or None}
        both = [doc["step_time_s"] / expected(config, workload, plan, c, **speeds).step_time_s
                for c in both_ways]
        rows.append((f"bench {w['kind']} {config.name} B={w['batch']} T={w['seq']}", *both))
    return rows


def report(name: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{name}: {len(rows)} cases")
    for case, with_knee, without in rows:
        if abs(without / with_knee - 1) > MOVED:
            print(f"  {case:70s} m/p {with_knee:.3f} (straight line: {without:.3f})")
    for label, i in (("with the knee", 1), ("straight line", 2)):
        s = error_stats(r[i] for r in rows)
        print(f"  {label:14s}: median {s.median:.1%}, p90 {s.p90:.1%}, max {s.max:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration", type=Path)
    parser.add_argument("runs", type=Path, nargs="*")
    parser.add_argument("--benches", type=Path)
    parser.add_argument("--only", choices=(EAGER, COMPILED), help="straighten only this mode's lines")
    args = parser.parse_args()
    cal = Calibration.from_dict(json.loads(args.calibration.read_text()))
    flat = straight(cal, args.only)
    for run in args.runs:
        report(str(run), validate_cases(run, cal, flat))
    if args.benches:
        report(str(args.benches), bench_cases(args.benches, cal, flat))


if __name__ == "__main__":
    main()
