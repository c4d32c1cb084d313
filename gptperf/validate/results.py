"""What `gptperf validate` found, as typed results: each case's measured, calibrated and roofline
step time, the error statistics beside the issue's targets, the per-operation error of the
profiled cases, and the calibration it was scored against. `to_dict()` is the JSON document
("gptperf.validate/1"); `from_dict` reads it back."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gptperf.measure.paired import host_paired_ratio
from gptperf.measure.probe import in_spell, probe_for
from gptperf.model.config import config_from_name
from gptperf.perfmodel.expected import expected
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.schema import check_schema
from gptperf.validate.stats import ErrorStats, error_stats, nearest_rank, time_weighted_error
from gptperf.validate.sweep import ValidationCase

if TYPE_CHECKING:
    from gptperf.perfmodel.calibration import Calibration
    from gptperf.perfmodel.expected import Expected
    from gptperf.validate.sweep import ValidationCase

SCHEMA = "gptperf.validate/1"
OP_FLOOR_S = 20e-6  # operations shorter than this (measured and predicted) are left out

# gptperf's accuracy targets, which `validate` scores a sweep against, as fractions of
# |measured/predicted − 1|.
TARGETS: dict[str, dict[str, float]] = {
    "cuda": {"median": 0.03, "p90": 0.08, "max": 0.15, "per_op": 0.10},
    "cpu": {"median": 0.10},
}
TARGET_LABELS = {"median": "median |m/p − 1|", "p90": "p90 |m/p − 1| (nearest rank)",
                 "max": "max |m/p − 1|", "per_op": "per-operation error (time-weighted)"}
# A GPU step whose predicted host time is at least this share of its device time waits on the
# host: the queue starves at moments before the host's total reaches the device's, and the step
# moves with the host's speed. Stored GPU sweeps split this way show the large misses among the
# host-bound steps, and a share anywhere near 0.8 splits them alike (BENCHMARKS.md, "Session 44:
# the fixed sweep on an H100 meets its four targets"). On a CPU host and kernels run in series:
# no split.
HOST_BOUND_SHARE = 0.8


@dataclass(frozen=True)
class HostTrace:
    """What a case's median step and its host sample were taken from: every timed step (s, in
    order), every sample of the host model's step (s) and the step each followed (1-based), so
    that how the host's speed is read from the samples can be judged against the steps afterwards
    (a host can run at two speeds, and a case's samples may catch the other one), and each step
    paired with the sample beside it (`measure.paired`); `phase_samples_s`: each phase's seconds of
    every sample, where the host model's step has several phases (the train probe's; {}: none)."""

    steps_s: tuple[float, ...]
    samples_s: tuple[float, ...] = ()
    after_step: tuple[int, ...] = ()
    phase_samples_s: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.samples_s) != len(self.after_step):
            raise ValueError(f"{len(self.samples_s)} host samples but {len(self.after_step)} "
                             "steps they followed")
        if any(not 1 <= i <= len(self.steps_s) for i in self.after_step):
            raise ValueError(f"a host sample follows a step outside 1..{len(self.steps_s)}")
        for name, seconds in self.phase_samples_s.items():
            if len(seconds) != len(self.samples_s):
                raise ValueError(f"{len(seconds)} samples of phase {name!r} but "
                                 f"{len(self.samples_s)} host samples")

    def spread(self) -> tuple[float, float] | None:
        """The timed steps' 10th and 90th percentiles (nearest rank) over their median: how far
        the measurement itself moved while it ran (None without steps)."""
        if not self.steps_s:
            return None
        mid = statistics.median(self.steps_s)
        return nearest_rank(self.steps_s, 0.1) / mid, nearest_rank(self.steps_s, 0.9) / mid

    def paired_ratio(self, calibration: Calibration | None, probe: str,
                     predict: Callable[[float | None, dict[str, float] | None], float]
                     ) -> float | None:
        """The median over the steps of each step over its prediction at the host sampled
        nearest it (`measure.paired.host_paired_ratio`); None without samples."""
        return host_paired_ratio(self.steps_s, self.samples_s, self.after_step,
                                 self.phase_samples_s, calibration, probe, predict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"steps_s": list(self.steps_s), "samples_s": list(self.samples_s),
                             "after_step": list(self.after_step)}
        if self.phase_samples_s:
            d["phase_samples_s"] = {k: list(v) for k, v in self.phase_samples_s.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HostTrace:
        return cls(tuple(float(t) for t in d["steps_s"]),
                   tuple(float(t) for t in d.get("samples_s", ())),
                   tuple(int(i) for i in d.get("after_step", ())),
                   {k: tuple(float(t) for t in v)
                    for k, v in (d.get("phase_samples_s") or {}).items()})


@dataclass(frozen=True)
class ValidationPoint:
    """One case: its step measured (median of the timed steps), predicted from the calibration
    (`expected_s`) and bounded by the roofline (`roofline_s`; None when no hardware resolved),
    for the plan it ran under. `host_probe`: the host model's step time sampled between the case's
    steps (`measure.probe.HostSampler`) over its time when the host costs were calibrated (None:
    no sample); `host_probe_after`: the same, probed for a second right after a case without a
    sample (None for one with);
    `host_speed`: the speed the prediction's host costs were charged at — the sample, else the
    probe after, else the median of the others' (`validate.run.sweep_host_speed`). `trace`: the
    timed steps and host samples behind `measured_s` and `host_probe` (None: not recorded).
    `host_phase_speeds`: each phase of the host model's step sampled over its own time at
    calibration, the speed that phase's host costs were charged at instead (None: the step has one
    phase, or no sample). `clock_share`: the GPU's mean SM clock over its maximum while the case's
    steps were timed (`measure.metrics.Utilization.clock_share`; None: not read). `fork_speed`: a
    parallel CPU add sampled with the host over its time in the calibration's speed probe
    (`measure.probe.fork_speed`; None: not sampled, or not a CPU): how far the case's steps ran in
    a spell of slow (or fast) fork and join. `expected_host_s`, `expected_device_s`: the
    prediction's host and device seconds as charged (`Expected.host_s`, `.device_s`; None in a
    document from before they were kept), which say whether the step waits on the host
    (`host_bound`). `paired_ratio`: the median over the timed steps of each step over its
    prediction at the host sampled nearest it (`HostTrace.paired_ratio`; None: no samples, or a
    document from before it was kept), the case's `ratio` where there is one: `expected_s` is
    charged at the samples' median, which can come from another spell of the host than the
    median step."""

    case: str
    kind: str
    config: str  # the config's name, e.g. 'gpt2+n_layer=6'
    batch: int
    seq: int
    dtype: str
    plan: ExecutionPlan
    measured_s: float
    expected_s: float
    roofline_s: float | None = None
    host_speed: float | None = None
    host_probe: float | None = None
    host_probe_after: float | None = None
    trace: HostTrace | None = None
    host_phase_speeds: dict[str, float] | None = None
    clock_share: float | None = None
    fork_speed: float | None = None
    expected_host_s: float | None = None
    expected_device_s: float | None = None
    paired_ratio: float | None = None

    @property
    def plan_label(self) -> str:
        return self.plan.label

    def as_case(self) -> ValidationCase | None:
        """The `sweep.ValidationCase` this point measured, rebuilt from its config's name, its
        workload and its plan (None: a config name `preset` does not spell)."""
        config = config_from_name(self.config)
        if config is None:
            return None
        return ValidationCase(self.case, config, Workload(self.kind, self.batch, self.seq, self.dtype),
                              self.plan)

    def expected_on(self, calibration: Calibration) -> Expected | None:
        """The calibrated prediction (`perfmodel.expected.Expected`) of this point's case under
        the plan it ran, on `calibration`, its host costs and parallel CPU kernels charged at the
        speeds this point's were: a stored run predicted again (None: a config name `preset` does not spell)."""
        case = self.as_case()
        if case is None:
            return None
        return expected(case.config, case.workload, self.plan, calibration, host_speed=self.host_speed,
                        phase_speeds=self.host_phase_speeds, parallel_speed=self.fork_speed)

    def ratio_on(self, calibration: Calibration) -> float | None:
        """measured / predicted of this point predicted again on `calibration` (`expected_on`),
        scored as validate scores a case: each step paired with its host sample where the point
        was sampled (`HostTrace.paired_ratio`), else the median step over the prediction (None: a
        config name `preset` does not spell). A point charged phase by phase whose trace predates
        the samples' phases is scored unpaired, as it was."""
        case = self.as_case()
        if case is None:
            return None

        def at(speed: float | None, phases: dict[str, float] | None) -> float:
            return expected(case.config, case.workload, self.plan, calibration, host_speed=speed,
                            phase_speeds=phases, parallel_speed=self.fork_speed).step_time_s

        trace = self.trace
        if (trace is not None and self.host_probe is not None
                and (trace.phase_samples_s or not self.host_phase_speeds)):
            paired = trace.paired_ratio(calibration, probe_for(calibration, self.kind), at)
            if paired is not None:
                return paired
        return self.measured_s / at(self.host_speed, self.host_phase_speeds)

    @property
    def ratio(self) -> float:
        """measured / calibrated expected: each step over its prediction where the host was
        sampled among the steps (`paired_ratio`), else the median step over `expected_s`."""
        return self.paired_ratio if self.paired_ratio is not None else self.measured_s / self.expected_s

    @property
    def error(self) -> float:
        return abs(self.ratio - 1)

    @property
    def host_bound(self) -> bool | None:
        """Whether the prediction's host time is above zero and at least HOST_BOUND_SHARE of its
        device time (on a GPU the step moves with the host's speed); None without them."""
        if self.expected_host_s is None or self.expected_device_s is None:
            return None
        return self.expected_host_s > 0 and self.expected_host_s >= HOST_BOUND_SHARE * self.expected_device_s

    @property
    def in_spell(self) -> bool:
        """Its steps ran while a parallel CPU add took FORK_SPELL times (or 1/FORK_SPELL of) its
        time at calibration: a spell of the machine, whose parallel CPU kernels the prediction
        charges at that speed (`perfmodel.expected`) and whose matmuls and host costs it does not."""
        return in_spell(self.fork_speed)

    @property
    def step_spread(self) -> tuple[float, float] | None:
        """The case's own timed steps at p10 and p90 over their median (`HostTrace.spread`);
        None without a trace."""
        return None if self.trace is None else self.trace.spread()

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "kind": self.kind, "config": self.config, "batch": self.batch,
                "seq": self.seq, "dtype": self.dtype, "plan": self.plan.to_dict(),
                "plan_label": self.plan_label, "measured_s": self.measured_s,
                "expected_s": self.expected_s, "roofline_s": self.roofline_s,
                "host_speed": self.host_speed, "host_probe": self.host_probe,
                "host_probe_after": self.host_probe_after, "ratio": self.ratio,
                "step_spread": self.step_spread, "host_phase_speeds": self.host_phase_speeds,
                "trace": None if self.trace is None else self.trace.to_dict(),
                "clock_share": self.clock_share, "fork_speed": self.fork_speed,
                "expected_host_s": self.expected_host_s, "expected_device_s": self.expected_device_s,
                "paired_ratio": self.paired_ratio}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationPoint:
        return cls(d["case"], d["kind"], d["config"], int(d["batch"]), int(d["seq"]), d["dtype"],
                   ExecutionPlan.from_dict(d["plan"]), float(d["measured_s"]),
                   float(d["expected_s"]),
                   None if d.get("roofline_s") is None else float(d["roofline_s"]),
                   None if d.get("host_speed") is None else float(d["host_speed"]),
                   *(None if d.get(k) is None else float(d[k])
                     for k in ("host_probe", "host_probe_after")),
                   HostTrace.from_dict(d["trace"]) if d.get("trace") else None,
                   {k: float(v) for k, v in d["host_phase_speeds"].items()}
                   if d.get("host_phase_speeds") else None,
                   *(None if d.get(k) is None else float(d[k])
                     for k in ("clock_share", "fork_speed", "expected_host_s", "expected_device_s",
                               "paired_ratio")))


