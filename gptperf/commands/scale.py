"""`gptperf scale`: strong and weak scaling of data-parallel training through torchrun, measured
and predicted — speedup, efficiency, throughput, communication, bus bandwidth, skew."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gptperf import output
from gptperf.commands.common import (
    add_device_argument,
    add_flag_pair,
    add_model_arguments,
    check_folder,
    config_from_args,
    guard_memory,
    int_list,
    output_path,
    positive_int,
    positive_step_count,
    seed_number,
)
from gptperf.dtypes import DTYPES
from gptperf.errors import UserError
from gptperf.output import print_note, seconds, si, wide_console
from gptperf.perfmodel.comm import INTERCONNECTS
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan

if TYPE_CHECKING:
    from gptperf.scaling.results import ScaleSpec, ScalingStudy

HELP = ("scaling of data-parallel training (torchrun + DDP): speedup, efficiency, throughput, "
        "communication, predicted beside measured")
STUDIES_SCHEMA = "gptperf.scale-studies/1"  # --json of more than one --mode: {"studies": [...]}


def _modes(text: str) -> tuple[str, ...]:
    from gptperf.scaling.results import MODES  # deferred: keeps --help fast

    modes = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",")))
    if any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"expected {', '.join(MODES)} or {','.join(MODES)}, "
                                         f"got {text!r}")
    return modes


def _what_if(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in text.split(","):
        nodes, sep, gpus = item.strip().lower().partition("x")
        if not (sep and nodes.isdigit() and gpus.isdigit() and int(nodes) > 0 and int(gpus) > 0):
            raise argparse.ArgumentTypeError(f"expected NODESxGPUS[,...] such as 1x8,2x8, got {item!r}")
        out.append((int(nodes), int(gpus)))
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = parser.add_argument_group("sweep")
    s.add_argument("--mode", type=_modes, default=("strong",), metavar="MODE[,MODE]",
                   help="strong: the global batch (--batch) is split over p processes; "
                        "weak: every process keeps --batch; strong,weak: both studies from one "
                        "launch a process count (default: strong)")
    s.add_argument("--procs", type=int_list, default=(1, 2), metavar="LIST",
                   help="process counts, e.g. 1,2,4,8 (one per GPU on a GPU; must include 1; default: 1,2)")
    s.add_argument("--threads", type=int_list, default=None, metavar="LIST",
                   help="also sweep intra-op threads of one process, e.g. 1,2 (CPU)")
    s.add_argument("--space-batches", type=int_list, default=None, metavar="LIST",
                   help="per-process batches of the performance-space heatmap (default: those the sweep runs)")
    s.add_argument("--warmup", type=positive_step_count, default=3,
                   help="untimed steps per point, at least 1: DDP's first step is its own (default: 3)")
    s.add_argument("--steps", type=positive_step_count, default=10, help="timed steps per point (default: 10)")
    s.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds one torchrun launch may take before it is stopped, at least 10 "
                        "(default: 600)")
    add_model_arguments(parser.add_argument_group("model"), "tiny")
    w = parser.add_argument_group("workload")
    w.add_argument("--batch", type=positive_int, default=12,
                   help="global batch (strong) or per-process batch (weak) in sequences (default: 12)")
    w.add_argument("--seq", type=positive_int, help="tokens per sequence (default: 64 for tiny, else the block size)")
    w.add_argument("--dtype", default="fp32", choices=DTYPES, help="fp32/tf32/fp64, or bf16/fp16 autocast")
    add_flag_pair(w, "compile", "torch.compile the model (DDP splits graphs at buckets)",
                  "run eagerly (the default)")
    add_device_argument(w)
    w.add_argument("--seed", type=seed_number, default=0, help="seed of the weights and the batches")
    p = parser.add_argument_group("prediction")
    p.add_argument("--hardware", default=None,
                   help="machine for the roofline bound and the order of backward: a registry name, "
                        "'measured' or a TOML file (default: measured ceilings if any, else the datasheet)")
    p.add_argument("--what-if", type=_what_if, default=(), metavar="NxG[,...]",
                   help="also predict N nodes × G GPUs from datasheets, e.g. 1x8,2x8,4x8 (strong "
                        "scaling splits --batch over them: e.g. --batch 32)")
    p.add_argument("--what-if-hardware", default=None, help="GPU of the what-if (default: h100-sxm)")
    p.add_argument("--intra", default=None, choices=list(INTERCONNECTS),
                   help="link inside a what-if node (default: nvlink4)")
    p.add_argument("--inter", default=None, choices=list(INTERCONNECTS),
                   help="link between what-if nodes, one NIC per GPU (default: ib-ndr)")
    parser.add_argument("--plot-dir", type=output_path, metavar="DIR", help="write speedup.png, efficiency.png, space.png there, "
                        "replacing only pictures gptperf drew")


def specs_from_args(args: argparse.Namespace) -> list[ScaleSpec]:
    """One study's spec per --mode, the same in everything else."""
    from gptperf.scaling.results import WHAT_IF_HARDWARE, ScaleSpec  # deferred: keeps --help fast

    for flag in ("what_if_hardware", "intra", "inter"):
        if getattr(args, flag) is not None and not args.what_if:
            name = "--" + flag.replace("_", "-")
            raise UserError(f"{name} {getattr(args, flag)!r} without --what-if: nothing to predict "
                            "on it; add --what-if NxG")
    config = config_from_args(args)
    seq = args.seq if args.seq is not None else (min(64, config.block_size) if args.preset == "tiny"
                                                  else config.block_size)
    links = {k: getattr(args, k) for k in ("intra", "inter") if getattr(args, k) is not None}
    return [ScaleSpec(config, mode=mode, procs=args.procs, threads=args.threads, batch=args.batch,
                      seq=seq, dtype=args.dtype, compile=bool(args.compile), device=args.device,
                      warmup=args.warmup, steps=args.steps, seed=args.seed,
                      space_batches=args.space_batches, hardware=args.hardware, what_if=args.what_if,
                      what_if_hardware=args.what_if_hardware or WHAT_IF_HARDWARE,
                      timeout_s=args.timeout, **links)
            for mode in args.mode]


