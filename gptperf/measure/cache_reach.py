"""How far a CPU's cache reaches for a step: one decode-like layer of few-row matmuls timed with
its weights cycled through more and more layers, so the prediction knows at which size a step's
weights stop being found in the last-level cache (`Calibration.warm_share`).

The share of a last-level cache a process gets depends on the machine (a VM's neighbours, how the
cores share it), not only on the cache's size: measured, not read from sysfs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptperf.measure.calibration_plan import (
    CACHE_REACH_LAYER,
    CACHE_REACH_LAYERS,
    CACHE_REACH_ROUNDS,
)
from gptperf.measure.kernel_timer import KernelTimer
from gptperf.perfmodel.calibration import cache_shares
from gptperf.perfmodel.curves import Curve

LAYER_BYTES = 4 * sum(n * k for _, n, k in CACHE_REACH_LAYER)  # fp32 weights of one layer


def measure_cache_reach(timer: KernelTimer) -> Curve:
    """Seconds per layer of CACHE_REACH_LAYER's fp32 matmuls, the weights of each count of layers
    in CACHE_REACH_LAYERS cycled through (x: those weights' bytes). One timed call runs every
    layer of the count once, so each layer is used again after all the others, whatever few
    calls the timer makes (its warm-up call loads the whole set first). Every count is timed
    once a round for CACHE_REACH_ROUNDS rounds, the median kept (a slow spell then moves every
    count); it runs after the CPU's passes, outside their spell checks."""
    device = timer.device
    layers = [[torch.randn(n, k, device=device) for _, n, k in CACHE_REACH_LAYER]
              for _ in range(max(CACHE_REACH_LAYERS))]
    inputs = [torch.randn(m, k, device=device) for m, _, k in CACHE_REACH_LAYER]

    def cycling(count: int) -> Callable[[int], None]:
        def call(_: int) -> None:
            for layer in layers[:count]:
                for x, w in zip(inputs, layer, strict=True):
                    F.linear(x, w)
        return call

    times: dict[int, list[float]] = {count: [] for count in CACHE_REACH_LAYERS}
    for _ in range(CACHE_REACH_ROUNDS):
        for count in CACHE_REACH_LAYERS:
            times[count].append(timer(cycling(count), f"cache reach: {count} layers") / count)
    return Curve(tuple(float(count * LAYER_BYTES) for count in CACHE_REACH_LAYERS),
                 tuple(statistics.median(times[count]) for count in CACHE_REACH_LAYERS),
                 what=f"s per layer of few-row fp32 matmuls {list(CACHE_REACH_LAYER)} (M, N, K), "
                      "over the bytes of the layers' weights cycled through")


def reach_note(curve: Curve) -> str:
    """One line: the layer's time at the curve's ends, and up to which size a step reads its
    few-row matmuls on the grid timed from the cache and from which on the plain grid."""
    mib = 2**20
    head = (f"CPU cache reach: a layer of few-row matmuls took {curve.seconds[0] * 1e6:.0f} µs with "
            f"{curve.x[0] / mib:.2f} MiB of weights cycled, {curve.seconds[-1] * 1e6:.0f} µs with "
            f"{curve.x[-1] / mib:.1f} MiB")
    shares = cache_shares(curve)
    if shares is None:
        return (f"{head}: no saving measured, so a step is read from the cache as far as its "
                "tensors fit in the last-level cache's size")
    full = max(x for x, s in zip(curve.x, shares, strict=True) if s >= 1)
    none = min(x for x, s in zip(curve.x, shares, strict=True) if s <= 0)
    between = ", in between part of the way" if any(0 < s < 1 for s in shares) else ""
    return (f"{head}: a step's few-row matmuls are read on the grid timed from the cache up to "
            f"{full / mib:.2f} MiB of tensors, on the plain grid from {none / mib:.2f} MiB{between}")
