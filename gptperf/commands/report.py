"""`gptperf report`: the whole lecture in one command, written as one self-contained HTML page."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.text import Text

from gptperf.commands.common import add_device_argument, check_folder, output_path
from gptperf.errors import Terminated
from gptperf.model.config import PRESETS
from gptperf.output import emit_json, seconds

if TYPE_CHECKING:
    from gptperf.report.build import ReportResult
    from gptperf.report.context import StageRecord

HELP = ("train, sample, score, model, measure, profile and scale a GPT here, score the "
        "prediction, and write one HTML page")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="model shape (default: tiny on CPU, gpt2 on a GPU)")
    parser.add_argument("--out", type=output_path, metavar="DIR", default="gptperf-report",
                        help="folder for index.html, report.json, pictures and traces, replaced "
                             "whole: a new or empty folder or an earlier report with nothing else "
                             "in it (default: gptperf-report)")
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=("fp32", "tf32", "bf16", "fp16"), default=None,
                        help="compute precision (default: fp32 on CPU, bf16 on a GPU)")
    parser.add_argument("--train-seconds", type=float, default=None, metavar="S",
                        help="time budget of the training run in seconds, at most a day (default: 50 "
                             "on CPU, 45 plus compilation on a GPU)")
    pair = parser.add_mutually_exclusive_group()  # both at once: a one-line error
    pair.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="torch.compile the training step (training run, bench, profile; "
                             "default: on a GPU only)")
    pair.add_argument("--no-compile", dest="compile", action="store_false",
                        help="run every step eagerly")
    calibrate = parser.add_mutually_exclusive_group()
    calibrate.add_argument("--calibrate", dest="calibrate", action="store_true", default=None,
                           help="measure a quick calibration when this device has no usable one "
                                "cached (the default; the training run gives its time back)")
    calibrate.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                           help="never measure a calibration: use a cached one, or none")
    parser.add_argument("--quick", action="store_true",
                        help="very small everything (a test of the whole pipeline in about a "
                             "minute on a 2-core CPU)")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failed stage run the others and write the page with that "
                             "section marked failed (default: keep the previous page)")


def run(args: argparse.Namespace) -> int | None:
    from gptperf.output import err_console  # deferred: loads rich
    from gptperf.report import (  # deferred: keeps --help fast
        ReportInterrupted,
        ReportOptions,
        build_report,
    )

    check_folder(args.out, "--out", replaced_whole=True)  # before minutes of stages
    options = ReportOptions(
        out=args.out, preset=args.preset, device=args.device, dtype=args.dtype,
        train_seconds=args.train_seconds, compile=args.compile, quick=args.quick,
        keep_going=args.keep_going, calibrate=args.calibrate,
    )
    try:
        with ProgressDisplay(err_console) as display:
            result = build_report(options, progress=display)
    except ReportInterrupted as stop:
        how = "interrupted" if stop.signum is None else f"stopped by signal {stop.signum}"
        err_console.print(f"gptperf report: {how} during stage '{stop.stage}'; "
                          f"{_kept(stop.kept_previous)} ({stop.out})", highlight=False)
        if stop.signum is not None:
            raise Terminated(stop.signum) from None
        raise
    if result.error is not None:
        print_failure(result, err_console)
    if args.json:
        emit_json(result.to_dict())
    else:
        print_summary(result)
    return 0 if result.ok else 2


def _kept(kept_previous: bool) -> str:
    return "the previous report is kept" if kept_previous else "no report was written"


def print_failure(result: ReportResult, console: Any) -> None:
    """Why the report stopped (the stage and its one-line reason), what is on disk, the log."""
    console.print(f"[red]{escape(f'gptperf report: stage {result.failed[0]!r} failed: {result.error}')}[/red]",
                  highlight=False)
    console.print(escape(f"{_kept(result.kept_previous)} ({result.out}); full traceback: {result.log}; "
                         "--keep-going writes the page with that section marked failed"), highlight=False)


def print_summary(result: ReportResult, console: Any = None) -> None:
    """Stage times, what failed, and the page to open."""
    from rich.table import Table  # deferred: loads rich

    if console is None:
        from gptperf.output import console  # deferred: loads rich
    table = Table(title="gptperf report: stages (wall time measured here)", title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("note")
    # the stages' budgets are a guide on the 2-core CPU: a GPU's compiles and sweeps take longer
    guided = result.settings is None or result.settings.device_type == "cpu"
    for rec in result.records:
        style = {"ok": "green", "failed": "red"}.get(rec.status, "dim")
        over = guided and rec.status == "ok" and rec.budget_s and rec.seconds > 1.5 * rec.budget_s
        note = rec.error or (f"over its budget of {seconds(rec.budget_s)}" if over else "")
        table.add_row(rec.title, f"[{style}]{rec.status}[/{style}]", seconds(rec.seconds), escape(note))
    table.caption = f"total {seconds(result.wall_s)}"
    console.print(table)
    if result.written:
        page = result.out / "index.html"
        console.print(f"report: [bold]{escape(str(page))}[/bold] "
                      + escape(f"(numbers: {result.out / 'report.json'}); open {page.resolve().as_uri()}"),
                      highlight=False, soft_wrap=True)
    if result.failed:
        console.print(f"[red]failed stage(s): {', '.join(result.failed)}[/red]")


class ProgressDisplay:
    """One rich display for the whole report on stderr: a line per stage with its time
    (a `gptperf.report.ReportProgress`).

    A stage's bar shows the library's own progress (steps of the training run, repeats of a
    benchmark), scaled below 100 % so that the stage is marked done only when it returns.
    """

    def __init__(self, console: Any) -> None:
        from rich.progress import (  # deferred: loads rich
            BarColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
        )

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
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressDisplay:
        return self  # the display appears with the first stage, so setup errors print alone

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.stop()

    def stage_started(self, index: int, count: int, record: StageRecord) -> Callable[..., None]:
        if not self.tasks:
            self.progress.start()
        task = self.progress.add_task(f"{index}/{count} {record.title}", total=100, completed=0,
                                      note="")
        self.tasks[record.name] = task

        def update(done: float | None = None, total: float | None = None,
                   note: str | None = None) -> None:
            fields: dict[str, Any] = {}
            if done is not None and total:
                fields["completed"] = min(99.0, 100.0 * done / total)
            if note is not None:  # rendered as markup: a note's own brackets are text
                fields["note"] = escape(note[:70])
            self.progress.update(task, **fields)

        return update

    def stage_finished(self, record: StageRecord) -> None:
        task = self.tasks[record.name]
        label = "[red]failed: [/red]" if record.status == "failed" else ""
        self.progress.update(task, completed=100, note=label + escape((record.error or "")[:80]))
        self.progress.stop_task(task)
