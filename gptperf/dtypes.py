"""Numeric formats gptperf knows, by the short names used everywhere (pure Python, no torch)."""

from __future__ import annotations

from gptperf.errors import UserError

# Bytes per element. tf32 is stored as fp32; only the matrix units round the mantissa.
DTYPE_BYTES: dict[str, int] = {"fp64": 8, "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}
DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)
# Formats a model's steps run in (train, profile, report); fp64 is a roofline format only.
STEP_DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
# Formats trained with autocast: the master weights, gradients and optimizer state stay fp32.
MIXED_PRECISION: frozenset[str] = frozenset({"bf16", "fp16"})


def check_dtype(name: str) -> str:
    """Return `name` if it is a known format, else raise a one-line UserError."""
    if name not in DTYPE_BYTES:
        raise UserError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return name


def dtype_bytes(name: str) -> int:
    """Bytes per element of the format `name`."""
    return DTYPE_BYTES[check_dtype(name)]