def picture_prefix(mode: str, modes: tuple[str, ...]) -> str:
    """The prefix of a study's picture names in --plot-dir: none for one study, else its mode."""
    return "" if len(modes) == 1 else f"{mode}-"


def run(args: argparse.Namespace) -> int:
    from gptperf.scaling.launch import LaunchError  # deferred: keeps --help fast
    from gptperf.scaling.study import run_scaling_studies  # deferred: keeps --help fast

    if args.plot_dir is not None:
        from gptperf.plotting.scaling import PICTURES  # deferred: keeps --help fast

        check_folder(args.plot_dir, "--plot-dir", pictures=[
            picture_prefix(mode, args.mode) + name for mode in args.mode for name in PICTURES])
    specs = specs_from_args(args)
    _guard(specs)
    progress = None if args.json else (lambda msg: output.err_console.print(f"[dim]{msg}[/dim]"))
    try:
        studies = run_scaling_studies(specs, progress=progress)
    except LaunchError as err:
        message = " ".join(str(err).split())
        print(f"gptperf scale: error: {message}", file=sys.stderr)
        if args.json:
            output.emit_json(output.error_document(message, "scale", 1))
        return 1
    docs = [study.to_dict() for study in studies]
    if args.plot_dir:
        from gptperf.plotting.scaling import plot_scaling  # deferred: keeps --help fast

        for study, doc in zip(studies, docs, strict=True):
            prefix = picture_prefix(study.spec.mode, args.mode)
            doc["plots"] = [str(p) for p in plot_scaling(study, args.plot_dir, prefix=prefix)]
    if args.json:
        output.emit_json(docs[0] if len(docs) == 1 else {"schema": STUDIES_SCHEMA, "studies": docs})
    else:
        for study, doc in zip(studies, docs, strict=True):
            print_study(study, doc.get("plots", []))
    return 0


def _guard(specs: list[ScaleSpec]) -> None:
    """Before any launch: the step each process runs can run on this device
    (`steps.build.check_step`: an fp16 step on a CPU would fail in every worker), and the largest
    per-process batch of the studies' grids fits, on a CPU once per process count (they share its
    RAM), on GPUs once (one each; gptperf.memguard). The studies differ only in mode, so one check
    of the largest batch covers them all."""
    from gptperf.runtime import resolve_device  # deferred: loads torch
    from gptperf.steps.build import check_step  # deferred: loads torch

    spec = specs[0]
    device = resolve_device(spec.device)
    largest = max(b for s in specs for b in s.grid_batches)
    plan = ExecutionPlan.default("train", device.type, compile=spec.compile,  # the workers' plan
                                 attention=spec.config.attention, ddp=True)
    check_step(spec.config, Workload("train", largest, spec.seq, spec.dtype), plan, device)
    for p in sorted(set(spec.procs)) if device.type == "cpu" else [1]:
        guard_memory(spec.config, "train", largest, spec.seq, spec.dtype, device,
                     processes=p, flag="per process; set by --batch, --mode, --space-batches")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}%"


