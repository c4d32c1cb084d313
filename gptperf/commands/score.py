"""`gptperf score`: the probability of each sentence by the chain rule, per token, ranked."""

from __future__ import annotations

import argparse

from gptperf.commands.common import add_device_argument
from gptperf.output import emit_json
from gptperf.writable import usable_path

HELP = "score sentences by the chain rule: log-probability, per-token probabilities, ranking"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sentences", nargs="+", help="sentences to score")
    parser.add_argument(
        "--checkpoint", default="out",
        help="what `gptperf train` wrote (folder or ckpt.pt), or an HF GPT-2 folder (default: out)",
    )
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int | None:
    from rich.table import Table  # deferred: loads rich
    from rich.text import Text  # deferred: loads rich

    from gptperf.generate import load_for_inference  # deferred: loads torch
    from gptperf.output import console  # deferred: loads rich
    from gptperf.score import scientific, score  # deferred: loads torch

    usable_path(args.checkpoint, "--checkpoint")  # '' is not '.': refused, not ./ckpt.pt read
    model, tokenizer = load_for_inference(args.checkpoint, args.device)
    result = score(model, tokenizer, args.sentences, checkpoint=str(args.checkpoint))
    if args.json:
        emit_json(result.to_dict())
        return 0
    scores, order = result.sentences, result.ranking()

    console.print(
        Text(
            "P(x_1:n) = P(x_1 | start)·P(x_2 | start, x_1)···P(x_n | start, x_<n); "
            f"start token {result.start_text!r}; model {model.config.name!r} from {args.checkpoint}"
        )
    )
    for s in scores:
        table = Table(title=Text(repr(s.text)), title_justify="left")
        table.add_column("i", justify="right")
        table.add_column("token")
        table.add_column("P(token | context)", justify="right")
        table.add_column("log P (nats)", justify="right")
        table.add_column("log P so far (nats)", justify="right")
        total = 0.0
        for i, t in enumerate(s.tokens, 1):
            total += t.logprob
            table.add_row(str(i), Text(t.text), f"{t.prob:.4g}", f"{t.logprob:.3f}", f"{total:.3f}")
        table.caption = (
            f"log P = {s.logprob:.3f} nats = log10 P {s.log10prob:.3f}; P = {scientific(s.log10prob)}"
        )
        console.print(table)
    ranked = Table(title="Sentences ranked by probability (chain rule)", title_justify="left")
    for name, justify in (("rank", "right"), ("sentence", "left"), ("tokens", "right"),
                          ("log P (nats)", "right"), ("log10 P", "right"), ("P", "right"),
                          ("nats/token", "right")):
        ranked.add_column(name, justify=justify)
    for r, i in enumerate(order, 1):
        s = scores[i]
        ranked.add_row(
            str(r), Text(s.text), str(len(s.tokens)), f"{s.logprob:.3f}", f"{s.log10prob:.3f}",
            scientific(s.log10prob), f"{-s.logprob / len(s.tokens):.3f}",
        )
    console.print(ranked)
    return 0
