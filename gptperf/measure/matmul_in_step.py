"""A CPU's few-row matmuls inside a step: the calibration times its grids back to back, but in a
decode step each matmul follows a LayerNorm, a GELU or an add, and there a small layer takes
longer, its weights from the cache or from memory. Layers of a few sizes are timed both ways on
each grid's operands at a few rows, and each size's median ratio kept: what
`Calibration.in_step_ratio` charges a step's few-row matmul of that size beyond the grid's
reading.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptperf.dtypes import dtype_bytes
from gptperf.measure.calibration_plan import (
    IN_STEP_MEMORY_BYTES,
    MATMUL_IN_STEP_LAYERS,
    MATMUL_IN_STEP_ROUNDS,
    MATMUL_IN_STEP_ROWS,
    WARM_POOL_BYTES,
)
from gptperf.measure.kernel_timer import (
    POOL_BYTES,
    Call,
    KernelTimer,
    MatmulPrecision,
    OperandPool,
    linear_call,
)
from gptperf.perfmodel.calibration import WARM
from gptperf.runtime import TORCH_DTYPES


def between_ops(rows: torch.Tensor) -> Callable[[], None]:
    """The small ops a decode step runs between two matmuls, on their rows: LayerNorm, GELU, add."""
    width = rows.size(-1)
    weight, bias = torch.ones(width, dtype=rows.dtype), torch.zeros(width, dtype=rows.dtype)

    def ops() -> None:
        F.layer_norm(rows, (width,), weight, bias)
        F.gelu(rows)
        rows.add(rows)

    return ops


def in_step_ratio(back_to_back: float, with_ops: float, ops: float) -> float | None:
    """A matmul's time between a step's ops (`with_ops` − `ops`: the pair's time less the ops'
    own) over its time back to back; None where the ops took as long as the pair (noise)."""
    inside = with_ops - ops
    return inside / back_to_back if inside > 0 and back_to_back > 0 else None


def _probe(timer: KernelTimer, alone: Call, inside: Call, ops: Callable[[], None], what: str) -> float | None:
    """`in_step_ratio` of one layer: `alone` timed back to back, `inside` followed by `ops`, and
    `ops` alone."""
    def paired(j: int) -> None:
        inside(j)
        ops()

    return in_step_ratio(timer(alone, f"{what}, back to back"), timer(paired, f"{what}, between a step's ops"),
                         timer(lambda _: ops(), f"{what}: the step's ops alone"))


def measure_matmul_in_step(timer: KernelTimer, dtype: str, cold: bool) -> dict[str, list[float]] | None:
    """{"bytes": each of MATMUL_IN_STEP_LAYERS' weight bytes, increasing, "ratios": the median of
    its `in_step_ratio`s over MATMUL_IN_STEP_ROWS and MATMUL_IN_STEP_ROUNDS}: F.linear back to
    back as the grid it is read against was timed, and followed by `between_ops` on its rows as a
    step runs it, every probe once a round (a slow moment moves one round of each). From the cache
    (`cold` False): both on operands cycled through WARM_POOL_BYTES, as the warm grid. From memory:
    back to back as the plain grid (its pool, at most MAX_COPIES sets, which small layers' copies
    do not take past the cache), inside a step on as many copies as fill IN_STEP_MEMORY_BYTES.
    A size none of whose probes gave a ratio is left out; None where none is left."""
    tdtype = TORCH_DTYPES[dtype]
    grid_pool = OperandPool(timer.device, tdtype, POOL_BYTES["cpu"] if cold else WARM_POOL_BYTES)
    step_pool = (OperandPool(timer.device, tdtype, IN_STEP_MEMORY_BYTES, max_copies=sys.maxsize)  # as many as fill it
                 if cold else grid_pool)
    probes = [(n * k * dtype_bytes(dtype), linear_call(grid_pool, m, n, k), linear_call(step_pool, m, n, k),
               between_ops(torch.randn(m, k, dtype=tdtype)), f"matmul {dtype} {m}×{n}×{k}")
              for n, k in MATMUL_IN_STEP_LAYERS for m in MATMUL_IN_STEP_ROWS]
    by_size: dict[float, list[float]] = {float(size): [] for size, *_ in probes}
    with MatmulPrecision(dtype), torch.no_grad():
        for _ in range(MATMUL_IN_STEP_ROUNDS):
            for size, alone, inside, ops, what in probes:
                ratio = _probe(timer, alone, inside, ops, what)
                if ratio is not None:
                    by_size[float(size)].append(ratio)
    sizes = sorted(size for size, ratios in by_size.items() if ratios)
    if not sizes:
        return None
    return {"bytes": sizes, "ratios": [statistics.median(by_size[size]) for size in sizes]}


def in_step_note(key: str, entry: dict[str, list[float]]) -> str:
    """One line: each size's ratio on grid `key` (the plain grid's dtype, or its warm twin)."""
    each = ", ".join(f"{b / 2**20:.2f} MiB ×{r:.2f}" for b, r in zip(entry["bytes"], entry["ratios"], strict=True))
    side = "from the cache" if key.endswith(WARM) else "from memory"
    return (f"matmul {key}: few rows {side} between a step's small ops over their time back to back, by the "
            f"weight's size: {each} (charged on that grid's reading)")
