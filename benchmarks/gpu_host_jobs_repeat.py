"""Are the calibration's host jobs repeatable? `calibrate_host.measure_host` run several times in
one process, each job's costs (already scaled to its probe's unit) divided by that unit: the host
costs a command charges, in units of the step it samples. A machine whose host moves the jobs and
the unit alike gives the same numbers each time. Each part's seconds are read round by round
against the sample after each (`calibrate_host.paired_medians`). The other reading BENCHMARKS.md
compares it with (each part's median against the samples' median, `calibrate_host.PAIRED = False`)
is not in the library any more: run this script at commit 0f5f5a2 for both, alternating.

    python benchmarks/gpu_host_jobs_repeat.py [--repeats 3] [--device cuda|cpu] [--compiled]

Prints, per "<mode>:<part>:<dtype>" (eager only unless --compiled), the per-block and fixed cost
over the unit in each repeat and their spread (max / min), and each repeat's units; then, where
both dtypes ran, each part's per-block cost in bf16 over fp32; last, the median spread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gptperf import names
from gptperf.measure.calibrate_host import HostCosts, measure_host
from gptperf.measure.probe import host_step_s
from gptperf.perfmodel.calibration import split_host_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compiled", action="store_true", help="the compiled jobs as well")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtypes = ("bf16", "fp32") if device.type == "cuda" else ("fp32",)
    runs: list[HostCosts] = []
    for i in range(args.repeats):
        before = host_step_s(device, 0.2)
        t0 = time.perf_counter()
        costs = measure_host(device, dtypes, compiled=args.compiled)
        took = time.perf_counter() - t0
        runs.append(costs)
        units = ", ".join(f"{p} {u * 1e6:.0f} µs" for p, u in costs.units.items())
        jobs = ", ".join(f"{k} {u * 1e6:.0f}" for k, u in costs.job_units.items())
        print(f"repeat {i} paired: {took:.1f} s; decode step probed before {before * 1e6:.0f} µs; "
              f"units {units}; each job's unit (µs) {jobs}")
    per_block, fixed = table(runs, "paired (part / the sample after it)")
    print(f"\nmedian spread (max / min over the repeats) of per block, fixed: paired {per_block:.3f}, "
          f"{fixed:.3f}")


def spread(xs: list[float]) -> float:
    return max(xs) / min(xs) if min(xs) > 0 else float("nan")


def table(runs: list[HostCosts], title: str) -> tuple[float, float]:
    """Print each cost over its unit, repeat by repeat; (median spread per block, fixed)."""
    print(f"\n{title}\n{'mode:part:dtype':24s} {'per block / unit, each repeat':>40s} {'spread':>7s}"
          f"   {'fixed / unit, each repeat':>36s} {'spread':>7s}")
    spreads: tuple[list[float], list[float]] = ([], [])
    for key in runs[0].costs:
        probe = "train" if split_host_key(key)[1] in names.PHASES else "decode"  # a train job's parts
        per = [r.costs[key]["per_layer_s"] / r.units[probe] for r in runs if key in r.costs]
        fixed = [r.costs[key]["fixed_s"] / r.units[probe] for r in runs if key in r.costs]
        spreads[0].append(spread(per))
        spreads[1].append(spread(fixed))
        print(f"{key:24s} {' '.join(f'{x:7.3f}' for x in per):>40s} {spread(per):7.2f}"
              f"   {' '.join(f'{x:7.3f}' for x in fixed):>36s} {spread(fixed):7.2f}")
    # the same ops under autocast and not: one calibration on a slow H200 host read the bf16
    # inference job's per-block costs 0.91-1.42x the fp32 job's where another read 1.10-1.76x
    pairs = [k for k in runs[0].costs if k.endswith(":bf16") and k[:-4] + "fp32" in runs[0].costs]
    for key in pairs:
        ratios = [r.costs[key]["per_layer_s"] / r.costs[key[:-4] + "fp32"]["per_layer_s"]
                  for r in runs if r.costs.get(key[:-4] + "fp32", {}).get("per_layer_s")]
        if ratios:
            print(f"{key[:-5] + ' bf16/fp32':24s} {' '.join(f'{x:7.3f}' for x in ratios):>40s} "
                  f"{spread(ratios):7.2f}   (per block, bf16 over fp32)")
    return statistics.median(spreads[0]), statistics.median(spreads[1])


if __name__ == "__main__":
    main()
