"""`gptperf model`: the performance model of a GPT workload on a machine — per op, per layer, memory."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptperf.commands.common import (
    add_hardware_arguments,
    add_model_arguments,
    check_plot_file,
    config_from_args,
    hardware_from_args,
    output_path,
    positive_int,
)
from gptperf.errors import UserError
from gptperf.output import binary_bytes, emit_json, seconds, si
from gptperf.perfmodel import CONVENTIONS, Workload, count_parameters, predict, resolve_hardware
from gptperf.perfmodel.conventions import convention_formula
from gptperf.perfmodel.devices import device_type_of
from gptperf.perfmodel.hardware import MEASURED
from gptperf.perfmodel.workload import WORKLOAD_HELP, WORKLOADS
from gptperf.plan import COMPILED, CUDA_GRAPH, MODES, TRAINING_KINDS, ExecutionPlan

if TYPE_CHECKING:
    from gptperf.perfmodel.expected import Expected
    from gptperf.perfmodel.transformer import Prediction

HELP = "predict FLOPs, bytes, arithmetic intensity, time and memory of a GPT workload, per operation"
VIEWS = ("all", "op", "component", "layer")
DEFAULT_HARDWARE = "h100-sxm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser.add_argument_group("model"), "gpt2")
    w = parser.add_argument_group("workload")
    w.add_argument("--workload", default="train", choices=WORKLOADS,
                   help="; ".join(f"{k}: {v}" for k, v in WORKLOAD_HELP.items()))
    w.add_argument("--batch", type=positive_int, default=8, help="sequences per step (default: 8)")
    w.add_argument("--seq", type=positive_int, default=None,
                   help="tokens per sequence; the context length L for decode* (default: block size)")
    w.add_argument("--dtype", help="fp64, fp32, tf32, bf16 or fp16 (default: bf16; with --calibrated, the "
                   "calibration's own where it has no bf16, as a CPU's has fp32 alone)")
    w.add_argument("--plan", default=None, choices=MODES,
                   help="how the step runs (gptperf.plan.ExecutionPlan.default for the workload): "
                        "eager, compiled (torch.compile) or cuda_graph (compiled and replayed as "
                        "one CUDA graph: prefill and decode only) (default: eager)")
    h = parser.add_argument_group("machine")
    add_hardware_arguments(h, DEFAULT_HARDWARE)
    parser.set_defaults(hardware=None)  # None: h100-sxm, or this device's with --calibrated
    h.add_argument("--calibrated", action="store_true",
                   help="also show the calibrated expected time (what this device will take, from "
                        "`gptperf calibrate`'s measured curves) beside the roofline bound; the "
                        "roofline is then on this device's measured ceilings or its shipped entry "
                        "(a datasheet; nominal figures on a CPU) "
                        "unless --hardware names another")
    h.add_argument("--device", default="auto",
                   help="the device whose calibration --calibrated uses and whose ceilings "
                        "--hardware measured names: auto, cpu or cuda[:N] (default: auto)")
    o = parser.add_argument_group("output")
    o.add_argument("--view", default="all", choices=VIEWS,
                   help="op: every op; component: summed over layers; layer: per block; "
                        "all (default): block 0's ops and the model-level ops, components, layers")
    o.add_argument("--plot", type=output_path, default=None, metavar="FILE", help="write the roofline picture (.png, .svg or .pdf)")


def _named_device(device_flag: str) -> tuple[Any, str]:
    """(torch device, its name) of the device `--device` names: its calibration and measured
    ceilings are cached by that name."""
    from gptperf.envinfo import device_name  # deferred: keeps --help fast
    from gptperf.runtime import resolve_device  # deferred: loads torch

    device = resolve_device(device_flag)
    return device, device_name(device)


def _device_calibration(device_flag: str) -> tuple[Any, str, str]:
    """(Calibration, device name, device type) of the device `--device` names; a one-line
    UserError when it has none (or a stale, foreign one)."""
    from gptperf.measure.bench import device_calibration  # deferred: keeps --help fast

    device, name = _named_device(device_flag)
    calibration, why = device_calibration(device)
    if calibration is None:
        raise UserError(why or f"--calibrated: no calibration for {name!r}; run `gptperf "
                                "calibrate` on this device first (or drop --calibrated)")
    return calibration, name, device.type


def _plan(mode: str | None, kind: str, device_type: str, attention: str, dtype: str) -> Any:
    """The ExecutionPlan `--plan` names for `kind` on a `device_type` machine (None: none given);
    a one-line UserError for a plan the step cannot run under."""
    if mode is None:
        return None
    if mode == CUDA_GRAPH:
        if device_type == "cpu":
            raise UserError("--plan cuda_graph: a CPU replays no CUDA graphs; use eager or compiled")
        if kind in TRAINING_KINDS:
            plan = ExecutionPlan(CUDA_GRAPH, attention)  # check() refuses it, saying why
        else:
            plan = ExecutionPlan.default(kind, device_type, fast=True, attention=attention)
    else:
        plan = ExecutionPlan.default(kind, device_type, compile=mode == COMPILED, fast=False,
                                     attention=attention, dtype=dtype)
    plan.check(kind, dtype)
    return plan


def default_dtype(calibration: Any) -> str:
    """The dtype a step is modelled in when --dtype is not given: bf16, or with a calibration that
    has no bf16 (a CPU's) the first it has, since only those can be predicted."""
    if calibration is None or "bf16" in calibration.dtypes:
        return "bf16"
    return calibration.dtypes[0]


def build_predictions(args: argparse.Namespace) -> tuple[Any, Any]:
    """(roofline Prediction, calibrated Expected or None) of the workload the arguments name,
    both for the same plan."""
    config = config_from_args(args)
    seq = config.block_size if args.seq is None else args.seq
    calibration = None
    if args.calibrated:
        calibration, name, device_type = _device_calibration(args.device)
    dtype = args.dtype or default_dtype(calibration)
    workload = Workload(args.workload, args.batch, seq, dtype)
    if calibration is not None:
        hw = hardware_from_args(args, device_name=name)  # 'measured': the --device's ceilings
        if hw is None:  # none named: this device's measured ceilings or its shipped entry
            hw = resolve_hardware(None, name, device_type, dtype=dtype)
    else:
        name = _named_device(args.device)[1] if args.device != "auto" else None  # whose 'measured'
        hw = hardware_from_args(args, DEFAULT_HARDWARE, device_name=name)
        device_type = device_type_of(hw)
    plan = _plan(args.plan, workload.kind, device_type, config.attention, dtype)
    if plan is None and calibration is not None:  # the plan this device runs the step under
        plan = ExecutionPlan.default(workload.kind, device_type, attention=config.attention)
    pred = predict(config, workload, hw, plan)
    if calibration is None:
        return pred, None
    from gptperf.perfmodel.expected import expected  # deferred: keeps --help fast

    return pred, expected(config, workload, pred.plan, calibration)


def run(args: argparse.Namespace) -> int | None:
    reads_device = args.calibrated or (args.hardware or "").lower() == MEASURED
    if args.device != "auto" and not reads_device:  # it would be ignored: say so
        raise UserError(f"--device {args.device!r} only picks the calibration --calibrated reads or the "
                        "ceilings --hardware measured reads; add one of them, or leave --device out")
    if args.plot is not None:  # '' too: a picture was asked for
        check_plot_file(args.plot)
    pred, exp = build_predictions(args)
    plot = None
    if args.plot:
        from gptperf.plotting.roofline import plot_prediction  # deferred: keeps --help fast

        plot = str(plot_prediction(args.plot, pred, view="component" if args.view == "component" else "op"))
    if args.json:
        doc = pred.to_dict()
        if exp is not None:
            doc["expected"] = exp.to_dict()
        if plot:
            doc["plot"] = plot
        emit_json(doc)
        return 0
    _print(pred, args.view, exp)
    if plot:
        from gptperf.output import console  # deferred: loads rich

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


def _print(pred: Prediction, view: str, exp: Expected | None = None) -> None:
    """The tables; with `exp` (a calibrated Expected of the same step) an "expected" column of
    each row's calibrated device time beside the roofline time, and its step totals."""
    tables = _GroupTables.of(pred, exp)
    cfg, w = pred.config, pred.workload
    out: list[str] = []
    out.append(f"{cfg.name} (L={cfg.n_layer}, H={cfg.n_head}, C={cfg.n_embd}, V={cfg.vocab_size}, "
               f"attention={cfg.attention}) — {w.kind}, B={w.batch}, seq={w.seq}, {w.dtype}, "
               f"{pred.plan.label} — predicted on {pred.hardware.label}"
               + (f"; expected time {exp.label}" if exp is not None else "") + "\n")
    if view in ("all", "op"):
        out.append(tables.per_operation(view))
    if view in ("all", "component"):
        out.append(tables.per_component())
    if view in ("all", "layer"):
        out.append(tables.per_block(view))
    out.append(_totals_table(pred, exp))
    for note in exp.notes if exp is not None else ():
        out.append(f"note (calibrated): {note}")
    out.append(_memory_table(pred))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()


@dataclass
class _GroupTables:
    """The per operation, per component and per block tables of a prediction, with the
    calibrated device time of each row (`exp`'s, grouped alike) in an "expected" column."""

    pred: Prediction
    exp: Expected | None
    headers: list[str]
    right: set[int]
    by_op: dict[tuple[str, str], Any]
    by_comp: dict[tuple[str, str], float]
    by_layer: dict[int | None, float]

    @classmethod
    def of(cls, pred: Prediction, exp: Expected | None) -> _GroupTables:
        headers = ["", "phase", "kernels", "FLOPs", "bytes", "AI (FLOP/B)", "bound", "time", "share"]
        right = {2, 3, 4, 5, 7, 8}
        if exp is not None:
            headers.append("expected")
            right.add(9)
        by_op = exp.by_key() if exp is not None else {}
        by_comp = exp.by_component() if exp is not None else {}
        by_layer: dict[int | None, float] = {}
        for o in exp.ops if exp is not None else ():
            by_layer[o.layer] = by_layer.get(o.layer, 0.0) + o.device_s
        return cls(pred, exp, headers, right, by_op, by_comp, by_layer)

    def cells(self, key: str, phase: str, g: Any, expected_s: float | None = None) -> list[str]:
        """One row: a group's kernels, FLOPs, bytes, intensity, bound, time and share (and
        expected time)."""
        row = [key, phase or "", str(g.count), si(g.flops, "FLOP"), si(g.bytes, "B"),
               f"{g.arithmetic_intensity:.3g}", g.bound, seconds(g.time_s),
               f"{100 * g.time_s / self.pred.time_s:.1f}%"]
        if self.exp is not None:
            row.append("—" if expected_s is None else seconds(expected_s))
        return row

    def table(self, title: str, first: str, rows: list[list[str]]) -> str:
        what = f"time: roofline bound on {self.pred.hardware.label}"
        if self.exp is not None:
            what += "; expected: calibrated device time of its kernels"
        return text_table(f"{title} — {what}", [first, *self.headers[1:]], rows, self.right)

    def per_operation(self, view: str) -> str:
        """Every op ("all": the model-level ops and block 0's alone)."""
        def op_expected(name: str, phase: str) -> float | None:
            o = self.by_op.get((name, phase))
            return None if o is None else o.device_s

        rows = [self.cells(o.name, o.phase, o, op_expected(o.name, o.phase))
                for o in self.pred.ops if view == "op" or o.layer in (None, 0)]
        return self.table("per operation" + (" (block 0 shown; every block is the same)" if view == "all" else ""),
                          "op", rows)

    def per_component(self) -> str:
        rows = [self.cells(comp, phase, g, self.by_comp.get((comp, phase)))
                for (comp, phase), g in self.pred.by_component().items()]
        return self.table(f"per component (summed over {self.pred.config.n_layer} blocks)", "component", rows)

    def per_block(self, view: str) -> str:
        """Each block and the model-level ops ("all": identical blocks in one row and their total)."""
        groups = self.pred.by_layer()
        by_layer = self.by_layer
        total_t = self.pred.time_s
        rows = []
        blocks = [k for k in groups if k is not None]
        if view == "all" and len(blocks) > 1:  # blocks are identical: one row says it
            rows.append(self.cells(f"h.0 … h.{blocks[-1]} (each)", "", groups[blocks[0]],
                                   by_layer.get(blocks[0])))
            total = ["", "", "", "", "", "", "", seconds(groups[blocks[0]].time_s * len(blocks)),
                     f"{100 * groups[blocks[0]].time_s * len(blocks) / total_t:.1f}%"]
            if self.exp is not None:
                total.append(seconds(sum(by_layer.get(k, 0.0) for k in blocks)))
            rows.append(total)
        else:
            rows += [self.cells(groups[k].key, "", groups[k], by_layer.get(k)) for k in blocks]
        if None in groups:
            rows.append(self.cells("model-level", "", groups[None], by_layer.get(None)))
        return self.table("per block (all phases)", "block", rows)


def _totals_table(pred: Prediction, exp: Expected | None) -> str:
    """Parameters, FLOPs and bytes per step, model FLOPs per token under each convention, the
    predicted step time, throughput and MFU (and the calibrated expected step)."""
    cfg, w, src, total_t = pred.config, pred.workload, pred.hardware.label, pred.time_s
    rows = [
        ["parameters", f"{count_parameters(cfg):,}", "tied LM head counted once"],
        ["parameters without embeddings", f"{count_parameters(cfg, include_embeddings=False):,}", "minus wte and wpe"],
        ["FLOPs per step", si(pred.flops, "FLOP"), "gptperf count, causal attention at T(T+1)/2"],
        ["bytes per step", si(pred.bytes, "B"), "minimum traffic per op, summed"],
    ]
    for name in CONVENTIONS:
        rows.append([f"model FLOPs/token, {name}", si(pred.model_flops_per_token(name), "FLOP"),
                     f"MFU {100 * pred.mfu(name):.1f}%; "
                     f"{convention_formula(name, pred.workload.has_backward)}"])
    rows += [
        ["predicted step time", seconds(total_t),
         f"roofline bound on {src}: ops in series + launch latency"],
        ["tokens per step", f"{pred.tokens:,}", "B·T" if w.kind in ("train", "forward", "prefill") else "B (new tokens)"],
        ["tokens/s", si(pred.tokens_per_s, "tok/s"), f"predicted on {src}"],
        ["MFU of the prediction", f"{100 * pred.mfu():.1f}%",
         f"gptperf FLOPs/token × tokens/s ÷ {si(pred.peak_flops, 'FLOP/s')} ({w.dtype} peak, {src})"],
    ]
    if exp is not None:
        rows += [
            ["expected step time", seconds(exp.step_time_s), f"{exp.label}; {exp.composition}"],
            ["  device time of its kernels", seconds(exp.device_s), "calibrated kernel curves"],
            ["  host time (Python, dispatch)", seconds(exp.host_s), "calibrated host cost"],
            ["expected tokens/s", si(exp.tokens_per_s, "tok/s"), exp.label],
            ["expected / roofline bound", f"{exp.step_time_s / total_t:.2f}×",
             "how far from what the hardware allows this machine is expected to run"],
        ]
    return text_table("totals", ["quantity", "value", "source / convention"], rows, {1})


def _memory_table(pred: Prediction) -> str:
    """The predicted memory by part and at its peak, against the hardware's capacity if known."""
    hw, w, mem = pred.hardware, pred.workload, pred.memory
    rows = [[part.replace("_", " "), binary_bytes(getattr(mem, part)), binary_bytes(mem.live.get(part, 0))]
            for part in ("weights", "weight_copies", "gradients", "optimizer_state", "activations",
                         "kv_cache", "logits")]
    rows.append(["predicted peak", "", binary_bytes(mem.total)])
    if hw.memory_bytes != float("inf"):
        rows.append([f"capacity ({hw.label})", "", binary_bytes(hw.memory_bytes)])
        rows.append(["verdict", "", "fits" if mem.fits(hw) else "does NOT fit"])
        rows.append(["largest batch that fits", "", f"{mem.max_batch(hw):,} (seq={w.seq})"])
    return text_table(f"memory (predicted; peak at: {mem.peak_at})", ["part", "size", "live at peak"],
                      rows, {1, 2})
