"""The calibration's kernel micro-benchmarks (`gptperf.measure.calibrate_kernels`): the plan is what
is measured, keys and x definitions as docs say, times grow where the work does, cells left out
are extrapolated from measured ones. CPU runs use small monkeypatched point lists; GPU tests are
marked."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import pytest
import torch

from gptperf.dtypes import dtype_bytes
from gptperf.errors import UserError
from gptperf.measure import cache_reach
from gptperf.measure import calibrate_decode as cd
from gptperf.measure import calibrate_kernels as ck
from gptperf.measure import calibrate_optimizer as co
from gptperf.measure import calibration_passes as cps
from gptperf.measure import calibration_plan as cp
from gptperf.measure import kernel_timer as kt
from gptperf.measure.calibration_tables import fill_grid, guarded
from gptperf.perfmodel.curves import Curve, Grid

pytestmark = pytest.mark.usefixtures("one_thread")

KIB, MIB = 2**10, 2**20
SMALL_REACH_LAYERS = (1, 2, 4)  # the cache reach's layer counts in the small sweep


def _small(mp: pytest.MonkeyPatch) -> None:
    """Small CPU point lists, tables and timed loops, so a whole sweep takes a second or two."""
    mp.setitem(cp.MATMUL_M, "cpu", (1, 16, 256))
    mp.setitem(cp.MATMUL_M_KEPT, "cpu", ())
    mp.setitem(cp.MATMUL_N, "cpu", (128, 512))
    mp.setitem(cp.MATMUL_K, "cpu", (128, 256))
    mp.setitem(cp.ATTENTION_BH, "cpu", (2, 4))
    mp.setitem(cp.ATTENTION_T, "cpu", (16, 64))
    mp.setitem(cp.ATTENTION_D, "cpu", (16,))
    mp.setitem(cp.ONE_QUERY_BH, "cpu", (2,))
    mp.setitem(cp.ONE_QUERY_L, "cpu", (32, 128))
    mp.setitem(cp.ONE_QUERY_D, "cpu", (16,))
    mp.setitem(cp.VECTOR_SIZES, "cpu", (4 * KIB, 64 * KIB, 1 * MIB))
    for module in (cp, ck):  # the plan's sizes and the measurement's tables agree
        mp.setattr(module, "VOCAB", 1000)
        mp.setattr(module, "EMBED", 64)
    mp.setattr(cp, "OPTIMIZER_LOOP_SIZES", (256, 4096))
    mp.setattr(cp, "OPTIMIZER_COLD_POOL_BYTES", 8 * MIB)
    mp.setitem(kt.POOL_BYTES, "cpu", 4 * MIB)
    mp.setitem(ck.CPU_POINT_S, False, 0.002)
    mp.setitem(ck.CPU_POINT_S, True, 0.002)
    # small as the lists are, the largest matmul cells are left out: the fill is exercised too
    mp.setitem(cp.MAX_CALL_S, "cpu", cp._matmul_cost("cpu", "fp32", 256, 512, 128)[0])
    mp.setattr(cache_reach, "CACHE_REACH_LAYERS", SMALL_REACH_LAYERS)  # 3 s a sweep at its 80 layers


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    _small(monkeypatch)


@pytest.fixture(scope="module")
def swept() -> Iterator[tuple[dict, list, dict, dict, dict]]:
    """One whole CPU sweep on the small lists (full and quick), its progress calls and the plans."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    calls: list[tuple[str, int, int]] = []
    try:
        with pytest.MonkeyPatch.context() as mp:  # undone before the tests run
            _small(mp)
            result = ck.measure_kernels("cpu", ["fp32"], progress=lambda s, d, t: calls.append((s, d, t)))
            quick = ck.measure_kernels("cpu", ["fp32"], quick=True)
            plans = cp.planned_shapes("cpu"), cp.planned_shapes("cpu", quick=True)
    finally:
        torch.set_num_threads(threads)
    yield result, calls, quick, *plans


# --- the plan is what is measured ----------------------------------------------------------------


def test_the_sweep_measures_exactly_the_planned_shapes(swept: tuple) -> None:
    result, _, _, planned, _ = swept
    assert result["shapes"] == planned
    assert planned["matmul"] and planned["attention"] and planned["vector"]
    # the largest cells were planned out by the cost model, and so not measured
    assert [256, 512, 256] not in planned["matmul"] and [256, 512, 128] in planned["matmul"]


def test_quick_mode_measures_the_thinned_plan(swept: tuple) -> None:
    _, _, result, full, planned = swept
    assert result["shapes"] == planned
    # every other point, the largest kept: M (1, 16, 256) -> (1, 256)
    assert result["matmul"]["fp32"].points[0] == (1.0, 256.0)
    assert len(planned["vector"]) < len(full["vector"])


def test_result_families_keys_and_progress(swept: tuple) -> None:
    result, calls, *_ = swept
    assert set(result) >= {"matmul", "attention", "vector", "optimizer", "gemv", "shapes", "seconds"}
    assert result["seconds"] > 0 and result["gemv"] == {}  # no Triton kernel on a CPU
    assert set(result["matmul"]) == {"fp32", "fp32:warm"} and isinstance(result["matmul"]["fp32"], Grid)
    # the grid's rows up to 16, timed from the cache: the small lists' M 1 and 16, all N and K
    cold, warm = result["matmul"]["fp32"], result["matmul"]["fp32:warm"]
    assert warm.points == ((1.0, 16.0), *cold.points[1:])
    assert set(result["attention"]) == {"fp32:causal_fwd", "fp32:causal_fwd_bwd", "fp32:one_query",
                                        "fp32:one_query_warm"}
    # the one-query pass again from the cache: the same cells
    one_query, from_cache = result["attention"]["fp32:one_query"], result["attention"]["fp32:one_query_warm"]
    assert one_query.axes == from_cache.axes == ("BH", "L", "D") and one_query.points == from_cache.points
    # every row up to 16 timed, each over its reading between the grid's rows (1 and 16 here)
    rows = result["matmul_rows"]["fp32"]
    assert rows["rows"] == [float(m) for m in range(1, 17)] and len(rows["ratios"]) == 16
    assert rows["ratios"][0] == pytest.approx(1.0) and rows["ratios"][-1] == pytest.approx(1.0)
    assert all(0 < r < 10 for r in rows["ratios"])
    assert result["attention"]["fp32:causal_fwd"].axes == ("BH", "T", "D")
    assert result["attention"]["fp32:causal_fwd"].growth == (1.0, 2.0, 1.0)
    assert result["matmul"]["fp32"].axes == ("M", "N", "K")
    # each off-grid probe kept with its own ratio (once per pass kept), their mean the ratio charged
    rows, offgrid = result["matmul_probes"]["fp32"], result["matmul_offgrid"]["fp32"]
    assert len(rows) == offgrid["probes"] > 0 and all(len(r) == 4 for r in rows)
    assert sum(r[3] for r in rows) / len(rows) == pytest.approx(offgrid["ratio"])
    # no kernel of their own in fp32; a weight's cast read from memory: the CPU's timer does that
    expected_ops = set(ck.VECTOR_OPS) - {"cast_to_fp32", "add_mixed", "cast_weight_to_bf16"}
    assert set(result["vector"]) == {f"{op}:fp32" for op in expected_ops}
    # a CPU's per-tensor loop, on one set of tensors and from memory; the grids: CUDA
    assert set(result["optimizer"]) == {"adamw_loop", "adamw_loop_cold"}
    assert all(isinstance(c, Curve) for c in result["vector"].values())
    # the loop: a tensor's time at each planned size
    for loop in result["optimizer"].values():
        assert isinstance(loop, Grid) and loop.axes == ("parameters",)
        assert loop.points == ((256.0, 4096.0),)
    # progress: every stage counts up to its total
    stages = {s for s, _, _ in calls}
    assert {"matmul fp32", "attention fp32", "vector fp32", "optimizer"} <= stages
    for stage in stages:
        done = [(d, t) for s, d, t in calls if s == stage]
        assert [d for d, _ in done] == list(range(1, len(done) + 1)) and done[-1][0] == done[-1][1]


def test_warm_cells_are_the_few_row_cells_whose_operands_fit_the_pool() -> None:
    """The cells timed from the cache: rows up to WARM_M, x, W and y twice within WARM_POOL_BYTES
    (6×640×160 fp32: 0.44 MB in; 4096×65536 weights: out)."""
    cells = cp.warm_matmul_cells("fp32", False)
    assert cells and all(m <= cp.WARM_M for m, _, _ in cells)
    assert all(8 * (m * k + n * k + m * n) <= cp.WARM_POOL_BYTES for m, n, k in cells)
    assert (4, 512, 128) in cells and (16, 65536, 4096) not in cells
    assert len(cp.warm_matmul_cells("fp32", True)) < len(cells)


