"""`gptperf profile`: torch.profiler trace of a workload, every kernel attributed to an operation name."""

from __future__ import annotations

import argparse
import math
import statistics
from typing import TYPE_CHECKING, Any

from gptperf.commands.common import (
    add_device_argument,
    add_flag_pair,
    add_model_arguments,
    config_from_args,
    guard_memory,
    model_overrides,
    output_path,
    positive_int,
    positive_step_count,
    step_count,
)
from gptperf.errors import UserError
from gptperf.output import emit_json, print_note, seconds, si, wide_console
from gptperf.perfmodel.ops import ROOFLINE_DEFINITION
from gptperf.profiling.recorded import (
    DEFAULT_BATCH,
    DEFAULT_DTYPE,
    DEFAULT_KIND,
    DEFAULT_PRESET,
    DEFAULT_SEQ,
    DTYPES,
    PROFILE_KINDS,
)
from gptperf.writable import usable_path

if TYPE_CHECKING:
    from gptperf.profiling.compare import Row
    from gptperf.profiling.run import ProfileResult

HELP = "profile a workload with torch.profiler; attribute every kernel to an operation; compare with the model"


# Flags a recorded trace also says (--trace): None when not given, so that only flags the user
# gave are checked against the record; a run fills in the defaults (`profiling.recorded`'s).
DEFAULTS = {"preset": DEFAULT_PRESET, "workload": DEFAULT_KIND, "dtype": DEFAULT_DTYPE}
# The profiler's schedule, for a run only: None when not given, so that a re-analysis refuses it
# and a run takes `profile_workload`'s defaults.
SCHEDULE = ("wait", "warmup", "active")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser.add_argument_group("model"), DEFAULT_PRESET)

    w = parser.add_argument_group("workload")
    w.add_argument("--workload", choices=PROFILE_KINDS,
                   help=f"what one step does (default: {DEFAULT_KIND})")
    w.add_argument("--batch", type=positive_int, default=None,
                   help=f"sequences per step (default: {DEFAULT_BATCH})")
    w.add_argument("--seq", type=positive_int, default=None, help="tokens per sequence, or context length "
                   f"for decode (default: min(block, {DEFAULT_SEQ}))")
    w.add_argument("--dtype", choices=DTYPES, help=f"compute precision (default: {DEFAULT_DTYPE})")
    add_flag_pair(w, "compile", "torch.compile the model", "run eagerly (the default)")
    add_device_argument(w)
    w.add_argument("--hardware", default=None,
                   help="hardware for the prediction: a datasheet name or 'measured' "
                        "(default: measured ceilings if cached, else the datasheet of this device)")

    s = parser.add_argument_group("profiler schedule")
    s.add_argument("--wait", type=step_count, help="steps skipped before recording (default: 1)")
    s.add_argument("--warmup", type=positive_step_count, help="steps recorded and thrown away, at "
                   "least 1: the profiler's first recorded step is skewed (default: 2)")
    s.add_argument("--active", type=positive_step_count, help="steps recorded and analysed (default: 3)")
    s.add_argument("--no-overhead", action="store_true",
                   help="skip timing steps with and without the profiler")

    o = parser.add_argument_group("output")
    o.add_argument("--out", type=output_path, metavar="DIR", default="profile",
                   help="folder for traces, tables and pictures, replaced whole: a new or empty "
                        "folder or an earlier profile with nothing else in it (default: profile)")
    o.add_argument("--trace", metavar="FILE",
                   help="re-analyse an existing Chrome/Kineto JSON trace instead of running; the "
                        "model and workload are the ones it was recorded with (flags that "
                        "contradict them are refused, and so are the schedule's, --no-overhead "
                        "and --compile, which apply to a run)")
    o.add_argument("--top", type=positive_int, default=25, help="rows of the per-operation table (default: 25)")
    parser.set_defaults(**{k: None for k in (*DEFAULTS, *SCHEDULE)})


