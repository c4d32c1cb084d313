"""How the calibration's families turn measured points into tables: a Grid's unmeasured cells
extrapolated from the measured ones, the note that says so, a failed section left out with a note,
and progress reports."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any

from gptperf.measure.timer import Progress


def fill_grid(axes: Sequence[Sequence[int]], measured: dict[tuple[int, ...], float],
              growth: Sequence[float]) -> list[float]:
    """Grid times in row-major order: measured cells as measured, every other one from the
    measured cell below it with the most work (Σ growth·log size), grown by `growth`."""
    out = []
    for cell in product(*axes):
        if cell in measured:
            out.append(measured[cell])
            continue
        below = [c for c in measured if all(a <= b for a, b in zip(c, cell, strict=True))] or list(measured)
        src = max(below, key=lambda c: (sum(g * math.log(x) for g, x in zip(growth, c, strict=True)), c))
        scale = math.prod((x / s) ** g for x, s, g in zip(cell, src, growth, strict=True))
        out.append(measured[src] * scale)
    return out


def grid_note(axes: Sequence[Sequence[int]], measured: int) -> str:
    """What a Grid's `what` says of its cells: all measured, or how many, and how the rest were filled."""
    total = math.prod(len(a) for a in axes)
    if measured == total:
        return "all cells measured"
    return (f"{measured} of {total} cells measured, the rest (estimated longer than a measured "
            "call may take) extrapolated from the largest measured cell below by the growth exponents")


def guarded(what: str, run: Callable[[], tuple[Any, list[str]]], empty: Any) -> tuple[Any, list[str]]:
    """`run()`, whose (result, notes) it returns; a section of the calibration that fails (no
    Triton or compiler for a compiled step, a launch gap that cannot be captured) gives `empty`
    instead and a note that says why it is missing, and leaves the rest standing."""
    try:
        return run()
    except Exception as err:  # noqa: BLE001 — reported in the calibration's notes
        line = (str(err).strip().splitlines() or [""])[0][:200]
        return empty, [f"{what} failed and is left out ({type(err).__name__}: {line})"]


def report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    """Tell `progress`, where there is one, that `done` of a stage's `total` points are measured."""
    if progress:
        progress(stage, done, total)
