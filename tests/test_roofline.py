"""The lecture's roofline examples, exactly; hardware entries, TOML files and measured ceilings;
the `gptperf roofline` and `gptperf model` commands; the roofline picture."""

from __future__ import annotations

import json
import math

import pytest

from gptperf.cli import main
from gptperf.errors import UserError
from gptperf.perfmodel import (
    HARDWARE,
    Hardware,
    adhoc_hardware,
    arithmetic_intensity,
    attainable,
    get_hardware,
    hardware_from_toml,
    kernel_cost,
    kv_projection,
    matmul,
    measured_hardware_path,
    ridge_n,
    ridge_point,
    save_measured_hardware,
    saxpy,
)

# --- the lecture, exactly ----------------------------------------------------------------------


def test_saxpy_fp64() -> None:
    k = saxpy(1000, "fp64")
    assert (k.flops, k.bytes) == (2000, 24000)
    assert k.arithmetic_intensity == 1 / 12


def test_square_matmul_fp64_accumulate() -> None:
    n = 512
    k = matmul(n, n, n, "fp64", accumulate=True)
    assert k.flops == 2 * n**3
    assert k.bytes == 4 * 8 * n * n
    assert k.arithmetic_intensity == n / 16
    assert matmul(3, 5, 7, "fp32").flops == 2 * 3 * 5 * 7
    assert matmul(3, 5, 7, "fp32").bytes == (3 * 7 + 7 * 5 + 3 * 5) * 4


def test_ridge_n_a100() -> None:
    assert ridge_n(312e12, 1.5e12, "fp64", accumulate=True) == pytest.approx(3328)
    assert ridge_n(312e12, 1555e9, "fp64", accumulate=True) == pytest.approx(3210.3, abs=0.1)
    assert ridge_point(312e12, 1.5e12) == pytest.approx(208)


def test_kv_projection_is_memory_bound() -> None:
    k = kv_projection(4096, "fp16")
    assert (k.flops, k.bytes, k.arithmetic_intensity) == (2 * 4096**2, 2 * 4096**2, 1)
    cost = k.on(get_hardware("a100-40gb"))
    assert cost.bound == "memory"
    assert cost.attainable_flops == pytest.approx(1555e9)


def test_attainable_and_bound() -> None:
    assert attainable(1.0, 312e12, 1.5e12) == 1.5e12
    assert attainable(1000.0, 312e12, 1.5e12) == 312e12
    c = kernel_cost(2e9, 1e9, 0, dtype="fp32", peak=1e12, bandwidth=1e9, count=2, launch_latency_s=1e-6)
    assert c.time_s == pytest.approx(1.0 + 2e-6)
    assert c.bound == "memory"


@pytest.mark.parametrize("call", [
    lambda: arithmetic_intensity(10, 0),
    lambda: kernel_cost(10, 0, 0, dtype="fp32", peak=1, bandwidth=1),
    lambda: saxpy(-5),
    lambda: saxpy("many"),
    lambda: matmul(0, 1, 1),
    lambda: saxpy(5, "fp8"),
    lambda: attainable("x", 1, 1),
    lambda: ridge_point(-1, 1),
    lambda: adhoc_hardware(float("nan"), 1),
])
def test_bad_inputs(call) -> None:
    with pytest.raises(UserError):
        call()


# --- hardware ----------------------------------------------------------------------------------


def test_registry_entries_are_dense_datasheet_figures() -> None:
    for name in ("a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "l40s"):
        assert name in HARDWARE and HARDWARE[name].source == "datasheet"
    assert HARDWARE["cpu"].source == "nominal"  # a made-up 8-core machine, not a vendor's sheet
    assert get_hardware("h100-sxm").peak("bf16") == pytest.approx(989.4e12)  # not 1979 (sparse)
    assert get_hardware("a100-40gb").bandwidth == 1555e9
    assert get_hardware("a100-80gb").bandwidth == 2039e9
    assert get_hardware("h200").bandwidth == 4.8e12
    assert get_hardware("H100-SXM").label == "datasheet: h100-sxm"


def test_unknown_hardware_lists_known_names() -> None:
    with pytest.raises(UserError) as err:
        get_hardware("tpu-v9")
    for name in HARDWARE:
        assert name in str(err.value)
    assert "\n" not in str(err.value)


def test_toml_round_trip(tmp_path) -> None:
    for hw in HARDWARE.values():
        back = hardware_from_toml(hw.to_toml())
        assert back.to_dict() == hw.to_dict()
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nbandwidth_gbs = 100\nmemory_gib = 8\n[peak_tflops]\nfp32 = 2.5\n')
    hw = get_hardware(str(path))
    assert (hw.source, hw.peak("fp32"), hw.bandwidth, hw.memory_bytes) == ("file", 2.5e12, 1e11, 8 * 2**30)
    with pytest.raises(UserError, match="no peak for dtype 'bf16'"):
        hw.peak("bf16")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(UserError, match="not valid TOML"):
        get_hardware(str(bad))
    with pytest.raises(UserError, match="does not exist"):
        get_hardware(str(tmp_path / "absent.toml"))


def test_measured_ceilings_round_trip(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path))
    device = "NVIDIA H100 80GB HBM3"
    with pytest.raises(UserError, match="gptperf ceilings"):
        get_hardware("measured", device_name=device)
    hw = Hardware("h100 measured", {"bf16": 768e12, "fp32": 51e12}, 3.0e12, 80 * 2**30, 5e-6, "measured")
    path = save_measured_hardware(hw, device, extra={"curves": {"bf16": {"n": [1024, 8192], "flops": [1e14, 7.68e14]}}})
    assert path == measured_hardware_path(device) == tmp_path / "ceilings" / "nvidia-h100-80gb-hbm3.toml"
    back = get_hardware("measured", device_name=device)  # unknown tables are ignored
    assert (back.source, back.peak("bf16"), back.bandwidth) == ("measured", 768e12, 3.0e12)
    assert back.label == "measured: h100 measured"
    assert back.extra["curves"]["bf16"]["n"] == [1024, 8192]


