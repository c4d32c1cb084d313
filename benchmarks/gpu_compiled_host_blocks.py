"""Is a compiled step's host time a straight line in its blocks? The calibration charges it on the
line through the compiled host model at 1 and 4 blocks (`calibrate_host.fit_line`); compiled
cases of 13-22 blocks bound by the host came out 1.09-1.33x their prediction in 8 of the 9
stored (sessions 34-41), and session 36 read the host model itself at 22 blocks 1.20-1.28x the
line (forward), at 12 within 3%. This times the compiled host model (the calibration's own:
`calibrate_host.host_config`, its tokens, bf16) at more block counts, all in the same rounds
(`time_host_parts`: a spell of the host hits every count alike), each set of rounds read against
its own line, and counts each call's kernels and the garbage collections a step triggers.

    python benchmarks/gpu_compiled_host_blocks.py [--sets 4] [--rounds 10] [--blocks 1,4,8,12,16,22]
                                                  [--no-train] [--device cuda]

Prints per part (nograd, fwd, bwd) and block count: host ms a call, its ratio to the line's
charge (median and range over the sets), the kernels a call and the collections (gen0/1/2) a
step of the block count's parts.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from gptperf.measure.calibrate_host import (
    _inference_part,
    _train_parts,
    fit_line,
    host_config,
    time_host_parts,
)
from gptperf.measure.calibration_plan import COMPILED_DTYPE
from gptperf.plan import COMPILED

torch._dynamo.config.cache_size_limit = 64  # one compiled graph per block count, none evicted
torch._dynamo.config.automatic_dynamic_shapes = False


def kernels_a_call(fn, device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def collections_a_call(parts: dict, calls: int = 20) -> tuple[float, ...]:
    """Collections (gen0, gen1, gen2) a call of the group's parts in order (a backward needs its
    forward)."""
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
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-train", action="store_true", help="the forward without grad alone")
    args = ap.parse_args()
    dev = torch.device(args.device)
    blocks = [int(b) for b in args.blocks.split(",")]
    assert blocks[:2] == [1, 4], "the line runs through 1 and 4 blocks"
    groups = {}
    for n in blocks:
        config = host_config(n, COMPILED)
        parts = {"nograd": _inference_part(config, "forward", COMPILED_DTYPE, COMPILED, dev)}
        if not args.no_train:
            parts |= {k: v for k, v in _train_parts(config, COMPILED_DTYPE, COMPILED, dev).items()
                      if k != "opt"}
        groups[n] = parts
    start = time.perf_counter()
    time_host_parts(groups, [], dev, warmup=3, repeats=0)  # compiles every step
    print(f"compiled and warmed up in {time.perf_counter() - start:.0f} s", flush=True)
    kernels = {n: {p: kernels_a_call(fn, dev) for p, fn in parts.items()} for n, parts in groups.items()}
    colls = {n: collections_a_call(parts) for n, parts in groups.items()}
    timed = list(next(iter(groups.values())))
    host: dict[int, dict[str, list[float]]] = {n: {p: [] for p in timed} for n in blocks}
    over: dict[int, dict[str, list[float]]] = {n: {p: [] for p in timed} for n in blocks}
    for _ in range(args.sets):
        got = time_host_parts(groups, timed, dev, warmup=1, repeats=args.rounds)
        for p in timed:
            line = fit_line(got[1][p], got[4][p])  # each set against its own line
            for n in blocks:
                host[n][p].append(got[n][p])
                over[n][p].append(got[n][p] / (line["fixed_s"] + n * line["per_layer_s"]))
    print(f"\nhost ms a call and over the 1-4 line's charge: median (range) of {args.sets} sets "
          f"of {args.rounds} rounds; kernels a call; collections a step (the group's parts in order)")
    print(f"{'part':7s} {'blocks':>6s} {'host ms':>9s} {'/line':>6s} {'(range)':>13s} {'kernels':>7s} "
          f"{'gen0/1/2':>15s}")
    for p in timed:
        for n in blocks:
            g, r = colls[n], over[n][p]
            print(f"{p:7s} {n:6d} {statistics.median(host[n][p]) * 1e3:9.3f} "
                  f"{statistics.median(r):6.3f} {f'({min(r):.3f}-{max(r):.3f})':>13s} "
                  f"{kernels[n][p]:7d} {g[0]:5.2f}/{g[1]:4.2f}/{g[2]:4.2f}")

if __name__ == "__main__":
    main()
