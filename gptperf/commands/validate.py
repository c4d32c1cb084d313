"""`gptperf validate`: how good is the calibrated prediction — a sweep of configurations off the
calibration's shapes, measured, predicted and scored against gptperf's accuracy targets."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.atomic import write_text
from gptperf.commands.common import check_folder, output_path, seed_number
from gptperf.errors import UserError
from gptperf.output import (
    apart_digits,
    emit_json,
    percent,
    print_note,
    ratio_range,
    rich_progress,
    seconds,
    to_json,
    wide_console,
)
from gptperf.writable import check_replaceable_file

if TYPE_CHECKING:
    from gptperf.validate.results import ErrorStats, ValidationPoint, ValidationResult

HELP = ("score the calibrated prediction: a sweep of configurations measured and predicted, "
        "median/p90/max error and per-operation error against their targets")
PLOT_NAME = "validation"
PLOT_FORMATS = ("png", "svg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the report's short sweep (about 8 cases; GPU ~90 s, CPU ~1 min)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--plot-dir", type=output_path, metavar="DIR",
                        help="write validation.png and validation.svg (predicted vs measured) there, "
                             "replacing only pictures gptperf drew")
    parser.add_argument("--out", type=output_path, metavar="FILE",
                        help="also write the JSON document to FILE (atomically; an existing FILE "
                             "only if it holds an earlier validate result)")
    parser.add_argument("--random", type=int, metavar="N",
                        help="instead of the fixed sweep, N configurations drawn at random off it "
                             "and off the calibration's shapes (1 to 64)")
    parser.add_argument("--seed", type=seed_number, metavar="S",
                        help="the draw's seed for --random (default: a new one, printed)")
    parser.add_argument("--isolate", action="store_true",
                        help="measure each case in a fresh process, as `gptperf bench` does "
                             "(slower: a process start and, if compiled, a compilation per case)")


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape  # deferred: loads rich

    from gptperf.output import err_console  # deferred: loads rich
    from gptperf.validate.drawn import MAX_CASES, draw_cases  # deferred: keeps --help fast
    from gptperf.validate.results import SCHEMA, CalibrationInfo  # deferred: keeps --help fast
    from gptperf.validate.run import validate  # deferred: keeps --help fast

    if args.random is not None and not 1 <= args.random <= MAX_CASES:
        raise UserError(f"--random {args.random}: draw 1 to {MAX_CASES} cases")
    if args.random is not None and args.quick:
        raise UserError("--random draws its own cases; leave out --quick")
    if args.seed is not None and args.random is None:
        raise UserError(f"--seed {args.seed} seeds --random N; give --random too")
    if args.plot_dir is not None:
        check_folder(args.plot_dir, "--plot-dir", pictures=[f"{PLOT_NAME}.{fmt}" for fmt in PLOT_FORMATS])
    if args.out is not None:  # a user's own file is never replaced
        check_replaceable_file(args.out, "--out", what="validate result",
                               is_ours=lambda doc: isinstance(doc, dict) and doc.get("schema") == SCHEMA)
    from gptperf.measure.calibrate import calibration_for  # deferred: loads torch
    from gptperf.runtime import resolve_device  # deferred: loads torch

    device = resolve_device(args.device)
    # before any work: a missing (or stale, foreign) calibration is a one-line error
    calibration = calibration_for(device, required=True)
    sweep, seed = None, None
    if args.random is not None:
        import secrets  # deferred: keeps --help fast

        seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
        sweep = draw_cases(device.type, args.random, seed)
    if not args.json:
        err_console.print(f"[bold]{escape(CalibrationInfo.of(calibration).label)}[/bold]")
        if seed is not None:  # said first: an interrupted sweep can be drawn again
            err_console.print(f"{args.random} cases drawn with seed {seed} (gptperf validate --device "
                              f"{device.type} --random {args.random} --seed {seed} draws them again)")
    with rich_progress(enabled=not args.json, description="validate") as progress:
        result = validate(device, args.quick, progress=progress, calibration=calibration,
                          isolate=args.isolate, sweep=sweep, seed=seed)
    doc = result.to_dict()
    if args.plot_dir:
        from gptperf.plotting.validation import plot_validation  # deferred: keeps --help fast

        folder = Path(args.plot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        doc["plots"] = [str(plot_validation(result, folder / f"{PLOT_NAME}.{fmt}"))
                        for fmt in PLOT_FORMATS]
    if args.out:
        write_text(args.out, to_json(doc) + "\n")
    if args.json:
        emit_json(doc)
    else:
        print_result(result, doc.get("plots", []), args.out)
    return 0  # a missed target is a measurement, not a failure


def _ratio(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3f}×"


def print_result(r: ValidationResult, plots: list[str], out: str | None) -> None:
    """The terminal report of a `gptperf.validate.ValidationResult`."""
    from gptperf.validate.results import TARGETS  # deferred: keeps --help fast

    console = wide_console()
    split = r.bound_stats()  # None where steps are not split by what holds them up (a CPU)
    # a case is marked beyond the target its sweep's spread is held to (a CPU has a median's only)
    targets = TARGETS.get(r.device_type, {})
    mark_above = targets.get("p90", targets.get("median", math.inf))
    _print_header(console, r)
    console.print(_cases_table(r, split, mark_above))
    _print_case_legends(console, r, split, mark_above)
    _print_error_summary(console, r, split)
    if r.per_op:
        _print_per_op(console, r)
    _print_targets(console, r)
    _print_footer(console, r, plots, out)


def _print_header(console: Any, r: ValidationResult) -> None:
    """The calibration predicted from, and what was measured where."""
    from rich.markup import escape  # deferred: loads rich

    c = r.calibration
    console.print("[bold]Calibration[/bold]: " + escape(
        f"{c.device_name}, made {c.created_at} ({c.age_days:.1f} days old, torch {c.torch_version})"))
    console.print("[bold]validate[/bold] " + escape(
        f"on {r.device_type} ({r.device_name}) · {r.sweep_label} sweep · {len(r.points)} cases measured")
        + (f", {len(r.skipped)} skipped" if r.skipped else ""))


def _cases_table(r: ValidationResult, split: dict[str, ErrorStats] | None, mark_above: float) -> Any:
    """The table of each case's measured step against its calibrated prediction and roofline bound."""
    from rich.markup import escape  # deferred: loads rich
    from rich.table import Table  # deferred: loads rich

    table = Table(title="Step time per case: measured (median of the timed steps) against the "
                        "calibrated prediction and the roofline bound")
    for col in ("case", "plan", "measured", "steps p10–p90", "calibrated", "m/p", "host now/then",
                "roofline bound", "m/roofline"):
        table.add_column(col, justify="left" if col in ("case", "plan") else "right")
    for p in r.points:
        flag = "" if p.error <= mark_above else " [yellow]![/yellow]"
        roof = p.measured_s / p.roofline_s if p.roofline_s else None
        table.add_row(escape(p.case), escape(p.plan_label), seconds(p.measured_s), ratio_range(p.step_spread),
                      seconds(p.expected_s),
                      _ratio(p.ratio) + flag, _host_cell(p, split), seconds(p.roofline_s), _ratio(roof))
    return table


