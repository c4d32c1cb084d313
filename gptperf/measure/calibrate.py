"""`calibrate`: measure this device's `Calibration` — the kernel curves (`calibrate_kernels`), the
host cost of a step's Python and dispatch, and (CUDA) the kernels a compiled step runs — and
`calibration_for`, the cached one of this device, checked.

Host costs (`Calibration.host["<mode>:<part>:<dtype>"]`) are measured on a tiny GPT (C 64, 2
heads, vocab 256, B 1, T 8: device time is negligible) with 1 and 4 blocks, through the
project's own steps: the parts of `steps.train.TrainStep` (fwd, bwd, opt), the decode_nocache
step of `steps.inference` (infer: no grad, no KV cache), its eager prefill into the model's KV
cache (prefill) and its eager decode step with that cache (decode). A straight line through the
two block counts gives `per_layer_s` and `fixed_s`. On CUDA a part's host time is the CPU time
of the call among calls run back to back, no synchronisation between them (the GPU keeps up at
these sizes); on a CPU it is the whole call.
The host's speed moves while they are measured (2× within one calibration on the lent H200
machine), so each job's costs are brought to one speed: the host model's own step of the job's
kind (train, or decode for the inference jobs) is sampled after each of the job's timed rounds
(`gptperf.measure.probe.HostSampler`, as a command that measures a step samples it between the
step's runs), and the job's costs are scaled to the geometric mean of those units over the jobs
of its kind, kept as `probes["host"]["train_step_s"]` and `["step_s"]` (`fit_host_jobs`).

Compiled recordings (`Calibration.compiled["<kind>:<dtype>"]`, CUDA) profile a compiled step of
one calibration config and attribute every kernel to (operation, phase) with gptperf.profiling;
per "<component>:<phase>" they keep kernels and seconds by class (matmul, attention, other).
profiling times its steps through this package, so it cannot be imported here (sub-packages
never depend on each other both ways): the caller hands its functions in (`ProfilerHooks`,
`gptperf.profiling.hooks.profiler_hooks()`); without them the recordings are left out, noted.
On CUDA the compiled jobs' and recordings' steps are compiled ahead by a side process while the
kernels are timed (`compile_warmup`), so their own compiles here find inductor's caches warm.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptperf import names
from gptperf.dtypes import check_dtype
from gptperf.envinfo import device_name
from gptperf.errors import UserError
from gptperf.measure.compile_warmup import CompileWarmup
from gptperf.measure.gpu_lock import NO_LOCK
from gptperf.measure.launch_gap import measure_launch_gap
from gptperf.measure.optimizer_overlap import measure_optimizer_overlap
from gptperf.measure.probe import (
    UNIT_KEYS,
    HostSampler,
    drift_note,
    host_step_s,
    probe_of,
    take_probe,
)
from gptperf.measure.timer import Progress
from gptperf.model.config import GPTConfig, preset
from gptperf.perfmodel.calibration import (
    HOST_MODEL,
    Calibration,
    host_model_config,
    load_calibration,
    save_calibration,
)
from gptperf.perfmodel.workload import Workload
from gptperf.plan import COMPILED, EAGER, ExecutionPlan
from gptperf.runtime import as_device, synchronize

# dtypes calibrated when none are asked for (the GPU's training and inference formats; fp32 only
# on a CPU, where bf16 matmuls are emulated and nobody trains in them)
DEFAULT_DTYPES: dict[str, tuple[str, ...]] = {"cuda": ("bf16", "fp32"), "cpu": ("fp32",)}

# The host-cost model: tiny enough that the device never holds the host up.
HOST_LAYERS: tuple[int, int] = HOST_MODEL["layers"]
HOST_BATCH, HOST_SEQ = HOST_MODEL["batch"], HOST_MODEL["seq"]
HOST_PARTS: tuple[str, ...] = ("fwd", "bwd", "opt", "infer", "prefill", "decode", "nograd")
COMPILED_PARTS: tuple[str, ...] = ("fwd", "bwd", "nograd")
HOST_REPEATS, HOST_QUICK_REPEATS, HOST_WARMUP, HOST_MIN_REPEATS = 20, 12, 2, 5
COMPILED_WARMUP = 3  # the first call compiles the forward, the first backward its graph
HOST_JOB_BUDGET_S = {False: 2.0, True: 1.0}  # timed seconds per group of steps (quick: True)
COMPILED_DTYPE = "bf16"  # compiled host costs and recordings: the dtype compiled steps train in

# The compiled recording's model and steps: not a validation shape (see shapes["configs"]).
RECORD_SHAPE: dict[str, int] = {"n_layer": 2, "n_embd": 512, "n_head": 8, "vocab_size": 8192,
                                "block_size": 512}
# large enough that inductor's kernels stream memory (their fixed cost small beside it), so that
# scaling them by bytes to other shapes holds
RECORD_BATCH, RECORD_SEQ = 8, 512
RECORD_STEPS = 3  # profiled (active) steps
HOST_JOBS: tuple[str, ...] = ("train", "inference")  # each mode's host jobs, in this order
# the workloads the compiled recordings profile, in this order, by quick
RECORD_KINDS: dict[bool, tuple[str, ...]] = {False: ("train", "forward"), True: ("train",)}

# Seconds allowed for the compiled sections on CUDA (the whole calibration: <= 120 s on an H200).
# Host jobs: the first always runs, a later one only while compiling so far is under the budget.
# The first compile of a process pays inductor's start (~10 s): on the H200 the train job took
# 16-27 s first and the forward-only one 4-7 s after it (16 s first), so a later job is not judged
# by the one before. Recordings: a later one runs while those before it are within their budget,
# not judged by the one before: the forward recording compiles one graph and no backward (on
# the H200 the train recording took 9-12 s, both 11-13 s) and a compiled forward predicted
# without it measured 0.57-0.87 of its prediction. The notes say what was left out.
COMPILED_HOST_BUDGET_S = 30.0
RECORD_BUDGET_S = 20.0
QUICK_NOTE = "quick calibration: fewer sizes and repeats"
REUSE_DAYS = 1.0  # `ensure_calibration` reuses a cached calibration younger than this

# Kernel classes by name. Inductor's generated pointwise and reduction kernels (triton_poi_/
# triton_red_/triton_per_, cpp_fused) are named after every op they fuse, a layout copy next to
# attention included, so they are "other" whatever their name lists; its templates (triton_tem_)
# are matmuls unless they are attention.
KERNEL_CLASSES: tuple[str, ...] = ("matmul", "attention", "other")
_ATTENTION = re.compile(r"flash|fmha|attention|sdpa", re.IGNORECASE)
_MATMUL = re.compile(r"gemm|cutlass|cublas|nvjet|xmma|sm90|gemv", re.IGNORECASE)
_GENERATED = re.compile(r"^(triton_(poi|red|per)_|cpp_fused)")
_TEMPLATE = re.compile(r"^triton_tem_")


def kernel_class(kernel: str) -> str:
    """"matmul", "attention" or "other" for a kernel's name (see KERNEL_CLASSES)."""
    if _GENERATED.match(kernel):
        return "other"
    if _ATTENTION.search(kernel):
        return "attention"
    if _MATMUL.search(kernel) or _TEMPLATE.match(kernel):
        return "matmul"
    return "other"


