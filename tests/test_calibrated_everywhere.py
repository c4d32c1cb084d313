"""The two predictions, each labelled, in every command that measures or predicts: the roofline
bound and the calibrated expected time (on a synthetic calibration; the loader
`gptperf.measure.calibrate.calibration_for` is replaced, so no calibration is measured here)."""

from __future__ import annotations

import json
import math

import pytest
from test_expected import flat_calibration

from gptperf.cli import main
from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.perfmodel.expected import expected
from gptperf.plan import ExecutionPlan

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2"]
CFG = preset("tiny", n_layer=1, n_embd=32, n_head=2)
STALE = "the calibration of 'Test GPU' is 40 days old (from 2026-10-01; at most 30 are used); " \
        "run `gptperf calibrate` on this device"


class Loader:
    """What `calibration_for` answers: a Calibration, None (none cached) or a one-line UserError
    (stale, foreign, other torch); the devices it was asked about."""

    def __init__(self) -> None:
        self.calibration = flat_calibration("cpu")
        self.error: str | None = None
        self.asked: list[object] = []

    def __call__(self, device: object, required: bool = False) -> object:
        self.asked.append(device)
        if self.error:
            raise UserError(self.error)
        if self.calibration is None and required:
            raise UserError("no calibration; run `gptperf calibrate`")
        return self.calibration


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Loader:
    """The calibration loader replaced; a private cache, so no measured ceilings are found."""
    import gptperf.measure.calibrate

    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))
    fake = Loader()
    monkeypatch.setattr(gptperf.measure.calibrate, "calibration_for", fake)
    return fake


def _calibrated(doc: dict) -> list[dict]:
    return [p for p in doc["predictions"] if p["source"] == "calibrated"]


# --- bench ---------------------------------------------------------------------------------------


BENCH = ["bench", "train", *SMALL, "--batch", "2", "--seq", "16", "--warmup", "1", "--repeats", "2",
         "--device", "cpu"]


def test_bench_json_has_one_calibrated_entry_beside_the_roofline(loader, cli_json) -> None:
    doc = cli_json(*BENCH)
    from gptperf.measure.bench import host_charge_note

    # the flat calibration has no host probe: its costs are charged as calibrated, and said so
    (entry,) = _calibrated(doc)
    assert entry["host_speed"] is None and entry["step_time_s_as_calibrated"] == entry["step_time_s"]
    assert host_charge_note(entry) is None
    entries = _calibrated(doc)
    assert len(entries) == 1
    e = entries[0]
    assert e["prediction"] == "calibrated expected time"
    assert e["hardware"].startswith("calibrated on Test GPU")
    # predicted for the plan the step ran under, on the calibration handed over
    plan = ExecutionPlan.from_dict(doc["plan"])
    want = expected(CFG, Workload("train", 2, 16, "fp32"), plan, loader.calibration)
    assert e["step_time_s"] == pytest.approx(want.step_time_s)
    assert e["tokens_per_s"] == pytest.approx(32 / want.step_time_s)
    assert e["measured_step_time_s"] == doc["step_time_s"]
    assert e["measured_over_predicted"] == pytest.approx(doc["step_time_s"] / want.step_time_s)
    roofline = [p for p in doc["predictions"] if p is not e]
    assert roofline and all(p["prediction"] == "roofline bound" for p in roofline)
    assert doc["predictions"][0]["prediction"] == "roofline bound"  # the report reads [0]
    assert [str(d) for d in loader.asked] == ["cpu"]