def test_grid_cells_left_out_are_extrapolated_from_measured_ones(swept: tuple) -> None:
    grid = swept[0]["matmul"]["fp32"]
    assert len(grid.seconds) == 3 * 2 * 2  # the whole grid, measured or not
    measured = {tuple(c) for c in swept[0]["shapes"]["matmul"]}
    assert (256, 512, 256) not in measured
    # from the largest measured cell below it, linearly in work: (256, 512, 128) · 2
    assert grid.at(256, 512, 256) == pytest.approx(2 * grid.at(256, 512, 128))
    assert "measured" in grid.what


def test_fill_by_growth_exponents_hand_computed() -> None:
    axes = ((1, 2), (10, 20))
    measured = {(1, 10): 1.0, (2, 10): 3.0, (1, 20): 5.0}
    # (2, 20) from the measured cell below it with most work: (2, 10) when axis 1 counts
    # double, (1, 20) weighs log 1 + 2·log 20 > log 2 + 2·log 10 -> from (1, 20), times 2^1
    assert fill_grid(axes, measured, (1.0, 2.0)) == [1.0, 5.0, 3.0, 10.0]
    assert fill_grid(axes, measured, (3.0, 1.0)) == [1.0, 5.0, 3.0, 6.0]  # from (2, 10), · 20/10



def test_a_failed_section_is_left_out_with_a_one_line_note_and_a_working_one_passes_through() -> None:
    assert guarded("the launch gap", lambda: (3.0, ["kept"]), None) == (3.0, ["kept"])

    def fails() -> tuple[float, list[str]]:
        raise RuntimeError("no compiler found\nsecond line of the traceback")

    assert guarded("the launch gap", fails, {}) == (
        {}, ["the launch gap failed and is left out (RuntimeError: no compiler found)"])

# --- x definitions and points --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_vector_x_is_the_bytes_docs_define(dtype: str) -> None:
    e = {"fp32": 4, "bf16": 2}[dtype]
    target = 3 * MIB
    for op in ck.vector_ops("cuda", dtype):
        shape, x = cp._vector_shape(op, dtype, target)
        rows = shape.get("rows", 0)
        n = shape.get("n") or rows * 1024
        want = {
            "add": 3 * n * e, "add_mixed": n * (4 + e + 4), "copy": 2 * shape.get("b", 0) * 16 * shape.get("t", 0) * 64 * e,
            "cat": 2 * 3 * n * e, "cast_to_fp32": n * (e + 4), "cast_to_bf16": n * (e + 2),
            "cast_weight_to_bf16": n * (4 + 2),
            "layernorm_fwd": 2 * n * e, "layernorm_bwd": 3 * n * e, "gelu_fwd": 2 * n * e,
            "gelu_bwd": 3 * n * e, "softmax_fwd": 2 * n * e, "softmax_bwd": 3 * n * e,
            "cross_entropy_fwd": rows * 50304 * e, "cross_entropy_bwd": 2 * rows * 50304 * e,
            "embedding_fwd": 2 * rows * 768 * e, "embedding_bwd": rows * 768 * e,
            "sum_rows": n * e,
        }[op]
        assert x == want, op
        if op not in ("cross_entropy_fwd", "cross_entropy_bwd"):
            assert target / 2 < x <= target, op  # about the size asked for
    assert "cast_to_bf16" not in ck.vector_ops("cuda", "bf16") and "cast_to_fp32" in ck.vector_ops("cuda", "bf16")
    assert "add_mixed" in ck.vector_ops("cuda", "bf16") and "add_mixed" not in ck.vector_ops("cuda", "fp32")
    # a weight's cast: of an fp32 weight, on a GPU (a CPU's timer reads large calls from memory)
    assert "cast_weight_to_bf16" in ck.vector_ops("cuda", "fp32")
    assert "cast_weight_to_bf16" not in ck.vector_ops("cuda", "bf16") + ck.vector_ops("cpu", "fp32")


def test_the_cat_joins_three_row_blocks_and_a_weights_cast_reads_a_new_copy_each_call() -> None:
    """`cat` is torch.cat of three (rows, CAT_WIDTH) blocks into (rows, 3·CAT_WIDTH), the x its
    bytes say; `cast_weight_to_bf16` casts a distinct copy of its input each call (a weight comes
    from memory), where `cast_to_bf16` casts the same buffer every call."""
    dev = torch.device("cpu")
    shape, x = cp._vector_shape("cat", "fp32", 3 * MIB)
    out = ck._vector_call("cat", "fp32", shape, dev)(0)
    assert out.shape == (shape["rows"], 3 * cp.CAT_WIDTH) and 2 * out.numel() * 4 == x
    shape, _ = cp._vector_shape("cast_weight_to_bf16", "fp32", 64 * KIB)
    cold = ck._vector_call("cast_weight_to_bf16", "fp32", shape, dev)
    first, second = cold(0), cold(1)
    assert first.dtype == torch.bfloat16 and first.shape == (shape["n"],)
    assert not torch.equal(first, second)  # another copy: another random input
    warm = ck._vector_call("cast_to_bf16", "fp32", shape, dev)
    assert torch.equal(warm(0), warm(1))


def test_vector_points_strictly_increase_and_span_the_sizes() -> None:
    # past the last-level cache: the H200's 50 MiB of L2, the Intel VM's L3 (fast up to ~128 MiB)
    for kind, top in (("cuda", 1 * 2**30), ("cpu", 256 * MIB)):
        sizes = cp.VECTOR_SIZES[kind]
        assert sizes[0] == 4 * KIB and sizes[-1] == top and len(sizes) >= 8
        for op in ck.VECTOR_OPS:
            xs = [x for _, x in ck.vector_points(kind, "bf16", op, False)]
            assert xs == sorted(set(xs)), (kind, op)
            assert len(xs) >= 5, (kind, op)
            assert all(b >= cp.VECTOR_MIN_STEP * a for a, b in zip(xs[:-2], xs[1:-1], strict=True))


def test_optimizer_blocks_span_the_parameter_counts() -> None:
    assert ck.optimizer_params(128, 1) == 12 * 128**2 + 13 * 128  # by hand: 198 272
    gpu = [ck.optimizer_params(c, n) for c, n in cp.OPTIMIZER_BLOCKS["cuda"]]
    assert gpu == sorted(gpu) and gpu[0] < 3e5 and 1.5e9 < gpu[-1] <= 2.1e9
    assert all(128 <= c <= 2048 for c, _ in cp.OPTIMIZER_BLOCKS["cuda"])
    assert len(ck.block_shapes(64)) == 12


def test_cpu_optimizer_loop_sizes_span_a_layernorm_to_a_large_embedding() -> None:
    """The loop's sizes run from a LayerNorm's 256 parameters past a gpt2 block's largest, each
    point steps 2^20 parameters (1 to 64 tensors); quick mode keeps every other, the largest."""
    sizes = cp.optimizer_loop_sizes(False)
    assert sizes == tuple(sorted(set(sizes))) and sizes[0] == 256 and sizes[-1] > 4 * 768 * 3072
    quick = cp.optimizer_loop_sizes(True)
    assert set(quick) < set(sizes) and quick[-1] == sizes[-1]
    assert [cp.optimizer_loop_tensors(s) for s in (256, 16384, 65536, 2**20, 2**24)] == [64, 64, 16, 1, 1]


def test_gpu_plan_prunes_by_cost_and_keeps_the_spec_points() -> None:
    plan = cp.planned_shapes("cuda")
    cells = {tuple(c) for c in plan["matmul"]}
    assert (1, 65536, 16384) in cells and (16384, 128, 128) in cells  # skinny and tall: measured
    assert (16384, 65536, 16384) not in cells  # 2^44 multiply-adds: extrapolated
    assert all(m * n * k <= cp.MATMUL_MAX_MNK for m, n, k in cells)
    probes = set(cp.MATMUL_PROBES["cuda"])
    assert probes <= cells  # the off-grid probes are measured shapes too (disjointness)
    assert {m for m, _, _ in cells - probes} == set(cp.MATMUL_M["cuda"])
    assert not {m for m, _, _ in probes} & set(cp.MATMUL_M["cuda"])  # off the grid's M axis
    keys = {a[0] for a in plan["attention"]}
    # the one-query pass from the cache is a CPU's: a GPU step reads its KV cache from memory
    assert keys == ({f"{d}:{p}" for d in ("bf16", "fp32") for p in ck.ATTENTION_PASSES if p != cp.ONE_QUERY_WARM}
                    | {"bf16:fused_decode"})
    # every measured sdpa call is estimated under the cap at the roofline (per dtype)
    for key, bh, t, d in (a for a in plan["attention"] if not a[0].endswith(":fused_decode")):
        dtype, pass_ = key.split(":")
        assert cp._attention_cost("cuda", dtype, pass_, bh, t, d)[0] <= cp.MAX_CALL_S["cuda"]
    # fp32 runs at a fraction of bf16's rate: fewer of its cells fit under the cap
    fp32 = ck.matmul_cells("cuda", "fp32", False, None)
    assert len(fp32) < len(ck.matmul_cells("cuda", "bf16", False, None))
    # a smaller GPU plans fewer big shapes
    assert len(cp.planned_shapes("cuda", memory_bytes=2**30)["matmul"]) < len(plan["matmul"])


