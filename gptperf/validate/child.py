"""One validation case measured in a fresh process: `python -m gptperf.validate.child` reads the
case (config, workload, plan as JSON; the timed steps, optional) on stdin and writes
{"step_time_s", "plan", "host_step_s", "host_phase_s", "trace", "clock_share", "fork_s"} on
stdout."""

from __future__ import annotations

import json
import sys

from gptperf.hostmem import keep_freed_memory
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.validate.sweep import ValidationCase


def main() -> int:
    keep_freed_memory()  # as the `gptperf` command does: the case is measured as bench runs it
    import torch  # deferred: loads torch

    from gptperf.validate.run import measure_case  # deferred: tests patch it

    doc = json.loads(sys.stdin.read())
    case = ValidationCase(doc["name"], GPTConfig.from_dict(doc["config"]),
                          Workload.from_dict(doc["workload"]), ExecutionPlan.from_dict(doc["plan"]))
    try:
        timing = measure_case(case, torch.device(doc["device"]), doc.get("repeats"),
                              sample_host=doc.get("sample_host"))
    except Exception as err:  # noqa: BLE001 - the parent records it as a skipped case
        sys.stdout.write(json.dumps({"error": f"{type(err).__name__}: {' '.join(str(err).split())}"[:400]}) + "\n")
        return 0
    trace = None if timing.trace is None else timing.trace.to_dict()
    sys.stdout.write(json.dumps({"step_time_s": timing.step_s, "plan": timing.plan.to_dict(),
                                 "host_step_s": timing.host_step_s,
                                 "host_phase_s": timing.host_phase_s, "trace": trace,
                                 "clock_share": timing.clock_share,
                                 "fork_s": timing.fork_s}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
