"""`gptperf ceilings`: measure this machine's roofline (bandwidth, matmul peak per dtype, launch floor)."""

from __future__ import annotations

import argparse

HELP = "measure this machine's ceilings: memory bandwidth, matmul peak per dtype, launch latency"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast sweep (seconds; buffers near cache size, fewer repeats)")
    parser.add_argument("--force", action="store_true",
                        help="measure again even when a cached measurement of this device exists")
    parser.add_argument("--plot", metavar="FILE",
                        help="draw measured beside datasheet ceilings (.png or .svg)")


def run(args: argparse.Namespace) -> int:
    from gptperf.measure.ceilings import main

    return main(args)
