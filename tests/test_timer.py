"""The timing harness: warm-up excluded, statistics right, spread flagged, phases apart."""

from __future__ import annotations

import statistics
import time

import pytest

from gptperf.errors import UserError
from gptperf.measure.timer import WIDE_SPREAD, Timing, time_fn, time_phases, time_runner


class FakeClock:
    """A clock that only moves when a fake workload says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


def test_time_fn_excludes_warmup_and_gets_statistics_right() -> None:
    clock = FakeClock()
    durations = iter([5.0, 7.0, 0.010, 0.012, 0.011, 0.013, 0.009])  # two slow warm-ups first
    syncs = []
    timing = time_fn(lambda: clock.advance(next(durations)), warmup=2, repeats=5,
                     clock=clock, sync=lambda: syncs.append(1))
    expected = [0.010, 0.012, 0.011, 0.013, 0.009]
    assert timing.samples == pytest.approx(expected)
    assert timing.repeats == 5 and timing.warmup == 2 and timing.clock == "custom"
    assert timing.median == pytest.approx(0.011)
    assert timing.mean == pytest.approx(statistics.fmean(expected))
    assert timing.std == pytest.approx(statistics.stdev(expected))
    assert timing.min == pytest.approx(0.009) and timing.max == pytest.approx(0.013)
    assert timing.rel_spread == pytest.approx(statistics.stdev(expected) / 0.011)
    assert timing.wide_spread is True  # std/median is 14% here
    assert len(syncs) >= 5  # the device is synchronised before every closing reading
    d = timing.to_dict()
    for key in ("median_s", "mean_s", "std_s", "min_s", "max_s", "rel_spread", "wide_spread",
                "samples_s", "repeats", "warmup"):
        assert key in d
    assert d["samples_s"] == pytest.approx(expected)


def test_wide_spread_threshold() -> None:
    steady = Timing([1.0, 1.01, 0.99, 1.0])
    assert not steady.wide_spread and steady.rel_spread < WIDE_SPREAD
    noisy = Timing([1.0, 1.0, 1.0, 2.0])
    assert noisy.wide_spread
    assert Timing([0.5]).std == 0.0 and not Timing([0.5]).wide_spread


def test_time_phases_fake_clock_per_phase_and_total() -> None:
    clock = FakeClock()
    order: list[str] = []
    phases = [
        ("fwd", lambda: (order.append("fwd"), clock.advance(0.1))),
        ("bwd", lambda: (order.append("bwd"), clock.advance(0.2))),
        ("opt", lambda: (order.append("opt"), clock.advance(0.05))),
    ]
    result = time_phases(phases, warmup=1, repeats=3, clock=clock, sync=lambda: None,
                         before_timed=lambda: order.append("reset"))
    assert order[:4] == ["fwd", "bwd", "opt", "reset"]  # the hook runs after warm-up only
    assert order.count("reset") == 1 and order.count("fwd") == 4
    assert result.phases["fwd"].samples == pytest.approx([0.1] * 3)
    assert result.phases["bwd"].median == pytest.approx(0.2)
    assert result.phases["opt"].median == pytest.approx(0.05)
    assert result.total.samples == pytest.approx([0.35] * 3)
    assert set(result.to_dict()["phases"]) == {"fwd", "bwd", "opt"}


def test_a_repeated_phase_is_summed_per_step() -> None:
    """Gradient accumulation runs forward and backward once per micro-batch: each phase's time
    per step is the sum of its runs, and the phases still tile the step."""
    clock = FakeClock()
    phases = [("fwd", lambda: clock.advance(0.1)), ("bwd", lambda: clock.advance(0.2))] * 2
    phases.append(("opt", lambda: clock.advance(0.05)))
    result = time_phases(phases, warmup=1, repeats=2, clock=clock, sync=lambda: None)
    assert list(result.phases) == ["fwd", "bwd", "opt"]
    assert result.phases["fwd"].samples == pytest.approx([0.2, 0.2])
    assert result.phases["bwd"].samples == pytest.approx([0.4, 0.4])
    assert result.total.samples == pytest.approx([0.65, 0.65])


def test_time_phases_on_cpu_with_perf_counter() -> None:
    phases = [("a", lambda: time.sleep(0.002)), ("b", lambda: time.sleep(0.004))]
    result = time_phases(phases, warmup=1, repeats=3, device="cpu")
    assert result.total.clock == "perf_counter"
    assert result.phases["a"].min >= 0.002 and result.phases["b"].min >= 0.004
    for i in range(3):  # the phases tile the step exactly
        parts = result.phases["a"].samples[i] + result.phases["b"].samples[i]
        assert result.total.samples[i] == pytest.approx(parts)


class FakeGPU:
    """A host and a device timeline (s): a launch costs the host `host_s`, and its kernel starts
    once the device is free and the launch has reached it; an event is stamped the same way."""

    def __init__(self, host_s: float, device_s: float) -> None:
        self.host_s, self.device_s = host_s, device_s
        self.host = self.device = 0.0
        self.syncs = 0

    def launch(self) -> None:
        self.host += self.host_s
        self.device = max(self.device, self.host) + self.device_s

    def sync(self) -> None:
        self.syncs += 1
        self.host = max(self.host, self.device)

    def event_class(self) -> type:
        gpu = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.at = 0.0

            def record(self) -> None:
                gpu.device = self.at = max(gpu.device, gpu.host)

            def elapsed_time(self, end: Event) -> float:  # milliseconds, as torch's
                return (end.at - self.at) * 1e3

        return Event


@pytest.mark.parametrize("in_a_run", [False, True])
def test_a_run_of_steps_leaves_the_hosts_lead_out(monkeypatch, in_a_run: bool) -> None:
    # a step the host queues in 20 µs and the device runs in 100 µs: timed one at a time after a
    # synchronisation each step waits for the host's launch (120 µs); in a run the launches queue
    # behind the device and each step is its device time (100 µs), with one synchronisation
    torch = pytest.importorskip("torch")
    gpu = FakeGPU(host_s=20e-6, device_s=100e-6)
    monkeypatch.setattr(torch.cuda, "Event", gpu.event_class())
    monkeypatch.setattr("gptperf.measure.timer._is_cuda", lambda device: True)
    result = time_phases([("decode", gpu.launch)], warmup=2, repeats=5, device="cuda",
                         sync=gpu.sync, in_a_run=in_a_run)
    # (the run's first step follows the warm-up's synchronisation, so it waits for the host too)
    steps = [120e-6] + [100e-6] * 4 if in_a_run else [120e-6] * 5
    assert result.total.samples == pytest.approx(steps)
    assert result.phases["decode"].samples == pytest.approx(steps)
    assert result.total.median == pytest.approx(100e-6 if in_a_run else 120e-6)
    assert gpu.syncs == (2 if in_a_run else 6)  # after the warm-up, then each step or the last


def test_progress_reports_warmup_and_timed_steps() -> None:
    seen: list[tuple[str, int, int]] = []
    time_fn(lambda: None, warmup=2, repeats=3, progress=lambda *a: seen.append(a))
    assert seen == [("warm-up", 0, 2), ("timed", 0, 3), ("warm-up", 1, 2), ("warm-up", 2, 2),
                    ("timed", 1, 3), ("timed", 2, 3), ("timed", 3, 3)]


@pytest.mark.parametrize("kwargs", [
    {"warmup": 0, "repeats": 3, "compiled": True},
    {"warmup": 1, "repeats": 0},
    {"warmup": -1, "repeats": 3},
])
def test_bad_counts_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(UserError):
        time_fn(lambda: None, **kwargs)
    with pytest.raises(UserError):
        time_phases([("fwd", lambda: None)], **kwargs)


def test_a_compiled_runner_needs_warmup() -> None:
    from types import SimpleNamespace

    compiled = SimpleNamespace(model=SimpleNamespace(_orig_mod=object()), device="cpu",
                               phases=[("fwd", lambda: None)])
    with pytest.raises(UserError, match="compil"):
        time_runner(compiled, warmup=0, repeats=2)
    assert time_runner(compiled, warmup=1, repeats=2).total.repeats == 2
