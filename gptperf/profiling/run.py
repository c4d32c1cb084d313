"""Run torch.profiler over a workload, attribute its trace, and put the prediction beside it.

`profile_workload(...)` is the library entry point (the `gptperf profile` command and the report
call it); `analyse_trace_file(...)` re-analyses a trace recorded before. Both return a
`ProfileResult` and replace one output folder whole (gptperf.atomic.atomic_dir), which must be
new, empty or an earlier profile (`check_profile_dir`):

    trace.json            Chrome/Perfetto trace of the active steps (open in ui.perfetto.dev), with
                          what was profiled (workload, model, plan, device) under "gptperf"
    trace.gptperf.json    the same, with gptperf.op / phase / predicted FLOPs, bytes, time in
                          each attributed kernel's args
    tensorboard/          TensorBoard trace directory (tensorboard_trace_handler)
    ops.csv components.csv layers.csv   the comparison tables (with the calibrated expected
                          time beside the roofline one when this device has a calibration)
    profile.json          everything above as one document, with the environment
    roofline.png          predicted and measured point of each component on the roofline

A re-analysis takes the workload from the trace's record (or the profile.json beside it); flags
that contradict it are refused. A trace without one (a foreign torch.profiler trace) is analysed
as the flags say, and the result says so (workload "source": "flags").
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import shutil
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf import names
from gptperf.atomic import atomic_dir, write_text
from gptperf.envinfo import device_name as torch_device_name
from gptperf.envinfo import environment
from gptperf.errors import UserError
from gptperf.format import to_json
from gptperf.hostmem import minor_faults
from gptperf.measure.bench import (
    calibrated_expected,
    default_counts,
    device_calibration,
    host_charge,
)
from gptperf.measure.probe import machine_against_calibration
from gptperf.measure.timer import time_fn
from gptperf.model.config import GPTConfig
from gptperf.perfmodel import Workload
from gptperf.perfmodel.devices import resolve_hardware
from gptperf.plan import ExecutionPlan
from gptperf.plotting.profile import plot_profile_roofline
from gptperf.profiling.compare import (
    Comparison,
    Predicted,
    compare,
    median_abs_error,
    predicted_by_key,
    rows_csv,
)
from gptperf.profiling.provenance import inductor_provenance
from gptperf.profiling.recorded import (
    PROFILE_KINDS,
    SCHEMA,
    SOURCE_RUN,
    ProfiledWorkload,
    check_profile_dir,
    check_trace_folder,
    recorded_workload,
    trace_in_folder,
    trace_workload,
    workload_doc,
)
from gptperf.profiling.trace import (
    METHOD_PROVENANCE,
    METHOD_SHARE,
    PROFILED_KEY,
    RECORD_KEY,
    Attribution,
    Provenance,
    augment,
    copy_with_record,
    load_trace,
)
from gptperf.profiling.trace import attribute as attribute_trace
from gptperf.quiet import profiler_quiet
from gptperf.schema import check_schema
from gptperf.units import MIB

if TYPE_CHECKING:
    from gptperf.perfmodel.calibration import Calibration
    from gptperf.perfmodel.hardware import Hardware

_COMPILE_NOTE = (
    "compiled kernels: inductor provenance (each generated kernel or extern call -> the post-grad "
    "FX nodes it computes -> the operation name the model's label annotated them with while "
    "compiling; backward nodes carry their forward node's annotation); a kernel fusing several "
    "operations is split between them by predicted time; compiled work no provenance explains is "
    f"split over the phase's operations by predicted time (method '{METHOD_SHARE}', counted apart "
    "in exact coverage)"
)
_EAGER_NOTE = (
    "kernel -> launching runtime call (correlation) -> innermost CPU operator -> enclosing "
    "record_function range (forward, optimizer); backward: autograd node -> forward operator with "
    "the same sequence number -> its range; AccumulateGrad -> the backward node just before it"
)


# A profiled CPU step that page-faults more than this (4 MiB of fresh 4 KiB pages) gets a note.
NOTED_FAULTS = 1024


def fault_note(faults_per_step: float, threshold: float = NOTED_FAULTS) -> str | None:
    """A note when the profiled CPU steps page-faulted more than `threshold` times each."""
    if faults_per_step <= threshold:
        return None
    fresh_mib = faults_per_step * mmap.PAGESIZE / MIB
    return (f"each profiled step took {faults_per_step:.0f} page faults ({fresh_mib:.0f} MiB of "
            "fresh pages): torch.profiler's own allocations split the step's freed blocks "
            "and the heap grows, so operators that allocate large tensors (fills, adds) are timed "
            "with first touches an unprofiled step does not pay (gptperf/hostmem.py)")


@dataclass
class ProfileResult:
    """What `gptperf profile` measured and predicted, and where it wrote it."""

    workload: dict[str, Any]
    device: str
    hardware: str  # e.g. 'measured: nvidia-h100-80gb-hbm3' or 'nominal: cpu'
    unit: str  # 'kernel' or 'operator'
    coverage: float
    exact_coverage: float
    busy: float
    by_method: dict[str, float]
    unattributed_top: list[tuple[str, float]]
    step_wall_s: list[float]
    comparison: Comparison
    overhead: dict[str, Any] | None
    paths: dict[str, str]
    method: str
    environment: dict[str, Any] = field(default_factory=dict)
    prediction_available: bool = True
    provenance: dict[str, int] | None = None  # compiled kernels / extern calls recorded (--compile)
    # the calibrated expected time of the step (label, composition, step/device/host seconds,
    # the measured step beside it); None without a usable calibration of the device
    expected: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # CPU: the median active step's page faults (first touches of fresh pages among them)
    page_faults_per_step: float | None = None

    @property
    def median_abs_error(self) -> float:
        """Median |measured / predicted - 1| over components taking >= 2% of the step."""
        return median_abs_error(self.comparison.components)

    @property
    def median_abs_error_expected(self) -> float:
        """Median |measured / calibrated expected - 1| over components taking >= 2% of the step."""
        return median_abs_error(self.comparison.components, expected=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "workload": self.workload,
            "device": self.device,
            "hardware": self.hardware,
            "unit": self.unit,
            "coverage": self.coverage,
            "exact_coverage": self.exact_coverage,
            "busy": self.busy,
            "attributed_over_wall": self.coverage * self.busy,
            "by_method_s": self.by_method,
            "unattributed_top": [{"kernel": k, "seconds_per_step": s} for k, s in self.unattributed_top],
            "step_wall_s": self.step_wall_s,
            "median_abs_error_components": self.median_abs_error,
            "median_abs_error_components_expected": self.median_abs_error_expected,
            "expected": self.expected,
            "notes": list(self.notes),
            "page_faults_per_step": self.page_faults_per_step,
            "overhead": self.overhead,
            "paths": self.paths,
            "attribution_method": self.method,
            "prediction_available": self.prediction_available,
            "provenance_recorded": self.provenance,
            "environment": self.environment,
            **self.comparison.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileResult:
        """The inverse of `to_dict` (a UserError for another schema)."""
        check_schema(d, SCHEMA)
        return cls(
            workload=d["workload"], device=d["device"], hardware=d["hardware"], unit=d["unit"],
            coverage=d["coverage"], exact_coverage=d["exact_coverage"], busy=d["busy"],
            by_method=dict(d["by_method_s"]),
            unattributed_top=[(u["kernel"], u["seconds_per_step"]) for u in d["unattributed_top"]],
            step_wall_s=list(d["step_wall_s"]), comparison=Comparison.from_dict(d),
            overhead=d["overhead"], paths=dict(d["paths"]), method=d["attribution_method"],
            environment=dict(d["environment"]), prediction_available=d["prediction_available"],
            provenance=d["provenance_recorded"], expected=d.get("expected"),
            notes=list(d.get("notes", [])), page_faults_per_step=d.get("page_faults_per_step"),
        )


# ----------------------------------------------------------------------------------------------
# Prediction


def predict_ops(config: GPTConfig, kind: str, batch: int, seq: int, dtype: str, hw: Hardware,
                plan: ExecutionPlan | None = None) -> tuple[dict[tuple[str, str], Predicted], bool]:
    """Predicted figures per (name, phase) of the step run under `plan` (None: eager); ({}, False)
    if the performance model is missing."""
    try:
        from gptperf.perfmodel import Workload, predict
    except ImportError:
        return {}, False
    prediction = predict(config, Workload(kind, batch, seq, dtype), hw, plan)
    return predicted_by_key(prediction.ops), True


def expected_ops(config: GPTConfig, workload: Workload, plan: ExecutionPlan | None, device: Any
                 ) -> tuple[dict[tuple[str, str], float], dict[str, Any] | None, list[str], Any]:
    """The calibrated expected device seconds per (name, phase) of the step run under `plan` on
    `device`, a summary of the step (`expected` of the profile document), notes, and the
    calibration they came from; ({}, None, notes, None) without a usable calibration of the
    device."""
    calibration, why = device_calibration(device)
    if calibration is None:
        return {}, None, [f"no calibrated expected time: {why}"] if why else [], None
    e, why = calibrated_expected(config, workload, plan, calibration, device)
    if e is None:
        return {}, None, [f"no calibrated expected time: {why}"], None
    by_key: dict[tuple[str, str], float] = {}
    for o in e.ops:
        by_key[(o.name, o.phase)] = by_key.get((o.name, o.phase), 0.0) + o.device_s
    summary = {"source": e.source, "prediction": "calibrated expected time", "label": e.label,
               "composition": e.composition, "plan": e.plan.to_dict(),
               "step_time_s": e.step_time_s, "device_s": e.device_s, "host_s": e.host_s,
               **host_charge(e, calibration), "notes": list(e.notes)}
    return by_key, summary, [], calibration


def _measured_step(overhead: dict[str, Any] | None, step_wall_s: list[float]) -> tuple[float, str]:
    """The measured step time the expected one is set against: the step timed without the
    profiler when it was, else the median profiled step."""
    if overhead and overhead.get("step_s_without"):
        return float(overhead["step_s_without"]), "timed without the profiler (median)"
    if step_wall_s:
        return statistics.median(step_wall_s), "profiled steps (median; profiler clock)"
    return math.nan, "not measured"


# ----------------------------------------------------------------------------------------------
# Profiling


def _measure_overhead(runner: Any, device: Any, kind: str, repeats: int) -> dict[str, Any]:
    """Step time with and without the profiler recording (same activities and options). The step
    without it is what the expected time is set against: timed as `bench` times a `kind` step
    (its warm-up and at least its repeats), where the few steps after the build still ran up to
    2.3x slower on a CPU (a decode of 0.48 ms: 1.22, 1.19, 0.84, 0.60, 0.57 ms)."""
    from torch.profiler import profile  # deferred: loads torch

    warmup, bench_repeats = default_counts(kind)
    plain = time_fn(runner.step, warmup=warmup, repeats=max(repeats, bench_repeats), device=device)
    with profiler_quiet(), profile(activities=_activities(device), record_shapes=True,
                                   profile_memory=True):
        profiled = time_fn(runner.step, warmup=1, repeats=repeats, device=device)
    return {
        "step_s_without": plain.median,
        "step_s_with": profiled.median,
        "overhead": profiled.median / plain.median - 1 if plain.median > 0 else math.nan,
        "repeats": repeats,
        "clock": plain.clock,
        "without": plain.to_dict(),
        "with": profiled.to_dict(),
    }


def _activities(device: Any) -> list[Any]:
    from torch.profiler import ProfilerActivity  # deferred: loads torch

    acts = [ProfilerActivity.CPU]
    if getattr(device, "type", str(device)) == "cuda":
        acts.append(ProfilerActivity.CUDA)
    return acts


def profile_workload(
    config: GPTConfig,
    kind: str = "train",
    batch: int = 8,
    seq: int = 256,
    dtype: str = "fp32",
    device: Any = "cpu",
    compile: bool = False,
    hardware: str | None = None,
    out_dir: str | Path = "profile",
    *,
    wait: int = 1,
    warmup: int = 2,
    active: int = 3,
    overhead: bool = True,
    overhead_repeats: int = 5,
    plot: bool = True,
    seed: int = 0,
    plan: ExecutionPlan | None = None,
) -> ProfileResult:
    """Profile `active` steps of a workload with torch.profiler, attribute, compare, write `out_dir`.

    The step is `gptperf.steps.build_step`'s under `plan` (an ExecutionPlan; None: the default
    for this device with `compile`), the one `bench` times; its prediction is made for that plan,
    and the plan is recorded under the document's workload."""
    import torch  # deferred: loads torch

    _check_profile_request(kind, wait, warmup, active)
    out = check_profile_dir(out_dir)
    check_trace_folder(out_dir)
    device = torch.device(device)
    workload = Workload(kind, batch, seq, dtype)
    plan = _profile_plan(config, workload, device, compile, plan)
    dev_name = torch_device_name(device)
    hw = resolve_hardware(hardware or None, dev_name, device.type)
    runner, prov = _build_warm_step(config, workload, plan, device, seed)
    predicted, available = predict_ops(config, kind, batch, seq, dtype, hw, runner.plan)
    calibrated = _Calibrated(*expected_ops(config, workload, runner.plan, device))
    over = _measure_overhead(runner, device, kind, overhead_repeats) if overhead else None
    profiled = {**workload_doc(config, kind, batch, seq, dtype, plan.compiled, SOURCE_RUN),
                "plan": runner.plan.to_dict()}
    device_label = f"{device.type}: {dev_name}"
    record = ProfiledWorkload(profiled, device_label, "the trace").to_dict()

    with atomic_dir(out) as tmp:
        faults = _record_trace(runner, device, tmp, record, wait=wait, warmup=warmup,
                               active=active)
        doc = load_trace(tmp / "trace.json")
        result = _analyse(
            doc, str(out / "trace.json"), tmp, final=out, predicted=predicted, available=available,
            provenance=prov, hw=hw, workload=profiled,
            device_label=device_label, overhead=over, plot=plot,
            environment=environment(device), expected=calibrated.by_key,
        )
        result.notes.extend(calibrated.notes)
        if faults:
            result.page_faults_per_step = statistics.median(faults)
            result.notes.extend(filter(None, [fault_note(result.page_faults_per_step)]))
        if calibrated.step is not None:
            roofline = sum(p.time_s for p in predicted.values()) if available else None
            _set_expected_step(result, calibrated, device, over, roofline)
        result.paths["tensorboard"] = str(out / "tensorboard")
        if prov is not None:
            result.provenance = {"kernels": sum(len(v) for v in prov.kernels.values()),
                                 "extern_calls": sum(len(v) for v in prov.externs.values())}
        write_text(tmp / "profile.json", _json(result.to_dict()))
    return result


