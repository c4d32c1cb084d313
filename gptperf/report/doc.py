"""What every section of the report page shares: the two predictions' labels and sources (a
bench's own entries of each are its `BenchResult.roofline` and `.calibrated`), the typed results
with their helpers (`Doc`), a column header with its source, a fraction as a percentage."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.perfmodel.ops import ROOFLINE_DEFINITION
from gptperf.report.html import Html, esc, picture, section, source_chip, tag

if TYPE_CHECKING:
    from gptperf.report.context import ReportData


# The two predictions, each always labelled: what the hardware allows, and what this
# machine will take. A source starting "roofline" or "calibrated" gets that chip (html.source_chip).
ROOFLINE = "roofline bound"
CALIBRATED = "calibrated"
ROOFLINE_SOURCE = "roofline bound: what the hardware allows (performance model)"
CALIBRATED_SOURCE = "calibrated expected time: what this machine will take"
LEGEND = ("Two predictions, each labelled: the roofline bound is what the hardware allows "
          f"({ROOFLINE_DEFINITION}, on the ceilings; fused kernels with a smaller fixed cost can "
          "run under it); the calibrated time is what this machine will take (kernel time "
          "curves, host costs and compiled kernels measured on it by gptperf calibrate).")


class Doc:
    """The typed results of a report (`ReportData`) with helpers: a stage's failure (and the
    section that says it), a picture, where numbers were measured."""

    def __init__(self, report: ReportData, folder: Path) -> None:
        self.report = report
        self.folder = folder
        self.settings = report.settings
        self.env = report.environment
        self.measured = f"measured on {self.settings.device_name}"
        cal = report.calibration
        label = cal.info.label if cal is not None and cal.info is not None else None
        self.calibrated = f"{CALIBRATED_SOURCE}, {label}" if label else CALIBRATED_SOURCE

    def failure(self, *names: str) -> str | None:
        """One line for the first of `names` that did not give its numbers, else None."""
        for name in names:
            rec = self.report.records.get(name)
            if rec is None:
                return f"stage '{name}' did not run in this report"
            if rec.status == "failed":
                return f"stage '{name}' failed: {rec.error}"
            if rec.status != "ok":
                return f"stage '{name}' did not finish ({rec.status})"
        return None

    def missing(self, stage: str, id_: str, title: str, empty: str = "no data") -> Html:
        """Section `id_` for a stage that gave nothing: why (`failure`), else `empty`."""
        return section(id_, title, failed=self.failure(stage) or empty)

    def picture(self, name: str, alt: str, caption: Any = None) -> Html:
        rel = self.report.pictures.get(name)
        if not rel or not (self.folder / rel).is_file():
            return Html("")
        return picture(self.folder / rel, alt, caption=caption, id_=f"pic-{name}")


def th(label: str, source: str | None = None) -> Html:
    """A column header with the source of its numbers under it."""
    return Html(esc(label) + (tag("br") + source_chip(source, short=True) if source else ""))


def pct(x: Any) -> Any:
    """A fraction as a percentage (None and NaN stay "—")."""
    return 100 * x if isinstance(x, (int, float)) and math.isfinite(x) else None
