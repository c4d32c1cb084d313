"""Would charging cheaper launches behind a busy queue help? Re-predicts stored validate runs with
the eager composition (`expected.queue_time`) changed so that an op's host time runs at `b` times
its calibrated cost while the device is still busy with earlier ops, for several `b`, each case
scored as validate scores it (`ValidationPoint.ratio_on`). Runs anywhere (no device needed).

    python benchmarks/validate_busy_queue.py RUN.json [RUN.json ...]

Each RUN.json (validate.json or random.json) has the calibration.json it was scored against
beside it. `benchmarks/gpu_deep_train_phases.py` measured the host model's parts behind a busy
queue at 0.69-0.90x their idle-queue time (H100, 2026-12-07). Prints the median, p90 and max
|m/p - 1| of each run under each `b`, then the cases that moved.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import gptperf.perfmodel.expected as expected_module
from gptperf.perfmodel.calibration import Calibration
from gptperf.validate.results import ValidationPoint
from gptperf.validate.stats import error_stats

DISCOUNTS = (1.0, 0.9, 0.85, 0.8, 0.7)
MOVED = 0.02  # a case whose ratio moves this much at b = 0.8 is listed


def busy_queue_time(b: float) -> Callable[[Iterable[tuple[float, float]]], float]:
    """`queue_time` with host time at `b`x while the device runs earlier work."""
    def queue_time(kernels: Iterable[tuple[float, float]]) -> float:
        issued = end = 0.0
        for h, d in kernels:
            if end > issued:
                busy = end - issued  # the device's work left when this op's issue starts
                h = h * b if h * b <= busy else busy + (h - busy / b)
            issued += h
            end = max(issued, end) + d
        return max(end, issued)
    return queue_time


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    plain = expected_module.queue_time
    for path in map(Path, paths):
        cal = Calibration.from_dict(json.loads((path.parent / "calibration.json").read_text()))
        points = [ValidationPoint.from_dict(p) for p in json.loads(path.read_text())["points"]]
        ratios: dict[float, list[float | None]] = {}
        try:
            for b in DISCOUNTS:
                expected_module.queue_time = busy_queue_time(b)
                ratios[b] = [p.ratio_on(cal) for p in points]
        finally:
            expected_module.queue_time = plain
        cells = []
        for b, rs in ratios.items():
            s = error_stats(r for r in rs if r is not None)
            cells.append(f"b={b:g}: {s.median:.1%} / {s.p90:.1%} / {s.max:.1%}")
        print(f"{path} (median / p90 / max): " + " | ".join(cells))
        for p, r1, r8 in zip(points, ratios[1.0], ratios[0.8], strict=True):
            if r1 is not None and r8 is not None and abs(r8 - r1) > MOVED:
                print(f"    {p.case:<55} {r1:.3f} -> {r8:.3f} at b=0.8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
