"""`gptperf inference`: KV cache against recompute, prefill against decode, and the batch size
where decoding turns compute-bound — measured on the device in hand beside the performance model."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from gptperf.commands.common import (
    add_device_argument,
    add_flag_pair,
    add_model_arguments,
    check_folder,
    config_from_args,
    guard_memory,
    int_list,
    output_path,
    positive_int,
)
from gptperf.dtypes import check_dtype
from gptperf.output import emit_json, print_note, seconds, si

if TYPE_CHECKING:
    from gptperf.inference.sweep import InferenceResult

HELP = "decode with and without the KV cache, prefill vs decode, batch sweep to the compute-bound point"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "tiny")
    parser.add_argument("--dtype", default=None, help="fp32, tf32, bf16, fp16 (default: bf16 on GPU, fp32 on CPU)")
    add_device_argument(parser)
    parser.add_argument("--contexts", type=int_list, default=None,
                        help="context lengths for the cache/recompute sweep, e.g. 16,64,256 (default: powers of 2 up to block_size)")
    parser.add_argument("--batches", type=int_list, default=None,
                        help="batch sizes for the decode sweep (default: 1,2,4,... up to 512 on GPU, 64 on CPU)")
    parser.add_argument("--batch-context", type=positive_int, default=None,
                        help="context length of the batch sweep (default: min(128, block_size))")
    add_flag_pair(parser, "fast", "static KV cache + compiled decode step with CUDA graphs "
                  "(default: on for CUDA)", "decode eagerly with the model's own KV cache")
    parser.add_argument("--hardware", default=None,
                        help="ceilings for the prediction: a hardware name or 'measured' (default: measured if cached, else the datasheet of this device)")
    parser.add_argument("--plot-dir", type=output_path, default=None, metavar="DIR",
                        help="write inference-<model>-context, -roofline and -split (.png and .svg) "
                             "there, replacing only pictures gptperf drew")


def run(args: argparse.Namespace) -> int | None:
    from gptperf.inference.sweep import (  # deferred: keeps --help fast
        choose_batch_context,
        choose_batches,
        choose_contexts,
        run_inference_study,
    )
    from gptperf.output import err_console  # deferred: loads rich
    from gptperf.runtime import resolve_device  # deferred: loads torch

    config = config_from_args(args)
    if args.plot_dir is not None:
        from gptperf.plotting.inference import picture_files  # deferred: keeps --help fast

        check_folder(args.plot_dir, "--plot-dir", pictures=picture_files(config.name))
    device = resolve_device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    # The points every study runs must fit: batch 1 over the longest context, and the smallest
    # batch of the decode sweep (larger ones stop the sweep where memory runs out).
    check_dtype(dtype)
    longest = max(choose_contexts(config, args.contexts))
    guard_memory(config, "decode_nocache", 1, longest, dtype, device, flag="--contexts")
    batch_context = args.batch_context if args.batch_context is not None else choose_batch_context(config)
    config.check_sequence(batch_context)
    guard_memory(config, "decode", min(choose_batches(args.batches, device.type)), batch_context,
                 dtype, device, flag="--batches")
    progress = None if args.json else (lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    result = run_inference_study(
        config, device, dtype, contexts=args.contexts, batches=args.batches,
        fast=args.fast, progress=progress, hardware=args.hardware, batch_context=args.batch_context,
    )
    if args.plot_dir:
        from gptperf.plotting.inference import plot_all  # deferred: keeps --help fast

        result.plots = plot_all(result, args.plot_dir)
    if args.json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    return 0


def print_result(r: InferenceResult) -> None:
    """The terminal report of a gptperf.inference.InferenceResult: measured beside predicted,
    every figure with its unit and source; with a calibration of the device, the calibrated
    expected time as a third figure beside the roofline bound."""
    from rich.table import Table  # deferred: loads rich

    from gptperf.inference.sweep import plan_labels
    from gptperf.output import console  # deferred: loads rich

    with_exp = r.expected_label is not None

    def cell(measured: float | None, predicted: float | None, expected: float | None,
             fmt: Callable[[float | None], str]) -> str:
        return f"{fmt(measured)} / {fmt(predicted)}" + (f" / {fmt(expected)}" if with_exp else "")

    def tps(x: float | None) -> str:
        return si(x, "")

    def times(x: float | None) -> str:
        return "—" if x is None else f"{x:.1f}×"

    def per_s(tokens: int, t: float | None) -> float | None:
        return tokens / t if t else None

    console.print(f"[bold]{r.config.name}[/bold], {r.dtype}: measured on {r.device_name} ({r.device}); "
                  f"roofline bound on {r.hardware_label}"
                  + (f"; expected time {r.expected_label}" if with_exp else "")
                  + ". Cells: measured / roofline bound" + (" / calibrated expected." if with_exp else "."))
    t = Table(title="decode, batch 1: tokens/s with the KV cache vs recomputing the context")
    for col in ("context L", "KV cache tok/s", "recompute tok/s", "speedup"):
        t.add_column(col, justify="right")
    for c, n, x in zip(r.cache, r.recompute, r.speedups(), strict=False):
        t.add_row(str(c.seq), cell(c.tokens_per_s, c.predicted_tokens_per_s, per_s(c.tokens, c.expected_s), tps),
                  cell(n.tokens_per_s, n.predicted_tokens_per_s, per_s(n.tokens, n.expected_s), tps),
                  cell(x.measured, x.predicted, x.expected, times))
    console.print(t)

    t = Table(title=f"one request: prefill P tokens, then decode {r.new_tokens} (each at ~context P)")
    for col in ("prompt P", "prefill", "decode", "prefill share"):
        t.add_column(col, justify="right")

    def share(prefill: float | None, decode: float | None) -> float | None:
        return prefill / (prefill + decode) if prefill and decode else None

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.0f}%"

    for row in r.split():
        ep, ed = row.get("expected_prefill_s"), row.get("expected_decode_s")
        t.add_row(str(row["prompt"]), cell(row["prefill_s"], row["predicted_prefill_s"], ep, seconds),
                  cell(row["decode_s"], row["predicted_decode_s"], ed, seconds),
                  cell(share(row["prefill_s"], row["decode_s"]),
                       share(row["predicted_prefill_s"], row["predicted_decode_s"]), share(ep, ed), pct))
    console.print(t)

    t = Table(title=f"decode step against batch at context {r.batch_context} ({plan_labels(r.batches)})")
    cols = ["batch", "step", "meas/pred"] + (["meas/exp"] if with_exp else []) + [
        "tok/s", "AI FLOP/B", "achieved B/s", "achieved FLOP/s"]
    for col in cols:
        t.add_column(col, justify="right")
    for p in r.batches:
        ratios = [f"{p.ratio:.2f}" if p.ratio else "—"]
        if with_exp:
            ratios.append(f"{p.expected_ratio:.2f}" if p.expected_ratio else "—")
        t.add_row(str(p.batch), cell(p.time_s, p.predicted_s, p.expected_s, seconds), *ratios,
                  si(p.tokens_per_s, ""), f"{p.arithmetic_intensity:.3g}", si(p.achieved_bandwidth, "B/s"),
                  si(p.achieved_flops, "FLOP/s"))
    console.print(t)

    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.3g}"

    console.print(
        f"ridge π/β = {r.ridge_intensity:.3g} FLOP/byte ({r.hardware_label}): the weight matmuls turn "
        f"compute-bound at batch {fmt(r.ridge_batch_predicted)} (predicted). Step-time knee: batch "
        f"{fmt(r.knee_batch_measured)} measured, {fmt(r.knee_batch_predicted)} predicted."
    )
    for note in r.notes:
        print_note(console, note)
    for what, path_ in r.plots.items():
        console.print(f"picture ({what}): {path_}")
