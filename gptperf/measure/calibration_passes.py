"""A CPU calibration's passes over its kernel points: merged point by point, a family's pass run in
a spell of the machine's fork and join left out, a family every pass of which ran in one measured
again once the machine reads out of it, the matmul's off-grid probes read pass by pass.

`calibrate_kernels.measure_kernels` runs the passes; this module decides what of them is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from gptperf.measure.probe import FORK_SPELL, fork_op_s
from gptperf.perfmodel.curves import Curve, Grid

Shape = tuple[float, float, float]  # a matmul probe's M, N, K


# Passes over a CPU's points, merged point by point (`merge_passes`): on the 2-core VM a stall of
# some seconds held parallel ops at ~8 ms a call (LayerNorm 8.0 ms from 16 KiB to 4 MiB, 9-170 µs
# measured again), and validate's quick sweep missed by a median 84% on that calibration.
CPU_PASSES = 2
PASS_DISAGREE = 1.5  # two passes' times of a point further apart than this: one was held up


def merge_times(a: float, b: float) -> float:
    """One point's seconds from two passes: their geometric mean, or the smaller where they
    disagree by more than PASS_DISAGREE (the larger was held up by the machine)."""
    lo, hi = sorted((a, b))
    return lo if hi > PASS_DISAGREE * lo else math.sqrt(a * b)


def _sizes(table: Curve | Grid) -> tuple:
    return table.x if isinstance(table, Curve) else (table.axes, table.points)


FORK_READ_S = 0.01  # seconds of parallel adds read at each family's bounds (CPU)


def passes_out_of_spells(forks: Sequence[dict[str, float]]) -> dict[str, list[int]]:
    """Per family, the passes (indices into `forks`, each a pass's {family: seconds of a parallel
    add around it}; a pass that did not measure a family has no reading of it) that measured it
    out of a spell of the machine's fork and join: those whose reading is under FORK_SPELL times
    the family's fastest. On the 2-core VM, in such spells its attention and AdamW points took
    1.3x their time and some matmul, LayerNorm and softmax points up to 1.9x, while the adds read
    1.45x (BENCHMARKS.md, session 37)."""
    families = {f for pass_ in forks for f in pass_}
    kept = {}
    for family in families:
        read = {k: pass_[family] for k, pass_ in enumerate(forks) if family in pass_}
        fastest = min(read.values())
        kept[family] = [k for k, r in read.items() if r < FORK_SPELL * fastest]
    return kept


# A family every pass of which ran in a spell (its adds ≥ FORK_SPELL × the calibration's fastest
# reading) is measured once more when the machine reads out of it again, within this much more
# time, waiting included (the CPU calibration's budget is 60 s; its passes take about 28 s on the
# 2-core VM, whose spells last 1-3 minutes: a spell through the whole calibration stays one).
CPU_RETRY_S = 20.0
RETRY_POLL_S = 0.5


def fastest_reading(forks: Sequence[dict[str, float]], calm_s: float) -> float:
    """The calibration's fastest parallel-add reading: `calm_s` (before the passes) or a pass's."""
    return min([calm_s, *(r for pass_ in forks for r in pass_.values())])


def families_in_spells(forks: Sequence[dict[str, float]], calm_s: float) -> list[str]:
    """Families (in measuring order) whose every pass read its parallel add at ≥ FORK_SPELL ×
    the calibration's fastest reading (`fastest_reading`)."""
    fastest = fastest_reading(forks, calm_s)
    order = list(dict.fromkeys(f for pass_ in forks for f in pass_))
    return [f for f in order if min(p[f] for p in forks if f in p) >= FORK_SPELL * fastest]


