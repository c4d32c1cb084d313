"""`gptperf ceilings --quick` on CPU: measured figures, the cached hardware file, the picture."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from gptperf.cli import main
from gptperf.measure.calibrate import calibration_for
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.devices import datasheet_hardware_for, datasheet_name_for


@pytest.fixture(scope="module")
def cache(quick_cpu_cache):
    """A private cache folder, and one quick measurement in it: `gptperf ceilings --quick --device
    cpu --force --json`, run once for the session by tests/conftest.py (the report reuses it)."""
    folder, _ = quick_cpu_cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTPERF_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def measured(cache, quick_cpu_cache):
    """The JSON that measurement printed."""
    return quick_cpu_cache[1]


def test_quick_ceilings_are_positive_and_complete(measured: dict) -> None:
    assert measured["device_type"] == "cpu" and measured["quick"] is True
    assert measured["threads"] >= 1 and measured["cached"] is False
    for dtype in ("fp64", "fp32"):
        curve = measured["matmul"][dtype]["points"]
        assert len(curve) >= 2  # a curve, not a single point
        assert all(p["flops_per_s"] > 0 and p["flops"] == 2 * p["n"] ** 3 for p in curve)
        assert measured["peak_flops"][dtype] == max(p["flops_per_s"] for p in curve)
    assert "tf32" in measured["skipped"]  # a CUDA mode, never timed on CPU
    for kernel, factor in (("copy", 2), ("saxpy", 3)):
        point = measured["bandwidth"][kernel]["points"][0]
        assert point["bytes_moved"] == factor * point["buffer_bytes"]  # read + written
        assert point["bytes_per_s"] == pytest.approx(point["bytes_moved"] / point["time_s"])
    assert measured["bandwidth_bytes_per_s"] == max(
        b["best_bytes_per_s"] for b in measured["bandwidth"].values())
    assert 0 < measured["launch_latency_s"] < 1e-2
    assert measured["environment"]["cpu_threads"] >= 1


def test_measured_hardware_is_cached_and_loadable(measured: dict, cache) -> None:
    from gptperf.perfmodel import get_hardware, measured_hardware_path

    path = measured_hardware_path(measured["device"])
    assert path.is_file() and str(path).startswith(str(cache))
    hw = get_hardware("measured", device_name=measured["device"])
    assert hw.source == "measured"
    assert hw.peak("fp32") == pytest.approx(measured["peak_flops"]["fp32"])
    assert hw.peak("tf32") == pytest.approx(measured["peak_flops"]["fp32"])  # fp32 on CPU
    assert hw.bandwidth == pytest.approx(measured["bandwidth_bytes_per_s"])
    assert math.isclose(hw.launch_latency_s, measured["launch_latency_s"], rel_tol=1e-9)
    assert hw.extra["measurement"]["measured_at"] == measured["measured_at"]


def test_second_run_uses_the_cache_and_force_measures_again(measured: dict, capsys) -> None:
    assert main(["ceilings", "--quick", "--device", "cpu", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cached"] is True and again["measured_at"] == measured["measured_at"]
    assert main(["ceilings", "--quick", "--device", "cpu"]) == 0  # tables, and a note on stderr
    captured = capsys.readouterr()
    assert "cached measurement" in captured.err and "--force" in captured.err
    assert "Matmul" in captured.out


def test_plot_writes_png_and_svg(measured: dict, tmp_path) -> None:
    png, svg = tmp_path / "ceilings.png", tmp_path / "ceilings.svg"
    assert main(["ceilings", "--quick", "--device", "cpu", "--plot", str(png), "--json"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from gptperf.measure.ceilings import Ceilings
    from gptperf.plotting.ceilings import plot_ceilings

    plot_ceilings(Ceilings.from_dict(measured).to_dict(), datasheet_hardware_for("cpu", "cpu"), svg)
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml")
    # the generic CPU entry's figures are nominal, and the picture says so, not "datasheet"
    assert "nominal" in text and "datasheet" not in text


def test_bad_plot_suffix_is_one_line(capsys) -> None:
    assert main(["ceilings", "--quick", "--device", "cpu", "--plot", "out.txt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ".png" in err


@pytest.mark.parametrize("name, entry", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
    ("NVIDIA L40S", "l40s"),
    ("AMD EPYC", "cpu"),
    ("Intel(R) Xeon(R) Platinum 8480+", "cpu"),
])
def test_datasheet_for_device_names(name: str, entry: str) -> None:
    assert datasheet_name_for(name) == entry
    assert datasheet_hardware_for(name).name == entry


def test_unknown_gpu_has_no_datasheet() -> None:
    assert datasheet_name_for("NVIDIA GeForce GTX 1080") is None
    assert datasheet_hardware_for("Tesla T4", "cuda") is None


@pytest.mark.slow
def test_the_quick_calibration_ceilings_ends_with_is_real_and_complete(cache) -> None:
    """The session's quick CPU calibration, measured for real at the end of `gptperf ceilings
    --quick` with the machine's threads, as `gptperf calibrate --json` gives it back from the cache."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["calibrate", "--device", "cpu", "--quick", "--json"]) == 0
    doc = json.loads(out.getvalue())
    assert doc["cached"] and f"CPU threads: {torch.get_num_threads()}" in doc["notes"]
    cal = Calibration.from_dict(doc)
    assert cal.matmul and cal.attention and cal.vector and cal.optimizer
    assert all(r is None or (math.isfinite(r) and r >= 0) for r in cal.residuals().values())
    # a cost a block, or (a host too busy to time one, even measured again) a note naming it
    assert (cal.host["eager:fwd:fp32"]["per_layer_s"] > 0
            or any("fwd still not, charged no cost a block" in n for n in doc["notes"]))
    units = cal.probes["host_jobs"]  # each job's own unit, kept beside the one they are scaled to
    assert set(units) == {"eager:train:fp32", "eager:inference:fp32"} and all(u > 0 for u in units.values())
    # one job a probe here: each probe's unit is its job's own (the train step ~10x the decode's)
    host = dict(cal.probes["host"])
    phases = {k: host.pop(k) for k in ("train_fwd_s", "train_bwd_s", "train_opt_s")}
    assert host == pytest.approx({"step_s": units["eager:inference:fp32"],
                                  "train_step_s": units["eager:train:fp32"]})
    # the train probe's phases, each timed apart: together about its whole step
    assert sum(phases.values()) == pytest.approx(units["eager:train:fp32"], rel=0.3)
    assert units["eager:train:fp32"] > 1.5 * units["eager:inference:fp32"]
    assert calibration_for(torch.device("cpu")) == cal
