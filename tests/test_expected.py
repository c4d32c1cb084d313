"""The calibrated prediction's rules on synthetic calibration data, each with a hand-computed answer:
interpolation of the curves, the host/device queue, the kernel decomposition and the refusal of
a stale or foreign calibration."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import replace

import pytest

from gptperf import names
from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.perfmodel import Workload, count_parameters
from gptperf.perfmodel.calibration import HOST_MODEL, Calibration
from gptperf.perfmodel.curves import Curve, Grid
from gptperf.perfmodel.expected import Expected, call_time, expected, parallel_factor, queue_time
from gptperf.perfmodel.kernel_calls import KernelCall, kernel_calls, step_ops, unaligned_layer
from gptperf.perfmodel.workload import master_copied_parameters
from gptperf.plan import ExecutionPlan

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc)
T0 = 1e-6  # every kernel of the flat calibration
HUGE = 1e15  # a single point this far out: every size is below it, so every time is T0
VECTOR_OPS = ("add", "copy", "cast_to_fp32", "cast_to_bf16", "layernorm_fwd", "layernorm_bwd",
              "gelu_fwd", "gelu_bwd", "softmax_fwd", "softmax_bwd", "cross_entropy_fwd",
              "cross_entropy_bwd", "embedding_fwd", "embedding_bwd", "sum_rows")


def flat_calibration(device_type: str = "cuda", fixed_s: float = 1e-4, per_layer_s: float = 1e-4,
                     **changes) -> Calibration:
    curve = Curve((HUGE,), (T0,))
    grid = Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))
    dtypes = ("fp32", "bf16")
    host = {f"{m}:{p}:{d}": {"fixed_s": fixed_s, "per_layer_s": per_layer_s}
            for m in ("eager", "compiled") for p in ("fwd", "bwd", "opt", "infer", "decode") for d in dtypes}
    fields = dict(
        device_name="Test GPU", device_type=device_type, torch_version="9.9", created_at=NOW.isoformat(),
        seconds=1.0, matmul={d: grid for d in dtypes},
        attention={f"{d}:{p}": grid for d in dtypes for p in ("causal_fwd", "causal_fwd_bwd", "one_query")},
        vector={f"{o}:{d}": curve for o in VECTOR_OPS for d in dtypes},
        optimizer={"adamw_fused": curve, "adamw_foreach": curve}, gemv={"bf16": curve}, host=host)
    fields.update(changes)
    return Calibration(**fields)


# -- the calibration ------------------------------------------------------------------------


def test_calibration_round_trips_and_refuses_stale_foreign_or_other_torch():
    cal = flat_calibration()
    again = Calibration.from_dict(cal.to_dict())
    assert again.to_dict() == cal.to_dict()
    cal.check_usable("Test GPU", "9.9", now=NOW + dt.timedelta(days=1))
    with pytest.raises(UserError, match="'Other GPU'"):
        cal.check_usable("Other GPU", "9.9", now=NOW)
    with pytest.raises(UserError, match="torch 9.9, this is torch 9.8"):
        cal.check_usable("Test GPU", "9.8", now=NOW)
    with pytest.raises(UserError, match="40 days old"):
        cal.check_usable("Test GPU", "9.9", now=NOW + dt.timedelta(days=40))
    with pytest.raises(UserError, match="gptperf.calibration"):
        Calibration.from_dict({"schema": "gptperf.bench/1"})


# -- composition -----------------------------------------------------------------------------


def test_queue_waits_for_the_host_or_for_the_device():
    # host-bound: issued at 1 and 2, each runs 0.5 -> ends at 2.5
    assert queue_time([(1.0, 0.5), (1.0, 0.5)]) == pytest.approx(2.5)
    # device-bound: issued at 0.1 and 0.2, each runs 1 back to back -> 2.1
    assert queue_time([(0.1, 1.0), (0.1, 1.0)]) == pytest.approx(2.1)
    # a long kernel in the middle hides the host of the next ones
    assert queue_time([(1.0, 5.0), (1.0, 1.0), (1.0, 1.0)]) == pytest.approx(8.0)


def test_the_fused_optimizers_kernels_start_before_the_rest_of_its_host_time():
    """One block of gpt2, eager fp32 train: 2e-4 s of host a phase, every kernel T0 but AdamW's
    1e-3 s. Without a measured overlap the optimizer's kernels (AdamW, the norm's sum) run after
    all of its host: 4e-4 + 2e-4 + 1e-3 + T0. With a quarter of its host after they start, they
    begin at 4e-4 + 0.75·2e-4. The foreach optimizer (not measured) keeps the first rule, with
    its rescale's add on top."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("train", 2, 64, "fp32")
    slow = Curve((HUGE,), (1e-3,))
    fused = ExecutionPlan.default("train", "cuda")
    assert fused.fused_optimizer
    plain = flat_calibration(optimizer={"adamw_fused": slow, "adamw_foreach": slow})
    overlapped = flat_calibration(optimizer={"adamw_fused": slow, "adamw_foreach": slow},
                                  optimizer_overlap={"share": 0.25})
    assert expected(cfg, w, fused, plain).step_time_s == pytest.approx(4e-4 + 2e-4 + 1e-3 + T0)
    assert expected(cfg, w, fused, overlapped).step_time_s == pytest.approx(
        4e-4 + 0.75 * 2e-4 + 1e-3 + T0)
    foreach = ExecutionPlan.from_dict({**fused.to_dict(), "fused_optimizer": False})
    assert expected(cfg, w, foreach, overlapped).step_time_s == pytest.approx(
        4e-4 + 2e-4 + 1e-3 + 2 * T0)
    with pytest.raises(UserError, match="share between 0 and 1"):
        flat_calibration(optimizer_overlap={"share": 1.5})
    again = Calibration.from_dict(overlapped.to_dict())
    assert again.optimizer_overlap == {"share": 0.25}


def test_a_mixed_add_without_its_curve_is_charged_as_a_cast_then_an_add():
    """A calibration from before autocast's residual add was measured charges n elements of it
    (n·(4 + 2 + 4) bytes in bf16) as a cast of n bf16 elements to fp32 plus an fp32 add."""
    from gptperf.perfmodel.expected import call_time
    from gptperf.perfmodel.kernel_calls import KernelCall

    n = 1000.0
    cast_s, add_s = 3e-6, 5e-6
    vector = {k: v for k, v in flat_calibration().vector.items() if not k.startswith("add_mixed")}
    vector["cast_to_fp32:bf16"] = Curve((n * 6,), (cast_s,))  # n·(2 + 4) bytes
    vector["add:fp32"] = Curve((3 * n * 4,), (add_s,))
    cal = flat_calibration(vector=vector)
    call = KernelCall("vector", "add_mixed:bf16", (n * (4 + 2 + 4),), count=2)
    assert call_time(call, cal) == pytest.approx(2 * (cast_s + add_s))
    with_it = flat_calibration(vector={**vector, "add_mixed:bf16": Curve((n * 10,), (4e-6,))})
    assert call_time(call, with_it) == pytest.approx(2 * 4e-6)  # its own curve where there is one


@pytest.mark.parametrize("kind,fast", [("train", False), ("forward", False), ("prefill", True),
                                       ("decode", True), ("decode", False)])
def test_fp16_steps_are_predicted_on_bf16s_curves(kind: str, fast: bool) -> None:
    """A calibration of the default GPU dtypes (bf16, fp32) predicts fp16 steps on bf16's curves:
    the same bytes, the same tensor-core rate. Each fp16 kernel is charged as its bf16 twin."""
    import dataclasses

    from gptperf.perfmodel.expected import call_time

    cfg = preset("gpt2", n_layer=2)
    plan = ExecutionPlan.default(kind, "cuda", compile=fast, dtype="fp16", fast=fast)
    flat = flat_calibration("cuda")
    # bf16's curves three times fp32's: a kernel that fell back to fp32 would read a third
    slow = Curve((HUGE,), (3 * T0,))
    slow_grid = Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (3 * T0,))
    cal = flat_calibration(
        "cuda", matmul={**flat.matmul, "bf16": slow_grid},
        attention={k: slow_grid if k.startswith("bf16") else g for k, g in flat.attention.items()},
        vector={k: slow if k.endswith(":bf16") else c for k, c in flat.vector.items()},
        gemv={"bf16": slow})
    assert not any("fp16" in k for k in (*cal.matmul, *cal.attention, *cal.vector, *cal.gemv))
    w = Workload(kind, 1 if kind == "decode" else 2, 64, "fp16")
    assert expected(cfg, w, plan, cal).step_time_s > 0
    calls = [c for c in kernel_calls(cfg, w, plan) if "fp16" in c.key]
    assert calls
    for call in calls:
        twin = dataclasses.replace(call, key=call.key.replace("fp16", "bf16"))
        assert call_time(call, cal) == pytest.approx(call_time(twin, cal)), call


def test_math_attentions_batched_matmuls_stream_every_heads_operands() -> None:
    """Math attention's scores and context are B·H products in one kernel: the grid's (B·H·T, L, D)
    matmul shares one L×D operand among them, so one query's step is charged at least the read of
    every head's K (or V) and its outputs, on the sum_rows curve; a long sequence's stays the grid's."""
    from gptperf.perfmodel.expected import call_time
    from gptperf.perfmodel.kernel_calls import batched_mm

    cfg = preset("gpt2", n_layer=1, attention="math")
    plan = ExecutionPlan.eager("math")
    bytes_per_us = 1e6  # sum_rows: 1 µs per MB read, from 1 kB
    cal = flat_calibration(vector={**flat_calibration().vector,
                                   "sum_rows:fp32": Curve((1e3, 1e9), (1e-9, 1e-3))})
    ops = {(comp, phase): calls for comp, phase, _, calls in
           step_ops(cfg, Workload("decode", 8, 1000, "fp32"), plan)}
    (scores,) = [k for k in ops[(names.ATTN_SCORES, "fwd")] if k.family == "matmul"]
    (context,) = [k for k in ops[(names.ATTN_CONTEXT, "fwd")] if k.family == "matmul"]
    bh, L, D = 8 * 12, 1000, 64
    assert scores == batched_mm("fp32", "fp32", bh, 1, L, D) and scores.point == (bh, L, D)
    # q (1×D), K (D×L) and the scores (1×L) of every head; P (1×L), V (L×D) and the output (1×D)
    for call in (scores, context):
        nbytes = bh * (D + L * D + L) * 4
        assert call.floor.point == (nbytes,)
        assert call_time(call, cal) == pytest.approx(nbytes / bytes_per_us * 1e-6)
    # a training step's (T = L = 1024) read is shorter than the grid's time: the grid's it is
    train = batched_mm("fp32", "fp32", bh, 1024, 1024, D)
    slow_grid = flat_calibration(vector=cal.vector, matmul={"fp32": Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (1.0,))})
    assert call_time(train, slow_grid) == pytest.approx(1.0)


def test_the_position_tables_gradient_is_zeroed_whole_and_summed_over_the_batch() -> None:
    """wpe's gradient: its block_size rows zeroed, then the T rows added in; broadcast over the
    batch in the forward, the rows' gradient is first summed over the B sequences (N·C read)."""
    cfg = preset("tiny", block_size=512)  # not the vocabulary's 256: the token table's fill
    C = cfg.n_embd

    def embed_bwd(batch: int) -> list[KernelCall]:
        ops = {(comp, phase): calls for comp, phase, _, calls in
               step_ops(cfg, Workload("train", batch, 64, "fp32"), ExecutionPlan.eager(cfg.attention))}
        return ops[(names.EMBED, "bwd")]

    calls = embed_bwd(4)
    assert KernelCall("vector", "add:fp32", (512.0 * C * 4,)) in calls  # the whole table, not 64 rows
    assert KernelCall("vector", "sum_rows:fp32", (4 * 64.0 * C * 4,)) in calls
    assert not any(k.key.startswith("sum_rows") for k in embed_bwd(1))  # nothing to sum


def test_math_attention_charges_a_masked_fill_wherever_the_model_masks() -> None:
    """The model fills masked scores when it is causal or the static cache hands it its mask;
    one new token after a growing cache's past sees every key, unmasked."""
    cfg = preset("tiny", attention="math")

    def vector_kernels(plan: ExecutionPlan, kind: str) -> int:
        ops = {(comp, phase): calls for comp, phase, layer, calls in
               step_ops(cfg, Workload(kind, 4, 64, "fp32"), plan) if layer == 0}
        return sum(k.count for k in ops[(names.ATTN_SCORES, "fwd")] if k.family == "vector")

    static = ExecutionPlan.default("decode", "cuda", compile=True, attention="math", fast=True)
    assert static.static_cache
    # the score scale, then the fill
    assert vector_kernels(static, "decode") == 2
    assert vector_kernels(ExecutionPlan.eager("math"), "decode") == 1
    assert vector_kernels(ExecutionPlan.eager("math"), "forward") == 2


