"""(CPU) The machine's spells: which probes and which steps slow down together.

    python benchmarks/cpu_spells.py [SECONDS] [--out FILE.json]

For SECONDS (default 300) it runs rounds of, in turn: the speed probe's parallel adds
(`probe.fork_adds`, 100 adds just above torch's grain) and the same number of serial adds just
below it, one fixed matmul (800 x 384 -> 384, ten calls), a 1.2M-element GELU (ten calls), the
calibration's host-model train step, and one step of every case of the CPU quick validation
sweep; each the median of a few runs. A round whose parallel adds took SPELL times the fastest
round's ran in a spell. Prints, per column, its median out of spells and in them, and their
ratio: a column that moves with the parallel adds is slowed by the spells.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gptperf.measure.probe import FORK_ELEMENTS, FORK_OPS, FORK_SPELL, fork_adds, host_model_step
from gptperf.steps.build import build_step
from gptperf.validate.sweep import cases

SPELL = FORK_SPELL  # the same line `validate` draws


def serial_adds() -> Callable[[], None]:
    """FORK_OPS adds of three quarters of torch's grain: one thread each, no fork and join."""
    a, b, out = (torch.ones(FORK_ELEMENTS * 3 // 4) for _ in range(3))

    def adds() -> None:
        for _ in range(FORK_OPS):
            torch.add(a, b, out=out)

    return adds


def median_s(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=None, help="write every round as JSON here")
    args = parser.parse_args()

    x, w = torch.randn(800, 384), torch.randn(384, 384)
    big = torch.randn(800 * 1536)
    columns: dict[str, tuple[Callable[[], object], int]] = {
        "parallel adds": (fork_adds(), 10),
        "serial adds": (serial_adds(), 10),
        "matmul x10": (lambda: [torch.nn.functional.linear(x, w) for _ in range(10)], 10),
        "gelu 1.2M x10": (lambda: [torch.nn.functional.gelu(big) for _ in range(10)], 10),
        "host-model train step": (host_model_step("cpu", "train"), 5),
    }
    for case in cases("cpu", quick=True):
        step = build_step(case.config, case.workload, case.plan, "cpu")
        columns[case.name] = (step.step, 5)
    rounds: list[dict[str, float]] = []
    until = time.perf_counter() + args.seconds
    while time.perf_counter() < until:
        rounds.append({name: median_s(run, n) for name, (run, n) in columns.items()})
        print(f"round {len(rounds)}: parallel adds {rounds[-1]['parallel adds'] / FORK_OPS * 1e6:.2f} µs",
              file=sys.stderr, flush=True)
    if args.out:
        args.out.write_text(json.dumps(rounds, indent=1))
    fastest = min(r["parallel adds"] for r in rounds)
    spell = [r for r in rounds if r["parallel adds"] >= SPELL * fastest]
    steady = [r for r in rounds if r["parallel adds"] < SPELL * fastest]
    print(f"{len(rounds)} rounds over {args.seconds:.0f} s, {len(spell)} in a spell "
          f"(parallel adds ≥ {SPELL}× the fastest round's); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'column':48s} {'out of spells':>14s} {'in spells':>12s} {'ratio':>7s}")
    for name in columns:
        out = statistics.median(r[name] for r in steady) if steady else float("nan")
        inside = statistics.median(r[name] for r in spell) if spell else float("nan")
        print(f"{name:48s} {out * 1e3:11.3f} ms {inside * 1e3:9.3f} ms {inside / out:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
