"""`gptperf bench`: the JSON document, bad arguments, and metrics that survive a missing NVML."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
import torch

from gptperf.cli import main
from gptperf.measure.metrics import PeakMemoryMeter, UtilizationSampler, gpu_utilization_reader

SMALL = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0


def test_train_json_schema(capsys) -> None:
    code = main(["bench", "train", *SMALL, "--batch", "2", "--seq", "16", "--warmup", "1",
                 "--repeats", "3", "--device", "cpu", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["workload"] == {"kind": "train", "batch": 2, "seq": 16, "dtype": "fp32",
                               "compile": False, "attention": "sdpa", "tokens_per_step": 32}
    assert doc["config"]["n_layer"] == 1 and _positive(doc["parameters"])
    steps = doc["time_per_step"]
    assert set(steps["phases"]) == {"fwd", "bwd", "opt"}
    assert steps["total"]["repeats"] == 3 and steps["total"]["warmup"] == 1
    parts = sum(steps["phases"][p]["samples_s"][0] for p in ("fwd", "bwd", "opt"))
    assert steps["total"]["samples_s"][0] == pytest.approx(parts)
    assert doc["step_time_s"] == steps["total"]["median_s"]
    assert doc["throughput"]["tokens_per_s"] == pytest.approx(32 / doc["step_time_s"])
    assert doc["throughput"]["sequences_per_s"] == pytest.approx(2 / doc["step_time_s"])
    for key in ("per_step", "model_per_step", "achieved_flops_per_s"):
        assert _positive(doc["flops"][key])
    assert "perfmodel" in doc["flops"]["source"]
    assert doc["wall_time_s"] >= doc["stages_s"]["timed_s"] > 0
    # no measured ceilings in the private cache: datasheet MFU only, and a note saying what to run
    assert [m["against"] for m in doc["mfu"]] == ["datasheet"]
    assert _positive(doc["mfu"][0]["mfu"]) and "nominal cpu fp32" in doc["mfu"][0]["label"]
    assert any("gptperf ceilings" in n for n in doc["notes"])
    assert _positive(doc["memory"]["measured"]["peak_rss_bytes"])
    predicted = doc["memory"]["predicted"]
    for key in ("weights", "gradients", "optimizer_state", "activations", "total"):
        assert _positive(predicted[key])
    util = doc["utilization"]
    assert util["source"] == "psutil" and util["meaning"]
    if util["window_s"] < 0.1:  # three tiny steps: too short a window to read CPU time over
        assert util["mean_percent"] is None and "not measured" in util["note"]
    else:
        assert 0 <= util["mean_percent"] <= 100
    pred = doc["predictions"][0]
    assert pred["hardware"] == "nominal: cpu" and _positive(pred["step_time_s"])
    assert pred["measured_over_predicted"] == pytest.approx(doc["step_time_s"] / pred["step_time_s"])
    env = doc["environment"]
    assert env["device_type"] == "cpu" and env["dtype"] == "fp32" and env["torch"]


def test_measured_ceilings_give_a_second_mfu(capsys) -> None:
    from gptperf.envinfo import device_name
    from gptperf.perfmodel import Hardware, save_measured_hardware

    name = device_name(torch.device("cpu"))
    save_measured_hardware(Hardware(name, {"fp32": 1e11, "fp64": 5e10}, 1e10, 2**34,
                                    1e-6, source="measured"), name)
    from gptperf.measure.bench import run_bench
    from gptperf.model import preset

    config = preset("tiny", n_layer=1, n_embd=32, n_head=2)
    r = run_bench(config, "decode", 2, 8, "fp32", "cpu", False, 1, 3)
    doc = r.to_dict()
    assert [m["against"] for m in doc["mfu"]] == ["measured", "datasheet"]
    measured = doc["mfu"][0]
    assert measured["peak_flops_per_s"] == 1e11 and "measured fp32 matmul" in measured["label"]
    assert measured["mfu"] == pytest.approx(r.achieved_flops_per_s / 1e11)
    assert {p["source"] for p in doc["predictions"]} == {"nominal", "measured"}
    assert r.tokens_per_step == 2  # decode: one new token per sequence
    # an inference step has no backward nor optimizer: its FLOPs are one count, and said so
    assert doc["flops"]["per_step"] == doc["flops"]["model_per_step"]
    assert "a forward step" in doc["flops"]["source"] and "optimizer" not in doc["flops"]["source"]


ROOFLINE_KEYS = ["prediction", "hardware", "source", "step_time_s", "tokens_per_s",
                 "measured_step_time_s", "measured_over_predicted"]


def test_bench_document_round_trips_with_both_kinds_of_prediction(monkeypatch) -> None:
    from test_expected import flat_calibration

    import gptperf.measure.calibrate
    from gptperf.measure.bench import CALIBRATED, ROOFLINE, BenchResult, MfuEntry, run_bench
    from gptperf.model import preset

    monkeypatch.setattr(gptperf.measure.calibrate, "calibration_for",
                        lambda device, required=False: flat_calibration("cpu"))
    r = run_bench(preset("tiny", n_layer=1, n_embd=32, n_head=2), "train", 2, 16, "fp32", "cpu",
                  warmup=1, repeats=2)
    doc = r.to_dict()
    back = BenchResult.from_dict(json.loads(json.dumps(doc)))
    assert json.dumps(back.to_dict()) == json.dumps(doc)
    assert back.predictions == r.predictions and back.mfu == r.mfu
    assert all(isinstance(m, MfuEntry) for m in back.mfu) and back.mfu[0].against == "datasheet"
    # the entries' keys, in the order the document has always had them
    [roof] = back.roofline  # the private cache has no measured ceilings: the datasheet's alone
    assert roof.prediction == ROOFLINE and roof.source == "nominal" and _positive(roof.predicted_mfu)
    assert list(doc["predictions"][0]) == [*ROOFLINE_KEYS, "predicted_mfu"]
    cal = back.calibrated
    assert cal is not None and cal.prediction == CALIBRATED and cal.source == "calibrated"
    assert cal is back.predictions[-1] and _positive(cal.device_s)
    assert list(doc["predictions"][-1]) == [
        *ROOFLINE_KEYS, "device_s", "host_s", "composition", "host_speed", "phase_speeds",
        "host_charged", "step_time_s_as_calibrated", "machine_vs_calibration", "parallel_speed"]
    assert list(doc["mfu"][0]) == ["against", "hardware", "dtype", "peak_flops_per_s", "mfu",
                                   "label", "convention"]
    # a bench without a calibration has no calibrated entry
    bare = BenchResult.from_dict({**doc, "predictions": doc["predictions"][:1]})
    assert bare.calibrated is None and bare.roofline == [roof]
    # an entry written before the labels and the host's charge were kept still reads
    older = {k: v for k, v in doc["predictions"][-1].items()
             if k not in ("prediction", "host_charged", "machine_vs_calibration")}
    old = BenchResult.from_dict({**doc, "predictions": [doc["predictions"][0], older]})
    assert old.calibrated is not None and old.calibrated.host_charged is None
    assert old.calibrated.step_time_s == cal.step_time_s and old.roofline == [roof]


def test_cpu_utilization_is_withheld_over_a_window_shorter_than_the_tick_accounting() -> None:
    import time

    def busy(seconds: float) -> object:
        sampler = UtilizationSampler("cpu", interval_s=0.1).start()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return sampler.stop()

    short: Any = busy(0.005)
    assert short.mean_percent is None and short.max_percent is None
    assert "not measured" in short.note and "shorter than 100 ms" in short.note
    long: Any = busy(0.3)  # one thread busy: about 100 % / the cores available, never above 100 %
    assert 0 < long.mean_percent <= 100 and long.max_percent <= 100
    assert long.window_s >= 0.3


@pytest.mark.parametrize("argv, needle", [
    (["bench", "nonsense"], "invalid choice"),
    (["bench", "train", "--batch", "0"], "batch"),
    (["bench", "forward", "--seq", "100000"], "block_size"),
    (["bench", "train", "--dtype", "fp8"], "fp8"),
    (["bench", "train", "--compile", "--warmup", "0"], "warmup"),
    (["bench", "train", "--repeats", "0"], "repeats"),
    (["bench", "decode", "--repeats", "100000000"], "from 1 to 100000, got 100000000"),
    (["bench", "forward", "--warmup", "100000001"], "warmup"),
    (["bench", "train", "--hardware", "no-such-gpu"], "no-such-gpu"),
    (["bench", "train", "--device", "cpu", "--dtype", "fp16"], "fp16"),
    (["bench", "train", "--device", "tpu"], "tpu"),
])
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse errors exit through SystemExit
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # exactly one line: no blank line left by a progress display that stopped on the error
    assert err.count("\n") == 1 and err.endswith("\n") and needle in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_one_line(capsys) -> None:
    assert main(["bench", "train", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cuda" in err


# --- metrics without NVML -------------------------------------------------------------------------


def _break_torch_utilization(monkeypatch) -> None:
    def broken(device=None):
        raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "utilization", broken)


def test_missing_nvml_library_is_a_note(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    _break_torch_utilization(monkeypatch)
    read, source, note = gpu_utilization_reader(0)
    assert read is None and source == "none"
    assert "pynvml" in note and "not measured" in note
    util = UtilizationSampler("cuda", interval_s=0.01).start().stop()
    assert util.mean_percent is None and util.samples == 0 and "pynvml" in util.note
    assert "kernel" in util.meaning  # what the figure would have meant


def test_nvml_driver_error_is_a_note(monkeypatch) -> None:
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        raise NVMLError("Driver Not Loaded")

    fake.NVMLError = NVMLError
    fake.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    _break_torch_utilization(monkeypatch)
    read, source, note = gpu_utilization_reader(0)
    assert read is None and "NVML failed (Driver Not Loaded)" in note


def test_nvml_readings_are_sampled(monkeypatch) -> None:
    fake = types.ModuleType("pynvml")
    fake.NVMLError = type("NVMLError", (Exception,), {})
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    fake.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=30)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = UtilizationSampler("cuda", interval_s=0.005).start()
    import time

    time.sleep(0.2)
    util = sampler.stop()
    assert util.source == "nvml" and util.samples >= 2
    assert util.mean_percent == 87 and util.max_percent == 87


def test_cpu_peak_rss_sees_an_allocation() -> None:
    meter = PeakMemoryMeter("cpu")
    meter.reset()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    peak = meter.read()
    del block
    assert peak.peak_rss_bytes >= 64 * 2**20 and peak.allocated_bytes is None


def _fake_nvml_with_clocks(clocks: list[int], maximum: int) -> types.ModuleType:
    fake = types.ModuleType("pynvml")
    fake.NVMLError = type("NVMLError", (Exception,), {})
    fake.NVML_CLOCK_SM = 1
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    fake.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=95, memory=40)
    fake.nvmlDeviceGetMaxClockInfo = lambda h, kind: maximum if kind == 1 else 0
    readings = iter(clocks)
    last = [clocks[0]]

    def clock(h, kind):
        assert kind == 1  # the SM clock, not the memory clock
        last[0] = next(readings, last[0])
        return last[0]

    fake.nvmlDeviceGetClockInfo = clock
    return fake


def test_the_sm_clock_is_sampled_and_a_throttled_run_gets_a_note(monkeypatch) -> None:
    # the first reading is gpu_clock_reader's check; the rest are samples, the last repeated
    fake = _fake_nvml_with_clocks([1980, 1980, 1600, 1400, 1400], maximum=1980)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = UtilizationSampler("cuda", interval_s=0.005).start()
    import time

    time.sleep(0.2)
    util = sampler.stop()
    assert util.samples >= 4 and util.sm_clock_max_mhz == 1980 and util.sm_clock_min_mhz == 1400
    assert 1400 <= util.sm_clock_mean_mhz < 1600  # mostly the last reading
    assert util.clock_share < 0.95 and "held back" in util.note and "1980 MHz" in util.note
    again = type(util).from_dict(util.to_dict())
    assert again.sm_clock_mean_mhz == util.sm_clock_mean_mhz and again.clock_share == util.clock_share


def test_a_run_at_the_boost_clock_gets_no_clock_note(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml_with_clocks([1980], maximum=1980))
    util = UtilizationSampler("cuda", interval_s=0.005).start().stop()
    assert util.sm_clock_mean_mhz == 1980 and util.clock_share == 1.0
    assert util.note is None or "held back" not in util.note


def test_without_clock_functions_nvml_still_gives_utilization(monkeypatch) -> None:
    fake = _fake_nvml_with_clocks([1980], maximum=1980)
    del fake.nvmlDeviceGetMaxClockInfo  # an old nvidia-ml-py
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    util = UtilizationSampler("cuda", interval_s=0.005).start().stop()
    assert util.source == "nvml" and util.mean_percent == 95
    assert util.sm_clock_mean_mhz is None and util.clock_share is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_graph_step_is_timed_in_a_run_on_gpu() -> None:
    """bench times a CUDA-graph decode step queued behind the one before (as generation replays
    it): faster than the same step timed one at a time, each after a synchronisation, where the
    device waits for the host's launch. The step is long enough (4 blocks of 768, context 1024:
    about 100 µs on an H200) that the host's 10-20 µs a replay never sets the pace of the run:
    at 2 blocks of 192 (35-45 µs) a slow host made bench's run as slow as one at a time."""
    from gptperf.measure.bench import run_bench
    from gptperf.measure.timer import time_phases
    from gptperf.model.config import preset
    from gptperf.perfmodel.workload import Workload
    from gptperf.plan import ExecutionPlan
    from gptperf.steps.build import build_step

    cfg = preset("gpt2", n_layer=4)
    plan = ExecutionPlan.default("decode", "cuda", fast=True, dtype="bf16")
    result = run_bench(cfg, "decode", 1, 1024, "bf16", "cuda", plan=plan, repeats=200,
                       calibrated=False)
    assert result.plan.cuda_graph
    assert any("timed in a run" in n for n in result.notes)
    step = build_step(cfg, Workload("decode", 1, 1024, "bf16"), plan, torch.device("cuda"))
    one_at_a_time = time_phases(step.phases, warmup=5, repeats=200, device="cuda").total.median
    in_a_run = time_phases(step.phases, warmup=5, repeats=200, device="cuda", in_a_run=True).total.median
    assert in_a_run < one_at_a_time
    assert result.step_time_s < one_at_a_time


def test_a_wide_spread_of_step_times_is_noted(monkeypatch) -> None:
    """Steps 14% apart (std/median) get the note that says the machine may be busy; steady ones
    do not."""
    import gptperf.measure.bench as bench
    from gptperf.measure.timer import PhaseTiming, Timing
    from gptperf.model import preset

    real = bench.time_phases

    def timed(samples: list[float]):
        def fake(phases, **kw):
            real(phases, **{**kw, "repeats": 1})  # runs the hooks and the meters as a bench does
            return PhaseTiming({}, Timing(samples), warmup=kw["warmup"])
        return fake

    config = preset("tiny", n_layer=1, n_embd=32, n_head=2)
    for samples, noted in (([1.0, 1.3, 0.8, 1.1], True), ([1.0, 1.0, 1.01, 0.99], False)):
        monkeypatch.setattr(bench, "time_phases", timed(samples))
        r = bench.run_bench(config, "forward", 2, 16, "fp32", "cpu", warmup=1, repeats=4,
                            calibrated=False)
        said = [n for n in r.notes if "spread widely" in n]
        assert len(said) == int(noted), r.notes
