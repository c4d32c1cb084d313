"""`gptperf report`: the whole lecture on the device in hand, as one self-contained HTML page.

    from gptperf.report import ReportOptions, build_report
    result = build_report(ReportOptions(out="gptperf-report", quick=True))
    result.ok, result.out / "index.html"
"""

from __future__ import annotations

from gptperf.report.build import (
    ReportInterrupted,
    ReportOptions,
    ReportProgress,
    ReportResult,
    build_report,
    resolve_settings,
)
from gptperf.report.context import Stage, StageProgress, StageRecord

__all__ = ["ReportInterrupted", "ReportOptions", "ReportProgress", "ReportResult", "Stage",
           "StageProgress", "StageRecord", "build_report", "resolve_settings"]