@dataclass(frozen=True)
class ProfilerHooks:
    """What a compiled recording takes from gptperf.profiling (handed in: see the module docstring).

    provenance: `profiling.provenance.inductor_provenance` (a context manager factory, n_layer ->
    a Provenance, to wrap compilation); attribute: `profiling.trace.attribute`; load_trace:
    `profiling.trace.load_trace`."""

    provenance: Callable[[int], Any]
    attribute: Callable[..., Any]
    load_trace: Callable[[Any], dict[str, Any]]


# ----------------------------------------------------------------------------------------------
# Host costs


@dataclass(frozen=True)
class HostCosts:
    """What `measure_host` measured: `costs["<mode>:<part>:<dtype>"]` = {"per_layer_s",
    "fixed_s"} at the host speed where the host model's step of each probe takes `units[probe]`
    (a probe absent: no job of its kind ran), notes, and each job's own unit by
    "<mode>:<train|inference>:<dtype>" (`job_units`)."""

    costs: dict[str, dict[str, float]]
    units: dict[str, float]
    notes: list[str]
    job_units: dict[str, float] = field(default_factory=dict)


HostJob = tuple[str, str, str, dict[int, dict[str, float]], float]  # probe, mode, dtype, times, unit


def fit_host_jobs(measured: Sequence[HostJob]) -> tuple[dict[str, dict[str, float]], dict[str, float],
                                                         list[str]]:
    """(host, units, notes): `host["<mode>:<part>:<dtype>"]` fitted from each job's times per
    block count and scaled to one host speed per probe. A job is (probe, mode, dtype, times,
    unit): `unit` is the host model's `probe` step sampled among the job's rounds
    (`probe.HostSampler`), so a job measured on a host 1.3× slower has its costs divided by 1.3
    against the others of its probe. `units[probe]`, the geometric mean of that probe's units, is
    the speed its jobs' costs are at; a command that measures a step later samples the same step
    among its own and compares. A note per probe says how far the host moved between its jobs
    (none within 5%).

    (On the H200 machine an eager fp32 decode's host cost came out 1.33× the bf16 one, the same
    ops, because the host slowed between their jobs: validate missed that case by 32%. In runs I
    and J a unit timed inside the rounds doubled validate's median error — validate then probed
    the host after each case, not among its steps.)"""
    by_probe: dict[str, list[float]] = defaultdict(list)
    for probe, *_, unit in measured:
        by_probe[probe].append(unit)
    units = {p: math.exp(statistics.fmean(math.log(u) for u in us)) for p, us in by_probe.items()}
    lo, hi = HOST_LAYERS
    host: dict[str, dict[str, float]] = {}
    for probe, mode, dtype, times, unit in measured:
        scale = units[probe] / unit
        for part in times.get(lo, {}):
            fit = fit_line(times[lo][part], times[hi][part])
            host[f"{mode}:{part}:{dtype}"] = {k: v * scale for k, v in fit.items()}
    notes = [f"host costs: the host model's {p} step took {min(us) * 1e6:.0f}–{max(us) * 1e6:.0f} µs "
             f"among the {len(us)} {p} probe's host jobs' rounds (×{max(us) / min(us):.2f}); each "
             f"job's costs are scaled to {units[p] * 1e6:.0f} µs"
             for p, us in by_probe.items() if max(us) / min(us) > 1.05]
    return host, units, notes


