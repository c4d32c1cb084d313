"""Is a step's host time a straight line in its blocks? The calibration charges it on the line
through the host model at 1 and 4 blocks (`calibrate_host.fit_line`) and extrapolates it to the
model's depth. Stored runs (sessions 34-41): compiled cases of 13-22 blocks bound by the host
came out 1.09-1.33x their prediction in 8 of 9, and session 36 read the compiled host model
itself at 22 blocks 1.20-1.28x the line (forward), at 12 within 3%. Eager steps of 25-48 blocks
bound by the host read a median 1.02 (29 inference cases); the one deep train case, gpt2-xl (48
blocks), 0.85-0.92 in four runs of six; yet on an H100 (2026-12-05, 8 sets) the eager train
parts at 48 blocks read fwd 0.92, bwd 1.03, opt 0.97 of the line, about 0.99 together.
This times the host models (the calibration's own: `calibrate_host.host_config`, each mode's
tokens, bf16), compiled and eager, at more block counts, all in the same rounds
(`time_host_parts`: a spell of the host hits every count and mode alike), each set of rounds read
against its own line, and counts each call's kernels and the garbage collections a step triggers.

    python benchmarks/gpu_host_blocks.py [--modes compiled,eager] [--blocks 1,4,8,12,16,22]
                                         [--sets 4] [--rounds 10] [--no-train] [--device cuda] [--dtype bf16]
                                         [--run-of 1,3]

With `--run-of 1,3` the sets alternate between calls timed alone (as the calibration times a
GPU's host jobs, each group's parts once a round after the other groups') and calls that are the
last of three in a row (as it times a CPU's): a call's cost on a cold cache falls mostly on the
1-block point and flattens the line.

Prints, per run length, part (<mode>:nograd, :fwd, :bwd, :opt) and block count: host ms a call, its
ratio to the line's charge (median and range over the sets), the kernels a call; then per block
count the collections (gen0/1/2) a round of every part triggers.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from gpu_compiled_host_tokens import kernels  # this folder: the kernels of one call of each part

from gptperf.measure.calibrate_host import CPU_HOST_RUN, fit_line, host_groups, time_host_parts
from gptperf.measure.calibration_plan import COMPILED_DTYPE
from gptperf.plan import COMPILED, EAGER

torch._dynamo.config.cache_size_limit = 64  # one compiled graph per block count, none evicted
torch._dynamo.config.automatic_dynamic_shapes = False
# the optimizer runs each round, as in the calibration: it clears the gradients, which the next
# backward would otherwise add to (it runs eagerly in both modes)
TIMED = ("nograd", "fwd", "bwd", "opt")


def collections_a_round(parts: dict, calls: int = 20) -> tuple[float, ...]:
    """Collections (gen0, gen1, gen2) a call of every part of a group in order (a backward needs
    its forward)."""
    before = [s["collections"] for s in gc.get_stats()]
    for _ in range(calls):
        for fn in parts.values():
            fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    after = [s["collections"] for s in gc.get_stats()]
    return tuple((a - b) / calls for a, b in zip(after, before, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=4, help="sets of rounds, each read against its own line")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--blocks", default="1,4,8,12,16,22")
    ap.add_argument("--modes", default=f"{COMPILED},{EAGER}")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=COMPILED_DTYPE, help="the compiled host jobs' (bf16) by default")
    ap.add_argument("--run-of", help="a timed call is the last of this many calls in a row; several "
                    "(1,3) alternate set by set (default: the calibration's, "
                    "`calibrate_host.CPU_HOST_RUN` on a CPU, else 1)")
    ap.add_argument("--no-train", action="store_true", help="the forward without grad alone")
    args = ap.parse_args()
    dev = torch.device(args.device)
    runs = [int(r) for r in args.run_of.split(",")] if args.run_of else [
        CPU_HOST_RUN if dev.type == "cpu" else 1]
    blocks = [int(b) for b in args.blocks.split(",")]
    if blocks[:2] != [1, 4]:
        ap.error(f"--blocks {args.blocks}: must start 1,4 (the line each set is read against runs "
                 "through 1 and 4 blocks), e.g. 1,4,8,16")
    modes = args.modes.split(",")
    groups: dict[int, dict] = {n: {} for n in blocks}
    for mode in modes:  # each block count's parts of every mode, run in the same rounds
        whats = ("inference",) if args.no_train else ("inference", "train")
        for what in whats:
            for n, parts in host_groups(args.dtype, mode, dev, what, layers=blocks).items():
                groups[n] |= {f"{mode}:{p}": fn for p, fn in parts.items() if p in TIMED}
    start = time.perf_counter()
    time_host_parts(groups, [], dev, warmup=3, repeats=0)  # compiles every step
    print(f"compiled and warmed up in {time.perf_counter() - start:.0f} s", flush=True)
    counts = {n: kernels(parts) if dev.type == "cuda" else dict.fromkeys(parts, 0)
              for n, parts in groups.items()}
    colls = {n: collections_a_round(parts) for n, parts in groups.items()}
    timed = list(next(iter(groups.values())))
    host = {r: {n: {p: [] for p in timed} for n in blocks} for r in runs}
    over = {r: {n: {p: [] for p in timed} for n in blocks} for r in runs}
    for s in range(args.sets):
        run_of = runs[s % len(runs)]
        got = time_host_parts(groups, timed, dev, warmup=1, repeats=args.rounds, run_of=run_of,
                              chained=not args.no_train)
        for p in timed:
            line = fit_line(got[1][p], got[4][p])  # each set against its own line
            for n in blocks:
                host[run_of][n][p].append(got[n][p])
                over[run_of][n][p].append(got[n][p] / (line["fixed_s"] + n * line["per_layer_s"]))
    for run_of in runs:
        sets = len(next(iter(host[run_of].values()))[timed[0]])
        print(f"\nhost ms a call, each the last of {run_of} in a row, and over the 1-4 line's charge: "
              f"median (range) of {sets} sets of {args.rounds} rounds; kernels a call")
        print(f"{'part':16s} {'blocks':>6s} {'host ms':>9s} {'/line':>6s} {'(range)':>13s} {'kernels':>7s}")
        for p in timed:
            for n in blocks:
                r = over[run_of][n][p]
                print(f"{p:16s} {n:6d} {statistics.median(host[run_of][n][p]) * 1e3:9.3f} "
                      f"{statistics.median(r):6.3f} {f'({min(r):.3f}-{max(r):.3f})':>13s} "
                      f"{counts[n][p]:7d}")
    print("\ngarbage collections a round of every part (gen0/1/2), by blocks: " + ", ".join(
        f"{n}: {g[0]:.2f}/{g[1]:.2f}/{g[2]:.2f}" for n, g in colls.items()))


if __name__ == "__main__":
    main()
