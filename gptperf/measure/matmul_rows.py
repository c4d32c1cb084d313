"""A CPU's few-row matmuls row by row: its library runs them in blocks of rows, so a matmul's time
steps up at a block's first row instead of growing smoothly between the grid's rows (1, 2, 3, 4,
8, 16). Each row up to WARM_M is timed on a few layers from the cache, and its time over the
reading between the grid's rows kept: what `Calibration.row_ratio` charges a step of that many
rows beyond its warm grid's reading.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

from gptperf.measure.calibration_plan import MATMUL_ROW_LAYERS, WARM_M, WARM_POOL_BYTES
from gptperf.measure.kernel_timer import KernelTimer, MatmulPrecision, OperandPool, linear_call
from gptperf.perfmodel.curves import Curve
from gptperf.runtime import TORCH_DTYPES


def row_ratios(seconds: Sequence[float], grid_rows: Sequence[float]) -> list[float]:
    """Each row's time (`seconds[m - 1]` for rows 1..len(seconds)) over its reading between the
    grid's rows (`grid_rows`, those up to len(seconds)), log-log as a Grid reads: 1 on a grid
    row, and beyond the last grid row the last row's reading grown linearly."""
    rows = [int(m) for m in grid_rows if m <= len(seconds)]
    if not rows:
        return [1.0] * len(seconds)
    curve = Curve(tuple(float(m) for m in rows), tuple(seconds[m - 1] for m in rows))
    return [t / curve.at(m) for m, t in enumerate(seconds, start=1)]


def measure_matmul_rows(timer: KernelTimer, dtype: str, grid_rows: Sequence[float]) -> dict[str, list[float]]:
    """{"rows": 1..WARM_M, "ratios": the median over MATMUL_ROW_LAYERS of each row's time over its
    reading between `grid_rows` (`row_ratios`)}: F.linear on operands cycled through
    WARM_POOL_BYTES, as the warm grid is timed (the block's cost shows where the weights come
    from the cache; from memory the weights' reading hides it)."""
    device = timer.device
    tdtype = TORCH_DTYPES[dtype]
    pool = OperandPool(device, tdtype, WARM_POOL_BYTES)
    per_layer = []
    with MatmulPrecision(dtype), torch.no_grad():
        for n, k in MATMUL_ROW_LAYERS:
            seconds = [timer(linear_call(pool, m, n, k), f"matmul {dtype} {m}×{n}×{k}, row by row")
                       for m in range(1, WARM_M + 1)]
            per_layer.append(row_ratios(seconds, grid_rows))
    ratios = [statistics.median(r) for r in zip(*per_layer, strict=True)]
    if not all(math.isfinite(r) and r > 0 for r in ratios):
        raise ValueError(f"row ratios must be positive numbers, got {ratios}")
    return {"rows": [float(m) for m in range(1, WARM_M + 1)], "ratios": ratios}


def rows_note(dtype: str, entry: dict[str, list[float]]) -> str:
    """One line: the rows whose time is furthest off its reading between the grid's rows."""
    pairs = sorted(zip(entry["ratios"], entry["rows"], strict=True), reverse=True)
    worst = ", ".join(f"{int(m)} rows ×{r:.2f}" for r, m in pairs[:3])
    return (f"matmul {dtype}: few rows timed row by row (blocks of rows), each over its reading "
            f"between the grid's rows; the most: {worst}")