def test_adhoc() -> None:
    hw = adhoc_hardware(312, 1500)
    assert hw.source == "ad-hoc" and hw.peak("fp64") == 312e12 and math.isinf(hw.memory_bytes)
    with pytest.raises(UserError):
        adhoc_hardware(-1, 1500)


# --- commands ----------------------------------------------------------------------------------


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_roofline_command_json(capsys) -> None:
    d = _json(capsys, ["roofline", "matmul", "--m", "4096", "--n", "4096", "--k", "4096", "--dtype", "fp64",
                       "--accumulate", "--peak-tflops", "312", "--bandwidth-gbs", "1500", "--json"])
    for key in ("flops", "bytes", "arithmetic_intensity", "ridge_intensity", "attainable_flops", "bound", "ridge_n"):
        assert key in d
    assert d["ridge_n"] == pytest.approx(3328) and d["arithmetic_intensity"] == 256
    d = _json(capsys, ["roofline", "--json", "saxpy", "--n", "100"])
    assert d["arithmetic_intensity"] == pytest.approx(1 / 12) and d["source"] == "datasheet: a100-40gb"
    d = _json(capsys, ["roofline", "kv", "--n-embd", "768", "--hardware", "h100-sxm", "--json"])
    assert d["arithmetic_intensity"] == 1 and d["bound"] == "memory" and "ridge_n" not in d


def test_model_command_json(capsys) -> None:
    d = _json(capsys, ["model", "--preset", "tiny", "--workload", "decode", "--batch", "2", "--seq", "32",
                       "--hardware", "l40s", "--json"])
    assert d["workload"]["kind"] == "decode" and d["hardware_label"] == "datasheet: l40s"
    assert d["totals"]["tokens"] == 2 and d["memory"]["kv_cache"] > 0


def test_model_command_tables(capsys) -> None:
    assert main(["model", "--preset", "tiny", "--n-layer", "2", "--seq", "64", "--dtype", "fp32",
                 "--attention", "math", "--hardware", "cpu"]) == 0
    out = capsys.readouterr().out
    for text in ("h.0.attn.softmax", "per component", "per block", "nanogpt", "nominal: cpu", "fits"):
        assert text in out


@pytest.mark.parametrize("argv", [
    ["roofline", "saxpy", "--n", "-4"],
    ["roofline", "saxpy", "--n", "4", "--dtype", "fp8"],
    ["roofline", "saxpy", "--n", "4", "--hardware", "nope"],
    ["roofline", "saxpy", "--n", "4", "--peak-tflops", "3"],
    ["roofline", "kv", "--n-embd", "8", "--peak-tflops", "0", "--bandwidth-gbs", "1"],
    ["roofline", "saxpy", "--n", "4", "--plot", "x.gif"],
    ["model", "--batch", "0"],
    ["model", "--seq", "5000"],
    ["model", "--n-head", "7"],
    ["model", "--hardware", "measured-nowhere.toml"],
])
def test_commands_bad_input_exit_2_one_line(argv, capsys) -> None:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's refusal of a flag's value
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err