def run(args: argparse.Namespace) -> int | None:
    if args.trace is not None:
        args.trace = str(usable_path(args.trace, "--trace"))  # ~ expanded, as the check read it
        given = [f"--{k}" for k in SCHEDULE if getattr(args, k) is not None]
        given += ["--no-overhead"] * args.no_overhead
        if args.compile is not None:
            given.append(f"--{'' if args.compile else 'no-'}compile")
        if given:
            raise UserError(f"--trace {args.trace!r} re-analyses a recorded trace; "
                            f"{' '.join(given)} would not apply: drop {'it' if len(given) == 1 else 'them'}")

    from gptperf.profiling.run import (  # deferred: keeps --help fast
        analyse_trace_file,
        profile_workload,
    )

    # --out is checked by both, before any work: the folder is replaced whole, so only a new,
    # empty or earlier profile folder (a user's own files are never replaced nor written beside)
    if args.trace is not None:
        # flags left out take the trace's record; given ones must match it
        result = analyse_trace_file(
            args.trace, None, args.workload, batch=args.batch, seq=args.seq, dtype=args.dtype,
            device=args.device, model={"preset": args.preset, **model_overrides(args)},
            hardware=args.hardware, out_dir=args.out,
        )
    else:
        for k, v in DEFAULTS.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
        config = config_from_args(args)
        batch = args.batch if args.batch is not None else DEFAULT_BATCH
        seq = args.seq if args.seq is not None else min(config.block_size, DEFAULT_SEQ)
        from gptperf.runtime import resolve_device  # deferred: loads torch

        device = resolve_device(args.device)
        config.check_sequence(seq)
        guard_memory(config, args.workload, batch, seq, args.dtype, device, compile=bool(args.compile))
        result = profile_workload(
            config, args.workload, batch=batch, seq=seq, dtype=args.dtype,
            device=device, compile=bool(args.compile), hardware=args.hardware,
            out_dir=args.out, **{k: getattr(args, k) for k in SCHEDULE if getattr(args, k) is not None},
            overhead=not args.no_overhead,
        )
    if args.json:
        emit_json(result.to_dict())
    else:
        print_result(result, top=args.top)
    return 0


def print_result(result: ProfileResult, top: int = 25) -> None:
    """Tables (per component, per operation) and the figures that say how far to trust them
    (a gptperf.profiling.ProfileResult)."""
    from gptperf.output import console  # deferred: loads rich

    _print_header(console, result)
    n_steps = len(result.step_wall_s)
    wide = wide_console()
    for title, rows, limit in (("per component (summed over layers)", result.comparison.components, None),
                               ("per operation", result.comparison.ops, top)):
        wide.print(_rows_table(f"{title}; median of {n_steps} active steps", rows, limit))
    _print_columns_legend(console, result)
    if result.comparison.phases:
        console.print("per phase: " + ", ".join(
            f"{r.phase} {seconds(r.measured_s)} (roofline bound {seconds(r.predicted_s)}"
            + (f", expected {seconds(r.expected_s)}" if not math.isnan(r.expected_s) else "") + ")"
            for r in result.comparison.phases))
    if result.expected:
        _print_expected_step(console, result.expected)
    _print_trust(console, result, n_steps)
    for note in result.notes:
        print_note(console, note)
    console.print(f"attribution: {result.method}")
    console.print("wrote: " + ", ".join(f"{k} {v}" for k, v in result.paths.items()))


def _print_header(console: Any, result: ProfileResult) -> None:
    """What was profiled, where, predicted with what, and where the workload was taken from."""
    wl = result.workload
    console.print(
        f"[bold]profile[/bold] {wl['kind']} {wl['config'].get('name') or ''} batch {wl['batch']} "
        f"seq {wl['seq']} {wl['dtype']}{' compiled' if wl.get('compile') else ''} — measured on "
        f"{result.device}; predicted with {result.hardware}"
    )
    if wl.get("source") == "flags":  # nothing checked these against what actually ran
        console.print("[yellow]workload taken from the flags (--preset, model flags, --workload, "
                      "--batch, --seq, --dtype, or their defaults): the trace does not record "
                      "what was profiled[/yellow]")
    elif wl.get("source") == "trace record":
        console.print("workload as recorded with the trace")


def _rows_table(title: str, rows: list[Row], limit: int | None) -> Any:
    """A comparison table of the first `limit` rows (None: all): each row's measured time and
    spread, achieved rates, and its prediction (with the calibrated expected time and occupancy
    columns where any of `rows` has them)."""
    from rich import box  # deferred: loads rich
    from rich.table import Table  # deferred: loads rich

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    with_occ = any(r.occupancy_pct is not None for r in rows)
    with_exp = any(not math.isnan(r.expected_s) for r in rows)
    cols = ["name", "ph", "time", "±", "calls", "share", "AI", "FLOP/s", "GB/s", "%roof",
            "pred", "m/p"] + (["exp", "m/e"] if with_exp else []) + (["occ%"] if with_occ else [])
    for col in cols:
        t.add_column(col, justify="left" if col in ("name", "ph") else "right",
                     no_wrap=True)
    for r in rows[:limit] if limit else rows:
        spread = (r.measured_max_s - r.measured_min_s) / 2 / r.measured_s if r.measured_s else math.nan
        cells = [
            r.name, r.phase, seconds(r.measured_s), _f(100 * spread, ".0f") + "%", str(r.calls),
            f"{100 * r.share:.1f}%", _f(r.arithmetic_intensity, ".3g"),
            si(r.achieved_flops, "", digits=2).strip() or "—",
            _f(r.achieved_bytes_per_s / 1e9, ".2g"), _f(r.pct_of_roofline, ".2g"),
            seconds(r.predicted_s), _f(r.ratio, ".2g"),
        ]
        if with_exp:
            cells += [seconds(r.expected_s), _f(r.expected_ratio, ".2g")]
        if with_occ:
            cells.append(_f(r.occupancy_pct, ".0f"))
        t.add_row(*cells)
    return t


