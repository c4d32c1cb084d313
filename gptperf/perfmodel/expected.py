"""The calibrated expected time of a step: what this machine will take, as opposed to the roofline
bound of what it allows. Pure Python over a `Calibration` (measured curves).

Three steps (docs/perfmodel.md, "Calibrated prediction"):

1. Decompose (`gptperf.perfmodel.kernel_calls`): every operation of the step becomes the kernels
   its plan runs, each a `KernelCall` (a matmul, an attention, a vector kernel of so many bytes,
   the optimizer, a gemv). A compiled training step's non-matmul kernels are those inductor made
   of a recorded calibration step (`Calibration.compiled`), scaled by the bytes the operation
   moves (here, `_recorded_fused`).
2. Look up: each call's time on the measured curve of its kind (`Curve.at`, `Grid.at`).
3. Compose by the plan:
   * eager on a GPU: the host issues kernels while the device runs them. The host's time per
     phase (Python, dispatch, launches: `Calibration.host`) is spread over the phase's kernels;
     a kernel starts when it is issued and the one before it has finished; the step ends when
     the last kernel does (`queue_time`). Short kernels leave the device waiting on the host.
     The fused AdamW phase issues its kernels before the measured share of its host time that
     runs beside them (`Calibration.optimizer_overlap`).
   * CUDA graph: no host in the loop; the device time of the kernels back to back (the curves
     are measured back to back, inside graphs, so their gaps are in them).
   * a kernel launched from a stream (every GPU step that is not a graph) costs the device
     `Calibration.launch_gap_s` more than in a graph: added to each such kernel.
   * on a CPU host and device are one: the host time plus the kernels' time; the host time is
     measured on a tiny model whose own kernel time is taken out of it (`_host_only`).
   * a GPU step that keeps its tensor cores busy runs under the card's power cap: its matmul and
     attention kernels take `Calibration.sustained_slowdown` at the step's FLOP rate (FLOPs of
     those kernels over the step's time as composed above) more, and the step is composed again.

   The host costs are charged at the host's speed: `host_speed` (the host model's step time now
   over its time when the costs were measured, `gptperf.measure.probe.host_speed`) multiplies
   them when a command that measures the step has probed the host; `phase_speeds` does so phase
   by phase where the probe's step has phases (the train step's fwd, bwd and opt, each over its
   own time at calibration: they do not move together).
   On a CPU the kernels that run in torch's parallel regions are charged at the speed of those
   regions: `parallel_speed` (a parallel CPU add sampled as the step ran over its time when the
   curves were measured, `gptperf.measure.probe.fork_speed`) multiplies the attention, optimizer
   and elementwise kernels of at least torch's grain (`in_parallel_regions`) as far as their
   tensors stay in the cache (`parallel_factor`); the matmuls run in BLAS's own threads and
   memory's bandwidth is its own, which a VM's spells of fast or slow fork and join leave alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gptperf import names
from gptperf.dtypes import dtype_bytes
from gptperf.errors import UserError
from gptperf.model.config import HEAD_PAD_MIN_ROWS, GPTConfig
from gptperf.perfmodel.calibration import (
    ADAMW_LOOP,
    FUSED_ATTENTION_PASS,
    FUSED_STEP,
    GEMV_ARGMAX_CHAIN,
    GEMV_CHAIN,
    GEMV_RESIDUAL_CHAIN,
    HOST_MODEL,
    Calibration,
    attention_key,
    compiled_key,
    compiled_op_key,
    gemv_key,
    host_key,
    host_line_s,
    host_model_config,
    split_attention_key,
    split_compiled_key,
    split_fused_step_key,
    split_gemv_key,
    split_vector_key,
    unaligned_rates_text,
)
from gptperf.perfmodel.curves import Grid
from gptperf.perfmodel.kernel_calls import (
    BIASED,
    KernelCall,
    cast_call,
    compute_flops,
    head_width,
    step_ops,
    vector_call,
)
from gptperf.perfmodel.memory import memory_breakdown
from gptperf.perfmodel.workload import DECODE, Workload
from gptperf.plan import COMPILED, EAGER, INFERENCE_KINDS, ExecutionPlan
from gptperf.schema import check_schema

SCHEMA = "gptperf.expected/1"
SOURCE = "calibrated"
# torch's grain (at::internal::GRAIN_SIZE): a CPU op over fewer elements runs on one thread
PARALLEL_GRAIN = 32768
ADAMW_BYTES_PER_PARAM = 16  # a CPU AdamW step's fp32 parameter, gradient and two moments


@dataclass(frozen=True)
class ExpectedOp:
    """One operation's expected device time (its kernels on the curves) and its share of the
    host time, per step."""

    name: str
    component: str
    layer: int | None
    phase: str
    device_s: float
    host_s: float
    kernels: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "component": self.component, "layer": self.layer,
                "phase": self.phase, "device_s": self.device_s, "host_s": self.host_s,
                "kernels": self.kernels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpectedOp:
        return cls(d["name"], d["component"], d["layer"], d["phase"], float(d["device_s"]),
                   float(d["host_s"]), int(d["kernels"]))


@dataclass
class Expected:
    """The calibrated expected time of one step of `workload` under `plan`."""

    config: GPTConfig
    workload: Workload
    plan: ExecutionPlan
    step_time_s: float
    ops: list[ExpectedOp]
    label: str
    composition: str
    notes: list[str] = field(default_factory=list)
    source: str = SOURCE
    # the host's speed the host costs were charged at (None: as calibrated), and per phase
    host_speed: float | None = None
    phase_speeds: dict[str, float] = field(default_factory=dict)
    # a CPU's parallel regions' speed their kernels were charged at (None: as calibrated)
    parallel_speed: float | None = None

    @property
    def charged_as_calibrated(self) -> bool:
        """Whether the host costs and parallel kernels are the calibration's own (no probe of the
        machine's speed now)."""
        return self.host_speed is None and not self.phase_speeds and self.parallel_speed is None

    @property
    def device_s(self) -> float:
        return sum(o.device_s for o in self.ops)

    @property
    def host_s(self) -> float:
        return sum(o.host_s for o in self.ops)

    @property
    def tokens_per_s(self) -> float:
        return self.workload.tokens / self.step_time_s

    def by_key(self) -> dict[tuple[str, str], ExpectedOp]:
        return {(o.name, o.phase): o for o in self.ops}

    def by_component(self) -> dict[tuple[str, str], float]:
        """Device seconds per (component, phase), summed over layers."""
        out: dict[tuple[str, str], float] = {}
        for o in self.ops:
            out[(o.component, o.phase)] = out.get((o.component, o.phase), 0.0) + o.device_s
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "source": self.source, "label": self.label,
                "config": self.config.to_dict(), "workload": self.workload.to_dict(),
                "plan": self.plan.to_dict(), "step_time_s": self.step_time_s,
                "device_s": self.device_s, "host_s": self.host_s,
                "tokens_per_s": self.tokens_per_s, "composition": self.composition,
                "host_speed": self.host_speed, "phase_speeds": dict(self.phase_speeds),
                "parallel_speed": self.parallel_speed,
                "notes": list(self.notes), "ops": [o.to_dict() for o in self.ops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Expected:
        check_schema(d, SCHEMA)
        return cls(GPTConfig.from_dict(d["config"]), Workload.from_dict(d["workload"]),
                   ExecutionPlan.from_dict(d["plan"]), float(d["step_time_s"]),
                   [ExpectedOp.from_dict(o) for o in d["ops"]], d["label"], d["composition"],
                   list(d["notes"]), d.get("source", SOURCE), host_speed=d.get("host_speed"),
                   phase_speeds=dict(d.get("phase_speeds") or {}),
                   parallel_speed=d.get("parallel_speed"))


# ------------------------------------------------------------------------------------------------
# 2. Look up


def _fallback(key: str) -> list[str]:
    """Curves to try for `key`: its own (`_stand_ins`), then, for an fp16 kernel, bf16's (the
    same bytes, the same tensor-core rate: a calibration of the default dtypes predicts fp16)."""
    keys = _stand_ins(key)
    return keys + _stand_ins(key.replace("fp16", "bf16")) if "fp16" in key else keys


def _found(key: str, table: Mapping[str, Any]) -> str | None:
    """The first of `key`'s curves (`_fallback`) that the calibration's `table` has, else None."""
    return next((k for k in _fallback(key) if k in table), None)


def _stand_ins(key: str) -> list[str]:
    """`key`, then a fused step kernel as its chain, a chained gemv as the plain one, the residual
    and argmax chains as the LayerNorm chain, the fused decode attention as sdpa's one-query
    kernel, a weight's cast as an activation's and the cat as the transposing copy (calibrations
    from before each was measured), the one-pass master update as AdamW's fused kernel (both move
    28 bytes a parameter)."""
    keys = [key]
    if key == "adamw_master":
        return keys + ["adamw_fused"]
    if key.startswith("cast_weight_to_"):
        return keys + [key.replace("cast_weight_to_", "cast_to_", 1)]
    if key.startswith("cat:"):
        return keys + ["copy:" + key.removeprefix("cat:")]
    if key.endswith(f":{FUSED_ATTENTION_PASS}"):
        dtype, _ = split_attention_key(key)
        return keys + _stand_ins(attention_key(dtype, "one_query"))
    if key.startswith(FUSED_STEP):
        component, dtype = split_fused_step_key(key)
        residual = component in (names.ATTN_PROJ, names.MLP_PROJ)
        return keys + _stand_ins(gemv_key(dtype, GEMV_RESIDUAL_CHAIN if residual else GEMV_CHAIN))
    chain, dtype = split_gemv_key(key)
    if chain in (GEMV_RESIDUAL_CHAIN, GEMV_ARGMAX_CHAIN):
        keys += _stand_ins(gemv_key(dtype, GEMV_CHAIN))
    elif chain == GEMV_CHAIN:
        keys += _stand_ins(gemv_key(dtype))
    return keys


def wide_fused_attention(call: KernelCall, cal: Calibration) -> KernelCall:
    """`call` as the calibration times it: an fp32 fused decode attention kernel, where only the
    16-bit kernel was measured (`calibration_plan.FUSED_ATTENTION_DTYPES`), is that kernel at
    twice the cache length (the same program streaming 4 bytes an element where bf16 streams 2).
    sdpa's fp32 one-query grid, the stand-in before, times the math backend's several kernels:
    about 5× the fused kernel on an H200. Any other call is returned as it is."""
    if call.family != "attention":
        return call
    dtype, pass_ = split_attention_key(call.key)
    if pass_ != FUSED_ATTENTION_PASS or dtype != "fp32" or call.key in cal.attention:
        return call
    narrow = next((k for k in (attention_key(d, FUSED_ATTENTION_PASS) for d in ("bf16", "fp16"))
                   if k in cal.attention), None)
    if narrow is None:
        return call
    heads, length, head_size = call.point
    return replace(call, key=narrow, point=(heads, 2 * length, head_size))


def call_time(call: KernelCall, cal: Calibration, warm: float = 0.0) -> float:
    """Seconds of `call.count` kernels of `call` on the calibration's curves (UserError when the
    calibration has no curve for it), each at least its `floor` call's; `warm`: the share of the
    CPU cache's saving the step gets (`cache_share`), with which a matmul of few rows and a
    one-query attention are read that far toward their grids timed from the cache
    (`Calibration.matmul_seconds`, `Calibration.attention_seconds`)."""
    if call.floor is not None:
        own = call_time(replace(call, floor=None), cal, warm)
        return max(own, call.count * call_time(call.floor, cal, warm))
    dtype, pass_ = split_attention_key(call.key) if call.family == "attention" else ("", "")
    if (wide := wide_fused_attention(call, cal)) is not call:
        return call_time(wide, cal, warm)
    if pass_ == "causal_bwd":
        fwd = KernelCall("attention", attention_key(dtype, "causal_fwd"), call.point)
        both = KernelCall("attention", attention_key(dtype, "causal_fwd_bwd"), call.point)
        f, fb = call_time(fwd, cal), call_time(both, cal)
        return call.count * max(fb - f, 0.5 * f)
    if pass_ == "masked_fwd":  # the causal kernel's time × the measured ratio
        causal = KernelCall("attention", attention_key(dtype, "causal_fwd"), call.point)
        masked = _found(call.key, cal.attention) or call.key
        ratio = cal.masked_ratio(split_attention_key(masked)[0], *call.point)
        return call.count * ratio * call_time(causal, cal)
    op, act = split_vector_key(call.key) if call.family == "vector" else ("", "")
    if op == "add_mixed" and _found(call.key, cal.vector) is None:
        # a calibration from before the mixed add was measured: charged as a cast, then an add
        n = call.point[0] / (8 + dtype_bytes(act))
        return call.count * (call_time(cast_call(n, act, "fp32"), cal)
                             + call_time(vector_call("add", "fp32", 3 * n * 4), cal))
    if call.key == "adamw_foreach" and call.tensors and ADAMW_LOOP in cal.optimizer:
        # torch's per-tensor loop (a CPU): each tensor at its own size (one large embedding
        # runs from memory where as many parameters in small tensors stay in the cache)
        return call.count * sum(n * cal.adamw_loop_seconds(size, warm) for size, n in call.tensors)
    table = {"matmul": cal.matmul, "attention": cal.attention, "vector": cal.vector,
             "optimizer": cal.optimizer, "gemv": cal.gemv}.get(call.family)
    if table is None:
        raise UserError(f"unknown kernel family {call.family!r}")
    biased = call.family == "matmul" and call.key.endswith(BIASED)
    curve = call.key.removesuffix(BIASED) if biased else call.key
    key = _found(curve, table)
    if key is not None:
        if call.family == "matmul":
            ratio = cal.bias_ratio(key) if biased else 1.0
            seconds = cal.matmul_seconds(key, *call.point, warm=warm) * ratio
            if call.unaligned:  # cuBLAS's kernels for rows it cannot load 16 bytes at a time
                flops = compute_flops(call) / call.count
                seconds = max(seconds, cal.unaligned_floor_s(key, call.unaligned, flops))
            return call.count * seconds
        if call.family == "attention":
            return call.count * cal.attention_seconds(key, *call.point, warm=warm)
        return call.count * table[key].at(*call.point)
    known = ", ".join(sorted(table)) or "none"
    raise UserError(f"the calibration of {cal.device_name!r} has no {call.family} curve "
                    f"{curve!r} (it has: {known}); `gptperf calibrate --force` measures "
                    "this device again")


def below_grid_notes(calls: Iterable[KernelCall], cal: Calibration) -> list[str]:
    """A note for each attention grid axis a call falls below: it is charged the grid's edge
    there (`Grid.at`), the time of the shortest size measured, which a kernel this short is bound
    by its launch and fixed costs to about equal; said, not hidden."""
    notes: dict[tuple[str, str], str] = {}
    for asked in calls:
        if asked.family != "attention":
            continue
        call = wide_fused_attention(asked, cal)
        key = _found(call.key, cal.attention)
        grid = cal.attention[key] if key is not None else None
        if not isinstance(grid, Grid):
            continue
        for axis, x, points in zip(grid.axes, call.point, grid.points, strict=False):
            # an axis of one point is a constant, not a range measured from its smallest
            if len(points) > 1 and x < points[0] and (call.key, axis) not in notes:
                timed_as = "" if call is asked else f" (timed as {call.key} at twice the length)"
                notes[(call.key, axis)] = (
                    f"attention {asked.key}{timed_as} at {axis} {x:g}, below the calibration's "
                    f"smallest ({points[0]:g}): charged that size's time (the grid's edge)")
    return list(notes.values())


# ------------------------------------------------------------------------------------------------
# 3. Compose


def queue_time(kernels: Iterable[tuple[float, float]]) -> float:
    """End of the last kernel when the host spends h_i issuing kernel i and the device d_i running
    it: kernel i starts at max(issued_i, end_{i-1}). `kernels`: (h_i, d_i) in issue order."""
    issued = end = 0.0
    for h, d in kernels:
        issued += h
        end = max(issued, end) + d
    return max(end, issued)


def _issue_order(seq: list, host: list[float], device: list[float], cal: Calibration,
                 plan: ExecutionPlan) -> list[tuple[float, float]]:
    """(host, device) per op as `queue_time` takes them: an op's host time before its kernels,
    except the fused AdamW phase's, whose calibrated share (`Calibration.optimizer_overlap`) is
    issued after its kernels have started."""
    share = float(cal.optimizer_overlap.get("share", 0.0)) if plan.fused_optimizer else 0.0
    order: list[tuple[float, float]] = []
    for (_, phase, _, _), h, d in zip(seq, host, device, strict=True):
        if phase == names.OPTIMIZER_PHASE and share > 0:
            order += [(h * (1 - share), d), (h * share, 0.0)]
        else:
            order.append((h, d))
    return order


def _host_parts(kind: str, phase: str, plan: ExecutionPlan) -> list[tuple[str, str]]:
    """The calibration's host parts (mode, part) for this phase, best first: a compiled step's
    own, then the nearest one measured (a compiled forward without grad, the compiled train
    forward, then the eager step's). A compiled train step's optimizer phase runs eagerly: the
    compiled job's line (`compiled:opt`, the default compiled plan's master weights) where its
    plan keeps master weights too, else the eager step's."""
    if kind == "train":
        part = {names.FORWARD: "fwd", names.BACKWARD: "bwd", names.OPTIMIZER_PHASE: "opt"}[phase]
    elif kind == "forward":
        part = "nograd"
    else:
        part = {DECODE: "decode", "prefill": "prefill"}.get(kind, "infer")
    # fallbacks for calibrations without the part: a forward's nearest, prefill's decode_nocache
    eager = [(EAGER, p) for p in [part] + {"nograd": ["fwd"], "prefill": ["infer"]}.get(part, [])]
    if not plan.compiled:
        return eager
    if part == "opt":  # eager beside a compiled model; with master weights, not the eager plan's
        return ([(COMPILED, "opt")] if plan.master_weights else []) + eager
    # a compiled inference step without its own measurement takes the compiled train forward's
    # (one compiled graph a step) before the eager step's (every op dispatched from Python: on the
    # H200 a compiled gpt2 forward charged at the eager cost was predicted 1.41× too long)
    if part == "prefill":  # a compiled prefill is costed as the compiled recompute step
        return [(COMPILED, p) for p in ("infer", "nograd", "fwd")] + eager
    nearest = {"infer": ["nograd", "fwd"], "nograd": ["fwd"]}.get(part, [])
    return [(COMPILED, p) for p in [part] + nearest] + eager


def _host_seconds(cal: Calibration, parts: list[tuple[str, str]], dtype: str, n_layer: int) -> float:
    keys = [k for mode, part in parts
            for k in _fallback(host_key(mode, part, dtype)) + [host_key(mode, part, "fp32")]]
    for k in keys:
        if k in cal.host:
            return host_line_s(cal.host[k], n_layer)
    raise UserError(f"the calibration of {cal.device_name!r} has no host cost "
                    f"{host_key(*parts[0], dtype)} (it has: {', '.join(sorted(cal.host)) or 'none'}); run `gptperf calibrate`")


def _host_model_device_s(cal: Calibration, workload: Workload, plan: ExecutionPlan,
                         n_layer: int) -> dict[str, float]:
    """Kernel seconds per phase of the tiny model the host cost was measured on (that time is
    in its measured host time), at its own cache share as the steps are (`cache_share`)."""
    tiny = host_model_config(n_layer, plan.attention)
    w = Workload(workload.kind, HOST_MODEL["batch"], HOST_MODEL["seq"], workload.dtype)
    warm = cache_share(tiny, w, plan, cal)
    total: dict[str, float] = {}
    for _, phase, _, calls in step_ops(tiny, w, plan, cal.device_type):
        total[phase] = total.get(phase, 0.0) + sum(call_time(k, cal, warm) for k in calls)
    return total


def recorded_step(cal: Calibration, kind: str, dtype: str) -> dict[str, Any] | None:
    """The calibration's recorded compiled step nearest to a compiled `kind` step in `dtype`: that
    one, else the same kind in another dtype (what inductor fuses follows the step's graph: a
    forward fuses its loss, a train step does not), else the train step in `dtype`, else any."""
    same_kind = sorted(k for k in cal.compiled if split_compiled_key(k)[0] == kind)
    for key in (compiled_key(kind, dtype), *same_kind, compiled_key("train", dtype), *cal.compiled):
        if key in cal.compiled:
            return cal.compiled[key]
    return None


def _recorded_fused(cal: Calibration, config: GPTConfig, workload: Workload, plan: ExecutionPlan,
                    seq: list) -> tuple[dict[int, tuple[float, int]], list[str]]:
    """A compiled training step: each op's non-matmul, non-attention kernels replaced by what
    inductor ran for it in the recorded calibration step, scaled by the bytes the op's vector
    work moves here over there. Returns {index in seq: (seconds of the fused kernels, kernels
    the recording ran for the op, its matmuls and attention included)} and notes."""
    key = compiled_key(workload.kind, workload.dtype)
    rec = recorded_step(cal, workload.kind, workload.dtype)
    if rec is None:
        return {}, ["compiled step: no recorded compiled step in the calibration; its vector "
                    "work is predicted as eager kernels"]
    notes = [] if key in cal.compiled else [
        f"compiled {key} step: fused kernels scaled from the recorded "
        f"{compiled_key(rec['workload']['kind'], rec['workload']['dtype'])} step"]
    rconfig, rwork = GPTConfig.from_dict(rec["config"]), Workload.from_dict(rec["workload"])
    rplan = ExecutionPlan.from_dict(rec["plan"])
    if rplan.master_weights != plan.master_weights:
        notes.append(f"compiled step: fused kernels scaled from a recording "
                     f"{'with' if rplan.master_weights else 'without'} master weights; "
                     "`gptperf calibrate` records the plan of today's step")

    def vector_bytes(calls: list[KernelCall]) -> float:
        return sum(k.point[0] * k.count for k in calls if k.family == "vector")

    ref: dict[tuple[str, str], float] = {}
    for comp, phase, layer, calls in step_ops(rconfig, rwork, rplan, cal.device_type):
        if layer in (None, 0):
            ref[(comp, phase)] = vector_bytes(calls)
    floor = min((c.at(c.x[0]) for c in cal.vector.values()), default=0.0)
    fused: dict[int, tuple[float, int]] = {}
    for i, (comp, phase, _, calls) in enumerate(seq):
        if phase == names.OPTIMIZER_PHASE:
            continue  # the optimizer runs eagerly beside the compiled model
        if comp == names.LOSS and (plan.fused_loss or rplan.fused_loss):
            continue  # gptperf's own loss kernels (or the recording ran them): on their curves
        entry = rec["ops"].get(compiled_op_key(comp, phase))
        if entry is None:
            fused[i] = (0.0, 0)  # inductor ran nothing of its own for it (fused into a neighbour)
            continue
        other, kernels = float(entry["seconds"].get("other", 0.0)), float(entry["kernels"])
        base = ref.get((comp, phase), 0.0)
        scale = vector_bytes(calls) / base if base else 1.0
        fixed = min(other, kernels * floor)
        fused[i] = (fixed + (other - fixed) * scale, round(kernels))
    return fused, notes


def cache_share(config: GPTConfig, workload: Workload, plan: ExecutionPlan, cal: Calibration) -> float:
    """How much of the cache's saving a CPU step gets, 0 to 1, by the size of its tensors (its
    predicted peak memory: weights, cache, activations), which decides whether a step's next
    call finds its weights in the last-level cache (`Calibration.warm_share`): its few-row
    matmuls and AdamW's per-tensor loop are read that far toward their timings from the cache
    (`call_time`); 0 on a GPU."""
    if cal.device_type != "cpu":
        return 0.0
    return cal.warm_share(memory_breakdown(config, workload, plan, "cpu").total)


def _cache_note(share: float, cal: Calibration, parts: list[tuple[str, bool]]) -> str | None:
    """What the step's calls that the cache moves were read on, when the cache changed them;
    `parts` names each kind of call with its grammatical number, e.g. ("its matmuls of few rows",
    True)."""
    if share <= 0 or not parts:
        return None
    plural = len(parts) > 1 or parts[0][1]
    read = " and ".join(text for text, _ in parts) + (" are read" if plural else " is read")
    their = "their" if plural else "its"
    if share < 1 and cal.reach_shares is not None:
        return (f"CPU: the step's tensors stay in the cache only in part (as measured): {read} "
                f"{min(max(share, 0.01), 0.99):.0%} of the way from {their} timing from memory to "
                f"{their} timing from the cache")
    if cal.reach_shares is None:  # the cache size's rule
        fits = f"fit in the last-level cache ({cal.cache_bytes / 2**20:.0f} MiB)"
    else:
        fits = "are few enough to stay in the cache (as measured)"
    return f"CPU: the step's tensors {fits}: {read} on {their} timing from the cache"


def unaligned_notes(seq: list, cal: Calibration, warm: float = 0.0) -> list[str]:
    """On a GPU, a note for the components whose linear layers have rows that are not 16-byte
    aligned (`kernel_calls.unaligned_layer`), one per matmul dtype: how they are charged and what
    that adds over the aligned grid's reading, with the fix; none where the measured rates add
    nothing, nor on a CPU (its libraries load such rows at the same speed: its calibration
    measures no such layer)."""
    if cal.device_type == "cpu":
        return []
    components: dict[str, list[str]] = {}
    extra_s: dict[str, float] = {}
    for comp, _, _, calls in seq:
        for call in calls:
            if not call.unaligned:
                continue
            key = call.key.removesuffix(BIASED)
            if comp not in components.setdefault(key, []):
                components[key].append(comp)
            slower = call_time(call, cal, warm) - call_time(replace(call, unaligned=""), cal, warm)
            extra_s[key] = extra_s.get(key, 0.0) + slower
    out = []
    for key, comps in components.items():
        rates = cal.matmul_unaligned.get(_found(key, cal.matmul) or key)
        if rates and extra_s[key] <= 0:
            continue  # measured no slower than the grid reads it (fp32, whose loads are 4 bytes anyway)
        if rates:
            charged = (f"charged at least their FLOPs at the rates measured for such a layer "
                       f"({unaligned_rates_text(rates)}), {extra_s[key] * 1e3:.3g} ms a step over "
                       "the aligned grid's reading")
        else:
            charged = "charged on the aligned grid (this calibration measured no such layer)"
        step = 16 // dtype_bytes(key)
        out.append(f"{', '.join(comps)}: rows not 16-byte aligned in {key}, which sends the matmuls "
                   f"to cuBLAS's slower kernels; {charged}; a width or vocabulary that is a "
                   f"multiple of {step} avoids it (an eager 16-bit LM head over {HEAD_PAD_MIN_ROWS} "
                   "rows or more pads its vocabulary itself)")
    return out


def _padded_head_notes(config: GPTConfig, workload: Workload, plan: ExecutionPlan,
                       cal: Calibration) -> list[str]:
    """A note where the step's LM head runs on the padded table (`kernel_calls.head_width`)."""
    width = head_width(config, workload, plan, cal.device_type)
    if width == config.vocab_size:
        return []
    return [f"{names.LM_HEAD}: the {config.vocab_size}-token table runs padded to {width} rows, as "
            "the eager model pads it (rows of 16 bytes for cuBLAS's fast kernels; the logits are "
            "the first columns); the padded copy made each step is charged"]


def _few_row_matmuls(seq: list, cal: Calibration) -> bool:
    """Whether the step has a matmul whose own grid has a warm twin with its rows (what the cache
    moves, `Calibration.matmul_seconds`)."""
    for _, _, _, calls in seq:
        for call in calls:
            key = _found(call.key.removesuffix(BIASED), cal.matmul) if call.family == "matmul" else None
            if key is not None and cal.warm_grid(key, call.point[0]) is not None:
                return True
    return False


def _cached_one_query(seq: list, cal: Calibration) -> bool:
    """Whether the step has a one-query attention whose grid has a twin timed from the cache
    (`Calibration.attention_seconds`, `Calibration.attention_warm_grid`)."""
    for _, _, _, calls in seq:
        for call in calls:
            key = _found(call.key, cal.attention) if call.family == "attention" else None
            if key is not None and cal.attention_warm_grid(key) is not None:
                return True
    return False


def _cold_adamw_loop(seq: list, cal: Calibration) -> bool:
    """Whether the step has an AdamW step charged on the per-tensor loop timed both ways (from the
    cache and from memory: what the cache moves, `call_time`)."""
    if not cal.adamw_loop_both_ways:
        return False
    return any(call.key == "adamw_foreach" and call.tensors for _, _, _, calls in seq for call in calls)


NOTED_SLOWDOWN = 1.005  # a sustained-load slowdown from this on is named in the notes


def _compose(seq: list, host: list[float], device: list[float], cal: Calibration,
             plan: ExecutionPlan) -> float:
    """The step's time from each op's host and device seconds (see the module docstring)."""
    if plan.cuda_graph:
        return sum(device)
    if cal.device_type == "cpu":
        return sum(host) + sum(device)
    return queue_time(_issue_order(seq, host, device, cal, plan))


def _checked_plan(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None,
                  calibration: Calibration, host_speed: float | None,
                  phase_speeds: Mapping[str, float] | None,
                  parallel_speed: float | None = None) -> ExecutionPlan:
    """The plan `expected` composes the step by (eager with the model's attention when none is
    given), once its arguments are known to fit together (UserError when they do not)."""
    if not isinstance(calibration, Calibration):
        raise UserError(f"calibration must be a Calibration, got {type(calibration).__name__}")
    for what, speed in [("host_speed", host_speed), ("parallel_speed", parallel_speed),
                        *((f"phase_speeds[{p!r}]", v) for p, v in (phase_speeds or {}).items())]:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise UserError(f"{what} must be a positive finite ratio, got {speed!r}")
    plan = ExecutionPlan.eager(config.attention) if plan is None else plan
    if plan.attention != config.attention:
        raise UserError(f"plan attention {plan.attention!r} differs from the model's {config.attention!r}")
    plan.check(workload.kind, workload.dtype)
    # a step's matmuls are timed in its own dtype (tf32's at the tf32 rate; fp16's read bf16's)
    if calibration.dtypes and _found(workload.dtype, calibration.matmul) is None:
        measured = ", ".join(calibration.dtypes)
        raise UserError(f"the calibration of {calibration.device_name!r} was measured in {measured}, "
                        f"not {workload.dtype}: predict a step in {measured} "
                        f"(--dtype {calibration.dtypes[0]})")
    return plan


def _lookup_notes(seq: list, cal: Calibration, warm: float) -> list[str]:
    """What the curves were read at where that is not their plain reading: the cache's share of
    a CPU step (`_cache_note`), attention below the measured grid, rows not 16-byte aligned."""
    notes: list[str] = []
    parts = [(text, plural) for text, plural, has in (
        ("its matmuls of few rows", True, _few_row_matmuls(seq, cal)),
        ("its one-query attention", False, _cached_one_query(seq, cal)),
        ("AdamW's per-tensor loop", False, _cold_adamw_loop(seq, cal))) if has]
    cache_note = _cache_note(warm, cal, parts)
    if cache_note:
        notes.append(cache_note)
    notes += below_grid_notes((k for _, _, _, calls in seq for k in calls), cal)
    notes += unaligned_notes(seq, cal, warm)
    return notes


def in_parallel_regions(call: KernelCall) -> bool:
    """Whether a CPU kernel runs in torch's parallel regions (at::parallel_for over its threads):
    attention, the optimizer, and an elementwise kernel over at least torch's grain of elements on
    each side (`PARALLEL_GRAIN`; smaller ones run on one thread). The matmuls run in BLAS's threads."""
    if call.family in ("attention", "optimizer"):
        return True
    if call.family != "vector":
        return False
    _, dtype = split_vector_key(call.key)
    return call.point[0] >= 2 * PARALLEL_GRAIN * dtype_bytes(dtype)


def _tensor_bytes(call: KernelCall) -> float:
    """The bytes a parallel CPU kernel works over: an elementwise kernel's curve x, attention's
    q, k, v and output (one query: its K and V)."""
    if call.family == "vector":
        return call.point[0]
    dtype, pass_ = split_attention_key(call.key)
    bh, t, d = call.point[:3]
    return (2 if pass_.startswith("one_query") else 4) * bh * t * d * dtype_bytes(dtype)


def parallel_factor(call: KernelCall, cal: Calibration, speed: float) -> float:
    """What a CPU kernel's time is multiplied by with the parallel regions at `speed` (a parallel
    add's time now over then): 1 outside them (`in_parallel_regions`); inside, `speed` as far as
    its tensors stay in the cache (`Calibration.warm_share` of their bytes), 1 as far as they
    stream from memory, whose bandwidth a spell of fork and join leaves alone (the speed probe's
    copy did not move in them). AdamW's per-tensor loop: each tensor's, weighted by its size."""
    if not in_parallel_regions(call):
        return 1.0

    def at(nbytes: float) -> float:
        return 1.0 + cal.warm_share(nbytes) * (speed - 1.0)

    if call.family == "optimizer":
        total = sum(size * n for size, n in call.tensors)
        if not total:  # a step read on a grid of tensor counts (a GPU's) has no sizes to go by
            return 1.0
        return sum(size * n * at(size * ADAMW_BYTES_PER_PARAM) for size, n in call.tensors) / total
    return at(_tensor_bytes(call))


def _device_times(seq: list, fused: Mapping[int, tuple[float, int]], cal: Calibration,
                  plan: ExecutionPlan, warm: float, parallel_speed: float | None = None
                  ) -> tuple[list[float], list[int], list[float], float]:
    """Per op: its device seconds (its kernels on the curves, a compiled train step's fused
    kernels as `_recorded_fused` scaled them, and each kernel's launch gap; on a CPU each kernel ×
    its `parallel_factor` at `parallel_speed`, which `expected` gives a CPU step alone), its
    kernels, and the seconds of its matmul and attention kernels; then those kernels' FLOPs over
    the step (what the power cap answers to, `_power_capped_step`)."""
    # every kernel of a step that is not a CUDA graph is launched from a stream
    gap = 0.0 if plan.cuda_graph or cal.device_type == "cpu" else cal.launch_gap_s
    device: list[float] = []
    kernels: list[int] = []
    compute: list[float] = []
    step_flops = 0.0
    for i, (_, _, _, calls) in enumerate(seq):
        times = [call_time(k, cal, warm) for k in calls]
        if parallel_speed is not None:
            times = [t * parallel_factor(k, cal, parallel_speed) for k, t in zip(calls, times, strict=True)]
        flops = [compute_flops(k) for k in calls]
        step_flops += sum(flops)
        compute.append(sum(t for f, t in zip(flops, times, strict=True) if f > 0))
        if i in fused:
            kept = [(k, t) for k, t in zip(calls, times, strict=True) if k.family != "vector"]
            seconds, recorded = fused[i]
            # the recording's count includes the op's matmuls and attention (none if it ran none)
            kernels.append(max(recorded, sum(k.count for k, _ in kept)))
            device.append(sum(t for _, t in kept) + seconds + gap * kernels[-1])
        else:
            kernels.append(sum(k.count for k in calls))
            device.append(sum(times) + gap * kernels[-1])
    return device, kernels, compute, step_flops


def _host_times(seq: list, kernels: list[int], cal: Calibration, config: GPTConfig,
                workload: Workload, plan: ExecutionPlan, host_speed: float | None,
                phase_speeds: Mapping[str, float] | None
                ) -> tuple[list[float], dict[str, float], list[str]]:
    """Per op, its share of its phase's host seconds at the host's speed (none under a CUDA
    graph: no host in the loop); the phase speeds they were charged at; the notes saying so."""
    host = [0.0] * len(seq)
    if plan.cuda_graph:
        return host, {}, []
    cpu = cal.device_type == "cpu"
    phases = dict.fromkeys(ph for _, ph, _, _ in seq)
    in_host = _host_model_device_s(cal, workload, plan, config.n_layer) if cpu else {}
    for phase in phases:
        idx = [i for i, (_, ph, _, _) in enumerate(seq) if ph == phase]
        parts = _host_parts(workload.kind, phase, plan)
        h = _host_seconds(cal, parts, workload.dtype, config.n_layer)
        if cpu:  # the tiny model's own kernel time is inside its measured host time
            h = max(h - in_host.get(phase, 0.0), 0.0)
        h *= (phase_speeds or {}).get(phase, host_speed or 1.0)
        # spread over the phase's kernels in proportion to their count
        n = sum(kernels[i] for i in idx) or 1
        for i in idx:
            host[i] = h * kernels[i] / n
    notes: list[str] = []
    if host_speed is not None:
        notes.append(f"host costs ×{host_speed:.2f}: the calibration's host-model step took "
                     f"{host_speed:.2f}× its time at calibration when probed as this step ran")
    charged = {p: v for p, v in (phase_speeds or {}).items() if p in phases}
    if charged:
        notes.append("host costs by phase, each at its own phase of the host-model step: "
                     + ", ".join(f"{p} ×{v:.2f}" for p, v in charged.items()))
    return host, charged, notes


def _composition(cal: Calibration, plan: ExecutionPlan) -> str:
    """How `_compose` puts the step together, in words."""
    if plan.cuda_graph:
        return "CUDA graph: kernels back to back"
    if cal.device_type == "cpu":
        return "CPU: host time + kernel time"
    if plan.compiled:
        return "compiled queue: host issues, device runs"
    return "eager queue: host issues, device runs"


def _power_capped_step(seq: list, host: list[float], device: list[float], compute: list[float],
                       step_flops: float, cal: Calibration, plan: ExecutionPlan
                       ) -> tuple[float, list[float], list[str]]:
    """The step's time (`_compose`) and each op's device seconds once a GPU's power cap has
    slowed the matmul and attention kernels (`compute`: their seconds per op) as much as the
    step's FLOP rate makes it; a note when that is noticeable."""
    step = _compose(seq, host, device, cal, plan)
    notes: list[str] = []
    if cal.device_type != "cpu" and cal.sustained and step > 0:
        # the step's matmuls and attention keep the GPU this busy: under its power cap their
        # kernels run as much slower as the calibration's sustained matmul did at that rate
        rate = step_flops / step
        slow = cal.sustained_slowdown(rate)
        if slow > 1.0:
            device = [d + (slow - 1.0) * c for d, c in zip(device, compute, strict=True)]
            step = _compose(seq, host, device, cal, plan)
        if slow >= NOTED_SLOWDOWN:
            notes.append(f"sustained load: matmul and attention ×{slow:.3f} at the step's "
                         f"{rate / 1e12:.0f} TFLOP/s (the calibration's matmul kept up)")
    return step, device, notes


def _expected_ops(seq: list, device: list[float], host: list[float],
                  kernels: list[int]) -> list[ExpectedOp]:
    """Each op of the step with its device and host seconds and its kernels."""
    ops = []
    for i, (comp, phase, layer, _) in enumerate(seq):
        name = comp if layer is None else names.layer_name(layer, comp)
        ops.append(ExpectedOp(name, comp, layer, phase, device[i], host[i], kernels[i]))
    return ops


def expected(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None,
             calibration: Calibration, host_speed: float | None = None,
             phase_speeds: Mapping[str, float] | None = None,
             parallel_speed: float | None = None) -> Expected:
    """The calibrated expected time of one step of `workload` on `config` under `plan` on the
    calibrated device (see the module docstring); `host_speed` scales the host costs, and
    `phase_speeds` (phase -> ratio) those of the phases it names instead; `parallel_speed` a
    CPU's kernels that run in parallel regions."""
    plan = _checked_plan(config, workload, plan, calibration, host_speed, phase_speeds, parallel_speed)
    parallel_speed = parallel_speed if calibration.device_type == "cpu" else None
    cal = calibration
    # 1. decompose: the step's ops, each the kernels its plan runs; a compiled train step's vector
    # kernels are those the recorded step fused
    seq = step_ops(config, workload, plan, cal.device_type)
    fused: dict[int, tuple[float, int]] = {}
    notes: list[str] = []
    if plan.compiled and workload.kind not in INFERENCE_KINDS:
        fused, notes = _recorded_fused(cal, config, workload, plan, seq)
    # 2. look up each kernel on its curve
    warm = cache_share(config, workload, plan, cal)
    notes += _lookup_notes(seq, cal, warm) + _padded_head_notes(config, workload, plan, cal)
    device, kernels, compute, step_flops = _device_times(seq, fused, cal, plan, warm, parallel_speed)
    if parallel_speed is not None:
        notes.append(f"parallel CPU kernels ×{parallel_speed:.2f}: a parallel CPU add took "
                     f"{parallel_speed:.2f}× its time at calibration as this step ran (attention, "
                     "optimizer, elementwise kernels of a grain or more, as far as their tensors "
                     "stay in the cache; not the matmuls)")
    # 3. compose by the plan: the host's share of each op, then the step under the power cap
    host, charged, host_notes = _host_times(seq, kernels, cal, config, workload, plan,
                                            host_speed, phase_speeds)
    step, device, load_notes = _power_capped_step(seq, host, device, compute, step_flops, cal, plan)
    return Expected(config, workload, plan, step, _expected_ops(seq, device, host, kernels),
                    cal.label(), _composition(cal, plan), notes + host_notes + load_notes,
                    host_speed=None if plan.cuda_graph else host_speed, phase_speeds=charged,
                    parallel_speed=parallel_speed)
