"""Pictures (matplotlib, Agg, imported lazily): the roofline, measured ceilings, profiles, training curves."""

from __future__ import annotations

import os
from pathlib import Path

from gptperf.errors import UserError

# the formats a picture's path may end in: matplotlib writes each by the suffix
PLOT_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """The path if its suffix is a format we can write, else a one-line UserError."""
    path = Path(path)
    if path.suffix.lstrip(".").lower() not in PLOT_FORMATS:
        raise UserError(f"plot file {str(path)!r} must end in one of: "
                        + ", ".join(f".{f}" for f in PLOT_FORMATS))
    return path
