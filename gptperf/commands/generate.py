"""`gptperf generate`: sample text from a checkpoint, streamed as it is produced, with or without a KV cache."""

from __future__ import annotations

import argparse
import os
import sys

from gptperf.commands.common import add_device_argument, add_flag_pair, positive_int, seed_number
from gptperf.errors import UserError
from gptperf.output import emit_json, si
from gptperf.writable import usable_path

HELP = "sample text from a checkpoint (streams tokens, reports tokens/s; KV cache on by default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", default="out",
        help="what `gptperf train` wrote (folder or ckpt.pt), or an HF GPT-2 folder (default: out)",
    )
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--tokens", type=positive_int, default=200, help="number of new tokens (default: 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    parser.add_argument("--top-k", type=positive_int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--seed", type=seed_number, default=1337, help="random seed (default: 1337)")
    parser.add_argument(
        "--no-kv-cache", action="store_true", help="recompute the whole context for every new token"
    )
    add_flag_pair(
        parser, "fast",
        "decode on the fast path: static KV cache; on CUDA gptperf's fused decode kernels "
        "replayed as CUDA graphs (default: on for CUDA, off on CPU, where it compiles the step, "
        "without graphs)",
        "decode eagerly",
    )
    add_device_argument(parser)


class _ReaderGone(Exception):
    """stdout's reader closed the pipe: the generation stops, quietly and successfully."""


def run(args: argparse.Namespace) -> int | None:
    from gptperf.generate import check_sampling  # deferred: loads torch

    usable_path(args.checkpoint, "--checkpoint")  # '' is not '.': refused, not ./ckpt.pt read
    check_sampling(args.tokens, args.temperature, args.top_k)  # before the (slow) model load
    if not args.prompt:
        raise UserError("--prompt is empty; give at least one character")
    if args.fast and args.no_kv_cache:
        raise UserError("--fast decodes with the static KV cache; drop --no-kv-cache or use --no-fast")

    from gptperf.generate import load_for_inference, run_generation  # deferred: loads torch
    from gptperf.output import err_console  # deferred: loads rich

    def show(piece: str) -> None:
        try:
            sys.stdout.write(piece)
            sys.stdout.flush()
        except BrokenPipeError:  # `gptperf generate | head`: the reader has all it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise _ReaderGone from None

    model, tokenizer = load_for_inference(args.checkpoint, args.device)
    try:
        r = run_generation(
            model, tokenizer, args.prompt, args.tokens, temperature=args.temperature,
            top_k=args.top_k, seed=args.seed, use_kv_cache=not args.no_kv_cache, fast=args.fast,
            checkpoint=str(args.checkpoint),
            on_start=None if args.json else lambda: show(args.prompt),
            on_text=None if args.json else show,
        )
    except _ReaderGone:
        return 0
    if args.json:
        emit_json(r.to_dict())
        return 0
    try:
        show("\n")
    except _ReaderGone:
        return 0
    kv = "on" if r.kv_cache else "off"
    err_console.print(
        f"{r.tokens} tokens in {r.elapsed_s:.3f} s = {si(r.tokens_per_s, 'tokens/s')} "
        f"(first token {r.time_to_first_token_s * 1e3:.1f} ms incl. prompt of {r.prompt_tokens}; "
        f"then {si(r.decode_tokens_per_s, 'tokens/s')}), KV cache {kv}, {r.plan.label}"
        f"{f' ({r.graph_steps} steps a graph)' if r.graph_steps else ''}, batch 1, "
        f"measured on {r.device}",
        highlight=False,
    )
    return 0
