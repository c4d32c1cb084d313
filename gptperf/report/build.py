"""Run the report's stages in order under one progress display, and swap the finished folder in.

The whole output folder is built in a temporary folder beside the target and replaces it only
when every stage has succeeded (`gptperf.atomic.atomic_dir`). So an interrupted report (Ctrl-C)
or a failed stage leaves the previous complete report as it was, or none; never half of one.
The one-line reason names the failed stage, and the command exits 2.
With `keep_going` a failed stage does not stop the others, and the page is written with that
section marked failed (and a banner naming it); the command still exits 2.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptperf.errors import UserError

MARKER = "gptperf-report"  # report.json's "format": proof that a folder is ours to replace
FORMAT_VERSION = 1


@dataclass
class ReportOptions:
    """What `gptperf report` was asked for; None means "the default for this device"."""

    out: str | os.PathLike[str] = "gptperf-report"
    preset: str | None = None
    device: str = "auto"
    dtype: str | None = None
    train_seconds: float | None = None
    compile: bool | None = None
    quick: bool = False
    keep_going: bool = False


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


def resolve_settings(options: ReportOptions) -> Settings:
    """Defaults for the device: tiny / fp32 / math attention / eager on CPU; gpt2 / bf16 /
    sdpa / compiled on a GPU. Bad values are one-line UserErrors."""
    from gptperf.model.config import PRESETS, preset
    from gptperf.runtime import device_name, resolve_device

    device = resolve_device(options.device)
    gpu = device.type == "cuda"
    name = options.preset or ("gpt2" if gpu else "tiny")
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    dtype = options.dtype or ("bf16" if gpu else "fp32")
    if dtype not in ("fp32", "tf32", "bf16", "fp16"):
        raise UserError(f"unknown dtype {dtype!r}; valid: fp32, tf32, bf16, fp16")
    if dtype == "fp16" and not gpu:
        raise UserError("dtype 'fp16' needs a CUDA GPU; on CPU use fp32 or bf16")
    if options.train_seconds is not None and not (
        isinstance(options.train_seconds, (int, float)) and math.isfinite(options.train_seconds)
        and options.train_seconds > 0
    ):
        raise UserError(f"--train-seconds must be a positive number, got {options.train_seconds!r}")
    # The explicit scores/softmax/context of math attention are the lecture's operations;
    # on a GPU the fused kernel (sdpa) is what anyone would run.
    overrides: dict[str, Any] = {"attention": "sdpa" if gpu else "math"}
    if options.quick:
        overrides.update(n_layer=2, n_head=2, n_embd=64, block_size=64)
    config = preset(name, **overrides)
    overrides = {k: v for k, v in overrides.items() if getattr(PRESETS[name], k) != v}
    block = config.block_size
    if options.quick:
        workloads = {"train": Workload("train", 4, 32), "prefill": Workload("prefill", 1, block),
                     "decode": Workload("decode", 1, block)}
        train_seconds = 4.0
    elif gpu:
        # nanoGPT's bench.py shape (B=12, T=1024): the anchor measured on an H100.
        workloads = {"train": Workload("train", 12, min(1024, block)),
                     "prefill": Workload("prefill", 1, block),
                     "decode": Workload("decode", 1, block)}
        train_seconds = 45.0  # compilation comes on top
    else:
        workloads = {"train": Workload("train", 12, min(64, block)),
                     "prefill": Workload("prefill", 1, block),
                     "decode": Workload("decode", 1, block)}
        train_seconds = 50.0  # the whole report in under 3 minutes on 2 cores
    if options.train_seconds is not None:
        train_seconds = float(options.train_seconds)
    return Settings(
        device=str(device), device_type=device.type, device_name=device_name(device),
        preset=name, config=config, model_overrides=overrides, dtype=dtype,
        compile=gpu if options.compile is None else bool(options.compile),
        quick=options.quick, train_seconds=train_seconds, workloads=workloads,
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


def check_output_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report: `--out .` must not wipe a home."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder for the report")
    if not any(out.iterdir()):
        return
    try:
        doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
        ours = isinstance(doc, dict) and doc.get("format") == MARKER
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise UserError(f"--out {str(out)!r} is a folder that holds no gptperf report; the "
                        "report replaces its folder whole, so give a new or empty folder")


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


class ProgressDisplay:
    """One rich display for the whole report on stderr: a line per stage with its time.

    A stage's bar shows the library's own progress (steps of the training run, repeats of a
    benchmark), scaled below 100 % so that the stage is marked done only when it returns.
    """

    def __init__(self, stages: Sequence[Any], console: Any = None) -> None:
        from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
        from rich.text import Text

        from gptperf.output import err_console

        class Elapsed(ProgressColumn):
            # rich's own column freezes at the first 100 %; this one runs until stop_task
            def render(self, task: Any) -> Text:
                return Text(f"{task.elapsed or 0.0:6.1f} s", style="progress.elapsed")

        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=24),
            Elapsed(),
            TextColumn("[dim]{task.fields[note]}"),
            console=console or err_console,
            transient=False,
        )
        self.count = len(stages)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, index: int, name: str, title: str) -> StageProgress:
        task = self.progress.add_task(f"{index}/{self.count} {title}", total=100, completed=0,
                                      note="")
        self.tasks[name] = task

        def update(done: float | None = None, total: float | None = None,
                   note: str | None = None) -> None:
            fields: dict[str, Any] = {}
            if done is not None and total:
                fields["completed"] = min(99.0, 100.0 * done / total)
            if note is not None:
                fields["note"] = note[:70]
            self.progress.update(task, **fields)

        return StageProgress(update)

    def finish(self, name: str, status: str, seconds: float, note: str = "") -> None:
        task = self.tasks[name]
        label = "[red]failed: [/red]" if status == "failed" else ""
        self.progress.update(task, completed=100, note=f"{label}{note}"[:90])
        self.progress.stop_task(task)


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


class StageFailed(Exception):
    def __init__(self, record: StageRecord, log: str | None) -> None:
        super().__init__(record.error)
        self.record = record
        self.log = log


def one_line(err: BaseException) -> str:
    """The exception as one line: its type (unless a UserError) and the first line of its text."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    if isinstance(err, UserError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@dataclass