# What a point pays before its calls (H200, 2026-12-02, BENCHMARKS.md): torch's default attention
# in bf16/fp16 is cuDNN's, which builds a plan for every new shape (a bf16 point took 110 ms causal
# forward, 299 forward + backward and 246 one-query on a slow host, the family 25-28 s on three
# others, where the calls take microseconds; an fp32 point 12-34 ms), and each of the gemv
# family's Triton kernels compiles once per dtype (the family with two of them: 3.1-4.0 s for
# 28 points).
FIRST_CALL_S = {"attention": {"causal_fwd": 0.07, "causal_fwd_bwd": 0.22, "one_query": 0.18,
                              "masked_fwd": 0.07},  # causal_fwd's; H200: its 36 cells 1.6 s
                "attention_fp32": 0.01, "gemv_compile": 0.7, "fused_step": 1.5}


def estimated_seconds(device_type: str, quick: bool = False, *,
                      dtypes: Sequence[str] | None = None) -> dict[str, float]:
    """A guess of the calibration plan's wall time per family from its roofline cost model and
    what a point pays before its calls (`FIRST_CALL_S`): the budget check of the plan; the real
    figure depends on the machine."""
    kind = cp._kind(device_type)
    dtypes = cp.check_dtypes(dtypes if dtypes is not None else cp._default_dtypes(kind))

    def point(call_s: float) -> float:
        if kind == "cuda":  # capture, then warm-up and timed replays of ~TARGET_REPLAY_S each
            return 0.01 + 2 * call_s + (1 + cp.REPLAYS) * max(cp.TARGET_REPLAY_S, call_s)
        # samples of at least CPU_SAMPLE_S, MIN to MAX of them, until the point's budget is spent
        timed = min(cp.CPU_POINT_S[quick], cp.CPU_MAX_REPEATS * max(cp.CPU_SAMPLE_S, call_s))
        return 0.002 + 2 * call_s + max(timed, cp.CPU_MIN_REPEATS * call_s)

    out = {"matmul": 0.0, "attention": 0.0, "vector": 0.0, "optimizer": 0.0, "gemv": 0.0}
    for dtype in dtypes:
        out["matmul"] += sum(point(cp._matmul_cost(kind, dtype, *c)[0])
                             for c in cp.matmul_cells(kind, dtype, quick, None) + cp.matmul_probe_shapes(kind))
        if kind == "cpu":
            out["matmul"] += sum(point(cp._matmul_cost(kind, dtype, *c)[0]) for c in cp.warm_matmul_cells(dtype, quick))
        for pass_ in cp.attention_passes(kind):
            first = 0.0
            if kind == "cuda":
                first = FIRST_CALL_S["attention"][pass_] if dtype in ("bf16", "fp16") else \
                    FIRST_CALL_S["attention_fp32"]
            out["attention"] += sum(first + point(cp._attention_cost(kind, dtype, pass_, *c)[0])
                                    for c in cp.attention_cells(kind, dtype, pass_, quick, None))
    if kind == "cpu":  # the cache reach: every count of layers a round, each call all its layers
        layer_s = sum(cp._matmul_cost(kind, "fp32", *c)[0] for c in cp.CACHE_REACH_LAYER)
        out["matmul"] += cp.CACHE_REACH_ROUNDS * sum(point(n * layer_s) for n in cp.CACHE_REACH_LAYERS)
    for dtype in cp.vector_dtypes(dtypes):
        for op in cp.vector_ops(kind, dtype):
            for _, x in cp.vector_points(kind, dtype, op, quick):
                out["vector"] += point(cp._estimate_s(kind, dtype, 0, x))
    # AdamW reads param, grad, m, v and writes param, m, v; foreach passes over them ~4 times
    if kind == "cuda":  # fused, foreach, the one-pass master update
        tensors, params = cp.optimizer_axes(kind, quick)
        for p in params:
            step = cp._estimate_s(kind, "fp32", 0, 4 * 28 * p)
            out["optimizer"] += 3 * len(tensors) * (point(step) + step)  # + the step making the state
    else:  # the per-tensor loop on one set, then cycled through copies (each stepped first)
        for size in cp.optimizer_loop_sizes(quick):
            step = cp._estimate_s(kind, "fp32", 0, 4 * 28 * size * cp.optimizer_loop_tensors(size))
            copies = cp.optimizer_cold_copies(size)  # one copy: its time is the one set's
            out["optimizer"] += point(step) + step + (point(step) + copies * step if copies > 1 else 0.0)
    if kind == "cuda":
        # the one-row gemv over cp.GEMV_SIZES, the fused decode step's LM head kernel, and per
        # dtype either the whole step profiled or its two weight kernels as chains; each kernel
        # compiled once per dtype
        gemv_dtypes = [d for d in dtypes if d not in cp.GEMV_SKIPPED_DTYPES]
        # the plain gemv, and the two chains where the fused step is not profiled whole
        kernels = sum(1 if d in cp.FUSED_ATTENTION_DTYPES else 3 for d in gemv_dtypes)
        out["gemv"] = kernels * (FIRST_CALL_S["gemv_compile"] + sum(
            point(cp._estimate_s(kind, "bf16", 0, s)) for s in cp.thin_points(cp.GEMV_SIZES, quick)))
        for dtype in gemv_dtypes:
            out["gemv"] += FIRST_CALL_S["gemv_compile"] + sum(
                point(cp._estimate_s(kind, dtype, 0, n * k * dtype_bytes(dtype)))
                for n, k in cp.argmax_shapes(dtype, quick))
            if dtype not in cp.FUSED_ATTENTION_DTYPES:
                continue
            # the fused step profiled whole: a model built and captured, one replay, per width
            out["gemv"] += len(cp.fused_step_models(dtype, quick)) * FIRST_CALL_S["fused_step"]
            # the fused attention: a compile per (L, D), the K and V bytes a call
            heads, lengths, dims = cp.fused_attention_axes(quick)
            out["gemv"] += len(lengths) * len(dims) * FIRST_CALL_S["gemv_compile"] + sum(
                point(cp._estimate_s(kind, dtype, 0, 2 * h * n * d * dtype_bytes(dtype)))
                for h in heads for n in lengths for d in dims)
    return out


def test_one_query_attention_keeps_every_head_size_quick_or_not() -> None:
    """A decode's head size is read at its own point: the one-query pass measures D 32, 64 and 128
    on CUDA (32 too: charged at 64 it over-charged a 32-wide decode), in the quick sweep as well,
    while its batch·heads and lengths thin; the causal passes thin their head sizes as before."""
    for quick in (False, True):
        bh, lengths, dims = cp.attention_axes("cuda", "one_query", quick)
        assert dims == (32, 64, 128)
        assert (len(bh), len(lengths)) == ((5, 4) if not quick else (3, 3))
    assert cp.attention_axes("cpu", "one_query", True)[2] == (16, 32, 64)
    assert {d for *_, d in cp.attention_cells("cuda", "fp32", "one_query", True, None)} == {32, 64, 128}


def test_gpu_plan_fits_its_time_budget() -> None:
    """The cost model's guess of the whole GPU sweep stays inside its budget (matmul 40 s,
    attention 34 — cuDNN's plan for each bf16 shape is most of it; the family measured 17.9-24.9 s
    on H100s with the guess at 28.8-33.2 s —, vector 20, optimizer 6 (three variants),
    gemv 25 — Triton kernels compiled per dtype, the fused attention per (L, D) and six
    synthetic fused steps built, captured and profiled —; 100 s together, of the calibration's
    120: the guess ran 1.6-3× over the gemv family's measured time on an H200)."""
    full = estimated_seconds("cuda")
    assert full["matmul"] <= 40 and full["attention"] <= 34 and full["vector"] <= 20
    assert full["optimizer"] <= 6 and full["gemv"] <= 25 and sum(full.values()) <= 100
    quick = estimated_seconds("cuda", quick=True)
    assert sum(quick.values()) < sum(full.values()) / 2
    # the CPU's guess is a floor (a busy 2-core machine takes longer): well inside 35 s and 15 s
    # (its quick sweep keeps every attention length and head size, 16 to 64; its matmul axes
    # start at 32: the whole calibration took 31 s on the 2-core AMD VM, 2026-12-07)
    assert sum(estimated_seconds("cpu").values()) <= 22
    assert sum(estimated_seconds("cpu", quick=True).values()) <= 9


