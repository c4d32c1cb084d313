"""What the report's stages share: the resolved settings, the context they run in, the progress
they report, the record of each, and `ReportData` — every stage's typed result together, whose
`to_dict()` is report.json and whose `from_dict()` reads it back — below the build loop (build),
the stages and the page."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.report.results import (
    BenchStage,
    CalibrationStage,
    DeviceStage,
    ModelStage,
    ProfileStage,
    RooflineStage,
    SamplesStage,
    ScalingStage,
    TrainStage,
    ValidationStage,
    result_types,
)

if TYPE_CHECKING:
    from gptperf.inference.sweep import InferenceResult

MARKER = "gptperf-report"  # report.json's "format": proof that a folder is ours to replace
FORMAT_VERSION = 2  # 2: every stage's data is its typed result's to_dict(), with a schema


@dataclass
class Workload:
    """One measured step: kind (train, prefill, decode, ...), batch and sequence/context length."""

    kind: str
    batch: int
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "batch": self.batch, "seq": self.seq}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Workload:
        return cls(d["kind"], d["batch"], d["seq"])


@dataclass
class Settings:
    """The options resolved on the device in hand: what every stage runs."""

    device: str  # torch device string, e.g. "cpu" or "cuda"
    device_type: str
    device_name: str
    preset: str
    config: Any  # GPTConfig
    model_overrides: dict[str, Any]  # fields changed from the preset (for the commands shown)
    dtype: str
    compile: bool
    quick: bool
    train_seconds: float
    workloads: dict[str, Workload]
    # measure a quick calibration when this device has no usable one cached (--no-calibrate: never)
    calibrate: bool = True
    train_seconds_asked: bool = False  # --train-seconds given: the run takes it, whatever came before

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "device_type": self.device_type,
            "device_name": self.device_name, "preset": self.preset,
            "config": self.config.to_dict(), "model_overrides": self.model_overrides,
            "dtype": self.dtype, "compile": self.compile, "quick": self.quick,
            "train_seconds": self.train_seconds,
            "workloads": {k: w.to_dict() for k, w in self.workloads.items()},
            "calibrate": self.calibrate, "train_seconds_asked": self.train_seconds_asked,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        return cls(
            device=d["device"], device_type=d["device_type"], device_name=d["device_name"],
            preset=d["preset"], config=GPTConfig.from_dict(d["config"]),
            model_overrides=dict(d["model_overrides"]), dtype=d["dtype"], compile=d["compile"],
            quick=d["quick"], train_seconds=d["train_seconds"],
            workloads={k: Workload.from_dict(w) for k, w in d["workloads"].items()},
            calibrate=d.get("calibrate", True),  # absent before the calibrated prediction
            train_seconds_asked=d.get("train_seconds_asked", False),
        )


def machine_load() -> dict[str, Any]:
    """Load average (1, 5, 15 min) and the cores this process may use: a busy machine slows
    every parallel operator, and the page says so."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = list(os.getloadavg())
    except (OSError, AttributeError):
        load = None
    threading_env = {k: os.environ[k] for k in THREADING_ENV if k in os.environ}
    return {"load_average": load, "cores": cores, "threading_env": threading_env}


# Environment variables that change how CPU work is spread over threads (recorded, not set).
THREADING_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS",
                 "KMP_BLOCKTIME")


# --- progress -------------------------------------------------------------------------------


class StageProgress:
    """What a stage (or the library call inside it) reports: steps done, total, a short note.

    Callable in the shapes library progress hooks use: `p("message")`, `p(done, total)`,
    `p(done, total, "message")`, or with keywords.
    """

    def __init__(self, update: Callable[..., None]) -> None:
        self._update = update

    def update(self, done: float | None = None, total: float | None = None,
               note: str | None = None) -> None:
        self._update(done=done, total=total, note=note)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        done = total = note = None
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        texts = [a for a in args if isinstance(a, str)]
        if numbers:
            done = numbers[0]
            total = numbers[1] if len(numbers) > 1 else None
        if texts:
            note = texts[0]
        done = kwargs.get("done", kwargs.get("completed", done))
        total = kwargs.get("total", total)
        note = kwargs.get("note", kwargs.get("message", note))
        self.update(done, total, note)


# --- stages ---------------------------------------------------------------------------------


@dataclass
class Stage:
    """One step of the report: `run(ctx, progress)` returns the stage's typed result (the type
    `results.result_types()` names for the report's own stages; any other stage may return a
    JSON-ready dict or an object with to_dict())."""

    name: str
    title: str
    run: Callable[[Context, StageProgress], Any]
    budget_s: float  # a guide on the 2-core CPU; there the summary flags a stage that took longer


@dataclass
class StageRecord:
    name: str
    title: str
    status: str = "pending"  # ok | failed | pending (not reached)
    seconds: float = 0.0
    budget_s: float = 0.0
    error: str | None = None  # one line

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "status": self.status, "seconds": self.seconds,
                "budget_s": self.budget_s, "error": self.error}

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> StageRecord:
        return cls(name, d["title"], d["status"], d["seconds"], d["budget_s"], d["error"])


@dataclass
class Command:
    """A command that reproduces some of the page's numbers, and what they are."""

    what: str
    command: str

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "command": self.command}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Command:
        return cls(d["what"], d["command"])


