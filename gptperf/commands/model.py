"""`gptperf model`: the performance model of a GPT workload on a machine — per op, per layer, memory."""

from __future__ import annotations

import argparse
from typing import Any

from gptperf.commands.common import add_model_arguments, check_plot_file, config_from_args
from gptperf.commands.roofline import add_hardware_arguments, resolve_hardware

HELP = "predict FLOPs, bytes, arithmetic intensity, time and memory of a GPT workload, per operation"
VIEWS = ("all", "op", "component", "layer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gptperf.perfmodel.workload import WORKLOAD_HELP, WORKLOADS

    add_model_arguments(parser.add_argument_group("model"), "gpt2")
    w = parser.add_argument_group("workload")
    w.add_argument("--workload", default="train", choices=WORKLOADS,
                   help="; ".join(f"{k}: {v}" for k, v in WORKLOAD_HELP.items()))
    w.add_argument("--batch", type=int, default=8, help="sequences per step (default: 8)")
    w.add_argument("--seq", type=int, default=None,
                   help="tokens per sequence; the context length L for decode* (default: block size)")
    w.add_argument("--dtype", default="bf16", help="fp64, fp32, tf32, bf16 or fp16 (default: bf16)")
    h = parser.add_argument_group("machine")
    add_hardware_arguments(h, "h100-sxm")
    o = parser.add_argument_group("output")
    o.add_argument("--view", default="all", choices=VIEWS,
                   help="op: every op; component: summed over layers; layer: per block; "
                        "all (default): block 0's ops and the model-level ops, components, layers")
    o.add_argument("--plot", default=None, metavar="FILE", help="write the roofline picture (.png or .svg)")


def build_prediction(args: argparse.Namespace) -> Any:
    from gptperf.perfmodel import Workload, predict

    config = config_from_args(args)
    seq = config.block_size if args.seq is None else args.seq
    return predict(config, Workload(args.workload, args.batch, seq, args.dtype), resolve_hardware(args))


def run(args: argparse.Namespace) -> int | None:
    if args.plot is not None:  # '' too: a picture was asked for
        check_plot_file(args.plot)
    pred = build_prediction(args)
    plot = None
    if args.plot:
        from gptperf.plotting.roofline import plot_prediction

        plot = str(plot_prediction(args.plot, pred, view="component" if args.view == "component" else "op"))
    if args.json:
        from gptperf.output import emit_json

        doc = pred.to_dict()
        if plot:
            doc["plot"] = plot
        emit_json(doc)
        return 0
    _print(pred, args.view)
    if plot:
        from gptperf.output import console

        console.print(f"roofline picture: {plot}", highlight=False)
    return 0


def text_table(title: str, headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    """A plain aligned table (rich is too slow for the thousand cells of a large model)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("─" * w for w in widths)
    return "\n".join([title, line(headers), rule, *(line(r) for r in rows), ""])


def _print(pred: Any, view: str) -> None:
    import sys

    from gptperf.output import binary_bytes, seconds, si
    from gptperf.perfmodel import CONVENTIONS, count_parameters

    hw, w, cfg = pred.hardware, pred.workload, pred.config
    src = hw.label
    total_t = pred.time_s
    out: list[str] = []
    headers = ["", "phase", "kernels", "FLOPs", "bytes", "AI (FLOP/B)", "bound", "time", "share"]
    right = {2, 3, 4, 5, 7, 8}

    def cells(key: str, phase: str, g: Any) -> list[str]:
        return [key, phase or "", str(g.count), si(g.flops, "FLOP"), si(g.bytes, "B"),
                f"{g.arithmetic_intensity:.3g}", g.bound, seconds(g.time_s), f"{100 * g.time_s / total_t:.1f}%"]

    def table(title: str, first: str, rows: list[list[str]]) -> None:
        out.append(text_table(f"{title} — time: roofline prediction on {src}",
                              [first, *headers[1:]], rows, right))

    out.append(f"{cfg.name} (L={cfg.n_layer}, H={cfg.n_head}, C={cfg.n_embd}, V={cfg.vocab_size}, "
               f"attention={cfg.attention}) — {w.kind}, B={w.batch}, seq={w.seq}, {w.dtype} — "
               f"predicted on {src}\n")
    if view in ("all", "op"):
        rows = [cells(o.name, o.phase, o) for o in pred.ops if view == "op" or o.layer in (None, 0)]
        table("per operation" + (" (block 0 shown; every block is the same)" if view == "all" else ""), "op", rows)
    if view in ("all", "component"):
        rows = [cells(comp, phase, g) for (comp, phase), g in pred.by_component().items()]
        table(f"per component (summed over {cfg.n_layer} blocks)", "component", rows)
    if view in ("all", "layer"):
        groups = pred.by_layer()
        rows = []
        blocks = [k for k in groups if k is not None]
        if view == "all" and len(blocks) > 1:  # blocks are identical: one row says it
            rows.append(cells(f"h.0 … h.{blocks[-1]} (each)", "", groups[blocks[0]]))
            rows.append(["", "", "", "", "", "", "", seconds(groups[blocks[0]].time_s * len(blocks)),
                         f"{100 * groups[blocks[0]].time_s * len(blocks) / total_t:.1f}%"])
        else:
            rows += [cells(groups[k].key, "", groups[k]) for k in blocks]
        if None in groups:
            rows.append(cells("model-level", "", groups[None]))
        table("per block (all phases)", "block", rows)

    rows = [
        ["parameters", f"{count_parameters(cfg):,}", "tied LM head counted once"],
        ["parameters without embeddings", f"{count_parameters(cfg, include_embeddings=False):,}", "minus wte and wpe"],
        ["FLOPs per step", si(pred.flops, "FLOP"), "gptperf count, causal attention at T(T+1)/2"],
        ["bytes per step", si(pred.bytes, "B"), "minimum traffic per op, summed"],
    ]
    for name in CONVENTIONS:
        rows.append([f"model FLOPs/token, {name}", si(pred.model_flops_per_token(name), "FLOP"),
                     f"MFU {100 * pred.mfu(name):.1f}%; {CONVENTIONS[name]}"])
    rows += [
        ["predicted step time", seconds(total_t), f"roofline on {src}: ops in series + launch latency"],
        ["tokens per step", f"{pred.tokens:,}", "B·T" if w.kind in ("train", "forward", "prefill") else "B (new tokens)"],
        ["tokens/s", si(pred.tokens_per_s, "tok/s"), f"predicted on {src}"],
        ["MFU of the prediction", f"{100 * pred.mfu():.1f}%",
         f"gptperf FLOPs/token × tokens/s ÷ {si(pred.peak_flops, 'FLOP/s')} ({w.dtype} peak, {src})"],
    ]
    out.append(text_table("totals", ["quantity", "value", "source / convention"], rows, {1}))

    mem = pred.memory
    rows = [[part.replace("_", " "), binary_bytes(getattr(mem, part)), binary_bytes(mem.live.get(part, 0))]
            for part in ("weights", "weight_copies", "gradients", "optimizer_state", "activations",
                         "kv_cache", "logits")]
    rows.append(["predicted peak", "", binary_bytes(mem.total)])
    if hw.memory_bytes != float("inf"):
        rows.append([f"capacity ({src})", "", binary_bytes(hw.memory_bytes)])
        rows.append(["verdict", "", "fits" if mem.fits(hw) else "does NOT fit"])
        rows.append(["largest batch that fits", "", f"{mem.max_batch(hw):,} (seq={w.seq})"])
    out.append(text_table(f"memory (predicted; peak at: {mem.peak_at})", ["part", "size", "live at peak"],
                          rows, {1, 2}))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
