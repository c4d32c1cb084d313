"""Hardware TOML files and the measured-ceilings cache: bad bytes, bad TOML and bad figures are
one-line UserErrors naming the file (and field); a corrupt cache gets one answer from every
reader; the generic CPU entry is labelled 'nominal', not 'datasheet'."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gptperf.cli import main
from gptperf.errors import UserError
from gptperf.measure import ceilings as ceilings_mod
from gptperf.measure.ceilings import (
    SCHEMA,
    Ceilings,
    ceilings_for,
    load_cached_ceilings,
    save_ceilings,
)
from gptperf.perfmodel import hardware as hardware_mod
from gptperf.perfmodel.devices import resolve_hardware
from gptperf.perfmodel.hardware import (
    HARDWARE,
    UnusableCacheError,
    get_hardware,
    hardware_from_toml,
    load_measured_hardware,
    measured_hardware_path,
)

DEVICE = "Test CPU 9000"  # a device name no real machine has: its cache files are the test's own
UTF16_BOM = b"\xff\xfe"
GOOD = """name = "g"
bandwidth = 1e11
memory_bytes = 17179869184
launch_latency_s = 5e-6

[peak_flops]
fp32 = 1e12
fp64 = 5e11
"""


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty cache folder; this machine is DEVICE to `--hardware measured`."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(folder))
    monkeypatch.setattr(hardware_mod, "local_device_name", lambda: DEVICE)
    return folder


def _ceilings(measured_at: str = "seeded by the test", *, quick: bool = False) -> Ceilings:
    return Ceilings.from_dict({
        "schema": SCHEMA, "device": DEVICE, "device_type": "cpu", "measured_at": measured_at,
        "quick": quick, "memory_bytes": 2**34, "launch_latency_s": 1e-6,
        "matmul": {dt: {"points": [{"n": 64, "flops_per_s": 1e11}], "best_flops_per_s": 1e11,
                        "best_shape": "64"} for dt in ("fp32", "fp64")},
        "bandwidth": {"copy": {"best_bytes_per_s": 1e10, "best_buffer_bytes": 2**20}}})


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; it must exit 2 with one line on stderr, which is returned."""
    code, _, err = _cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 1. bytes that are not UTF-8 ----------------------------------------------------------------


