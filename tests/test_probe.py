"""The speed probe (gptperf.measure.probe): what it measures, when it says the machine moved,
and where calibrate and validate use it."""

from __future__ import annotations

import datetime as dt

import pytest
import torch

from gptperf.errors import UserError
from gptperf.measure import probe as pr
from gptperf.measure.probe import SpeedProbe, speed_note, take_probe
from gptperf.perfmodel.calibration import Calibration
from gptperf.validate.results import CalibrationInfo, ValidationResult

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
THEN = SpeedProbe(host_s=1e-6, matmul_s=1e-3, copy_s=2e-3)


def test_probe_measures_positive_times_and_a_bigger_matmul_takes_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    small = take_probe(cpu, budget_s=0.02)
    assert all(0 < v < 0.5 for v in small.to_dict().values())
    monkeypatch.setitem(pr.SIZES, "cpu", (512, 8 * 2**20))  # 8x the matmul's work
    assert take_probe(cpu, budget_s=0.02).matmul_s > small.matmul_s
    assert SpeedProbe.from_dict(small.to_dict()) == small


def test_a_cpu_probe_times_a_parallel_op_and_older_probes_read_without_it() -> None:
    probe = take_probe(torch.device("cpu"), budget_s=0.02)
    assert probe.fork_s is not None and 0 < probe.fork_s < 0.01
    assert SpeedProbe.from_dict(probe.to_dict()) == probe
    old = SpeedProbe.from_dict(THEN.to_dict())  # a calibration's probe from before the part
    assert old.fork_s is None and "fork_s" not in old.to_dict()
    # only the parts both probes took are compared
    assert probe.slowdown(old).keys() == {"host_s", "matmul_s", "copy_s"}
    slow = SpeedProbe(1e-6, 1e-3, 2e-3, fork_s=6e-6)
    assert slow.slowdown(SpeedProbe(1e-6, 1e-3, 2e-3, fork_s=4e-6))["fork_s"] == pytest.approx(1.5)
    note = speed_note(slow.slowdown(SpeedProbe(1e-6, 1e-3, 2e-3, fork_s=4e-6)), "calibration")
    assert note is not None and "parallel CPU ops 1.50× slower" in note and "host ops" not in note


def test_probe_documents_are_checked() -> None:
    with pytest.raises(UserError, match="host_s, matmul_s, copy_s"):
        SpeedProbe.from_dict({"host_s": 1e-6, "matmul_s": 1e-3})
    with pytest.raises(UserError, match="positive"):
        SpeedProbe.from_dict({"host_s": 1e-6, "matmul_s": 0.0, "copy_s": 1e-3})
    with pytest.raises(UserError, match="positive"):
        SpeedProbe.from_dict({"host_s": 1e-6, "matmul_s": 1e-3, "copy_s": 1e-3, "fork_s": -1.0})


def test_speed_note_names_each_part_beyond_the_tolerance() -> None:
    now = SpeedProbe(host_s=1.8e-6, matmul_s=1.1e-3, copy_s=1e-3)
    assert now.slowdown(THEN) == pytest.approx({"host_s": 1.8, "matmul_s": 1.1, "copy_s": 0.5})
    note = speed_note(now.slowdown(THEN), "calibration")
    assert note is not None and "host ops 1.80× slower" in note and "the copy 2.00× faster" in note
    assert "the matmul" not in note and "than at calibration" in note
    assert speed_note(SpeedProbe(1.14e-6, 0.87e-3, 2.2e-3).slowdown(THEN), "calibration") is None  # all within 25%


def _calibration(probes: dict) -> Calibration:
    created = dt.datetime.now(dt.timezone.utc).isoformat()
    return Calibration(device_name="Test CPU", device_type="cpu", torch_version=torch.__version__,
                       created_at=created, seconds=1.0, probes=probes)


def test_calibration_keeps_its_probes_and_reads_documents_without_them() -> None:
    cal = _calibration({"start": THEN.to_dict(), "end": THEN.to_dict()})
    assert Calibration.from_dict(cal.to_dict()) == cal
    old = cal.to_dict()
    del old["probes"]
    assert Calibration.from_dict(old).probes == {}
    broken = cal.to_dict()
    broken["probes"] = {"end": {"host_s": "fast"}}
    with pytest.raises(UserError, match="calibration document is broken"):
        Calibration.from_dict(broken)


