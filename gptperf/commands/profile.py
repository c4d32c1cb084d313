"""`gptperf profile`: torch.profiler trace of a workload, every kernel attributed to an operation name."""

from __future__ import annotations

import argparse

from gptperf.commands.common import add_device_argument, add_model_arguments, config_from_args

HELP = "profile a workload with torch.profiler; attribute every kernel to an operation; compare with the model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser.add_argument_group("model"), "tiny")

    w = parser.add_argument_group("workload")
    w.add_argument("--workload", default="train", choices=("train", "forward", "prefill", "decode"),
                   help="what one step does (default: train)")
    w.add_argument("--batch", type=int, default=None, help="sequences per step (default: 8)")
    w.add_argument("--seq", type=int, default=None,
                   help="tokens per sequence, or context length for decode (default: min(block, 256))")
    w.add_argument("--dtype", default="fp32", choices=("fp32", "tf32", "bf16", "fp16"),
                   help="compute precision (default: fp32)")
    w.add_argument("--compile", action="store_true", help="torch.compile the model")
    add_device_argument(w)
    w.add_argument("--hardware", default=None,
                   help="hardware for the prediction: a datasheet name or 'measured' "
                        "(default: measured ceilings if cached, else the datasheet of this device)")

    s = parser.add_argument_group("profiler schedule")
    s.add_argument("--wait", type=int, default=1, help="steps skipped before recording (default: 1)")
    s.add_argument("--warmup", type=int, default=2, help="steps recorded and thrown away (default: 2)")
    s.add_argument("--active", type=int, default=3, help="steps recorded and analysed (default: 3)")
    s.add_argument("--no-overhead", action="store_true",
                   help="skip timing steps with and without the profiler")

    o = parser.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", default="profile",
                   help="folder for traces, tables and pictures (default: profile)")
    o.add_argument("--trace", metavar="FILE",
                   help="re-analyse an existing Chrome/Kineto JSON trace instead of running")
    o.add_argument("--top", type=int, default=25, help="rows of the per-operation table (default: 25)")


def run(args: argparse.Namespace) -> int | None:
    from gptperf.errors import UserError

    for flag in ("wait", "warmup"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.active < 1:
        raise UserError(f"--active must be >= 1, got {args.active}")
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    if args.batch is not None and args.batch < 1:
        raise UserError(f"--batch must be positive, got {args.batch}")
    if args.seq is not None and args.seq < 1:
        raise UserError(f"--seq must be positive, got {args.seq}")

    from gptperf.output import emit_json
    from gptperf.profiling.run import analyse_trace_file, print_result, profile_workload

    config = config_from_args(args)
    batch = args.batch if args.batch is not None else 8
    seq = args.seq if args.seq is not None else min(config.block_size, 256)
    if args.trace:
        result = analyse_trace_file(
            args.trace, config, args.workload, batch=batch, seq=seq, dtype=args.dtype,
            hardware=args.hardware, out_dir=args.out, device_name=None,
        )
    else:
        from gptperf.runtime import resolve_device

        result = profile_workload(
            config, args.workload, batch=batch, seq=seq, dtype=args.dtype,
            device=resolve_device(args.device), compile=args.compile, hardware=args.hardware,
            out_dir=args.out, wait=args.wait, warmup=args.warmup, active=args.active,
            overhead=not args.no_overhead,
        )
    if args.json:
        emit_json(result.to_dict())
    else:
        print_result(result, top=args.top)
    return 0