class ReportResult:
    ok: bool
    out: Path
    settings: Settings | None
    records: list[StageRecord]
    wall_s: float
    failed: list[str] = field(default_factory=list)
    written: bool = False  # whether `out` now holds this run's report
    log: str | None = None  # full traceback of the failure

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "written": self.written,
            "page": str(self.out / "index.html") if self.written else None,
            "json": str(self.out / "report.json") if self.written else None,
            "failed_stages": self.failed, "traceback_log": self.log, "wall_s": self.wall_s,
            "stages": {r.name: r.to_dict() for r in self.records},
            "settings": self.settings.to_dict() if self.settings else None,
        }


def _write_log(stage: str, err: BaseException) -> str | None:
    """The full traceback in a temporary file (the one-line reason goes to the terminal)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f"gptperf-report-{stage}-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
        return name
    except OSError:
        return None


def build_report(
    options: ReportOptions,
    stages: Sequence[Stage] | None = None,
    *,
    console: Any = None,
) -> ReportResult:
    """Run every stage and write `options.out` (index.html, report.json, pictures, traces).

    Returns ok=False (and leaves the previous report) when a stage fails; re-raises
    KeyboardInterrupt after saying which stage it stopped.
    """
    from gptperf.atomic import atomic_dir
    from gptperf.output import err_console
    from gptperf.report import stages as stage_module

    console = console or err_console
    t0 = time.perf_counter()
    out = Path(options.out).expanduser()
    check_output_dir(out)
    settings = resolve_settings(options)
    stages = list(stages if stages is not None else stage_module.STAGES)
    records = [StageRecord(s.name, s.title, budget_s=s.budget_s) for s in stages]
    result = ReportResult(False, out, settings, records, 0.0)
    current = "setup"
    try:
        with atomic_dir(out) as tmp:
            ctx = Context(settings, Path(tmp), out,
                          records={r.name: r for r in records})
            ctx.objects["load_start"] = machine_load()
            with ProgressDisplay(stages, console) as display:
                for index, (stage, rec) in enumerate(zip(stages, records, strict=True), 1):
                    current = stage.name
                    progress = display.start(index, stage.name, stage.title)
                    t_stage = time.perf_counter()
                    try:
                        rec.data = stage.run(ctx, progress) or {}
                        rec.status = "ok"
                    except Exception as err:  # noqa: BLE001 - every failure is named and kept
                        rec.status, rec.error = "failed", one_line(err)
                        result.log = _write_log(stage.name, err)
                    rec.seconds = time.perf_counter() - t_stage
                    display.finish(stage.name, rec.status, rec.seconds, rec.error or "")
                    if rec.status == "failed" and not options.keep_going:
                        raise StageFailed(rec, result.log)
            current = "page"
            result.failed = [r.name for r in records if r.status == "failed"]
            result.wall_s = time.perf_counter() - t0
            try:
                stage_module.write_outputs(ctx, wall_s=result.wall_s)
            except Exception as err:  # noqa: BLE001 - named like any stage, previous page kept
                page = StageRecord("page", "Page", status="failed", error=one_line(err))
                result.log = _write_log("page", err)
                raise StageFailed(page, result.log) from err
    except StageFailed as failed:
        result.failed = [failed.record.name]
        result.wall_s = time.perf_counter() - t0
        kept = "the previous report is kept" if (out / "index.html").exists() else "no report was written"
        console.print(f"[red]gptperf report: stage '{failed.record.name}' failed: "
                      f"{failed.record.error}[/red]", highlight=False)
        console.print(f"{kept} ({out}); full traceback: {failed.log}; "
                      "--keep-going writes the page with that section marked failed",
                      highlight=False)
        return result
    except KeyboardInterrupt:
        kept = "the previous report is kept" if (out / "index.html").exists() else "no report was written"
        console.print(f"gptperf report: interrupted during stage '{current}'; {kept} ({out})",
                      highlight=False)
        raise
    result.written = True
    result.ok = not result.failed
    result.wall_s = time.perf_counter() - t0
    return result


def print_summary(result: ReportResult) -> None:
    """Stage times, what failed, and the page to open."""
    from rich.table import Table

    from gptperf.output import console, seconds

    table = Table(title="gptperf report: stages (wall time measured here)", title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("note")
    for rec in result.records:
        style = {"ok": "green", "failed": "red"}.get(rec.status, "dim")
        over = rec.status == "ok" and rec.budget_s and rec.seconds > 1.5 * rec.budget_s
        note = rec.error or (f"over its budget of {seconds(rec.budget_s)}" if over else "")
        table.add_row(rec.title, f"[{style}]{rec.status}[/{style}]", seconds(rec.seconds), note)
    table.caption = f"total {seconds(result.wall_s)}"
    console.print(table)
    if result.written:
        page = result.out / "index.html"
        console.print(f"report: [bold]{page}[/bold] (numbers: {result.out / 'report.json'}); "
                      f"open {page.resolve().as_uri()}", highlight=False, soft_wrap=True)
    if result.failed:
        console.print(f"[red]failed stage(s): {', '.join(result.failed)}[/red]")