def _host_cell(p: ValidationPoint, split: dict[str, ErrorStats] | None) -> str:
    """The "host now/then" cell: the host's speed the case's host costs were charged at (per
    phase where charged so), the fork's beside it, and whether the host holds the step up."""
    # the host's speed the case's host costs were charged at (none in a CUDA graph)
    host = _ratio(p.host_speed) if p.host_speed is not None and not p.plan.cuda_graph else "—"
    if p.host_phase_speeds and host != "—":  # what each phase was charged at instead
        host += "\n" + " ".join(f"{k} {_ratio(v)}" for k, v in p.host_phase_speeds.items())
    if p.fork_speed is not None:  # a CPU's parallel regions then, beside the host's speed
        host += f"\nfork {_ratio(p.fork_speed)}"
    if split is not None and p.host_bound:  # its time moves with the host's speed
        host += "\nholds it up"
    return host


def _print_case_legends(console: Any, r: ValidationResult, split: dict[str, ErrorStats] | None,
                        mark_above: float) -> None:
    """What the cases table's marks and columns mean (those it shows), then the skipped cases."""
    from rich.markup import escape  # deferred: loads rich

    from gptperf.measure.probe import FORK_SPELL  # deferred: keeps --help fast
    from gptperf.validate.results import HOST_BOUND_SHARE  # deferred: keeps --help fast

    if any(p.error > mark_above for p in r.points):
        console.print(f"!: |m/p − 1| above {percent(mark_above)}")
    if any(p.paired_ratio is not None for p in r.points):
        console.print("m/p: where the host was sampled among a case's steps, the median over its "
                      "steps of each step over the prediction at the host sampled nearest it (the "
                      "host can change speed within a case: both sides of each ratio are of one "
                      "host); the calibrated column is charged at the samples' median; without "
                      "samples, measured over calibrated")
    if any(p.trace is not None for p in r.points):
        console.print("steps p10–p90: the case's own timed steps at their 10th and 90th percentile "
                      "over their median (how far the measurement moved while it ran)")
    if any(p.host_speed is not None for p in r.points):
        console.print("host now/then: the calibration's host-model step of the case's kind (its "
                      "train step for a train case, its decode step otherwise) sampled between the "
                      "case's steps over its time at calibration (where no sample was taken: probed "
                      "for a second after the case, else the median of the others of that kind); "
                      "each case's host costs are charged at it, a train step's phase by phase at "
                      "its own phase of the train step where listed below it"
                      + ("; fork: a parallel CPU add timed with each sample, over its time at "
                         "calibration (the case's parallel kernels are charged at it, as far as their "
                         f"tensors stay in the cache; at ≥ ×{FORK_SPELL:.2f} or ≤ ×{1 / FORK_SPELL:.2f} "
                         "the case ran in a spell of this machine's fork and join)"
                         if any(p.fork_speed is not None for p in r.points) else "")
                      + (f"; holds it up: the case's predicted host time is ≥ {HOST_BOUND_SHARE:g}× its "
                         "device time" if split is not None and any(p.host_bound for p in r.points)
                         else ""))
    for s in r.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(s.case)}: {escape(s.reason)}")


