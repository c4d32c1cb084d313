"""The optimizer's overlap: the share of its host time after its kernels start, by hand, and
measured on a GPU."""

from __future__ import annotations

import pytest
import torch

from gptperf.errors import UserError
from gptperf.measure import optimizer_overlap as ov


def test_the_share_is_the_host_time_left_when_the_kernels_began() -> None:
    # kernels of 2 s ending 3 s after a 2 s host phase began: they began at 1 s, half the host after
    assert ov.overlap_share(2.0, 3.0, 2.0) == pytest.approx(0.5)
    # kernels that start only after the host is done: nothing of the host ran beside them
    assert ov.overlap_share(2.0, 4.0, 2.0) == 0.0
    assert ov.overlap_share(2.0, 5.0, 2.0) == 0.0  # a slower end than that is noise: clamped
    # kernels hidden under the host (the phase ends with it): the share is at least 0.9
    assert ov.overlap_share(2.0, 2.0, 1.8) == pytest.approx(0.9)
    assert ov.overlap_share(1.0, 1.0, 3.0) == 1.0
    with pytest.raises(UserError, match="host time must be positive"):
        ov.overlap_share(0.0, 1.0, 1.0)


def test_the_overlap_model_is_wide_and_not_a_validation_config() -> None:
    from gptperf.validate.sweep import cases

    config = ov.overlap_config()
    assert config.n_layer == 4 and config.n_embd == 2048
    assert config.name not in {c.config.name for c in cases("cuda")}


def test_a_cpu_is_refused() -> None:
    with pytest.raises(UserError, match="CUDA GPU, not 'cpu'"):
        ov.measure_optimizer_overlap(torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_overlap_is_measured_on_a_gpu() -> None:
    out = ov.measure_optimizer_overlap(torch.device("cuda"), rounds=3)
    assert 0.0 <= out["share"] <= 1.0
    assert out["end_s"] >= out["host_s"] > 0 and out["device_s"] > 0
    assert out["tensors"] == 4 * 12 + 4 and out["parameters"] > 200e6
    assert out["share"] == pytest.approx(ov.overlap_share(out["host_s"], out["end_s"], out["device_s"]))