def host_config(n_layer: int) -> GPTConfig:
    """The tiny GPT whose steps' host cost is measured (`HOST_MODEL`, `n_layer` blocks)."""
    return host_model_config(n_layer)


def fit_line(t1: float, t4: float, layers: tuple[int, int] = HOST_LAYERS) -> dict[str, float]:
    """{"per_layer_s", "fixed_s"}: the straight line through (layers[0], t1) and (layers[1], t4),
    neither below zero (noise can tilt a line through two points)."""
    lo, hi = layers
    per_layer = max((t4 - t1) / (hi - lo), 0.0)
    return {"per_layer_s": per_layer, "fixed_s": max(t1 - lo * per_layer, 0.0)}


Parts = dict[str, Callable[[], None]]


def _train_parts(config: GPTConfig, dtype: str, mode: str, device: torch.device) -> Parts:
    """fwd, bwd, opt of the train step `gptperf train` runs (fused AdamW on CUDA, as its plan)."""
    from gptperf.steps.build import build_step

    plan = ExecutionPlan.default("train", device.type, compile=mode == COMPILED,
                                 attention=config.attention)
    step = build_step(config, Workload("train", HOST_BATCH, HOST_SEQ, dtype), plan, device)
    train = step.train
    assert train is not None  # a train step always has one
    return {"fwd": train.forward, "bwd": train.backward, "opt": train.optimizer_step}


def _inference_part(config: GPTConfig, kind: str, dtype: str, mode: str,
                    device: torch.device) -> Callable[[], None]:
    """The one-phase inference step of `kind` (decode_nocache: infer; prefill; decode: KV-cache
    decode)."""
    from gptperf.steps.build import build_step

    plan = ExecutionPlan(mode, config.attention)
    step = build_step(config, Workload(kind, HOST_BATCH, HOST_SEQ, dtype), plan, device)
    return step.phases[0][1]


