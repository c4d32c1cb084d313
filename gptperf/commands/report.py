"""`gptperf report`: the whole lecture in one command, written as one self-contained HTML page."""

from __future__ import annotations

import argparse

from gptperf.commands.common import add_device_argument

HELP = "train, sample, score, model, measure and profile a GPT here, and write one HTML page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gptperf.model.config import PRESETS

    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="model shape (default: tiny on CPU, gpt2 on a GPU)")
    parser.add_argument("--out", metavar="DIR", default="gptperf-report",
                        help="folder for index.html, report.json, pictures and traces "
                             "(default: gptperf-report)")
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=("fp32", "tf32", "bf16", "fp16"), default=None,
                        help="compute precision (default: fp32 on CPU, bf16 on a GPU)")
    parser.add_argument("--train-seconds", type=float, default=None, metavar="S",
                        help="time budget of the training run in seconds (default: 50 on CPU, 45 plus "
                             "compilation on a GPU)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="torch.compile the training step (training run, bench, profile; "
                             "default: on a GPU only)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="run every step eagerly")
    parser.add_argument("--quick", action="store_true",
                        help="very small everything (a test of the whole pipeline in ~30 s)")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failed stage run the others and write the page with that "
                             "section marked failed (default: keep the previous page)")


def run(args: argparse.Namespace) -> int | None:
    from gptperf.report import ReportOptions, build_report, print_summary

    options = ReportOptions(
        out=args.out, preset=args.preset, device=args.device, dtype=args.dtype,
        train_seconds=args.train_seconds, compile=args.compile, quick=args.quick,
        keep_going=args.keep_going,
    )
    result = build_report(options)
    if args.json:
        from gptperf.output import emit_json

        emit_json(result.summary())
    else:
        print_summary(result)
    return 0 if result.ok else 2
