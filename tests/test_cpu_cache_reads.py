"""A CPU step's reads from its cache, as the calibration measures and the prediction charges them:
the one-query attention timed from the cache (`ONE_QUERY_WARM`), few-row matmuls row by row (the
library's blocks of rows, `gptperf.measure.matmul_rows`), and the warm matmul grid beyond its
pool. Synthetic calibrations with hand-computed answers; the measurements run with timers that
stand in for the CPU's, so each answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from test_expected import HUGE, T0, flat_calibration

from gptperf.errors import UserError
from gptperf.measure import calibrate_kernels as ck
from gptperf.measure import calibration_plan as cp
from gptperf.measure.kernel_timer import CPU_EVICT_MIN_BYTES, KernelTimer
from gptperf.measure.matmul_rows import measure_matmul_rows, row_ratios, rows_note
from gptperf.model.config import preset
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.curves import Grid
from gptperf.perfmodel.expected import _cache_note, expected
from gptperf.perfmodel.kernel_calls import kernel_calls
from gptperf.perfmodel.memory import memory_breakdown
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan

COLD = Grid(("BH", "L", "D"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))  # every one-query call T0
WARM = Grid(("BH", "L", "D"), ((HUGE,), (HUGE,), (HUGE,)), (T0 / 4,))  # its twin from the cache


def _attention(twin: Grid | None = None, **changes: object) -> Calibration:
    """A CPU calibration whose attention grids all read T0, with the one-query twin `twin`."""
    attention = {f"fp32:{p}": COLD for p in ("causal_fwd", "causal_fwd_bwd", "one_query")}
    if twin is not None:
        attention["fp32:one_query_warm"] = twin
    return flat_calibration("cpu", attention=attention, **changes)


# -- the one-query attention from the cache ----------------------------------------------------


def test_a_one_query_attention_is_read_its_share_of_the_way_to_the_grid_from_the_cache():
    cal = _attention(WARM)
    assert cal.attention_seconds("fp32:one_query", 8, 64, 16) == pytest.approx(T0)
    assert cal.attention_seconds("fp32:one_query", 8, 64, 16, warm=1.0) == pytest.approx(T0 / 4)
    assert cal.attention_seconds("fp32:one_query", 8, 64, 16, warm=0.5) == pytest.approx(T0 * (1 - 0.5 * 3 / 4))
    # the causal passes read activations just written: no twin, whatever the share
    assert cal.attention_seconds("fp32:causal_fwd", 8, 64, 16, warm=1.0) == pytest.approx(T0)
    # a calibration from before the twin was measured reads the grid
    assert _attention().attention_seconds("fp32:one_query", 8, 64, 16, warm=1.0) == pytest.approx(T0)


def test_a_cpu_decode_in_the_cache_pays_its_attention_from_the_cache_and_says_so():
    """A decode step whose tensors fit in the cache: each layer's one-query attention at the warm
    grid's time (T0/4 against T0), the note naming it; a step over the cache reads the grid."""
    cfg, decode = preset("tiny"), Workload("decode", 4, 64, "fp32")
    plan = ExecutionPlan.default("decode", "cpu")
    peak = memory_breakdown(cfg, decode, plan).total
    calls = sum(k.count for k in kernel_calls(cfg, decode, plan)
                if k.family == "attention" and k.key.endswith(":one_query"))

    def run(cache_bytes: float, twin: Grid | None = WARM) -> tuple[float, list[str]]:
        e = expected(cfg, decode, plan, _attention(twin, cache_bytes=cache_bytes))
        return e.device_s, e.notes

    (fits, notes), (over, over_notes) = run(2 * peak), run(peak / 2)
    assert calls == cfg.n_layer and over - fits == pytest.approx(calls * T0 * 3 / 4)
    assert any("its one-query attention" in n and "last-level cache" in n for n in notes)
    assert not any("one-query" in n for n in over_notes)
    assert run(2 * peak, twin=None)[0] == pytest.approx(over)  # no twin: the grid, in or out of the cache