def time_host_parts(groups: dict[int, Parts], timed: Sequence[str], device: torch.device, *,
                    warmup: int = HOST_WARMUP, repeats: int = HOST_REPEATS,
                    budget_s: float | None = None, min_repeats: int = HOST_MIN_REPEATS,
                    clock: Callable[[], float] = time.perf_counter,
                    between_rounds: Callable[[], None] | None = None) -> dict[int, dict[str, float]]:
    """Median host seconds of each part in `timed`, per block count: every part of every group
    runs in order once a round, the groups interleaved (slow drift of the machine hits each alike),
    `warmup` rounds untimed, then `repeats` timed ones — fewer (at least `min_repeats`) once the
    timed rounds have taken `budget_s` (a busy machine). `between_rounds` runs after each timed
    round, outside the parts' times (e.g. a `probe.HostSampler`).

    The rounds run back to back, the device synchronised only after the warm-up and at the end,
    as `bench` runs a step: on the H200 machine a tiny decode step took 722 µs of host time when
    called with the GPU idle after a synchronisation, 454 µs behind a busy queue and 367 µs a
    step in a run of steps (`benchmarks/gpu_host_cost.py --queue`). The host model's kernels are
    too small to hold the host up."""
    samples: dict[int, dict[str, list[float]]] = {
        n: {p: [] for p in parts if p in timed} for n, parts in groups.items()}
    timed_from = None
    for i in range(warmup + repeats):
        if i == warmup:
            synchronize(device)
            timed_from = clock()
        elif (timed_from is not None and budget_s is not None and i - warmup >= min_repeats
              and clock() - timed_from > budget_s):
            break
        for n, parts in groups.items():
            for part, run in parts.items():
                t0 = clock()
                run()
                t1 = clock()
                if i >= warmup and part in samples[n]:
                    samples[n][part].append(t1 - t0)
        if i >= warmup and between_rounds is not None:
            between_rounds()
    synchronize(device)
    return {n: {p: statistics.median(s) for p, s in by_part.items()} for n, by_part in samples.items()}


def host_groups(dtype: str, mode: str, device: torch.device, what: str) -> dict[int, Parts]:
    """Per block count, the parts of the train steps (`what` "train") or the inference steps."""
    groups: dict[int, Parts] = {}
    for n in HOST_LAYERS:
        config = host_config(n)
        if what == "train":
            groups[n] = _train_parts(config, dtype, mode, device)
        else:
            # the forward workload: no grad, autocast (cheaper than a train step's forward)
            groups[n] = {"nograd": _inference_part(config, "forward", dtype, mode, device)}
            if mode == EAGER:
                groups[n]["infer"] = _inference_part(config, "decode_nocache", dtype, mode, device)
                # its KV-cache writes are ~10% more ops a layer than decode_nocache's recompute:
                # charged as infer, prefill measured 1.21-1.27x its host cost on the H200
                groups[n]["prefill"] = _inference_part(config, "prefill", dtype, mode, device)
                groups[n]["decode"] = _inference_part(config, "decode", dtype, mode, device)
    return groups


def measure_host(device: torch.device, dtypes: Iterable[str], *, quick: bool = False,
                 compiled: bool | None = None, progress: Progress | None = None,
                 budget_s: float = COMPILED_HOST_BUDGET_S) -> HostCosts:
    """`HostCosts`: `costs["<mode>:<part>:<dtype>"] = {"per_layer_s", "fixed_s"}` for every dtype
    in eager mode, and compiled (`compiled`, default: on CUDA) for fwd, bwd and nograd in
    COMPILED_DTYPE when it is among `dtypes` — a later compiled job only while compiling so far
    is under `budget_s`; every job's costs brought to one host speed (`fit_host_jobs`)."""
    dtypes = list(dtypes)
    compiled = device.type == "cuda" if compiled is None else compiled
    repeats = HOST_QUICK_REPEATS if quick else HOST_REPEATS
    jobs = [(EAGER, dt, what) for dt in dtypes for what in HOST_JOBS]
    if compiled and COMPILED_DTYPE in dtypes:
        jobs += [(COMPILED, COMPILED_DTYPE, what) for what in HOST_JOBS]
    measured: list[HostJob] = []
    job_units: dict[str, float] = {}
    notes: list[str] = []
    compiling_s = 0.0
    for done, (mode, dtype, what) in enumerate(jobs):
        if progress:
            progress("host", done, len(jobs))
        if mode == COMPILED and compiling_s > budget_s:
            notes.append(f"compiled host cost of the {what} step left out: compiling took "
                         f"{compiling_s:.0f} s of the {budget_s:.0f} s allowed")
            continue
        start = time.perf_counter()
        timed = [p for p in HOST_PARTS if mode == EAGER or p in COMPILED_PARTS]
        warmup = COMPILED_WARMUP if mode == COMPILED else HOST_WARMUP

        probe = probe_of(what)  # the host model's step the job's costs are in units of

        def measure(dtype: str = dtype, mode: str = mode, what: str = what, timed: list[str] = timed,
                    warmup: int = warmup, probe: str = probe,
                    ) -> tuple[tuple[dict[int, dict[str, float]], float], list[str]]:
            groups = host_groups(dtype, mode, device, what)
            # warmed up first (a compiled part compiles in its first call)
            time_host_parts(groups, [], device, warmup=warmup, repeats=0)
            # the unit sampled among the rounds, as validate samples the host among a case's
            # steps: on the H200 machine a probe for a second after a case read 0.54-1.25 of the
            # calibration's unit where samples among its steps read 0.56-1.30, case by case apart
            sampler = HostSampler(device, every_s=0.0, probe=probe)
            times = time_host_parts(groups, timed, device, warmup=0, repeats=repeats,
                                    budget_s=HOST_JOB_BUDGET_S[quick], between_rounds=sampler)
            return (times, sampler.step_s() or host_step_s(device, probe=probe)), []

        if mode == COMPILED:
            (times, unit), failed = _guarded(f"compiled host cost of the {what} step", measure,
                                             ({}, 0.0))
            notes += failed
            took = time.perf_counter() - start
            compiling_s += took
            notes.append(f"compiled host cost of the {what} step: {took:.0f} s with its compilation")
        else:
            (times, unit), _ = measure()
        if times:
            measured.append((probe, mode, dtype, times, unit))
            job_units[f"{mode}:{what}:{dtype}"] = unit
    if progress:
        progress("host", len(jobs), len(jobs))
    host, units, drift = fit_host_jobs(measured)
    notes += drift
    if compiled and COMPILED_DTYPE not in dtypes:
        notes.append(f"compiled host costs are measured in {COMPILED_DTYPE}, not among the dtypes "
                     f"{dtypes}: left out")
    return HostCosts(host, units, notes, job_units)


