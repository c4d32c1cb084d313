"""`gptperf inference`: KV cache against recompute, prefill against decode, and the batch size
where decoding turns compute-bound — measured on the device in hand beside the performance model."""

from __future__ import annotations

import argparse

from gptperf.commands.common import add_device_argument, add_model_arguments, config_from_args

HELP = "decode with and without the KV cache, prefill vs decode, batch sweep to the compute-bound point"


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "tiny")
    parser.add_argument("--dtype", default=None, help="fp32, tf32, bf16, fp16 (default: bf16 on GPU, fp32 on CPU)")
    add_device_argument(parser)
    parser.add_argument("--contexts", type=_int_list, default=None,
                        help="context lengths for the cache/recompute sweep, e.g. 16,64,256 (default: powers of 2 up to block_size)")
    parser.add_argument("--batches", type=_int_list, default=None,
                        help="batch sizes for the decode sweep (default: 1,2,4,... up to 512 on GPU, 64 on CPU)")
    parser.add_argument("--batch-context", type=int, default=None,
                        help="context length of the batch sweep (default: min(128, block_size))")
    parser.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                        help="static KV cache + compiled decode step with CUDA graphs (default: on for CUDA)")
    parser.add_argument("--hardware", default=None,
                        help="ceilings for the prediction: a hardware name or 'measured' (default: measured if cached, else the datasheet of this device)")
    parser.add_argument("--plot-dir", default=None, help="write the pictures (PNG and SVG) into this folder")


def run(args: argparse.Namespace) -> int | None:
    from gptperf.inference.sweep import print_result, run_inference_study
    from gptperf.output import emit_json, err_console
    from gptperf.runtime import resolve_device

    config = config_from_args(args)
    device = resolve_device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    progress = None if args.json else (lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    result = run_inference_study(
        config, device, dtype, contexts=args.contexts, batches=args.batches,
        fast=args.fast, progress=progress, hardware=args.hardware, batch_context=args.batch_context,
    )
    if args.plot_dir:
        from gptperf.plotting.inference import plot_all

        result.plots = plot_all(result, args.plot_dir)
    if args.json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    return 0