def test_an_fp16_static_cache_prefill_reads_bf16s_masked_ratio() -> None:
    from gptperf.perfmodel.expected import call_time

    axes = ("BH", "T", "D")
    causal = Grid(axes, ((1,), (16, 256), (64,)), (1e-6, 1e-4))
    masked = Grid(axes, ((1,), (16, 256), (64,)), (3e-6, 3e-4))  # 3× the causal kernel
    cal = flat_calibration(attention={"bf16:causal_fwd": causal, "bf16:masked_fwd": masked})
    call = KernelCall("attention", "fp16:masked_fwd", (1.0, 64.0, 64.0))
    assert call_time(call, cal) == pytest.approx(3 * causal.at(1.0, 64.0, 64.0))


def test_a_static_cache_prefill_is_charged_the_masked_kernel():
    """The static KV cache's prefill runs sdpa with an explicit mask: one call a layer on the
    calibration's masked grid where it has one (5 µs here), else twice the causal kernel's time
    (every score is computed: 2·T0)."""
    from gptperf.perfmodel.expected import call_time

    cfg = preset("gpt2", n_layer=1)
    w = Workload("prefill", 2, 64, "bf16")
    plan = ExecutionPlan.default("prefill", "cuda", fast=True)
    assert plan.static_cache
    (att,) = [k for k in kernel_calls(cfg, w, plan) if k.family == "attention"]
    assert (att.key, att.point, att.count) == ("bf16:masked_fwd", (2.0 * 12, 64.0, 64.0), 1)
    without = flat_calibration()
    assert call_time(att, without) == pytest.approx(2 * T0)
    masked = Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (5e-6,))
    with_it = flat_calibration(attention={**without.attention, "bf16:masked_fwd": masked})
    assert call_time(att, with_it) == pytest.approx(5e-6)
    # off the masked grid's points it is the causal time there × the ratio read between them: a
    # causal grid with a point at T = 64 (2e-5, off its line), masked ratios 3 at T = 16 and 1.5
    # at 256 -> √(3·1.5) at 64, × 2e-5 (the masked grid alone would say √(3e-6·1.5e-4))
    axes = ("BH", "T", "D")
    causal = Grid(axes, ((1,), (16, 64, 256), (64,)), (1e-6, 2e-5, 1e-4))
    masked = Grid(axes, ((1,), (16, 256), (64,)), (3e-6, 1.5e-4))
    cal = flat_calibration(attention={"bf16:causal_fwd": causal, "bf16:masked_fwd": masked})
    call = att.__class__("attention", "bf16:masked_fwd", (1.0, 64.0, 64.0))
    assert call_time(call, cal) == pytest.approx(math.sqrt(3 * 1.5) * 2e-5)
    assert cal.masked_ratio("bf16", 1, 16, 64) == pytest.approx(3.0)
    assert cal.masked_ratio("bf16", 1, 4096, 64) == pytest.approx(1.5)  # held beyond the edge
    # a plain prefill into the growing cache stays on the causal grid
    (plain,) = [k for k in kernel_calls(cfg, w, ExecutionPlan.eager("sdpa")) if k.family == "attention"]
    assert plain.key == "bf16:causal_fwd" and call_time(plain, with_it) == pytest.approx(T0)


def test_eager_decode_kernels_counted_by_hand():
    """fp32 eager decode with the model's KV cache, one block: embed 3 (two gathers, the add),
    ln_1 1, qkv 3 (matmul, two cache writes), sdpa 1, proj 1 (sdpa writes its output with the
    heads merged already), residual 2, ln_2 1, fc 1, gelu 1, mlp.proj 1, ln_f 1, lm_head 2
    (last-row copy, matmul)."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("decode", 2, 64, "fp32")
    assert sum(k.count for k in kernel_calls(cfg, w)) == 18
    cal = flat_calibration(fixed_s=1e-4, per_layer_s=1e-4)
    e = expected(cfg, w, None, cal)
    assert sum(o.kernels for o in e.ops) == 18
    assert e.device_s == pytest.approx(18 * T0)
    # host-bound: 2e-4 s of host; the last op (lm_head, 2 kernels) runs after its host share
    assert e.step_time_s == pytest.approx(2e-4 + 2 * T0)
    assert e.composition.startswith("eager queue")


def test_host_costs_are_charged_at_the_hosts_speed_now():
    """The host-bound decode above with the host probed 1.5× slower than at calibration: its
    2e-4 s of host become 3e-4 s; a CUDA-graph step has no host to scale."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("decode", 2, 64, "fp32")
    cal = flat_calibration(fixed_s=1e-4, per_layer_s=1e-4)
    e = expected(cfg, w, None, cal, host_speed=1.5)
    assert e.host_s == pytest.approx(3e-4)
    assert e.step_time_s == pytest.approx(3e-4 + 2 * T0)
    assert any("host costs ×1.50" in n for n in e.notes)
    graph = ExecutionPlan.default("decode", "cuda", fast=True)
    g = expected(cfg, Workload("decode", 1, 64, "bf16"), graph, cal, host_speed=1.5)
    assert g.host_s == 0 and not g.notes
    with pytest.raises(UserError, match="host_speed"):
        expected(cfg, w, None, cal, host_speed=0.0)


def test_a_train_steps_phases_are_charged_each_at_its_own_speed():
    """Every host part 2e-4 s at one block: a train step's fwd, bwd and opt host costs (6e-4 s)
    with the forward's speed 3.0, the backward's 0.5 and the optimizer left to the step's 2.0."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("train", 2, 64, "fp32")
    cal = flat_calibration(fixed_s=1e-4, per_layer_s=1e-4)
    host = {o.phase: 0.0 for o in expected(cfg, w, None, cal).ops}
    e = expected(cfg, w, None, cal, host_speed=2.0, phase_speeds={"fwd": 3.0, "bwd": 0.5,
                                                                    "decode": 9.0})
    for o in e.ops:
        host[o.phase] += o.host_s
    assert host == pytest.approx({"fwd": 6e-4, "bwd": 1e-4, "opt": 4e-4})
    assert any("fwd ×3.00, bwd ×0.50" in n and "decode" not in n for n in e.notes)
    with pytest.raises(UserError, match="phase_speeds"):
        expected(cfg, w, None, cal, phase_speeds={"fwd": float("nan")})


def test_a_cpus_parallel_kernels_are_charged_at_the_speed_of_its_parallel_regions():
    """gpt2's one-block fp32 prefill of 32 tokens on the flat CPU calibration runs 18 kernels of
    T0: five in torch's parallel regions (the attention over 393,216 bytes, the three residual
    adds of 294,912 and the GELU of 786,432: at least 2 × 32,768 elements × 4 bytes) and thirteen
    not (five matmuls, three LayerNorms and two embeddings of 196,608 bytes, three copies). At
    parallel speed 0.5 with a 1 MiB cache the five take T0 / 2: 15.5 T0 in all; with 512 KiB the
    GELU streams from memory and keeps its T0: 16 T0; with no cache none moves. A GPU's kernels
    ignore the speed; 0 is refused."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("prefill", 1, 32, "fp32")
    cal = flat_calibration("cpu", fixed_s=1e-3, per_layer_s=0.0, cache_bytes=2**20)
    plain, halved = expected(cfg, w, None, cal), expected(cfg, w, None, cal, parallel_speed=0.5)
    assert plain.device_s == pytest.approx(18 * T0) and plain.parallel_speed is None
    assert halved.device_s == pytest.approx(13 * T0 + 5 * T0 / 2)
    assert halved.host_s == pytest.approx(plain.host_s)  # the host costs move with host_speed alone
    assert halved.parallel_speed == 0.5 and any("parallel CPU kernels ×0.50" in n for n in halved.notes)
    assert Expected.from_dict(halved.to_dict()).parallel_speed == 0.5
    smaller = replace(cal, cache_bytes=512 * 1024)
    assert expected(cfg, w, None, smaller, parallel_speed=0.5).device_s == pytest.approx(14 * T0 + 4 * T0 / 2)
    no_cache = replace(cal, cache_bytes=0.0)
    assert expected(cfg, w, None, no_cache, parallel_speed=0.5).device_s == pytest.approx(18 * T0)
    gpu = flat_calibration("cuda")
    on_gpu = expected(cfg, w, None, gpu, parallel_speed=0.5)
    assert on_gpu.device_s == pytest.approx(expected(cfg, w, None, gpu).device_s)
    assert on_gpu.parallel_speed is None and not any("parallel" in n for n in on_gpu.notes)
    with pytest.raises(UserError, match="parallel_speed"):
        expected(cfg, w, None, cal, parallel_speed=0.0)


def test_adamws_loop_moves_with_the_parallel_regions_as_far_as_its_tensors_stay_in_the_cache():
    """Two tensors of 1,000 parameters (16 kB each with their gradient and moments: in a 1 MiB
    cache) and one of 1,000,000 (16 MB: from memory), at parallel speed 0.5: weighted by size,
    (2,000 × 0.5 + 1,000,000 × 1) / 1,002,000. A matmul is outside the parallel regions."""
    cal = flat_calibration("cpu", cache_bytes=2**20)
    adamw = KernelCall("optimizer", "adamw_foreach", (3, 1_002_000), tensors=((1000, 2), (1_000_000, 1)))
    assert parallel_factor(adamw, cal, 0.5) == pytest.approx((2000 * 0.5 + 1_000_000) / 1_002_000)
    assert parallel_factor(KernelCall("matmul", "fp32", (64, 64, 64)), cal, 0.5) == 1.0


def test_eager_prefill_is_charged_its_own_host_part_or_infer_without_one():
    """gpt2 with 2 blocks: prefill's own line (5e-4 + 2·1e-4) where the calibration has it; a
    calibration from before it was measured charges decode_nocache's (infer: 1e-4 + 2·1e-4)."""
    cfg = preset("gpt2", n_layer=2)
    w = Workload("prefill", 1, 64, "fp32")
    old = flat_calibration(fixed_s=1e-4, per_layer_s=1e-4)
    assert expected(cfg, w, None, old).host_s == pytest.approx(3e-4)
    host = dict(old.host, **{"eager:prefill:fp32": {"fixed_s": 5e-4, "per_layer_s": 1e-4}})
    assert expected(cfg, w, None, flat_calibration(host=host)).host_s == pytest.approx(7e-4)
    # decode_nocache keeps infer's line
    nocache = Workload("decode_nocache", 1, 64, "fp32")
    assert expected(cfg, nocache, None, flat_calibration(host=host)).host_s == pytest.approx(3e-4)


def test_a_compiled_forward_without_its_own_host_cost_takes_the_compiled_train_forwards():
    """A compiled forward (no grad) where the calibration has no compiled:nograd line: charged the
    compiled train forward's line (2e-4 + 2·1e-4), not the eager forward's (9e-4 + 2·1e-4)."""
    cfg = preset("gpt2", n_layer=2)
    w = Workload("forward", 1, 64, "bf16")
    host = {k: v for k, v in flat_calibration().host.items() if not k.startswith("compiled:")}
    host.update({"compiled:fwd:bf16": {"fixed_s": 2e-4, "per_layer_s": 1e-4},
                 "eager:nograd:bf16": {"fixed_s": 9e-4, "per_layer_s": 1e-4}})
    plan = ExecutionPlan.default("forward", "cuda", compile=True)
    assert expected(cfg, w, plan, flat_calibration(host=host)).host_s == pytest.approx(4e-4)
    # with a compiled forward of its own, that line
    host["compiled:nograd:bf16"] = {"fixed_s": 1e-4, "per_layer_s": 0.5e-4}
    assert expected(cfg, w, plan, flat_calibration(host=host)).host_s == pytest.approx(2e-4)


def test_a_compiled_forward_past_its_lines_knee_is_charged_the_deeper_slope():
    """compiled:nograd 1e-4 fixed + 1e-5 a block, and 3e-5 a block past 4 blocks: 2 blocks
    1.2e-4 s, 4 blocks 1.4e-4, 10 blocks 1.4e-4 + 6 · 3e-5 = 3.2e-4 (the line alone: 2e-4)."""
    host = dict(flat_calibration().host)
    host["compiled:nograd:bf16"] = {"fixed_s": 1e-4, "per_layer_s": 1e-5}
    plan = ExecutionPlan.default("forward", "cuda", compile=True)
    w = Workload("forward", 1, 64, "bf16")

    def charged(n_layer: int, host: dict) -> float:
        return expected(preset("gpt2", n_layer=n_layer), w, plan, flat_calibration(host=host)).host_s

    assert charged(10, host) == pytest.approx(2e-4)
    host["compiled:nograd:bf16"] |= {"beyond_layers": 4.0, "beyond_per_layer_s": 3e-5}
    assert [charged(n, host) for n in (2, 4, 10)] == pytest.approx([1.2e-4, 1.4e-4, 3.2e-4])