# ----------------------------------------------------------------------------------------------
# Compiled recordings


def record_config() -> GPTConfig:
    """The model of the compiled recordings (`RECORD_SHAPE`)."""
    return preset("tiny", **RECORD_SHAPE)


def summarize_attribution(attribution: Any, n_layer: int) -> dict[str, Any]:
    """Per "<component>:<phase>": {"kernels": int, "seconds": {class: s}} per layer (per step for
    the components that run once a step), averaged over the layers and the profiled steps, from
    a `gptperf.profiling.trace.Attribution`. A kernel split between operations gives each its
    share of the seconds and is counted once, for the operation with the largest share, so the
    kernels add up to the step's. Work no operation explains is kept apart ("unattributed")."""
    steps = max(len(attribution.steps), 1)
    kernels: dict[str, float] = defaultdict(float)
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(KERNEL_CLASSES, 0.0))
    lost = {"kernels": 0, "seconds": dict.fromkeys(KERNEL_CLASSES, 0.0)}
    total_s = 0.0
    for w in attribution.work:
        cls = kernel_class(w.kernel)
        s = w.dur_us * 1e-6
        total_s += s
        if not w.parts:
            lost["kernels"] += 1
            lost["seconds"][cls] += s
            continue
        for name, phase, weight in w.parts:
            seconds[f"{names.component_of(name)}:{phase}"][cls] += s * weight
        name, phase, _ = max(w.parts, key=lambda p: p[2])
        kernels[f"{names.component_of(name)}:{phase}"] += 1

    def per(key: str) -> int:
        return steps * (n_layer if key.split(":")[0] in names.LAYER_COMPONENTS else 1)

    ops = {key: {"kernels": round(kernels.get(key, 0) / per(key)),
                 "seconds": {c: t / per(key) for c, t in by_class.items()}}
           for key, by_class in sorted(seconds.items())}
    return {
        "ops": ops,
        "steps": len(attribution.steps),
        "kernels_per_step": len(attribution.work) / steps,
        "kernel_seconds_per_step": total_s / steps,
        "step_wall_s": statistics.median(attribution.step_wall_s) if attribution.step_wall_s else 0.0,
        "exact_coverage": _finite(attribution.exact_coverage),
        "unattributed": {"kernels": lost["kernels"] / steps,
                         "seconds": {c: t / steps for c, t in lost["seconds"].items()}},
    }