def _print_error_summary(console: Any, r: ValidationResult, split: dict[str, ErrorStats] | None) -> None:
    """The end-to-end error over the cases: overall, host- against device-bound, outside spells."""
    from gptperf.validate.results import HOST_BOUND_SHARE  # deferred: keeps --help fast

    st, rs = r.stats, r.roofline_stats
    console.print(f"End to end over {st.n} cases, |measured/predicted − 1| (calibrated): "
                  f"median {percent(st.median)}, p90 {percent(st.p90)} (nearest rank), max {percent(st.max)}"
                  f"  ·  roofline bound instead: median {percent(rs.median)}, max {percent(rs.max)}")
    if split and split["host"].n and split["device"].n:  # where the error comes from
        console.print("; ".join(
            f"{what}: {s.n} case{'' if s.n == 1 else 's'}, median {percent(s.median)}, p90 {percent(s.p90)}, max {percent(s.max)}"
            for what, s in ((f"Host-bound steps (predicted host time ≥ {HOST_BOUND_SHARE:g}× device "
                             "time)", split["host"]), ("device-bound", split["device"]))))
    if r.spell_count:  # beside the verdict, which stays on every case
        ss = r.steady_stats
        console.print(f"Without the {r.spell_count} case(s) run in a spell of the machine (fork): "
                      + (f"median {percent(ss.median)}, p90 {percent(ss.p90)}, max {percent(ss.max)} "
                         f"over {ss.n} cases" if ss.n else "no case left"))


def _print_per_op(console: Any, r: ValidationResult) -> None:
    """The profiled cases' per-operation errors: a table, then the error over all operations."""
    from rich.markup import escape  # deferred: loads rich
    from rich.table import Table  # deferred: loads rich

    from gptperf.validate.results import OP_FLOOR_S  # deferred: keeps --help fast

    ops = Table(title=f"Per operation (profiled cases; operations ≥ {seconds(OP_FLOOR_S)}; "
                      "device time per step)")
    for col in ("case", "operations", "measured", "time-weighted error", "largest miss"):
        ops.add_column(col, justify="left" if col in ("case", "largest miss") else "right")
    for e in r.per_op:
        worst = e.worst(1)
        miss = (f"{worst[0].name} {worst[0].phase}: {seconds(worst[0].measured_s)} measured, "
                f"{seconds(worst[0].expected_s)} predicted") if worst else "—"
        ops.add_row(escape(e.case), str(len(e.ops)), seconds(e.measured_s), percent(e.error),
                    escape(miss))
    console.print(ops)
    console.print(f"Per-operation error over all {r.per_op_count} operations: "
                  f"{percent(r.per_op_error)} (Σ|m − p| / Σm)")


def _print_targets(console: Any, r: ValidationResult) -> None:
    """The verdict on each of the device's accuracy targets."""
    from rich.table import Table  # deferred: loads rich

    verdicts = Table(title=f"Accuracy targets ({'GPU' if r.device_type == 'cuda' else 'CPU'})")
    for col in ("what", "reached", "target", "verdict"):
        verdicts.add_column(col, justify="left" if col == "what" else "right")
    for v in r.verdicts():
        color = {"PASS": "green", "MISS": "red"}.get(v.word, "yellow")
        digits = apart_digits(v.value, v.target)
        verdicts.add_row(v.label, percent(v.value, digits), f"≤ {percent(v.target, digits)}",
                         f"[{color}]{v.word}[/{color}]")
    console.print(verdicts)


def _print_footer(console: Any, r: ValidationResult, plots: list[str], out: str | None) -> None:
    """Wall time, how to draw the same cases again, the speed probes, what was written, the notes."""
    from rich.markup import escape  # deferred: loads rich

    from gptperf.measure.probe import PARTS  # deferred: keeps --help fast

    console.print(f"Wall time: {seconds(r.wall_time_s)}")
    if r.seed is not None:
        console.print(f"The same cases again: gptperf validate --device {r.device_type} "
                      f"--random {len(r.points) + len(r.skipped)} --seed {r.seed}")
    for what, ratios in (("at validation's start over time at calibration", r.speed_vs_calibration),
                         ("at validation's end over time at its start", r.speed_drift)):
        if ratios:  # both probes measured on this device
            parts = ", ".join(f"{PARTS[k]} ×{v:.2f}" for k, v in ratios.items() if k in PARTS)
            console.print(f"Speed probe, time {what} (this device): {parts}")
    for path in plots:
        console.print(f"[dim]picture written: {escape(str(path))}[/dim]")
    if out:
        console.print(f"[dim]JSON written: {escape(out)}[/dim]")
    for note in r.notes:
        print_note(console, note)