def test_the_estimate_charges_each_bf16_attention_shape_its_plan() -> None:
    """cuDNN builds a plan per new bf16 shape (tenths of a second) where an fp32 point's calls are
    all it pays: the bf16 family's guess is at least its points' plans."""
    plans = sum(len(cp.attention_cells("cuda", "bf16", p, False, None)) * FIRST_CALL_S["attention"][p]
                for p in cp.attention_passes("cuda"))
    bf16 = estimated_seconds("cuda", dtypes=["bf16"])["attention"]
    fp32 = estimated_seconds("cuda", dtypes=["fp32"])["attention"]
    assert plans >= 15 and bf16 >= plans and bf16 > 3 * fp32
    # the gemv family pays a compile per kernel and dtype: the gemv, the fused step, the LM head
    assert estimated_seconds("cuda", dtypes=["bf16"])["gemv"] >= 4 * FIRST_CALL_S["gemv_compile"]


def test_the_fused_attention_cells_are_planned_on_a_gpu_in_bf16_and_fp16() -> None:
    """The fused decode attention's cells are in the GPU plan (so the validation's disjointness
    check sees them) for bf16 and fp16, full and quick; not for fp32, nor on a CPU."""
    for quick in (False, True):
        cells = set(product(*cp.fused_attention_axes(quick)))
        planned = cp.planned_shapes("cuda", quick, dtypes=["bf16", "fp16", "fp32"])["attention"]
        fused = [a for a in planned if a[0].endswith(":fused_decode")]
        assert {a[0] for a in fused} == {"bf16:fused_decode", "fp16:fused_decode"}
        assert {tuple(a[1:]) for a in fused} == cells and len(fused) == 2 * len(cells)
    assert not [a for a in cp.planned_shapes("cpu")["attention"] if a[0].endswith(":fused_decode")]


def test_the_lm_head_points_keep_the_vocabulary_wide_shape_under_the_byte_cap() -> None:
    """The argmax kernel's points: GPT-2's padded vocabulary by widths 64..7168 after two small
    heads, none a width the validation's or the presets' models have; fp32 drops the widths past
    1 GiB (extrapolated), quick mode every other point with the largest kept; sizes strictly
    increase (one curve over bytes)."""
    from gptperf.model.config import PRESETS
    from gptperf.validate.sweep import cases

    bf16, fp32 = cp.argmax_shapes("bf16", False), cp.argmax_shapes("fp32", False)
    assert bf16[-1] == (50304, 7168) and fp32[-1] == (50304, 3584) and len(fp32) == len(bf16) - 1
    assert all(n * k * 4 <= 2**30 for n, k in fp32)
    configs = [*PRESETS.values(), *(c.config for d in ("cuda", "cpu") for c in cases(d))]
    heads = {(c.vocab_size, c.n_embd) for c in configs}
    assert heads and not heads & set(bf16)
    for shapes, e in ((bf16, 2), (fp32, 4)):
        sizes = [n * k * e for n, k in shapes]
        assert sizes == sorted(set(sizes))
    quick = cp.argmax_shapes("bf16", True)
    assert quick[-1] == bf16[-1] and len(quick) < len(bf16) and set(quick) <= set(bf16)