def test_the_knee_survives_a_round_trip_and_the_comparison_script_predicts_both_ways(tmp_path):
    """A calibration's host line with its knee round-trips; `benchmarks/validate_host_knee.py`
    predicts a stored compiled forward bench with the knee and on the straight line: apart for
    10 blocks (3.2e-4 against 2e-4 s of host time), alike for 4."""
    import json

    from benchmark_scripts import load

    knee = load("validate_host_knee")
    host = dict(flat_calibration().host)
    host["compiled:nograd:bf16"] = {"fixed_s": 1e-4, "per_layer_s": 1e-5, "beyond_layers": 4.0,
                                    "beyond_per_layer_s": 3e-5}
    cal = flat_calibration(host=host)
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))).host == cal.host
    # a line with half a knee, or without its fixed cost, is a broken document: one line
    for broken in ({"fixed_s": 1e-4, "per_layer_s": 1e-5, "beyond_layers": 4.0}, {"per_layer_s": 1e-5}):
        doc = cal.to_dict()
        doc["host"]["compiled:nograd:bf16"] = broken
        with pytest.raises(UserError, match="calibration document is broken.*lacks"):
            Calibration.from_dict(doc)
    assert "beyond_layers" not in knee.straight(cal).host["compiled:nograd:bf16"]
    # --only straightens one mode's lines: the eager ones here, the compiled knee kept
    bent = {"fixed_s": 1e-4, "per_layer_s": 1e-5, "beyond_layers": 4.0, "beyond_per_layer_s": 2e-5}
    eager_only = knee.straight(flat_calibration(host={**host, "eager:nograd:bf16": bent}), "eager").host
    assert eager_only["eager:nograd:bf16"] == {"fixed_s": 1e-4, "per_layer_s": 1e-5}
    assert eager_only["compiled:nograd:bf16"] == host["compiled:nograd:bf16"]
    plan = ExecutionPlan.default("forward", "cuda", compile=True)
    docs = [{"config": preset("gpt2", n_layer=n).to_dict(), "plan": plan.to_dict(), "step_time_s": 1e-3,
             "workload": {"kind": "forward", "batch": 1, "seq": 64, "dtype": "bf16"},
             "predictions": [{"source": "nominal"}, {"source": "calibrated", "host_speed": 1.0}]}
            for n in (4, 10)]
    (tmp_path / "benches.json").write_text(json.dumps(docs))
    (four, ten) = knee.bench_cases(tmp_path / "benches.json", cal, knee.straight(cal))
    assert four[1] == pytest.approx(four[2])  # measured/predicted, with the knee and without
    w = Workload("forward", 1, 64, "bf16")
    assert ten[1] == pytest.approx(1e-3 / expected(preset("gpt2", n_layer=10), w, plan, cal,
                                                   host_speed=1.0).step_time_s)
    assert ten[2] == pytest.approx(1e-3 / expected(preset("gpt2", n_layer=10), w, plan,
                                                   knee.straight(cal), host_speed=1.0).step_time_s)
    assert ten[1] < ten[2]
    # gpu_validate.py's bench_checks.json holds the same documents by label
    (tmp_path / "bench_checks.json").write_text(json.dumps(dict(zip(("four", "ten"), docs, strict=True))))
    assert knee.bench_cases(tmp_path / "bench_checks.json", cal, knee.straight(cal)) == [four, ten]


def test_a_compiled_train_steps_optimizer_takes_the_compiled_jobs_line_where_its_plan_keeps_master_weights():
    """The optimizer of a compiled bf16 step with master weights is charged the compiled job's own
    optimizer line (3e-4 + 2·1e-4), which ran that plan; a calibration from before it was measured,
    and a compiled fp32 step (torch's fused AdamW, the eager plan's), the eager line (1e-4 + 2·1e-4)."""
    cfg = preset("gpt2", n_layer=2)

    def opt_host(dtype: str, host: dict) -> float:
        plan = ExecutionPlan.default("train", "cuda", compile=True, dtype=dtype)
        e = expected(cfg, Workload("train", 2, 64, dtype), plan, flat_calibration(host=host))
        return sum(o.host_s for o in e.ops if o.phase == names.OPTIMIZER_PHASE)

    host = {k: v for k, v in flat_calibration().host.items() if not k.startswith("compiled:opt")}
    assert ExecutionPlan.default("train", "cuda", compile=True, dtype="bf16").master_weights
    assert opt_host("bf16", host) == pytest.approx(3e-4)
    host["compiled:opt:bf16"] = {"fixed_s": 3e-4, "per_layer_s": 1e-4}
    assert opt_host("bf16", host) == pytest.approx(5e-4)
    assert not ExecutionPlan.default("train", "cuda", compile=True, dtype="fp32").master_weights
    host["compiled:opt:fp32"] = {"fixed_s": 3e-4, "per_layer_s": 1e-4}  # no fp32 plan keeps masters
    assert opt_host("fp32", host) == pytest.approx(3e-4)


def test_cuda_graph_is_device_time_back_to_back():
    cfg = preset("gpt2", n_layer=2)
    w = Workload("decode", 1, 64, "bf16")
    plan = ExecutionPlan.default("decode", "cuda", fast=True)
    e = expected(cfg, w, plan, flat_calibration())
    n = sum(o.kernels for o in e.ops)
    assert e.step_time_s == pytest.approx(n * T0)
    assert e.host_s == 0
    # the one-row kernel: every batch-1 matmul is a gemv call, none is a cuBLAS matmul
    calls = kernel_calls(cfg, w, plan)
    assert not [k for k in calls if k.family == "matmul"]
    assert len([k for k in calls if k.family == "gemv"]) == 2 * 4 + 1


def test_cpu_host_time_excludes_the_tiny_models_own_kernels():
    """On a CPU the step is host + kernels; the host figure was measured on HOST_MODEL and its
    kernel time (same decomposition, same curves) is taken out of it."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("prefill", 1, 32, "fp32")
    cal = flat_calibration("cpu", fixed_s=1e-3, per_layer_s=0.0)
    e = expected(cfg, w, None, cal)
    tiny = preset("gpt2", n_layer=1, n_embd=HOST_MODEL["n_embd"], n_head=HOST_MODEL["n_head"])
    tiny_kernels = sum(k.count for k in kernel_calls(tiny, Workload("prefill", 1, 8, "fp32")))
    kernels = sum(o.kernels for o in e.ops)
    assert e.step_time_s == pytest.approx(1e-3 - tiny_kernels * T0 + kernels * T0)


def test_mixed_precision_adds_the_autocast_casts():
    cfg = preset("gpt2", n_layer=1)
    fp32 = kernel_calls(cfg, Workload("forward", 2, 64, "fp32"))
    bf16 = kernel_calls(cfg, Workload("forward", 2, 64, "bf16"))
    casts = [k for k in bf16 if k.key.startswith("cast_")]
    # per block: ln_1 out + qkv weight and bias, proj weight and bias, ln_2 out + fc weight and
    # bias, mlp.proj weight and bias; head: ln_f out + the tied weight (no bias); the fp32 loss
    # reads the bf16 logits itself
    assert len(casts) == 10 + 2
    C = cfg.n_embd
    biases = [k.point for k in casts if k.key == "cast_weight_to_bf16:fp32" and k.point[0] < 6 * C * C]
    assert biases == [(6.0 * 3 * C,), (6.0 * C,), (6.0 * 4 * C,), (6.0 * C,)]
    assert not [k for k in fp32 if k.key.startswith("cast_")]
    # the residual adds read the bf16 branch as they go: one mixed add each, no cast
    mixed = [k for k in bf16 if k.key == "add_mixed:bf16"]
    assert [k.count for k in mixed] == [2] and mixed[0].point == (2 * 64 * 768 * (4 + 2 + 4),)
    assert not [k for k in fp32 if k.key.startswith("add_mixed")]


def test_a_mixed_add_is_its_own_curve_or_else_a_cast_and_an_add():
    """The residual add under autocast: on the add_mixed curve where the calibration has one;
    from an older calibration, one cast and one fp32 add a kernel (flat: T0 each)."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("forward", 2, 64, "bf16")
    old = flat_calibration()
    residual = [o for o in expected(cfg, w, None, old).ops if o.component == "residual"]
    assert [o.kernels for o in residual] == [2] and residual[0].device_s == pytest.approx(
        2 * 2 * T0 + 2 * old.launch_gap_s)
    mixed = Curve((HUGE,), (3 * T0,))
    new = flat_calibration(vector={**old.vector, "add_mixed:bf16": mixed})
    residual = [o for o in expected(cfg, w, None, new).ops if o.component == "residual"]
    assert residual[0].device_s == pytest.approx(2 * 3 * T0 + 2 * new.launch_gap_s)


def test_a_weights_cast_and_the_qkv_gradients_cat_are_their_own_curves_or_else_the_older_ones():
    """Autocast's cast of an fp32 weight (read from memory) is charged on `cast_weight_to_bf16`, an
    activation's on `cast_to_bf16`; under sdpa the qkv split's gradient is one cat, under math a
    transposing copy. A calibration from before those curves charges them as before: the
    activation's cast and the copy. Hand-computed: gpt2 widths, a train step of 2 × 64 bf16 tokens."""
    from gptperf.perfmodel.expected import call_time

    cfg = preset("gpt2", n_layer=1)
    C, N = 768, 2 * 64
    ops = [(c, ph, calls) for c, ph, layer, calls in step_ops(cfg, Workload("train", 2, 64, "bf16"),
                                                              ExecutionPlan.eager("sdpa"), "cuda")
           if layer == 0]
    qkv_fwd = next(calls for c, ph, calls in ops if c == names.ATTN_QKV and ph == names.FORWARD)
    assert [(k.key, k.point) for k in qkv_fwd[:2]] == [
        ("cast_to_bf16:fp32", (N * C * 6.0,)), ("cast_weight_to_bf16:fp32", (C * 3 * C * 6.0,))]
    qkv_bwd = next(calls for c, ph, calls in ops if c == names.ATTN_QKV and ph == names.BACKWARD)
    assert (qkv_bwd[0].key, qkv_bwd[0].point) == ("cat:bf16", (2 * 3 * N * C * 2.0,))
    math_bwd = [calls for c, ph, layer, calls in step_ops(cfg, Workload("train", 2, 64, "bf16"),
                                                          ExecutionPlan.eager("math"), "cuda")
                if layer == 0 and c == names.ATTN_QKV and ph == names.BACKWARD][0]
    assert math_bwd[0].key == "copy:bf16"
    old = flat_calibration(vector={**flat_calibration().vector,
                                   "cast_to_bf16:fp32": Curve((HUGE,), (2e-6,)),
                                   "copy:bf16": Curve((HUGE,), (5e-6,))})
    assert call_time(qkv_fwd[1], old) == pytest.approx(2e-6)  # as the activation's cast
    assert call_time(qkv_bwd[0], old) == pytest.approx(5e-6)  # as the transposing copy
    new = flat_calibration(vector={**old.vector, "cast_weight_to_bf16:fp32": Curve((HUGE,), (7e-6,)),
                                   "cat:bf16": Curve((HUGE,), (3e-6,))})
    assert call_time(qkv_fwd[0], new) == pytest.approx(2e-6)  # an activation's: unchanged
    assert call_time(qkv_fwd[1], new) == pytest.approx(7e-6)
    assert call_time(qkv_bwd[0], new) == pytest.approx(3e-6)
    assert call_time(math_bwd[0], new) == pytest.approx(5e-6)
    # fp16's weight cast reads bf16's curve, as every fp16 kernel
    half = KernelCall("vector", "cast_weight_to_fp16:fp32", (6e3,))
    assert call_time(half, new) == pytest.approx(7e-6)


def test_compiled_training_charges_the_recorded_fused_kernels_scaled_by_bytes():
    cfg = preset("gpt2", n_layer=2)
    w = Workload("train", 4, 128, "bf16")
    plan = ExecutionPlan.default("train", "cuda", compile=True)
    rec = {"config": cfg.to_dict(), "workload": w.to_dict(), "plan": plan.to_dict(),
           "ops": {"mlp.act:fwd": {"kernels": 1, "seconds": {"matmul": 0, "attention": 0, "other": 5e-5}}}}
    cal = flat_calibration(compiled={"train:bf16": rec})
    same = expected(cfg, w, plan, cal)
    act = same.by_key()[("h.0.mlp.act", "fwd")]
    assert act.device_s == pytest.approx(5e-5)  # the recorded step itself: exactly its time
    ln = same.by_key()[("h.0.ln_1", "fwd")]
    assert ln.device_s == 0  # nothing recorded for it: fused into a neighbour
    qkv = same.by_key()[("h.0.attn.qkv", "fwd")]
    assert qkv.device_s == pytest.approx(T0)  # its matmul; its casts are fused away
    big = expected(cfg, Workload("train", 8, 128, "bf16"), plan, cal)
    # twice the tokens: the fixed part (one kernel at the smallest vector time T0) stays,
    # the rest doubles
    assert big.by_key()[("h.0.mlp.act", "fwd")].device_s == pytest.approx(T0 + (5e-5 - T0) * 2)
    assert isinstance(Expected.from_dict(big.to_dict()), Expected)
    # the host's speed it was charged at survives the round trip: a probed prediction stays one
    probed = expected(cfg, Workload("train", 8, 128, "bf16"), plan, cal, host_speed=1.5,
                      phase_speeds={"bwd": 2.0})
    back = Expected.from_dict(probed.to_dict())
    assert (back.host_speed, back.phase_speeds) == (1.5, {"bwd": 2.0})
    assert not back.charged_as_calibrated and Expected.from_dict(big.to_dict()).charged_as_calibrated



