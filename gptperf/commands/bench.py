"""`gptperf bench`: time a train / forward / prefill / decode step and report the lecture's metrics."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from gptperf import names
from gptperf.commands.common import (
    add_device_argument,
    add_flag_pair,
    add_model_arguments,
    config_from_args,
    guard_memory,
    positive_int,
    positive_step_count,
    seed_number,
    step_count,
)
from gptperf.dtypes import DTYPES
from gptperf.errors import UserError
from gptperf.output import binary_bytes, emit_json, percent, print_note, rich_progress, seconds, si
from gptperf.perfmodel.ops import ROOFLINE_DEFINITION
from gptperf.plan import INFERENCE_KINDS

if TYPE_CHECKING:
    from gptperf.measure.bench import BenchResult
    from gptperf.measure.metrics import Utilization

HELP = "benchmark a workload: time per batch, throughput, FLOP/s, MFU, peak memory, utilization"

WORKLOADS = ("train", "forward", "prefill", "decode", "decode_nocache")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", choices=WORKLOADS,
                        help="train (fwd+bwd+AdamW), forward, prefill (fill the KV cache), "
                             "decode (one token with the KV cache), decode_nocache (recompute)")
    add_model_arguments(parser.add_argument_group("model"), "tiny")
    w = parser.add_argument_group("workload")
    w.add_argument("--batch", type=positive_int, default=12, help="sequences per step (default: 12)")
    w.add_argument("--seq", type=positive_int,
                   help="tokens per sequence; context length for decode "
                        "(default: 64 for tiny, else the block size)")
    w.add_argument("--dtype", default="fp32", choices=DTYPES,
                   help="fp32/tf32/fp64 weights, or bf16/fp16 autocast (default: fp32)")
    add_flag_pair(w, "compile", "torch.compile the model", "run eagerly (the default)")
    w.add_argument("--fast", action="store_true",
                   help="prefill/decode on the fast path: static KV cache, compiled, CUDA graph "
                        "on a GPU (compiled on CPU); the plan is in the JSON")
    add_device_argument(w)
    t = parser.add_argument_group("timing")
    t.add_argument("--warmup", type=step_count,
                   help="untimed steps first (default: 3; 5 for decode); >= 1 with --compile")
    t.add_argument("--repeats", type=positive_step_count,
                   help="timed steps; the median is reported (default: 10, 50 for decode; on a "
                        "calibrated GPU enough to span 1 s, at most 500)")
    t.add_argument("--hardware", default=None,
                   help="hardware for the prediction and datasheet MFU: a registry name, "
                        "'measured', or a TOML file (default: this device's measured ceilings "
                        "if `gptperf ceilings` cached them, else its datasheet entry)")
    t.add_argument("--seed", type=seed_number, default=0, help="random seed for weights and tokens")


def run(args: argparse.Namespace) -> int:
    started_at = time.perf_counter()  # wall time covers the whole command, imports included
    from gptperf.measure.bench import default_seq, run_bench  # deferred: keeps --help fast
    from gptperf.runtime import resolve_device  # deferred: loads torch

    if args.fast and args.workload not in INFERENCE_KINDS:
        raise UserError(f"--fast applies to {', '.join(INFERENCE_KINDS)}, not {args.workload}; "
                        "a fast train or forward step is --compile (on a GPU with its fused kernels)")
    config = config_from_args(args)
    seq = args.seq if args.seq is not None else default_seq(config)
    device = resolve_device(args.device)
    config.check_sequence(seq)
    guard_memory(config, args.workload, args.batch, seq, args.dtype, device, compile=bool(args.compile))
    with rich_progress(enabled=not args.json, description=f"bench {args.workload}") as progress:
        result = run_bench(config, args.workload, args.batch, seq, args.dtype, device,
                           bool(args.compile), args.warmup, args.repeats, hardware=args.hardware,
                           progress=progress, seed=args.seed, started_at=started_at,
                           fast=args.fast)
    if args.json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    return 0


def print_result(r: BenchResult) -> None:
    """The terminal report of one benchmark (a gptperf.measure.BenchResult)."""
    from gptperf.output import console  # deferred: loads rich

    _print_header(console, r)
    console.print(_timing_table(r))
    _print_throughput(console, r)
    console.print(_memory_table(r))
    if r.utilization is not None:
        _print_utilization(console, r.utilization)
    if r.predictions:
        _print_predictions(console, r)
    s = r.stages_s
    console.print(f"Wall time: {seconds(r.wall_time_s)} (setup {seconds(s['setup_s'])}, build "
                  f"{seconds(s['build_s'])}, warm-up {seconds(s['warmup_s'])}, timed "
                  f"{seconds(s['timed_s'])})")
    for note in r.notes:
        print_note(console, note)


def _print_header(console: Any, r: BenchResult) -> None:
    """One line: the workload, the model, the plan and the device."""
    c = r.config
    mode = r.plan.label if r.plan is not None else ("compiled" if r.compile else "eager")
    where = f"{r.device} ({r.device_name}" + (f", {r.threads} threads)" if r.device == "cpu" else ")")
    seq_word = "context L" if r.kind.startswith("decode") else "T"
    console.print(f"[bold]bench {r.kind}[/bold] · {c.name} ({si(r.parameters)} parameters, "
                  f"L={c.n_layer} H={c.n_head} C={c.n_embd}, {c.attention} attention) · "
                  f"B={r.batch} {seq_word}={r.seq} · {r.dtype} · {mode} · {where}")


def _timing_table(r: BenchResult) -> Any:
    """The measured time per step (and per phase, where there are several), with its spread."""
    from rich.table import Table  # deferred: loads rich

    t = r.timing.total
    table = Table(title=f"Time per step, measured (median of {t.repeats} after "
                        f"{r.timing.warmup} warm-up; {t.clock})")
    for col in ("phase", "median", "mean", "std", "min", "max", "std/median"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    labels = {names.FORWARD: "forward", names.BACKWARD: "backward",
              names.OPTIMIZER_PHASE: "optimizer"}
    rows = list(r.timing.phases.items()) if len(r.timing.phases) > 1 else []
    for name, pt in [*rows, ("step", t)]:
        flag = " [yellow](wide)[/yellow]" if pt.wide_spread else ""
        table.add_row(labels.get(name, name), seconds(pt.median), seconds(pt.mean),
                      seconds(pt.std), seconds(pt.min), seconds(pt.max),
                      f"{pt.rel_spread:.1%}{flag}")
    return table


def _print_throughput(console: Any, r: BenchResult) -> None:
    """Tokens and sequences per second, the FLOP/s achieved, and the MFU against each peak."""
    unit = "generated tokens" if r.kind.startswith("decode") else "tokens"
    console.print(f"Throughput (measured): {si(r.tokens_per_s, unit + '/s')}, "
                  f"{si(r.sequences_per_s, 'sequences/s')}")
    if r.achieved_flops_per_s is not None:
        console.print(f"Achieved (measured time, perfmodel FLOPs): "
                      f"{si(r.achieved_flops_per_s, 'FLOP/s')} of model FLOPs "
                      f"({si(r.model_flops_per_step, 'FLOP')} per step, gptperf exact count, "
                      + (f"fwd+bwd; {si(r.flops_per_step, 'FLOP')} with the optimizer)"
                         if r.kind == "train" else "a forward step)"))
        nano = r.mfu_conventions.get("nanogpt")
        if nano:
            console.print(f"  under nanoGPT's {nano['formula'].split(' (')[0]} convention: "
                          f"{si(nano['achieved_flops_per_s'], 'FLOP/s')}")
    for m in r.mfu:
        console.print(f"{m.label}: [bold]{percent(m.mfu)}[/bold]")


def _memory_table(r: BenchResult) -> Any:
    """The peak memory measured beside the performance model's breakdown of it."""
    from rich.table import Table  # deferred: loads rich

    mem = Table(title="Peak memory: measured vs predicted (perfmodel)")
    mem.add_column("what")
    mem.add_column("bytes", justify="right")
    mem.add_column("source")
    m = r.memory
    if m is not None:
        if r.device == "cuda":
            mem.add_row("allocated (peak)", binary_bytes(m.allocated_bytes), "measured, torch.cuda")
            mem.add_row("reserved (peak)", binary_bytes(m.reserved_bytes), "measured, torch.cuda")
        mem.add_row("host peak RSS", binary_bytes(m.peak_rss_bytes), "measured, " + (
            "VmHWM" if "VmHWM" in m.source else "ru_maxrss"))
    p = r.predicted_memory
    if p:
        for key in ("weights", "weight_copies", "gradients", "optimizer_state", "activations",
                    "kv_cache", "logits"):
            if p.get(key):
                mem.add_row(f"  {key.replace('_', ' ')}", binary_bytes(p[key]), "predicted")
        mem.add_row("total at peak", binary_bytes(p["total"]), f"predicted (peak at {p['peak_at']})")
    return mem