def _check_profile_request(kind: str, wait: int, warmup: int, active: int) -> None:
    """Refuse a workload profile does not run, or a profiler schedule that records nothing."""
    if kind not in PROFILE_KINDS:
        raise UserError(f"unknown workload {kind!r} for profile; valid: {', '.join(PROFILE_KINDS)}")
    if wait < 0 or warmup < 0 or active < 1:
        raise UserError(f"profiler schedule needs wait >= 0, warmup >= 0, active >= 1; got "
                        f"{wait}, {warmup}, {active}")


def _profile_plan(config: GPTConfig, workload: Workload, device: Any, compile: bool,
                  plan: ExecutionPlan | None) -> ExecutionPlan:
    """The plan profiled (`plan`, else this device's default), checked runnable and
    profileable (no CUDA graph)."""
    from gptperf.steps.build import check_step  # deferred: loads torch

    if plan is None:
        plan = ExecutionPlan.default(workload.kind, device.type, compile=compile,
                                     attention=config.attention, dtype=workload.dtype)
    if plan.cuda_graph:
        raise UserError("profile runs eager or compiled steps: a CUDA graph replays its kernels "
                        "without the operators that launched them; use mode 'compiled'")
    check_step(config, workload, plan, device)
    return plan


def _build_warm_step(config: GPTConfig, workload: Workload, plan: ExecutionPlan, device: Any,
                     seed: int) -> tuple[Any, Provenance | None]:
    """Build the step and run it until compilation (and autotuning) is done, so no timing
    includes it; with the inductor provenance recorded while compiling (None: eager)."""
    from gptperf.runtime import synchronize  # deferred: loads torch
    from gptperf.steps.build import build_step  # deferred: loads torch

    compile = plan.compiled
    prov_ctx = inductor_provenance(config.n_layer) if compile else contextlib.nullcontext(None)
    with prov_ctx as prov:
        runner = build_step(config, workload, plan, device, seed=seed)
        # Compilation (and autotuning) happens in the first calls: keep it out of every timing.
        for _ in range(2 if compile else 1):
            runner.step()
        synchronize(device)
    return runner, prov


