"""The busy-queue experiment's composition (`benchmarks/validate_busy_queue.py`): at b = 1 it is
the prediction's own `queue_time`; below 1, host work runs at 1/b speed only while the device still
has earlier work, by hand-computed cases."""

from __future__ import annotations

import pytest
from benchmark_scripts import load

from gptperf.perfmodel.expected import queue_time

busy_queue = load("validate_busy_queue")


@pytest.mark.parametrize("kernels", [[(1.0, 2.0), (4.0, 1.0)], [(3.0, 1.0), (1.0, 5.0), (2.0, 0.5)], []])
def test_no_discount_is_the_predictions_queue(kernels: list[tuple[float, float]]) -> None:
    assert busy_queue.busy_queue_time(1.0)(kernels) == pytest.approx(queue_time(kernels))


def test_host_work_is_cheaper_only_while_the_device_is_busy() -> None:
    qt = busy_queue.busy_queue_time(0.5)
    # op 2 starts issuing at 1 with the device busy until 3: its 4 s of host work takes 2 s
    assert qt([(1.0, 2.0), (4.0, 1.0)]) == pytest.approx(4.0)  # plain: 6
    # 6 s of host work: 4 s of it done in the 2 busy seconds, the other 2 at full cost
    assert qt([(1.0, 2.0), (6.0, 1.0)]) == pytest.approx(6.0)  # plain: 8
    # op 2's first second overlaps op 1's kernel: 2 s of its work done there, none left over
    assert qt([(2.0, 1.0), (2.0, 1.0)]) == pytest.approx(4.0)  # plain: 5
    # no device work: the device is never busy, nothing changes
    assert qt([(2.0, 0.0), (3.0, 0.0)]) == pytest.approx(5.0)
