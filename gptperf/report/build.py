"""Run the report's stages in order, telling a progress display, and swap the finished folder in.

The whole output folder is built in a temporary folder beside the target and replaces it only
when every stage has succeeded (`gptperf.atomic.atomic_dir`). So an interrupted report (Ctrl-C)
or a failed stage leaves the previous complete report as it was, or none; never half of one.
The one-line reason names the failed stage, and the command exits 2.
With `keep_going` a failed stage does not stop the others, and the page is written with that
section marked failed (and a banner naming it); the command still exits 2.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gptperf.atomic import atomic_dir
from gptperf.envinfo import device_name
from gptperf.errors import UserError
from gptperf.memguard import check_memory
from gptperf.model.config import PRESETS, preset
from gptperf.perfmodel.workload import Workload as Work
from gptperf.plan import ExecutionPlan
from gptperf.profiling.recorded import check_trace_folder
from gptperf.report import stages as stage_module
from gptperf.report.context import (
    MARKER,
    Context,
    ReportData,
    Settings,
    Stage,
    StageProgress,
    StageRecord,
    Workload,
    machine_load,
    one_line,
)
from gptperf.report.stages import PROFILE_KINDS, scaling_specs
from gptperf.writable import check_replaceable_dir

# The report's training run demonstrates; past a day a typo (`gptperf train` runs for real)
MAX_TRAIN_SECONDS = 86_400.0


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
    calibrate: bool | None = None  # measure a quick calibration when none is cached (default: yes)


def resolve_settings(options: ReportOptions) -> Settings:
    """Defaults for the device: tiny / fp32 / math attention / eager on CPU; gpt2 / bf16 /
    sdpa / compiled on a GPU; a quick calibration measured when none is cached (the training run
    gives its time back: `stages.training_seconds`). Bad values are one-line UserErrors."""
    from gptperf.runtime import resolve_device  # deferred: loads torch

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
        and 0 < options.train_seconds <= MAX_TRAIN_SECONDS
    ):
        raise UserError(f"--train-seconds must be a number of seconds above 0 and at most "
                        f"{MAX_TRAIN_SECONDS:g} (a day: the report's run is a demonstration, "
                        f"`gptperf train` a real run), got {options.train_seconds!r}")
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
        calibrate=True if options.calibrate is None else bool(options.calibrate),
        train_seconds_asked=options.train_seconds is not None,
    )


REPORT_BATCH = "the report's own; use a smaller --preset, or --quick"  # the memory advice's flag


def check_memory_fits(settings: Settings) -> None:
    """Refuse (one-line UserError) a report whose measured steps would not fit the device's free
    memory, before any stage allocates (`gptperf.memguard`): a CPU process out of memory is ended
    by the kernel without a word. Its train, prefill and decode steps (train under the compiled
    plan where it compiles), and on a CPU the scaling study's processes side by side."""
    import torch  # deferred: loads torch

    device = torch.device(settings.device)
    for w in settings.workloads.values():
        plan = (ExecutionPlan.default(w.kind, device.type, compile=True, dtype=settings.dtype,
                                      attention=settings.config.attention)
                if settings.compile and w.kind == "train" else None)
        check_memory(settings.config, Work(w.kind, w.batch, w.seq, settings.dtype), device,
                     flag=REPORT_BATCH, plan=plan)
    if device.type == "cpu":  # one CPU's memory holds every process of a study
        for spec in scaling_specs(settings).values():
            procs = max(spec.procs)
            batch = spec.batch if spec.mode == "weak" else max(1, spec.batch // procs)
            check_memory(settings.config, Work("train", batch, spec.seq, spec.dtype), device,
                         processes=procs, flag=REPORT_BATCH)


def is_report_document(doc: Any) -> bool:
    """Whether `doc` (report.json read back) is a report gptperf wrote: its "format" marker."""
    return isinstance(doc, dict) and doc.get("format") == MARKER


def check_report_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report: `--out .` must not wipe a home
    (the rule `gptperf profile` applies too: gptperf.writable.check_replaceable_dir); and a
    folder whose path torch.profiler would write into the profile stage's traces unescaped."""
    check_replaceable_dir(out, "--out", what="report", marker_file="report.json",
                          is_ours=is_report_document, written=report_files)
    check_trace_folder(out, "--out")


# What the report's stages write at the top of its folder (`report.stages`), whatever its
# settings, beside a folder per profiled kind
REPORT_FILES = ("index.html", "report.json", "pictures", "checkpoint")


def report_files(doc: Any) -> set[str] | None:
    """The names an earlier report wrote in its folder: REPORT_FILES, its profiles' folders and
    the first part of each of its pictures' and traces' paths; None for a document without them."""
    pictures, traces = doc.get("pictures"), doc.get("traces")
    if not (isinstance(pictures, dict) and isinstance(traces, dict)):
        return None
    paths = [str(path) for path in (*pictures.values(), *traces.values()) if str(path)]
    return ({*REPORT_FILES, *(f"profile-{kind}" for kind in PROFILE_KINDS)}
            | {Path(path).parts[0] for path in paths})


class ReportProgress(Protocol):
    """Whatever shows the report's progress (the command's display): told when a stage starts,
    it gives back the stage's own progress callback, `update(done, total, note)`; told when the
    stage has ended (its record holds status, seconds and error)."""

    def stage_started(self, index: int, count: int, record: StageRecord) -> Callable[..., None]: ...

    def stage_finished(self, record: StageRecord) -> None: ...


def _no_update(done: float | None = None, total: float | None = None, note: str | None = None) -> None:
    pass


class StageFailed(Exception):
    def __init__(self, record: StageRecord, log: str | None) -> None:
        super().__init__(record.error)
        self.record = record
        self.log = log


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C (or, with `signum`, SIGTERM or SIGHUP: `errors.Terminated`) during `stage`: nothing
    of this run was written; `kept_previous` says whether `out` still holds an earlier report. A
    KeyboardInterrupt, so it stops whatever called."""

    def __init__(self, stage: str, out: Path, kept_previous: bool, signum: int | None = None) -> None:
        super().__init__(stage)
        self.stage = stage
        self.out = out
        self.kept_previous = kept_previous
        self.signum = signum


SUMMARY_SCHEMA = "gptperf.report.run/1"


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
    error: str | None = None  # one line: why the report stopped (a stage or the page failed)

    @property
    def kept_previous(self) -> bool:
        """Nothing of this run was written and `out` still holds an earlier report."""
        return not self.written and (self.out / "index.html").exists()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SUMMARY_SCHEMA,
            "ok": self.ok, "written": self.written,
            "page": str(self.out / "index.html") if self.written else None,
            "json": str(self.out / "report.json") if self.written else None,
            "failed_stages": self.failed, "error": self.error, "traceback_log": self.log,
            "wall_s": self.wall_s,
            "stages": {r.name: r.to_dict() for r in self.records},
            "settings": self.settings.to_dict() if self.settings else None,
        }

    summary = to_dict


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
    progress: ReportProgress | None = None,
) -> ReportResult:
    """Run every stage and write `options.out` (index.html, report.json, pictures, traces),
    telling `progress` (if any) as each stage starts and ends.

    Returns ok=False with `error` set (and leaves the previous report) when a stage fails;
    raises ReportInterrupted (a KeyboardInterrupt) naming the stage on Ctrl-C.
    """
    t0 = time.perf_counter()
    out = Path(options.out).expanduser()
    check_report_dir(out)
    settings = resolve_settings(options)
    check_memory_fits(settings)
    stages = list(stages if stages is not None else stage_module.STAGES)
    records = [StageRecord(s.name, s.title, budget_s=s.budget_s) for s in stages]
    result = ReportResult(False, out, settings, records, 0.0)
    current = "setup"
    try:
        with atomic_dir(out) as tmp:
            report = ReportData(settings, records={r.name: r for r in records},
                                machine_load={"start": machine_load()})
            ctx = Context(settings, Path(tmp), out, report, started=t0)
            for index, (stage, rec) in enumerate(zip(stages, records, strict=True), 1):
                current = stage.name
                update = progress.stage_started(index, len(stages), rec) if progress else _no_update
                t_stage = time.perf_counter()
                try:
                    found = stage.run(ctx, StageProgress(update))
                    report.put(stage.name, {} if found is None else found)
                    rec.status = "ok"
                except Exception as err:  # noqa: BLE001 - every failure is named and kept
                    rec.status, rec.error = "failed", one_line(err)
                    result.log = _write_log(stage.name, err)
                rec.seconds = time.perf_counter() - t_stage
                if progress:
                    progress.stage_finished(rec)
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
        result.error = failed.record.error
        result.wall_s = time.perf_counter() - t0
        return result
    except KeyboardInterrupt as err:
        raise ReportInterrupted(current, out, (out / "index.html").exists(),
                                getattr(err, "signum", None)) from err
    result.written = True
    result.ok = not result.failed
    result.wall_s = time.perf_counter() - t0
    return result
