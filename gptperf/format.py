"""Pure text formatters for numbers and JSON, shared by the library and the command layer.

Numbers with units (`si`, `binary_bytes`, `seconds`), percentages and ratio ranges, and compact
JSON text. It imports neither rich nor torch, so library code (reports, plots, benchmarks) can
format without loading the terminal layer; gptperf.output re-exports these for the commands.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from gptperf.units import GIB, KIB, MIB, TIB

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float | None, unit: str = "", digits: int = 3) -> str:
    """`si(3.14e12, "FLOP/s")` -> '3.14 TFLOP/s'; None or NaN -> '—'."""
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
    for scale, unit in ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
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


def percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percentage with `digits` decimals, e.g. 0.049 -> '4.9%' ('—' for none or NaN)."""
    if fraction is None or not math.isfinite(fraction):
        return "—"
    return f"{100 * fraction:.{digits}f}%"


def apart_digits(value: float, target: float) -> int:
    """The decimals (1 to 3) at which two fractions read apart as percentages, so that a value a
    hair over its target does not print as the target itself (8.01% against 8%: '8.01%'); closer
    than 0.001 points they read alike at 3."""
    for digits in (1, 2):
        if value == target or f"{100 * value:.{digits}f}" != f"{100 * target:.{digits}f}":
            return digits
    return 3


def ratio_range(span: tuple[float, float] | None) -> str:
    """A range of ratios, e.g. a case's steps at p10 and p90 over their median: '0.88–1.38×'."""
    return "—" if span is None else f"{span[0]:.2f}–{span[1]:.2f}×"


def _plain(x: Any) -> Any:
    """`x` as JSON-ready values: objects with to_dict() expanded, NaN and inf as None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int)):
        return x
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_plain(v) for v in x]
    if hasattr(x, "to_dict"):
        return _plain(x.to_dict())
    if hasattr(x, "item"):  # numpy / torch scalars
        return _plain(x.item())
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def to_json(doc: Any) -> str:
    """Compact JSON text; NaN and inf become null so any JSON reader accepts it.

    No indent: json's C encoder serves only compact output, 5-10x faster on a large model's
    document (pipe through `python -m json.tool` or `jq` to read it).
    """
    return json.dumps(_plain(doc), allow_nan=False)
