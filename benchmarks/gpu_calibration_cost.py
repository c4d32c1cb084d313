"""Where a GPU calibration point's wall time goes, and what other ways of timing it would change.

    python benchmarks/gpu_calibration_cost.py [--rounds 2] [--families matmul:bf16 optimizer:fp32]
        [--timers torch shared fresh replays3 half] [--save cells.json]

On the GPU, each family (the calibration's own `_measure_*` over its own cells) is measured in
alternating rounds by each of `--timers`:
  torch    — `KernelTimer` as it is: each point's graph captured in `torch.cuda.graph`, which
             synchronises the device and empties the caching allocator (and the pinned host
             cache) before every capture and gives every graph a memory pool of its own;
  shared   — no synchronising or emptying, every graph captured into one pool, reused;
  fresh    — shared, with the pool handed back before every capture (fresh memory each time);
  replays3 — torch with three timed replays instead of two (the calibration's before 2026-12-03);
  half     — torch with replays of 0.5 ms instead of 1.
Per point the host seconds are split: the first call (lazy set-up: cuDNN builds a plan for every
new attention shape), synchronise + empty the caches, capture and first replay, and the rest (the
estimate's second call, the timed replays, freeing the graph). Per family, each round's per-cell
times over the first `torch` round's (median ratio, median and p90 of |ratio - 1|; the second
`torch` round is the noise), then a table of wall seconds and the split; `--save` keeps every
run's per-cell times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("first call", "sync+empty", "capture+replay", "rest")


def timers():
    import torch

    from gptperf.measure.kernel_timer import KernelTimer

    class Staged(KernelTimer):
        """KernelTimer as it is (each capture in `torch.cuda.graph`: the device synchronised and
        the allocator's caches emptied first, a private memory pool per graph), with each point's
        host seconds split into STAGES (`self.stages`)."""

        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            self.stages: dict[str, float] = defaultdict(float)
            self.points = 0

        def __call__(self, call, what="", nbytes=0.0):
            first = [True]

            def timed(j: int):
                if not first[0]:
                    return call(j)
                first[0] = False
                t0 = time.perf_counter()
                out = call(j)
                self.stages["first call"] += time.perf_counter() - t0
                return out

            t0 = time.perf_counter()
            before = sum(self.stages.values())
            out = super().__call__(timed, what, nbytes)
            self.stages["rest"] += time.perf_counter() - t0 - (sum(self.stages.values()) - before)
            self.points += 1
            return out

        def _capture(self, call, calls):
            t0 = time.perf_counter()
            out = super()._capture(call, calls)
            self.stages["capture+replay"] += time.perf_counter() - t0 - self._sync_s
            return out

        def _record(self, call, calls):
            t0 = time.perf_counter()
            self._before_capture()
            self._sync_s = time.perf_counter() - t0
            self.stages["sync+empty"] += self._sync_s
            return self._record_only(call, calls)

        def _before_capture(self) -> None:  # what torch.cuda.graph does first (again, at no cost)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch._C._host_emptyCache()

        def _record_only(self, call, calls):
            return KernelTimer._record(self, call, calls)

    class Shared(Staged):
        """No synchronise or emptying; every graph captured into one pool, the last graph kept
        alive until the next is captured (a pool whose graphs are all freed cannot be captured
        into again, torch 2.11)."""

        def _before_capture(self) -> None:
            pass

        def _record_only(self, call, calls):
            if getattr(self, "_handle", None) is None:
                self._handle = torch.cuda.graph_pool_handle()
                self._stream = torch.cuda.Stream()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(self._stream):
                graph.capture_begin(pool=self._handle)
                try:
                    for i in range(calls):
                        call(i)
                finally:
                    graph.capture_end()
            self._last = graph  # the previous graph's memory goes back to the pool
            return graph

    class Fresh(Shared):
        """Shared with the pool handed back before every capture: fresh memory each time."""

        def _before_capture(self) -> None:
            self._handle = self._last = None
            torch.cuda.empty_cache()

    return dict(zip(TIMERS, (Staged, Shared, Fresh, Staged, Staged), strict=True))


TIMERS = ("torch", "shared", "fresh", "replays3", "half")  # `timers()`'s keys
FAMILIES = ("matmul", "attention", "vector", "optimizer")  # what `run_family` runs

# what a timer changes in the calibration plan's constants while it runs (module kernel_timer)
SETTINGS = {"replays3": {"REPLAYS": 3}, "half": {"TARGET_REPLAY_S": 0.5e-3}}


def run_family(family: str, dtype: str, timer) -> list[tuple[str, float]]:
    import torch

    from gptperf.measure import calibrate_kernels as ck

    device = torch.device("cuda")
    if family == "matmul":
        grids = {"": ck.measure_matmul(device, dtype, timer=timer)}
    elif family == "attention":
        grids = ck.measure_attention(device, dtype, timer=timer)
    elif family == "vector":
        grids = ck.measure_vector(device, dtype, timer=timer)
    else:  # optimizer (main checks the name against FAMILIES)
        from gptperf.measure.calibrate_optimizer import measure_optimizer

        grids = measure_optimizer(device, timer=timer)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    out = []
    for key in sorted(grids):
        table = grids[key]
        cells = product(*table.points) if hasattr(table, "points") else table.x
        out += [(f"{key} {cell}", s) for cell, s in zip(cells, table.seconds, strict=True)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--families", nargs="+", default=["matmul:bf16", "matmul:fp32",
                                                          "attention:fp32", "vector:bf16"],
                        help="family:dtype (optimizer: any dtype, its tensors are fp32)")
    parser.add_argument("--save", help="write every run's per-cell seconds to this JSON file")
    parser.add_argument("--timers", nargs="+", default=["torch", "shared"],
                        help="torch, shared, fresh, replays3, half (the module docstring); "
                             "torch first: the others are read against its first round")
    args = parser.parse_args()
    bad = [t for t in args.timers if t not in TIMERS]
    if bad or "torch" not in args.timers:
        parser.error(f"--timers {' '.join(args.timers)}: each one of {', '.join(TIMERS)}, with torch "
                     "among them (the others are read against it)")
    for spec in args.families:
        if spec.count(":") != 1 or spec.split(":")[0] not in FAMILIES:
            parser.error(f"--families {spec!r}: family:dtype, the family one of {', '.join(FAMILIES)}")
    import torch

    from gptperf.measure import kernel_timer

    kinds = timers()
    rows = []
    saved_runs: dict[str, dict] = {}
    for spec in args.families:
        family, dtype = spec.split(":")
        seconds: dict[str, list[list[float]]] = defaultdict(list)
        cells: list[str] = []
        for r in range(args.rounds):
            for name in (args.timers if r % 2 == 0 else args.timers[::-1]):
                timer = kinds[name](torch.device("cuda"), False)
                saved = {k: getattr(kernel_timer, k) for k in SETTINGS.get(name, {})}
                for k, v in SETTINGS.get(name, {}).items():
                    setattr(kernel_timer, k, v)
                t0 = time.perf_counter()
                try:
                    measured = run_family(family, dtype, timer)
                    cells = [c for c, _ in measured]
                    seconds[name].append([t for _, t in measured])
                finally:
                    wall = time.perf_counter() - t0
                    for k, v in saved.items():
                        setattr(kernel_timer, k, v)
                rows.append((spec, name, r, wall, timer.points, dict(timer.stages)))
                print(f"{spec} {name} round {r}: {wall:.2f} s, {timer.points} points, "
                      + ", ".join(f"{k} {timer.stages[k]:.2f} s" for k in STAGES)
                      + f"; {len(timer.notes)} timed eagerly {timer.notes[:2]}", flush=True)
        if args.save:
            saved_runs[spec] = {"cells": cells, "seconds": dict(seconds)}
        base = seconds["torch"][0]
        for name, runs in seconds.items():
            for r, values in enumerate(runs):
                if name == "torch" and r == 0:
                    continue
                dev = sorted(abs(v / b - 1) for v, b in zip(values, base, strict=True))
                ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
                print(f"  {spec} {name} round {r} over torch round 0: median ratio {ratio:.4f}, "
                      f"median |r-1| {100 * statistics.median(dev):.2f}%, "
                      f"p90 {100 * dev[int(0.9 * (len(dev) - 1))]:.2f}%", flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps(saved_runs))
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| family | timer | round | wall s | points | ms/point | " + " | ".join(STAGES) + " |")
    print("| --- " * (6 + len(STAGES)) + "|")
    for spec, name, r, wall, points, stages in rows:
        print(f"| {spec} | {name} | {r} | {wall:.2f} | {points} | {1e3 * wall / max(points, 1):.1f} | "
              + " | ".join(f"{stages.get(k, 0.0):.2f}" for k in STAGES) + " |")


if __name__ == "__main__":
    main()