def _print_columns_legend(console: Any, result: ProfileResult) -> None:
    """What the tables' columns mean, and the hardware (and calibration) they were predicted with."""
    console.print("columns: time = measured median per step, ± = half the min-max range, calls = "
                  f"{result.unit}s per step, AI = predicted FLOP/byte, FLOP/s and GB/s = predicted "
                  "counts / measured time, %roof = roofline time max(FLOPs/π, bytes/β), without launch "
                  "latency, / measured time, pred = roofline bound (what the hardware allows: "
                  f"{ROOFLINE_DEFINITION}), m/p = measured / pred, "
                  + ("exp = calibrated expected device time of the op's kernels (what this "
                     "machine will take), m/e = measured / exp, " if result.expected else "")
                  + "occ% = achieved occupancy (GPU trace); "
                  f"hardware for AI, %roof and pred: {result.hardware}"
                  + (f"; exp: {result.expected['label']}" if result.expected else ""))


def _print_expected_step(console: Any, e: dict[str, Any]) -> None:
    """The measured step against its roofline bound and calibrated expected time."""
    from gptperf.measure.bench import host_charge_note  # deferred: keeps --help fast

    roofline = (f"roofline bound {seconds(e['roofline_step_time_s'])}, "
                if e.get("roofline_step_time_s") is not None else "")
    console.print(
        f"step: measured {seconds(e['measured_step_time_s'])} ({e['measured_step_source']}); "
        f"{roofline}calibrated expected {seconds(e['step_time_s'])} (device "
        f"{seconds(e['device_s'])}, host {seconds(e['host_s'])}; {e['composition']}); "
        f"measured / expected {_f(e['measured_over_expected'], '.2f')} — {e['label']}")
    charge = host_charge_note(e)
    if charge:
        console.print(f"  {charge}")


def _print_trust(console: Any, result: ProfileResult, n_steps: int) -> None:
    """The figures that say how far to trust the tables: coverage, attribution methods, what was
    left unattributed, the median error, the profiler's overhead, provenance."""
    console.print(
        f"coverage: {100 * result.coverage:.1f}% of {result.unit} time attributed "
        f"(exact, without predicted-share splits: {100 * result.exact_coverage:.1f}%); "
        f"{result.unit}s fill {100 * result.busy:.0f}% of the step wall time, so the attributed "
        f"time is {100 * result.coverage * result.busy:.0f}% of it "
        f"(median step {seconds(_median(result.step_wall_s))}, profiler clock)"
    )
    console.print(f"time by attribution method over {n_steps} steps: " + ", ".join(
        f"{k} {seconds(v)}" for k, v in sorted(result.by_method.items(), key=lambda kv: -kv[1])))
    if result.unattributed_top:
        console.print("largest unattributed: " + ", ".join(
            f"{k} {seconds(v)}/step" for k, v in result.unattributed_top))
    console.print(f"median |measured/predicted - 1| over components >= 2% of the step: "
                  f"{_f(result.median_abs_error, '.2f')} (roofline)"
                  + (f", {_f(result.median_abs_error_expected, '.2f')} (calibrated expected)"
                     if result.expected else ""))
    if result.overhead:
        o = result.overhead
        console.print(
            f"profiler overhead: step {seconds(o['step_s_without'])} without, "
            f"{seconds(o['step_s_with'])} with the profiler recording "
            f"({100 * o['overhead']:+.1f}%; median of {o['repeats']}, {o['clock']})"
        )
    if not result.prediction_available:
        console.print("[yellow]no prediction: gptperf.perfmodel.predict is not available[/yellow]")
    if result.provenance is not None:
        console.print(f"inductor provenance recorded {result.provenance['kernels']} generated "
                      f"kernels and {result.provenance['extern_calls']} extern calls")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def _f(x: float | None, fmt: str) -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "—"
    return format(x, fmt)