def test_a_compiled_step_takes_the_recording_of_its_own_kind_before_the_train_steps() -> None:
    """A compiled fp32 forward is charged the recorded bf16 forward (whose loss inductor fuses),
    not the bf16 train step (whose loss is gptperf's own kernels): the same kind before the same
    dtype."""
    from gptperf.perfmodel.expected import recorded_step

    cfg = preset("gpt2", n_layer=2)
    plan = ExecutionPlan.default("forward", "cuda", compile=True)
    recs = {kind: {"config": cfg.to_dict(), "workload": Workload(kind, 4, 128, "bf16").to_dict(),
                   "plan": ExecutionPlan.default(kind, "cuda", compile=True).to_dict(),
                   "ops": {"loss:fwd": {"kernels": 2, "seconds": {"matmul": 0, "attention": 0,
                                                                  "other": other}}}}
            for kind, other in (("train", 3e-5), ("forward", 7e-5))}
    cal = flat_calibration(compiled={"train:bf16": recs["train"], "forward:bf16": recs["forward"]})
    assert recorded_step(cal, "forward", "fp32") is recs["forward"]
    assert recorded_step(cal, "train", "fp32") is recs["train"]
    assert recorded_step(cal, "forward", "bf16") is recs["forward"]
    assert recorded_step(flat_calibration(compiled={"train:bf16": recs["train"]}), "forward", "fp32") \
        is recs["train"]
    assert recorded_step(flat_calibration(), "forward", "bf16") is None
    # the fp32 forward's loss: the recorded forward's kernels (autocast's loss is fp32 too: the
    # same bytes), not the eager cross-entropy curve the train recording's fused loss leads to
    w = Workload("forward", 4, 128, "fp32")
    loss = expected(cfg, w, plan, cal).by_key()[("loss", "fwd")]
    assert loss.kernels == 2 and loss.device_s == pytest.approx(7e-5 + 2 * cal.launch_gap_s)
    only_train = flat_calibration(compiled={"train:bf16": recs["train"]})
    assert expected(cfg, w, plan, only_train).by_key()[("loss", "fwd")].kernels == 1

def test_master_weights_are_charged_their_casts_and_a_recording_of_another_plan_is_noted():
    """Master weights: the optimizer pays the two casts of the copied weights beside AdamW; fused
    kernels scaled from a recording made without master weights say so in the notes."""
    cfg = preset("gpt2", n_layer=2)
    w = Workload("train", 4, 128, "bf16")
    autocast_plan = ExecutionPlan("compiled", fused_optimizer=True, fused_loss=True)
    master = autocast_plan.replace(master_weights=True)
    assert ExecutionPlan.default("train", "cuda", compile=True, dtype="bf16") == master.replace(
        fused_master_update=True)

    def recorded(plan: ExecutionPlan) -> Calibration:
        rec = {"config": cfg.to_dict(), "workload": w.to_dict(), "plan": plan.to_dict(),
               "ops": {"mlp.act:fwd": {"kernels": 1, "seconds": {"other": 5e-5}}}}
        return flat_calibration(compiled={"train:bf16": rec})

    mine, other = expected(cfg, w, master, recorded(master)), expected(cfg, w, master, recorded(autocast_plan))
    assert not any("master weights" in n for n in mine.notes)
    assert any("recording without master weights" in n for n in other.notes)
    opt = ("optimizer", "opt")
    with_casts = mine.by_key()[opt]
    without = expected(cfg, w, autocast_plan, recorded(autocast_plan)).by_key()[opt]
    assert with_casts.kernels == without.kernels + 2 and with_casts.device_s > without.device_s


def test_one_pass_master_update_is_charged_on_its_own_grid_or_as_adamw():
    """The one-pass update: AdamW's kernel over the fp32 parameters, gptperf's over the copies
    (on the calibration's `adamw_master` grid, else AdamW's fused one: the same bytes a
    parameter), and the norm over each gradient in its dtype; no casts."""
    cfg = preset("gpt2", n_layer=2)
    w = Workload("train", 4, 128, "bf16")
    plan = ExecutionPlan("compiled", fused_optimizer=True, fused_loss=True, master_weights=True,
                         fused_master_update=True)
    calls = {c.key: c for c in
             next(calls for comp, _, _, calls in step_ops(cfg, w, plan) if comp == names.OPTIMIZER)}
    P, Q = count_parameters(cfg), master_copied_parameters(cfg)
    assert calls["adamw_fused"].point == (12 * 2 + 4 - 8 * 2, P - Q)
    assert calls["adamw_master"].point == (8 * 2, Q)
    assert calls["sum_rows:fp32"].point == (4 * (P - Q) + 2 * Q,)
    assert not any(k.startswith("cast") for k in calls)

    def per_param(seconds: float) -> Grid:  # s per call over (tensors, parameters): linear in parameters
        return Grid(("tensors", "parameters"), ((1.0, 1e4), (1.0, 1e10)), (seconds, seconds * 1e10) * 2)

    opt = ("optimizer", "opt")
    own = flat_calibration(optimizer={"adamw_fused": per_param(1e-12), "adamw_master": per_param(3e-12)})
    fallback = flat_calibration(optimizer={"adamw_fused": per_param(1e-12)})
    got_own = expected(cfg, w, plan, own).by_key()[opt].device_s
    got_fallback = expected(cfg, w, plan, fallback).by_key()[opt].device_s
    assert got_fallback == pytest.approx(1e-12 * P + T0, rel=1e-6)  # + the norm's flat curve
    assert got_own - got_fallback == pytest.approx(2e-12 * Q, rel=1e-6)


def test_missing_curve_is_a_one_line_error_naming_what_exists():
    cal = flat_calibration(matmul={})
    with pytest.raises(UserError, match="no matmul curve 'fp32'.*`gptperf calibrate --force`"):
        expected(preset("gpt2", n_layer=1), Workload("forward", 1, 16, "fp32"), None, cal)


def test_a_dtype_the_calibration_was_not_measured_in_is_refused_naming_those_it_was():
    """A CPU's calibration times fp32 alone (its twin grids from the cache aside): a bf16, fp16 or
    tf32 step (tf32's matmuls have a rate of their own) is refused in one line that names fp32
    and the flag, before any curve is read (fp16 is predicted on bf16's curves where those were
    timed: the test above)."""
    grid = flat_calibration().matmul["fp32"]
    cpu = flat_calibration("cpu", matmul={"fp32": grid, "fp32:warm": grid})
    assert cpu.dtypes == ("fp32",)
    config = preset("gpt2", n_layer=1)
    with pytest.raises(UserError) as err:
        expected(config, Workload("forward", 1, 16, "bf16"), None, cpu)
    assert str(err.value) == ("the calibration of 'Test GPU' was measured in fp32, not bf16: "
                              "predict a step in fp32 (--dtype fp32)")
    for dtype in ("fp16", "tf32"):
        with pytest.raises(UserError, match=f"measured in fp32, not {dtype}: .*--dtype fp32"):
            expected(config, Workload("forward", 1, 16, dtype), None, cpu)
    assert expected(config, Workload("forward", 1, 16, "fp32"), None, cpu).step_time_s > 0
    assert flat_calibration().dtypes == ("bf16", "fp32")


def test_fused_decode_gemvs_use_the_in_step_curves_then_the_chains_then_the_plain_one():
    """The fused decode step's weight streams are looked up on the curves of each layer kernel
    timed inside a captured step ("in_step:<component>:<dtype>"), the LM head on the argmax chain.
    A calibration without an in-step curve charges that kernel on its chain (qkv and fc on the
    LayerNorm chain, the projections on the residual chain); without the residual or argmax chain
    those on the LayerNorm chain; without any chain on the plain gemv."""
    from gptperf import names

    fused = ExecutionPlan("cuda_graph", static_cache=True, one_row_kernel=True, fused_decode=True)
    config, decode = preset("tiny"), Workload("decode", 1, 32, "bf16")
    calls = kernel_calls(config, decode, fused)
    gemvs = sum(k.count for k in calls if k.family == "gemv")
    others = sum(k.count for k in calls if k.family != "gemv")
    layer = (names.ATTN_QKV, names.ATTN_PROJ, names.MLP_FC, names.MLP_PROJ)
    assert gemvs == 4 * config.n_layer + 1
    ops = {(comp, k.key) for comp, _, _, ks in step_ops(config, decode, fused) for k in ks if k.family == "gemv"}
    assert ops == {(c, f"in_step:{c}:bf16") for c in layer} | {(names.LM_HEAD, "chain_argmax:bf16")}
    n = config.n_layer
    chain_t, residual_t, head_t = 5e-6, 3e-6, 7e-6
    step_t = {names.ATTN_QKV: 2e-6, names.ATTN_PROJ: 1e-6, names.MLP_FC: 4e-6, names.MLP_PROJ: 6e-6}
    chains = {"bf16": Curve((HUGE,), (T0,)), "chain:bf16": Curve((HUGE,), (chain_t,))}
    every = {**chains, "chain_residual:bf16": Curve((HUGE,), (residual_t,)),
             "chain_argmax:bf16": Curve((HUGE,), (head_t,))}
    in_step = {f"in_step:{c}:bf16": Curve((HUGE,), (t,)) for c, t in step_t.items()}
    qkv_only = {"in_step:attn.qkv:bf16": in_step["in_step:attn.qkv:bf16"]}
    no_head = {**chains, "chain_residual:bf16": Curve((HUGE,), (residual_t,))}
    # a CUDA graph: the step is its device time
    step = lambda gemv: expected(config, decode, fused, flat_calibration(gemv=gemv)).step_time_s  # noqa: E731
    assert step({**every, **in_step}) == pytest.approx(n * sum(step_t.values()) + head_t + others * T0)
    assert step({**every, **qkv_only}) == pytest.approx(
        n * (step_t[names.ATTN_QKV] + chain_t + 2 * residual_t) + head_t + others * T0)
    assert step(every) == pytest.approx(n * (2 * chain_t + 2 * residual_t) + head_t + others * T0)
    assert step(no_head) == pytest.approx(n * (2 * chain_t + 2 * residual_t) + chain_t + others * T0)
    assert step(chains) == pytest.approx(gemvs * chain_t + others * T0)
    assert step({"bf16": Curve((HUGE,), (T0,))}) == pytest.approx((gemvs + others) * T0)


def test_fused_decode_attention_uses_its_own_grid_or_else_sdpas_one_query():
    """The fused step's attention kernel is looked up on the calibration's "<dtype>:fused_decode"
    grid at (heads, L, D); a calibration without it charges sdpa's one-query grid, as before."""
    fused = ExecutionPlan("cuda_graph", static_cache=True, one_row_kernel=True, fused_decode=True)
    config, decode = preset("tiny"), Workload("decode", 1, 32, "bf16")
    attention = [k for k in kernel_calls(config, decode, fused) if k.family == "attention"]
    assert {k.key for k in attention} == {"bf16:fused_decode"}
    assert {k.point for k in attention} == {(config.n_head, 32.0, config.n_embd / config.n_head)}
    n_attention = sum(k.count for k in attention)
    assert n_attention == config.n_layer
    base = flat_calibration()
    own_t = 9e-6
    own = flat_calibration(attention={**base.attention, "bf16:fused_decode": Grid(
        ("H", "L", "D"), ((HUGE,), (HUGE,), (HUGE,)), (own_t,))})
    assert expected(config, decode, fused, own).step_time_s == pytest.approx(
        expected(config, decode, fused, base).step_time_s + n_attention * (own_t - T0))
    # a compiled CUDA-graph decode (batch 8: no fused kernels) runs sdpa: its grid, not this one
    graphed = ExecutionPlan("cuda_graph", static_cache=True)
    batched = Workload("decode", 8, 32, "bf16")
    assert {k.key for k in kernel_calls(config, batched, graphed) if k.family == "attention"} == {"bf16:one_query"}
    assert expected(config, batched, graphed, own).step_time_s == pytest.approx(
        expected(config, batched, graphed, base).step_time_s)


