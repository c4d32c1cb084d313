"""`gptperf report`: the whole lecture on the device in hand, as one self-contained HTML page.

    from gptperf.report import ReportOptions, build_report
    result = build_report(ReportOptions(out="gptperf-report", quick=True))
    result.ok, result.out / "index.html"
"""

from __future__ import annotations

from gptperf.report.build import (
    ReportOptions,
    ReportResult,
    Stage,
    StageProgress,
    build_report,
    print_summary,
    resolve_settings,
)

__all__ = ["ReportOptions", "ReportResult", "Stage", "StageProgress", "build_report",
           "print_summary", "resolve_settings"]