def print_study(study: ScalingStudy, plots: list[str]) -> None:
    """The terminal report of a scaling study (a gptperf.scaling.results.ScalingStudy)."""
    from rich.table import Table  # deferred: loads rich

    from gptperf.scaling.results import IDEAL_THREADS  # deferred: keeps --help fast

    console = wide_console()
    spec, c = study.spec, study.spec.config
    env = study.environment
    console.print(f"[bold]scale {spec.mode}[/bold] · {c.name} (L={c.n_layer} H={c.n_head} C={c.n_embd}) · "
                  f"{'global' if spec.mode == 'strong' else 'per-process'} batch {spec.batch} · T={spec.seq} · "
                  f"{spec.dtype} · {study.device} · {study.backend or 'one process'} · torchrun · "
                  f"torch {env.get('torch', '?')}")
    eff = "efficiency" if spec.mode == "strong" else "weak eff."
    t = Table(title=f"{spec.mode.capitalize()} scaling: time per step (slowest rank, median of {spec.steps} "
                    f"after {spec.warmup} warm-up); measured | predicted")
    for col in ("p", "batch/proc", "time/step", "predicted", "error", "tokens/s", "per proc", "speedup", eff):
        t.add_column(col, justify="right")
    for p in study.points:
        t.add_row(str(p.procs), str(p.per_process_batch), seconds(p.step_s), seconds(p.predicted.step_s),
                  _pct(p.error), si(p.tokens_per_s), si(p.tokens_per_s_per_process),
                  f"{p.speedup:.2f} | {p.predicted_speedup:.2f}",
                  f"{p.efficiency:.0%} | {p.predicted_efficiency:.0%}")
    console.print(t)
    t = Table(title="Gradient all-reduce per step; measured | predicted")
    for col in ("p", "gradients", "buckets", "in flight", "exposed", "busbw", "skew"):
        t.add_column(col, justify="right")
    for p in study.points[1:]:
        m, pr = p.measured, p.predicted
        t.add_row(str(p.procs), si(pr.gradient_bytes, "B"), str(len(m.bucket_bytes)),
                  f"{seconds(m.comm_total_s)} | {seconds(pr.comm_total_s)}",
                  f"{seconds(m.comm_exposed_s)} | {seconds(pr.comm_exposed_s)}",
                  f"{si(p.busbw, 'B/s')} | {si(pr.busbw, 'B/s')}", seconds(m.skew_s))
    if len(study.points) > 1:
        console.print(t)
        console.print("[dim]in flight: from a rank's bucket ready to reduced, waiting for the "
                      "other ranks (skew) included; busbw over that time (the link's own: the "
                      "all-reduce sweep below); predicted: the transfer alone[/dim]")
    for p, sweep in sorted(study.collectives.items()):
        if sweep.fit is not None:
            f = sweep.fit
            big = sweep.points[-1]
            console.print(f"all-reduce sweep, {sweep.backend}, {p} ranks, {si(sweep.points[0].bytes, 'B')}–"
                          f"{si(big.bytes, 'B')}: α = {seconds(f.alpha_s)}, β = {si(f.beta, 'B/s')} "
                          f"(fit residual {f.residual:.0%} RMS); busbw at {si(big.bytes, 'B')}: "
                          f"{si(big.busbw, 'B/s')}")
    for p in study.points[1:]:
        one = p.predicted_from_one
        if one is not None:
            console.print(f"p={p.procs}: sharing the machine, each process computes {p.sharing:.2f}× as long as "
                          f"one alone ({seconds(p.predicted.compute_s)} against {seconds(one.compute_s)}, "
                          f"measured without DDP); on one process's compute the prediction would be "
                          f"{seconds(one.step_s)} ({_pct(p.step_s / one.step_s - 1)})")
    if study.points and study.points[0].roofline_s is not None:
        console.print(f"roofline bound of one process's step at batch {study.points[0].per_process_batch}: "
                      f"{seconds(study.points[0].roofline_s)} ({study.hardware}, whole-machine ceilings)")
    if study.thread_points:
        t = Table(title="Intra-op threads, one process; measured | ideal")
        for col in ("threads", "batch", "time/step", "ideal", "tokens/s", "speedup", "efficiency"):
            t.add_column(col, justify="right")
        for tp in study.thread_points:
            t.add_row(str(tp.threads), str(tp.batch), seconds(tp.step_s), seconds(tp.predicted_step_s),
                      si(tp.tokens_per_s), f"{tp.speedup:.2f}", f"{tp.efficiency:.0%}")
        console.print(t)
        console.print(f"[dim]{IDEAL_THREADS[spec.mode]}[/dim]")
    if study.what_if:
        t = Table(title=f"What-if on {spec.what_if_hardware}: a PREDICTION from datasheets, not measured")
        for col in ("nodes×GPUs", "batch/GPU", "time/step", "compute", "all-reduce", "exposed",
                    "tokens/s", "per GPU", "speedup", eff):
            t.add_column(col, justify="right")
        for w in study.what_if:
            pt, st = w.point, w.point.step
            t.add_row(f"{pt.nodes}×{pt.gpus_per_node}", str(pt.per_gpu_batch), seconds(st.step_s),
                      seconds(st.compute_s), seconds(st.comm_total_s), seconds(st.comm_exposed_s),
                      si(pt.tokens_per_s), si(pt.tokens_per_s / pt.world_size), f"{w.speedup:.2f}",
                      f"{w.efficiency:.0%}")
        console.print(t)
        for w in study.what_if:
            if w.point.step.link is not None:
                console.print(f"[dim]{w.point.nodes}×{w.point.gpus_per_node}: {w.point.step.label}[/dim]")
    if len(study.points) > 1:
        console.print(f"[dim]predicted = {study.points[-1].predicted.label}[/dim]")
    if study.max_abs_error is not None:
        console.print(f"largest |measured/predicted − 1| of a multi-process step: {study.max_abs_error:.1%}")
    for note in study.notes:
        print_note(console, note, "yellow")
    for path in plots:
        console.print(f"picture: {path}")