def wait_out_of_spell(fastest_s: float, limit_s: float, clock: Callable[[], float] = time.perf_counter,
                      read: Callable[[], float] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> bool:
    """Whether a parallel add read under FORK_SPELL × `fastest_s` within `limit_s` seconds."""
    read = read or (lambda: fork_op_s(FORK_READ_S))
    deadline = clock() + limit_s
    while True:
        if read() < FORK_SPELL * fastest_s:
            return True
        if clock() + RETRY_POLL_S > deadline:
            return False
        sleep(RETRY_POLL_S)


def combine_passes(passes: Sequence[dict[str, Any]], forks: Sequence[dict[str, float]],
                   kept: dict[str, list[int]]) -> tuple[dict[str, Any], int, list[str]]:
    """(families, points that disagreed, notes): each family's tables merged over the passes
    `kept` names for it (`passes_out_of_spells`; all that measured it where it names none), with a
    note for each family a pass of which was left out."""
    result: dict[str, Any] = {}
    disagreed, notes = 0, []
    for family in passes[0]:
        ks = kept.get(family, [k for k, pass_ in enumerate(passes) if family in pass_])
        merged = {family: passes[ks[0]][family]}
        for k in ks[1:]:
            merged, moved = merge_passes(merged, {family: passes[k][family]})
            disagreed += moved
        result[family] = merged[family]
        slow = [k for k in range(len(passes)) if k not in ks and family in forks[k]]
        if slow:
            ratio = max(forks[k][family] for k in slow) / min(forks[k][family] for k in ks)
            notes.append(f"CPU: the {family} family's pass {', '.join(str(k + 1) for k in slow)} "
                         f"ran in a spell of the machine's fork and join (a parallel add "
                         f"{ratio:.2f}× its time in the pass kept): pass "
                         f"{', '.join(str(k + 1) for k in ks)} kept")
    return result, disagreed, notes


def merge_passes(first: dict[str, Any], second: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """`first`'s families with every Curve's and Grid's seconds merged with `second`'s point by
    point (`merge_times`; the same plan measures the same points), and how many points disagreed
    by more than PASS_DISAGREE."""
    disagreed = 0
    merged = {family: dict(tables) for family, tables in first.items()}
    for family, tables in first.items():
        for key, table in tables.items():
            other = second.get(family, {}).get(key)
            if other is None or _sizes(other) != _sizes(table):
                continue  # not measured the same way twice: kept as the first pass had it
            pairs = list(zip(table.seconds, other.seconds, strict=True))
            disagreed += sum(max(a, b) > PASS_DISAGREE * min(a, b) for a, b in pairs)
            merged[family][key] = replace(table, seconds=tuple(merge_times(a, b) for a, b in pairs))
    return merged, disagreed


def probes_of_passes(passes: Sequence[dict[str, Any]],
                     pass_probes: Sequence[tuple[dict[str, list[tuple[Shape, float]]], dict[str, list[float]]]],
                     kept: Sequence[int], grids: dict[str, Grid],
                     ) -> tuple[dict[str, list[tuple[Shape, float]]], dict[str, list[float]]]:
    """The off-grid probes (and bias ratios) of the passes `kept`, each probe's time carried from
    its own pass's grid to `grids` (time × the merged grid's reading over its pass grid's), so
    `matmul_offgrid` reads every probe against the grid of the moment it ran in."""
    probes: dict[str, list[tuple[Shape, float]]] = {}
    biased: dict[str, list[float]] = {}
    for k in kept:
        measured, ratios = pass_probes[k]
        for dtype, rows in measured.items():
            own = passes[k]["matmul"][dtype]
            probes.setdefault(dtype, []).extend(
                (shape, t * grids[dtype].at(*shape) / own.at(*shape)) for shape, t in rows)
        for dtype, rs in ratios.items():
            biased.setdefault(dtype, []).extend(rs)
    return probes, biased


def retry_spells(run_pass: Callable[[Sequence[str]], None], spent: dict[str, float], passes: int,
                  forks: list[dict[str, float]], calm_s: float, left_s: float = CPU_RETRY_S) -> list[str]:
    """One more pass (`run_pass(families)`) over the families every pass of which ran in a spell
    (`families_in_spells`), once the machine reads out of it: waiting and that pass (their time in
    `spent` over its `passes` passes) within CPU_RETRY_S, and within `left_s`, what the
    calibration's budget has left for them; a note either way."""
    spelled = families_in_spells(forks, calm_s)
    if not spelled:
        return []
    cost = sum(spent.get(f, 0.0) for f in spelled) / passes  # a pass of those families
    fastest = fastest_reading(forks, calm_s)
    what = f"the {', '.join(spelled)} famil{'y' if len(spelled) == 1 else 'ies'}"
    limit_s = min(CPU_RETRY_S, left_s)
    if cost >= limit_s and left_s < CPU_RETRY_S:
        why = f"another ({cost:.1f} s) would not end within the calibration's budget ({left_s:.1f} s left)"
    elif cost >= limit_s or not wait_out_of_spell(fastest, limit_s - cost):
        why = "the machine stayed in it"
    else:
        run_pass(spelled)
        return [f"CPU: every pass of {what} ran in a spell of the machine's fork and join: measured "
                "once more when it had passed"]
    return [f"CPU: every pass of {what} ran in a spell of the machine's fork and join, and {why}: kept "
            "as measured (predictions read against them run slower than out of the spell)"]