def test_fp32_fused_decode_attention_is_the_16_bit_kernel_at_twice_the_length():
    """The fused step's fp32 attention kernel, not on the calibration's grid, is charged as the
    bf16 kernel at (heads, 2·L, D) (twice the bytes a position), not as sdpa's fp32 one-query
    kernels; below the grid's edge the note names both; without a 16-bit grid, one-query as before."""
    from gptperf.perfmodel.expected import below_grid_notes, call_time, wide_fused_attention

    fused = ExecutionPlan("cuda_graph", static_cache=True, one_row_kernel=True, fused_decode=True)
    config, decode = preset("tiny"), Workload("decode", 1, 96, "fp32")
    (call,) = {k for k in kernel_calls(config, decode, fused) if k.family == "attention"}
    heads, head_size = config.n_head, config.n_embd / config.n_head
    assert (call.key, call.point) == ("fp32:fused_decode", (heads, 96.0, head_size))
    # 10 ns a position on the bf16 grid (a power law: its log-log interpolation is exact)
    grid = Grid(("H", "L", "D"), ((1, 1e4), (128, 1024), (1, 1e3)),
                tuple(1e-8 * length for _ in range(2) for length in (128, 1024) for _ in range(2)))
    base = flat_calibration()
    cal = flat_calibration(attention={**base.attention, "bf16:fused_decode": grid,
                                      "fp32:one_query": Grid(("a", "b", "c"), ((HUGE,),) * 3, (1e-3,))})
    assert wide_fused_attention(call, cal).point == (heads, 192.0, head_size)
    assert call_time(call, cal) == pytest.approx(call.count * 1e-8 * 192)
    assert call_time(call, flat_calibration(attention=cal.attention | {"fp32:fused_decode": grid})) \
        == pytest.approx(call.count * 1e-8 * 128)  # its own grid where measured (96: the edge)
    assert call_time(call, flat_calibration(attention={**base.attention, "fp32:one_query": Grid(
        ("a", "b", "c"), ((HUGE,),) * 3, (1e-3,))})) == pytest.approx(call.count * 1e-3)
    short = replace(call, point=(heads, 40.0, head_size))  # 2·40 = 80 < the grid's 128
    (note,) = below_grid_notes([short], cal)
    assert "fp32:fused_decode (timed as bf16:fused_decode at twice the length) at L 80" in note
    assert call_time(short, cal) == pytest.approx(call.count * 1e-8 * 128)
    # a bf16 call, another pass: as they are
    bf16 = replace(call, key="bf16:fused_decode", point=(heads, 300.0, head_size))
    assert wide_fused_attention(bf16, cal) is bf16
    assert call_time(bf16, cal) == pytest.approx(call.count * 1e-8 * 300)
    one_query = replace(call, key="fp32:one_query")
    assert wide_fused_attention(one_query, cal) is one_query


def test_optimizer_time_follows_the_tensor_count_on_its_grid():
    """The optimizer is looked up at (the model's parameter tensors, its parameters): on a grid
    whose time is 1 µs per tensor whatever the parameters, a step costs 1 µs × (12 layers + 4)."""
    from gptperf import names
    from gptperf.perfmodel.workload import count_parameter_tensors

    grid = Grid(("tensors", "parameters"), ((12, 192), (1e3, 1e12)), (12e-6, 12e-6, 192e-6, 192e-6))
    cal = flat_calibration(optimizer={"adamw_fused": grid, "adamw_foreach": grid})
    cfg = preset("gpt2", n_layer=5)
    e = expected(cfg, Workload("train", 2, 64, "bf16"), ExecutionPlan.default("train", "cuda"), cal)
    (op,) = [o for o in e.ops if o.component == names.OPTIMIZER]
    assert count_parameter_tensors(cfg) == 12 * 5 + 4
    assert op.device_s == pytest.approx(64e-6 + (op.kernels - 1) * T0)  # the clip's kernels: T0 each
    old = flat_calibration()  # an optimizer Curve over parameters alone (an older calibration)
    (op_old,) = [o for o in expected(cfg, Workload("train", 2, 64, "bf16"), ExecutionPlan.default("train", "cuda"),
                                     old).ops if o.component == names.OPTIMIZER]
    assert op_old.device_s == pytest.approx(op_old.kernels * T0)


def test_a_cpu_optimizer_step_charges_each_tensor_at_its_own_size_on_the_loop():
    """With the CPU's per-tensor loop a step is its tensors' times summed, each at its own size: on
    a loop of 1 ns a parameter it costs 1 ns × the model's parameters, on a flat 10 µs a tensor
    10 µs × its tensors; the grid of equal tensors (1 s a step here) is read only by a
    calibration without the loop."""
    from gptperf import names
    from gptperf.perfmodel.workload import count_parameter_tensors, count_parameters

    grid = Grid(("tensors", "parameters"), ((12, 192), (1e3, 1e12)), (1.0,) * 4)
    per_param = Grid(("parameters",), ((1e2, 1e9),), (1e-7, 1.0))
    per_tensor = Grid(("parameters",), ((1e2, 1e9),), (1e-5, 1e-5))
    cfg = preset("gpt2", n_layer=2)  # its smallest tensor (768) lies inside the loop's points
    work, plan = Workload("train", 2, 64, "fp32"), ExecutionPlan.default("train", "cpu")

    def optimizer_s(**optimizer: Grid) -> float:
        cal = flat_calibration("cpu", optimizer=optimizer)
        (op,) = [o for o in expected(cfg, work, plan, cal).ops if o.component == names.OPTIMIZER]
        return op.device_s - (op.kernels - 1) * T0  # less the clip's kernels: T0 each

    assert optimizer_s(adamw_foreach=grid, adamw_loop=per_param) == pytest.approx(
        1e-9 * count_parameters(cfg))
    assert optimizer_s(adamw_foreach=grid, adamw_loop=per_tensor) == pytest.approx(
        1e-5 * count_parameter_tensors(cfg))
    assert optimizer_s(adamw_foreach=grid) == pytest.approx(1.0)


def test_a_cpu_optimizer_step_reads_the_loop_from_memory_as_far_as_its_tensors_leave_the_cache():
    """With the loop timed both ways, a step is charged its share of the cache's saving
    (`cache_share`): a train step whose tensors lie where the reach reads half the saving pays
    halfway between the loop on one set (1 ns a parameter) and the loop from memory (3 ns); one
    far past the reach pays the loop from memory, one well inside it the loop on one set; a
    calibration without the cold loop reads the one it has."""
    from gptperf import names
    from gptperf.perfmodel.memory import memory_breakdown
    from gptperf.perfmodel.workload import count_parameters

    warm = Grid(("parameters",), ((1e2, 1e9),), (1e-7, 1.0))
    cold = Grid(("parameters",), ((1e2, 1e9),), (3e-7, 3.0))
    cfg, work = preset("tiny"), Workload("train", 2, 64, "fp32")
    plan = ExecutionPlan.default("train", "cpu")
    peak = memory_breakdown(cfg, work, plan).total
    params = count_parameters(cfg)

    notes: list[str] = []

    def optimizer_s(reach: Curve, **loops: Grid) -> float:
        cal = flat_calibration("cpu", optimizer={"adamw_foreach": Grid(
            ("tensors", "parameters"), ((1, 2), (1e3, 1e12)), (1.0,) * 4), **loops}, cache_reach=reach)
        e = expected(cfg, work, plan, cal)
        notes[:] = [n for n in e.notes if "cache" in n]
        (op,) = [o for o in e.ops if o.component == names.OPTIMIZER]
        return op.device_s - (op.kernels - 1) * T0  # less the clip's kernels: T0 each

    half = Curve((peak / 2, peak * 2), (100e-6, 300e-6))  # the step halfway in log: share 0.5
    inside = Curve((peak * 2, peak * 4), (100e-6, 300e-6))
    outside = Curve((peak / 4, peak / 2), (100e-6, 300e-6))
    both = {"adamw_loop": warm, "adamw_loop_cold": cold}
    assert optimizer_s(half, **both) == pytest.approx(2e-9 * params)
    assert notes == ["CPU: the step's tensors stay in the cache only in part (as measured): AdamW's "
                     "per-tensor loop is read 50% of the way from its timing from memory to its "
                     "timing from the cache"]
    assert optimizer_s(inside, **both) == pytest.approx(1e-9 * params)
    assert notes == ["CPU: the step's tensors are few enough to stay in the cache (as measured): "
                     "AdamW's per-tensor loop is read on its timing from the cache"]
    assert optimizer_s(outside, **both) == pytest.approx(3e-9 * params)
    assert notes == []  # all from memory: nothing moved
    assert optimizer_s(half, adamw_loop=warm) == pytest.approx(1e-9 * params)
    assert notes == []  # one timing: the share moves nothing
    assert optimizer_s(outside, adamw_loop=warm) == pytest.approx(1e-9 * params)
    # a cold reading under the warm one (the machine's noise) is read as the warm one
    faster = Grid(("parameters",), ((1e2, 1e9),), (0.5e-7, 0.5))
    assert optimizer_s(outside, adamw_loop=warm, adamw_loop_cold=faster) == pytest.approx(1e-9 * params)


def test_the_tied_weights_two_gradients_are_summed_as_the_embeddings_backward_is_charged():
    """Autograd adds the token table's gradient and the LM head's weight gradient, two V×C tensors,
    out of place (a real backward, profiled): the embedding's backward is charged that add."""
    import torch

    from gptperf import names
    from gptperf.model import GPT
    from gptperf.perfmodel.kernel_calls import step_ops, vector_call

    cfg = preset("tiny", n_layer=1, n_head=2, n_embd=32, vocab_size=300)
    model = GPT(cfg)
    x = torch.randint(0, 300, (2, 16))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        _, loss = model(x, x)
        loss.backward()
    tables = [e for e in prof.events() if e.name == "aten::add" and e.input_shapes[:2] == [[300, 32]] * 2]
    assert len(tables) == 1
    ops = {(comp, phase): calls for comp, phase, _, calls in
           step_ops(cfg, Workload("train", 2, 16, "fp32"), ExecutionPlan.default("train", "cpu"))}
    assert vector_call("add", "fp32", 3 * 300 * 32 * 4) in ops[(names.EMBED, names.BACKWARD)]


def test_a_cpu_step_in_the_cache_reads_its_few_row_matmuls_on_the_warm_grid():
    """A CPU step whose predicted peak memory fits in the calibrated last-level cache reads its
    matmuls of at most the warm grid's rows there (here at half the grid's time); a step over the
    cache, a step of more rows, or a GPU's reads the grid."""
    from gptperf.perfmodel.kernel_calls import kernel_calls
    from gptperf.perfmodel.memory import memory_breakdown

    grid = Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))
    warm = Grid(("M", "N", "K"), ((1.0, 16.0), (HUGE,), (HUGE,)), (T0 / 2, T0 / 2))
    cfg = preset("tiny")

    def device_s(work: Workload, cache_bytes: float, device: str = "cpu") -> tuple[float, list[str]]:
        cal = flat_calibration(device, matmul={"fp32": grid, "fp32:warm": warm}, cache_bytes=cache_bytes)
        e = expected(cfg, work, ExecutionPlan.default(work.kind, device), cal)
        return e.device_s, e.notes

    decode = Workload("decode", 4, 64, "fp32")
    peak = memory_breakdown(cfg, decode, ExecutionPlan.default("decode", "cpu")).total
    matmuls = sum(k.count for k in kernel_calls(cfg, decode, ExecutionPlan.default("decode", "cpu"))
                  if k.family == "matmul")
    (fits, fit_notes), (over, over_notes) = device_s(decode, 2 * peak), device_s(decode, peak / 2)
    assert matmuls > 0 and over - fits == pytest.approx(matmuls * T0 / 2)
    assert any("last-level cache" in n for n in fit_notes)
    assert not any("last-level cache" in n for n in over_notes)
    forward = Workload("forward", 4, 64, "fp32")  # 256 rows a matmul
    assert device_s(forward, 1e12)[0] == pytest.approx(device_s(forward, 0.0)[0])
    assert device_s(decode, 1e12, "cuda")[0] == pytest.approx(device_s(decode, 0.0, "cuda")[0])


MIB = 2**20


