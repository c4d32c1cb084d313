"""Pictures (matplotlib, Agg, imported lazily): the roofline, measured ceilings, profiles, training curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gptperf.atomic import atomic_path
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


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display), imported when a picture is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


NOTE_STYLE = {"ha": "right", "va": "bottom", "fontsize": 7.5, "color": "#667085"}


def save_figure(fig: Any, path: Path, *, note: str | None = None, fmt: str | None = None,
                layout: dict[str, Any] | None = None, dpi: float | None = None) -> Path:
    """Lay `fig` out (`layout`: tight_layout's options), stamp `note` in its bottom right corner,
    write it atomically in `fmt` (default: the format `path`'s suffix names, PNG without one)
    and close it."""
    if note:
        fig.text(0.99, 0.01, note, **NOTE_STYLE)
    fig.tight_layout(**(layout or {}))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt or path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    pyplot().close(fig)
    return path