def test_the_cache_note_speaks_of_one_kind_of_call_in_the_singular():
    """The note's verb and pronoun follow the calls it names: one attention "is read ... its", the
    matmuls "are read ... their", and any two together are plural."""
    cal = _attention(WARM, cache_bytes=1.0)
    one = _cache_note(1.0, cal, [("its one-query attention", False)])
    assert one is not None and "its one-query attention is read on its timing" in one
    many = _cache_note(1.0, cal, [("its matmuls of few rows", True)])
    assert many is not None and "are read on their timing" in many
    both = _cache_note(1.0, cal, [("its one-query attention", False), ("AdamW's loop", False)])
    assert both is not None and "attention and AdamW's loop are read on their timing" in both
    assert _cache_note(0.0, cal, [("its one-query attention", False)]) is None


def test_the_one_query_twin_is_a_cpu_pass_timed_without_eviction():
    assert cp.ONE_QUERY_WARM in cp.attention_passes("cpu") and cp.ONE_QUERY_WARM not in cp.attention_passes("cuda")
    assert cp.attention_axes("cpu", cp.ONE_QUERY_WARM, False) == cp.attention_axes("cpu", "one_query", False)
    seen: list[float] = []

    class Timer(KernelTimer):
        def __call__(self, call, what="", nbytes=0.0):  # noqa: ANN001 - KernelTimer's signature
            seen.append(nbytes)
            return 1e-5

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(cp.ONE_QUERY_BH, "cpu", (2,))
        mp.setitem(cp.ONE_QUERY_L, "cpu", (1024,))
        mp.setitem(cp.ONE_QUERY_D, "cpu", (64,))
        mp.setitem(cp.ATTENTION_BH, "cpu", (2,))
        mp.setitem(cp.ATTENTION_T, "cpu", (16,))
        mp.setitem(cp.ATTENTION_D, "cpu", (16,))
        grids = ck.measure_attention("cpu", "fp32", timer=Timer(torch.device("cpu"), True))
    # the one-query cell (2 × 1024 × 64 fp32: 1 MiB of KV, evicted before each call on the grid)
    # is timed with no eviction from the cache; every other pass as before
    big = cp.attention_bytes("fp32", "one_query", 2, 1024, 64)
    assert big >= CPU_EVICT_MIN_BYTES
    assert sorted(seen) == sorted([0.0] + [cp.attention_bytes("fp32", p, 2, t, d) for p, t, d in (
        ("causal_fwd", 16, 16), ("causal_fwd_bwd", 16, 16), ("one_query", 1024, 64))])
    assert "last-level cache" in grids["fp32:one_query_warm"].what


# -- few-row matmuls row by row ----------------------------------------------------------------


def test_row_ratios_are_each_rows_time_over_its_log_log_reading_between_the_grid_rows():
    # a library in blocks of 8 rows: rows 1-8 take 1 s, 9-16 take 2 s
    seconds = [1.0] * 8 + [2.0] * 8
    ratios = row_ratios(seconds, (1, 2, 3, 4, 8, 16, 64))
    assert ratios[:8] == pytest.approx([1.0] * 8) and ratios[15] == pytest.approx(1.0)
    f = math.log(9 / 8) / math.log(2)  # row 9 between rows 8 and 16, in log
    assert ratios[8] == pytest.approx(2.0 / (1.0 ** (1 - f) * 2.0 ** f))
    assert ratios[8] > ratios[12] > 1.0
    assert row_ratios([3.0, 5.0], ()) == [1.0, 1.0]  # no grid row among them: nothing to read against


