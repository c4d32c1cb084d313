"""`run_bench`: time one workload step and report the lecture's metrics beside the model's prediction.

Wall time, time per batch (forward / backward / optimizer apart for training), throughput,
achieved FLOP/s and MFU (against the measured ceiling and the datasheet peak, each named), peak
memory beside the performance model's breakdown, utilization sampled during the timed steps,
and two predictions of the step time and tokens/s beside the measured ones, each labelled: the
roofline bound ("what the hardware allows", `perfmodel.predict`, one entry per machine) and,
when `gptperf calibrate` left a usable calibration of this device, the calibrated expected time
("what this machine will take", `perfmodel.expected`).

FLOPs come from the performance model for the same workload: "model FLOPs" are its exact count
of forward + backward work (causal attention at the causal count, softmax, norms and elementwise
included, no optimizer), the numerator of MFU; "all FLOPs" add the AdamW step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gptperf.envinfo import device_name as name_of
from gptperf.envinfo import environment
from gptperf.errors import UserError
from gptperf.format import si
from gptperf.measure.metrics import MemoryPeak, PeakMemoryMeter, Utilization, UtilizationSampler
from gptperf.measure.paired import host_paired_ratio
from gptperf.measure.probe import (
    HostSampler,
    fork_op_s,
    fork_speed,
    host_speeds,
    in_spell,
    machine_against_calibration,
    probe_for,
    step_sampler,
)
from gptperf.measure.timer import MAX_STEPS, PhaseTiming, Progress, time_phases
from gptperf.model.config import GPTConfig, preset_of
from gptperf.perfmodel import (
    Workload,
    count_parameters,
    datasheet_hardware_for,
    predict,
    resolve_hardware,
)
from gptperf.perfmodel.expected import expected
from gptperf.perfmodel.hardware import load_measured_hardware
from gptperf.plan import ExecutionPlan
from gptperf.schema import check_schema

if TYPE_CHECKING:
    import torch

DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 10
DECODE_WARMUP = 5  # decode steps are short: more of them give a steadier median
DECODE_REPEATS = 50
# Seconds the timed steps span at least, per device type, when the user names no --repeats (and
# `validate`'s cases): on the H200 machine the host ran in slow spells of 30-540 ms a quarter of
# the time (`measure.probe.HOST_WINDOW_S`), so the median of ten 10 ms steps read either state,
# and an eager bench of 10 steps (0.6 s) read the host 1.6x faster than its samples said.
MIN_WINDOW_S: dict[str, float] = {"cuda": 1.0, "cpu": 0.0}
MAX_TIMED = 500  # the most timed steps a window asks for
MFU_CONVENTION = "gptperf"
SCHEMA = "gptperf.bench/1"
ROOFLINE = "roofline bound"  # what the hardware allows: min(π, β·AI) per operation
CALIBRATED = "calibrated expected time"  # what this machine will take: measured kernel curves
TINY_SEQ = 64  # the CPU anchor's shape (nanoGPT, 4 layers, C=128, T=64, B=12)
# the paired measured/predicted is noted beside the plain one when they differ by more than this
PAIRED_NOTE_ABOVE = 0.02


def default_seq(config: Any) -> int:
    """T when the user gives none: 64 for the tiny preset (fast on a CPU), else the block size."""
    return min(TINY_SEQ, config.block_size) if preset_of(config) == "tiny" else config.block_size


def default_counts(kind: str) -> tuple[int, int]:
    """(warmup, repeats) when the user gives none."""
    if kind.startswith("decode"):
        return DECODE_WARMUP, DECODE_REPEATS
    return DEFAULT_WARMUP, DEFAULT_REPEATS


def window_repeats(repeats: int, device_type: str, step_s: float | None) -> int:
    """`repeats` timed steps, or enough to span MIN_WINDOW_S of `device_type` at the estimated
    step time `step_s` (None or not a positive time: unknown), at most MAX_TIMED."""
    window = MIN_WINDOW_S.get(device_type, 0.0)
    if window <= 0 or step_s is None or not (math.isfinite(step_s) and step_s > 0):
        return repeats
    return max(repeats, min(MAX_TIMED, math.ceil(window / step_s)))


@dataclass(frozen=True)
class StepPrediction:
    """One prediction of the step beside its measurement, one of the two kinds (`prediction`):
    the roofline bound on one machine (with its `predicted_mfu`), or the calibrated expected time
    (with how it composed and how it charged the host, `host_charge`'s fields)."""

    prediction: str  # ROOFLINE or CALIBRATED
    hardware: str  # the machine's label, or the calibration's
    source: str  # the machine's source (measured, datasheet, nominal, ...) or "calibrated"
    step_time_s: float
    tokens_per_s: float
    measured_step_time_s: float
    measured_over_predicted: float
    predicted_mfu: float | None = None  # roofline bound only
    device_s: float | None = None  # calibrated only, from here on
    host_s: float | None = None
    composition: str | None = None
    host_speed: float | None = None
    phase_speeds: dict[str, float] = field(default_factory=dict)
    host_charged: dict[str, float] | None = None  # None: an entry written before it was kept
    step_time_s_as_calibrated: float | None = None
    machine_vs_calibration: dict[str, float] | None = None
    parallel_speed: float | None = None  # a CPU's parallel kernels as charged (None: as calibrated)

    @property
    def is_calibrated(self) -> bool:
        return self.prediction == CALIBRATED

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "prediction": self.prediction, "hardware": self.hardware, "source": self.source,
            "step_time_s": self.step_time_s, "tokens_per_s": self.tokens_per_s,
            "measured_step_time_s": self.measured_step_time_s,
            "measured_over_predicted": self.measured_over_predicted,
        }
        if not self.is_calibrated:
            d["predicted_mfu"] = self.predicted_mfu
            return d
        d.update({
            "device_s": self.device_s, "host_s": self.host_s, "composition": self.composition,
            "host_speed": self.host_speed, "phase_speeds": dict(self.phase_speeds),
            "host_charged": None if self.host_charged is None else dict(self.host_charged),
            "step_time_s_as_calibrated": self.step_time_s_as_calibrated,
            "machine_vs_calibration": (None if self.machine_vs_calibration is None
                                       else dict(self.machine_vs_calibration)),
            "parallel_speed": self.parallel_speed,
        })
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepPrediction:
        """The inverse of `to_dict`; an entry written before the kinds were labelled is told by
        its source, and one written before a calibrated field was kept has it None."""
        kind = d.get("prediction") or (CALIBRATED if d["source"] == "calibrated" else ROOFLINE)
        charged = d.get("host_charged")
        vs = d.get("machine_vs_calibration")
        return cls(
            prediction=kind, hardware=d["hardware"], source=d["source"],
            step_time_s=d["step_time_s"], tokens_per_s=d["tokens_per_s"],
            measured_step_time_s=d["measured_step_time_s"],
            measured_over_predicted=d["measured_over_predicted"],
            predicted_mfu=d.get("predicted_mfu"), device_s=d.get("device_s"),
            host_s=d.get("host_s"), composition=d.get("composition"),
            host_speed=d.get("host_speed"), phase_speeds=dict(d.get("phase_speeds") or {}),
            host_charged=None if charged is None else dict(charged),
            step_time_s_as_calibrated=d.get("step_time_s_as_calibrated"),
            machine_vs_calibration=None if vs is None else dict(vs),
            parallel_speed=d.get("parallel_speed"),
        )


