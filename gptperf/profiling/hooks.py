"""The profiler's provenance and attribution, handed to the calibration's compiled recordings:
`gptperf.measure` may not import `gptperf.profiling` (which builds on it), so the commands that
calibrate pass these in."""

from __future__ import annotations

from typing import Any

from gptperf.profiling.provenance import inductor_provenance
from gptperf.profiling.trace import attribute, load_trace


def profiler_hooks() -> Any:  # -> gptperf.measure.calibrate_compiled.ProfilerHooks
    """inductor provenance, trace attribution and trace loading for the compiled recordings."""
    from gptperf.measure.calibrate_compiled import ProfilerHooks  # deferred: loads torch

    return ProfilerHooks(inductor_provenance, attribute, load_trace)