def test_bench_times_the_devices_window_at_the_calibrated_step_time(
        loader, monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.measure import bench

    plan = ExecutionPlan.default("train", "cpu")
    step_s = expected(CFG, Workload("train", 2, 16, "fp32"), plan, loader.calibration).step_time_s
    monkeypatch.setitem(bench.MIN_WINDOW_S, "cpu", 30 * step_s)  # a window of 30 expected steps
    assert bench.run_bench(CFG, "train", 2, 16, "fp32", "cpu", warmup=1).timing.total.repeats == 30
    # a count the user names is kept, and so is the default where no calibration says the time
    assert bench.run_bench(CFG, "train", 2, 16, "fp32", "cpu", warmup=1,
                           repeats=2).timing.total.repeats == 2
    loader.calibration = None
    assert bench.run_bench(CFG, "train", 2, 16, "fp32", "cpu",
                           warmup=1).timing.total.repeats == bench.DEFAULT_REPEATS


def test_window_repeats_spans_the_window_between_the_default_and_the_cap() -> None:
    from gptperf.measure.bench import MAX_TIMED, window_repeats

    assert window_repeats(10, "cuda", 0.01) == 100  # 1 s of 10 ms steps
    assert window_repeats(10, "cuda", 0.25) == 10  # never fewer than asked
    assert window_repeats(10, "cuda", 1e-6) == MAX_TIMED
    assert window_repeats(10, "cuda", None) == 10 and window_repeats(10, "cuda", float("nan")) == 10
    assert window_repeats(10, "cpu", 0.001) == 10  # no window on a CPU


def test_bench_for_validate_leaves_the_calibrated_entry_to_it(loader) -> None:
    from gptperf.measure.bench import run_bench

    kept = run_bench(CFG, "train", 2, 16, "fp32", "cpu", warmup=1, repeats=2)
    left = run_bench(CFG, "train", 2, 16, "fp32", "cpu", warmup=1, repeats=2, calibrated=False)
    assert [p.source for p in kept.predictions].count("calibrated") == 1
    assert kept.calibrated is not None and kept.calibrated.source == "calibrated"
    assert left.calibrated is None and left.roofline == left.predictions and left.predictions
    assert [str(d) for d in loader.asked] == ["cpu"]  # the calibration was not even looked up


def test_bench_with_a_stale_calibration_notes_why_and_still_measures(loader, cli_json) -> None:
    loader.error = STALE
    doc = cli_json(*BENCH)
    assert _calibrated(doc) == [] and doc["predictions"]
    assert any(STALE in n for n in doc["notes"])
    assert doc["step_time_s"] > 0


def test_bench_without_a_calibration_says_what_to_run(loader, cli_json) -> None:
    loader.calibration = None
    doc = cli_json(*BENCH)
    assert _calibrated(doc) == []
    assert any("gptperf calibrate" in n for n in doc["notes"])


def test_bench_with_a_calibration_missing_a_curve_notes_it(loader, cli_json) -> None:
    loader.calibration = flat_calibration("cpu", optimizer={})
    doc = cli_json(*BENCH)
    assert _calibrated(doc) == []
    assert any("no calibrated expected time" in n and "optimizer" in n for n in doc["notes"])


def test_bench_reads_the_calibration_calibrate_saved(monkeypatch, tmp_path, cli_json) -> None:
    """No loader replaced: a calibration saved for this CPU and torch is found and used; one
    40 days old is refused with a note."""
    import datetime as dt

    import torch

    from gptperf.envinfo import device_name
    from gptperf.perfmodel.calibration import save_calibration

    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))
    now = dt.datetime.now(dt.timezone.utc)
    here = dict(device_name=device_name(torch.device("cpu")), torch_version=torch.__version__)
    save_calibration(flat_calibration("cpu", created_at=now.isoformat(), **here))
    entries = _calibrated(cli_json(*BENCH))
    assert len(entries) == 1 and here["device_name"] in entries[0]["hardware"]
    save_calibration(flat_calibration("cpu", created_at=(now - dt.timedelta(days=40)).isoformat(), **here))
    doc = cli_json(*BENCH)
    assert _calibrated(doc) == [] and any("40 days old" in n for n in doc["notes"])


def test_bench_prints_both_predictions_labelled(loader, capsys) -> None:
    assert main(BENCH) == 0
    out = capsys.readouterr().out
    assert "roofline bound" in out and "calibrated expected time" in out
    assert "Test GPU" in out  # the calibration's label names its device
    from gptperf.perfmodel.ops import ROOFLINE_DEFINITION

    assert ROOFLINE_DEFINITION in " ".join(out.split())  # what the bound's figure is made of


# --- model ---------------------------------------------------------------------------------------


MODEL = ["model", *SMALL, "--workload", "train", "--batch", "2", "--seq", "16", "--dtype", "fp32"]


def test_model_calibrated_json_has_the_expected_time(loader, cli_json) -> None:
    doc = cli_json(*MODEL, "--calibrated", "--device", "cpu")
    e = doc["expected"]
    plan = ExecutionPlan.from_dict(doc["plan"])
    assert plan == ExecutionPlan.default("train", "cpu")  # this device's plan for the step
    want = expected(CFG, Workload("train", 2, 16, "fp32"), plan, loader.calibration)
    assert e["source"] == "calibrated" and e["step_time_s"] == pytest.approx(want.step_time_s)
    assert len(e["ops"]) == len(want.ops)
    # the roofline is on this device's hardware (the datasheet CPU: no ceilings cached)
    assert doc["hardware_label"] == "nominal: cpu"
    plain = cli_json(*MODEL)
    assert "expected" not in plain and plain["hardware_label"] == "datasheet: h100-sxm"