def _finite(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


def _shares(config: GPTConfig, workload: Workload, plan: ExecutionPlan,
            device: torch.device) -> dict[tuple[str, str], float] | None:
    """Predicted seconds per (name, phase) on this device's ceilings or datasheet, which split a
    fused kernel between its operations (None, an even split, where neither is known)."""
    from gptperf.perfmodel import predict
    from gptperf.perfmodel.devices import resolve_hardware

    try:
        hw = resolve_hardware(None, device_name(device), device.type, dtype=workload.dtype)
    except UserError:
        return None
    shares: dict[tuple[str, str], float] = defaultdict(float)
    for op in predict(config, workload, hw, plan).ops:
        shares[(op.name, op.phase)] += float(op.time_s)
    return dict(shares)


def record_workload(kind: str) -> Workload:
    """The workload of the compiled recording of `kind` (one of `RECORD_KINDS`)."""
    return Workload(kind, RECORD_BATCH, RECORD_SEQ, COMPILED_DTYPE)


def warmed_compiled_step(config: GPTConfig, workload: Workload, device: torch.device) -> Any:
    """The compiled step of `workload` on `config`, run twice: it compiles (forward and backward)
    and autotunes (as a recording runs it, and as the side process compiles it ahead)."""
    from gptperf.steps.build import build_step

    plan = ExecutionPlan.default(workload.kind, device.type, compile=True, attention=config.attention)
    step = build_step(config, workload, plan, device)
    for _ in range(2):
        step.step()
    synchronize(device)
    return step


def record_compiled(config: GPTConfig, workload: Workload, device: torch.device,
                    hooks: ProfilerHooks, *, steps: int = RECORD_STEPS) -> dict[str, Any]:
    """A compiled step of `workload` on `config` profiled for `steps` steps and attributed:
    {"config", "workload", "plan", "ops": {"<component>:<phase>": ...}, ...} (see
    `summarize_attribution`)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    from gptperf.quiet import profiler_quiet

    with hooks.provenance(config.n_layer) as prov:
        step = warmed_compiled_step(config, workload, device)
    shares = _shares(config, workload, step.plan, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    wait, warm = 1, 1
    with tempfile.TemporaryDirectory(prefix="gptperf-calibrate-") as tmp:
        path = Path(tmp) / "trace.json"
        with profiler_quiet(), profile(
                activities=activities, record_shapes=True,  # shapes match extern calls
                schedule=schedule(wait=wait, warmup=warm, active=steps, repeat=1),
                on_trace_ready=lambda p: p.export_chrome_trace(str(path))) as prof:
            for _ in range(wait + warm + steps):
                step.step()
                prof.step()
        synchronize(device)
        doc = hooks.load_trace(path)
    attribution = hooks.attribute(doc, path=f"calibration {workload.kind}", shares=shares,
                                  provenance=prov)
    out = {"config": config.to_dict(), "workload": workload.to_dict(), "plan": step.plan.to_dict()}
    out.update(summarize_attribution(attribution, config.n_layer))
    if shares is None:
        out["note"] = "no ceilings or datasheet for this device: fused kernels split evenly"
    return out


def record_compiled_steps(device: torch.device, hooks: ProfilerHooks | None, *, quick: bool = False,
                          progress: Progress | None = None, budget_s: float = RECORD_BUDGET_S,
                          ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(compiled, notes): "train:bf16", then "forward:bf16" when not `quick` and the train
    recording took no more than `budget_s`."""
    if hooks is None:
        return {}, ["compiled recordings left out: calibrate() was given no profiler hooks "
                    "(gptperf.profiling.hooks.profiler_hooks())"]
    config = record_config()
    kinds = RECORD_KINDS[quick]
    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    spent = 0.0
    for done, kind in enumerate(kinds):
        if progress:
            progress("compiled", done, len(kinds))
        if spent > budget_s:
            notes.append(f"compiled recording of {kind} left out: the recordings took {spent:.0f} s "
                         f"of the {budget_s:.0f} s allowed")
            continue
        start = time.perf_counter()
        out[f"{kind}:{COMPILED_DTYPE}"] = record_compiled(config, record_workload(kind), device,
                                                          hooks)
        spent += time.perf_counter() - start
    if progress:
        progress("compiled", len(kinds), len(kinds))
    return out, notes


# ----------------------------------------------------------------------------------------------
# The calibration


def default_dtypes(device: torch.device) -> tuple[str, ...]:
    return DEFAULT_DTYPES["cuda" if device.type == "cuda" else "cpu"]


def _check_dtypes(dtypes: Iterable[str], device: torch.device) -> tuple[str, ...]:
    out = tuple(check_dtype(d) for d in dtypes)
    if not out:
        raise UserError(f"calibrate needs at least one dtype; valid: {', '.join(default_dtypes(device))}")
    if device.type != "cuda" and "fp16" in out:
        raise UserError("dtype 'fp16' needs a GPU; on CPU calibrate fp32 (or bf16)")
    return out


def _busy_note() -> str | None:
    """A note when other work was competing for the CPU as the calibration began: its host costs
    (and a CPU's curves) come out inflated then, several times over with two threads per op."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load <= 0.5 * cores:
        return None
    return (f"load average {load:.1f} on {cores} cores as the calibration began: other work "
            "competed for the CPU, so times may be inflated; calibrate on an idle machine")


def _guarded(what: str, run: Callable[[], tuple[Any, list[str]]], empty: Any) -> tuple[Any, list[str]]:
    """A compiled section that fails (no Triton, no compiler) leaves the rest of the calibration
    standing; the note says why it is missing."""
    try:
        return run()
    except Exception as err:  # noqa: BLE001 — reported in the calibration's notes
        line = (str(err).strip().splitlines() or [""])[0][:200]
        return empty, [f"{what} failed and is left out ({type(err).__name__}: {line})"]


def calibrate(device: torch.device | str = "auto", quick: bool = False,
              progress: Progress | None = None, dtypes: Sequence[str] | None = None, *,
              hooks: ProfilerHooks | None = None, warm_compiles: bool = True) -> Calibration:
    """Measure this device's Calibration: kernel curves, host costs and (CUDA, with `hooks`)
    compiled recordings; see the module docstring. `dtypes` default: `DEFAULT_DTYPES`.
    `warm_compiles` (CUDA): compile the compiled jobs' steps ahead in a side process while the
    kernels are timed (`compile_warmup`)."""
    from gptperf.measure import calibrate_kernels

    device = as_device(device)
    dtypes = _check_dtypes(dtypes if dtypes is not None else default_dtypes(device), device)
    start = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes: list[str] = [QUICK_NOTE] if quick else []
    if device.type == "cpu":  # a CPU's curves and host costs are those of this many threads
        notes.append(f"CPU threads: {torch.get_num_threads()}")
    busy = _busy_note()
    if busy:
        notes.append(busy)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    first = take_probe(device)
    warmup = None  # the compiled jobs' compilation, in a side process while the kernels are timed
    if warm_compiles and device.type == "cuda" and COMPILED_DTYPE in dtypes:
        index = torch.cuda.current_device() if device.index is None else device.index
        warmup = CompileWarmup.start(index, quick, dtypes=dtypes)
    try:
        kernels = calibrate_kernels.measure_kernels(
            device, dtypes=dtypes, quick=quick, progress=progress,
            lock=warmup.lock if warmup is not None else NO_LOCK)
        notes += list(kernels.get("notes", []))
        if warmup is not None:  # nothing else shares the GPU or the host from here on
            notes.append(warmup.finish())
            warmup = None
        launch: dict[str, Any] = {"gap_s": 0.0}
        if device.type == "cuda":
            launch, gap_notes = _guarded("the launch gap", lambda: (measure_launch_gap(device), []),
                                         launch)
            notes += gap_notes + list(launch.get("notes", []))
            if "kernels" in launch:
                notes.append("launch gap: " + ", ".join(
                    f"{k} {v['stream_s'] * 1e6:.2f} µs from a stream, {v['graph_s'] * 1e6:.2f} in a graph"
                    for k, v in launch["kernels"].items()))
        kernels_s = time.perf_counter() - start
        measured_host = measure_host(device, dtypes, quick=quick, progress=progress)
        host, host_notes = measured_host.costs, measured_host.notes
        host_probe = {UNIT_KEYS[p]: unit for p, unit in measured_host.units.items()}
        overlap: dict[str, Any] = {}
        if device.type == "cuda":
            overlap, overlap_notes = _guarded(
                "the optimizer's overlap", lambda: _optimizer_overlap(device), {})
            host_notes += overlap_notes
        host_s = time.perf_counter() - start - kernels_s
        compiled: dict[str, dict[str, Any]] = {}
        if device.type == "cuda":
            compiled, rec_notes = _guarded(
                "the compiled recording",
                lambda: record_compiled_steps(device, hooks, quick=quick, progress=progress), {})
            host_notes += rec_notes
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        if warmup is not None:  # the kernels failed: the side process is not waited for
            warmup.finish(timeout_s=0.0)
    last = take_probe(device)
    seconds = time.perf_counter() - start
    notes += host_notes
    drift = drift_note(first, last, "the calibration's start")
    if drift:  # the curves measured early and late disagree as much: this calibration is unsure
        notes.append(drift)
    notes.append(time_note(kernels, kernels_s, host_s, seconds - kernels_s - host_s))
    configs = [host_config(n).name for n in HOST_LAYERS]
    if compiled:
        configs.append(record_config().name)
    if overlap:
        configs.append(overlap["config"])
    shapes = {**dict(kernels.get("shapes", {})), "configs": configs}
    return Calibration(
        device_name=device_name(device), device_type=device.type, torch_version=torch.__version__,
        created_at=created, seconds=seconds,
        matmul=dict(kernels.get("matmul", {})), attention=dict(kernels.get("attention", {})),
        vector=dict(kernels.get("vector", {})), optimizer=dict(kernels.get("optimizer", {})),
        gemv=dict(kernels.get("gemv", {})), host=host, compiled=compiled, shapes=shapes,
        notes=notes, probes={"start": first.to_dict(), "host": host_probe,
                             "host_jobs": measured_host.job_units, "end": last.to_dict()},
        launch_gap_s=float(launch["gap_s"]), matmul_bias=dict(kernels.get("matmul_bias", {})),
        matmul_offgrid=dict(kernels.get("matmul_offgrid", {})), optimizer_overlap=overlap,
    )


def time_note(kernels: dict[str, Any], kernels_s: float, host_s: float, compiled_s: float) -> str:
    """Where a calibration's time went: the kernels (each family's, and what the families waited
    for the side process's GPU work), the host costs, the compiled steps."""
    families = ", ".join(f"{k} {v:.1f}" for k, v in kernels.get("family_seconds", {}).items())
    waits = {k: v for k, v in kernels.get("family_lock_wait_seconds", {}).items() if v >= 0.05}
    waited = "; waiting for the side process's GPU work: " + ", ".join(
        f"{k} {v:.1f}" for k, v in waits.items()) if waits else ""
    inner = families + waited
    return (f"time: kernels {kernels_s:.1f} s" + (f" ({inner})" if inner else "")
            + f", host {host_s:.1f} s, compiled {compiled_s:.1f} s")


def _optimizer_overlap(device: torch.device) -> tuple[dict[str, Any], list[str]]:
    overlap = measure_optimizer_overlap(device)
    return overlap, [
        f"optimizer: {overlap['share']:.0%} of the fused AdamW phase's host time runs after its "
        f"kernels start (host {overlap['host_s'] * 1e3:.2f} ms, done {overlap['end_s'] * 1e3:.2f} ms "
        f"after it began, kernels {overlap['device_s'] * 1e3:.2f} ms; {overlap['tensors']} tensors, "
        f"{overlap['parameters'] / 1e6:.0f}M parameters)"]


def is_quick(calibration: Calibration) -> bool:
    """Whether `calibration` was a quick one (fewer points)."""
    return QUICK_NOTE in calibration.notes


def calibration_for(device: torch.device | str = "auto", *, required: bool = False) -> Calibration | None:
    """The cached calibration of this device, checked against this device and torch (a stale,
    foreign or broken one is a one-line UserError); None when there is none, unless `required`."""
    device = as_device(device)
    return load_calibration(device_name(device), torch.__version__, required=required)


def ensure_calibration(device: torch.device | str = "auto", *, quick: bool = False,
                       force: bool = False, progress: Progress | None = None,
                       hooks: ProfilerHooks | None = None) -> tuple[Calibration, bool, Path]:
    """(calibration, cached, path): the cached one when usable and younger than REUSE_DAYS (and
    not a quick one when a full one is asked for), unless `force`; else a new one, saved."""
    device = as_device(device)
    if not force:
        with contextlib.suppress(UserError):  # stale, foreign or broken: measured again
            cached = calibration_for(device)
            if (cached is not None and cached.age_days() < REUSE_DAYS
                    and (quick or not is_quick(cached))):
                from gptperf.perfmodel.calibration import calibration_path

                return cached, True, Path(calibration_path(cached.device_name))
    calibration = calibrate(device, quick=quick, progress=progress, hooks=hooks)
    return calibration, False, Path(save_calibration(calibration))