def test_cache_shares_run_from_the_fastest_point_to_the_last_and_never_rise_with_the_bytes():
    """(t_cold − t) / (t_cold − t_warm) at each point, t_warm the fastest; a point read slower
    than a larger one takes that one's share; a saving under CACHE_SAVING_MIN× is none."""
    from gptperf.perfmodel.calibration import CACHE_SAVING_MIN, cache_shares

    x = (1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB)
    assert cache_shares(Curve(x, (100e-6, 110e-6, 300e-6, 500e-6))) == pytest.approx((1.0, 0.975, 0.5, 0.0))
    # 120 µs at 2 MiB is noise beside 110 µs at 4 MiB: 2 MiB finds at least what 4 MiB finds
    assert cache_shares(Curve(x, (100e-6, 120e-6, 110e-6, 500e-6))) == pytest.approx((1.0, 0.975, 0.975, 0.0))
    # the fastest point is the warm time, and the first, slower, one still finds all of it
    assert cache_shares(Curve(x, (100e-6, 90e-6, 300e-6, 500e-6))) == pytest.approx((1.0, 1.0, 200 / 410, 0.0))
    barely = CACHE_SAVING_MIN * 0.99
    assert cache_shares(Curve(x, (100e-6, 100e-6, 100e-6, barely * 100e-6))) is None
    assert cache_shares(Curve(x, (100e-6, 100e-6, 100e-6, 99e-6))) is None
    assert cache_shares(Curve((1 * MIB,), (100e-6,))) is None


def test_warm_share_reads_the_cache_reach_in_log_bytes_and_falls_back_to_the_cache_size():
    reach = Curve((1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB), (100e-6, 110e-6, 300e-6, 500e-6))
    cal = flat_calibration("cpu", cache_reach=reach, cache_bytes=32 * MIB)
    assert cal.warm_share(0.5 * MIB) == 1.0
    assert cal.warm_share(2 * math.sqrt(2) * MIB) == pytest.approx((0.975 + 0.5) / 2)
    assert cal.warm_share(8 * MIB) == 0.0 and cal.warm_share(16 * MIB) == 0.0  # the cache size does not matter
    older = flat_calibration("cpu", cache_bytes=32 * MIB)  # a calibration from before the reach was measured
    assert (older.warm_share(16 * MIB), older.warm_share(33 * MIB)) == (1.0, 0.0)
    flat = flat_calibration("cpu", cache_bytes=32 * MIB, cache_reach=Curve(reach.x, (100e-6,) * 4))
    assert (flat.warm_share(16 * MIB), flat.warm_share(33 * MIB)) == (1.0, 0.0)  # no saving measured: the size's rule
    assert Calibration.from_dict(cal.to_dict()).cache_reach == reach
    document = older.to_dict()
    del document["cache_reach"]  # written before the reach was measured
    assert Calibration.from_dict(document).cache_reach is None
    broken = {**cal.to_dict(), "cache_reach": {"x": [MIB, 2 * MIB], "seconds": [1e-4]}}
    with pytest.raises(UserError, match="as many times as sizes.*got 2 and 1"):
        Calibration.from_dict(broken)
    with pytest.raises(UserError, match="calibration document is broken"):
        Calibration.from_dict({**cal.to_dict(), "cache_reach": "3 MiB"})


def test_a_few_row_matmul_is_read_its_step_s_share_of_the_way_to_the_warm_grid():
    grid = Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))
    warm = Grid(("M", "N", "K"), ((1.0, 16.0), (HUGE,), (HUGE,)), (T0 / 2, T0 / 2))
    cal = flat_calibration("cpu", matmul={"fp32": grid, "fp32:warm": warm})
    assert cal.matmul_seconds("fp32", 4, 64, 64, warm=0.25) == pytest.approx(T0 * (1 - 0.25 / 2))
    assert cal.matmul_seconds("fp32", 4, 64, 64, warm=1.0) == pytest.approx(T0 / 2)
    assert cal.matmul_seconds("fp32", 4, 64, 64) == pytest.approx(T0)
    assert cal.matmul_seconds("fp32", 64, 64, 64, warm=1.0) == pytest.approx(T0)  # rows beyond the warm grid


def test_a_cpu_decode_step_part_way_out_of_the_cache_pays_that_share_of_its_few_row_matmuls():
    """With a measured reach, a step whose tensors lie where the reach reads half the saving has
    its few-row matmuls charged halfway between the warm grid (T0/2) and the grid (T0), whatever
    the last-level cache's size; the note says so."""
    from gptperf.perfmodel.memory import memory_breakdown

    grid = Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))
    warm = Grid(("M", "N", "K"), ((1.0, 16.0), (HUGE,), (HUGE,)), (T0 / 2, T0 / 2))
    cfg, decode = preset("tiny"), Workload("decode", 4, 64, "fp32")
    plan = ExecutionPlan.default("decode", "cpu")
    peak = memory_breakdown(cfg, decode, plan).total
    matmuls = sum(k.count for k in kernel_calls(cfg, decode, plan) if k.family == "matmul")
    # the step's bytes halfway in log between two points whose shares are 1 and 0
    reach = Curve((peak / 2, peak * 2), (100e-6, 300e-6))

    def run(**changes) -> Expected:
        cal = flat_calibration("cpu", matmul={"fp32": grid, "fp32:warm": warm}, **changes)
        return expected(cfg, decode, plan, cal)

    cold = run(cache_bytes=0.0)
    half = run(cache_reach=reach, cache_bytes=1e12)
    assert cold.device_s - half.device_s == pytest.approx(matmuls * T0 / 2 * 0.5)
    assert any("only in part" in n and "50%" in n for n in half.notes)
    whole = run(cache_reach=Curve((peak * 2, peak * 4), (100e-6, 300e-6)))
    assert cold.device_s - whole.device_s == pytest.approx(matmuls * T0 / 2)
    assert any("few enough to stay in the cache" in n for n in whole.notes)
    assert not any("cache" in n for n in cold.notes)
    # a reach that measured no saving: the cache size's rule, and the note says so
    flat = run(cache_reach=Curve((peak / 2, peak * 2), (100e-6, 100e-6)), cache_bytes=2 * peak)
    assert any("fit in the last-level cache" in n for n in flat.notes)
    assert cold.device_s - flat.device_s == pytest.approx(matmuls * T0 / 2)
    # a step of 256 rows a matmul has none the cache moves: same time, no note
    forward = Workload("forward", 4, 64, "fp32")
    cal = flat_calibration("cpu", matmul={"fp32": grid, "fp32:warm": warm}, cache_reach=Curve((1e12, 2e12), (1e-4, 3e-4)))
    fwd = expected(cfg, forward, ExecutionPlan.default("forward", "cpu"), cal)
    assert not any("cache" in n for n in fwd.notes)


def test_the_host_model_s_own_kernels_are_taken_out_at_its_own_cache_share():
    """A CPU's host cost has the tiny host model's kernel time in it, which is taken out: where
    the reach puts that model in the cache, its few-row matmuls count T0/2 each, not T0, so the
    step's host time is larger by half a kernel for each of them."""
    from gptperf.perfmodel.calibration import host_model_config

    grid = Grid(("a", "b", "c"), ((HUGE,), (HUGE,), (HUGE,)), (T0,))
    warm = Grid(("M", "N", "K"), ((1.0, 16.0), (HUGE,), (HUGE,)), (T0 / 2, T0 / 2))
    cfg, decode = preset("tiny"), Workload("decode", 4, 64, "fp32")
    plan = ExecutionPlan.default("decode", "cpu")
    tiny = host_model_config(cfg.n_layer, plan.attention)
    tiny_decode = Workload("decode", HOST_MODEL["batch"], HOST_MODEL["seq"], "fp32")
    matmuls = sum(k.count for k in kernel_calls(tiny, tiny_decode, plan) if k.family == "matmul")

    def host_s(**changes) -> float:
        cal = flat_calibration("cpu", fixed_s=1e-2, matmul={"fp32": grid, "fp32:warm": warm}, **changes)
        return expected(cfg, decode, plan, cal).host_s

    everything = Curve((1e12, 2e12), (1e-4, 3e-4))  # every step's tensors in the cache
    assert matmuls > 0
    assert host_s(cache_reach=everything) - host_s() == pytest.approx(matmuls * T0 / 2)


def test_parameter_sizes_are_those_of_the_model():
    from collections import Counter

    from gptperf.model import GPT
    from gptperf.perfmodel.workload import parameter_sizes

    for cfg in (preset("tiny"), preset("tiny", n_layer=3, n_embd=48, n_head=2, vocab_size=500)):
        sizes = Counter(p.numel() for p in GPT(cfg).parameters())
        assert parameter_sizes(cfg) == tuple(sorted(sizes.items(), reverse=True))


def test_parameter_tensors_are_those_the_model_has():
    from gptperf.model import GPT
    from gptperf.perfmodel.workload import count_parameter_tensors

    for cfg in (preset("tiny"), preset("tiny", n_layer=3, n_embd=48, n_head=2)):
        assert count_parameter_tensors(cfg) == len(list(GPT(cfg).parameters()))


def test_an_older_optimizer_curve_is_read_as_a_grid_with_the_same_times():
    curve = Curve((1e3, 1e6), (1e-6, 1e-3))
    (grid,) = flat_calibration(optimizer={"adamw_foreach": curve}).optimizer.values()
    assert grid.axes == ("tensors", "parameters")
    for tensors in (4, 12, 580):  # the tensor count changes nothing
        for params in (10.0, 10**4.5, 1e7):  # below, inside and beyond the measured points
            assert grid.at(tensors, params) == pytest.approx(curve.at(params))


# -- the launch gap of kernels launched from a stream -----------------------------------------

GAP = 2e-6


def test_every_kernel_of_an_eager_gpu_step_pays_the_gap() -> None:
    """The hand-counted eager decode of tests/test_expected.py: 18 kernels, device-bound now
    (host 1e-7 s a phase), each T0 + GAP."""
    cfg = preset("gpt2", n_layer=1)
    w = Workload("decode", 2, 64, "fp32")
    e = expected(cfg, w, None, flat_calibration(fixed_s=1e-7, per_layer_s=0.0, launch_gap_s=GAP))
    assert sum(o.kernels for o in e.ops) == 18
    assert e.device_s == pytest.approx(18 * (T0 + GAP))
    assert e.step_time_s == pytest.approx(18 * (T0 + GAP), rel=0.01)


def test_cuda_graphs_and_cpus_pay_no_gap() -> None:
    cfg = preset("gpt2", n_layer=2)
    graph = ExecutionPlan.default("decode", "cuda", fast=True)
    w = Workload("decode", 1, 64, "bf16")
    with_gap = expected(cfg, w, graph, flat_calibration(launch_gap_s=GAP))
    assert with_gap.device_s == pytest.approx(expected(cfg, w, graph, flat_calibration()).device_s)
    cpu = Workload("prefill", 1, 32, "fp32")
    assert expected(cfg, cpu, None, flat_calibration("cpu", launch_gap_s=GAP)).device_s == \
        pytest.approx(expected(cfg, cpu, None, flat_calibration("cpu")).device_s)


def test_the_gap_round_trips_and_older_calibrations_have_none() -> None:
    cal = flat_calibration(launch_gap_s=GAP)
    assert Calibration.from_dict(cal.to_dict()).launch_gap_s == GAP
    old = cal.to_dict()
    del old["launch_gap_s"]
    assert Calibration.from_dict(old).launch_gap_s == 0.0


def test_the_fused_loss_is_charged_on_its_curves_and_the_recorded_loss_otherwise() -> None:
    """fused_loss: the forward reads the bf16 logits once (sum_rows at N·V·2 bytes), the backward
    reads and writes them (gelu_fwd at 2·N·V·2), whatever the recording ran for the loss; without
    it the recorded inductor kernels are charged."""
    cfg = preset("gpt2", n_layer=2)
    w = Workload("train", 4, 128, "bf16")
    linear = Curve((1.0, 1e12), (1e-12, 1.0))  # one picosecond a byte
    fused = ExecutionPlan.default("train", "cuda", compile=True)
    plain = fused.replace(fused_loss=False)
    ops = {"loss:fwd": {"kernels": 2, "seconds": {"matmul": 0, "attention": 0, "other": 7e-5}},
           "loss:bwd": {"kernels": 1, "seconds": {"matmul": 0, "attention": 0, "other": 9e-5}}}
    logits = 4 * 128 * cfg.vocab_size * 2  # bytes of the bf16 logits
    for recorded_plan in (fused, plain):
        rec = {"config": cfg.to_dict(), "workload": w.to_dict(), "plan": recorded_plan.to_dict(), "ops": ops}
        cal = flat_calibration(compiled={"train:bf16": rec})
        cal.vector["sum_rows:bf16"] = cal.vector["gelu_fwd:bf16"] = linear
        got = expected(cfg, w, fused, cal).by_key()
        assert got[("loss", "fwd")].device_s == pytest.approx(logits * 1e-12 + cal.launch_gap_s)
        assert got[("loss", "bwd")].device_s == pytest.approx(2 * logits * 1e-12 + cal.launch_gap_s)
        assert got[("loss", "fwd")].kernels == 1
    rec = {"config": cfg.to_dict(), "workload": w.to_dict(), "plan": plain.to_dict(), "ops": ops}
    got = expected(cfg, w, plain, flat_calibration(compiled={"train:bf16": rec})).by_key()
    assert got[("loss", "fwd")].device_s == pytest.approx(7e-5)  # the recording, same size: as is
    assert got[("loss", "bwd")].device_s == pytest.approx(9e-5)


