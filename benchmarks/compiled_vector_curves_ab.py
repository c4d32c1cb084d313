"""What charging a compiled inference step's LayerNorms and static-cache writes on inductor's own
curves (`layernorm_fwd_compiled`, `cache_write_compiled`) does to stored runs, against aten's
curves (`layernorm_fwd`, `copy`): every graphed case re-predicted both ways on one calibration.
Runs anywhere (no device needed), on tree b80380a, where the calibration measures those curves
and the model charges them (reverted after: BENCHMARKS.md, "Session 74").

    python benchmarks/compiled_vector_curves_ab.py CALIBRATION.json RUN.json [RUN.json ...]

CALIBRATION.json: a `gptperf calibrate` document with the compiled curves. RUN.json: a
`gptperf validate --out` document, a `gptperf inference --json` document (its graphed points)
or a `gptperf bench --json` document. Prints each case whose ratio moves by 0.2% or more, then
median, p90 and max |measured/predicted − 1| of each run both ways.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from gptperf.model.config import GPTConfig
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import expected
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.validate.results import ValidationPoint
from gptperf.validate.stats import error_stats

COMPILED = ("layernorm_fwd_compiled:", "cache_write_compiled:")
MOVED = 0.002


def cases(doc: dict) -> list[tuple[str, object]]:
    """(name, ratio on a calibration) of each graphed or validated case of a stored run."""
    schema = doc.get("schema", "")
    if schema.startswith("gptperf.inference"):
        config, out = GPTConfig.from_dict(doc["config"]), []
        for p in doc["batch_sweep"]["points"] + doc["cache_vs_recompute"]["cache"]:
            plan = ExecutionPlan.from_dict(p["plan"])
            if plan.cuda_graph:  # an eager point's host was charged at a sample the run does not keep
                work = Workload(p["kind"], p["batch"], p["seq"], doc["dtype"])
                out.append((f"{config.name} {p['kind']} B={p['batch']} L={p['seq']}",
                            lambda cal, w=work, pl=plan, t=p["time_s"], c=config:
                            t / expected(c, w, pl, cal).step_time_s))
        return out
    if schema.startswith("gptperf.bench"):
        config, wl = GPTConfig.from_dict(doc["config"]), doc["workload"]
        work = Workload(wl["kind"], wl["batch"], wl["seq"], wl["dtype"])
        plan = ExecutionPlan.from_dict(doc["plan"])
        return [(f"{config.name} {wl['kind']} B={wl['batch']} L={wl['seq']} {plan.label}",
                 lambda cal: doc["step_time_s"] / expected(config, work, plan, cal).step_time_s)]
    return [(p.case, p.ratio_on) for p in map(ValidationPoint.from_dict, doc["points"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    cal = Calibration.from_dict(json.loads(args.calibration.read_text()))
    if not any(k.startswith(COMPILED) for k in cal.vector):
        parser.error(f"{args.calibration} has no compiled curves ({', '.join(COMPILED)}): "
                     "give a calibration measured on tree b80380a")
    aten = replace(cal, vector={k: v for k, v in cal.vector.items() if not k.startswith(COMPILED)})
    for run in args.runs:
        pairs = []
        for name, ratio in cases(json.loads(run.read_text())):
            a, b = ratio(aten), ratio(cal)
            if a is None or b is None:
                continue
            pairs.append((a, b))
            if abs(a - b) >= MOVED:
                print(f"  {name:60s} {a:.3f} -> {b:.3f}")
        for label, ratios in (("aten's", [a for a, _ in pairs]), ("inductor's", [b for _, b in pairs])):
            s = error_stats(ratios)
            print(f"{run.name}: {label:10s} curves: median {s.median:.1%}, p90 {s.p90:.1%}, "
                  f"max {s.max:.1%} over {s.n} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
