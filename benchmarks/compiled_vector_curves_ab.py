"""What charging a compiled inference step's LayerNorms and static-cache writes on inductor's own
curves (`layernorm_fwd_compiled`, `cache_write_compiled`) does to stored runs, against aten's
curves (`layernorm_fwd`, `copy`): every graphed case re-predicted both ways on one calibration.
Runs anywhere (no device needed), with tree b80380a's `gptperf` importable (say a worktree of it
on PYTHONPATH): there the calibration measures those curves and the model charges them; later
trees reverted both (BENCHMARKS.md, "Session 74"), so on them the two columns agree.

    python benchmarks/compiled_vector_curves_ab.py CALIBRATION.json RUN.json [RUN.json ...]

CALIBRATION.json: a `gptperf calibrate` document with the compiled curves. RUN.json: a stored
run (`stored_runs`: a validate, inference or bench document). Prints each case whose ratio moves by 0.2% or more, then
median, p90 and max |measured/predicted − 1| of each run both ways.
"""

from __future__ import annotations

import json
from dataclasses import replace

from stored_runs import arguments, cases  # benchmarks/, beside this script

from gptperf.validate.stats import error_stats

COMPILED = ("layernorm_fwd_compiled:", "cache_write_compiled:")
MOVED = 0.002


def main() -> int:
    parser, args, cal = arguments(__doc__.splitlines()[0])
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