def test_a_matmul_of_few_rows_pays_its_row_ratio_on_the_cache_side_only():
    grid = Grid(("M", "N", "K"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))
    warm = Grid(("M", "N", "K"), ((1.0, 16.0), (HUGE,), (HUGE,)), (T0 / 2, T0 / 2))
    rows = {"rows": [float(m) for m in range(1, 17)], "ratios": [1.0] * 8 + [1.5] * 8}
    cal = flat_calibration("cpu", matmul={"fp32": grid, "fp32:warm": warm}, matmul_rows={"fp32": rows})
    assert cal.row_ratio("fp32", 9) == 1.5 and cal.row_ratio("fp32", 8) == 1.0
    assert cal.row_ratio("fp32", 40) == 1.0 and cal.row_ratio("bf16", 9) == 1.0
    assert cal.matmul_seconds("fp32", 9, 64, 64, warm=1.0) == pytest.approx(T0 / 2 * 1.5)
    assert cal.matmul_seconds("fp32", 9, 64, 64, warm=0.5) == pytest.approx(T0 + 0.5 * (T0 * 0.75 - T0))
    assert cal.matmul_seconds("fp32", 9, 64, 64) == pytest.approx(T0)  # from memory: the grid's reading
    older = flat_calibration("cpu", matmul={"fp32": grid, "fp32:warm": warm})
    assert older.matmul_seconds("fp32", 9, 64, 64, warm=1.0) == pytest.approx(T0 / 2)
    assert Calibration.from_dict(cal.to_dict()).matmul_rows == {"fp32": rows}
    document = older.to_dict()
    del document["matmul_rows"]  # written before the rows were measured
    assert Calibration.from_dict(document).matmul_rows == {}
    for broken in ({"rows": [1.0, 2.0], "ratios": [1.0]}, {"rows": [1.0], "ratios": [-1.0]}, "9 rows"):
        with pytest.raises(UserError, match=r"matmul_rows\['fp32'\] needs as many rows as ratios"):
            flat_calibration("cpu", matmul_rows={"fp32": broken})


def test_the_rows_are_measured_one_by_one_against_the_grid_rows():
    calls: list[str] = []

    class Timer(KernelTimer):
        def __call__(self, call, what="", nbytes=0.0):  # noqa: ANN001 - KernelTimer's signature
            call(0)
            calls.append(what)
            m = int(what.split()[2].split("×")[0])
            return 1e-5 * (1 if m <= 8 else 2)  # a library in blocks of 8 rows

    entry = measure_matmul_rows(Timer(torch.device("cpu"), True), "fp32", (1.0, 2.0, 3.0, 4.0, 8.0, 16.0, 64.0))
    assert len(calls) == len(cp.matmul_row_cells()) == cp.WARM_M * len(cp.MATMUL_ROW_LAYERS)
    assert entry["rows"] == [float(m) for m in range(1, cp.WARM_M + 1)]
    assert entry["ratios"] == pytest.approx(row_ratios([1.0] * 8 + [2.0] * 8, (1, 2, 3, 4, 8, 16)))
    assert "9 rows ×1.78" in rows_note("fp32", entry)  # 2 s over 2^log2(9/8) s: 16/9
    # the probes' shapes are calibration shapes: a validation stays off them
    assert all(list(cell) in cp.planned_shapes("cpu")["matmul"] for cell in cp.matmul_row_cells())


# -- the warm matmul grid beyond its pool ------------------------------------------------------


def test_warm_cells_beyond_the_pool_run_at_the_measured_cells_speed_at_most_the_grids():
    """A cell whose operands do not fit the warm pool is extrapolated from the measured warm cell
    below it by its work (growth 1), and never read slower than the grid from memory."""
    grid = Grid(("M", "N", "K"), ((1.0, 16.0), (64.0, 4096.0), (64.0, 4096.0)),
                (1e-6, 1e-4, 1e-4, 2e-3, 2e-6, 1e-4, 1e-4, 2e-3))
    measured = {(1, 64, 64): 5e-7, (16, 64, 64): 1e-6}

    class Timer(KernelTimer):
        def __call__(self, call, what="", nbytes=0.0):  # noqa: ANN001 - KernelTimer's signature
            m, n, k = (int(x) for x in what.split()[2].split("×"))
            return measured[(m, n, k)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ck, "warm_matmul_cells", lambda dtype, quick: list(measured))
        warm = ck._measure_matmul_warm(torch.device("cpu"), "fp32", True, None, Timer(torch.device("cpu"), True), grid)
    assert warm.at(1, 64, 64) == pytest.approx(5e-7) and warm.at(16, 64, 64) == pytest.approx(1e-6)
    assert warm.at(1, 4096, 64) == pytest.approx(5e-7 * 64)  # 64x the work, the warm speed
    assert warm.at(1, 4096, 4096) == pytest.approx(2e-3)  # 4096x the work: the grid's time is less
    assert "extrapolated from them at their speed" in warm.what


def test_the_cpu_measures_head_size_16_in_full_and_quick_sweeps():
    for quick in (False, True):
        for pass_ in ("causal_fwd", "one_query", cp.ONE_QUERY_WARM):
            assert cp.attention_axes("cpu", pass_, quick)[2] == (16, 32, 64)

