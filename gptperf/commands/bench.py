"""`gptperf bench`: time a train / forward / prefill / decode step and report the lecture's metrics."""

from __future__ import annotations

import argparse

from gptperf.commands.common import add_device_argument, add_model_arguments, config_from_args

HELP = "benchmark a workload: time per batch, throughput, FLOP/s, MFU, peak memory, utilization"

WORKLOADS = ("train", "forward", "prefill", "decode", "decode_nocache")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gptperf.dtypes import DTYPES

    parser.add_argument("workload", choices=WORKLOADS,
                        help="train (fwd+bwd+AdamW), forward, prefill (fill the KV cache), "
                             "decode (one token with the KV cache), decode_nocache (recompute)")
    add_model_arguments(parser.add_argument_group("model"), "tiny")
    w = parser.add_argument_group("workload")
    w.add_argument("--batch", type=int, default=12, help="sequences per step (default: 12)")
    w.add_argument("--seq", type=int,
                   help="tokens per sequence; context length for decode "
                        "(default: 64 for tiny, else the block size)")
    w.add_argument("--dtype", default="fp32", choices=DTYPES,
                   help="fp32/tf32/fp64 weights, or bf16/fp16 autocast (default: fp32)")
    w.add_argument("--compile", action="store_true", help="torch.compile the model")
    add_device_argument(w)
    t = parser.add_argument_group("timing")
    t.add_argument("--warmup", type=int,
                   help="untimed steps first (default: 3; 5 for decode); >= 1 with --compile")
    t.add_argument("--repeats", type=int,
                   help="timed steps; the median is reported (default: 10; 50 for decode)")
    t.add_argument("--hardware", default=None,
                   help="hardware for the prediction and datasheet MFU: a registry name, "
                        "'measured', or a TOML file (default: this device's datasheet entry)")
    t.add_argument("--seed", type=int, default=0, help="random seed for weights and tokens")


def run(args: argparse.Namespace) -> int:
    import time

    started_at = time.perf_counter()  # wall time covers the whole command, imports included
    from gptperf.measure.bench import main

    return main(args, config_from_args(args), started_at=started_at)
