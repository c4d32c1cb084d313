"""`gptperf generate`: sample text from a checkpoint, streamed as it is produced, with or without a KV cache."""

from __future__ import annotations

import argparse
import os
import sys

from gptperf.commands.common import add_device_argument, add_flag_pair, positive_int, seed_number
from gptperf.errors import UserError

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
        "decode on the fast path: static KV cache, compiled step replayed as a CUDA graph "
        "(default: on for CUDA, off on CPU, where it compiles without graphs)",
        "decode eagerly",
    )
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int | None:
    from gptperf.generate import check_sampling
    from gptperf.writable import usable_path

    usable_path(args.checkpoint, "--checkpoint")  # '' is not '.': refused, not ./ckpt.pt read
    check_sampling(args.tokens, args.temperature, args.top_k)  # before the (slow) model load
    if not args.prompt:
        raise UserError("--prompt is empty; give at least one character")
    if args.fast and args.no_kv_cache:
        raise UserError("--fast decodes with the static KV cache; drop --no-kv-cache or use --no-fast")

    import time

    import torch

    from gptperf.envinfo import device_name, environment
    from gptperf.generate import (
        TextStream,
        fast_decoder,
        generate,
        generate_fast,
        load_for_inference,
    )
    from gptperf.output import emit_json, err_console, si
    from gptperf.plan import ExecutionPlan
    from gptperf.runtime import synchronize

    model, tokenizer = load_for_inference(args.checkpoint, args.device)
    device = next(model.parameters()).device
    prompt = tokenizer.encode(args.prompt)
    if len(prompt) > model.config.block_size:
        raise UserError(
            f"--prompt has {len(prompt)} tokens but the model's block_size is "
            f"{model.config.block_size}; shorten it to at most {model.config.block_size}"
        )
    fast = (device.type == "cuda" if args.fast is None else args.fast) and not args.no_kv_cache
    plan = ExecutionPlan.default("decode", device.type, fast=fast, attention=model.config.attention)
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    compile_s = None
    graph_steps = None  # decode steps a CUDA graph replays (the fast path on a GPU)
    if fast:
        t0 = time.perf_counter()
        dec = fast_decoder(model, temperature=args.temperature, top_k=args.top_k, plan=plan)
        synchronize(device)
        compile_s = time.perf_counter() - t0
        plan = dec.plan  # the plan that runs (the one-row kernel needs Triton)
        graph_steps = dec.graph_steps if dec.cuda_graph else None
        torch.manual_seed(args.seed)  # the warm-up's draws do not move the seed's stream
        tokens_out = generate_fast(dec, prompt, args.tokens)
    else:
        tokens_out = generate(
            model, prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
            use_kv_cache=not args.no_kv_cache, generator=generator,
        )
    stream = TextStream(tokenizer)
    if not args.json:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()

    tokens: list[int] = []
    pieces: list[str] = []
    synchronize(device)
    start = time.perf_counter()
    first = None
    for token in tokens_out:
        if first is None:  # int(token) already waited for the device
            first = time.perf_counter() - start
        tokens.append(token)
        piece = stream.push(token)
        pieces.append(piece)
        if piece and not args.json:
            try:
                sys.stdout.write(piece)
                sys.stdout.flush()
            except BrokenPipeError:  # `gptperf generate | head`: the reader has all it wants
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
    synchronize(device)
    elapsed = time.perf_counter() - start
    pieces.append(stream.flush())
    text = "".join(pieces)
    tokens_per_s = len(tokens) / elapsed
    decode_per_s = (len(tokens) - 1) / (elapsed - first) if len(tokens) > 1 and elapsed > first else None
    kv = "on" if not args.no_kv_cache else "off"
    where = f"{device.type}: {device_name(device)}"
    if args.json:
        emit_json(
            {
                "schema": "gptperf.generate/1",
                "checkpoint": str(args.checkpoint),
                "prompt": args.prompt,
                "text": text,
                "tokens": len(tokens),
                "token_ids": tokens,
                "prompt_tokens": len(prompt),
                "elapsed_s": elapsed,
                "time_to_first_token_s": first,
                "tokens_per_s": tokens_per_s,
                "decode_tokens_per_s": decode_per_s,
                "kv_cache": not args.no_kv_cache,
                "plan": plan.to_dict(),
                "graph_steps": graph_steps,
                "compile_s": compile_s,
                "temperature": args.temperature,
                "top_k": args.top_k,
                "seed": args.seed,
                "device": where,
                "config": model.config.to_dict(),
                "environment": environment(device),
            }
        )
        return 0
    sys.stdout.write(pieces[-1] + "\n")
    sys.stdout.flush()
    err_console.print(
        f"{len(tokens)} tokens in {elapsed:.3f} s = {si(tokens_per_s, 'tokens/s')} "
        f"(first token {first * 1e3:.1f} ms incl. prompt of {len(prompt)}; "
        f"then {si(decode_per_s, 'tokens/s')}), KV cache {kv}, {plan.label}"
        f"{f' ({graph_steps} steps a graph)' if graph_steps else ''}, batch 1, "
        f"measured on {where}",
        highlight=False,
    )
    return 0
