"""Stored runs re-predicted on a calibration, for the A/B scripts beside this one: their
arguments (a calibration document, then run documents) and each run's cases as (name, ratio of
measured to calibrated on a given calibration).

RUN.json: a `gptperf validate --out` document (the fixed sweep or `--random`), a
`gptperf inference --json` document, whose graphed points (no host in their loop) are
re-predicted as they ran, or a `gptperf bench --json` document.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from gptperf.model.config import GPTConfig
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import expected
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.validate.results import ValidationPoint

Ratio = Callable[[Calibration], "float | None"]  # measured / calibrated on a calibration


def arguments(description: str) -> tuple[argparse.ArgumentParser, argparse.Namespace, Calibration]:
    """The parser (for the script's own refusals), the arguments (`calibration`, `runs`: paths)
    and the calibration read from the command line: CALIBRATION.json RUN.json [RUN.json ...]."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    return parser, args, Calibration.from_dict(json.loads(args.calibration.read_text()))


def cases(doc: dict) -> list[tuple[str, Ratio]]:
    """(name, ratio) of each case of a stored run (the module docstring says which)."""
    schema = doc.get("schema", "")
    if schema.startswith("gptperf.inference"):
        config, out = GPTConfig.from_dict(doc["config"]), []
        for p in doc["cache_vs_recompute"]["cache"] + doc["batch_sweep"]["points"]:
            plan = ExecutionPlan.from_dict(p["plan"])
            if plan.cuda_graph:  # an eager point's host was charged at a sample the run does not keep
                work = Workload(p["kind"], p["batch"], p["seq"], doc["dtype"])
                out.append((f"{p['kind']} {config.name} B={p['batch']} L={p['seq']} {plan.label}",
                            lambda cal, w=work, pl=plan, t=p["time_s"]:
                            t / expected(config, w, pl, cal).step_time_s))
        return out
    if schema.startswith("gptperf.bench"):
        config, wl = GPTConfig.from_dict(doc["config"]), doc["workload"]
        work = Workload(wl["kind"], wl["batch"], wl["seq"], wl["dtype"])
        plan = ExecutionPlan.from_dict(doc["plan"])
        return [(f"{wl['kind']} {config.name} B={wl['batch']} L={wl['seq']} {plan.label}",
                 lambda cal: doc["step_time_s"] / expected(config, work, plan, cal).step_time_s)]
    return [(p.case, p.ratio_on) for p in map(ValidationPoint.from_dict, doc["points"])]