def test_model_hardware_measured_is_the_ceilings_of_the_device_named(loader, cli_json, monkeypatch,
                                                                     capsys) -> None:
    """`--hardware measured --device cpu` (with --calibrated, as the report lists its model
    commands, or without) is the CPU's measured ceilings on a machine whose first device is a GPU:
    the device named, not the machine's first."""
    import gptperf.perfmodel.hardware as hardware
    from gptperf.envinfo import cpu_model

    sheet = hardware.get_hardware("cpu")
    hardware.save_measured_hardware(hardware.Hardware(**{**sheet.__dict__, "name": "this-cpu"}), cpu_model())
    monkeypatch.setattr(hardware, "local_device_name", lambda: "NVIDIA H100 80GB HBM3")
    doc = cli_json(*MODEL, "--calibrated", "--device", "cpu", "--hardware", "measured")
    assert doc["hardware_label"] == "measured: this-cpu"
    # without --calibrated too; and without --device, the machine's first device's (none cached)
    assert cli_json(*MODEL, "--device", "cpu", "--hardware", "measured")["hardware_label"] == "measured: this-cpu"
    assert main([*MODEL, "--hardware", "measured"]) == 2
    assert "no measured ceilings for 'NVIDIA H100 80GB HBM3'" in capsys.readouterr().err
    # a device that is not one, named for its ceilings: one line naming it
    assert main([*MODEL, "--device", "h900", "--hardware", "measured"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'h900'" in err and "\n" not in err
    # a --device nothing reads is refused, naming what would read it
    assert main([*MODEL, "--device", "cpu"]) == 2
    assert "--calibrated reads or the ceilings --hardware measured reads" in capsys.readouterr().err


def test_model_calibrated_tables_show_an_expected_column(loader, capsys) -> None:
    assert main([*MODEL, "--calibrated", "--device", "cpu", "--view", "op"]) == 0
    out = capsys.readouterr().out
    want = expected(CFG, Workload("train", 2, 16, "fp32"), ExecutionPlan.default("train", "cpu"),
                    loader.calibration)
    from gptperf.output import seconds

    assert "expected step time" in out and seconds(want.step_time_s) in out
    assert "roofline bound" in out and "calibrated on Test GPU" in out
    header = next(line for line in out.splitlines() if line.startswith("op "))
    assert header.split()[-1] == "expected"


@pytest.mark.parametrize("error", [None, STALE])
def test_model_calibrated_without_a_usable_calibration_is_a_one_line_error(loader, capsys, error) -> None:
    loader.calibration, loader.error = None, error
    assert main([*MODEL, "--calibrated", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gptperf calibrate" in err
    if error:
        assert "40 days old" in err


def test_model_plan_is_the_plan_predicted_for(loader, cli_json, capsys) -> None:
    doc = cli_json("model", *SMALL, "--workload", "decode", "--batch", "1", "--seq", "16",
                   "--plan", "cuda_graph", "--hardware", "h100-sxm")
    plan = ExecutionPlan.from_dict(doc["plan"])
    assert plan == ExecutionPlan.default("decode", "cuda", fast=True)
    compiled = cli_json("model", *SMALL, "--workload", "decode", "--batch", "1", "--seq", "16",
                        "--plan", "compiled", "--hardware", "h100-sxm")
    assert compiled["plan"]["mode"] == "compiled"
    assert compiled["totals"] != doc["totals"]  # the plan changes the prediction
    for argv in (["--workload", "train", "--plan", "cuda_graph"],
                 ["--workload", "decode", "--plan", "cuda_graph", "--hardware", "cpu"]):
        assert main(["model", *SMALL, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "graph" in err.lower()


def test_model_calibrated_without_a_dtype_takes_one_the_calibration_can_predict(loader, cli_json, capsys) -> None:
    """`model --calibrated` with no --dtype models bf16 where the calibration has it, else (a
    CPU's, fp32 alone) the calibration's own; a --dtype it cannot predict is one line, exit 2."""
    cpu_only = flat_calibration("cpu")
    loader.calibration = flat_calibration("cpu", matmul={"fp32": cpu_only.matmul["fp32"]})
    argv = ("model", *SMALL, "--workload", "decode", "--batch", "1", "--seq", "16", "--calibrated",
            "--device", "cpu")
    doc = cli_json(*argv)
    assert doc["workload"]["dtype"] == doc["expected"]["workload"]["dtype"] == "fp32"
    assert main([*argv, "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--dtype fp32" in err
    loader.calibration = cpu_only  # it has bf16 too: the default stays bf16
    assert cli_json(*argv)["workload"]["dtype"] == "bf16"


# --- profile -------------------------------------------------------------------------------------


def test_profile_carries_the_expected_time_per_operation_and_step(loader, tmp_path, capsys) -> None:
    from gptperf.commands.profile import print_result
    from gptperf.profiling.compare import Row
    from gptperf.profiling.run import ProfileResult, profile_workload

    cfg = preset("tiny", n_layer=1, n_head=2, n_embd=32, block_size=32)
    r = profile_workload(cfg, "train", batch=2, seq=16, dtype="fp32", device="cpu",
                         out_dir=tmp_path / "p", wait=0, warmup=1, active=1, overhead=False,
                         plot=False, hardware="cpu")
    plan = ExecutionPlan.from_dict(r.workload["plan"])
    want = expected(cfg, Workload("train", 2, 16, "fp32"), plan, loader.calibration)
    by_key = want.by_key()
    rows = {(row.name, row.phase): row for row in r.comparison.ops}
    assert set(by_key) <= set(rows)
    for key, op in by_key.items():
        assert rows[key].expected_s == pytest.approx(op.device_s)
        if rows[key].measured_s > 0 and op.device_s > 0:
            assert rows[key].expected_ratio == pytest.approx(rows[key].measured_s / op.device_s)
    # components sum their layers' expected device time
    comp = {(row.name, row.phase): row for row in r.comparison.components}
    for (c, phase), seconds_ in want.by_component().items():
        assert comp[(c, phase)].expected_s == pytest.approx(seconds_)
    assert r.expected["step_time_s"] == pytest.approx(want.step_time_s)
    assert r.expected["measured_over_expected"] == pytest.approx(
        r.expected["measured_step_time_s"] / want.step_time_s)
    assert r.expected["roofline_step_time_s"] == pytest.approx(
        sum(row.predicted_s for row in r.comparison.phases))

    doc = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert doc["expected"]["label"].startswith("calibrated on Test GPU")
    assert all("measured_over_expected" in row and "measured_over_predicted" in row for row in doc["ops"])
    again = ProfileResult.from_dict(doc)
    assert again.expected == doc["expected"]
    assert [x.expected_s for x in again.comparison.ops] == pytest.approx(
        [x.expected_s for x in r.comparison.ops], nan_ok=True)
    # a row written before the calibrated prediction still loads, without an expected time
    old = {k: v for k, v in doc["ops"][0].items() if k not in ("expected_s", "measured_over_expected")}
    assert math.isnan(Row.from_dict(old).expected_s)

    print_result(r)
    out = capsys.readouterr().out
    assert " exp " in out and "m/e" in out and "calibrated expected" in out


def test_profile_without_a_calibration_has_no_expected_columns(loader, tmp_path) -> None:
    from gptperf.profiling.run import profile_workload

    loader.error = STALE
    cfg = preset("tiny", n_layer=1, n_head=2, n_embd=32, block_size=32)
    r = profile_workload(cfg, "forward", batch=2, seq=16, dtype="fp32", device="cpu",
                         out_dir=tmp_path / "p", wait=0, warmup=1, active=1, overhead=False,
                         plot=False, hardware="cpu")
    assert r.expected is None and any(STALE in n for n in r.notes)
    assert all(math.isnan(row.expected_s) for row in r.comparison.ops)
    assert all(not math.isnan(row.predicted_s) for row in r.comparison.ops)


# --- inference -----------------------------------------------------------------------------------


def test_inference_points_carry_the_expected_time_of_their_plan(loader, capsys) -> None:
    from gptperf.commands.inference import print_result
    from gptperf.inference.sweep import InferenceResult, run_inference_study
    from gptperf.output import to_json

    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    r = run_inference_study(cfg, "cpu", "fp32", contexts=[8], batches=[1, 2], hardware="cpu")
    points = r.cache + r.recompute + r.prefill + r.batches
    assert {p.kind for p in points} == {"decode", "decode_nocache", "prefill"}
    for p in points:
        want = expected(cfg, Workload(p.kind, p.batch, p.seq, "fp32"), p.plan, loader.calibration)
        assert p.expected_s == pytest.approx(want.step_time_s)
        assert p.expected_source == r.expected_label and p.expected_source.startswith("calibrated on")
        assert p.expected_ratio == pytest.approx(p.time_s / want.step_time_s)
    doc = json.loads(to_json(r.to_dict()))
    point = doc["batch_sweep"]["points"][0]
    assert point["expected_s"] == pytest.approx(r.batches[0].expected_s)
    assert point["expected_source"] == r.expected_label and point["predicted_s"] > 0
    again = InferenceResult.from_dict(doc)
    assert [p.expected_s for p in again.batches] == [p.expected_s for p in r.batches]
    assert again.expected_label == r.expected_label
    print_result(r)
    assert "calibrated expected" in capsys.readouterr().out


def test_inference_without_a_calibration_leaves_expected_empty(loader) -> None:
    from gptperf.inference.sweep import run_inference_study

    loader.calibration = None
    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    r = run_inference_study(cfg, "cpu", "fp32", contexts=[8], batches=[1], hardware="cpu")
    assert r.expected_label is None
    assert all(p.expected_s is None and p.expected_source is None
               for p in r.cache + r.recompute + r.prefill + r.batches)
    assert r.to_dict()["batch_sweep"]["points"][0]["expected_s"] is None


@pytest.mark.parametrize("command", ["profile", "inference"])
def test_profile_and_inference_say_when_the_machine_runs_at_another_speed_than_at_calibration(
        loader, monkeypatch: pytest.MonkeyPatch, tmp_path, command: str) -> None:
    import dataclasses

    import gptperf.measure.probe as probe
    from gptperf.inference.sweep import run_inference_study
    from gptperf.profiling.run import profile_workload

    then = probe.SpeedProbe(1e-6, 1e-3, 2e-3)
    loader.calibration = dataclasses.replace(loader.calibration, probes={"end": then.to_dict()})
    monkeypatch.setattr(probe, "take_probe", lambda device, budget_s=probe.PART_S:
                        probe.SpeedProbe(1e-6, 1e-3, 5e-3))
    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    if command == "profile":
        notes = profile_workload(cfg, "forward", batch=2, seq=16, dtype="fp32", device="cpu",
                                 out_dir=tmp_path / "p", wait=0, warmup=1, active=1,
                                 overhead=False, plot=False, hardware="cpu").notes
    else:
        notes = run_inference_study(cfg, "cpu", "fp32", contexts=[8], batches=[1],
                                    hardware="cpu").notes
    [drift] = [n for n in notes if "than at calibration (speed probe)" in n]
    assert "the copy 2.50× slower" in drift and "the matmul" not in drift


# --- the host's speed ----------------------------------------------------------------------------


@pytest.fixture
def host_twice_as_slow(loader, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """A calibration whose host model stepped in 1 ms (decode) and 4 ms (train); probed now, they
    step in 2 and 8 ms. Returns the (device, probe) of each probe taken."""
    import dataclasses

    import gptperf.measure.probe as probe

    loader.calibration = dataclasses.replace(
        loader.calibration, probes={"host": {"step_s": 1e-3, "train_step_s": 4e-3}})
    probed: list[object] = []
    now = {"decode": 2e-3, "train": 8e-3}
    monkeypatch.setattr(probe, "host_phase_step_s", lambda device, budget_s=0.1, probe="decode": (
        probed.append((device, probe)), (now[probe], {}))[1])
    return probed


def test_bench_charges_the_host_at_its_speed_after_the_step(loader, host_twice_as_slow, cli_json) -> None:
    doc = cli_json(*BENCH)
    (e,) = _calibrated(doc)
    plan = ExecutionPlan.from_dict(doc["plan"])
    want = expected(CFG, Workload("train", 2, 16, "fp32"), plan, loader.calibration, host_speed=2.0)
    assert e["step_time_s"] == pytest.approx(want.step_time_s)
    assert e["host_s"] == pytest.approx(2 * expected(CFG, Workload("train", 2, 16, "fp32"), plan,
                                                     loader.calibration).host_s)
    assert any("host costs ×2.00" in n for n in doc["notes"])
    assert [probe for _, probe in host_twice_as_slow] == ["train"]  # a train step: the train probe
    # the entry says how far the host's speed moved it, and what `model --calibrated` gives
    assert e["host_speed"] == pytest.approx(2.0)
    as_calibrated = cli_json(*MODEL, "--calibrated", "--device", "cpu")["expected"]["step_time_s"]
    assert e["step_time_s_as_calibrated"] == pytest.approx(as_calibrated)
    assert e["step_time_s_as_calibrated"] < e["step_time_s"]
    from gptperf.measure.bench import host_charge_note

    assert host_charge_note(e) == ("host costs ×2.00: the machine's speed probed as the step ran; "
                                   f"with them as calibrated {as_calibrated * 1e3:.4g} ms "
                                   "(`gptperf model --calibrated`)")
    # an entry written before the phases as charged were kept says the same from its speed
    older = {k: v for k, v in e.items() if k != "host_charged"}
    assert host_charge_note(older) == host_charge_note(e)


def test_a_cpu_steps_parallel_kernels_as_charged_are_named_beside_the_host_costs(loader) -> None:
    """An Expected whose parallel CPU kernels were charged at 0.5 (and its host as calibrated):
    the entry keeps the speed and the step as calibrated, and its note says both."""
    import dataclasses

    from gptperf.measure.bench import host_charge, host_charge_note

    w = Workload("train", 2, 16, "fp32")
    plan = ExecutionPlan.eager(CFG.attention)
    cal = dataclasses.replace(loader.calibration, cache_bytes=2**30)  # every tensor in the cache
    e = expected(CFG, w, plan, cal, parallel_speed=0.5)
    plain = expected(CFG, w, plan, cal).step_time_s
    charge = host_charge(e, cal)
    assert charge["parallel_speed"] == 0.5 and charge["host_charged"] == {}
    assert charge["step_time_s_as_calibrated"] == pytest.approx(plain)
    assert plain > e.step_time_s
    assert host_charge_note(charge) == ("parallel CPU kernels ×0.50: the machine's speed probed as "
                                        f"the step ran; with them as calibrated {plain * 1e3:.4g} ms "
                                        "(`gptperf model --calibrated`)")
    both = expected(CFG, w, plan, cal, host_speed=2.0, parallel_speed=0.5)
    assert host_charge_note(host_charge(both, cal)).startswith(
        "host costs ×2.00, parallel CPU kernels ×0.50: ")


def test_bench_charges_the_host_at_its_speed_sampled_between_its_steps(
        loader, host_twice_as_slow, cli_json, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.measure.probe as probe

    monkeypatch.setattr(probe, "INTERLEAVE_S", 0.0)  # a sample after every timed step
    # the samples read 12 ms: the train probe's unit is 4 ms, so the host three times as slow as
    # at calibration (the decode probe's would say 12×; the probe after: twice)
    monkeypatch.setattr(probe.HostSampler, "step_s", lambda self: 12e-3 if self.samples else None)
    doc = cli_json(*BENCH)
    (e,) = _calibrated(doc)
    plan = ExecutionPlan.from_dict(doc["plan"])
    work = Workload("train", 2, 16, "fp32")
    assert e["host_s"] == pytest.approx(3 * expected(CFG, work, plan, loader.calibration).host_s)
    assert any("host costs ×3.00" in n for n in doc["notes"])
    assert host_twice_as_slow == []  # sampled: no probe after the steps


def test_bench_pairs_each_timed_step_with_the_host_sampled_nearest_it(
        loader, host_twice_as_slow, cli_json, monkeypatch: pytest.MonkeyPatch) -> None:
    import statistics

    import gptperf.measure.probe as probe

    unit = 4e-3  # the train probe's unit (`host_twice_as_slow`)

    def sample(self: probe.HostSampler) -> None:  # after every timed step: ×1, ×3, ×1, ...
        self.steps += 1
        self.samples.append(unit * (1 if len(self.samples) % 2 == 0 else 3))
        self.after_step.append(self.steps)

    monkeypatch.setattr(probe.HostSampler, "__call__", sample)
    doc = cli_json(*BENCH, "--repeats", "5")
    (e,) = _calibrated(doc)
    plan = ExecutionPlan.from_dict(doc["plan"])
    work = Workload("train", 2, 16, "fp32")

    def at(speed: float) -> float:
        return expected(CFG, work, plan, loader.calibration, host_speed=speed).step_time_s

    steps = doc["time_per_step"]["total"]["samples_s"]
    speeds = [1 if j % 2 == 0 else 3 for j in range(len(steps))]
    # step i lies between the samples after steps i and i + 1 (1-based): the earlier one, sample
    # i − 1 (the first step: sample 0)
    paired = statistics.median(t / at(speeds[max(i - 1, 0)]) for i, t in enumerate(steps))
    assert e["measured_over_predicted"] == pytest.approx(paired)
    plain = doc["step_time_s"] / e["step_time_s"]
    assert e["step_time_s"] == pytest.approx(at(statistics.median(speeds)))  # the samples' median
    noted = [n for n in doc["notes"] if "pairs each step with the prediction" in n]
    assert len(noted) == (abs(paired / plain - 1) > 0.02)


@pytest.mark.parametrize("fork_speed, noted", [(1.5, True), (1.1, False), (0.75, True)])
def test_bench_names_a_step_run_in_a_spell_of_fork_and_join(
        loader, cli_json, monkeypatch: pytest.MonkeyPatch, fork_speed: float, noted: bool) -> None:
    import dataclasses

    import gptperf.measure.probe as probe

    unit = 4e-6  # a parallel add when the calibration's curves were measured
    loader.calibration = dataclasses.replace(loader.calibration, probes={
        "host": {"step_s": 1e-3, "train_step_s": 4e-3}, "fork": {"unit_s": unit}})
    monkeypatch.setattr(probe, "INTERLEAVE_S", 0.0)  # a sample after every timed step
    monkeypatch.setattr(probe.HostSampler, "fork_s",
                        lambda self: fork_speed * unit if self.fork_samples else None)
    doc = cli_json(*BENCH)
    spells = [n for n in doc["notes"] if "spell of the machine's fork and join" in n]
    assert len(spells) == noted
    if noted:
        assert f"took {fork_speed:.2f}× its time at calibration" in spells[0]
    assert len(_calibrated(doc)) == 1  # the prediction stays, named beside it


@pytest.mark.parametrize("matmul_now, noted", [(1.6, True), (1.1, False), (0.5, True)])
def test_bench_says_when_the_machine_runs_at_another_speed_than_at_calibration(
        loader, cli_json, monkeypatch: pytest.MonkeyPatch, matmul_now: float, noted: bool) -> None:
    import dataclasses

    import gptperf.measure.probe as probe

    then = probe.SpeedProbe(1e-6, 1e-3, 2e-3)
    loader.calibration = dataclasses.replace(loader.calibration, probes={"end": then.to_dict()})
    # host ops twice as slow: charged at the host sampled as the step ran, not noted again
    monkeypatch.setattr(probe, "take_probe", lambda device, budget_s=probe.PART_S:
                        probe.SpeedProbe(2e-6, matmul_now * 1e-3, 2e-3))
    doc = cli_json(*BENCH)
    [entry] = _calibrated(doc)
    assert entry["machine_vs_calibration"] == pytest.approx(
        {"host_s": 2.0, "matmul_s": matmul_now, "copy_s": 1.0})
    drift = [n for n in doc["notes"] if "than at calibration (speed probe)" in n]
    assert len(drift) == noted
    if noted:
        way = "slower" if matmul_now > 1 else "faster"
        factor = matmul_now if matmul_now > 1 else 1 / matmul_now
        assert f"the matmul {factor:.2f}× {way}" in drift[0] and "host ops" not in drift[0]
        assert drift[0].endswith("`gptperf calibrate --force` measures it again")


@pytest.mark.parametrize("copy_now, noted", [(2e-3, False), (3.4e-3, False), (8e-3, True)])
def test_the_machine_is_compared_with_the_nearer_of_the_calibrations_two_probes(
        loader, cli_json, monkeypatch: pytest.MonkeyPatch, copy_now: float, noted: bool) -> None:
    """A calibration whose end probe caught a slow spell (the copy 1.7x its start): a machine
    as at either probe is as calibrated; one outside both is measured against the nearer."""
    import dataclasses

    import gptperf.measure.probe as probe

    start, end = probe.SpeedProbe(1e-6, 1e-3, 2e-3), probe.SpeedProbe(1e-6, 1e-3, 3.4e-3)
    loader.calibration = dataclasses.replace(loader.calibration, probes={
        "start": start.to_dict(), "end": end.to_dict()})
    monkeypatch.setattr(probe, "take_probe", lambda device, budget_s=probe.PART_S:
                        probe.SpeedProbe(1e-6, 1e-3, copy_now))
    doc = cli_json(*BENCH)
    [entry] = _calibrated(doc)
    assert entry["machine_vs_calibration"]["copy_s"] == pytest.approx(
        min(copy_now / 2e-3, copy_now / 3.4e-3, key=lambda r: abs(math.log(r))))
    drift = [n for n in doc["notes"] if "than at calibration (speed probe)" in n]
    assert len(drift) == noted
    if noted:
        assert "the copy 2.35× slower" in drift[0]  # 8 / 3.4, its end probe the nearer


def test_a_probe_out_of_memory_leaves_the_bench_with_a_note(loader, cli_json,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import gptperf.measure.probe as probe

    def no_memory(device: object, budget_s: float = probe.PART_S) -> probe.SpeedProbe:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")

    loader.calibration = dataclasses.replace(loader.calibration, probes={
        "end": probe.SpeedProbe(1e-6, 1e-3, 2e-3).to_dict()})
    monkeypatch.setattr(probe, "take_probe", no_memory)
    doc = cli_json(*BENCH)
    [entry] = _calibrated(doc)
    assert entry["machine_vs_calibration"] is None and entry["step_time_s"] > 0
    assert any(n.startswith("the machine was not probed against its calibration: out of memory")
               for n in doc["notes"])

    def broken(device: object, budget_s: float = probe.PART_S) -> probe.SpeedProbe:
        raise RuntimeError("something else")

    monkeypatch.setattr(probe, "take_probe", broken)
    with pytest.raises(RuntimeError, match="something else"):  # not taken for a lack of memory
        probe.machine_against_calibration(loader.calibration, "cpu")


def test_bench_has_nothing_to_compare_with_a_calibration_that_kept_no_probe(loader, cli_json) -> None:
    [entry] = _calibrated(cli_json(*BENCH))
    assert entry["machine_vs_calibration"] is None


def test_an_inference_point_too_brief_to_sample_between_its_steps_samples_the_host_after_them(
        loader, host_twice_as_slow, monkeypatch: pytest.MonkeyPatch) -> None:
    """No point runs long enough for a sample between its steps: each eager one (all, on a CPU)
    takes one right after them, read at 2 ms against the decode probe's 1 ms unit, and is
    charged at 2×; no separate probe of the host is taken."""
    import gptperf.measure.probe as probe
    from gptperf.inference.sweep import run_inference_study

    monkeypatch.setattr(probe, "INTERLEAVE_S", math.inf)
    taken: list[int] = []
    monkeypatch.setattr(probe.HostSampler, "step_s",
                        lambda self: (taken.append(len(self.samples)), 2e-3 if self.samples else None)[1])
    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    r = run_inference_study(cfg, "cpu", "fp32", contexts=[8], batches=[1, 2], hardware="cpu")
    points = r.cache + r.recompute + r.prefill + r.batches
    assert len(points) > 3 and host_twice_as_slow == []
    assert taken and set(taken) == {1}  # one sample a point, the one after its steps
    for p in points:
        want = expected(cfg, Workload(p.kind, p.batch, p.seq, "fp32"), p.plan, loader.calibration,
                        host_speed=2.0)
        assert p.expected_s == pytest.approx(want.step_time_s)
    assert any("×2.00 its time at calibration" in n for n in r.notes)


def test_an_inference_point_charges_the_host_sampled_between_its_own_steps(
        loader, host_twice_as_slow, monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples read 3 ms against the decode probe's 1 ms unit: every point (all eager on a
    CPU) is charged at 3×, not at a probe of the host apart from its steps (2×, never taken),
    and the notes say how."""
    import gptperf.measure.probe as probe
    from gptperf.inference.sweep import run_inference_study

    monkeypatch.setattr(probe, "INTERLEAVE_S", 0.0)  # a sample after every timed step
    monkeypatch.setattr(probe.HostSampler, "step_s", lambda self: 3e-3 if self.samples else None)
    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    r = run_inference_study(cfg, "cpu", "fp32", contexts=[8], batches=[1, 2], hardware="cpu")
    points = r.cache + r.recompute + r.prefill + r.batches
    assert {p.kind for p in points} == {"decode", "decode_nocache", "prefill"}
    for p in points:
        work = Workload(p.kind, p.batch, p.seq, "fp32")
        assert p.expected_s == pytest.approx(expected(cfg, work, p.plan, loader.calibration,
                                                      host_speed=3.0).step_time_s)
        assert p.expected_s > expected(cfg, work, p.plan, loader.calibration, host_speed=2.0).step_time_s
    assert host_twice_as_slow == []
    assert any("sampled among its own steps: ×3.00 its time" in n for n in r.notes)
