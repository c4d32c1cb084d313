"""The calibration's compiled recordings: a compiled step of one calibration config profiled, and
every kernel attributed to (operation, phase), for `gptperf.measure.calibrate` to keep.

Compiled recordings (`Calibration.compiled["<kind>:<dtype>"]`, CUDA) profile a compiled step of
one calibration config and attribute every kernel to (operation, phase) with gptperf.profiling;
per "<component>:<phase>" they keep kernels and seconds by class (matmul, attention, other).
profiling times its steps through this package, so it cannot be imported here (sub-packages
never depend on each other both ways): the caller hands its functions in (`ProfilerHooks`,
`gptperf.profiling.hooks.profiler_hooks()`); without them the recordings are left out, noted.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from gptperf import names
from gptperf.checks import is_finite_number
from gptperf.envinfo import device_name
from gptperf.errors import UserError
from gptperf.measure.calibration_plan import COMPILED_DTYPE
from gptperf.measure.timer import Progress
from gptperf.model.config import GPTConfig, preset
from gptperf.perfmodel import predict
from gptperf.perfmodel.calibration import compiled_key, compiled_op_key, split_compiled_op_key
from gptperf.perfmodel.devices import resolve_hardware
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.quiet import profiler_quiet
from gptperf.runtime import synchronize

# The compiled recording's model and steps: not a validation shape (see shapes["configs"]).
RECORD_SHAPE: dict[str, int] = {"n_layer": 2, "n_embd": 512, "n_head": 8, "vocab_size": 8192,
                                "block_size": 512}
# large enough that inductor's kernels stream memory (their fixed cost small beside it), so that
# scaling them by bytes to other shapes holds
RECORD_BATCH, RECORD_SEQ = 8, 512
RECORD_STEPS = 3  # profiled (active) steps
# the workloads the compiled recordings profile, in this order, by quick
RECORD_KINDS: dict[bool, tuple[str, ...]] = {False: ("train", "forward"), True: ("train",)}

# Seconds allowed for the recordings on CUDA (the whole calibration: <= 120 s on an H200): a later
# one runs while those before it are within the budget, not judged by the one before: the forward
# recording compiles one graph and no backward (on the H200 the train recording took 9-12 s, both
# 11-13 s) and a compiled forward predicted without it measured 0.57-0.87 of its prediction. The
# notes say what was left out.
RECORD_BUDGET_S = 20.0

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
            seconds[compiled_op_key(names.component_of(name), phase)][cls] += s * weight
        name, phase, _ = max(w.parts, key=lambda p: p[2])
        kernels[compiled_op_key(names.component_of(name), phase)] += 1

    def per(key: str) -> int:
        return steps * (n_layer if split_compiled_op_key(key)[0] in names.LAYER_COMPONENTS else 1)

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
    return x if is_finite_number(x) else None


def _shares(config: GPTConfig, workload: Workload, plan: ExecutionPlan,
            device: torch.device) -> dict[tuple[str, str], float] | None:
    """Predicted seconds per (name, phase) on this device's ceilings or datasheet, which split a
    fused kernel between its operations (None, an even split, where neither is known)."""
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
    from gptperf.steps.build import build_step  # deferred: tests patch it

    plan = ExecutionPlan.default(workload.kind, device.type, compile=True, attention=config.attention,
                                 dtype=workload.dtype)
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
        out[compiled_key(kind, COMPILED_DTYPE)] = record_compiled(config, record_workload(kind), device,
                                                          hooks)
        spent += time.perf_counter() - start
    if progress:
        progress("compiled", len(kinds), len(kinds))
    return out, notes