# -- a linear layer's bias -------------------------------------------------------------------

BIAS = {"fp32": {"ratio": 1.5, "low": 1.2, "high": 1.9, "probes": 26.0}}


def _op_device_s(e: Expected, component: str) -> float:
    return sum(o.device_s for o in e.ops if o.component == component)


def test_an_eager_linear_with_a_bias_pays_the_measured_bias_ratio() -> None:
    """fp32 eager forward, one block: qkv, proj, fc and mlp.proj carry a bias (each matmul
    T0 × 1.5); the tied LM head has none; nothing else changes."""
    from gptperf import names

    cfg = preset("gpt2", n_layer=1)
    w = Workload("forward", 2, 64, "fp32")
    plain = expected(cfg, w, None, flat_calibration())
    biased = expected(cfg, w, None, flat_calibration(matmul_bias=BIAS))
    for comp in (names.ATTN_QKV, names.ATTN_PROJ, names.MLP_FC, names.MLP_PROJ):
        assert _op_device_s(biased, comp) - _op_device_s(plain, comp) == pytest.approx(0.5 * T0)
    assert _op_device_s(biased, names.LM_HEAD) == pytest.approx(_op_device_s(plain, names.LM_HEAD))
    assert biased.device_s - plain.device_s == pytest.approx(4 * 0.5 * T0)


def test_one_row_compiled_steps_and_backward_matmuls_pay_no_bias_ratio() -> None:
    cfg = preset("gpt2", n_layer=1)
    cal, with_bias = flat_calibration(), flat_calibration(matmul_bias=BIAS)
    one_row = Workload("decode", 1, 64, "fp32")  # torch adds a one-row layer's bias another way
    assert expected(cfg, one_row, None, with_bias).device_s == pytest.approx(
        expected(cfg, one_row, None, cal).device_s)
    compiled = ExecutionPlan.default("forward", "cuda", compile=True)
    w = Workload("forward", 2, 64, "fp32")
    assert expected(cfg, w, compiled, with_bias).device_s == pytest.approx(
        expected(cfg, w, compiled, cal).device_s)
    # a train step: the forward's four biased matmuls only, not the backward's eight
    train = Workload("train", 2, 64, "fp32")
    assert expected(cfg, train, None, with_bias).device_s - expected(cfg, train, None, cal).device_s \
        == pytest.approx(4 * 0.5 * T0)


def test_the_bias_ratio_round_trips_older_calibrations_have_none_and_a_bad_one_is_refused() -> None:
    cal = flat_calibration(matmul_bias=BIAS)
    again = Calibration.from_dict(cal.to_dict())
    assert again.matmul_bias == BIAS and again.bias_ratio("fp32") == 1.5
    assert again.bias_ratio("bf16") == 1.0
    old = cal.to_dict()
    del old["matmul_bias"]
    assert Calibration.from_dict(old).bias_ratio("fp32") == 1.0
    with pytest.raises(UserError, match="matmul_bias"):
        flat_calibration(matmul_bias={"fp32": {"ratio": -1.0}})


# -- a matmul off the grid's points ----------------------------------------------------------

OFFGRID = {"fp32": {"ratio": 1.25, "median": 1.1, "low": 0.9, "high": 1.6, "probes": 26.0}}


def test_a_matmul_off_the_grids_points_pays_the_probes_mean_ratio() -> None:
    """A grid over M, N, K at 1 and 1024 (t = M·N·K ns): a call on its points reads the grid; a
    call off them in any axis reads the grid × 1.25; bf16, without probes, reads the grid."""
    points = ((1.0, 1024.0),) * 3
    grid = Grid(("M", "N", "K"), points,
                tuple(m * n * k * 1e-9 for m in points[0] for n in points[1] for k in points[2]))
    cal = flat_calibration(matmul={"fp32": grid, "bf16": grid}, matmul_offgrid=OFFGRID)
    assert cal.matmul_seconds("fp32", 1024, 1024, 1) == pytest.approx(1024 * 1024 * 1e-9)
    assert cal.matmul_seconds("fp32", 1024, 32, 1024) == pytest.approx(1024 * 32 * 1024 * 1e-9 * 1.25)
    assert cal.matmul_seconds("fp32", 1000, 1024, 1024) == pytest.approx(1000 * 1024 * 1024 * 1e-9 * 1.25)
    assert cal.matmul_seconds("bf16", 1024, 32, 1024) == pytest.approx(1024 * 32 * 1024 * 1e-9)
    # through a layer: gpt2's 768-wide matmuls are off this grid, so every one pays it
    cfg, w = preset("gpt2", n_layer=1), Workload("forward", 2, 64, "fp32")
    plain = expected(cfg, w, None, flat_calibration(matmul={"fp32": grid}))
    off = expected(cfg, w, None, cal)
    from gptperf import names

    for comp in (names.ATTN_QKV, names.MLP_FC, names.LM_HEAD):
        assert _op_device_s(off, comp) == pytest.approx(1.25 * _op_device_s(plain, comp))
    assert _op_device_s(off, names.LN_1) == pytest.approx(_op_device_s(plain, names.LN_1))


def test_the_offgrid_ratio_round_trips_older_calibrations_have_none_and_a_bad_one_is_refused() -> None:
    cal = flat_calibration(matmul_offgrid=OFFGRID)
    again = Calibration.from_dict(cal.to_dict())
    assert again.matmul_offgrid == OFFGRID and again.offgrid_ratio("fp32", 3, 5, 7) == 1.25
    assert again.offgrid_ratio("bf16", 3, 5, 7) == 1.0
    old = cal.to_dict()
    del old["matmul_offgrid"]
    assert Calibration.from_dict(old).offgrid_ratio("fp32", 3, 5, 7) == 1.0
    # a calibration that read its grid with waves: read plainly now, the waves ignored
    old["matmul_waves"] = {"fp32": {"tile": [128, 256], "units": 132}}
    older = Calibration.from_dict(old)
    assert older.matmul_seconds("fp32", 3, 5, 7) == older.matmul["fp32"].at(3, 5, 7)
    with pytest.raises(UserError, match="matmul_offgrid"):
        flat_calibration(matmul_offgrid={"fp32": {"ratio": 0.0}})


def test_each_offgrid_probe_round_trips_and_is_not_read_by_the_prediction() -> None:
    probes = {"fp32": [[1200.0, 3840.0, 1280.0, 1.31], [10000.0, 50304.0, 768.0, 0.99]]}
    cal = flat_calibration(matmul_offgrid=OFFGRID, matmul_probes=probes)
    again = Calibration.from_dict(cal.to_dict())
    assert again.matmul_probes == probes
    assert again.matmul_seconds("fp32", 3, 5, 7) == flat_calibration(matmul_offgrid=OFFGRID).matmul_seconds(
        "fp32", 3, 5, 7)
    old = cal.to_dict()
    del old["matmul_probes"]
    assert Calibration.from_dict(old).matmul_probes == {}
    old["matmul_probes"] = {"fp32": 3}
    with pytest.raises(UserError, match="broken"):
        Calibration.from_dict(old)
    for bad in ([[1.0]], [[1.0, 2.0, 3.0, float("nan")]], [[1.0, 2.0, 3.0, -1.0]], ["1234"]):
        old["matmul_probes"] = {"fp32": bad}
        with pytest.raises(UserError, match="matmul_probes"):
            Calibration.from_dict(old)


# -- a linear layer whose rows are not 16-byte aligned ------------------------------------------

UNALIGNED = {"bf16": {"fwd": 1e12, "dgrad": 2e12, "wgrad": 4e12, "m": 4096.0, "n": 16381.0, "k": 1024.0}}


def test_a_layer_is_unaligned_when_its_input_or_output_rows_are_not_16_bytes() -> None:
    assert unaligned_layer(768, 50257, 2) and unaligned_layer(768, 50257, 4)  # 100514, 201028 bytes
    assert unaligned_layer(65, 768, 2) and unaligned_layer(768, 65, 4)  # the char vocabulary
    assert not unaligned_layer(768, 50304, 2) and not unaligned_layer(768, 8, 2)
    assert not unaligned_layer(768, 50260, 4) and unaligned_layer(768, 50260, 2)  # 16 | 201040, not 100520


def _head_calls(vocab: int, plan: ExecutionPlan, dtype: str = "bf16") -> Iterator[KernelCall]:
    cfg = preset("gpt2", n_layer=1, vocab_size=vocab)
    for comp, _, _, calls in step_ops(cfg, Workload("train", 2, 64, dtype), plan):
        if comp == names.LM_HEAD:
            yield from (c for c in calls if c.family == "matmul")


def test_only_an_eager_steps_unaligned_layers_are_marked_in_each_orientation() -> None:
    eager, compiled = ExecutionPlan.eager("sdpa"), ExecutionPlan.default("train", "cuda", compile=True)
    marked = [c.unaligned for c in _head_calls(50257, eager)]
    assert marked == ["fwd", "dgrad", "wgrad"]
    assert [c.unaligned for c in _head_calls(50304, eager)] == ["", "", ""]
    assert [c.unaligned for c in _head_calls(50257, compiled)] == ["", "", ""]  # inductor pads them
    cfg = preset("gpt2", n_layer=1, vocab_size=50257)
    others = [c for comp, _, _, calls in step_ops(cfg, Workload("train", 2, 64, "bf16"), eager)
              if comp != names.LM_HEAD for c in calls]
    assert others and not any(c.unaligned for c in others)  # 768-wide layers are aligned


def test_an_unaligned_matmul_is_charged_at_least_its_flops_at_the_measured_rate() -> None:
    """The flat grid reads T0 = 1 µs for every matmul; at 1, 2 and 4 TFLOP/s a 2·M·N·K of
    2·64·50257·768 FLOPs takes 4.94, 2.47 and 1.24 ms; a tiny one keeps the grid's T0."""
    cal = flat_calibration(matmul_unaligned=UNALIGNED)
    flops = 2.0 * 64 * 50257 * 768
    for orientation, rate in (("fwd", 1e12), ("dgrad", 2e12), ("wgrad", 4e12)):
        call = KernelCall("matmul", "bf16", (64.0, 50257.0, 768.0), count=3, unaligned=orientation)
        assert call_time(call, cal) == pytest.approx(3 * flops / rate)
    tiny = KernelCall("matmul", "bf16", (1.0, 65.0, 8.0), unaligned="fwd")
    assert call_time(tiny, cal) == pytest.approx(T0)
    aligned = KernelCall("matmul", "bf16", (64.0, 50257.0, 768.0))
    assert call_time(aligned, cal) == pytest.approx(T0)
    # fp32, without a measurement, and an older calibration: the grid
    assert call_time(KernelCall("matmul", "fp32", (64.0, 50257.0, 768.0), unaligned="fwd"), cal) == pytest.approx(T0)
    assert call_time(call, flat_calibration()) == pytest.approx(3 * T0)


def test_an_unaligned_lm_head_costs_what_its_three_rates_say() -> None:
    """A width of 1001 (rows of 2002 bytes in bf16) leaves every linear layer unaligned, the LM
    head included, though it runs padded to 50304 rows on a GPU."""
    cal = flat_calibration(matmul_unaligned=UNALIGNED)
    cfg, w = preset("gpt2", n_layer=1, n_embd=1001, n_head=7), Workload("train", 2, 64, "bf16")
    plan = ExecutionPlan.eager("sdpa")

    def head_s(c: Calibration) -> float:
        return sum(o.device_s for o in expected(cfg, w, plan, c).ops if o.component == names.LM_HEAD)

    flops = 2.0 * 128 * 50304 * 1001
    others = head_s(flat_calibration()) - 3 * T0  # the head's other kernels, the same either way
    assert head_s(cal) == pytest.approx(others + flops / 1e12 + flops / 2e12 + flops / 4e12)
    said = [n for n in expected(cfg, w, plan, cal).notes if "16-byte" in n]
    assert len(said) == 1 and said[0].startswith(", ".join(
        (names.ATTN_QKV, names.ATTN_PROJ, names.MLP_FC, names.MLP_PROJ, names.LM_HEAD)) + ": ")
    assert "fwd 1, dgrad 2, wgrad 4 TFLOP/s" in said[0] and "vocabulary that is a multiple of 8" in said[0]
    assert "over 256 rows or more pads its vocabulary itself" in said[0]
    over = sum(o.device_s for o in expected(cfg, w, plan, cal).ops) - sum(
        o.device_s for o in expected(cfg, w, plan, flat_calibration()).ops)
    assert f"{over * 1e3:.3g} ms a step over the aligned grid's reading" in said[0]
    # rates no slower than the grid (fp32's here: the flat grid reads 1 µs a matmul) add nothing: no note
    fast = flat_calibration(matmul_unaligned={"fp32": dict(UNALIGNED["bf16"], fwd=1e30, dgrad=1e30, wgrad=1e30)})
    assert not [n for n in expected(cfg, Workload("train", 2, 64, "fp32"), plan, fast).notes if "16-byte" in n]
    older = [n for n in expected(cfg, w, plan, flat_calibration()).notes if "16-byte" in n]
    assert len(older) == 1 and "measured no such layer" in older[0]
    assert not [n for n in expected(cfg, w, plan, flat_calibration("cpu")).notes if "16-byte" in n]
    # gpt2's own 50257 tokens over 256 rows: the padded head is aligned, and so is every other
    # layer; over 128 the head runs unpadded, and is charged and named
    real = preset("gpt2", n_layer=1, vocab_size=50257)
    assert not [n for n in expected(real, Workload("train", 4, 64, "bf16"), plan, cal).notes if "16-byte" in n]
    (few,) = [n for n in expected(real, w, plan, cal).notes if "16-byte" in n]
    assert few.startswith(f"{names.LM_HEAD}: ")