def test_argparse_errors_exit_2(capsys) -> None:
    for argv in (["roofline", "saxpy", "--n", "four"], ["model", "--workload", "finetune"],
                 ["model", "--batch", "1.5"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err


# --- pictures ----------------------------------------------------------------------------------


def test_a_plot_path_must_end_in_a_format_matplotlib_writes(tmp_path) -> None:
    from gptperf.plotting import check_plot_path

    for name in ("a.png", "b.SVG", "c.pdf"):
        assert check_plot_path(tmp_path / name) == tmp_path / name
    for name in ("d.gif", "e"):
        with pytest.raises(UserError, match=r"plot file '.*' must end in one of: \.png, \.svg, \.pdf$"):
            check_plot_path(tmp_path / name)


def test_save_figure_writes_the_suffix_format_with_its_note_and_no_leftovers(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from gptperf.plotting import pyplot, save_figure

    plt = pyplot()
    for name, magic in (("f.svg", b"<?xml"), ("f.png", b"\x89PNG"), ("f", b"\x89PNG")):
        fig, ax = plt.subplots()
        ax.plot([1, 2], [3, 4])
        path = save_figure(fig, tmp_path / name, note="measured on <a test>")
        assert path.read_bytes().startswith(magic) and not plt.get_fignums()  # closed
        if name.endswith(".svg"):
            assert "measured on &lt;a test&gt;" in path.read_text()  # the note, escaped by matplotlib
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "f.png", "f.svg"]  # no temporaries


def test_plots(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from gptperf.plotting.roofline import RooflinePoint, plot_roofline

    png = tmp_path / "r.png"
    pts = [RooflinePoint("a", 1.0, 1e12), RooflinePoint("a", 1.2, 0.5e12, kind="measured"),
           RooflinePoint("b", 500.0, 3e14, bound="compute")]
    plot_roofline(png, [("bf16", 989e12), ("fp32", 67e12)], [("HBM", 3.35e12)], pts, title="t")
    assert png.read_bytes()[:4] == b"\x89PNG"
    svg = tmp_path / "r.svg"
    plot_roofline(svg, {"bf16": 989e12}, {"HBM": 3.35e12}, pts)
    assert "<svg" in svg.read_text()[:2000]
    with pytest.raises(UserError):
        plot_roofline(tmp_path / "r.gif", {"bf16": 1e12}, {"m": 1e9}, pts)
    assert main(["model", "--preset", "tiny", "--hardware", "cpu", "--plot", str(tmp_path / "m.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plot"].endswith("m.png")
    assert main(["roofline", "kv", "--n-embd", "64", "--plot", str(tmp_path / "kv.svg")]) == 0
    assert (tmp_path / "kv.svg").exists() and (tmp_path / "m.png").exists()
    before = (tmp_path / "m.png").stat().st_mtime_ns
    assert main(["model", "--preset", "tiny", "--hardware", "cpu", "--plot", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").stat().st_mtime_ns != before  # its own picture is replaced


def test_a_picture_names_gptperf_as_its_maker_in_each_format(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from gptperf.plotting import PLOT_FORMATS, is_gptperf_picture, pyplot, save_figure

    plt = pyplot()
    for fmt in PLOT_FORMATS:
        fig, ax = plt.subplots()
        ax.plot([1, 2], [3, 4])
        ours = save_figure(fig, tmp_path / f"ours.{fmt}")
        fig, ax = plt.subplots()
        ax.plot([1, 2], [3, 4])
        fig.savefig(tmp_path / f"theirs.{fmt}")  # matplotlib's own maker, not gptperf
        plt.close(fig)
        assert is_gptperf_picture(ours), fmt
        assert not is_gptperf_picture(tmp_path / f"theirs.{fmt}"), fmt
    (tmp_path / "ours.txt").write_bytes((tmp_path / "ours.png").read_bytes())  # not a picture's name
    assert not is_gptperf_picture(tmp_path / "ours.txt")
    assert not is_gptperf_picture(tmp_path / "missing.png")
    fig, ax = plt.subplots()
    fig.savefig(tmp_path / "titled.svg", metadata={"Title": "gptperf"})  # a user's SVG so titled
    plt.close(fig)
    assert b"<dc:title>gptperf</dc:title>" in (tmp_path / "titled.svg").read_bytes()
    assert not is_gptperf_picture(tmp_path / "titled.svg")


def test_a_quoted_tilde_in_a_picture_path_is_the_home_folder_checked_and_written(
        tmp_path, capsys, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (home / "mine.png").write_bytes(b"a user's picture")
    assert main(["roofline", "saxpy", "--n", "10", "--plot", "~/mine.png"]) == 2  # checked there
    assert (home / "mine.png").read_bytes() == b"a user's picture"
    assert main(["roofline", "saxpy", "--n", "10", "--plot", "~/new.png"]) == 0
    assert (home / "new.png").exists() and not (tmp_path / "~").exists()  # and written there



def test_roofline_exact_column_keeps_every_digit_of_a_count_past_float_precision():
    from gptperf.commands.roofline import _exact

    k = 99_999_999_999_999_999_999_999  # 2·4·4·k is far past 2**53: a float would round it
    flops = matmul(4, 4, k, "fp32").flops
    assert _exact(flops) == "3199999999999999999999968"
    assert _exact(12.0) == "12"