def test_a_utf16_hardware_file_is_a_one_line_error_naming_it(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.toml"
    path.write_bytes(UTF16_BOM + GOOD.encode("utf-16-le"))
    with pytest.raises(UserError, match="not UTF-8 TOML") as info:
        hardware_from_toml(path)
    assert str(path) in str(info.value) and "byte-order mark" in str(info.value)
    line = _one_line_error(capsys, "model", "--hardware", str(path))
    assert str(path) in line and "not UTF-8" in line


def test_a_cache_file_of_bad_bytes_says_how_to_measure_again(capsys) -> None:
    path = measured_hardware_path(DEVICE)
    path.parent.mkdir(parents=True)
    path.write_bytes(UTF16_BOM + GOOD.encode())
    with pytest.raises(UnusableCacheError) as info:
        load_measured_hardware(DEVICE)
    message = str(info.value)
    assert str(path) in message and "not UTF-8" in message
    assert "gptperf ceilings --force" in message
    assert _one_line_error(capsys, "model", "--hardware", "measured") == f"gptperf model: error: {message}"
    # the default machine of a prediction (bench, profile, report ...) reads it the same way
    with pytest.raises(UserError) as default:
        resolve_hardware(None, DEVICE, "cpu", dtype="fp32")
    assert str(default.value) == message


# --- 2. a corrupt cache gets one answer ---------------------------------------------------------


def _corrupt_toml_beside_intact_json() -> Path:
    save_ceilings(_ceilings())
    path = measured_hardware_path(DEVICE)
    assert load_cached_ceilings(DEVICE) is not None  # whole, before it is broken
    path.write_text('name = = "broken"\n')
    assert path.with_suffix(".json").is_file()
    return path


def test_every_reader_of_a_corrupt_cache_gives_the_same_error(capsys) -> None:
    path = _corrupt_toml_beside_intact_json()
    answers = []
    for read in (lambda: get_hardware("measured", device_name=DEVICE),
                 lambda: resolve_hardware(None, DEVICE, "cpu", dtype="fp32"),
                 lambda: load_cached_ceilings(DEVICE)):  # an intact JSON does not hide it
        with pytest.raises(UnusableCacheError) as info:
            read()
        answers.append(str(info.value))
    assert len(set(answers)) == 1, answers
    assert str(path) in answers[0] and "not valid TOML" in answers[0]
    assert "gptperf ceilings --force" in answers[0] and "no measured ceilings" not in answers[0]
    line = _one_line_error(capsys, "model", "--hardware", "measured")
    assert line.endswith(answers[0])


def test_ceilings_measures_a_corrupt_cache_again_and_says_why(monkeypatch, capsys) -> None:
    path = _corrupt_toml_beside_intact_json()
    fresh: list[bool] = []

    def measure(device: Any, *, quick: bool = False, progress: Any = None) -> Ceilings:
        fresh.append(quick)
        return _ceilings("measured again")

    monkeypatch.setattr(ceilings_mod, "measure_ceilings", measure)
    monkeypatch.setattr(ceilings_mod, "device_name", lambda device: DEVICE)
    told: list[str] = []
    result, cached = ceilings_for("cpu", notify=told.append)
    assert cached is False and fresh == [False] and result.measured_at == "measured again"
    assert len(told) == 1 and str(path) in told[0] and "not valid TOML" in told[0]
    assert "measuring again" in told[0]
    assert get_hardware("measured", device_name=DEVICE).peak("fp32") == 1e11  # mended
    # the command itself: no "cached measurement exists, use --force" loop
    path.write_text('name = = "broken"\n')
    code, out, err = _cli(capsys, "ceilings", "--device", "cpu", "--no-calibrate", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["cached"] is False and str(path) in doc["replaced_corrupt_cache"]
    code, out, err = _cli(capsys, "ceilings", "--device", "cpu", "--no-calibrate")
    assert code == 0 and "cached measurement" in err and "not valid TOML" not in err  # whole


def test_an_unreadable_curves_file_is_measured_again_too(monkeypatch) -> None:
    save_ceilings(_ceilings())
    curves = measured_hardware_path(DEVICE).with_suffix(".json")
    curves.write_bytes(UTF16_BOM)
    with pytest.raises(UnusableCacheError, match="curves") as info:
        load_cached_ceilings(DEVICE)
    assert str(curves) in str(info.value)
    assert get_hardware("measured", device_name=DEVICE).source == "measured"  # the TOML is whole
    monkeypatch.setattr(ceilings_mod, "measure_ceilings", lambda d, **_: _ceilings("again"))
    monkeypatch.setattr(ceilings_mod, "device_name", lambda device: DEVICE)
    told: list[str] = []
    assert ceilings_for("cpu", notify=told.append)[1] is False and str(curves) in told[0]
    assert load_cached_ceilings(DEVICE).measured_at == "again"


def test_a_cache_file_of_another_device_is_refused_and_measured_again(monkeypatch, capsys) -> None:
    """Ceilings copied in from another machine (its device named inside) are not this device's:
    every reader refuses them with one line naming both devices, and `gptperf ceilings` measures
    this one instead of serving them."""
    save_ceilings(_ceilings())
    path = measured_hardware_path(DEVICE)
    path.write_text(path.read_text().replace(f'device_name = "{DEVICE}"', 'device_name = "NVIDIA H100"'))
    for read in (lambda: get_hardware("measured", device_name=DEVICE),
                 lambda: resolve_hardware(None, DEVICE, "cpu", dtype="fp32"),
                 lambda: load_cached_ceilings(DEVICE)):
        with pytest.raises(UnusableCacheError) as info:
            read()
        assert "is of 'NVIDIA H100'" in str(info.value) and repr(DEVICE) in str(info.value)
    assert _one_line_error(capsys, "model", "--hardware", "measured").endswith(str(info.value))
    monkeypatch.setattr(ceilings_mod, "measure_ceilings", lambda d, **_: _ceilings("this one"))
    monkeypatch.setattr(ceilings_mod, "device_name", lambda device: DEVICE)
    assert ceilings_for("cpu")[1] is False
    assert get_hardware("measured", device_name=DEVICE).device_name == DEVICE


def test_a_missing_cache_is_still_no_measured_ceilings(capsys) -> None:
    assert load_measured_hardware(DEVICE) is None and load_cached_ceilings(DEVICE) is None
    assert resolve_hardware(None, DEVICE, "cpu").name == "cpu"  # the shipped entry
    line = _one_line_error(capsys, "model", "--hardware", "measured")
    assert "no measured ceilings" in line and "gptperf ceilings" in line


# --- 3. figures that are not finite, or negative ------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("launch_latency_s", "nan"), ("launch_latency_s", "inf"), ("launch_latency_s", "-1e-6"),
    ("launch_latency_us", "nan"), ("bandwidth", "nan"), ("bandwidth", "-1.0"),
    ("memory_bytes", "nan"), ("memory_bytes", "-5"),
])
def test_a_bad_figure_names_the_field_and_the_file(tmp_path: Path, capsys, field: str,
                                                    value: str) -> None:
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith(field.rsplit("_", 1)[0]))
    path = tmp_path / "bad.toml"
    path.write_text(f"{field} = {value}\n{text}\n")
    with pytest.raises(UserError) as info:
        hardware_from_toml(path)
    assert str(path) in str(info.value) and field in str(info.value), str(info.value)
    line = _one_line_error(capsys, "model", "--hardware", str(path))
    assert str(path) in line and field in line


