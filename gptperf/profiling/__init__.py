"""torch.profiler traces of a workload, every kernel attributed to an operation name and phase,
and the performance model's prediction beside each measurement (docs/profiling.md).

    from gptperf.model import preset
    from gptperf.profiling import analyse_trace_file, profile_workload

    r = profile_workload(preset("tiny"), "train", batch=8, seq=256, device="cpu", out_dir="prof")
    r.coverage, r.comparison.components[0], r.paths["roofline"]

    # the trace records what ran: arguments left out take its values, contradicting ones fail
    again = analyse_trace_file("prof/trace.json", out_dir="prof2")

Importing this package does not import torch; `profile_workload` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProfileResult", "profile_workload", "analyse_trace_file", "check_profile_dir",
           "recorded_workload", "attribute", "attribute_file", "load_trace", "compare"]


def __getattr__(name: str) -> Any:
    if name in ("ProfileResult", "profile_workload", "analyse_trace_file"):
        from gptperf.profiling import run  # deferred: lazy package attribute

        return getattr(run, name)
    if name in ("check_profile_dir", "recorded_workload"):
        from gptperf.profiling import recorded  # deferred: lazy package attribute

        return getattr(recorded, name)
    if name in ("attribute", "attribute_file", "load_trace"):
        from gptperf.profiling import trace  # deferred: lazy package attribute

        return getattr(trace, name)
    if name == "compare":
        from gptperf.profiling.compare import compare  # deferred: lazy package attribute

        return compare
    raise AttributeError(name)