def _lm_head_calls(vocab: int, w: Workload, plan: ExecutionPlan, device_type: str) -> dict[str, list]:
    cfg = preset("gpt2", n_layer=1, vocab_size=vocab)
    return {f"{comp}:{phase}": [(c.family, c.key, c.point) for c in calls]
            for comp, phase, _, calls in step_ops(cfg, w, plan, device_type)
            if comp in (names.LM_HEAD, names.LOSS)}


def test_a_cast_inputs_gradient_is_cast_back_in_its_linears_backward() -> None:
    """Under bf16 autocast the linears that cast an fp32 input (qkv, fc, the head: each reads a
    LayerNorm's output) cast its gradient back to fp32 in their own backward, where the cast's
    node runs; the LayerNorms' backward is the norm alone; the projections read bf16 and cast
    nothing back but their weight's and bias's gradients. In fp32 nothing is cast."""
    cfg, N = preset("gpt2", n_layer=1), 4 * 64
    C = cfg.n_embd

    def casts(dtype: str) -> dict[str, list[tuple[float, ...]]]:
        ops = step_ops(cfg, Workload("train", 4, 64, dtype), ExecutionPlan.eager("sdpa"), "cuda")
        return {comp: [c.point for c in calls if c.key.startswith("cast_")]
                for comp, phase, _, calls in ops if phase == names.BACKWARD}

    mixed = casts("bf16")
    for comp, width in ((names.ATTN_QKV, 3 * C), (names.MLP_FC, 4 * C)):
        # the weight's, the bias's, the input's
        assert mixed[comp] == [(6.0 * C * width,), (6.0 * width,), (6.0 * N * C,)]
    assert mixed[names.LM_HEAD][-1] == (6.0 * N * C,)
    for comp in (names.ATTN_PROJ, names.MLP_PROJ):
        assert mixed[comp] == [(6.0 * C * C * (4 if comp == names.MLP_PROJ else 1),), (6.0 * C,)]
    assert mixed[names.LN_1] == mixed[names.LN_2] == mixed[names.LN_F] == []
    assert not any(casts("fp32").values())


def test_a_gpu_steps_lm_head_runs_on_the_padded_table() -> None:
    """gpt2's 50257 tokens in an eager bf16 step on a GPU over 256 rows: the table joined to 47 zero rows (a fill of 47·768 fp32, the
    join reading 50257 rows and writing 50304), the matmuls and the weight's casts at 50304 rows.
    The loss reads the whole product, its 47 pad columns filled with -inf (256 × 47 bf16), forward
    and backward at 50304 columns: nothing charged for the slice. bf16 autocast, B·T = 256 rows,
    whose input is cast to bf16 first (and its gradient back to fp32 in the head's backward)."""
    V, Vh, C, N = 50257, 50304, 768, 256
    w = Workload("train", 4, 64, "bf16")
    calls = _lm_head_calls(V, w, ExecutionPlan.eager("sdpa"), "cuda")
    assert calls[f"{names.LM_HEAD}:{names.FORWARD}"] == [
        ("vector", "add:fp32", (47.0 * C * 4,)), ("vector", "copy:fp32", ((V + Vh) * C * 4.0,)),
        ("vector", "cast_to_bf16:fp32", (N * C * 6.0,)), ("vector", "cast_weight_to_bf16:fp32", (C * Vh * 6.0,)),
        ("matmul", "bf16", (N, Vh, C))]
    assert calls[f"{names.LM_HEAD}:{names.BACKWARD}"] == [
        ("matmul", "bf16", (N, C, Vh)), ("matmul", "bf16", (Vh, C, N)),
        ("vector", "cast_to_fp32:bf16", (C * Vh * 6.0,)), ("vector", "cast_to_fp32:bf16", (N * C * 6.0,))]
    assert calls[f"{names.LOSS}:{names.FORWARD}"] == [
        ("vector", "add:bf16", (N * 47 * 2.0,)), ("vector", "cross_entropy_fwd:fp32", (N * Vh * 4.0,))]
    assert calls[f"{names.LOSS}:{names.BACKWARD}"] == [("vector", "cross_entropy_bwd:fp32", (N * Vh * 6.0,))]
    # a CPU runs the table as it is; so does a GPU at 50304 tokens, and below 256 rows
    for vocab, device, batch in ((V, "cpu", 4), (Vh, "cuda", 4), (V, "cuda", 3)):
        plain = _lm_head_calls(vocab, Workload("train", batch, 64, "bf16"), ExecutionPlan.eager("sdpa"), device)
        rows = batch * 64
        assert plain[f"{names.LM_HEAD}:{names.FORWARD}"] == [
            ("vector", "cast_to_bf16:fp32", (rows * C * 6.0,)), ("vector", "cast_weight_to_bf16:fp32", (C * vocab * 6.0,)),
            ("matmul", "bf16", (rows, vocab, C))]
        assert plain[f"{names.LOSS}:{names.FORWARD}"] == [("vector", "cross_entropy_fwd:fp32", (rows * vocab * 4.0,))]
    # and a prefill, whose head reads the last position alone (4 rows, not 4 × 512)
    prefill = _lm_head_calls(V, Workload("prefill", 4, 512, "bf16"), ExecutionPlan.eager("sdpa"), "cuda")
    assert [k for k in prefill[f"{names.LM_HEAD}:{names.FORWARD}"] if k[0] == "matmul"] == [("matmul", "bf16", (4, V, C))]
    # and so does fp32, whose loads are 4 bytes either way
    fp32 = _lm_head_calls(V, Workload("train", 4, 64, "fp32"), ExecutionPlan.eager("sdpa"), "cuda")
    assert fp32[f"{names.LM_HEAD}:{names.FORWARD}"] == [("matmul", "fp32", (N, V, C))]
    # and so does a compiled step: inductor pads the operands itself
    compiled = _lm_head_calls(V, w, ExecutionPlan.default("train", "cuda", compile=True), "cuda")
    assert [k for k in compiled[f"{names.LM_HEAD}:{names.FORWARD}"] if k[0] == "matmul"] == [
        ("matmul", "bf16", (N, V, C))]
    # the prediction says so where the head is padded, and nowhere else
    def padded_notes(vocab: int, work: Workload, c: Calibration | None = None) -> list[str]:
        c = flat_calibration() if c is None else c
        return [n for n in expected(preset("gpt2", n_layer=1, vocab_size=vocab), work,
                                    ExecutionPlan.eager("sdpa"), c).notes if "runs padded" in n]

    assert padded_notes(V, w) == [f"{names.LM_HEAD}: the 50257-token table runs padded to 50304 rows, "
                                  "as the eager model pads it (rows of 16 bytes for cuBLAS's fast kernels; "
                                  "the logits are the first columns); the padded copy made each step is charged"]
    assert not padded_notes(Vh, w) and not padded_notes(V, Workload("train", 3, 64, "bf16"))
    assert not padded_notes(V, w, flat_calibration("cpu"))
    # the fused decode kernels read the table itself
    decode = Workload("decode", 1, 64, "bf16")
    fused_decode = ExecutionPlan.default("decode", "cuda", fast=True)
    (gemv,) = [c for c in _lm_head_calls(V, decode, fused_decode, "cuda")[f"{names.LM_HEAD}:{names.FORWARD}"]]
    assert gemv[0] == "gemv" and gemv[2] == (V * C * 2.0,)


def test_the_unaligned_rates_round_trip_older_calibrations_have_none_and_bad_ones_are_refused() -> None:
    cal = flat_calibration(matmul_unaligned=UNALIGNED)
    again = Calibration.from_dict(cal.to_dict())
    assert again.matmul_unaligned == UNALIGNED
    assert again.unaligned_floor_s("bf16", "dgrad", 4e12) == pytest.approx(2.0)
    old = cal.to_dict()
    del old["matmul_unaligned"]
    assert Calibration.from_dict(old).unaligned_floor_s("bf16", "fwd", 1e12) == 0.0
    for bad in ({"fwd": 1e12, "dgrad": 1e12}, {"fwd": 0.0, "dgrad": 1e12, "wgrad": 1e12},
                {"fwd": float("inf"), "dgrad": 1e12, "wgrad": 1e12}, {"fwd": True, "dgrad": 1.0, "wgrad": 1.0}):
        with pytest.raises(UserError, match="matmul_unaligned"):
            flat_calibration(matmul_unaligned={"bf16": bad})


def test_gptperf_calibrate_shows_the_offgrid_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.commands.calibrate import print_calibration

    print_calibration(flat_calibration(matmul_offgrid=OFFGRID), cached=False, path=None)
    words = " ".join(w for w in capsys.readouterr().out.split() if w != "│")  # cells wrap
    assert "off its points ×1.250 (mean of 26 probes, 0.90–1.60)" in words


def test_gptperf_calibrate_shows_the_bias_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.commands.calibrate import print_calibration

    print_calibration(flat_calibration(matmul_bias=BIAS), cached=False, path=None)
    words = " ".join(w for w in capsys.readouterr().out.split() if w != "│")  # cells wrap
    assert "with a bias ×1.500 (median of 26 probes, 1.20–1.90)" in words
    assert words.count("with a bias") == 1  # bf16 has none


def test_gptperf_calibrate_shows_the_unaligned_rates(capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.commands.calibrate import print_calibration

    print_calibration(flat_calibration(matmul_unaligned=UNALIGNED), cached=False, path=None)
    words = " ".join(w for w in capsys.readouterr().out.split() if w != "│")  # cells wrap
    assert "a layer with rows not 16-byte aligned at most fwd 1, dgrad 2, wgrad 4 TFLOP/s" in words
    assert words.count("16-byte aligned") == 1  # fp32 has none


@pytest.mark.parametrize("dtype, kernels", [("fp32", 2), ("bf16", 4)])
def test_backward_adds_the_residual_streams_two_gradients(dtype: str, kernels: int) -> None:
    """x feeds both the block and the skip: autograd adds the two gradients that reach it, twice a
    layer (under autocast beside the two casts of the gradient into the branch)."""
    cfg = preset("gpt2", n_layer=2)
    calls = {(comp, phase, layer): c for comp, phase, layer, c in
             step_ops(cfg, Workload("train", 2, 64, dtype), ExecutionPlan.eager("sdpa"))}
    residual = calls[(names.RESIDUAL, names.BACKWARD, 0)]
    assert sum(c.count for c in residual) == kernels
    adds = [c for c in residual if c.key.startswith("add")]
    assert [(a.key, a.count) for a in adds] == [("add:fp32", 2)]  # the stream's gradients: fp32
    assert adds[0].point == (3 * 2 * 64 * cfg.n_embd * 4,)  # read two, write one
    e = expected(cfg, Workload("train", 2, 64, dtype), ExecutionPlan.eager("sdpa"), flat_calibration())
    assert e.by_key()[("h.0.residual", "bwd")].device_s > 0


def test_an_attention_below_its_grid_is_charged_the_edge_and_says_so() -> None:
    import dataclasses

    grid = Grid(("bh", "l", "d"), ((1.0, 64.0), (64.0, 1024.0), (64.0,)), (1e-6, 2e-6, 3e-6, 6e-6))
    cal = dataclasses.replace(flat_calibration(), attention={"fp32:one_query": grid})
    cfg = preset("gpt2", n_layer=1)
    short = expected(cfg, Workload("decode", 1, 16, "fp32"), ExecutionPlan.eager("sdpa"), cal)
    at_edge = expected(cfg, Workload("decode", 1, 64, "fp32"), ExecutionPlan.eager("sdpa"), cal)
    sdpa = ("h.0.attn.sdpa", "fwd")
    assert short.by_key()[sdpa].device_s == at_edge.by_key()[sdpa].device_s  # the edge's time
    assert [n for n in short.notes if "below" in n] == [
        "attention fp32:one_query at l 16, below the calibration's smallest (64): charged that "
        "size's time (the grid's edge)"]
    assert not any("below" in n for n in at_edge.notes)
