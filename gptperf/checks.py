"""Checks of plain values that several modules share; torch-free, so the performance model, the
report page and the trace reader can use them without importing torch."""

from __future__ import annotations

import math
from typing import Any

from gptperf.errors import UserError


def check_positive_int(value: Any, what: str) -> int:
    """`value` when it is an int ≥ 1, else a one-line UserError naming `what`. A bool is refused
    though it is an int: True would pass as 1. (For a flag's text, argparse's type is
    `commands.common.positive_int`.)"""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    if value <= 0:
        raise UserError(f"{what} must be a positive integer, got {value}")
    return value


def is_finite_number(x: Any) -> bool:
    """Whether `x` is a finite real number (int or float, not a bool, not NaN or ±inf)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
