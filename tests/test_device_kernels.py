"""The device kernels of a profile: only the device's own events, no mirrored ranges, in launch order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from gptperf.measure.device_kernels import Kernel, device_kernels, kernels_of

CUDA, CPU = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU


@dataclass
class Span:
    start: float
    end: float

    def elapsed_us(self) -> float:
        return self.end - self.start


@dataclass
class Event:
    name: str
    device_type: torch.autograd.DeviceType
    time_range: Span
    is_user_annotation: bool = False


def test_device_kernels_keeps_device_events_in_start_order_without_ranges():
    events = [Event("gemm", CUDA, Span(30.0, 45.0)),
              Event("aten::mm", CPU, Span(1.0, 2.0)),
              Event("step", CPU, Span(0.0, 90.0), is_user_annotation=True),
              Event("step", CUDA, Span(10.0, 80.0)),  # the range mirrored onto the GPU timeline
              Event("ln", CUDA, Span(12.0, 14.5))]
    assert device_kernels(events) == [Kernel("ln", 12.0, 2.5), Kernel("gemm", 30.0, 15.0)]
    assert device_kernels(events)[1].end_us == 45.0


def test_device_kernels_of_a_profile_without_device_events_is_empty():
    assert device_kernels([Event("aten::add", CPU, Span(0.0, 1.0))]) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernels_of_counts_one_call_and_nothing_queued_before():
    x = torch.randn(256, 256, device="cuda")
    for _ in range(50):
        x = x * 1.0001  # queued before the profile: must not be counted
    kernels = kernels_of(lambda: (x.add_(1), x.mul_(2)))
    assert [k.duration_us > 0 for k in kernels] == [True, True]
    assert kernels[0].end_us <= kernels[1].start_us + 1.0  # in order, one stream
