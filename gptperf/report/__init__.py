"""`gptperf report`: the whole lecture on the device in hand, as one self-contained HTML page.

    from gptperf.report import ReportOptions, build_report
    result = build_report(ReportOptions(out="gptperf-report", quick=True))
    result.ok, result.out / "index.html"

report.json is `ReportData.to_dict()`, and reads back into the same typed results (each stage's,
with the producers' own inside: BenchResult, ProfileResult, InferenceResult, ScalingStudy, ...):

    import json
    from gptperf.report import ReportData
    report = ReportData.from_dict(json.load(open("gptperf-report/report.json")))
    report.bench.results["train"].step_time_s, report.scaling.studies["strong"].points[-1].speedup
    report.calibration.info.label, report.validation.result.stats.median  # how good the prediction is
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
from gptperf.report.context import ReportData, Stage, StageProgress, StageRecord

__all__ = ["ReportData", "ReportInterrupted", "ReportOptions", "ReportProgress", "ReportResult",
           "Stage", "StageProgress", "StageRecord", "build_report", "resolve_settings"]
