"""`run_bench`: time one workload step and report the lecture's metrics beside the model's prediction.

Wall time, time per batch (forward / backward / optimizer apart for training), throughput,
achieved FLOP/s and MFU (against the measured ceiling and the datasheet peak, each named), peak
memory beside the performance model's breakdown, utilization sampled during the timed steps,
and the predicted step time and tokens/s beside the measured ones.

FLOPs come from the performance model for the same workload: "model FLOPs" are its exact count
of forward + backward work (causal attention at the causal count, softmax, norms and elementwise
included, no optimizer), the numerator of MFU; "all FLOPs" add the AdamW step.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Any

from gptperf import names
from gptperf.errors import UserError
from gptperf.measure.metrics import MemoryPeak, PeakMemoryMeter, Utilization, UtilizationSampler
from gptperf.measure.timer import PhaseTiming, Progress, time_phases

DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 10
DECODE_WARMUP = 5  # decode steps are short: more of them give a steadier median
DECODE_REPEATS = 50
MFU_CONVENTION = "gptperf"
TINY_SEQ = 64  # the CPU anchor's shape (nanoGPT, 4 layers, C=128, T=64, B=12)


def default_seq(config: Any) -> int:
    """T when the user gives none: 64 for the tiny preset (fast on a CPU), else the block size."""
    return min(TINY_SEQ, config.block_size) if config.name == "tiny" else config.block_size


def default_counts(kind: str) -> tuple[int, int]:
    """(warmup, repeats) when the user gives none."""
    if kind.startswith("decode"):
        return DECODE_WARMUP, DECODE_REPEATS
    return DEFAULT_WARMUP, DEFAULT_REPEATS


@dataclass
class BenchResult:
    """Everything one benchmark measured and predicted; `to_dict()` is the JSON document."""

    kind: str
    config: Any  # GPTConfig
    batch: int
    seq: int
    dtype: str
    compile: bool
    device: str
    device_name: str
    threads: int
    timing: PhaseTiming
    wall_time_s: float
    stages_s: dict[str, float]
    tokens_per_step: int
    parameters: int
    flops_per_step: float | None = None  # all predicted ops, optimizer included
    model_flops_per_step: float | None = None  # forward + backward (the MFU numerator)
    flops_source: str = ""
    mfu: list[dict[str, Any]] = field(default_factory=list)
    mfu_conventions: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: MemoryPeak | None = None
    predicted_memory: dict[str, Any] | None = None
    utilization: Utilization | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    measured_hardware: dict[str, Any] | None = None
    datasheet_hardware: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def step_time_s(self) -> float:
        """Median time per step (per batch)."""
        return self.timing.total.median

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def sequences_per_s(self) -> float:
        return self.batch / self.step_time_s

    @property
    def achieved_flops_per_s(self) -> float | None:
        """Model FLOPs per step / median step time."""
        if self.model_flops_per_step is None:
            return None
        return self.model_flops_per_step / self.step_time_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gptperf.bench/1",
            "workload": {"kind": self.kind, "batch": self.batch, "seq": self.seq,
                         "dtype": self.dtype, "compile": self.compile,
                         "attention": self.config.attention, "tokens_per_step": self.tokens_per_step},
            "config": self.config.to_dict(),
            "parameters": self.parameters,
            "device": {"type": self.device, "name": self.device_name, "threads": self.threads},
            "wall_time_s": self.wall_time_s,
            "stages_s": dict(self.stages_s),
            "time_per_step": self.timing.to_dict(),
            "step_time_s": self.step_time_s,
            "throughput": {"tokens_per_s": self.tokens_per_s,
                           "sequences_per_s": self.sequences_per_s},
            "flops": {"per_step": self.flops_per_step, "model_per_step": self.model_flops_per_step,
                      "achieved_flops_per_s": self.achieved_flops_per_s,
                      "source": self.flops_source},
            "mfu": list(self.mfu),
            "mfu_conventions": dict(self.mfu_conventions),
            "memory": {"measured": self.memory.to_dict() if self.memory else None,
                       "predicted": self.predicted_memory},
            "utilization": self.utilization.to_dict() if self.utilization else None,
            "predictions": list(self.predictions),
            "hardware": {"measured": self.measured_hardware, "datasheet": self.datasheet_hardware},
            "notes": list(self.notes),
            "environment": dict(self.environment),
        }


def _measured_date(hw: Any) -> str:
    return str(hw.extra.get("measurement", {}).get("measured_at", "unknown date"))


def _hardware_label(hw: Any, dtype: str) -> str:
    """E.g. 'measured bf16 matmul (768 TFLOP/s, measured NVIDIA H100 80GB HBM3 on 2026-...)'."""
    from gptperf.output import si

    peak = si(hw.peak(dtype), "FLOP/s")
    if hw.source == "measured":
        quick = ", quick sweep" if hw.extra.get("measurement", {}).get("quick") else ""
        return (f"measured {dtype} matmul ({peak}, measured {hw.device_name or hw.name} "
                f"on {_measured_date(hw)}{quick})")
    return f"{hw.source} {hw.name} {dtype} dense {peak}"


def _resolve_hardware(hardware: Any, device_name: str) -> Any:
    from gptperf.perfmodel import Hardware, get_hardware

    if hardware is None or isinstance(hardware, Hardware):
        return hardware
    return get_hardware(str(hardware), device_name=device_name)


def check_bench_args(kind: str, config: Any, batch: int, seq: int, dtype: str, device: Any,
                     compile: bool, warmup: int, repeats: int) -> None:
    """One-line UserErrors for every bad argument, before anything heavy runs."""
    from gptperf.dtypes import check_dtype
    from gptperf.workloads import check_workload

    check_workload(kind, batch, seq, config)
    check_dtype(dtype)
    if getattr(device, "type", device) == "cpu" and dtype == "fp16":
        raise UserError("dtype 'fp16' autocast needs a GPU; on CPU use bf16 or fp32")
    for what, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"{what} must be an integer >= {least}, got {value!r}")
    if compile and warmup < 1:
        raise UserError(f"warmup={warmup} with --compile would time the compilation; "
                        "use --warmup 1 or more")


def run_bench(
    config: Any,
    kind: str,
    batch: int,
    seq: int,
    dtype: str = "fp32",
    device: Any = "auto",
    compile: bool = False,
    warmup: int | None = None,
    repeats: int | None = None,
    hardware: Any = None,
    progress: Progress | None = None,
    *,
    seed: int = 0,
    started_at: float | None = None,
) -> BenchResult:
    """Build `kind` on `config`, warm it up, time `repeats` steps, and collect every metric.

    `hardware` (a perfmodel Hardware, a registry name, a TOML path or 'measured') is the machine
    of the first prediction and of the datasheet MFU; by default the datasheet entry of this
    device. The measured ceilings of this device, if `gptperf ceilings` cached them, give the
    measured MFU and a second prediction. `started_at` (a perf_counter reading) makes the wall
    time cover work done before the call (e.g. the command's imports).
    """
    t_start = time.perf_counter() if started_at is None else started_at
    import torch

    from gptperf.envinfo import environment
    from gptperf.measure.devices import datasheet_hardware_for
    from gptperf.perfmodel import Workload, count_parameters, get_hardware, predict
    from gptperf.runtime import device_name as name_of
    from gptperf.runtime import resolve_device
    from gptperf.workloads import build_runner

    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    d_warmup, d_repeats = default_counts(kind)
    warmup = d_warmup if warmup is None else warmup
    repeats = d_repeats if repeats is None else repeats
    check_bench_args(kind, config, batch, seq, dtype, dev, compile, warmup, repeats)
    dev_name = name_of(dev)
    notes: list[str] = []

    # Hardware: resolve names first, so a bad --hardware fails before any model is built.
    chosen = _resolve_hardware(hardware, dev_name)
    datasheet = datasheet_hardware_for(dev_name, dev.type)
    if datasheet is None:
        notes.append(f"no datasheet entry for {dev_name!r}; pass --hardware to name one")
    try:
        measured = get_hardware("measured", device_name=dev_name)
    except UserError:
        measured = None
        notes.append(f"no measured ceilings for {dev_name}: run `gptperf ceilings` for measured MFU")
    if dev.type == "cpu" and dtype == "tf32":
        notes.append("tf32 is a CUDA mode: on CPU the fp32 matmuls run in full fp32")

    t_build = time.perf_counter()
    if progress:
        progress("building the model", 0, 1)
    runner = build_runner(config, kind, batch=batch, seq=seq, dtype=dtype, device=dev,
                          compile=compile, seed=seed)
    meter = PeakMemoryMeter(dev)
    sampler = UtilizationSampler(dev)
    marks: dict[str, float] = {"built": time.perf_counter()}
    if progress:
        progress("building the model", 1, 1)

    def before_timed() -> None:
        marks["warm"] = time.perf_counter()
        meter.reset()
        sampler.start()

    def stage_progress(stage: str, done: int, total: int) -> None:
        if progress:
            label = "warm-up (compiling)" if stage == "warm-up" and compile else stage
            progress(label, done, total)

    try:
        timing = time_phases(runner.phases, warmup=warmup, repeats=repeats, device=dev,
                             compiled=compile, before_timed=before_timed,
                             progress=stage_progress)
    finally:
        utilization = sampler.stop() if "warm" in marks else None
    memory = meter.read()
    t_end = time.perf_counter()
    stages = {"setup_s": t_build - t_start, "build_s": marks["built"] - t_build,
              "warmup_s": marks["warm"] - marks["built"], "timed_s": t_end - marks["warm"]}

    result = BenchResult(
        kind=kind, config=config, batch=batch, seq=seq, dtype=dtype, compile=compile,
        device=dev.type, device_name=dev_name, threads=torch.get_num_threads(), timing=timing,
        wall_time_s=t_end - t_start, stages_s=stages, tokens_per_step=runner.tokens_per_step,
        parameters=count_parameters(config), memory=memory, utilization=utilization,
        notes=notes,
    )
    if timing.total.wide_spread:
        notes.append(f"step times spread widely (std/median {timing.total.rel_spread:.0%}); "
                     "the machine may be busy or clocks changing: consider more --repeats")

    workload = Workload(kind, batch, seq, dtype)
    machines = []
    for hw in (chosen, datasheet, measured):
        if hw is not None and all(hw is not m and hw.to_dict() != m.to_dict() for m in machines):
            machines.append(hw)
    first = True
    for hw in machines:
        try:
            p = predict(config, workload, hw)
        except UserError as err:  # e.g. the machine lists no peak for this dtype
            notes.append(f"no prediction on {hw.label}: {err}")
            continue
        if first:
            result.flops_per_step = p.flops
            result.model_flops_per_step = p.model_flops
            result.flops_source = ("gptperf perfmodel exact count for this workload "
                                   "(causal attention at the causal count; softmax, norms, "
                                   "elementwise included); model FLOPs = forward + backward, "
                                   "all FLOPs add the optimizer")
            result.predicted_memory = p.memory.to_dict()
            result.mfu_conventions = {
                name: {"flops_per_token": row["flops_per_token"],
                       "achieved_flops_per_s": row["flops_per_token"] * result.tokens_per_s,
                       "formula": row["formula"]}
                for name, row in p.to_dict()["flops_per_token"].items()
            }
            first = False
        result.predictions.append({
            "hardware": hw.label, "source": hw.source,
            "step_time_s": p.time_s, "tokens_per_s": p.tokens_per_s,
            "measured_step_time_s": result.step_time_s,
            "measured_over_predicted": result.step_time_s / p.time_s,
            "predicted_mfu": p.mfu(MFU_CONVENTION),
        })
    if result.flops_per_step is None:
        notes.append("no FLOP count: the performance model could not predict this workload")

    for against, hw in (("measured", measured), ("datasheet", datasheet if datasheet is not None
                                                 else chosen)):
        if hw is None or result.achieved_flops_per_s is None:
            continue
        try:
            peak = hw.peak(dtype)
        except UserError as err:
            notes.append(f"no MFU against {hw.label}: {err}")
            continue
        entry = {"against": against, "hardware": hw.label, "dtype": dtype,
                 "peak_flops_per_s": peak, "mfu": result.achieved_flops_per_s / peak,
                 "label": f"MFU vs {_hardware_label(hw, dtype)}", "convention": MFU_CONVENTION}
        result.mfu.append(entry)
        for row in result.mfu_conventions.values():
            row.setdefault("mfu", {})[against] = row["achieved_flops_per_s"] / peak
    result.measured_hardware = measured.to_dict() if measured is not None else None
    if measured is not None:
        result.measured_hardware["measured_at"] = _measured_date(measured)
    result.datasheet_hardware = datasheet.to_dict() if datasheet is not None else None
    if dev.type == "cpu":
        notes.append("peak RSS is the whole process (Python, torch libraries, data), "
                     "not only the model's tensors the prediction counts")
    result.environment = environment(dev)
    result.environment["dtype"] = dtype
    return result


# --- command ------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def print_result(r: BenchResult) -> None:
    """The terminal report of one benchmark."""
    from rich.table import Table

    from gptperf.output import binary_bytes, console, seconds, si

    c = r.config
    mode = "compiled" if r.compile else "eager"
    where = f"{r.device} ({r.device_name}" + (f", {r.threads} threads)" if r.device == "cpu" else ")")
    seq_word = "context L" if r.kind.startswith("decode") else "T"
    console.print(f"[bold]bench {r.kind}[/bold] · {c.name} ({si(r.parameters)} parameters, "
                  f"L={c.n_layer} H={c.n_head} C={c.n_embd}, {c.attention} attention) · "
                  f"B={r.batch} {seq_word}={r.seq} · {r.dtype} · {mode} · {where}")

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
    console.print(table)

    unit = "generated tokens" if r.kind.startswith("decode") else "tokens"
    console.print(f"Throughput (measured): {si(r.tokens_per_s, unit + '/s')}, "
                  f"{si(r.sequences_per_s, 'sequences/s')}")
    if r.achieved_flops_per_s is not None:
        console.print(f"Achieved (measured time, perfmodel FLOPs): "
                      f"{si(r.achieved_flops_per_s, 'FLOP/s')} of model FLOPs "
                      f"({si(r.model_flops_per_step, 'FLOP')} per step, gptperf exact count, "
                      f"fwd+bwd; {si(r.flops_per_step, 'FLOP')} with the optimizer)")
        nano = r.mfu_conventions.get("nanogpt")
        if nano:
            console.print(f"  under nanoGPT's 6N + 12·L·H·Q·T convention: "
                          f"{si(nano['achieved_flops_per_s'], 'FLOP/s')}")
    for m in r.mfu:
        console.print(f"{m['label']}: [bold]{_pct(m['mfu'])}[/bold]")

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
    console.print(mem)

    u = r.utilization
    if u is not None:
        if u.mean_percent is not None:
            console.print(f"Utilization ({u.source}, {u.samples} samples over "
                          f"{seconds(u.window_s)}): mean {u.mean_percent:.0f}%, "
                          f"max {u.max_percent:.0f}%")
        console.print(f"  [dim]{u.meaning}[/dim]")
        if u.note:
            console.print(f"  [yellow]note: {u.note}[/yellow]")

    if r.predictions:
        pt = Table(title="Prediction vs measurement (time per step)")
        for col in ("hardware", "predicted", "measured", "measured / predicted",
                    "predicted tokens/s", "measured tokens/s"):
            pt.add_column(col, justify="left" if col == "hardware" else "right")
        for pr in r.predictions:
            pt.add_row(pr["hardware"], seconds(pr["step_time_s"]), seconds(r.step_time_s),
                       f"{pr['measured_over_predicted']:.2f}×", si(pr["tokens_per_s"], "/s"),
                       si(r.tokens_per_s, "/s"))
        console.print(pt)
    s = r.stages_s
    console.print(f"Wall time: {seconds(r.wall_time_s)} (setup {seconds(s['setup_s'])}, build "
                  f"{seconds(s['build_s'])}, warm-up {seconds(s['warmup_s'])}, timed "
                  f"{seconds(s['timed_s'])})")
    for note in r.notes:
        console.print(f"[dim]note: {note}[/dim]")


def main(args: argparse.Namespace, config: Any, started_at: float | None = None) -> int:
    """`gptperf bench` on `config` (built from the command's model arguments)."""
    from gptperf.measure.timer import rich_progress
    from gptperf.output import emit_json

    started_at = time.perf_counter() if started_at is None else started_at
    seq = args.seq if args.seq is not None else default_seq(config)
    with rich_progress(enabled=not args.json, description=f"bench {args.workload}") as progress:
        result = run_bench(config, args.workload, args.batch, seq, args.dtype, args.device,
                           args.compile, args.warmup, args.repeats, hardware=args.hardware,
                           progress=progress, seed=args.seed, started_at=started_at)
    if args.json:
        emit_json(result.to_dict())
    else:
        print_result(result)
    return 0
