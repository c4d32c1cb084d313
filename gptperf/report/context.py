"""What the report's stages share: the resolved settings, the context they run in, the progress
they report, and the record of each — below the build loop (build), the stages and the page."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptperf.errors import UserError

MARKER = "gptperf-report"  # report.json's "format": proof that a folder is ours to replace
FORMAT_VERSION = 1


@dataclass
class Workload:
    """One measured step: kind (train, prefill, decode, ...), batch and sequence/context length."""

    kind: str
    batch: int
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "batch": self.batch, "seq": self.seq}


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "device_type": self.device_type,
            "device_name": self.device_name, "preset": self.preset,
            "config": self.config.to_dict(), "model_overrides": self.model_overrides,
            "dtype": self.dtype, "compile": self.compile, "quick": self.quick,
            "train_seconds": self.train_seconds,
            "workloads": {k: w.to_dict() for k, w in self.workloads.items()},
        }


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
    """One step of the report: `run(ctx, progress)` returns the stage's JSON-ready numbers."""

    name: str
    title: str
    run: Callable[[Context, StageProgress], dict[str, Any]]
    budget_s: float  # a guide on the 2-core CPU; the summary flags a stage that took longer


@dataclass
class StageRecord:
    name: str
    title: str
    status: str = "pending"  # ok | failed | pending (not reached)
    seconds: float = 0.0
    budget_s: float = 0.0
    error: str | None = None  # one line
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "status": self.status, "seconds": self.seconds,
                "budget_s": self.budget_s, "error": self.error}


@dataclass
class Context:
    """What stages share: the settings, the folder being built, and each other's results."""

    settings: Settings
    dir: Path  # the temporary folder that becomes the report
    out: Path  # where it will be (for commands shown on the page)
    records: dict[str, StageRecord] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)  # live objects (model, results)
    pictures: dict[str, str] = field(default_factory=dict)  # name -> path relative to dir
    traces: dict[str, str] = field(default_factory=dict)  # what -> path relative to dir
    commands: list[dict[str, str]] = field(default_factory=list)  # what, command

    def data(self, name: str) -> dict[str, Any] | None:
        """A finished stage's numbers, or None if it failed or did not run."""
        rec = self.records.get(name)
        return rec.data if rec is not None and rec.status == "ok" else None

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def relative(self, path: str | os.PathLike[str]) -> str:
        return os.path.relpath(Path(path), self.dir)

    def add_picture(self, name: str, path: str | os.PathLike[str]) -> None:
        self.pictures[name] = self.relative(path)

    def command(self, what: str, command: str) -> None:
        self.commands.append({"what": what, "command": command})


def one_line(err: BaseException) -> str:
    """The exception as one line: its type (unless a UserError) and the first line of its text."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    if isinstance(err, UserError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