def test_validation_compares_the_machine_with_its_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.validate import run

    cal = _calibration({"start": THEN.to_dict(), "end": THEN.to_dict()})
    monkeypatch.setattr(run, "take_probe", lambda device: SpeedProbe(3e-6, 1e-3, 2e-3))
    result = ValidationResult("cpu", "Test CPU", True, CalibrationInfo.of(cal))
    now = run.compare_speed(cal, torch.device("cpu"), result)
    assert now.host_s == 3e-6
    assert result.speed_vs_calibration == pytest.approx({"host_s": 3.0, "matmul_s": 1.0, "copy_s": 1.0})
    result.speed_drift = {"host_s": 1 / 1.5, "matmul_s": 1.1}  # at its end over its start
    notes = run.speed_notes([result])
    assert len(notes) == 2 and "host ops 3.00× slower than at calibration" in notes[0]
    assert notes[0].endswith("`gptperf calibrate --force` measures it again")
    assert "host ops 1.50× faster than at validation's start" in notes[1] and "matmul" not in notes[1]
    back = ValidationResult.from_dict(result.to_dict())
    assert (back.speed_vs_calibration, back.speed_drift) == (result.speed_vs_calibration, result.speed_drift)
    # a calibration whose end probe caught a spell (host ops 3x): the machine as at its start is
    # as calibrated
    spell = _calibration({"start": THEN.to_dict(), "end": SpeedProbe(9e-6, 1e-3, 2e-3).to_dict()})
    monkeypatch.setattr(run, "take_probe", lambda device: SpeedProbe(1e-6, 1e-3, 2e-3))
    calm = ValidationResult("cpu", "Test CPU", True, CalibrationInfo.of(spell))
    run.compare_speed(spell, torch.device("cpu"), calm)
    assert calm.speed_vs_calibration["host_s"] == pytest.approx(1.0)  # not 1/9, against its end
    assert run.speed_notes([calm]) == []
    bare = ValidationResult("cpu", "Test CPU", True, CalibrationInfo.of(cal))
    run.compare_speed(_calibration({}), torch.device("cpu"), bare)  # an older calibration: nothing to say
    assert bare.speed_vs_calibration == {} and run.speed_notes([bare]) == []


def test_speed_range_note_gives_each_parts_range_each_way_and_its_cases() -> None:
    from gptperf.measure.probe import speed_range_note

    slowdowns = [{"host_s": 1.8, "matmul_s": 1.0}, {"host_s": 1.72, "copy_s": 1.1},
                 {"host_s": 0.5, "matmul_s": 0.7}, {}]
    note = speed_range_note(slowdowns, "calibration")
    assert note.startswith("this machine ran host ops 1.72–1.80× slower in 2 and 2.00× faster in 1 "
                           "of 4 cases, the matmul 1.43× faster in 1 of 4 cases than at calibration "
                           "(speed probe): predictions miss")
    assert speed_range_note([{"host_s": 1.2}, {"copy_s": 0.9}, {}], "calibration") is None  # within 25%