def test_a_nan_peak_names_the_field_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("fp32 = 1e12", "fp32 = nan"))
    with pytest.raises(UserError, match=r"peak_flops\.fp32") as info:
        hardware_from_toml(path)
    assert str(path) in str(info.value)


def test_good_files_still_load_and_zero_latency_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD.replace("launch_latency_s = 5e-6", "launch_latency_s = 0.0"))
    hw = hardware_from_toml(path)
    assert hw.source == "file" and hw.launch_latency_s == 0.0 and hw.bandwidth == 1e11
    path.write_text(GOOD.replace("memory_bytes = 17179869184", "memory_bytes = inf"))
    assert hardware_from_toml(path).memory_bytes == float("inf")  # unbounded, as to_toml writes


def test_a_measurement_without_a_launch_floor_saves_zero_not_nan() -> None:
    c = _ceilings()
    c.launch_latency_s = float("nan")
    assert c.to_hardware().launch_latency_s == 0.0
    save_ceilings(c)
    assert get_hardware("measured", device_name=DEVICE).launch_latency_s == 0.0


def test_a_cached_nan_latency_is_an_unusable_cache() -> None:
    save_ceilings(_ceilings())
    path = measured_hardware_path(DEVICE)
    path.write_text(path.read_text().replace("launch_latency_s = 1e-06", "launch_latency_s = nan"))
    with pytest.raises(UnusableCacheError, match="launch_latency_s") as info:
        get_hardware("measured", device_name=DEVICE)
    assert str(path) in str(info.value) and "--force" in str(info.value)


def test_kernel_model_rows_that_are_not_integers_are_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "km.toml"
    path.write_text(GOOD + '\n[kernel_model]\nrows = ["a"]\nalpha_s = [1e-6]\nbeta = [1e11]\n'
                    "elementwise_alpha_s = 1e-6\nelementwise_beta = 1e11\n")
    with pytest.raises(UserError, match="rows") as info:
        hardware_from_toml(path)
    assert str(path) in str(info.value)


# --- 4. the generic CPU is nominal, not a datasheet ---------------------------------------------


def test_the_cpu_entry_is_nominal_and_the_gpus_are_datasheets() -> None:
    assert HARDWARE["cpu"].source == "nominal" and get_hardware("cpu").label == "nominal: cpu"
    for name in ("a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "l40s"):
        assert HARDWARE[name].source == "datasheet"
    # still the default on a CPU without measured ceilings, and still not measured
    hw = resolve_hardware(None, DEVICE, "cpu", dtype="fp32")
    assert hw.name == "cpu" and hw.source != "measured"
    again = hardware_from_toml(HARDWARE["cpu"].to_toml())
    assert again.source == "nominal"  # a file that says nominal stays nominal


def test_a_shipped_entry_must_say_datasheet_or_nominal(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "x.toml").write_text(GOOD)  # no source: it would pass for a user's file
    monkeypatch.setattr(hardware_mod, "_DATA_DIR", tmp_path)
    with pytest.raises(UserError, match="datasheet, nominal"):
        hardware_mod._load_registry()


def test_printed_labels_say_nominal_for_the_cpu(capsys) -> None:
    code, out, _ = _cli(capsys, "model", "--preset", "tiny", "--batch", "1", "--seq", "8",
                        "--dtype", "fp32", "--hardware", "cpu")
    assert code == 0 and "nominal: cpu" in out and "datasheet" not in out
    from gptperf.commands.ceilings import print_ceilings

    print_ceilings(_ceilings(), False, get_hardware("cpu"), None)
    out = capsys.readouterr().out
    assert "nominal cpu" in out and "% of nominal" in out and "datasheet" not in out
    print_ceilings(_ceilings(), False, get_hardware("h100-sxm"), None)
    assert "% of datasheet" in capsys.readouterr().out
