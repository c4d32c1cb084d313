"""Wave quantization of a GPU matmul: a kernel that gives each streaming multiprocessor one output
tile at a time runs ceil(tiles / SMs) waves whatever part of the last one is filled, so its time
jumps where the power-of-two grid of the calibration is smooth. On the H200 fp32 matmuls of GPT
widths (768, 2304, 3072, ...) took up to 36% longer than the grid interpolated between powers of
two (median 5% over 52 shapes, 2026-12-02; `benchmarks/gpu_matmul_offgrid.py`); the bf16
kernels, which split work more finely, showed no such jump.

Only matmuls no deeper than `MAX_K` are read with waves (a long K is split over the SMs).
The calibration measures a few such shapes (`calibration_plan.MATMUL_PROBES`) and keeps, per
dtype, the output tile that explains them best — or none where no tile helps — as
{"tile": [rows, cols], "units": SMs, "error": ..., "plain_error": ...}. With a tile, the grid
interpolates time / `wave_factor` and multiplies the factor of the shape asked for back in.
Pure Python.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

# Output tiles tried (rows of M × columns of N), the shapes cuBLAS's non-persistent kernels use.
TILES: tuple[tuple[int, int], ...] = ((64, 128), (128, 64), (128, 128), (128, 256), (256, 128))
# A tile is kept only if it cuts the probes' median error to at most this share of the plain
# grid's, and the plain grid misses them by more than MIN_PLAIN_ERROR: noise does not pick a tile.
KEEP_SHARE = 0.75
MIN_PLAIN_ERROR = 0.03
# Deeper than this a matmul is read from the plain grid: with few output tiles and a long K,
# cuBLAS splits K over the SMs, so no wave is left part-empty. The probes reach K 6400; on the
# H200 a compiled train step whose lm-head input gradient (3840×640 outputs, K 50304) is a third
# of its matmul time measured 0.88–0.89 of its prediction with waves on that matmul and
# 0.97–0.98 without (two calibrations, 2026-12-02).
MAX_K = 8192

Shape = tuple[float, float, float]  # M, N, K


def wave_factor(m: float, n: float, tile: Sequence[int], units: int) -> float:
    """Work the waves cover over the work asked for (≥ 1 once M and N fill a tile): ceil(tiles /
    units) waves of `units` tiles of tile[0]×tile[1] outputs, over M·N outputs."""
    rows, cols = int(tile[0]), int(tile[1])
    tiles = math.ceil(m / rows) * math.ceil(n / cols)
    return math.ceil(tiles / units) * units * rows * cols / (m * n)


def divided_seconds(shapes: Sequence[Shape], seconds: Sequence[float], tile: Sequence[int],
                    units: int) -> tuple[float, ...]:
    """Each grid time over its shape's `wave_factor`: what the grid interpolates under `tile`."""
    return tuple(t / wave_factor(m, n, tile, units) for (m, n, _), t in zip(shapes, seconds, strict=True))


def probe_error(probes: Sequence[tuple[Shape, float]],
                predict: Callable[[float, float, float], float]) -> float:
    """Median |measured / predicted − 1| over (shape, measured seconds) probes."""
    return statistics.median(abs(t / predict(*shape) - 1) for shape, t in probes)


def choose_tile(probes: Sequence[tuple[Shape, float]], plain: Callable[[float, float, float], float],
                quantized: Callable[[tuple[int, int]], Callable[[float, float, float], float]],
                units: int) -> tuple[dict[str, Any] | None, str]:
    """(waves or None, a note): the tile of `TILES` whose `quantized(tile)` predictor misses the
    probes least, kept if it beats the `plain` grid as `KEEP_SHARE` and `MIN_PLAIN_ERROR` ask."""
    if not probes:
        return None, "no probes"
    base = probe_error(probes, plain)
    errors = {tile: probe_error(probes, quantized(tile)) for tile in TILES}
    best = min(errors, key=errors.__getitem__)
    summary = (f"probes off the grid missed by {base:.1%} (median); best tile "
               f"{best[0]}×{best[1]} on {units} SMs: {errors[best]:.1%}")
    if base <= MIN_PLAIN_ERROR or errors[best] > KEEP_SHARE * base:
        return None, summary + ": not kept"
    return ({"tile": list(best), "units": units, "error": errors[best], "plain_error": base},
            summary + ": kept")


def check_waves(waves: Any) -> dict[str, Any]:
    """A calibration's waves entry, checked: {"tile": [rows, cols], "units": int, ...}."""
    tile, units = list(waves["tile"]), int(waves["units"])
    if len(tile) != 2 or min(int(t) for t in tile) < 1 or units < 1:
        raise ValueError(f"waves need a tile of two positive sizes and units ≥ 1, got {waves!r}")
    return {**waves, "tile": [int(t) for t in tile], "units": units}
