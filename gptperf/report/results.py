"""What each of the report's stages found, as typed results around the producers' own (BenchResult,
ProfileResult, InferenceResult, TrainResult, Ceilings, ScoreResult, ScalingStudy, Prediction,
ValidationResult):
`to_dict()` is the stage's part of report.json and `from_dict()` its inverse, refusing another
schema in one line. Live objects a later stage needs (the trained model) ride along unwritten.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gptperf.inference.sweep import InferenceResult
from gptperf.measure.bench import BenchResult
from gptperf.perfmodel.hardware import Hardware
from gptperf.perfmodel.transformer import Prediction
from gptperf.profiling.run import ProfileResult
from gptperf.scaling.results import ScalingStudy
from gptperf.schema import check_schema, number
from gptperf.train import TrainResult
from gptperf.validate.results import CalibrationInfo, ValidationResult

if TYPE_CHECKING:
    from gptperf.measure.ceilings import Ceilings
    from gptperf.perfmodel.calibration import Calibration
    from gptperf.score import ScoreResult


def hardware_from_dict(d: dict[str, Any]) -> Hardware:
    """`Hardware.to_dict()` read back from JSON, where an unbounded memory was written as null."""
    if d.get("memory_bytes") is None:
        d = {**d, "memory_bytes": math.inf}
    return Hardware.from_dict(d)


# --- device -------------------------------------------------------------------------------------


@dataclass
class DeviceStage:
    """The environment, this device's measured ceilings (cached or not) and its datasheet entry
    (None for a GPU gptperf has none for)."""

    SCHEMA = "gptperf.report.device/1"

    environment: dict[str, Any]
    ceilings: Ceilings
    ceilings_cached: bool
    datasheet: Hardware | None = None

    @property
    def measured_hardware(self) -> Hardware:
        return self.ceilings.to_hardware()

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "environment": dict(self.environment),
                "datasheet": self.datasheet.to_dict() if self.datasheet is not None else None,
                "ceilings": self.ceilings.to_dict(), "ceilings_cached": self.ceilings_cached}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceStage:
        from gptperf.measure.ceilings import Ceilings  # deferred: loads torch

        check_schema(d, cls.SCHEMA)
        sheet = d["datasheet"]
        return cls(dict(d["environment"]), Ceilings.from_dict(d["ceilings"]), d["ceilings_cached"],
                   hardware_from_dict(sheet) if sheet is not None else None)


# --- calibration --------------------------------------------------------------------------------


@dataclass
class CalibrationStage:
    """This device's calibration, which gives every later stage's measurement its calibrated
    expected time: reused from the cache or measured here (quick), or why there is none.
    `calibration` (the live `perfmodel.calibration.Calibration`) rides along unwritten; the
    page shows what is written: its device, date, age and torch (`info`), and a summary."""

    SCHEMA = "gptperf.report.calibration/1"

    info: CalibrationInfo | None  # None: no usable calibration (`notes` say why)
    cached: bool = False  # reused from the cache, not measured by this report
    quick: bool = False  # a quick calibration (fewer points)
    measured_s: float = 0.0  # seconds this report spent measuring it (0 when reused)
    path: str | None = None  # where it is cached
    curves: int = 0  # kernel time curves (matmul, attention, vector, optimizer, gemv)
    worst_residual: float | None = None  # largest leave-one-out residual of a curve
    host_costs: int = 0
    compiled: int = 0  # compiled recordings
    notes: list[str] = field(default_factory=list)  # the report's: reused, measured, missing
    calibration_notes: list[str] = field(default_factory=list)  # the calibration's own
    worst_curve: str | None = None  # the curve of `worst_residual` (e.g. "vector:add:fp32")
    median_residual: float | None = None  # the curves' median leave-one-out residual
    calibration: Any = field(default=None, compare=False, repr=False)

    @property
    def usable(self) -> bool:
        return self.info is not None

    @classmethod
    def of(cls, calibration: Calibration, *, cached: bool, path: Any, measured_s: float = 0.0,
           notes: list[str] | None = None) -> CalibrationStage:
        """The stage's result for a `Calibration` (its summary, and itself to ride along)."""
        from gptperf.measure.calibrate import is_quick  # deferred: loads torch

        residuals = {k: r for k, r in calibration.residuals().items() if r is not None}
        worst = max(residuals, key=residuals.__getitem__) if residuals else None
        return cls(CalibrationInfo.of(calibration), cached, is_quick(calibration), measured_s,
                   None if path is None else str(path), len(calibration.residuals()),
                   residuals[worst] if worst is not None else None, len(calibration.host),
                   len(calibration.compiled), list(notes or []), list(calibration.notes),
                   worst_curve=worst,
                   median_residual=statistics.median(residuals.values()) if residuals else None,
                   calibration=calibration)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA,
                "calibration": self.info.to_dict() if self.info is not None else None,
                "cached": self.cached, "quick": self.quick, "measured_s": self.measured_s,
                "path": self.path, "curves": self.curves, "worst_residual": self.worst_residual,
                "host_costs": self.host_costs, "compiled": self.compiled,
                "notes": list(self.notes), "calibration_notes": list(self.calibration_notes),
                "worst_curve": self.worst_curve, "median_residual": self.median_residual}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationStage:
        check_schema(d, cls.SCHEMA)
        info = d["calibration"]
        return cls(CalibrationInfo.from_dict(info) if info is not None else None, d["cached"],
                   d["quick"], d["measured_s"], d["path"], d["curves"], d["worst_residual"],
                   d["host_costs"], d["compiled"], list(d["notes"]), list(d["calibration_notes"]),
                   # absent from reports written before the curve was named
                   worst_curve=d.get("worst_curve"), median_residual=d.get("median_residual"))


