"""`gptperf roofline`: the lecture's roofline examples (saxpy, matmul, the KV projection) on a machine."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from gptperf.commands.common import (
    add_hardware_arguments,
    check_plot_file,
    hardware_from_args,
    output_path,
    positive_int,
)
from gptperf.output import emit_json, seconds, si
from gptperf.perfmodel import kv_projection, matmul, ridge_n, saxpy

if TYPE_CHECKING:
    from gptperf.perfmodel.hardware import Hardware
    from gptperf.perfmodel.roofline import Kernel

HELP = "roofline of saxpy, a matmul or the KV projection of one new token: FLOPs, bytes, AI, bound"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="example", metavar="EXAMPLE", required=True, parser_class=type(parser))
    specs = {
        "saxpy": ("y = a·x + y over N elements: 2N FLOPs, 3N elements moved", "fp64"),
        "matmul": ("C = A·B (M×K by K×N): 2·M·N·K FLOPs; A, B read, C written (and read with --accumulate)", "fp64"),
        "kv": ("the K (or V) projection of one new token: 2·C² FLOPs over a C×C weight", "fp16"),
    }
    for name, (text, dtype) in specs.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "saxpy":
            p.add_argument("--n", type=positive_int, required=True, help="number of elements N")
        elif name == "matmul":
            p.add_argument("--m", type=positive_int, required=True, help="rows of A and C")
            p.add_argument("--n", type=positive_int, required=True, help="columns of B and C")
            p.add_argument("--k", type=positive_int, required=True, help="the shared dimension")
            p.add_argument("--accumulate", action="store_true", help="C += A·B: C is read too (the lecture's 4·8·n²)")
        else:
            p.add_argument("--n-embd", type=positive_int, required=True, help="model width C")
        p.add_argument("--dtype", default=dtype, help=f"fp64, fp32, tf32, bf16 or fp16 (default: {dtype})")
        add_hardware_arguments(p, "a100-40gb")
        p.add_argument("--plot", type=output_path, default=None, metavar="FILE", help="write the roofline picture (.png, .svg or .pdf)")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON document instead of a table")


def roofline_document(kernel: Kernel, hardware: Hardware) -> dict[str, Any]:
    """The JSON document of one example on one machine."""
    cost = kernel.on(hardware)
    doc = {
        "schema": "gptperf.roofline/1",
        "example": kernel.name,
        "shape": kernel.shape,
        "dtype": kernel.dtype,
        "formula": kernel.formula,
        "flops": kernel.flops,
        "bytes_read": kernel.bytes_read,
        "bytes_written": kernel.bytes_written,
        "bytes": kernel.bytes,
        "arithmetic_intensity": kernel.arithmetic_intensity,
        "peak_flops": cost.peak_flops,
        "bandwidth": cost.bandwidth,
        "ridge_intensity": cost.ridge_intensity,
        "attainable_flops": cost.attainable_flops,
        "bound": cost.bound,
        "time_s": cost.time_s,
        "hardware": hardware.to_dict(),
        "source": hardware.label,
        "units": {"flops": "FLOP", "bytes": "bytes", "arithmetic_intensity": "FLOP/byte",
                  "peak_flops": "FLOP/s", "bandwidth": "bytes/s", "attainable_flops": "FLOP/s",
                  "time_s": "s (max(FLOPs/peak, bytes/bandwidth) + launch latency)"},
    }
    shape = kernel.shape
    if kernel.name == "matmul" and shape["m"] == shape["n"] == shape["k"]:
        doc["ridge_n"] = ridge_n(cost.peak_flops, cost.bandwidth, kernel.dtype, shape["accumulate"])
    return doc


def run(args: argparse.Namespace) -> int | None:
    if args.plot is not None:  # '' too: a picture was asked for
        check_plot_file(args.plot)
    if args.example == "saxpy":
        kernel = saxpy(args.n, args.dtype)
    elif args.example == "matmul":
        kernel = matmul(args.m, args.n, args.k, args.dtype, accumulate=args.accumulate)
    else:
        kernel = kv_projection(args.n_embd, args.dtype)
    hardware = hardware_from_args(args)  # never None: --hardware has a default
    doc = roofline_document(kernel, hardware)
    if args.plot:
        from gptperf.plotting.roofline import (  # deferred: keeps --help fast
            RooflinePoint,
            plot_roofline,
        )

        point = RooflinePoint(kernel.name, doc["arithmetic_intensity"], doc["attainable_flops"],
                              kind="predicted", bound=doc["bound"])
        doc["plot"] = str(plot_roofline(
            args.plot, [(f"{kernel.dtype} ({hardware.source})", doc["peak_flops"])],
            [(f"memory ({hardware.source})", hardware.bandwidth)], [point],
            title=f"{kernel.name} {shape_text(kernel.shape)} {kernel.dtype} on {hardware.label}"))
    if getattr(args, "json", False):
        emit_json(doc)
        return 0
    _print(doc)
    return 0


def _print(doc: dict[str, Any]) -> None:
    from rich.table import Table  # deferred: loads rich

    from gptperf.output import console  # deferred: loads rich

    src = doc["source"]
    table = Table(title=f"{doc['example']} {shape_text(doc['shape'])} {doc['dtype']} — roofline of {src}",
                  title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("exact", justify="right", overflow="fold")  # every digit, folded if long
    table.add_column("source")
    rows = [
        ("FLOPs", si(doc["flops"], "FLOP"), _exact(doc["flops"]), doc["formula"].split(";")[0]),
        ("bytes moved", si(doc["bytes"], "B"), _exact(doc["bytes"]), doc["formula"].split(";")[-1].strip()),
        ("arithmetic intensity", f"{doc['arithmetic_intensity']:.4g} FLOP/B",
         _fraction(doc["arithmetic_intensity"]), "FLOPs / bytes"),
        ("peak", si(doc["peak_flops"], "FLOP/s"), "", src),
        ("bandwidth", si(doc["bandwidth"], "B/s"), "", src),
        ("ridge intensity", f"{doc['ridge_intensity']:.4g} FLOP/B", "", "peak / bandwidth"),
        ("attainable", si(doc["attainable_flops"], "FLOP/s"), "", "min(peak, bandwidth·AI)"),
        ("bound", doc["bound"], "", "AI vs ridge"),
        ("predicted time", seconds(doc["time_s"]), "", "max(FLOPs/peak, bytes/bandwidth) + launch"),
    ]
    if "ridge_n" in doc:
        rows.append(("ridge n (square)", f"{doc['ridge_n']:.1f}", "", "n where AI(n) = peak/bandwidth"))
    for r in rows:
        table.add_row(*r)
    console.print(table)
    if "plot" in doc:
        console.print(f"roofline picture: {doc['plot']}", highlight=False)


def shape_text(shape: dict[str, Any]) -> str:
    """{'m': 4, 'n': 4, 'k': 4, 'accumulate': True} -> 'm=4 n=4 k=4 accumulate'."""
    return " ".join(k if v is True else f"{k}={v}" for k, v in shape.items() if v is not False)


def _exact(count: float) -> str:
    """A count in full: an int's own digits (formatting it as a float would round past 2**53)."""
    return str(count) if isinstance(count, int) else f"{count:.0f}"


def _fraction(x: float) -> str:
    """1/12 for 0.0833…, else the decimal."""
    if 0 < x < 1:
        inv = 1 / x
        if math.isclose(inv, round(inv), rel_tol=1e-12):
            return f"1/{round(inv)}"
    return f"{x:.6g}"