@dataclass
class _Calibrated:
    """`expected_ops`'s answer: the calibrated expected time per op, the step's summary, notes,
    and the calibration they came from."""

    by_key: dict[tuple[str, str], float]
    step: dict[str, Any] | None
    notes: list[str]
    calibration: Calibration | None


def _record_trace(runner: Any, device: Any, tmp: Path, record: dict[str, Any], *, wait: int,
                  warmup: int, active: int) -> list[int]:
    """Profile the steps into `tmp` (tensorboard/ and trace.json, carrying `record`); the page
    faults of each active CPU step (none on a GPU)."""
    from torch.profiler import profile, schedule, tensorboard_trace_handler  # deferred: loads torch

    from gptperf.runtime import synchronize  # deferred: loads torch

    tb_dir = tmp / "tensorboard"
    tb_handler = tensorboard_trace_handler(str(tb_dir), worker_name="gptperf")

    def on_ready(prof: Any) -> None:
        tb_handler(prof)

    with profiler_quiet(), profile(
        activities=_activities(device),
        schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
        on_trace_ready=on_ready,
        record_shapes=True,
        profile_memory=True,
    ) as prof:
        # each active CPU step's page faults (its own, not the profiler's step); a GPU's
        # kernels do not wait on host pages, so no system call is added to its steps
        count_faults = minor_faults if device.type == "cpu" else lambda: None
        faults = []
        for i in range(wait + warmup + active):
            before = count_faults()
            runner.step()
            after = count_faults()
            if i >= wait + warmup and before is not None and after is not None:
                faults.append(after - before)
            prof.step()
    synchronize(device)
    written = sorted(tb_dir.glob("*.pt.trace.json*"))
    if not written:
        raise RuntimeError("torch.profiler wrote no trace")
    # the trace says what it was recorded with, so a re-analysis needs no flags (and refuses
    # contradicting ones); the augmented trace keeps it (augment only adds to "gptperf")
    copy_with_record(written[-1], tmp / "trace.json", record)
    return faults