def _print_utilization(console: Any, u: Utilization) -> None:
    """The device's utilization (and SM clock) sampled over the timed steps."""
    if u.mean_percent is not None:
        console.print(f"Utilization ({u.source}, {u.samples} samples over "
                      f"{seconds(u.window_s)}): mean {u.mean_percent:.0f}%, "
                      f"max {u.max_percent:.0f}%")
    console.print(f"  [dim]{u.meaning}[/dim]")
    if u.sm_clock_mean_mhz is not None:
        console.print(f"SM clock (nvml, measured): mean {u.sm_clock_mean_mhz:.0f} MHz, lowest "
                      f"{u.sm_clock_min_mhz:.0f} MHz, of the card's {u.sm_clock_max_mhz:.0f} MHz")
    if u.note:
        print_note(console, u.note, "yellow", indent="  ")


def _print_predictions(console: Any, r: BenchResult) -> None:
    """The measured step beside each prediction (roofline bounds, calibrated expected time), and
    what each was predicted with."""
    from rich.table import Table  # deferred: loads rich

    from gptperf.measure.bench import (  # deferred: keeps --help fast
        CALIBRATED,
        ROOFLINE,
        host_charge_note,
    )

    pt = Table(title="Prediction vs measurement (time per step)")
    for col in ("", "time per step", "tokens/s", "measured / predicted"):
        pt.add_column(col, justify="right" if col else "left", no_wrap=True)
    pt.add_row(f"measured (median of {r.timing.total.repeats})", seconds(r.step_time_s),
               si(r.tokens_per_s, "/s"), "")
    sources = []
    labelled = [(f"{ROOFLINE} ({pr.source})", pr) for pr in r.roofline]
    if r.calibrated is not None:
        labelled.append((CALIBRATED, r.calibrated))
    for label, pr in labelled:
        pt.add_row(label, seconds(pr.step_time_s), si(pr.tokens_per_s, "/s"),
                   f"{pr.measured_over_predicted:.2f}×")
        sources.append(f"  {label}: {pr.hardware}")
        charge = host_charge_note(pr)
        if charge:
            sources.append(f"    {charge}")
    console.print(pt)
    console.print("\n".join(sources), highlight=False)
    console.print(f"  [dim]roofline bound: what the hardware allows ({ROOFLINE_DEFINITION}); "
                  "calibrated expected time: what this machine will take (measured kernel curves "
                  "and host cost)[/dim]")
