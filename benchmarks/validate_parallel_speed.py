"""What charging a CPU step's parallel kernels at the parallel adds' speed does to stored validate
runs: every case scored as validate scores it, with its parallel kernels as calibrated and as
charged at the speed its steps sampled (`ValidationPoint.fork_speed`). Runs anywhere (no device
needed).

    python benchmarks/validate_parallel_speed.py CALIBRATION.json RUN.json [RUN.json ...]

RUN.json: a `gptperf validate --json` or `--out` document, or a report's report.json (its quick
validation), scored against CALIBRATION.json (the calibration the run was predicted on). Prints,
per run, the median and max |measured/predicted − 1| both ways, then each case's adds over the
calibration's and its ratio both ways.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from stored_runs import arguments  # benchmarks/, beside this script

from gptperf.validate.results import ValidationPoint
from gptperf.validate.stats import error_stats


def points(doc: dict[str, Any]) -> list[ValidationPoint]:
    """The validation points of a validate document (`--json` wraps them in "result") or of a
    report's quick validation."""
    if "stages" in doc:
        doc = doc["stages"]["validation"]["data"]["result"]
    return [ValidationPoint.from_dict(p) for p in doc.get("result", doc)["points"]]


def main() -> int:
    _, args, cal = arguments(__doc__.splitlines()[0])
    for run in args.runs:
        rows = []
        for p in points(json.loads(run.read_text())):
            plain, charged = dataclasses.replace(p, fork_speed=None).ratio_on(cal), p.ratio_on(cal)
            if plain is not None and charged is not None:
                rows.append((p, plain, charged))
        a, b = error_stats([r[1] for r in rows]), error_stats([r[2] for r in rows])
        print(f"{run} ({a.n} cases): as calibrated median {a.median:.1%}, max {a.max:.1%}; "
              f"charged median {b.median:.1%}, max {b.max:.1%}")
        for p, plain, charged in rows:
            adds = "—" if p.fork_speed is None else f"×{p.fork_speed:.2f}"
            print(f"    {p.case:<48} adds {adds:>6}  {plain:.3f} -> {charged:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
