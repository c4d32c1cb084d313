"""The launch gap (gptperf.measure.launch_gap) measured on a GPU; how the prediction charges it is
tested in tests/test_expected.py."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_launch_gap_is_measured_with_the_host_ahead() -> None:
    from gptperf.measure.launch_gap import measure_launch_gap

    result = measure_launch_gap(torch.device("cuda"))
    assert result["kernels"], result["notes"]  # the sleep kept the host ahead for some kind
    for kind, k in result["kernels"].items():
        assert 0 < k["graph_s"] < 1e-3 and 0 < k["stream_s"] < 1e-3, kind
    # a launch from a stream is not cheaper than one inside a graph (0.5 µs for timer noise)
    assert all(k["stream_s"] > k["graph_s"] - 0.5e-6 for k in result["kernels"].values())
    assert 0 <= result["gap_s"] < 20e-6
