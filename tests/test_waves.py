"""Wave quantization of the matmul grid: the factor by hand, the quantized read against a known
law, the choice of tile from probes, and the calibration that keeps it."""

from __future__ import annotations

import math
from itertools import product

import pytest

from gptperf.errors import UserError
from gptperf.perfmodel.calibration import Calibration, Grid, quantized
from gptperf.perfmodel.expected import KernelCall, call_time
from gptperf.perfmodel.waves import MAX_K, choose_tile, wave_factor

AXES = ((256.0, 1024.0, 4096.0, 16384.0), (256.0, 1024.0, 4096.0), (256.0, 1024.0, 4096.0))
UNITS = 132


def law(tile: tuple[int, int] | None):
    """Seconds of a kernel that runs whole waves of `tile` at 1 ns per multiply-add covered (the
    smooth M·N·K law without a tile)."""
    def seconds(m: float, n: float, k: float) -> float:
        covered = m * n * (wave_factor(m, n, tile, UNITS) if tile else 1.0)
        return covered * k * 1e-9
    return seconds


def grid_of(seconds) -> Grid:
    return Grid(("M", "N", "K"), AXES, tuple(seconds(*p) for p in product(*AXES)))


def test_wave_factor_by_hand() -> None:
    # 8000×768 in 128×256 tiles: 63·3 = 189 tiles, 2 waves of 132: 264 tiles of 32768 outputs
    assert wave_factor(8000, 768, (128, 256), 132) == pytest.approx(264 * 32768 / (8000 * 768))
    # 4096×1024: 32·4 = 128 tiles, one wave, 4 SMs idle
    assert wave_factor(4096, 1024, (128, 256), 132) == pytest.approx(132 / 128)
    # a shape that fills its waves exactly costs nothing extra
    assert wave_factor(132 * 128, 256, (128, 256), 132) == pytest.approx(1.0)


def test_the_quantized_read_recovers_the_law_off_the_grid() -> None:
    tile = (128, 256)
    grid = grid_of(law(tile))
    read = quantized(grid, tile, UNITS)
    for m, n, k in ((8000, 768, 3072), (3000, 2304, 768), (12288, 768, 1536)):
        assert read(m, n, k) == pytest.approx(law(tile)(m, n, k), rel=1e-9)
        # the plain grid, smooth between powers of two, misses the jump
        assert abs(grid.at(m, n, k) / law(tile)(m, n, k) - 1) > 0.05
    # on the grid's own points both agree with what was measured
    assert read(4096, 1024, 256) == pytest.approx(grid.at(4096, 1024, 256))


def probes_of(seconds) -> list:
    shapes = [(m, n, k) for m in (1536, 6144, 24576) for n, k in ((1152, 384), (2304, 768), (768, 3072))]
    return [(s, seconds(*s)) for s in shapes]


@pytest.mark.parametrize("tile", [(128, 256), (64, 128)])
def test_probes_pick_the_tile_that_made_them(tile: tuple[int, int]) -> None:
    grid = grid_of(law(tile))
    waves, note = choose_tile(probes_of(law(tile)), grid.at, lambda t: quantized(grid, t, UNITS), UNITS)
    assert waves is not None and tuple(waves["tile"]) == tile and waves["units"] == UNITS
    assert waves["error"] == pytest.approx(0.0, abs=1e-9) and waves["plain_error"] > 0.03
    assert note.endswith("kept")


def test_a_smooth_kernel_keeps_no_tile() -> None:
    grid = grid_of(law(None))
    waves, note = choose_tile(probes_of(law(None)), grid.at, lambda t: quantized(grid, t, UNITS), UNITS)
    assert waves is None and note.endswith("not kept")


def calibration(waves: dict) -> Calibration:
    grid = grid_of(law((128, 256)))
    return Calibration("Test GPU", "cuda", "2.x", "2026-12-02T00:00:00+00:00", 1.0,
                       matmul={"fp32": grid, "bf16": grid}, matmul_waves=waves)


def test_the_calibration_reads_a_dtype_with_its_waves_and_keeps_them() -> None:
    cal = calibration({"fp32": {"tile": [128, 256], "units": UNITS, "error": 0.0, "plain_error": 0.1}})
    m, n, k = 8000, 768, 3072
    fp32 = call_time(KernelCall("matmul", "fp32", (m, n, k), count=2), cal)
    assert fp32 == pytest.approx(2 * law((128, 256))(m, n, k))
    assert call_time(KernelCall("matmul", "bf16", (m, n, k)), cal) == pytest.approx(cal.matmul["bf16"].at(m, n, k))
    again = Calibration.from_dict(cal.to_dict())
    assert again.matmul_waves == cal.matmul_waves
    assert again.matmul_seconds("fp32", m, n, k) == pytest.approx(fp32 / 2)
    assert math.isclose(calibration({}).matmul_seconds("fp32", m, n, k), cal.matmul["fp32"].at(m, n, k))


def test_a_matmul_deeper_than_max_k_is_read_from_the_plain_grid() -> None:
    """A long K is split over the SMs: the waves apply up to MAX_K and not beyond."""
    cal = calibration({"fp32": {"tile": [128, 256], "units": UNITS, "error": 0.0, "plain_error": 0.1}})
    m, n = 3000, 2304
    assert cal.matmul_seconds("fp32", m, n, MAX_K) == pytest.approx(law((128, 256))(m, n, MAX_K))
    deep = 2 * MAX_K
    assert cal.matmul_seconds("fp32", m, n, deep) == pytest.approx(cal.matmul["fp32"].at(m, n, deep))
    assert abs(cal.matmul["fp32"].at(m, n, deep) / law((128, 256))(m, n, deep) - 1) > 0.05
    # the rule is the quantized read's own, whoever reads it (the calibration's tile choice too)
    read = quantized(cal.matmul["fp32"], (128, 256), UNITS)
    assert read(m, n, deep) == cal.matmul["fp32"].at(m, n, deep)


def test_a_broken_waves_entry_is_refused_in_one_line() -> None:
    doc = calibration({}).to_dict()
    doc["matmul_waves"] = {"fp32": {"tile": [128], "units": 132}}
    with pytest.raises(UserError, match="broken") as err:
        Calibration.from_dict(doc)
    assert "\n" not in str(err.value)


def test_gptperf_calibrate_shows_the_waves_it_reads_a_grid_with(capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.commands.calibrate import print_calibration

    waves = {"fp32": {"tile": [128, 256], "units": UNITS, "error": 0.029, "plain_error": 0.063}}
    print_calibration(calibration(waves), cached=False, path=None)
    words = " ".join(w for w in capsys.readouterr().out.split() if w != "│")  # cells wrap
    assert "read with waves of 128×256 tiles on 132 SMs (off-grid probes 6.3% → 2.9%)" in words
    assert words.count("read with waves") == 1  # bf16 kept none