def test_optimizer_points_step_equal_tensors_and_the_master_grid_whole_vectors() -> None:
    """Each optimizer grid point's tensors share one size, a third of them 2-D; the one-pass
    master update's sizes are multiples of 8, so it is timed in the aligned variant GPT's
    tensors run (at 201M parameters on the H200 the other variant read 3.27 TB/s, this 4.07)."""
    from gptperf.measure.calibrate_optimizer import optimizer_point_shapes
    from gptperf.steps.master_adamw import VECTOR

    for tensors, params in [(12, 201539584), (96, 789760), (960, 198272), (7, 5)]:
        fused = optimizer_point_shapes(tensors, params, "adamw_fused")
        master = optimizer_point_shapes(tensors, params, "adamw_master")
        assert len(fused) == len(master) == tensors
        assert sum(len(s) == 2 for s in fused) == (tensors + 2) // 3
        assert {math.prod(s) for s in fused} == {max(1, params // tensors)}
        (size,) = {math.prod(s) for s in master}
        assert size % VECTOR == 0 and params // tensors - VECTOR < size <= max(VECTOR, params // tensors)


def test_the_fused_step_models_are_no_validated_models_width() -> None:
    """The synthetic fused decode steps the calibration profiles: no width a preset's or a
    validation config's (the in-step curves are read between their points), heads that divide
    the width, at least three layers (a median over the layers after the first) and enough
    layers that a step streams its weights from HBM; quick mode keeps the widest."""
    from gptperf.model.config import PRESETS
    from gptperf.validate.sweep import cases

    configs = [*PRESETS.values(), *(c.config for d in ("cuda", "cpu") for c in cases(d))]
    models = cp.fused_step_models("bf16", False)
    assert not {c for c, _, _ in models} & {c.n_embd for c in configs}
    for width, heads, layers in models:
        assert width % heads == 0 and width // heads in (64, 128) and layers >= 3
        assert layers == 48 or layers * 12 * width * width * 2 >= cp.FUSED_STEP_BYTES
    quick = cp.fused_step_models("bf16", True)
    assert quick[-1] == models[-1] and len(quick) < len(models)


def test_bad_input_is_a_one_line_error() -> None:
    with pytest.raises(UserError, match="device type 'tpu'"):
        cp.planned_shapes("tpu")
    with pytest.raises(UserError, match="unknown dtype 'fp8'"):
        cp.planned_shapes("cpu", dtypes=["fp8"])
    with pytest.raises(UserError, match="no dtypes"):
        ck.measure_kernels("cpu", [])


# --- physics -------------------------------------------------------------------------------------


def test_matmul_time_grows_with_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cp.MATMUL_M, "cpu", (256, 1024))
    monkeypatch.setitem(cp.MATMUL_M_KEPT, "cpu", ())
    monkeypatch.setitem(cp.MATMUL_N, "cpu", (512,))
    monkeypatch.setitem(cp.MATMUL_K, "cpu", (512,))
    monkeypatch.setitem(kt.POOL_BYTES, "cpu", 8 * MIB)
    grid = ck.measure_matmul("cpu", "fp32")
    small, large = grid.seconds  # 4x the FLOPs
    assert large > small > 0


def test_vector_and_optimizer_times_grow_with_size(small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cp.VECTOR_SIZES, "cpu", (64 * KIB, 16 * MIB))
    curves = ck.measure_vector("cpu", "fp32")
    for op in ("add", "gelu_fwd", "layernorm_fwd"):
        first, last = curves[f"{op}:fp32"].seconds
        assert last > first, op  # 256x the bytes
    monkeypatch.setattr(cp, "OPTIMIZER_LOOP_SIZES", (1024, 262144))
    for loop in co.measure_optimizer("cpu").values():  # on one set, and cycled
        small, large = loop.seconds  # one tensor of 256x the parameters
        assert large > small > 0


def test_attention_fwd_bwd_costs_more_than_fwd(small: None) -> None:
    grids = ck.measure_attention("cpu", "fp32")
    fwd, both = grids["fp32:causal_fwd"], grids["fp32:causal_fwd_bwd"]
    assert both.at(4, 64, 16) > fwd.at(4, 64, 16)
    assert cd.measure_gemv("cpu", "fp32") is None  # Triton's kernel needs CUDA


def test_cpu_timer_measures_a_known_call() -> None:
    import time

    timer = kt.KernelTimer(torch.device("cpu"), quick=True)
    seconds = timer(lambda i: time.sleep(0.002))
    assert 0.0019 < seconds < 0.02


def test_cpu_timer_evicts_the_caches_before_each_call_on_large_operands_and_not_in_its_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    log: list[str] = []

    def evict(self: kt.KernelTimer) -> None:
        log.append("evict")
        time.sleep(0.004)

    monkeypatch.setattr(kt.KernelTimer, "_evict", evict)
    timer = kt.KernelTimer(torch.device("cpu"), quick=True)

    def long_call(i: int) -> None:
        log.append("call")
        time.sleep(0.001)

    seconds = timer(long_call, nbytes=kt.CPU_EVICT_MIN_BYTES)
    assert 0.0009 < seconds < 0.003  # the 4 ms evictions are not timed
    timed = log[2:]  # after the warm-up call and the one that sizes the samples
    assert log[:2] == ["call", "call"] and len(timed) >= 2 * cp.CPU_MIN_REPEATS
    assert timed == ["evict", "call"] * (len(timed) // 2)
    log.clear()
    timer(long_call, nbytes=kt.CPU_EVICT_MIN_BYTES - 1)  # operands a core's L2 holds: no eviction
    assert "evict" not in log
    timer(lambda i: log.append("short"))  # short calls are batched, several a sample
    assert log.count("short") > 2 * cp.CPU_MIN_REPEATS


def test_the_cpu_eviction_writes_its_buffer() -> None:
    timer = kt.KernelTimer(torch.device("cpu"), quick=True)
    timer._evict()
    buffer = timer._evict_buffer
    assert buffer is not None and buffer.numel() * buffer.element_size() == kt.CPU_EVICT_BYTES
    buffer.zero_()
    timer._evict()
    assert bool((buffer == 1).all())


def test_matmul_precision_is_restored(small: None) -> None:
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        monkeypatched = cp.MATMUL_M["cpu"]
        assert monkeypatched == (1, 16, 256)
        ck.measure_matmul("cpu", "fp32", quick=True)
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


# --- GPU -----------------------------------------------------------------------------------------


@pytest.fixture
def small_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cp.MATMUL_M, "cuda", (1, 64, 4096))
    monkeypatch.setitem(cp.MATMUL_N, "cuda", (256, 4096))
    monkeypatch.setitem(cp.MATMUL_K, "cuda", (256, 4096))
    monkeypatch.setitem(cp.ATTENTION_BH, "cuda", (8, 32))
    monkeypatch.setitem(cp.ATTENTION_T, "cuda", (128, 1024))
    monkeypatch.setitem(cp.ATTENTION_D, "cuda", (64,))
    monkeypatch.setitem(cp.ONE_QUERY_BH, "cuda", (8, 64))
    monkeypatch.setitem(cp.ONE_QUERY_L, "cuda", (128, 2048))
    monkeypatch.setitem(cp.ONE_QUERY_D, "cuda", (64,))
    monkeypatch.setitem(cp.VECTOR_SIZES, "cuda", (64 * KIB, 64 * MIB))
    monkeypatch.setitem(cp.OPTIMIZER_BLOCKS, "cuda", ((128, 1), (1024, 4)))
    monkeypatch.setitem(cp.OPTIMIZER_TENSORS, "cuda", (12, 96))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_sweep_measures_the_plan_in_cuda_graphs(small_gpu: None) -> None:
    result = ck.measure_kernels("cuda", ["bf16", "fp32"])
    assert result["shapes"] == cp.planned_shapes(
        "cuda", dtypes=["bf16", "fp32"],
        memory_bytes=torch.cuda.get_device_properties(0).total_memory)
    assert not [n for n in result["notes"] if "timed eagerly" in n], result["notes"]
    assert set(result["optimizer"]) == {"adamw_fused", "adamw_foreach", "adamw_master"}
    mm = result["matmul"]["bf16"]
    assert mm.at(4096, 4096, 4096) > mm.at(64, 4096, 4096)  # 64x the FLOPs
    # a streamed weight: a one-row matmul of 4096x4096 bf16 (32 MiB) reads it in well under a
    # millisecond and takes longer than one of 256x256
    assert 1e-6 < mm.at(1, 256, 256) < mm.at(1, 4096, 4096) < 1e-3
    for key in ("bf16:causal_fwd", "bf16:causal_fwd_bwd"):
        grid = result["attention"][key]
        assert grid.at(32, 1024, 64) > grid.at(8, 128, 64)
    assert result["attention"]["bf16:causal_fwd_bwd"].at(32, 1024, 64) > \
        result["attention"]["bf16:causal_fwd"].at(32, 1024, 64)
    for key, curve in result["vector"].items():
        assert curve.seconds[-1] > curve.seconds[0], key  # 1024x the bytes
    # a weight's cast reads a copy from memory: its 4 bytes an element no faster than HBM streams
    # (5 TB/s), where one buffer cast again and again is read from the L2 (H100: 4.7 TB/s for all
    # 6 bytes an element of a 14 MB cast)
    cold = result["vector"]["cast_weight_to_bf16:fp32"]
    assert all(t > 4 / 6 * x / 5e12 for x, t in zip(cold.x, cold.seconds, strict=True))
    from gptperf.steps import gemv

    if gemv.available():
        assert result["gemv"]["bf16"].seconds[-1] > result["gemv"]["bf16"].seconds[0]
        # fp32 (not profiled whole): the chains, longer with the weight and streaming it no
        # faster than HBM can (5 TB/s). (Each kernel has its own tile now, `fused_tile`, and
        # loads its first weight tile before waiting for its input: the chains can beat the
        # plain gemv, and either chain the other — H200, fp32: LayerNorm 1.81 against the plain
        # 2.14 µs at 256 KiB; residual 23.4 against LayerNorm 19.1 µs at 64 MiB.)
        for key in ("chain:fp32", "chain_residual:fp32"):
            curve = result["gemv"][key]
            assert curve.seconds[-1] > 10 * curve.seconds[0], key
            assert all(t > x / 5e12 for x, t in zip(curve.x, curve.seconds, strict=True)), key
        # bf16: the four layer kernels timed inside synthetic steps, one point a width, longer
        # with the weight and never faster than HBM streams it (5 TB/s); no chain measured
        assert "chain:bf16" not in result["gemv"] and "chain_residual:bf16" not in result["gemv"]
        for comp, weight in (("attn.qkv", 3), ("attn.proj", 1), ("mlp.fc", 4), ("mlp.proj", 4)):
            curve = result["gemv"][f"in_step:{comp}:bf16"]
            assert curve.x == tuple(float(weight * c * c * 2) for c, _, _ in cp.fused_step_models("bf16", False))
            assert curve.seconds[-1] > 10 * curve.seconds[0]
            assert all(t > x / 5e12 for x, t in zip(curve.x, curve.seconds, strict=True)), comp
        # the LM head's kernel: its points are the planned vocabulary-wide shapes, its time grows
        # with them, and no point streams its weight faster than HBM can (5 TB/s; the H200's is
        # 4.8): distinct weights, not L2 hits (its tile can beat the LayerNorm chain's: 100.5
        # against 111 µs at 412 MB, H200)
        head = result["gemv"]["chain_argmax:bf16"]
        assert head.x == tuple(float(n * k * 2) for n, k in cp.argmax_shapes("bf16", False))
        assert head.seconds[-1] > 10 * head.seconds[0]
        assert all(t > x / 5e12 for x, t in zip(head.x, head.seconds, strict=True))
        # the fused decode attention: bf16 only (fp32 reads sdpa's grid), longer with the cache
        fused = result["attention"]["bf16:fused_decode"]
        assert "fp32:fused_decode" not in result["attention"]
        assert fused.at(32, 8192, 128) > 4 * fused.at(32, 128, 128)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_graph_time_matches_eager_time_of_a_long_kernel() -> None:
    """A kernel long enough that launch gaps do not matter takes the same time in a graph and
    between events."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    timer = kt.KernelTimer(torch.device("cuda"), quick=False)
    graphed = timer(lambda i: a @ a)
    eager = timer._eager(lambda i: a @ a, 20)
    assert graphed == pytest.approx(eager, rel=0.1)
    assert math.isfinite(graphed) and graphed > 0


def test_two_passes_are_averaged_unless_one_was_held_up() -> None:
    assert cps.merge_times(1e-3, 1.21e-3) == pytest.approx(1.1e-3)  # geometric mean
    assert cps.merge_times(8e-3, 1e-5) == 1e-5  # a stall in the first pass: the smaller kept
    curve = Curve((1.0, 2.0, 4.0), (1e-5, 8e-3, 4e-5), what="a stalled middle point")
    again = Curve((1.0, 2.0, 4.0), (1e-5, 2e-5, 9e-5))
    grid = Grid(("M", "N"), ((1.0, 2.0), (3.0,)), (2e-6, 4e-6))
    other_plan = Grid(("M", "N"), ((1.0, 4.0), (3.0,)), (1.0, 1.0))
    merged, disagreed = cps.merge_passes(
        {"vector": {"add": curve}, "matmul": {"fp32": grid}, "gemv": {}},
        {"vector": {"add": again}, "matmul": {"fp32": other_plan}})
    assert merged["vector"]["add"].seconds == pytest.approx((1e-5, 2e-5, 4e-5))
    assert merged["vector"]["add"].what == "a stalled middle point"
    assert merged["matmul"]["fp32"] == grid  # measured at other sizes: the first pass's kept
    assert disagreed == 2  # the stalled point and 4e-5 against 9e-5


def test_a_pass_run_in_a_spell_of_fork_and_join_is_left_out_family_by_family() -> None:
    # the vector family's first pass read its parallel add 1.5x the second's: a spell; the
    # matmul's passes within FORK_SPELL of each other; the gemv measured in the first pass only
    forks = [{"matmul": 4.0e-6, "vector": 6.0e-6, "gemv": 4e-6}, {"matmul": 4.4e-6, "vector": 4.0e-6}]
    assert cps.passes_out_of_spells(forks) == {"matmul": [0, 1], "vector": [1], "gemv": [0]}
    assert cps.passes_out_of_spells([{"optimizer": 4e-6}, {"optimizer": 4.79e-6}]) == {"optimizer": [0, 1]}
    assert cps.passes_out_of_spells([{"optimizer": 4e-6}, {"optimizer": 4.8e-6}]) == {"optimizer": [0]}


def test_the_cpu_calibration_keeps_each_familys_passes_out_of_spells(monkeypatch: pytest.MonkeyPatch) -> None:
    passes = iter([(1.5, {"matmul": 4e-6, "attention": 6e-6}), (1.0, {"matmul": 4.2e-6, "attention": 4e-6})])

    def one_pass(device: Any, dtypes: Any, quick: bool, progress: Any, timer: Any, spent: Any,
                 probes: Any = None, biased: Any = None, waited: Any = None, forks: Any = None,
                 only: Any = None) -> Any:
        scale, read = next(passes)  # the first pass's times 1.5x: a spell
        forks.update(read)
        tables = {"matmul": {"fp32": Grid(("M",), ((1.0, 2.0),), (scale * 1e-5, scale * 2e-5))},
                  "attention": {"fp32:causal_fwd": Curve((1.0, 2.0), (scale * 1e-4, scale * 4e-4))},
                  "vector": {}, "optimizer": {}, "gemv": {}}
        return tables, {"matmul": [], "attention": [], "vector": []}

    monkeypatch.setattr(ck, "_measure_pass", one_pass)
    monkeypatch.setattr(cache_reach, "CACHE_REACH_LAYERS", SMALL_REACH_LAYERS)
    # the add as the calibration begins: this machine's own reading would decide which passes
    # were in a spell (a fast one made every family's look like one, and a third pass was run)
    monkeypatch.setattr(ck, "fork_op_s", lambda seconds: 4.0e-6)
    result = ck.measure_kernels("cpu", ["fp32"])
    # the attention read its add 1.5x in the first pass: the second pass's times alone; the
    # matmul's readings agree: both passes averaged (geometric mean of 1.5x and 1x)
    assert result["attention"]["fp32:causal_fwd"].seconds == pytest.approx((1e-4, 4e-4))
    assert result["matmul"]["fp32"].seconds == pytest.approx((1.5 ** 0.5 * 1e-5, 1.5 ** 0.5 * 2e-5))
    spelled = [n for n in result["notes"] if "spell" in n]
    assert len(spelled) == 1 and spelled[0].startswith("CPU: the attention family's pass 1 ran in a spell")
    assert "1.50× its time in the pass kept): pass 2 kept" in spelled[0]
    # the add's time over the passes kept: matmul 4.0 and 4.2, attention 4.0 µs
    assert result["fork_s"] == pytest.approx(4.0e-6)


def test_families_whose_every_pass_ran_in_a_spell_are_those_over_the_calibrations_fastest() -> None:
    """A family is in a spell when its best pass read the add at ≥ FORK_SPELL × the fastest
    reading of the calibration, the one before its passes included."""
    forks = [{"matmul": 4.0e-6, "vector": 6.0e-6, "optimizer": 6.2e-6},
             {"matmul": 6.1e-6, "vector": 6.3e-6, "optimizer": 4.5e-6}]
    assert cps.families_in_spells(forks, 4.2e-6) == ["vector"]
    assert cps.families_in_spells(forks, 3.0e-6) == ["matmul", "vector", "optimizer"]
    assert cps.families_in_spells([{"matmul": 4.0e-6}], 4.0e-6) == []


def test_waiting_out_a_spell_reads_the_add_until_it_is_fast_or_time_is_up() -> None:
    now = [0.0]
    readings = iter([6e-6, 6e-6, 4.1e-6])

    def sleep(s: float) -> None:
        now[0] += s

    assert cps.wait_out_of_spell(4e-6, 5.0, clock=lambda: now[0], read=lambda: next(readings), sleep=sleep)
    assert now[0] == pytest.approx(2 * cps.RETRY_POLL_S)  # two polls slept, the third read fast
    now[0] = 0.0
    assert not cps.wait_out_of_spell(4e-6, 1.2, clock=lambda: now[0], read=lambda: 6e-6, sleep=sleep)
    assert now[0] <= 1.2


def test_a_family_measured_in_spells_in_every_pass_is_measured_again_out_of_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both passes of the attention family read the add 1.5x the calibration's first reading: a
    third pass measures it alone once the machine reads fast again, and that pass alone is kept;
    the matmul family, out of spells, is not measured again."""
    reads = iter([(1.0, {"matmul": 4e-6, "attention": 6e-6}), (1.0, {"matmul": 4.1e-6, "attention": 6.1e-6}),
                  (2 / 3, {"attention": 4.05e-6})])
    seen: list[Any] = []

    def one_pass(device: Any, dtypes: Any, quick: bool, progress: Any, timer: Any, spent: Any,
                 probes: Any = None, biased: Any = None, waited: Any = None, forks: Any = None,
                 only: Any = None) -> Any:
        scale, read = next(reads)
        seen.append(only)
        forks.update(read)
        for family in read:
            spent[family] = spent.get(family, 0.0) + 1.0
        tables = {"matmul": {"fp32": Grid(("M",), ((1.0, 2.0),), (1e-5, 2e-5))},
                  "attention": {"fp32:causal_fwd": Curve((1.0, 2.0), (scale * 1.5e-4, scale * 6e-4))},
                  "vector": {}, "optimizer": {}, "gemv": {}}
        if only is not None:
            tables = {f: t for f, t in tables.items() if f in only}
        return tables, {"matmul": [], "attention": [], "vector": []}

    monkeypatch.setattr(ck, "_measure_pass", one_pass)
    monkeypatch.setattr(cache_reach, "CACHE_REACH_LAYERS", SMALL_REACH_LAYERS)
    for module in (ck, cps):  # the reading before the passes, and those while waiting
        monkeypatch.setattr(module, "fork_op_s", lambda seconds=0.0: 4e-6)
    result = ck.measure_kernels("cpu", ["fp32"])
    assert seen == [None, None, ["attention"]]
    assert result["attention"]["fp32:causal_fwd"].seconds == pytest.approx((1e-4, 4e-4))
    assert result["matmul"]["fp32"].seconds == pytest.approx((1e-5, 2e-5))
    assert any("every pass of the attention family ran in a spell" in n and "measured once more" in n
               for n in result["notes"])
    assert result["fork_s"] == pytest.approx(4.05e-6)  # matmul 4.0, 4.1 and the attention's third


def test_a_pass_more_over_spelled_families_runs_only_where_the_calibrations_budget_has_room(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The attention family ran in a spell in both passes (6 s over them: 3 s a pass). With 20 s
    left it is measured again once the add reads fast; with 2 s left it is kept as measured,
    without reading the add, and the note says why; with no spelled family nothing runs."""
    forks = [{"matmul": 4e-6, "attention": 6e-6}, {"matmul": 4.1e-6, "attention": 6.1e-6}]
    spent = {"matmul": 30.0, "attention": 6.0}
    reads: list[float] = []
    monkeypatch.setattr(cps, "fork_op_s", lambda seconds=0.0: reads.pop(0))
    ran: list[Any] = []
    reads.append(4.1e-6)
    notes = cps.retry_spells(ran.append, spent, 2, forks, 4e-6, left_s=20.0)
    assert ran == [["attention"]] and "measured once more" in notes[0] and not reads
    ran.clear()
    notes = cps.retry_spells(ran.append, spent, 2, forks, 4e-6, left_s=2.0)  # reads nothing: none given
    assert ran == []
    assert notes == ["CPU: every pass of the attention family ran in a spell of the machine's fork and join, "
                     "and another (3.0 s) would not end within the calibration's budget (2.0 s left): kept as "
                     "measured (predictions read against them run slower than out of the spell)"]
    assert cps.retry_spells(ran.append, spent, 2, [{"matmul": 4e-6}, {"matmul": 4e-6}], 4e-6, 2.0) == []


def test_off_grid_probes_are_read_against_their_own_passs_grid() -> None:
    """Pass 1's grid ran in a spell (twice pass 2's times) and its probes did not: kept alone,
    pass 2's probes read against the grid; kept both, each probe is carried from its pass's grid to
    the merged one (1 s on a 4 s grid -> 0.7 s on a 2.8 s one), and the bias ratios pooled."""
    def flat(seconds: float) -> Grid:
        return Grid(("M", "N", "K"), ((1.0,), (1.0,), (1.0,)), (seconds,), (0.0, 0.0, 0.0))

    passes = [{"matmul": {"fp32": flat(4.0)}}, {"matmul": {"fp32": flat(2.0)}}]
    shape = (1200.0, 384.0, 128.0)
    pass_probes = [({"fp32": [(shape, 1.0)]}, {"fp32": [1.1]}), ({"fp32": [(shape, 1.9)]}, {"fp32": [1.0]})]
    probes, biased = cps.probes_of_passes(passes, pass_probes, [1], {"fp32": flat(2.0)})
    assert probes == {"fp32": [(shape, 1.9)]} and biased == {"fp32": [1.0]}
    probes, biased = cps.probes_of_passes(passes, pass_probes, [0, 1], {"fp32": flat(2.8)})
    assert [t for _, t in probes["fp32"]] == pytest.approx([0.7, 1.9 * 1.4])
    assert biased == {"fp32": [1.1, 1.0]}
    offgrid, _ = ck.matmul_offgrid(ck.probe_ratios({"fp32": flat(2.0)}, cps.probes_of_passes(
        passes, pass_probes, [1], {"fp32": flat(2.0)})[0]))
    assert offgrid["fp32"]["ratio"] == pytest.approx(0.95)


def test_step_layer_times_are_each_kernels_end_after_the_previous_end() -> None:
    # embed, three layers of five kernels, the head: (name, start µs, duration µs). Kernel i of
    # layer l starts at 100·l + 10·i + 1 and lasts i + 2 + l µs, so it ends at 100·l + 11·i + 3 + l:
    # 11 µs after the kernel before it, and a qkv (i = 0) 57 µs after the previous layer's mlp.proj
    kernels = [("embed", 0.0, 2.0)]
    for layer in range(3):
        kernels += [(c, 100.0 * layer + 10.0 * i + 1, i + 2.0 + layer) for i, c in enumerate(cd.STEP_LAYER)]
    kernels.append(("head", 400.0, 5.0))
    times = cd.step_layer_times(kernels, 3)
    assert times[cd.STEP_LAYER[0]] == pytest.approx(57e-6)
    assert all(times[c] == pytest.approx(11e-6) for c in cd.STEP_LAYER[1:])
    with pytest.raises(RuntimeError, match="ran 16 kernels, not the 17"):
        cd.step_layer_times(kernels[:-1], 3)


def test_a_cpu_sweep_says_it_measured_every_point_twice(swept: tuple) -> None:
    result = swept[0]
    assert any(n.startswith(f"CPU: every point measured in {cps.CPU_PASSES} passes") for n in result["notes"])


def test_the_bias_ratio_is_the_median_of_the_probes_with_its_range() -> None:
    out, notes = ck.matmul_bias({"bf16": [1.0, 1.1, 1.02, 0.98, 1.3], "fp32": []})
    assert out == {"bf16": {"ratio": 1.02, "low": 0.98, "high": 1.3, "probes": 5.0}}
    assert len(notes) == 1 and "×1.020" in notes[0] and "5 probes" in notes[0]


def test_the_offgrid_ratio_is_the_probes_mean_over_the_grids_reading() -> None:
    """Probes against a grid with t = M·N·K ns, at 1.2, 1.3 and 0.8 of its reading: the mean
    (1.1) is the ratio, with the median, range and count; a dtype without probes gets none."""
    from gptperf.perfmodel.curves import Grid

    points = ((64.0, 256.0),) * 3
    grid = Grid(("M", "N", "K"), points,
                tuple(m * n * k * 1e-9 for m in points[0] for n in points[1] for k in points[2]))
    shapes = [(128.0, 128.0, 128.0), (96.0, 200.0, 128.0), (256.0, 96.0, 64.0)]
    factors = [1.2, 1.3, 0.8]
    probes = {"fp32": [(s, f * grid.at(*s)) for s, f in zip(shapes, factors, strict=True)], "bf16": []}
    rows = ck.probe_ratios({"fp32": grid, "bf16": grid}, probes)
    out, notes = ck.matmul_offgrid(rows)
    assert out["fp32"] == pytest.approx({"ratio": 1.1, "median": 1.2, "low": 0.8, "high": 1.3,
                                         "probes": 3.0})
    assert "bf16" not in out and len(notes) == 1 and "×1.100" in notes[0] and "3 probes" in notes[0]
    assert rows["bf16"] == [] and [r[:3] for r in rows["fp32"]] == [list(s) for s in shapes]
    assert [r[3] for r in rows["fp32"]] == pytest.approx(factors)


def test_the_probes_are_timed_with_and_without_a_bias(small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU stand-in for the GPU's off-grid probes: each probe timed plain (a probe) and again
    with a bias (a ratio); the recorded shapes list each probe once."""
    import torch

    monkeypatch.setitem(cp.MATMUL_PROBES, "cpu", ((24, 192, 160), (40, 320, 96)))
    device = torch.device("cpu")
    probes: dict = {}
    biased: dict = {}
    record: list = []
    ck.measure_matmul(device, "fp32", timer=kt.KernelTimer(device, False), record=record, probes=probes,
                      biased=biased)
    assert [shape for shape, _ in probes["fp32"]] == [(24, 192, 160), (40, 320, 96)]
    assert len(biased["fp32"]) == 2 and all(0 < r < 100 for r in biased["fp32"])
    assert record.count([24, 192, 160]) == 1 and record.count([40, 320, 96]) == 1


def test_a_calls_bytes_count_what_it_reads_and_writes() -> None:
    bh, t, d = 4, 256, 64
    full = torch.empty(1, bh, t, d).nbytes  # q, k, v or the output over t positions, fp32
    one = torch.empty(1, bh, 1, d).nbytes  # one query, or its output
    assert cp.attention_bytes("fp32", "one_query", bh, t, d) == 2 * full + 2 * one
    assert cp.attention_bytes("fp32", "causal_fwd", bh, t, d) == 4 * full
    assert cp.attention_bytes("fp32", "causal_fwd_bwd", bh, t, d) == 8 * full
    assert cp.attention_bytes("fp32", "masked_fwd", bh, t, d) == 4 * full + t * t
    assert cp.attention_bytes("bf16", "causal_fwd", bh, t, d) == 2 * full
    assert cp.matmul_bytes("fp32", 3, 5, 7) == (3 * 7 + 5 * 7 + 3 * 5) * 4
    # half a MiB of cache read by one query stays in cache under the timer's rule; counted as four
    # tensors of t positions it would have been evicted
    assert cp.attention_bytes("fp32", "one_query", bh, t, d) < kt.CPU_EVICT_MIN_BYTES <= 4 * full


def test_the_masked_pass_is_the_static_caches_prefill_and_gpu_only() -> None:
    # its call: sdpa under the (T, T) mask a static KV cache builds, the causal kernel's result
    pool = kt.OperandPool(torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    masked = ck._attention_call(torch.device("cpu"), torch.float32, "masked_fwd", 3, 16, 8, pool)(0)
    torch.manual_seed(0)
    causal = ck._attention_call(torch.device("cpu"), torch.float32, "causal_fwd", 3, 16, 8, pool)(0)
    torch.testing.assert_close(masked, causal)
    assert "masked_fwd" in cp.attention_passes("cuda") and "masked_fwd" not in cp.attention_passes("cpu")
    assert {a[0].split(":")[1] for a in cp.planned_shapes("cpu")["attention"]} == {
        "causal_fwd", "causal_fwd_bwd", "one_query", "one_query_warm"}


# --- how far the cache reaches -----------------------------------------------------------------


def test_cache_reach_runs_every_layer_of_its_count_a_call_and_keeps_the_median_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each count of layers is timed once a round; one call runs every one of its layers once, so
    a layer is used again only after all the others of its count (as in a decode step, whatever
    few calls the timer makes); x is those weights' bytes, the time the median over the rounds
    divided by the count."""
    import torch

    import gptperf.measure.cache_reach as reach

    monkeypatch.setattr(reach, "CACHE_REACH_LAYERS", (1, 3))
    monkeypatch.setattr(reach, "CACHE_REACH_ROUNDS", 3)
    seen: list[int] = []
    monkeypatch.setattr(reach.F, "linear", lambda x, w: seen.append(w.data_ptr()))
    readings = iter([5.0, 1.0, 7.0, 30.0, 30.0, 9.0])  # rounds of (1 layer, 3 layers): medians 7, 9
    per_call: dict[int, list[int]] = {1: [], 3: []}

    class Timer:
        device = torch.device("cpu")

        def __call__(self, call, what: str = "") -> float:
            count = int(what.split(": ")[1].split()[0])
            for j in range(2):
                seen.clear()
                call(j)
                per_call[count].append(len(set(seen)))
                assert len(seen) == count * len(cp.CACHE_REACH_LAYER)  # each weight once a call
            return next(readings)

    curve = reach.measure_cache_reach(Timer())
    layer = 4 * sum(n * k for _, n, k in cp.CACHE_REACH_LAYER)
    assert curve.x == (layer, 3.0 * layer) and curve.seconds == (7.0, 9.0 / 3)
    assert set(per_call[1]) == {4} and set(per_call[3]) == {12}


def test_a_cpu_grid_measures_eight_rows_quick_or_not() -> None:
    """Eight rows (a batch-8 decode) run their own kernels on a CPU: measured in every grid,
    where quick mode keeps every other row of MATMUL_M."""
    for quick in (False, True):
        rows = cp.matmul_axes("cpu", quick)[0]
        assert 8 in rows and set(rows) == set(cp.thin_points(cp.MATMUL_M["cpu"], quick)) | {8}
    assert cp.matmul_axes("cuda", True)[0] == cp.thin_points(cp.MATMUL_M["cuda"], True)


def test_the_cpus_curves_past_the_cache_end_at_its_pool() -> None:
    """The CPU's pool past the cache (CPU_POOL_BYTES) is where the matmul grid cycles its operands,
    AdamW's cold loop its copies, the vector curves end and the cache reach's coldest count
    reads: its weights at least the pool, and its count before under it."""
    from gptperf.measure.cache_reach import LAYER_BYTES
    from gptperf.measure.kernel_timer import POOL_BYTES

    pool = cp.CPU_POOL_BYTES
    assert POOL_BYTES["cpu"] == cp.OPTIMIZER_COLD_POOL_BYTES == pool
    assert cp.VECTOR_SIZES["cpu"][-1] == pool
    *_, before, last = cp.CACHE_REACH_LAYERS
    assert before * LAYER_BYTES < pool <= last * LAYER_BYTES


def test_the_cpu_sweep_measures_the_cache_reach(swept: tuple) -> None:
    result, *_ = swept
    curve = result["cache_reach"]
    assert isinstance(curve, Curve) and len(curve.x) == len(SMALL_REACH_LAYERS)
    assert any(n.startswith("CPU cache reach:") for n in result["notes"])
    assert all(list(cell) in result["shapes"]["matmul"] for cell in cp.CACHE_REACH_LAYER)


def test_the_reach_note_names_where_the_steps_leave_the_cache() -> None:
    from gptperf.measure.cache_reach import reach_note

    mib = 2**20
    note = reach_note(Curve((4 * mib, 8 * mib, 16 * mib, 64 * mib), (100e-6, 100e-6, 200e-6, 400e-6)))
    assert "up to 8.00 MiB" in note and "from 64.00 MiB" in note and "in between" in note
    steps = reach_note(Curve((4 * mib, 8 * mib, 16 * mib), (100e-6, 400e-6, 400e-6)))
    assert "up to 4.00 MiB" in steps and "from 8.00 MiB" in steps and "in between" not in steps
    assert "no saving measured" in reach_note(Curve((4 * mib, 64 * mib), (100e-6, 110e-6)))


def test_the_cold_loop_steps_another_copy_of_the_tensors_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """`adamw_loop_cold` cycles its calls through copies of the point's tensors whose state (16 B a
    parameter) fills OPTIMIZER_COLD_POOL_BYTES, each stepped once before (AdamW makes its moments
    then; the set `adamw_loop` timed is the first copy), where `adamw_loop` steps one set every
    call; both are a tensor's seconds (the call's over the tensors), and both calls are timed alone
    past the eviction size (24 B a parameter with foreach's temporaries). 64 tensors of 256
    parameters keep 256 KiB: two copies fill 512 KiB; 64 of 4096 (4 MiB) overfill it alone, and
    their one-set time serves."""
    made: list[list[int]] = []
    timed: list[tuple[str, float]] = []

    def fake_step(device: object, tensors: int, params: int, variant: str):
        made.append([])
        calls = made[-1]
        return lambda j: calls.append(j)

    def fake_timer(call, what: str = "", nbytes: float = 0.0) -> float:
        timed.append((what, nbytes))
        for j in range(6):
            call(j)
        return 64 * (3e-3 if "cycled" in what else 1e-3)  # 3 ms a tensor cycled, 1 ms on one set

    monkeypatch.setattr(co, "optimizer_step", fake_step)
    monkeypatch.setattr(cp, "OPTIMIZER_LOOP_SIZES", (256, 4096))
    monkeypatch.setattr(cp, "OPTIMIZER_COLD_POOL_BYTES", 512 * KIB)
    grids = co.measure_optimizer_loop(torch.device("cpu"), False, None, fake_timer)
    assert grids["adamw_loop"].seconds == pytest.approx((1e-3, 1e-3))
    assert grids["adamw_loop_cold"].seconds == pytest.approx((3e-3, 1e-3))
    warm_256, second_256, warm_4096 = made  # the one set timed warm is the first of two copies
    assert warm_4096 == list(range(6))
    assert warm_256 == list(range(6)) + [0, 0, 2, 4]  # then its first step, and every other call
    assert second_256 == [0, 1, 3, 5]
    assert [n for _, n in timed] == [24 * 64 * 256] * 2 + [24 * 64 * 4096]


def test_a_large_cpu_random_tensor_repeats_its_first_block_of_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 2 × RANDOM_BLOCK numbers a CPU tensor is its first RANDOM_BLOCK draws repeated (the
    remainder too): uniform in (-1, 1), no zeros, shape, dtype and grad flag as asked; a smaller
    one is drawn whole."""
    monkeypatch.setattr(kt, "RANDOM_BLOCK", 1000)
    t = kt.random_tensor((5, 1001), torch.float32, torch.device("cpu"), requires_grad=True)
    assert t.shape == (5, 1001) and t.dtype == torch.float32 and t.requires_grad and t.is_leaf
    flat = t.detach().view(-1)
    assert flat.abs().max() <= 1 and bool((flat != 0).all())
    assert torch.equal(flat[1000:5000].view(4, 1000), flat[:1000].expand(4, 1000))
    assert torch.equal(flat[5000:], flat[:5])
    small = kt.random_tensor((2000,), torch.bfloat16, torch.device("cpu")).float()
    assert not torch.equal(small[1000:1500], small[:500]) and small.abs().max() <= 1


def test_measure_unaligned_times_a_layers_three_matmuls_and_keeps_their_rates() -> None:
    """A fake timer runs each call once and says 2, 4 and 8 ms: the rates are the layer's FLOPs
    over them, each call the product its orientation names (y, dX, dW), and the layer recorded."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    took = iter((2e-3, 4e-3, 8e-3))

    def fake_timer(call, what: str = "", nbytes: float = 0.0) -> float:
        seen.append((what, tuple(call(0).shape)))
        return next(took)

    record: list = []
    m, n, k = 8, 13, 4  # 13 columns: rows of 52 bytes in fp32, not a multiple of 16
    rates = ck.measure_unaligned("cpu", "fp32", timer=fake_timer, record=record, layer=(m, n, k))
    flops = 2.0 * m * n * k
    assert rates == {"m": 8.0, "n": 13.0, "k": 4.0, "fwd": flops / 2e-3, "dgrad": flops / 4e-3,
                     "wgrad": flops / 8e-3}
    assert [shape for _, shape in seen] == [(m, n), (m, k), (n, k)]
    assert all("unaligned" in what for what, _ in seen) and record == [[m, n, k]]
    note = ck.unaligned_note("fp32", rates)
    assert "8 rows, 4 → 13" in note and "fwd 0" in note


def test_the_unaligned_layer_is_unaligned_in_every_dtype() -> None:
    from gptperf.perfmodel.kernel_calls import unaligned_layer

    m, n, k = ck.UNALIGNED_LAYER
    assert all(unaligned_layer(k, n, b) for b in (2, 4)) and not unaligned_layer(k, k, 2)