@dataclass(frozen=True)
class OpPair:
    """One operation of a profiled step: (name, phase), measured device time per step (profiler
    attribution) and the calibrated prediction's device time."""

    name: str
    phase: str
    measured_s: float
    expected_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "phase": self.phase, "measured_s": self.measured_s,
                "expected_s": self.expected_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpPair:
        return cls(d["name"], d["phase"], float(d["measured_s"]), float(d["expected_s"]))


@dataclass(frozen=True)
class OpErrors:
    """The per-operation comparison of one profiled case (operations of at least OP_FLOOR_S,
    measured or predicted)."""

    case: str
    ops: tuple[OpPair, ...]

    @property
    def error(self) -> float:
        """Σ|m − p| / Σm over the operations."""
        return time_weighted_error((o.measured_s, o.expected_s) for o in self.ops)

    @property
    def measured_s(self) -> float:
        return sum(o.measured_s for o in self.ops)

    def worst(self, n: int = 3) -> list[OpPair]:
        """The `n` operations with the largest |m − p|."""
        return sorted(self.ops, key=lambda o: -abs(o.measured_s - o.expected_s))[:n]

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "error": self.error, "measured_s": self.measured_s,
                "ops": [o.to_dict() for o in self.ops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpErrors:
        return cls(d["case"], tuple(OpPair.from_dict(o) for o in d["ops"]))


@dataclass(frozen=True)
class CalibrationInfo:
    """Which calibration the predictions came from: device, date, age, torch."""

    device_name: str
    created_at: str
    age_days: float
    torch_version: str
    label: str  # e.g. 'calibrated on NVIDIA H200, 2026-12-01 (0.2 days old, torch 2.11.0)'

    def to_dict(self) -> dict[str, Any]:
        return {"device_name": self.device_name, "created_at": self.created_at,
                "age_days": self.age_days, "torch_version": self.torch_version,
                "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationInfo:
        return cls(d["device_name"], d["created_at"], float(d["age_days"]), d["torch_version"],
                   d["label"])

    @classmethod
    def of(cls, calibration: Calibration) -> CalibrationInfo:
        """From a `gptperf.perfmodel.calibration.Calibration`."""
        return cls(calibration.device_name, calibration.created_at, calibration.age_days(),
                   calibration.torch_version, calibration.label())


@dataclass(frozen=True)
class Skipped:
    """A case that did not give a point, and why (one line)."""

    case: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Skipped:
        return cls(d["case"], d["reason"])


@dataclass(frozen=True)
class Verdict:
    """One target of the acceptance: the value reached, the target, PASS or MISS (None: no data)."""

    name: str
    label: str
    value: float
    target: float

    @property
    def passed(self) -> bool | None:
        return None if math.isnan(self.value) else self.value <= self.target

    @property
    def word(self) -> str:
        return {True: "PASS", False: "MISS", None: "NO DATA"}[self.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "value": self.value,
                "target": self.target, "passed": self.passed, "verdict": self.word}


@dataclass
class ValidationResult:
    """Everything one validation sweep measured and predicted; `stats` and `per_op_error` are
    computed from the points and the profiled operations, so they cannot disagree with them."""

    device_type: str  # "cpu" | "cuda"
    device_name: str
    quick: bool
    calibration: CalibrationInfo
    points: list[ValidationPoint] = field(default_factory=list)
    per_op: list[OpErrors] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    wall_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    # the machine's speed probe as validation began over the calibration's (`measure.probe`):
    # part -> now / then, 2.0 = twice as slow as when calibrated; empty if the calibration has none
    speed_vs_calibration: dict[str, float] = field(default_factory=dict)
    # the probe at validation's end over the one at its start: part -> end / start; over several
    # validations that ran a case each (the report's), the last one's end over the first one's start
    speed_drift: dict[str, float] = field(default_factory=dict)
    seed: int | None = None  # set when the cases were drawn at random (`validate.drawn`)

    @property
    def sweep(self) -> str:
        """'random' (drawn cases), 'quick' or 'full' (the fixed sweeps)."""
        return "random" if self.seed is not None else "quick" if self.quick else "full"

    @property
    def sweep_label(self) -> str:
        """The sweep for text: 'quick', 'full', or 'random (seed S)'."""
        return f"random (seed {self.seed})" if self.seed is not None else self.sweep

    @property
    def stats(self) -> ErrorStats:
        """End-to-end |measured/calibrated − 1| over the points."""
        return error_stats(p.ratio for p in self.points)

    @property
    def steady_stats(self) -> ErrorStats:
        """The same over the points that did not run in a spell of the machine (`in_spell`)."""
        return error_stats(p.ratio for p in self.points if not p.in_spell)

    @property
    def spell_count(self) -> int:
        """Points that ran in a spell of the machine (`ValidationPoint.in_spell`)."""
        return sum(p.in_spell for p in self.points)

    def bound_stats(self) -> dict[str, ErrorStats] | None:
        """On a GPU, the statistics apart over the steps that wait on the host ("host":
        `host_bound`) and the others ("device"); points without the prediction's split are in
        neither. None on a CPU (host and kernels in series: nothing waits) or when no point has
        the split (a document from before it was kept)."""
        if self.device_type != "cuda" or all(p.host_bound is None for p in self.points):
            return None
        return {name: error_stats(p.ratio for p in self.points if p.host_bound is bound)
                for name, bound in (("host", True), ("device", False))}

    @property
    def roofline_stats(self) -> ErrorStats:
        """The same statistics for the roofline bound (what the calibration improves on)."""
        return error_stats(p.measured_s / p.roofline_s for p in self.points
                           if p.roofline_s is not None and p.roofline_s > 0)

    @property
    def per_op_error(self) -> float:
        """Σ|m − p| / Σm over the operations of every profiled case together (NaN: none)."""
        return time_weighted_error((o.measured_s, o.expected_s) for e in self.per_op for o in e.ops)

    @property
    def per_op_count(self) -> int:
        return sum(len(e.ops) for e in self.per_op)

    def verdicts(self) -> list[Verdict]:
        """Each target of this device type, with the value reached."""
        values = {"median": self.stats.median, "p90": self.stats.p90, "max": self.stats.max,
                  "per_op": self.per_op_error}
        targets = TARGETS.get(self.device_type, {})
        return [Verdict(k, TARGET_LABELS[k], values[k], t) for k, t in targets.items()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "device": {"type": self.device_type, "name": self.device_name},
            "sweep": self.sweep,
            "seed": self.seed,
            "calibration": self.calibration.to_dict(),
            "points": [p.to_dict() for p in self.points],
            "stats": self.stats.to_dict(),
            "spells": {"cases": self.spell_count, "stats_without": self.steady_stats.to_dict()},
            "by_bound": None if (split := self.bound_stats()) is None else {
                "host_share": HOST_BOUND_SHARE, **{k: v.to_dict() for k, v in split.items()}},
            "roofline_stats": self.roofline_stats.to_dict(),
            "per_op": {"error": self.per_op_error, "operations": self.per_op_count,
                       "floor_s": OP_FLOOR_S, "cases": [e.to_dict() for e in self.per_op]},
            "targets": [v.to_dict() for v in self.verdicts()],
            "skipped": [s.to_dict() for s in self.skipped],
            "wall_time_s": self.wall_time_s,
            "notes": list(self.notes),
            "environment": dict(self.environment),
            "speed_vs_calibration": dict(self.speed_vs_calibration),
            "speed_drift": dict(self.speed_drift),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationResult:
        """The inverse of `to_dict` (a one-line UserError for another schema); the statistics
        are computed again from the points."""
        check_schema(d, SCHEMA)
        return cls(
            device_type=d["device"]["type"], device_name=d["device"]["name"],
            quick=d["sweep"] == "quick", calibration=CalibrationInfo.from_dict(d["calibration"]),
            points=[ValidationPoint.from_dict(p) for p in d["points"]],
            per_op=[OpErrors.from_dict(e) for e in d["per_op"]["cases"]],
            skipped=[Skipped.from_dict(s) for s in d["skipped"]],
            wall_time_s=float(d["wall_time_s"]), notes=list(d["notes"]),
            environment=dict(d["environment"]),
            speed_vs_calibration={k: float(v) for k, v in d.get("speed_vs_calibration", {}).items()},
            speed_drift={k: float(v) for k, v in d.get("speed_drift", {}).items()},
            seed=d.get("seed"),
        )