def test_host_speed_is_the_host_models_step_now_over_then(monkeypatch: pytest.MonkeyPatch) -> None:
    cal = _calibration({"host": {"step_s": 4e-4, "train_step_s": 4e-3, "train_fwd_s": 1e-3}})
    now = {"decode": (6e-4, {}), "train": (2e-3, {"fwd": 3e-3, "bwd": 1e-3})}
    monkeypatch.setattr(pr, "host_phase_step_s", lambda device, budget_s=pr.HOST_WINDOW_S, probe="decode": now[probe])
    assert pr.host_speed(cal, torch.device("cpu")) == pytest.approx(1.5)
    assert pr.host_speed(cal, torch.device("cpu"), probe="train") == pytest.approx(0.5)
    # one probe gives the phases as well: each over its own unit (bwd has none: the step's)
    assert pr.host_speeds(cal, torch.device("cpu"), probe="train") == (pytest.approx(0.5),
                                                                      pytest.approx({"fwd": 3.0}))
    assert pr.host_speeds(cal, torch.device("cpu")) == (pytest.approx(1.5), None)
    # a calibration from before the step probe: its host costs are used as they are
    assert pr.host_speed(_calibration({"host": THEN.to_dict()}), torch.device("cpu")) is None
    assert pr.host_speed(_calibration({}), torch.device("cpu")) is None
    # ... and one from before the train probe has its train costs in the decode step's unit
    old = _calibration({"host": {"step_s": 4e-4}})
    assert pr.host_speed(old, torch.device("cpu"), probe="train") is None
    assert [pr.probe_for(c, k) for c in (cal, old) for k in ("train", "decode_nocache")] == [
        "train", "decode", "decode", "decode"]
    with pytest.raises(UserError, match="unknown host probe 'prefill'; valid: decode, train"):
        pr.host_unit(cal, "prefill")


def test_host_step_is_timed_in_runs_of_steps_and_keeps_the_matmul_precision() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1e-3  # every reading 1 ms after the one before: the clock is read after each phase
        return now[0]

    tf32 = torch.backends.cuda.matmul.allow_tf32
    assert pr.host_step_s("cpu", budget_s=0.0, clock=clock, warmup_s=0.0) == pytest.approx(1e-3)
    step, phases = pr.host_phase_step_s("cpu", budget_s=0.0, clock=clock, warmup_s=0.0, probe="train")
    assert step == pytest.approx(3e-3) and phases == pytest.approx({"fwd": 1e-3, "bwd": 1e-3, "opt": 1e-3})
    assert torch.backends.cuda.matmul.allow_tf32 == tf32
    real = pr.host_step_s("cpu", budget_s=0.02, warmup_s=0.01)
    assert 1e-6 < real < 0.05  # a one-block GPT's decode step: microseconds to milliseconds
    # its train step (forward, backward, AdamW) is many more ops than one decode step
    assert pr.host_step_s("cpu", budget_s=0.02, warmup_s=0.01, probe="train") > 1.5 * real


def test_host_op_time_is_measured_on_the_device_asked_for() -> None:
    assert 0 < pr.host_op_s("cpu", budget_s=0.02) < 1e-3  # seconds per small op


def test_host_step_warms_the_host_up_before_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    calls: list[int] = []
    monkeypatch.setattr(pr, "host_model_phases", lambda device, probe: (
        ("decode", lambda: (calls.append(1), time.sleep(1e-3))),))
    now = [0.0]

    def clock() -> float:
        now[0] += 1e-3
        return now[0]

    pr.host_step_s("cpu", budget_s=0.0, clock=clock, warmup_s=0.02)
    timed = pr.MIN_REPEATS * pr.STEP_RUN["decode"]
    assert len(calls) - timed >= 10  # 20 ms of 1 ms steps ran untimed first


def test_host_sampler_samples_between_steps_once_its_interval_has_passed() -> None:
    now = [0.0]
    readings: list[float] = []

    def clock() -> float:
        readings.append(now[0])
        return now[0]

    sampler = pr.HostSampler("cpu", every_s=0.05, clock=clock)
    assert sampler.step_s() is None and sampler.speed(_calibration({"host": {"step_s": 1e-3}})) is None
    for t in (0.0, 0.02, 0.049):  # the interval starts at the first call and has not passed yet
        now[0] = t
        sampler()
    assert sampler.samples == []
    now[0] = 0.06
    sampler()  # one sample: the clock stands still, so STEP_RUN steps took 0 s
    assert sampler.samples == [0.0] and sampler.after_step == [4]  # after the 4th step
    now[0] = 0.08
    sampler()  # 0.02 s after the sample: not yet
    assert len(sampler.samples) == 1 and sampler.steps == 5
    real = pr.HostSampler("cpu", every_s=0.0)
    for _ in range(3):
        real()
    assert len(real.samples) == 3 and all(1e-6 < s < 0.05 for s in real.samples)
    cal = _calibration({"host": {"step_s": real.step_s() / 2}})
    assert real.speed(cal) == pytest.approx(2.0)
    assert real.speed(_calibration({})) is None  # no unit to compare with
    train = pr.HostSampler("cpu", every_s=0.0, probe="train")  # the train step's phases, timed
    train()
    assert len(train.samples) == 1 and train.samples[0] > real.step_s()
    cal = _calibration({"host": {"step_s": 1.0, "train_step_s": train.step_s() * 4}})
    assert train.speed(cal) == pytest.approx(0.25)  # against the train probe's unit, not decode's
    phases = train.phase_s()  # each phase of the train step timed apart, within the whole
    assert set(phases) == {"fwd", "bwd", "opt"} and all(v > 0 for v in phases.values())
    # one sample: its phases tile its step; the decode step has one phase
    assert sum(phases.values()) == pytest.approx(train.step_s()) and real.phase_s() == {}


