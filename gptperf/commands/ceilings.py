"""`gptperf ceilings`: measure this machine's roofline (bandwidth, matmul peak per dtype, launch floor)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.commands.calibrate import ceilings_end
from gptperf.commands.common import check_plot_file, output_path
from gptperf.output import binary_bytes, emit_json, print_note, rich_progress, seconds, si
from gptperf.perfmodel.devices import datasheet_hardware_for
from gptperf.perfmodel.hardware import measured_hardware_path

if TYPE_CHECKING:
    from gptperf.perfmodel.hardware import Hardware

HELP = "measure this machine's ceilings: memory bandwidth, matmul peak per dtype, launch latency"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast sweep (seconds; buffers near cache size, fewer repeats)")
    parser.add_argument("--force", action="store_true",
                        help="measure again even when a cached measurement of this device exists")
    parser.add_argument("--plot", type=output_path, metavar="FILE",
                        help="draw measured beside datasheet (or, on a CPU, nominal) ceilings (.png, .svg or .pdf)")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="skip the calibration (`gptperf calibrate`) that follows the ceilings")


def run(args: argparse.Namespace) -> int:
    from gptperf.envinfo import environment  # deferred: keeps --help fast
    from gptperf.measure.ceilings import ceilings_for  # deferred: loads torch
    from gptperf.output import console, err_console  # deferred: loads rich
    from gptperf.runtime import resolve_device  # deferred: loads torch

    if args.plot is not None:  # '' too: a picture was asked for
        check_plot_file(args.plot)
    device = resolve_device(args.device)
    replaced: list[str] = []  # why a corrupt cache was measured again (said, not kept quiet)

    def notify(why: str) -> None:
        replaced.append(why)
        if not args.json:
            from rich.markup import escape  # deferred: loads rich; a TOML error may quote "[table]"

            err_console.print(f"[yellow]{escape(why)}[/yellow]", highlight=False)

    with rich_progress(enabled=not args.json, description="ceilings") as progress:
        ceilings, cached = ceilings_for(device, quick=args.quick, force=args.force,
                                        progress=progress, notify=notify)
    path = Path(measured_hardware_path(ceilings.device))
    datasheet = datasheet_hardware_for(ceilings.device, device.type)
    if cached and not args.json:
        err_console.print(f"[yellow]cached measurement of {ceilings.device} from "
                          f"{ceilings.measured_at} ({path}); use --force to measure again[/yellow]")
    if args.plot:
        from gptperf.plotting.ceilings import plot_ceilings  # deferred: keeps --help fast

        plot_ceilings(ceilings.to_dict(), datasheet, args.plot)
    if args.json:
        doc = ceilings.to_dict()
        doc.update(cached=cached, hardware_file=str(path),
                   replaced_corrupt_cache=replaced[0] if replaced else None,
                   datasheet=datasheet.to_dict() if datasheet is not None else None,
                   hardware=ceilings.to_hardware().to_dict())
        doc["environment"] = environment(device)
        if not args.no_calibrate:
            doc["calibration"] = ceilings_end(device, quick=args.quick, force=args.force, as_json=True)
        emit_json(doc)
    else:
        print_ceilings(ceilings, cached, datasheet, path)
        if args.plot:
            console.print(f"[dim]plot written: {args.plot}[/dim]")
        if not args.no_calibrate:
            ceilings_end(device, quick=args.quick, force=args.force, as_json=False)
    return 0


def print_ceilings(ceilings: Any, cached: bool, datasheet: Hardware | None, path: Path | None) -> None:
    """The measured ceilings beside the shipped entry's (a vendor datasheet, or the nominal
    'cpu' figures: its `source` names which in every header), as tables."""
    from rich.table import Table  # deferred: loads rich

    from gptperf.measure.ceilings import shape_label  # deferred: loads torch
    from gptperf.output import console  # deferred: loads rich

    where = f"{ceilings.device} ({ceilings.device_type}"
    where += f", {ceilings.threads} threads)" if ceilings.device_type == "cpu" else ")"
    state = "cached measurement" if cached else "measured"
    console.print(f"[bold]Ceilings[/bold] of {where}: {state} at {ceilings.measured_at}"
                  + (" (quick sweep)" if ceilings.quick else ""))
    ds_name = datasheet.name if datasheet is not None else None
    # "datasheet" only where the figures are a vendor's; the generic CPU's are "nominal"
    kind = datasheet.source if datasheet is not None else "datasheet"

    table = Table(title="Matmul (torch.mm, square n×n×n, FLOPs = 2n³, median of repeats)")
    table.add_column("dtype")
    table.add_column("best (measured)", justify="right")
    table.add_column("at m×n×k", justify="right")
    table.add_column(f"{kind} {ds_name}" if ds_name else kind, justify="right")
    table.add_column(f"% of {kind}", justify="right")
    best = max(ceilings.peak_flops.values(), default=1.0)
    scale, unit = next(((s, u) for s, u in ((1e12, "TFLOP/s"), (1e9, "GFLOP/s"), (1e6, "MFLOP/s"))
                        if best >= s), (1.0, "FLOP/s"))
    table.add_column(f"rate by n ({unit}, measured)")
    for dtype, m in ceilings.matmul.items():
        if not m.get("points"):
            continue
        ds = _datasheet_peak(datasheet, dtype)
        curve = "  ".join(f"{p['n']}:{p['flops_per_s'] / scale:.3g}" for p in m["points"])
        if m.get("shapes"):
            curve += "  | " + "  ".join(f"{shape_label(p)}:{p['flops_per_s'] / scale:.3g}"
                                        for p in m["shapes"])
        table.add_row(dtype, si(m["best_flops_per_s"], "FLOP/s"), m.get("best_shape", ""),
                      si(ds, "FLOP/s"), f"{100 * m['best_flops_per_s'] / ds:.0f}%" if ds else "—",
                      curve)
    for dtype, why in ceilings.skipped.items():
        table.add_row(dtype, "skipped", "", "", "", why)
    console.print(table)

    bw = Table(title="Memory bandwidth (bytes read + written per second, median)")
    bw.add_column("kernel")
    bw.add_column("measured", justify="right")
    bw.add_column("buffer", justify="right")
    bw.add_column(f"{kind} {ds_name}" if ds_name else kind, justify="right")
    bw.add_column(f"% of {kind}", justify="right")
    ds_bw = getattr(datasheet, "bandwidth", None)
    for name, b in ceilings.bandwidth.items():
        bw.add_row(name, si(b["best_bytes_per_s"], "B/s"), binary_bytes(b["best_buffer_bytes"]),
                   si(ds_bw, "B/s"), f"{100 * b['best_bytes_per_s'] / ds_bw:.0f}%" if ds_bw else "—")
    console.print(bw)
    console.print(f"Launch floor (measured): {seconds(ceilings.launch_latency_s)} per tiny op "
                  f"({ceilings.launch.get('op', '')})")
    km = ceilings.kernel_model
    if km:
        where = "in a CUDA graph" if ceilings.device_type == "cuda" else "eager"
        parts = [f"matmul M={m}: α {seconds(a)}, β {si(b, 'B/s')}"
                 for m, a, b in zip(km["rows"], km["alpha_s"], km["beta"], strict=True)]
        parts.append(f"elementwise α {seconds(km['elementwise_alpha_s'])}")
        if "attention_alpha_s" in km:
            parts.append(f"attention α {seconds(km['attention_alpha_s'])}, "
                         f"β {si(km['attention_beta'], 'B/s')}")
        if "norm_alpha_s" in km:
            parts.append(f"LayerNorm α {seconds(km['norm_alpha_s'])}")
        console.print(f"Kernel model (measured, per kernel {where}, t = α + bytes/β, {km['dtype']}): "
                      + "; ".join(parts))
    for note in ceilings.notes:
        print_note(console, note)
    if path is not None:
        console.print(f"[dim]saved as hardware 'measured' for this device: {path}[/dim]")


def _datasheet_peak(datasheet: Hardware | None, dtype: str) -> float | None:
    if datasheet is None:
        return None
    try:
        return float(datasheet.peak(dtype))
    except Exception:  # a datasheet without this dtype
        return None