@dataclass(frozen=True)
class MfuEntry:
    """The measured step's MFU against one machine's peak (`against`: "measured" ceilings or the
    "datasheet" entry), in the MFU_CONVENTION's model FLOPs."""

    against: str
    hardware: str
    dtype: str
    peak_flops_per_s: float
    mfu: float
    label: str
    convention: str = MFU_CONVENTION

    def to_dict(self) -> dict[str, Any]:
        return {"against": self.against, "hardware": self.hardware, "dtype": self.dtype,
                "peak_flops_per_s": self.peak_flops_per_s, "mfu": self.mfu, "label": self.label,
                "convention": self.convention}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MfuEntry:
        return cls(d["against"], d["hardware"], d["dtype"], d["peak_flops_per_s"], d["mfu"],
                   d["label"], d.get("convention", MFU_CONVENTION))


@dataclass
class BenchResult:
    """Everything one benchmark measured and predicted; `to_dict()` is the JSON document."""

    kind: str
    config: Any  # GPTConfig
    batch: int
    seq: int
    dtype: str
    compile: bool
    device: str
    device_name: str
    threads: int
    timing: PhaseTiming
    wall_time_s: float
    stages_s: dict[str, float]
    tokens_per_step: int
    parameters: int
    flops_per_step: float | None = None  # all predicted ops, optimizer included
    model_flops_per_step: float | None = None  # forward + backward (the MFU numerator)
    flops_source: str = ""
    mfu: list[MfuEntry] = field(default_factory=list)
    mfu_conventions: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: MemoryPeak | None = None
    predicted_memory: dict[str, Any] | None = None
    utilization: Utilization | None = None
    predictions: list[StepPrediction] = field(default_factory=list)  # roofline ones first
    measured_hardware: dict[str, Any] | None = None
    datasheet_hardware: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    plan: Any = None  # the ExecutionPlan the step ran under (and was predicted for)

    @property
    def step_time_s(self) -> float:
        """Median time per step (per batch)."""
        return self.timing.total.median

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def sequences_per_s(self) -> float:
        return self.batch / self.step_time_s

    @property
    def achieved_flops_per_s(self) -> float | None:
        """Model FLOPs per step / median step time."""
        if self.model_flops_per_step is None:
            return None
        return self.model_flops_per_step / self.step_time_s

    @property
    def roofline(self) -> list[StepPrediction]:
        """The roofline bounds, one per machine, the first on the machine the user chose."""
        return [p for p in self.predictions if not p.is_calibrated]

    @property
    def calibrated(self) -> StepPrediction | None:
        """The calibrated expected time (None: this device had no usable calibration)."""
        return next((p for p in self.predictions if p.is_calibrated), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "workload": {"kind": self.kind, "batch": self.batch, "seq": self.seq,
                         "dtype": self.dtype, "compile": self.compile,
                         "attention": self.config.attention, "tokens_per_step": self.tokens_per_step},
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "config": self.config.to_dict(),
            "parameters": self.parameters,
            "device": {"type": self.device, "name": self.device_name, "threads": self.threads},
            "wall_time_s": self.wall_time_s,
            "stages_s": dict(self.stages_s),
            "time_per_step": self.timing.to_dict(),
            "step_time_s": self.step_time_s,
            "throughput": {"tokens_per_s": self.tokens_per_s,
                           "sequences_per_s": self.sequences_per_s},
            "flops": {"per_step": self.flops_per_step, "model_per_step": self.model_flops_per_step,
                      "achieved_flops_per_s": self.achieved_flops_per_s,
                      "source": self.flops_source},
            "mfu": [m.to_dict() for m in self.mfu],
            "mfu_conventions": dict(self.mfu_conventions),
            "memory": {"measured": self.memory.to_dict() if self.memory else None,
                       "predicted": self.predicted_memory},
            "utilization": self.utilization.to_dict() if self.utilization else None,
            "predictions": [p.to_dict() for p in self.predictions],
            "hardware": {"measured": self.measured_hardware, "datasheet": self.datasheet_hardware},
            "notes": list(self.notes),
            "environment": dict(self.environment),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        """The inverse of `to_dict` (a UserError for another schema)."""
        check_schema(d, SCHEMA)
        w, dev, flops, mem = d["workload"], d["device"], d["flops"], d["memory"]
        return cls(
            kind=w["kind"], config=GPTConfig.from_dict(d["config"]), batch=w["batch"], seq=w["seq"],
            dtype=w["dtype"], compile=w["compile"], device=dev["type"], device_name=dev["name"],
            threads=dev["threads"], timing=PhaseTiming.from_dict(d["time_per_step"]),
            wall_time_s=d["wall_time_s"], stages_s=dict(d["stages_s"]),
            tokens_per_step=w["tokens_per_step"], parameters=d["parameters"],
            flops_per_step=flops["per_step"], model_flops_per_step=flops["model_per_step"],
            flops_source=flops["source"], mfu=[MfuEntry.from_dict(m) for m in d["mfu"]],
            mfu_conventions=dict(d["mfu_conventions"]),
            memory=MemoryPeak.from_dict(mem["measured"]) if mem["measured"] else None,
            predicted_memory=mem["predicted"],
            utilization=Utilization.from_dict(d["utilization"]) if d["utilization"] else None,
            predictions=[StepPrediction.from_dict(p) for p in d["predictions"]],
            measured_hardware=d["hardware"]["measured"],
            datasheet_hardware=d["hardware"]["datasheet"], notes=list(d["notes"]),
            environment=dict(d["environment"]),
            plan=ExecutionPlan.from_dict(d["plan"]) if d["plan"] is not None else None,
        )


def _measured_date(hw: Any) -> str:
    return str(hw.extra.get("measurement", {}).get("measured_at", "unknown date"))


def _hardware_label(hw: Any, dtype: str) -> str:
    """E.g. 'measured bf16 matmul (768 TFLOP/s, measured NVIDIA H100 80GB HBM3 on 2026-...)'."""
    peak = si(hw.peak(dtype), "FLOP/s")
    if hw.source == "measured":
        quick = ", quick sweep" if hw.extra.get("measurement", {}).get("quick") else ""
        return (f"measured {dtype} matmul ({peak}, measured {hw.device_name or hw.name} "
                f"on {_measured_date(hw)}{quick})")
    return f"{hw.source} {hw.name} {dtype} dense {peak}"


def device_calibration(device: Any) -> tuple[Any, str | None]:
    """The calibration of `device` for the calibrated expected time: (Calibration, None) when a
    usable one is cached, (None, None) when there is none, and (None, the one-line reason) when
    the cached one is stale, of another device or of another torch — a measurement goes on
    without it."""
    from gptperf.measure.calibrate import calibration_for  # deferred: loads torch

    try:
        return calibration_for(device), None
    except UserError as err:
        return None, str(err)


def calibrated_expected(config: Any, workload: Any, plan: Any, calibration: Any,
                        device: Any = None, *, speed: float | None = None,
                        phase_speeds: dict[str, float] | None = None,
                        parallel_speed: float | None = None) -> tuple[Any, str | None]:
    """(`perfmodel.expected.Expected`, None) for the step of `workload` under `plan` on the
    calibrated device, or (None, the one-line reason) when the calibration cannot cost it (a
    dtype or kernel it did not measure). The host costs are charged at the host's `speed`
    (`measure.probe.host_speed`), probed now on `device` when only that is given (the step was
    measured there just now, each phase at its own as well, and on a CPU its parallel regions'
    speed), as calibrated when neither is; those of a phase in `phase_speeds` at its own
    (`probe.HostSampler.phase_speeds`); a CPU's parallel kernels at `parallel_speed`
    (`probe.HostSampler.parallel_speed`)."""
    try:
        if speed is None and device is not None:
            speed, phase_speeds = host_speeds(calibration, device,
                                              probe=probe_for(calibration, workload.kind))
            if parallel_speed is None and calibration.device_type == "cpu":
                parallel_speed = fork_speed(calibration, fork_op_s())
        return expected(config, workload, plan, calibration, host_speed=speed,
                        phase_speeds=phase_speeds, parallel_speed=parallel_speed), None
    except UserError as err:
        return None, str(err)


def host_charge(e: Any, calibration: Any) -> dict[str, Any]:
    """How the calibrated expected time `e` charged the machine as it ran: the host's speed probed
    as the step ran (None: as calibrated), per phase where probed so, each phase's speed as
    charged (`host_charged`, empty when as calibrated), a CPU's parallel kernels' speed
    (`parallel_speed`, None: as calibrated), and the step's time with all of them as calibrated,
    which is what `gptperf model --calibrated` gives for the same step (a prediction beside a
    measurement is made for the machine that ran it; this says how far that moved it)."""
    charged: dict[str, float] = {}
    plain = e.step_time_s
    host_charged = not e.plan.cuda_graph and (e.host_speed is not None or e.phase_speeds)
    if host_charged:  # a graph replays with no host in the loop
        charged = {o.phase: e.phase_speeds.get(o.phase, e.host_speed or 1.0) for o in e.ops}
    if host_charged or e.parallel_speed is not None:
        plain = expected(e.config, e.workload, e.plan, calibration).step_time_s
    return {"host_speed": e.host_speed, "phase_speeds": dict(e.phase_speeds),
            "host_charged": charged, "parallel_speed": e.parallel_speed,
            "step_time_s_as_calibrated": plain}


def host_charge_note(entry: StepPrediction | dict[str, Any] | None) -> str | None:
    """A calibrated entry's host charge in words (`host_charge`'s fields; a bench's
    StepPrediction, or the dict of a profile's calibrated step), or None when its host costs are
    the calibration's own (or there is no entry)."""
    if entry is None:
        return None
    if isinstance(entry, StepPrediction):
        entry = entry.to_dict()
    charged, plain = entry.get("host_charged"), entry.get("step_time_s_as_calibrated")
    if charged is None:  # an entry written before the phases as charged were kept
        speed = entry.get("host_speed")
        charged = entry.get("phase_speeds") or ({"step": speed} if speed is not None else {})
    parallel = entry.get("parallel_speed")
    if (not charged and parallel is None) or plain is None:
        return None
    parts = []
    if charged:
        speeds = set(charged.values())
        parts.append("host costs " + (f"×{speeds.pop():.2f}" if len(speeds) == 1
                                      else ", ".join(f"{p} ×{v:.2f}" for p, v in charged.items())))
    if parallel is not None:
        parts.append(f"parallel CPU kernels ×{parallel:.2f}")
    return (f"{', '.join(parts)}: the machine's speed probed as the step ran; with them as "
            f"calibrated {plain * 1e3:.4g} ms (`gptperf model --calibrated`)")


def check_bench_args(kind: str, config: Any, batch: int, seq: int, dtype: str, device: Any,
                     compile: bool, warmup: int, repeats: int) -> None:
    """One-line UserErrors for every bad argument, before anything heavy runs."""
    Workload(kind, batch, seq, dtype)  # kind, batch, seq and dtype
    config.check_sequence(seq)
    if getattr(device, "type", device) == "cpu" and dtype == "fp16":
        raise UserError("dtype 'fp16' autocast needs a GPU; on CPU use bf16 or fp32")
    for what, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_STEPS:
            raise UserError(f"{what} must be an integer from {least} to {MAX_STEPS}, got {value!r}")
    if compile and warmup < 1:
        raise UserError(f"warmup={warmup} with --compile would time the compilation; "
                        "use --warmup 1 or more")


@dataclass
class _Setup:
    """A bench's arguments, checked and settled: the device, the plan asked for, the step counts,
    and the notes the result will carry (appended to as the bench goes on)."""

    config: Any  # GPTConfig
    workload: Workload
    dev: torch.device
    dev_name: str
    plan: ExecutionPlan  # as asked: the built step's may differ (`_Built.plan`)
    compile: bool
    warmup: int
    repeats: int  # as asked (or the default): `_Built.repeats` may widen it to the device's window
    windowed: bool  # the user named no count: span the device's window
    notes: list[str] = field(default_factory=list)


@dataclass
class _Built:
    """The built step and what times it: how many timed steps, in a run or with hooks between
    them, the meters, and the calibration its expected time comes from."""

    step: Any  # a `steps.build` step: phases, plan, notes, tokens per step
    calibration: Any  # None: none usable (`why_none` says why, where there is a reason)
    why_none: str | None
    host_sampler: HostSampler | None
    in_a_run: bool
    repeats: int
    hooks: list[Callable[[], None]]
    meter: PeakMemoryMeter
    sampler: UtilizationSampler
    marks: dict[str, float]  # perf_counter readings: "build" began, "built", later "warm"

    @property
    def plan(self) -> ExecutionPlan:
        """The plan that runs (the one-row kernel needs CUDA and Triton)."""
        return self.step.plan


def _settle(config: Any, kind: str, batch: int, seq: int, dtype: str, device: Any,
            compile: bool, warmup: int | None, repeats: int | None, plan: Any,
            fast: bool) -> _Setup:
    """The device, the plan (None: `ExecutionPlan.default` for the device with `compile` and
    `fast`) and the step counts (None: `default_counts`), every argument checked (one-line
    UserErrors) before anything heavy runs."""
    from gptperf.runtime import as_device  # deferred: loads torch
    from gptperf.steps.build import check_step  # deferred: loads torch

    dev = as_device(device)
    if plan is None:
        plan = ExecutionPlan.default(kind, dev.type, compile=compile, fast=fast,
                                     attention=config.attention, dtype=dtype)
    compile = plan.compiled
    d_warmup, d_repeats = default_counts(kind)
    warmup = d_warmup if warmup is None else warmup
    windowed = repeats is None  # the user named no count: span the device's window
    repeats = d_repeats if repeats is None else repeats
    check_bench_args(kind, config, batch, seq, dtype, dev, compile, warmup, repeats)
    workload = Workload(kind, batch, seq, dtype)
    check_step(config, workload, plan, dev)
    return _Setup(config, workload, dev, name_of(dev), plan, compile, warmup, repeats, windowed)


def _machines(hardware: Any, setup: _Setup) -> tuple[Any, Any, Any]:
    """(chosen, datasheet, measured): the machine of the first prediction (`hardware`; None where
    no default resolves), this device's datasheet entry and its measured ceilings, each of the
    last two None where there is none usable, which a note says."""
    dev_name, dtype, notes = setup.dev_name, setup.workload.dtype, setup.notes
    try:
        chosen = resolve_hardware(hardware, dev_name, setup.dev.type, dtype=dtype)
    except UserError:
        if hardware is not None:
            raise
        chosen = None  # an unknown GPU without measured ceilings: measured, not predicted
    datasheet = datasheet_hardware_for(dev_name, setup.dev.type)
    if datasheet is None:
        notes.append(f"no datasheet entry for {dev_name!r}; pass --hardware to name one")
    try:
        measured = load_measured_hardware(dev_name)
    except UserError as err:  # a corrupt cache: go on without it, as with a broken calibration
        measured = None
        notes.append(f"measured ceilings not used: {err}")
    else:
        if measured is None:
            notes.append(f"no measured ceilings for {dev_name}: run `gptperf ceilings` for measured MFU")
    return chosen, datasheet, measured


def _build(setup: _Setup, *, seed: int, calibrated: bool, between_steps: Callable[[], None] | None,
           progress: Progress | None) -> _Built:
    """Build the step, find this device's calibration (when `calibrated`), decide how the step
    is timed and how many times, and set up the meters."""
    from gptperf.steps.build import build_step  # deferred: loads torch

    dev, workload, notes = setup.dev, setup.workload, setup.notes
    t_build = time.perf_counter()
    if progress:
        progress("building the model", 0, 1)
    step = build_step(setup.config, workload, setup.plan, dev, seed=seed)
    notes.extend(step.notes)
    calibration, why_none = device_calibration(dev) if calibrated else (None, None)
    # A CUDA-graph step is timed in a run, each replay queued behind the one before, as generation
    # runs it: no host work between its steps, and none of the host's to charge (gpt2's fused
    # decode step on the H200: 201 µs so, 220 µs timed one at a time after a synchronisation).
    in_a_run = step.plan.cuda_graph
    host_sampler = None if in_a_run else step_sampler(calibration, workload.kind, dev)
    repeats = setup.repeats
    if setup.windowed and calibration is not None:
        # the host as calibrated
        estimate, _ = calibrated_expected(setup.config, workload, step.plan, calibration)
        repeats = window_repeats(repeats, dev.type, estimate.step_time_s if estimate else None)
    hooks = [] if in_a_run else [h for h in (host_sampler, between_steps) if h is not None]
    if in_a_run:
        notes.append("a CUDA-graph step is timed in a run of steps, each queued behind the one "
                     "before, as generation replays it")
    meter = PeakMemoryMeter(dev)
    sampler = UtilizationSampler(dev)
    marks: dict[str, float] = {"build": t_build, "built": time.perf_counter()}
    if progress:
        progress("building the model", 1, 1)
    return _Built(step, calibration, why_none, host_sampler, in_a_run, repeats, hooks, meter,
                  sampler, marks)


def _time_steps(setup: _Setup, built: _Built,
                progress: Progress | None) -> tuple[PhaseTiming, Utilization | None, MemoryPeak]:
    """Warm the built step up, then time its steps; the peak memory and the utilization are read
    over the timed steps alone."""
    marks = built.marks

    def between() -> None:
        for hook in built.hooks:
            hook()

    def before_timed() -> None:
        marks["warm"] = time.perf_counter()
        built.meter.reset()
        built.sampler.start()

    def stage_progress(stage: str, done: int, total: int) -> None:
        if progress:
            label = "warm-up (compiling)" if stage == "warm-up" and setup.compile else stage
            progress(label, done, total)

    try:
        timing = time_phases(built.step.phases, warmup=setup.warmup, repeats=built.repeats,
                             device=setup.dev, compiled=setup.compile, before_timed=before_timed,
                             between_steps=between if built.hooks else None,
                             progress=stage_progress, in_a_run=built.in_a_run)
    finally:
        utilization = built.sampler.stop() if "warm" in marks else None
    return timing, utilization, built.meter.read()


def _result(setup: _Setup, built: _Built, t_start: float, timing: PhaseTiming,
            utilization: Utilization | None, memory: MemoryPeak) -> BenchResult:
    """The measured BenchResult, before any prediction: the timing, the wall time by stage, the
    memory and the utilization."""
    import torch  # deferred: loads torch

    t_end = time.perf_counter()
    marks, workload, config = built.marks, setup.workload, setup.config
    stages = {"setup_s": marks["build"] - t_start, "build_s": marks["built"] - marks["build"],
              "warmup_s": marks["warm"] - marks["built"], "timed_s": t_end - marks["warm"]}
    result = BenchResult(
        kind=workload.kind, config=config, batch=workload.batch, seq=workload.seq,
        dtype=workload.dtype, compile=setup.compile, device=setup.dev.type,
        device_name=setup.dev_name, threads=torch.get_num_threads(), timing=timing,
        wall_time_s=t_end - t_start, stages_s=stages, tokens_per_step=built.step.tokens_per_step,
        parameters=count_parameters(config), memory=memory, utilization=utilization,
        notes=setup.notes, plan=built.plan,
    )
    if timing.total.wide_spread:
        result.notes.append(f"step times spread widely (std/median {timing.total.rel_spread:.0%}); "
                            "the machine may be busy or clocks changing: consider more --repeats")
    return result


def _add_predictions(result: BenchResult, setup: _Setup, built: _Built,
                     machines: tuple[Any, ...], calibrated: bool) -> None:
    """The roofline bound on each distinct machine of `machines` (None: skipped) and, when
    `calibrated`, the calibrated expected time with the host's speed sampled as the step ran."""
    config, workload, plan, dev = setup.config, setup.workload, built.plan, setup.dev
    distinct: list[Any] = []
    for hw in machines:
        if hw is not None and all(hw is not m and hw.to_dict() != m.to_dict() for m in distinct):
            distinct.append(hw)
    _add_roofline(result, distinct, config, workload, plan)
    if result.flops_per_step is None:
        result.notes.append("no FLOP count: the performance model could not predict this workload")
    if calibrated:
        calibration, host_sampler = built.calibration, built.host_sampler
        speed = host_sampler.speed(calibration) if host_sampler else None
        phases = host_sampler.phase_speeds(calibration) if host_sampler else None
        _add_calibrated(result, config, workload, plan, dev, calibration, built.why_none, speed,
                        phases, host_sampler if speed is not None else None)
        spell = spell_note(calibration, host_sampler.fork_s() if host_sampler else None)
        if spell:
            result.notes.append(spell)


def _add_machines(result: BenchResult, dev: Any, measured: Any, datasheet: Any) -> None:
    """The measured ceilings (with their date) and the datasheet entry the bench read, and the
    environment it ran in."""
    result.measured_hardware = measured.to_dict() if measured is not None else None
    if measured is not None:
        result.measured_hardware["measured_at"] = _measured_date(measured)
    result.datasheet_hardware = datasheet.to_dict() if datasheet is not None else None
    if dev.type == "cpu":
        result.notes.append("peak RSS is the whole process (Python, torch libraries, data), "
                            "not only the model's tensors the prediction counts")
    result.environment = environment(dev)
    result.environment["dtype"] = result.dtype


def run_bench(
    config: Any,
    kind: str,
    batch: int,
    seq: int,
    dtype: str = "fp32",
    device: Any = "auto",
    compile: bool = False,
    warmup: int | None = None,
    repeats: int | None = None,
    hardware: Any = None,
    progress: Progress | None = None,
    *,
    seed: int = 0,
    started_at: float | None = None,
    plan: Any = None,
    fast: bool = False,
    calibrated: bool = True,
    between_steps: Callable[[], None] | None = None,
) -> BenchResult:
    """Build `kind` on `config` under `plan`, warm it up, time `repeats` steps, and collect
    every metric.

    `plan` (an ExecutionPlan) says how the step runs; None: `ExecutionPlan.default` for this
    device with `compile` and `fast`. Every prediction is made for the plan the step ran under.
    `hardware` (a perfmodel Hardware, a registry name, a TOML path or 'measured') is the machine
    of the first prediction; None: `perfmodel.resolve_hardware`'s one default (this device's
    measured ceilings if cached, else its datasheet entry). The datasheet entry gives the
    datasheet MFU, the measured ceilings (if `gptperf ceilings` cached them) the measured MFU,
    each with a prediction of its own. `started_at` (a perf_counter reading) makes the wall time
    cover work done before the call (e.g. the command's imports). `calibrated=False` leaves out
    the calibrated expected time; with it, the host model's step is sampled between the timed
    steps (`probe.HostSampler`) to charge the host costs at the host's speed while they ran.
    `between_steps` runs after each timed step (`timer.time_phases`), beside that sampler. A
    CUDA-graph step is timed in a run of steps (`time_phases(in_a_run=True)`), with neither.
    """
    t_start = time.perf_counter() if started_at is None else started_at
    setup = _settle(config, kind, batch, seq, dtype, device, compile, warmup, repeats, plan, fast)
    # Hardware: resolve names first, so a bad --hardware fails before any model is built.
    chosen, datasheet, measured = _machines(hardware, setup)
    if setup.dev.type == "cpu" and dtype == "tf32":
        setup.notes.append("tf32 is a CUDA mode: on CPU the fp32 matmuls run in full fp32")

    built = _build(setup, seed=seed, calibrated=calibrated, between_steps=between_steps,
                   progress=progress)
    timing, utilization, memory = _time_steps(setup, built, progress)
    result = _result(setup, built, t_start, timing, utilization, memory)
    _add_predictions(result, setup, built, (chosen, datasheet, measured), calibrated)
    _add_mfu(result, (("measured", measured),
                      ("datasheet", datasheet if datasheet is not None else chosen)))
    _add_machines(result, setup.dev, measured, datasheet)
    return result


def _add_roofline(result: BenchResult, machines: list[Any], config: Any, workload: Any,
                  plan: Any) -> None:
    """Append the roofline bound of the step on each of `machines` to `result.predictions`, or a
    note for a machine that cannot predict it; the first that can also gives the step's FLOPs,
    predicted memory and FLOPs conventions."""
    first = True
    for hw in machines:
        try:
            p = predict(config, workload, hw, plan)
        except UserError as err:  # e.g. the machine lists no peak for this dtype
            result.notes.append(f"no prediction on {hw.label}: {err}")
            continue
        if first:
            result.notes.extend(f"prediction: {n}" for n in p.notes)
            result.flops_per_step = p.flops
            result.model_flops_per_step = p.model_flops
            result.flops_source = ("gptperf perfmodel exact count for this workload "
                                   "(causal attention at the causal count; softmax, norms, "
                                   "elementwise included); "
                                   + ("model FLOPs = forward + backward, all FLOPs add the "
                                      "optimizer" if workload.kind == "train" else
                                      "a forward step: model FLOPs and all FLOPs are one count"))
            result.predicted_memory = p.memory.to_dict()
            result.mfu_conventions = {
                name: {"flops_per_token": row["flops_per_token"],
                       "achieved_flops_per_s": row["flops_per_token"] * result.tokens_per_s,
                       "formula": row["formula"]}
                for name, row in p.to_dict()["flops_per_token"].items()
            }
            first = False
        result.predictions.append(StepPrediction(
            ROOFLINE, hw.label, hw.source, p.time_s, p.tokens_per_s,
            measured_step_time_s=result.step_time_s,
            measured_over_predicted=result.step_time_s / p.time_s,
            predicted_mfu=p.mfu(MFU_CONVENTION),
        ))


def _add_mfu(result: BenchResult, machines: tuple[tuple[str, Any], ...]) -> None:
    """Append the measured MFU against each (against, machine) of `machines` (None: skipped) to
    `result.mfu` and to each FLOPs convention's row, or a note for a machine with no peak for the
    dtype; nothing without a FLOP count."""
    dtype = result.dtype
    for against, hw in machines:
        if hw is None or result.achieved_flops_per_s is None:
            continue
        try:
            peak = hw.peak(dtype)
        except UserError as err:
            result.notes.append(f"no MFU against {hw.label}: {err}")
            continue
        result.mfu.append(MfuEntry(against, hw.label, dtype, peak,
                                   result.achieved_flops_per_s / peak,
                                   f"MFU vs {_hardware_label(hw, dtype)}", MFU_CONVENTION))
        for row in result.mfu_conventions.values():
            row.setdefault("mfu", {})[against] = row["achieved_flops_per_s"] / peak


def spell_note(calibration: Any, fork_s: float | None) -> str | None:
    """A note when the step's parallel CPU adds (`probe.HostSampler.fork_s`) took FORK_SPELL times
    (or 1/FORK_SPELL of) their time at calibration: it ran in a spell of the machine's fork and
    join, whose parallel kernels the calibrated prediction charges at that speed and whose
    matmuls and host costs it does not; None otherwise."""
    speed = fork_speed(calibration, fork_s)
    if not in_spell(speed):
        return None
    return (f"this step ran in a spell of the machine's fork and join: a parallel CPU add took "
            f"{speed:.2f}× its time at calibration (speed probe, this device); the calibrated "
            "prediction charges its parallel kernels at that speed, not its matmuls or host costs")


def _add_calibrated(result: BenchResult, config: Any, workload: Any, plan: Any, dev: Any,
                    calibration: Any, why: str | None, speed: float | None,
                    phase_speeds: dict[str, float] | None = None,
                    sampler: HostSampler | None = None) -> None:
    """Append the calibrated expected time of the step that ran (under `plan`) to
    `result.predictions`, its host costs charged at `speed` (sampled while it ran; None: probed
    now) and a phase's at its own in `phase_speeds`, with the machine now against its calibration
    (`probe.machine_against_calibration`), or a note saying why there is none (`why`:
    `device_calibration`'s). With the `sampler` whose samples gave `speed`, measured over
    predicted pairs each timed step with the prediction at the host sampled nearest it
    (`paired.host_paired_ratio`), as `gptperf validate` scores a case."""
    if calibration is None:
        result.notes.append(f"no calibrated expected time: {why}" if why else
                            f"no calibration for {result.device_name}: run `gptperf calibrate` "
                            "for the calibrated expected time beside the roofline bound")
        return
    parallel = sampler.parallel_speed(calibration) if sampler is not None else None
    e, why = calibrated_expected(config, workload, plan, calibration, dev, speed=speed,
                                 phase_speeds=phase_speeds, parallel_speed=parallel)
    if e is None:
        result.notes.append(f"no calibrated expected time: {why}")
        return
    result.notes.extend(f"calibrated: {n}" for n in e.notes)
    slowdown, drift = machine_against_calibration(calibration, dev)  # its curves are of then
    result.notes.extend(filter(None, [drift]))
    ratio = result.step_time_s / e.step_time_s
    if sampler is not None:
        def predict_at(host: float | None, phases: dict[str, float] | None) -> float:
            # no device: a sample's speed is given, and nothing is to be probed per sample
            at, _ = calibrated_expected(config, workload, plan, calibration, speed=host,
                                        phase_speeds=phases, parallel_speed=e.parallel_speed)
            return at.step_time_s if at is not None else math.nan

        paired = host_paired_ratio(result.timing.total.samples, sampler.samples,
                                   sampler.after_step, sampler.phase_samples, calibration,
                                   sampler.probe, predict_at)
        if paired is not None and math.isfinite(paired):
            if abs(paired / ratio - 1) > PAIRED_NOTE_ABOVE:
                result.notes.append(
                    f"calibrated: the host changed speed while the steps ran; measured/predicted "
                    f"{paired:.3f} pairs each step with the prediction at the host sampled nearest "
                    f"it (the median step over the prediction at the samples' median: {ratio:.3f})")
            ratio = paired
    result.predictions.append(StepPrediction(
        CALIBRATED, e.label, e.source, e.step_time_s, e.tokens_per_s,
        measured_step_time_s=result.step_time_s,
        measured_over_predicted=ratio,
        device_s=e.device_s, host_s=e.host_s, composition=e.composition,
        **host_charge(e, calibration), machine_vs_calibration=slowdown,
    ))