def test_a_sample_taken_at_once_follows_the_last_step_and_restarts_the_interval() -> None:
    now = [0.0]
    sampler = pr.HostSampler("cpu", every_s=0.05, clock=lambda: now[0])
    for t in (0.0, 0.01):
        now[0] = t
        sampler()
    sampler.sample()  # a measurement too brief for the interval: one sample when it ends
    assert sampler.samples == [0.0] and sampler.after_step == [2]
    now[0] = 0.05
    sampler()  # 0.04 s after that sample: not yet
    assert len(sampler.samples) == 1


def test_a_cpu_sampler_times_parallel_adds_with_each_sample_against_the_calibrations_probe() -> None:
    sampler = pr.HostSampler("cpu", every_s=0.0)
    assert sampler.fork_s() is None
    for _ in range(3):
        sampler()
    assert len(sampler.fork_samples) == 3 and all(0 < s < 0.01 for s in sampler.fork_samples)
    fork = sampler.fork_s()
    end = {**THEN.to_dict(), "fork_s": fork / 1.5}
    assert pr.fork_speed(_calibration({"start": THEN.to_dict(), "end": end}), fork) == pytest.approx(1.5)
    # no part to compare with (a calibration's probe from before it), or no sample
    assert pr.fork_speed(_calibration({"end": THEN.to_dict()}), fork) is None
    assert pr.fork_speed(_calibration({"end": end}), None) is None
    # the add's time around the kernels kept (`calibrate_kernels`) before the last speed probe's
    kept = _calibration({"end": end, "fork": {"unit_s": fork / 2}})
    assert pr.fork_speed(kept, fork) == pytest.approx(2.0)


def test_phase_speeds_are_each_phase_over_its_own_unit() -> None:
    cal = _calibration({"host": {"step_s": 1e-3, "train_step_s": 4e-3, "train_fwd_s": 1e-3,
                                 "train_bwd_s": 2e-3, "train_opt_s": 1e-3}})
    assert pr.phase_units(cal, "train") == {"fwd": 1e-3, "bwd": 2e-3, "opt": 1e-3}
    assert pr.phase_units(cal, "decode") == {}
    assert pr.phase_speeds_over(cal, {"fwd": 3e-3, "bwd": 2e-3}, "train") == pytest.approx(
        {"fwd": 3.0, "bwd": 1.0})  # a phase without a sample is left to the whole step's speed
    assert pr.phase_speeds_over(cal, {}, "train") is None
    old = _calibration({"host": {"step_s": 1e-3, "train_step_s": 4e-3}})  # before phases were kept
    assert pr.phase_speeds_over(old, {"fwd": 3e-3}, "train") is None
    assert pr.phase_unit_key("train", "fwd") == "train_fwd_s"


def test_time_phases_runs_the_hook_after_each_timed_step_outside_its_time() -> None:
    from gptperf.measure.timer import time_phases

    now = [0.0]
    hooked: list[int] = []

    def step() -> None:
        now[0] += 1.0

    def hook() -> None:  # 5 s of sampling after each step, never in a step's time
        hooked.append(1)
        now[0] += 5.0

    timing = time_phases([("fwd", step)], warmup=2, repeats=3, clock=lambda: now[0],
                         between_steps=hook)
    assert len(hooked) == 3  # the timed steps only, not the warm-up
    assert timing.total.median == pytest.approx(1.0)
