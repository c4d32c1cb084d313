"""`gptperf calibrate`: measure this device's calibration (kernel curves, host costs, compiled
kernels) for the calibrated prediction, cache it, and show each curve's fit residual."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.output import emit_json, print_note, rich_progress, seconds, wide_console
from gptperf.perfmodel.calibration import HOST_DEEP_LAYERS, curve_key, unaligned_rates_text
from gptperf.plan import COMPILED, EAGER

if TYPE_CHECKING:
    from gptperf.perfmodel.calibration import Calibration
    from gptperf.perfmodel.curves import Curve

HELP = ("measure this device's calibration for the calibrated prediction: kernel time curves, "
        "host cost per step, compiled kernels")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes and repeats (CPU: under half a minute)")
    parser.add_argument("--force", action="store_true",
                        help="measure again even when this device has a usable calibration "
                             "younger than a day")


def run_calibration(device: Any, *, quick: bool, force: bool, show_progress: bool) -> tuple[Any, bool, Path]:
    """(calibration, cached, path) with progress bars on stderr (also `gptperf ceilings`' end)."""
    from gptperf.measure.calibrate import ensure_calibration  # deferred: loads torch
    from gptperf.profiling.hooks import profiler_hooks  # deferred: keeps --help fast

    with rich_progress(enabled=show_progress, description="calibrate") as progress:
        return ensure_calibration(device, quick=quick, force=force, progress=progress,
                                  hooks=profiler_hooks())


def run(args: argparse.Namespace) -> int:
    from gptperf.envinfo import environment  # deferred: keeps --help fast
    from gptperf.output import err_console  # deferred: loads rich
    from gptperf.runtime import resolve_device  # deferred: loads torch

    device = resolve_device(args.device)
    calibration, cached, path = run_calibration(device, quick=args.quick, force=args.force,
                                                show_progress=not args.json)
    if args.json:
        emit_json({**calibration.to_dict(), "cached": cached, "path": str(path),
                   "environment": environment(device)})
        return 0
    if cached:
        err_console.print(f"[yellow]cached calibration of {calibration.device_name} from "
                          f"{calibration.created_at} ({path}); use --force to measure again[/yellow]")
    print_calibration(calibration, cached, path)
    return 0


def _points(curve: Curve) -> int:
    return len(curve.seconds)


def _percent(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def print_calibration(calibration: Calibration, cached: bool, path: Path | None) -> None:
    """Each curve with its points and leave-one-out residual, the host costs, the recordings."""
    from rich.table import Table  # deferred: loads rich

    from gptperf.measure.calibrate_host import host_tokens  # deferred: loads torch
    from gptperf.measure.probe import UNIT_KEYS  # deferred: keeps --help fast
    from gptperf.output import console  # deferred: loads rich

    wide = wide_console()  # curve keys and host keys are long: never cut them
    state = "cached calibration" if cached else "calibrated"
    console.print(f"[bold]Calibration[/bold] of {calibration.device_name} "
                  f"({calibration.device_type}, torch {calibration.torch_version}): {state} at "
                  f"{calibration.created_at} in {calibration.seconds:.1f} s")
    curves = Table(title="Kernel time curves (measured; residual = median leave-one-out "
                         "|interpolated/measured − 1|)")
    curves.add_column("family")
    curves.add_column("curve")
    curves.add_column("points", justify="right")
    curves.add_column("residual", justify="right")
    curves.add_column("time range", justify="right")
    curves.add_column("over")
    residuals = calibration.residuals()
    for family in ("matmul", "attention", "vector", "optimizer", "gemv"):
        for key, curve in getattr(calibration, family).items():
            what = " × ".join(curve.axes) if hasattr(curve, "axes") else curve.what
            bias = calibration.matmul_bias.get(key) if family == "matmul" else None
            if bias:
                what += (f"; with a bias ×{bias['ratio']:.3f} (median of {bias['probes']:.0f} "
                         f"probes, {bias['low']:.2f}–{bias['high']:.2f})")
            offgrid = calibration.matmul_offgrid.get(key) if family == "matmul" else None
            if offgrid:
                what += (f"; off its points ×{offgrid['ratio']:.3f} (mean of "
                         f"{offgrid['probes']:.0f} probes, {offgrid['low']:.2f}–{offgrid['high']:.2f})")
            unaligned = calibration.matmul_unaligned.get(key) if family == "matmul" else None
            if unaligned:
                what += f"; a layer with rows not 16-byte aligned at most {unaligned_rates_text(unaligned)}"
            curves.add_row(family, key, str(_points(curve)), _percent(residuals[curve_key(family, key)]),
                           f"{seconds(min(curve.seconds))} – {seconds(max(curve.seconds))}", what)
    wide.print(curves)

    eager_tokens, compiled_tokens = (math.prod(host_tokens(mode)) for mode in (EAGER, COMPILED))
    deeper = any("beyond_layers" in fit for fit in calibration.host.values())
    host = Table(title=f"Host cost per step (Python, dispatch, launches; tiny GPT, 1 and 4 blocks"
                       f"{f', a compiled forward {HOST_DEEP_LAYERS} too' if deeper else ''}; eager at "
                       f"{eager_tokens} tokens, compiled at {compiled_tokens})")
    host.add_column("mode:part:dtype")
    host.add_column("per block (µs)", justify="right")
    host.add_column("fixed (µs)", justify="right")
    if deeper:
        host.add_column("per block deeper (µs)", justify="right")
    for key, fit in calibration.host.items():
        beyond = (f"{fit['beyond_per_layer_s'] * 1e6:.1f} past {fit['beyond_layers']:.0f} blocks"
                  if "beyond_layers" in fit else "—")
        host.add_row(key, f"{fit['per_layer_s'] * 1e6:.1f}", f"{fit['fixed_s'] * 1e6:.1f}",
                     *([beyond] if deeper else []))
    wide.print(host)
    units = calibration.probes.get("host", {})
    steps = [f"{what} step {seconds(units[UNIT_KEYS[what]])}" for what in ("train", "decode")
             if units.get(UNIT_KEYS[what])]
    if steps:
        console.print(f"host costs' units: the 1-block host model's eager {' and '.join(steps)} "
                      "(measured here; a command that measures a step charges its host costs at "
                      "the step of its kind, train or inference, timed then over this)")
    if calibration.device_type == "cuda":
        console.print(f"launch gap: {seconds(calibration.launch_gap_s)} a kernel launched from a "
                      "stream beyond one in a CUDA graph (measured here)")

    for key, rec in calibration.compiled.items():
        console.print(f"compiled {key}: {rec.get('kernels_per_step', 0):.0f} kernels per step, "
                      f"{seconds(rec.get('kernel_seconds_per_step'))} of kernels per step, "
                      f"{len(rec.get('ops', {}))} operation:phase rows "
                      f"(config {rec.get('config', {}).get('name', '?')})")
    for note in calibration.notes:
        print_note(console, note)
    if path is not None:
        console.print(f"[dim]saved: {path}[/dim]")


def print_summary(calibration: Calibration, cached: bool, path: Path) -> None:
    """One paragraph (the end of `gptperf ceilings`): curves, worst residual, where it is."""
    from gptperf.output import console  # deferred: loads rich

    res = [r for r in calibration.residuals().values() if r is not None]
    worst = f", worst residual {100 * max(res):.1f}%" if res else ""
    state = "cached calibration" if cached else "calibrated"
    console.print(f"[bold]Calibration[/bold]: {state} at {calibration.created_at} "
                  f"({calibration.seconds:.1f} s): {len(calibration.residuals())} curves{worst}, "
                  f"{len(calibration.host)} host costs, {len(calibration.compiled)} compiled "
                  f"recordings; `gptperf calibrate` shows them")
    console.print(f"[dim]saved: {path}[/dim]")


def ceilings_end(device: Any, *, quick: bool, force: bool, as_json: bool) -> dict[str, Any]:
    """What `gptperf ceilings` runs at its end: the calibration (a usable cached one is kept),
    a paragraph on stdout unless `as_json`; returns its summary for the ceilings' JSON."""
    calibration, cached, path = run_calibration(device, quick=quick, force=force,
                                                show_progress=not as_json)
    if not as_json:
        print_summary(calibration, cached, path)
    return {"path": str(path), "cached": cached, "created_at": calibration.created_at,
            "seconds": calibration.seconds, "residuals": calibration.residuals(),
            "host": calibration.host, "notes": calibration.notes}