@dataclass(frozen=True)
class ExpectedStep:
    """The calibrated expected time of one step ("what this machine will take"), in short: the
    step's seconds, its device and host parts, how they were composed, and the calibration's
    label (`perfmodel.expected.Expected` without its operations)."""

    step_time_s: float
    device_s: float
    host_s: float
    composition: str
    label: str

    @classmethod
    def of(cls, e: Any) -> ExpectedStep:
        return cls(float(e.step_time_s), float(e.device_s), float(e.host_s), e.composition, e.label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpectedStep:
        return cls(float(d["step_time_s"]), float(d["device_s"]), float(d["host_s"]),
                   d["composition"], d["label"])


# --- train --------------------------------------------------------------------------------------


@dataclass
class TrainStage:
    """The training run (its checkpoint path relative to the report), the step time it was fitted
    into its budget by (an eager step timed, or a compiled run's calibrated expected time), and
    the budget."""

    SCHEMA = "gptperf.report.train/1"

    result: TrainResult
    calibration_step_s: float
    time_budget_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "result": self.result.to_dict(),
                "calibration_step_s": self.calibration_step_s, "time_budget_s": self.time_budget_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainStage:
        check_schema(d, cls.SCHEMA)
        return cls(TrainResult.from_dict(d["result"]), d["calibration_step_s"], d["time_budget_s"])


# --- samples ------------------------------------------------------------------------------------


@dataclass
class Sample:
    """Text sampled from the trained model after `prompt` (tokens outside the byte range shown
    as '?'), how it was drawn, and how long it took (a first run, not a benchmark)."""

    prompt: str
    text: str
    tokens: int
    temperature: float
    top_k: int | None
    seed: int
    kv_cache: bool
    tokens_outside_bytes: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(**d)


@dataclass
class SamplesStage:
    """A sample and the lecture's sentences scored by the chain rule."""

    SCHEMA = "gptperf.report.samples/1"

    sample: Sample
    score: ScoreResult

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "sample": self.sample.to_dict(), "score": self.score.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplesStage:
        from gptperf.score import ScoreResult  # deferred: loads torch

        check_schema(d, cls.SCHEMA)
        return cls(Sample.from_dict(d["sample"]), ScoreResult.from_dict(d["score"]))


# --- performance model --------------------------------------------------------------------------


@dataclass
class ModelStage:
    """The performance model of each measured step, for the plan its benchmark runs under, on the
    machine every prediction of the report uses."""

    SCHEMA = "gptperf.report.model/1"

    hardware: Hardware
    predictions: dict[str, Prediction]  # workload kind -> prediction (decode_nocache included)
    total_parameters: int
    parameters_without_embeddings: int
    matmul_parameters: int
    # the calibrated expected time of each step (same kinds and plans), where a calibration is
    # usable and costs it; `expected_notes` say why one is missing
    expected: dict[str, ExpectedStep] = field(default_factory=dict)
    expected_notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "hardware": self.hardware.to_dict(),
                "hardware_label": self.hardware.label,
                "parameters": {"total": self.total_parameters,
                               "without_embeddings": self.parameters_without_embeddings,
                               "matmul": self.matmul_parameters},
                "predictions": {k: p.to_dict() for k, p in self.predictions.items()},
                "expected": {k: e.to_dict() for k, e in self.expected.items()},
                "expected_notes": list(self.expected_notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelStage:
        check_schema(d, cls.SCHEMA)
        p = d["parameters"]
        return cls(hardware_from_dict(d["hardware"]),
                   {k: Prediction.from_dict(v) for k, v in d["predictions"].items()},
                   p["total"], p["without_embeddings"], p["matmul"],
                   # absent from reports written before the calibrated prediction
                   {k: ExpectedStep.from_dict(e) for k, e in d.get("expected", {}).items()},
                   list(d.get("expected_notes", [])))


# --- bench, profile -----------------------------------------------------------------------------


@dataclass
class BenchStage:
    """One benchmark per measured step (train, prefill, decode)."""

    SCHEMA = "gptperf.report.bench/1"

    results: dict[str, BenchResult]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "results": {k: r.to_dict() for k, r in self.results.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchStage:
        check_schema(d, cls.SCHEMA)
        return cls({k: BenchResult.from_dict(r) for k, r in d["results"].items()})


@dataclass
class ProfileStage:
    """One profile per profiled step (train, decode); their paths relative to the report."""

    SCHEMA = "gptperf.report.profile/1"

    profiles: dict[str, ProfileResult]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA,
                "profiles": {k: p.to_dict() for k, p in self.profiles.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileStage:
        check_schema(d, cls.SCHEMA)
        return cls({k: ProfileResult.from_dict(p) for k, p in d["profiles"].items()})


# --- roofline -----------------------------------------------------------------------------------


@dataclass
class RooflineRow:
    """A whole step on the roofline: the model's FLOPs and intensity, its predicted and (when it
    was benchmarked) measured time; `batch` names a point of the decode batch sweep."""

    kind: str
    arithmetic_intensity: float
    flops: float
    predicted_s: float
    measured_s: float | None = None
    batch: int | None = None
    expected_s: float | None = None  # calibrated expected time (None: no calibration)
    # the bench's measured/expected, each step paired with its host sample (None: not benched so)
    paired_ratio: float | None = None

    @property
    def predicted_flops_per_s(self) -> float:
        return self.flops / self.predicted_s

    @property
    def measured_flops_per_s(self) -> float | None:
        return self.flops / self.measured_s if self.measured_s else None

    @property
    def ratio(self) -> float | None:
        """measured / predicted time."""
        return self.measured_s / self.predicted_s if self.measured_s and self.predicted_s else None

    @property
    def expected_ratio(self) -> float | None:
        """measured / calibrated expected time (the bench's, `paired_ratio`, where it has one)."""
        if self.paired_ratio is not None:
            return self.paired_ratio
        return self.measured_s / self.expected_s if self.measured_s and self.expected_s else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "predicted_flops_per_s": self.predicted_flops_per_s,
                "measured_flops_per_s": self.measured_flops_per_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RooflineRow:
        return cls(d["kind"], number(d["arithmetic_intensity"]), d["flops"], d["predicted_s"],
                   d["measured_s"], d["batch"], d.get("expected_s"), d.get("paired_ratio"))


@dataclass
class RooflineStage:
    """The ceilings drawn (label, FLOP/s or bytes/s) and every step's point."""

    SCHEMA = "gptperf.report.roofline/1"

    ceilings: list[tuple[str, float]]
    bandwidths: list[tuple[str, float]]
    rows: list[RooflineRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA,
                "ceilings": [{"label": k, "flops_per_s": v} for k, v in self.ceilings],
                "bandwidths": [{"label": k, "bytes_per_s": v} for k, v in self.bandwidths],
                "points": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RooflineStage:
        check_schema(d, cls.SCHEMA)
        return cls([(c["label"], c["flops_per_s"]) for c in d["ceilings"]],
                   [(b["label"], b["bytes_per_s"]) for b in d["bandwidths"]],
                   [RooflineRow.from_dict(r) for r in d["points"]])


# --- parallel scaling ---------------------------------------------------------------------------


@dataclass
class ScalingStage:
    """Data-parallel scaling studies (torchrun + DDP) by mode ("strong", "weak"), the command that
    reproduces each, why a mode was left out, and what happened on the way (a launch run again)."""

    SCHEMA = "gptperf.report.scaling/1"

    studies: dict[str, ScalingStudy]
    commands: dict[str, str] = field(default_factory=dict)  # mode -> `gptperf scale ...`
    skipped: dict[str, str] = field(default_factory=dict)  # mode -> why it did not run
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA,
                "studies": {mode: s.to_dict() for mode, s in self.studies.items()},
                "commands": dict(self.commands), "skipped": dict(self.skipped),
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScalingStage:
        check_schema(d, cls.SCHEMA)
        return cls({mode: ScalingStudy.from_dict(s) for mode, s in d["studies"].items()},
                   dict(d["commands"]), dict(d["skipped"]), list(d["notes"]))


# --- how good is the prediction -----------------------------------------------------------------


@dataclass
class ValidationStage:
    """`gptperf validate`'s quick sweep as far as the report's time budget allows: the result
    (None without a usable calibration), the cases left out and the per-operation profiles
    skipped to stay within `budget_s`, and notes."""

    SCHEMA = "gptperf.report.validation/1"

    result: ValidationResult | None
    budget_s: float = 0.0
    sweep_cases: int = 0  # cases in validate's quick sweep for this device
    left_out: list[str] = field(default_factory=list)  # cases not measured (budget)
    profiles_skipped: list[str] = field(default_factory=list)  # measured, not profiled (budget)
    notes: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """Cases of the sweep were left out: its figures are a sample, not the targets' verdict."""
        return bool(self.left_out)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA,
                "result": self.result.to_dict() if self.result is not None else None,
                "budget_s": self.budget_s, "sweep_cases": self.sweep_cases,
                "left_out": list(self.left_out), "profiles_skipped": list(self.profiles_skipped),
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationStage:
        check_schema(d, cls.SCHEMA)
        result = d["result"]
        return cls(ValidationResult.from_dict(result) if result is not None else None,
                   d["budget_s"], d["sweep_cases"], list(d["left_out"]),
                   list(d["profiles_skipped"]), list(d["notes"]))


def result_types() -> dict[str, type]:
    """The result type of each of the report's own stages, by stage name (ReportData's typed
    fields). The inference stage's is the producer's own: the stage adds nothing to it."""
    return {"device": DeviceStage, "calibration": CalibrationStage, "train": TrainStage,
            "samples": SamplesStage, "model": ModelStage, "bench": BenchStage,
            "profile": ProfileStage, "inference": InferenceResult, "roofline": RooflineStage,
            "scaling": ScalingStage, "validation": ValidationStage}
