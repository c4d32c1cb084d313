"""Pictures (matplotlib, Agg, imported lazily): the roofline, measured ceilings, profiles, training curves."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from gptperf.atomic import atomic_path
from gptperf.errors import UserError

# the formats a picture's path may end in: matplotlib writes each by the suffix
PLOT_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")

# Each picture names gptperf as its maker in its metadata, so that a later run replaces its own
# pictures but never a user's file of the same name (`is_gptperf_picture`): the metadata key
# matplotlib takes for each format, and what that key's value becomes in the file
CREATOR = "gptperf"
_CREATOR_KEY = {"png": "Software", "svg": "Creator", "pdf": "Creator"}
_CREATOR_MARK = {"png": re.compile(rb"tEXtSoftware\x00gptperf"),
                 "svg": re.compile(rb"<dc:creator>\s*<cc:Agent>\s*<dc:title>gptperf</dc:title>"),
                 "pdf": re.compile(rb"/Creator \(gptperf\)")}
_LARGEST_PICTURE = 64 << 20  # bytes: a larger file is none of ours (ours are well under 1 MB)


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """The path if its suffix is a format we can write, else a one-line UserError."""
    path = Path(path)
    if path.suffix.lstrip(".").lower() not in PLOT_FORMATS:
        raise UserError(f"plot file {str(path)!r} must end in one of: "
                        + ", ".join(f".{f}" for f in PLOT_FORMATS))
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display), imported when a picture is drawn."""
    import matplotlib  # deferred: loads matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib

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
    write_figure(fig, path, fmt or path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    pyplot().close(fig)
    return path


def write_figure(fig: Any, path: Path, fmt: str, *, dpi: float | None = None) -> None:
    """Write `fig` to `path` in `fmt` atomically, gptperf named its maker (in PLOT_FORMATS)."""
    with atomic_path(path) as tmp:
        # another format matplotlib writes (a library caller's .jpg) goes without the mark
        metadata = {_CREATOR_KEY[fmt]: CREATOR} if fmt in _CREATOR_KEY else None
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)


def is_gptperf_picture(path: str | os.PathLike[str]) -> bool:
    """Whether the file at `path` is a picture gptperf wrote (`write_figure`): its format's
    metadata names gptperf. False for anything else, a missing or unreadable file included."""
    mark = _CREATOR_MARK.get(Path(path).suffix.lstrip(".").lower())
    try:
        if mark is None or os.path.getsize(path) > _LARGEST_PICTURE:
            return False
        return mark.search(Path(path).read_bytes()) is not None
    except OSError:
        return False
