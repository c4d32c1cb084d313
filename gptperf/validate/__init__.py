"""The prediction-error sweep: configurations disjoint from the calibration, measured with the
project's own steps and scored against the calibrated prediction (`gptperf validate`)."""

from __future__ import annotations

from gptperf.validate.results import (
    SCHEMA,
    TARGETS,
    ValidationPoint,
    ValidationResult,
)
from gptperf.validate.stats import ErrorStats, error_stats, time_weighted_error
from gptperf.validate.sweep import ValidationCase, cases

__all__ = ["SCHEMA", "TARGETS", "ErrorStats", "ValidationCase", "ValidationPoint",
           "ValidationResult", "cases", "error_stats", "time_weighted_error", "validate"]


def __getattr__(name: str) -> object:
    # run.py imports the measuring machinery (torch) only when a sweep is asked for.
    if name == "validate":
        from gptperf.validate.run import validate  # deferred: lazy package attribute

        return validate
    raise AttributeError(name)
