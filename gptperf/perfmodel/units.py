"""Numbers with units for the performance model's tables, without importing rich.

Same output as gptperf.output's si / binary_bytes / seconds; kept here so that `gptperf model`
(which must answer in well under 0.2 s) does not pay for importing a terminal library.
"""

from __future__ import annotations

import math

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float | None, unit: str = "", digits: int = 3) -> str:
    """`si(3.1e12, "FLOP/s")` -> '3.1 TFLOP/s'; None or NaN -> '—'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}".rstrip()
    return f"{value:.{digits}g} {unit}".rstrip()


def binary_bytes(n: float | None) -> str:
    """Bytes in KiB/MiB/GiB/TiB."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "—"
    if math.isinf(n):
        return "unbounded"
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def seconds(t: float | None) -> str:
    """A duration in s, ms, µs or ns."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "—"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(t) >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"
