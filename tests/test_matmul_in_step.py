"""A CPU's few-row matmuls inside a step (`gptperf.measure.matmul_in_step`): the ratio's
arithmetic, its measurement with a timer that stands in for the CPU's (so each answer is known),
and how the calibration reads it by the weight's size and charges each grid's on that grid's
reading, to few-row matmuls only."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from test_expected import HUGE, T0, flat_calibration

from gptperf.errors import UserError
from gptperf.measure import calibration_plan as cp
from gptperf.measure import matmul_in_step as in_step_module
from gptperf.measure.kernel_timer import MAX_COPIES, POOL_BYTES, KernelTimer, OperandPool
from gptperf.measure.matmul_in_step import in_step_note, in_step_ratio, measure_matmul_in_step
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.curves import Grid

SIZES = [4e5, 4e6]  # bytes of two weights
IN_STEP = {"bytes": SIZES, "ratios": [1.2, 1.0]}


def test_the_ratio_is_the_matmuls_time_between_the_ops_less_theirs_over_its_time_back_to_back():
    assert in_step_ratio(1.0, 3.2, 2.0) == pytest.approx(1.2)
    assert in_step_ratio(1.0, 2.0, 2.0) is None  # the ops took the pair's whole time: noise
    assert in_step_ratio(0.0, 3.0, 2.0) is None


def test_each_layer_is_timed_three_ways_at_each_row_count_every_round_and_its_median_kept_by_size():
    calls: list[str] = []
    # (N, K) -> the seconds of its three timings: back to back, with the ops, the ops alone
    timings = {layer: (1e-5, 1e-5 * (1 + i / 10) + 2e-5, 2e-5) for i, layer in enumerate(cp.MATMUL_IN_STEP_LAYERS)}

    class Timer(KernelTimer):
        def __call__(self, call, what="", nbytes=0.0):  # noqa: ANN001 - KernelTimer's signature
            call(0)
            calls.append(what)
            m, n, k = (int(x) for x in what.split()[2].rstrip(":,").split("×"))
            assert m in cp.MATMUL_IN_STEP_ROWS
            back, paired, ops = timings[(n, k)]
            return paired if "between" in what else ops if "alone" in what else back

    entry = measure_matmul_in_step(Timer(torch.device("cpu"), True), "fp32", cold=False)
    assert len(calls) == 3 * len(cp.matmul_in_step_cells()) * cp.MATMUL_IN_STEP_ROUNDS
    by_size = {4.0 * n * k: 1 + i / 10 for i, (n, k) in enumerate(cp.MATMUL_IN_STEP_LAYERS)}
    assert entry["bytes"] == sorted(by_size)
    assert entry["ratios"] == pytest.approx([by_size[b] for b in sorted(by_size)])
    assert "0.20 MiB ×1.00" in in_step_note("fp32:warm", entry) and "from the cache" in in_step_note("fp32:warm", entry)
    assert "from memory" in in_step_note("fp32", entry)
    # the probes' shapes are calibration shapes: a validation stays off them
    assert all(list(cell) in cp.planned_shapes("cpu")["matmul"] for cell in cp.matmul_in_step_cells())


def test_a_size_whose_probes_all_timed_as_noise_is_left_out_and_none_left_is_none():
    noisy = cp.MATMUL_IN_STEP_LAYERS[0]

    class Timer(KernelTimer):
        def __call__(self, call, what="", nbytes=0.0):  # noqa: ANN001 - KernelTimer's signature
            n, k = (int(x) for x in what.split()[2].rstrip(":,").split("×")[1:])
            if "between" in what:
                return 2e-5 if (n, k) == noisy else 3.1e-5  # the noisy layer: no longer than its ops
            return 2e-5 if "alone" in what else 1e-5

    entry = measure_matmul_in_step(Timer(torch.device("cpu"), True), "fp32", cold=True)
    assert 4.0 * noisy[0] * noisy[1] not in entry["bytes"]
    assert len(entry["bytes"]) == len(cp.MATMUL_IN_STEP_LAYERS) - 1
    assert entry["ratios"] == pytest.approx([1.1] * len(entry["bytes"]))

    class Noise(KernelTimer):
        def __call__(self, call, what="", nbytes=0.0):  # noqa: ANN001 - KernelTimer's signature
            return 1e-5

    assert measure_matmul_in_step(Noise(torch.device("cpu"), True), "fp32", cold=False) is None


def _warm_calibration(**changes: object) -> Calibration:
    grid = Grid(("M", "N", "K"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))
    warm = Grid(("M", "N", "K"), ((1.0, 16.0), (HUGE,), (HUGE,)), (T0 / 2, T0 / 2))
    return flat_calibration("cpu", matmul={"fp32": grid, "fp32:warm": warm}, **changes)


def test_the_ratio_is_read_by_the_weights_bytes_between_its_sizes_and_held_beyond_them():
    cal = _warm_calibration(matmul_in_step={"fp32:warm": IN_STEP})
    assert cal.in_step_ratio("fp32:warm", 100, 1000) == pytest.approx(1.2)  # 0.4 MB, the first size
    assert cal.in_step_ratio("fp32:warm", 10, 10) == pytest.approx(1.2)  # below it: held
    assert cal.in_step_ratio("fp32:warm", 1000, 1000) == pytest.approx(1.0)  # 4 MB
    assert cal.in_step_ratio("fp32:warm", 5000, 5000) == pytest.approx(1.0)  # beyond: held
    middle = math.sqrt(SIZES[0] * SIZES[1]) / 4  # halfway in log bytes, in fp32 elements
    assert cal.in_step_ratio("fp32:warm", middle, 1) == pytest.approx(1.1)
    assert cal.in_step_ratio("fp32", 100, 1000) == 1.0  # the plain grid's: not measured here
    assert _warm_calibration().in_step_ratio("fp32:warm", 100, 1000) == 1.0  # an older calibration


def test_a_few_row_matmul_pays_each_grids_ratio_on_that_grids_reading():
    cold = {"bytes": SIZES, "ratios": [1.5, 1.0]}
    cal = _warm_calibration(matmul_in_step={"fp32:warm": IN_STEP, "fp32": cold})
    assert cal.matmul_seconds("fp32", 4, 100, 1000, warm=1.0) == pytest.approx(T0 / 2 * 1.2)
    assert cal.matmul_seconds("fp32", 4, 100, 1000) == pytest.approx(T0 * 1.5)  # from memory: its own
    assert cal.matmul_seconds("fp32", 4, 100, 1000, warm=0.5) == pytest.approx(1.5 * T0 + 0.5 * (0.6 * T0 - 1.5 * T0))
    assert cal.matmul_seconds("fp32", 64, 100, 1000, warm=1.0) == pytest.approx(T0)  # not a few-row matmul
    warm_only = _warm_calibration(matmul_in_step={"fp32:warm": IN_STEP})
    assert warm_only.matmul_seconds("fp32", 4, 100, 1000) == pytest.approx(T0)


def test_the_ratio_is_kept_read_back_and_checked():
    cal = _warm_calibration(matmul_in_step={"fp32:warm": IN_STEP, "fp32": IN_STEP})
    assert Calibration.from_dict(cal.to_dict()).matmul_in_step == {"fp32:warm": IN_STEP, "fp32": IN_STEP}
    document = cal.to_dict()
    del document["matmul_in_step"]  # written before the ratio was measured
    assert Calibration.from_dict(document).matmul_in_step == {}
    for broken in ({"bytes": SIZES, "ratios": [1.2]}, {"bytes": SIZES[::-1], "ratios": [1.2, 1.0]},
                   {"bytes": SIZES, "ratios": [1.2, -1.0]}, {"bytes": [], "ratios": []}, "1.2"):
        with pytest.raises(UserError, match=r"matmul_in_step\['fp32'\] needs as many increasing sizes as ratios"):
            _warm_calibration(matmul_in_step={"fp32": broken})


def test_from_memory_the_step_side_reads_copies_past_the_grids_pool_and_from_the_cache_the_same(monkeypatch):
    made: list[tuple[int, int]] = []

    def pool(device, dtype, nbytes, max_copies=MAX_COPIES):  # noqa: ANN001 - OperandPool's signature
        made.append((nbytes, max_copies))
        return OperandPool(device, dtype, 4 * 2**20, max_copies)  # small: this timer runs nothing

    class Timer(KernelTimer):
        def __call__(self, call, what="", nbytes=0.0):  # noqa: ANN001 - KernelTimer's signature
            return 3e-5 if "between" in what else 1e-5

    monkeypatch.setattr(in_step_module, "OperandPool", pool)
    monkeypatch.setattr(in_step_module, "MATMUL_IN_STEP_ROUNDS", 1)
    measure_matmul_in_step(Timer(torch.device("cpu"), True), "fp32", cold=True)
    assert made == [(POOL_BYTES["cpu"], MAX_COPIES), (cp.IN_STEP_MEMORY_BYTES, sys.maxsize)]
    made.clear()
    measure_matmul_in_step(Timer(torch.device("cpu"), True), "fp32", cold=False)
    assert made == [(cp.WARM_POOL_BYTES, MAX_COPIES)]