def _set_expected_step(result: ProfileResult, calibrated: _Calibrated, device: Any,
                       overhead: dict[str, Any] | None, roofline: float | None) -> None:
    """Set the calibrated expected step beside the measured one (and the roofline prediction) as
    `result.expected`, noting a machine drifted from its calibration."""
    step = calibrated.step
    assert step is not None
    measured, how = _measured_step(overhead, result.step_wall_s)
    # after the profiled steps: its tensors take no memory from them
    slowdown, drift = machine_against_calibration(calibrated.calibration, device)
    result.notes.extend(filter(None, [drift]))
    result.expected = {
        **step, "measured_step_time_s": measured, "measured_step_source": how,
        "measured_over_expected": (measured / step["step_time_s"]
                                   if step["step_time_s"] > 0 else math.nan),
        "roofline_step_time_s": roofline,
        "machine_vs_calibration": slowdown,
    }


# What a re-analysis writes; the rest of a profile folder it re-analyses in place (the recorded
# trace.json, tensorboard/) is kept.
ANALYSIS_FILES = ("ops.csv", "components.csv", "layers.csv", "trace.gptperf.json", "roofline.png",
                  "profile.json")


def analyse_trace_file(
    trace: str | Path,
    config: GPTConfig | None = None,
    kind: str | None = None,
    *,
    batch: int | None = None,
    seq: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    model: Mapping[str, Any] | None = None,
    hardware: str | None = None,
    out_dir: str | Path = "profile",
    device_name: str | None = None,
    plot: bool = True,
) -> ProfileResult:
    """Attribute an existing torch.profiler JSON trace and compare it with the prediction; the
    tables, pictures, augmented trace and profile.json replace `out_dir` whole (as a profile
    does: new, empty or an earlier profile folder). When the trace lies in `out_dir` (re-analysing
    a profile in place) the folder's other files, the trace among them, are kept.

    The workload is the trace's record (`recorded_workload`) where it has one: `config`, `kind`,
    `batch`, `seq`, `dtype`, `device` (type) and `model` (model flags, see `trace_workload`) left
    None take its values, and given ones must match it. Without a record they say what the trace
    is (defaults: tiny, train, 8, min(block, 256), fp32) and the result's workload says
    "source": "flags"."""
    in_place = trace_in_folder(trace, out_dir)
    out = check_profile_dir(out_dir, keeps_others=in_place)
    trace = Path(trace)
    doc = load_trace(trace)
    recorded = recorded_workload(doc, trace)
    tw = trace_workload(trace, doc, recorded, model=model, config=config, kind=kind, batch=batch,
                        seq=seq, dtype=dtype, device=device, device_name=device_name)
    hw = resolve_hardware(hardware or None, tw.device_name, tw.device_type)
    plan = None
    if tw.plan is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError, UserError):
            plan = ExecutionPlan.from_dict(tw.plan)  # an older plan: predicted as eager
    predicted, available = predict_ops(tw.config, tw.kind, tw.batch, tw.seq, tw.dtype, hw, plan)
    if recorded is not None:  # the augmented trace carries the record on, wherever it was read
        ours = doc.get(RECORD_KEY)
        doc[RECORD_KEY] = {**(ours if isinstance(ours, dict) else {}),
                           PROFILED_KEY: ProfiledWorkload(tw.to_dict(), tw.device, "").to_dict()}
    with atomic_dir(out) as tmp:
        result = _analyse(
            doc, str(trace), tmp, final=out, predicted=predicted, available=available,
            provenance=None, hw=hw, workload=tw.to_dict(), device_label=tw.device, overhead=None,
            plot=plot, environment={},
        )
        write_text(tmp / "profile.json", _json(result.to_dict()))
        if in_place:
            _keep_others(out, tmp)
    return result