@dataclass
class ReportData:
    """Everything the page shows: the settings, each stage's record, the typed result of each of
    the report's own stages (None when it failed or did not run), the results of any other
    stages (`other`, JSON-ready), pictures and traces (paths relative to the report), and the
    commands that reproduce the numbers. report.json is `to_dict()`; `from_dict` reads it back
    into the same types."""

    settings: Settings
    records: dict[str, StageRecord] = field(default_factory=dict)
    device: DeviceStage | None = None
    calibration: CalibrationStage | None = None
    train: TrainStage | None = None
    samples: SamplesStage | None = None
    model: ModelStage | None = None
    bench: BenchStage | None = None
    profile: ProfileStage | None = None
    inference: InferenceResult | None = None
    roofline: RooflineStage | None = None
    scaling: ScalingStage | None = None
    validation: ValidationStage | None = None
    other: dict[str, Any] = field(default_factory=dict)
    pictures: dict[str, str] = field(default_factory=dict)  # name -> path relative to the report
    traces: dict[str, str] = field(default_factory=dict)  # what -> path relative to the report
    commands: list[Command] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    machine_load: dict[str, Any] = field(default_factory=dict)  # "start", "end": machine_load()
    wall_s: float = 0.0
    generated_utc: str | None = None
    gptperf: str = ""  # the version that wrote it

    def result(self, name: str) -> Any:
        """Stage `name`'s result (typed for the report's own stages), None if it has none."""
        return getattr(self, name) if name in result_types() else self.other.get(name)

    def put(self, name: str, result: Any) -> None:
        """Keep stage `name`'s result; a report stage must return its own type."""
        types = result_types()
        if name not in types:
            self.other[name] = result
            return
        if not isinstance(result, types[name]):
            raise TypeError(f"stage {name!r} returned a {type(result).__name__}, "
                            f"not a {types[name].__name__}")
        setattr(self, name, result)

    def to_dict(self) -> dict[str, Any]:
        def data(name: str) -> Any:
            r = self.result(name)
            return r.to_dict() if hasattr(r, "to_dict") else r

        return {
            "format": MARKER, "version": FORMAT_VERSION, "gptperf": self.gptperf,
            "generated_utc": self.generated_utc, "wall_s": self.wall_s,
            "settings": self.settings.to_dict(), "environment": dict(self.environment),
            "stages": {name: {**rec.to_dict(), "data": data(name)}
                       for name, rec in self.records.items()},
            "pictures": dict(self.pictures), "traces": dict(self.traces),
            "commands": [c.to_dict() for c in self.commands],
            "machine_load": dict(self.machine_load),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> ReportData:
        """report.json's document back into the typed results; a one-line UserError for another
        format or version, a stage result of another schema, or a malformed document."""
        if not isinstance(doc, dict) or doc.get("format") != MARKER:
            raise UserError("not a gptperf report: report.json lacks \"format\": \"gptperf-report\"")
        if doc.get("version") != FORMAT_VERSION:
            raise UserError(f"report.json is format version {doc.get('version')!r}; this gptperf "
                            f"reads version {FORMAT_VERSION} (make the report again)")
        where = "settings"
        try:
            report = cls(Settings.from_dict(doc["settings"]))
            types = result_types()
            for name, st in doc["stages"].items():
                where = f"stage {name!r}"
                report.records[name] = StageRecord.from_dict(name, st)
                if st.get("data") is None:
                    continue
                if name in types:
                    setattr(report, name, types[name].from_dict(st["data"]))
                else:
                    report.other[name] = st["data"]
            where = "the rest"
            report.pictures = dict(doc["pictures"])
            report.traces = dict(doc["traces"])
            report.commands = [Command.from_dict(c) for c in doc["commands"]]
            report.environment = dict(doc["environment"])
            report.machine_load = dict(doc["machine_load"])
            report.wall_s = doc["wall_s"]
            report.generated_utc = doc["generated_utc"]
            report.gptperf = doc["gptperf"]
        except UserError as err:
            raise UserError(f"report.json, {where}: {err}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise UserError(f"report.json, {where}, is malformed: {one_line(err)}") from None
        return report


@dataclass
class Context:
    """What stages share: the settings, the folder being built, and the report's data so far
    (each earlier stage's typed result, live objects such as the trained model included)."""

    settings: Settings
    dir: Path  # the temporary folder that becomes the report
    out: Path  # where it will be (for commands shown on the page)
    report: ReportData
    started: float = field(default_factory=time.perf_counter)  # the report's start (perf_counter)

    def elapsed(self) -> float:
        """Seconds since the report started: what a stage that fits a time budget has left."""
        return time.perf_counter() - self.started

    @property
    def records(self) -> dict[str, StageRecord]:
        return self.report.records

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def relative(self, path: str | os.PathLike[str]) -> str:
        return os.path.relpath(Path(path), self.dir)

    def add_picture(self, name: str, path: str | os.PathLike[str]) -> None:
        self.report.pictures[name] = self.relative(path)

    def add_trace(self, what: str, path: str | os.PathLike[str]) -> None:
        self.report.traces[what] = self.relative(path)

    def command(self, what: str, command: str) -> None:
        self.report.commands.append(Command(what, command))


def one_line(err: BaseException) -> str:
    """The exception as one line: its type (unless a UserError) and the first line of its text."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    if isinstance(err, UserError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