def _keep_others(old: Path, new: Path) -> None:
    """Carry the files of profile folder `old` that a re-analysis does not rewrite into `new`:
    hard links where the filesystem allows (a GPU trace is large), else copies."""
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for entry in old.iterdir():
        dst = new / entry.name
        if entry.name in ANALYSIS_FILES or dst.exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dst, symlinks=True, copy_function=link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), dst)
        else:
            link_or_copy(str(entry), str(dst))


def _json(doc: Any) -> str:
    return to_json(doc) + "\n"


def _analyse(
    doc: dict[str, Any], trace_path: str, tmp: Path, *, final: Path,
    predicted: dict[tuple[str, str], Predicted], available: bool, provenance: Provenance | None,
    hw: Hardware, workload: dict[str, Any], device_label: str, overhead: dict[str, Any] | None,
    plot: bool, environment: dict[str, Any], expected: dict[tuple[str, str], float] | None = None,
) -> ProfileResult:
    shares = {k: p.time_s for k, p in predicted.items()}
    attribution: Attribution = attribute_trace(doc, path=trace_path, shares=shares,
                                               provenance=provenance)
    bad = sorted({n for w in attribution.work for n, _, _ in w.parts if not names.is_operation_name(n)})
    if bad:  # the contract is the one join key; a foreign name would silently drop out
        raise RuntimeError(f"attribution produced names outside the contract: {bad}")
    comparison = compare(attribution, predicted, expected)
    paths: dict[str, str] = {"trace": trace_path}
    for what, rows in (("ops", comparison.ops), ("components", comparison.components),
                       ("layers", comparison.layers)):
        write_text(tmp / f"{what}.csv", rows_csv(rows))
        paths[what] = str(final / f"{what}.csv")
    flat = {k: (p.flops, p.bytes, p.time_s) for k, p in predicted.items()}
    augmented = augment(doc, attribution, flat)
    write_text(tmp / "trace.gptperf.json", json.dumps(augmented))
    paths["augmented_trace"] = str(final / "trace.gptperf.json")
    if plot and available:
        plot_profile_roofline(tmp / "roofline.png", comparison.components, hw, workload["dtype"],
                              title=f"{workload['kind']} {workload['config'].get('name') or ''} "
                                    f"{workload['dtype']} on {device_label}")
        paths["roofline"] = str(final / "roofline.png")
    methods = attribution.by_method()
    method = _EAGER_NOTE
    if attribution.compiled:
        method = _EAGER_NOTE + "; " + _COMPILE_NOTE
    return ProfileResult(
        workload=workload, device=device_label, hardware=hw.label, unit=attribution.unit,
        coverage=attribution.coverage, exact_coverage=attribution.exact_coverage,
        busy=attribution.busy, by_method=methods,
        unattributed_top=attribution.unattributed_top(), step_wall_s=attribution.step_wall_s,
        comparison=comparison, overhead=overhead, paths=paths, method=method,
        environment=environment, prediction_available=available,
    )


__all__ = ["ProfileResult", "profile_workload", "analyse_trace_file",
           "inductor_provenance", "METHOD_PROVENANCE"]
