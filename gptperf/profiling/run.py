"""Run torch.profiler over a workload, attribute its trace, and put the prediction beside it.

`profile_workload(...)` is the library entry point (the `gptperf profile` command and the report
call it); `analyse_trace_file(...)` re-analyses a trace recorded before. Both return a
`ProfileResult` and write into one output folder:

    trace.json            Chrome/Perfetto trace of the active steps (open in ui.perfetto.dev)
    trace.gptperf.json    the same, with gptperf.op / phase / predicted FLOPs, bytes, time in
                          each attributed kernel's args
    tensorboard/          TensorBoard trace directory (tensorboard_trace_handler)
    ops.csv components.csv layers.csv   the comparison tables
    profile.json          everything above as one document, with the environment
    roofline.png          predicted and measured point of each component on the roofline
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptperf import names
from gptperf.atomic import atomic_dir, write_text
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.profiling.compare import (
    Comparison,
    Predicted,
    compare,
    median_abs_error,
    predicted_by_key,
)
from gptperf.profiling.trace import (
    METHOD_PROVENANCE,
    METHOD_SHARE,
    Attribution,
    Provenance,
    augment,
    extern_key,
    load_trace,
)
from gptperf.profiling.trace import attribute as attribute_trace

PROFILE_KINDS: tuple[str, ...] = ("train", "forward", "prefill", "decode")
_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
_COMPILE_NOTE = (
    "compiled kernels: inductor provenance (each generated kernel -> the FX nodes it fuses -> their "
    "module path (layer) and source line inside a record_function block (operation)); a kernel "
    "fusing several operations is split between them by predicted time; compiled work no "
    "provenance explains is split over the phase's operations by predicted time (method "
    f"'{METHOD_SHARE}', counted apart in exact coverage)"
)
_EAGER_NOTE = (
    "kernel -> launching runtime call (correlation) -> innermost CPU operator -> enclosing "
    "record_function range (forward, optimizer); backward: autograd node -> forward operator with "
    "the same sequence number -> its range; AccumulateGrad -> the backward node just before it"
)


@dataclass
class ProfileResult:
    """What `gptperf profile` measured and predicted, and where it wrote it."""

    workload: dict[str, Any]
    device: str
    hardware: str  # e.g. 'measured: nvidia-h100-80gb-hbm3' or 'datasheet: cpu'
    unit: str  # 'kernel' or 'operator'
    coverage: float
    exact_coverage: float
    busy: float
    by_method: dict[str, float]
    unattributed_top: list[tuple[str, float]]
    step_wall_s: list[float]
    comparison: Comparison
    overhead: dict[str, Any] | None
    paths: dict[str, str]
    method: str
    environment: dict[str, Any] = field(default_factory=dict)
    prediction_available: bool = True
    provenance: dict[str, int] | None = None  # compiled kernels / extern calls recorded (--compile)

    @property
    def median_abs_error(self) -> float:
        """Median |measured / predicted - 1| over components taking >= 2% of the step."""
        return median_abs_error(self.comparison.components)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "device": self.device,
            "hardware": self.hardware,
            "unit": self.unit,
            "coverage": self.coverage,
            "exact_coverage": self.exact_coverage,
            "busy": self.busy,
            "attributed_over_wall": self.coverage * self.busy,
            "by_method_s": self.by_method,
            "unattributed_top": [{"kernel": k, "seconds_per_step": s} for k, s in self.unattributed_top],
            "step_wall_s": self.step_wall_s,
            "median_abs_error_components": self.median_abs_error,
            "overhead": self.overhead,
            "paths": self.paths,
            "attribution_method": self.method,
            "prediction_available": self.prediction_available,
            "provenance_recorded": self.provenance,
            "environment": self.environment,
            **self.comparison.to_dict(),
        }


# ----------------------------------------------------------------------------------------------
# Prediction


def resolve_hardware(hardware: str | None, device_type: str, device_name: str | None):  # -> Hardware
    """`hardware` if given; else the measured ceilings of this device if cached, else its datasheet."""
    from gptperf.perfmodel.hardware import MEASURED, get_hardware

    if hardware:
        return get_hardware(hardware, device_name=device_name)
    with contextlib.suppress(UserError):
        return get_hardware(MEASURED, device_name=device_name)
    from gptperf.measure.devices import datasheet_name_for

    entry = datasheet_name_for(device_name or "", device_type) if device_name else None
    return get_hardware(entry or ("cpu" if device_type == "cpu" else "h100-sxm"))


def predict_ops(config: GPTConfig, kind: str, batch: int, seq: int, dtype: str, hw: Any
                ) -> tuple[dict[tuple[str, str], Predicted], bool]:
    """Predicted figures per (name, phase); ({}, False) if the performance model is missing."""
    try:
        from gptperf.perfmodel import Workload, predict
    except ImportError:
        return {}, False
    prediction = predict(config, Workload(kind, batch, seq, dtype), hw)
    return predicted_by_key(prediction.ops), True


# ----------------------------------------------------------------------------------------------
# Compiled code: which operations each inductor kernel computes


def line_components(model_dir: Path = _MODEL_DIR) -> dict[tuple[str, int], str]:
    """(file name, line) -> component, for every line inside a `with record_function(...)` block of
    the model's source. The label expression is resolved to a name from gptperf.names."""
    out: dict[tuple[str, int], str] = {}
    for path in sorted(model_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        attrs: dict[str, str] = {}  # self._fc = names.layer_name(layer, names.MLP_FC)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Attribute)):
                comp = _names_constant(node.value)
                if comp:
                    attrs[node.targets[0].attr] = comp
        blocks = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.With):
                continue
            for item in node.items:
                call = item.context_expr
                if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "record_function"
                        and call.args):
                    arg = call.args[0]
                    comp = _names_constant(arg)
                    if comp is None and isinstance(arg, ast.Attribute):
                        comp = attrs.get(arg.attr)
                    if comp:
                        blocks.append((node.lineno, node.end_lineno or node.lineno, comp))
        for start, end, comp in sorted(blocks, key=lambda b: b[1] - b[0], reverse=True):
            for line in range(start, end + 1):  # inner blocks (shorter) overwrite outer ones
                out[(path.name, line)] = comp
    return out


def _names_constant(expr: ast.AST) -> str | None:
    """The component an expression names: names.X, label[names.X], names.layer_name(i, names.X)."""
    for node in ast.walk(expr):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "names"):
            value = getattr(names, node.attr, None)
            if isinstance(value, str) and value in names.COMPONENTS:
                return value
    return None


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+)')
_LAYER_RE = re.compile(r"\bh(?:\.|\[|_)(\d+)")


# Origins that move no data of their own (views, layout changes, constants): a kernel's origins
# include the views of its neighbours' outputs, which would drag in their names.
_NO_WORK = re.compile(
    r"aten\.(view|_unsafe_view|reshape|permute|transpose|t|expand|squeeze|unsqueeze|slice|select|"
    r"split|split_with_sizes|as_strided|alias|detach|clone|arange|full|scalar_tensor|empty|"
    r"zeros|ones|lift_fresh_copy)\."
)


def _working(origins: list[Any]) -> list[Any]:
    work = [n for n in origins if not _NO_WORK.match(str(getattr(n, "target", "")))]
    return work or origins


def node_operations(node: Any, lines: dict[tuple[str, int], str], n_layer: int) -> list[str]:
    """Operation names an FX node belongs to: source line -> component, module path -> layer."""
    meta = getattr(node, "meta", {}) or {}
    trace = meta.get("stack_trace") or getattr(node, "stack_trace", None) or ""
    component = None
    for file, line in _FRAME_RE.findall(trace):  # outermost first: the last model frame wins
        comp = lines.get((Path(file).name, int(line)))
        if comp and Path(file).resolve().parent == _MODEL_DIR:
            component = comp
    if component is None:
        return []
    if component not in names.LAYER_COMPONENTS:
        return [component]
    stack = meta.get("nn_module_stack") or meta.get("fwd_nn_module_stack") or {}
    layer = None
    for key, value in stack.items():
        path = value[0] if isinstance(value, (tuple, list)) and value else key
        m = _LAYER_RE.search(str(path)) or _LAYER_RE.search(str(key))
        if m:
            layer = int(m.group(1))
    if layer is None or layer >= n_layer:  # unknown layer: all of them, split by prediction
        return [names.layer_name(i, component) for i in range(n_layer)]
    return [names.layer_name(layer, component)]


def _extern_op(kernel: Any) -> str:
    name = str(getattr(kernel, "python_kernel_name", None) or getattr(kernel, "op_overload", ""))
    if "aten." in name:
        return name.split("aten.")[1].split(".")[0]
    return name.split(".")[-1]


@contextlib.contextmanager
def inductor_provenance(n_layer: int) -> Iterator[Provenance]:
    """Record, while inductor generates code, which operations each kernel computes.

    Wraps inductor's own provenance hook (`torch._inductor.debug.
    set_kernel_post_grad_provenance_tracing`, called once per generated kernel with the nodes it
    fuses). Turns off the compile caches inside, since a cached graph generates no code.
    Without that hook (another torch version) the table stays empty and compiled work falls
    back to the prediction's split.
    """
    prov = Provenance()
    try:
        import torch._inductor.debug as idebug
        from torch._inductor import config as iconfig
        from torch._inductor.virtualized import V

        original = idebug.set_kernel_post_grad_provenance_tracing
    except (ImportError, AttributeError):
        yield prov
        return
    lines = line_components()

    def hook(*args: Any, **kwargs: Any) -> Any:
        handle = original(*args, **kwargs)
        with contextlib.suppress(Exception):  # bookkeeping must never break compilation
            node_schedule = args[0] if args else kwargs["node_schedule"]
            kernel_name = args[1] if len(args) > 1 else kwargs["kernel_name"]
            is_extern = args[2] if len(args) > 2 else kwargs.get("is_extern", False)
            is_bwd = bool(getattr(V.graph, "is_backward", False))
            if is_extern:
                origin = getattr(node_schedule, "origin_node", None)
                origins = [origin] if origin is not None else _working(list(node_schedule.origins))
                shapes = [[int(s) for s in x.get_size()] for x in node_schedule.inputs
                          if hasattr(x, "get_size")]
                op = _extern_op(node_schedule)
                key = (is_bwd, op, extern_key(op, shapes))
                ops = [o for n in origins for o in node_operations(n, lines, n_layer)]
                prov.externs.setdefault(key, []).append(list(dict.fromkeys(ops)))
            else:
                origins = _working([o for s in node_schedule if getattr(s, "node", None) is not None
                                    for o in s.node.origins])
                ops = [o for n in origins for o in node_operations(n, lines, n_layer)]
                prov.kernels.setdefault((is_bwd, str(kernel_name)), []).append(
                    list(dict.fromkeys(ops)))
        return handle

    patched = [m for name, m in list(sys.modules.items())
               if name.startswith("torch._inductor") and m is not None
               and getattr(m, "set_kernel_post_grad_provenance_tracing", None) is original]
    for m in patched:
        m.set_kernel_post_grad_provenance_tracing = hook
    patches: dict[str, Any] = {"fx_graph_cache": False}
    if hasattr(iconfig.trace, "provenance_tracking_level"):
        patches["trace.provenance_tracking_level"] = 1
    elif hasattr(iconfig.trace, "provenance_tracking"):  # older spelling
        patches["trace.provenance_tracking"] = True
    if hasattr(iconfig.cpp, "enable_kernel_profile"):  # CPU kernels: a profiler range each
        patches["cpp.enable_kernel_profile"] = True
    try:
        from torch._functorch import config as fconfig

        autograd_cache = fconfig.patch(enable_autograd_cache=False)
    except (ImportError, AttributeError):
        autograd_cache = contextlib.nullcontext()
    try:
        with iconfig.patch(patches), autograd_cache:
            yield prov
    finally:
        for m in patched:
            m.set_kernel_post_grad_provenance_tracing = original


# ----------------------------------------------------------------------------------------------
# Profiling


def _check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier `gptperf profile` output."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "profile.json").exists())):
        raise UserError(
            f"output folder {str(out)!r} exists and is not a gptperf profile folder "
            "(no profile.json); pass a new or empty --out"
        )


def _measure_overhead(runner: Any, device: Any, repeats: int) -> dict[str, Any]:
    """Step time with and without the profiler recording (same activities and options)."""
    from torch.profiler import profile

    from gptperf.measure.timer import time_fn

    plain = time_fn(runner.step, warmup=1, repeats=repeats, device=device)
    with profile(activities=_activities(device), record_shapes=True, profile_memory=True):
        profiled = time_fn(runner.step, warmup=1, repeats=repeats, device=device)
    return {
        "step_s_without": plain.median,
        "step_s_with": profiled.median,
        "overhead": profiled.median / plain.median - 1 if plain.median > 0 else math.nan,
        "repeats": repeats,
        "clock": plain.clock,
        "without": plain.to_dict(),
        "with": profiled.to_dict(),
    }


def _activities(device: Any) -> list[Any]:
    from torch.profiler import ProfilerActivity

    acts = [ProfilerActivity.CPU]
    if getattr(device, "type", str(device)) == "cuda":
        acts.append(ProfilerActivity.CUDA)
    return acts


def profile_workload(
    config: GPTConfig,
    kind: str = "train",
    batch: int = 8,
    seq: int = 256,
    dtype: str = "fp32",
    device: Any = "cpu",
    compile: bool = False,
    hardware: str | None = None,
    out_dir: str | Path = "profile",
    *,
    wait: int = 1,
    warmup: int = 2,
    active: int = 3,
    overhead: bool = True,
    overhead_repeats: int = 5,
    plot: bool = True,
    seed: int = 0,
) -> ProfileResult:
    """Profile `active` steps of a workload with torch.profiler, attribute, compare, write `out_dir`."""
    import torch
    from torch.profiler import profile, schedule, tensorboard_trace_handler

    from gptperf.envinfo import environment
    from gptperf.runtime import device_name as torch_device_name
    from gptperf.runtime import synchronize
    from gptperf.workloads import build_runner

    if kind not in PROFILE_KINDS:
        raise UserError(f"unknown workload {kind!r} for profile; valid: {', '.join(PROFILE_KINDS)}")
    if wait < 0 or warmup < 0 or active < 1:
        raise UserError(f"profiler schedule needs wait >= 0, warmup >= 0, active >= 1; got "
                        f"{wait}, {warmup}, {active}")
    out = Path(out_dir)
    _check_out_dir(out)
    device = torch.device(device)
    dev_name = torch_device_name(device)
    hw = resolve_hardware(hardware, device.type, dev_name)
    predicted, available = predict_ops(config, kind, batch, seq, dtype, hw)

    prov_ctx = inductor_provenance(config.n_layer) if compile else contextlib.nullcontext(None)
    with prov_ctx as prov:
        runner = build_runner(config, kind, batch=batch, seq=seq, dtype=dtype, device=device,
                              compile=compile, seed=seed)
        # Compilation (and autotuning) happens in the first calls: keep it out of every timing.
        for _ in range(2 if compile else 1):
            runner.step()
        synchronize(device)
    over = _measure_overhead(runner, device, overhead_repeats) if overhead else None

    with atomic_dir(out) as tmp:
        tb_dir = tmp / "tensorboard"
        tb_handler = tensorboard_trace_handler(str(tb_dir), worker_name="gptperf")

        def on_ready(prof: Any) -> None:
            tb_handler(prof)

        with profile(
            activities=_activities(device),
            schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=on_ready,
            record_shapes=True,
            profile_memory=True,
        ) as prof:
            for _ in range(wait + warmup + active):
                runner.step()
                prof.step()
        synchronize(device)
        written = sorted(tb_dir.glob("*.pt.trace.json*"))
        if not written:
            raise RuntimeError("torch.profiler wrote no trace")
        shutil.copyfile(written[-1], tmp / "trace.json")
        doc = load_trace(tmp / "trace.json")
        result = _analyse(
            doc, str(out / "trace.json"), tmp, final=out, predicted=predicted, available=available,
            provenance=prov, hw=hw, workload=_workload(config, kind, batch, seq, dtype, compile),
            device_label=f"{device.type}: {dev_name}", overhead=over, plot=plot,
            environment=environment(device),
        )
        result.paths["tensorboard"] = str(out / "tensorboard")
        if prov is not None:
            result.provenance = {"kernels": sum(len(v) for v in prov.kernels.values()),
                                 "extern_calls": sum(len(v) for v in prov.externs.values())}
        write_text(tmp / "profile.json", _json(result.to_dict()))
    return result


def analyse_trace_file(
    trace: str | Path,
    config: GPTConfig,
    kind: str = "train",
    *,
    batch: int = 8,
    seq: int = 256,
    dtype: str = "fp32",
    hardware: str | None = None,
    out_dir: str | Path = "profile",
    device_name: str | None = None,
    plot: bool = True,
) -> ProfileResult:
    """Attribute an existing torch.profiler JSON trace of this workload and compare it with the
    prediction; tables, pictures and the augmented trace go to `out_dir` (file by file)."""
    doc = load_trace(trace)
    is_gpu = any(isinstance(e, dict) and e.get("cat") == "kernel" for e in doc["traceEvents"])
    props = doc.get("deviceProperties") or []
    if device_name is None and is_gpu and props and isinstance(props[0], dict):
        device_name = props[0].get("name")
    hw = resolve_hardware(hardware, "cuda" if is_gpu else "cpu", device_name)
    predicted, available = predict_ops(config, kind, batch, seq, dtype, hw)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    result = _analyse(
        doc, str(trace), out, final=out, predicted=predicted, available=available, provenance=None,
        hw=hw, workload=_workload(config, kind, batch, seq, dtype, None),
        device_label=("cuda: " if is_gpu else "cpu: ") + (device_name or "device of the trace"),
        overhead=None, plot=plot, environment={},
    )
    write_text(out / "profile.json", _json(result.to_dict()))
    return result


def _workload(config: GPTConfig, kind: str, batch: int, seq: int, dtype: str,
              compiled: bool | None) -> dict[str, Any]:
    return {"kind": kind, "batch": batch, "seq": seq, "dtype": dtype, "compile": compiled,
            "config": config.to_dict()}


def _json(doc: Any) -> str:
    from gptperf.output import to_json

    return to_json(doc) + "\n"


def _analyse(
    doc: dict[str, Any], trace_path: str, tmp: Path, *, final: Path,
    predicted: dict[tuple[str, str], Predicted], available: bool, provenance: Provenance | None,
    hw: Any, workload: dict[str, Any], device_label: str, overhead: dict[str, Any] | None,
    plot: bool, environment: dict[str, Any],
) -> ProfileResult:
    from gptperf.profiling.compare import rows_csv

    shares = {k: p.time_s for k, p in predicted.items()}
    attribution: Attribution = attribute_trace(doc, path=trace_path, shares=shares,
                                               provenance=provenance)
    bad = sorted({n for w in attribution.work for n, _, _ in w.parts if not names.is_operation_name(n)})
    if bad:  # the contract is the one join key; a foreign name would silently drop out
        raise RuntimeError(f"attribution produced names outside the contract: {bad}")
    comparison = compare(attribution, predicted)
    paths: dict[str, str] = {"trace": trace_path}
    for what, rows in (("ops", comparison.ops), ("components", comparison.components),
                       ("layers", comparison.layers)):
        write_text(tmp / f"{what}.csv", rows_csv(rows))
        paths[what] = str(final / f"{what}.csv")
    flat = {k: (p.flops, p.bytes, p.time_s) for k, p in predicted.items()}
    augmented = augment(doc, attribution, flat)
    write_text(tmp / "trace.gptperf.json", json.dumps(augmented))
    paths["augmented_trace"] = str(final / "trace.gptperf.json")
    if plot and available:
        from gptperf.plotting.profile import plot_profile_roofline

        plot_profile_roofline(tmp / "roofline.png", comparison.components, hw, workload["dtype"],
                              title=f"{workload['kind']} {workload['config'].get('name') or ''} "
                                    f"{workload['dtype']} on {device_label}")
        paths["roofline"] = str(final / "roofline.png")
    methods = attribution.by_method()
    method = _EAGER_NOTE
    if attribution.compiled:
        method = _EAGER_NOTE + "; " + _COMPILE_NOTE
    return ProfileResult(
        workload=workload, device=device_label, hardware=hw.label, unit=attribution.unit,
        coverage=attribution.coverage, exact_coverage=attribution.exact_coverage,
        busy=attribution.busy, by_method=methods,
        unattributed_top=attribution.unattributed_top(), step_wall_s=attribution.step_wall_s,
        comparison=comparison, overhead=overhead, paths=paths, method=method,
        environment=environment, prediction_available=available,
    )


# ----------------------------------------------------------------------------------------------
# Terminal


def print_result(result: ProfileResult, top: int = 25) -> None:
    """Tables (per component, per operation) and the figures that say how far to trust them."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from gptperf.output import console, seconds, si

    wl = result.workload
    console.print(
        f"[bold]profile[/bold] {wl['kind']} {wl['config'].get('name') or ''} batch {wl['batch']} "
        f"seq {wl['seq']} {wl['dtype']}{' compiled' if wl.get('compile') else ''} — measured on "
        f"{result.device}; predicted with {result.hardware}"
    )
    n_steps = len(result.step_wall_s)
    # A squeezed table hides its numbers; let it be wider than an 80-column terminal.
    wide = Console(width=max(console.width, 132), file=console.file)
    for title, rows, limit in (("per component (summed over layers)", result.comparison.components, None),
                               ("per operation", result.comparison.ops, top)):
        t = Table(title=f"{title}; median of {n_steps} active steps", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        with_occ = any(r.occupancy_pct is not None for r in rows)
        cols = ["name", "ph", "time", "±", "calls", "share", "AI", "FLOP/s", "GB/s", "%roof",
                "pred", "m/p"] + (["occ%"] if with_occ else [])
        for col in cols:
            t.add_column(col, justify="left" if col in ("name", "ph") else "right",
                         no_wrap=True)
        for r in rows[:limit] if limit else rows:
            spread = (r.measured_max_s - r.measured_min_s) / 2 / r.measured_s if r.measured_s else math.nan
            cells = [
                r.name, r.phase, seconds(r.measured_s), _f(100 * spread, ".0f") + "%", str(r.calls),
                f"{100 * r.share:.1f}%", _f(r.arithmetic_intensity, ".3g"),
                si(r.achieved_flops, "", digits=2).strip() or "—",
                _f(r.achieved_bytes_per_s / 1e9, ".2g"), _f(r.pct_of_roofline, ".2g"),
                seconds(r.predicted_s), _f(r.ratio, ".2g"),
            ]
            if with_occ:
                cells.append(_f(r.occupancy_pct, ".0f"))
            t.add_row(*cells)
        wide.print(t)
    console.print("columns: time = measured median per step, ± = half the min-max range, calls = "
                  f"{result.unit}s per step, AI = predicted FLOP/byte, FLOP/s and GB/s = predicted "
                  "counts / measured time, %roof = roofline time / measured time, pred = predicted "
                  "time, m/p = measured / predicted, occ% = achieved occupancy (GPU trace); "
                  f"hardware for AI, %roof and pred: {result.hardware}")
    if result.comparison.phases:
        console.print("per phase: " + ", ".join(
            f"{r.phase} {seconds(r.measured_s)} (predicted {seconds(r.predicted_s)})"
            for r in result.comparison.phases))
    console.print(
        f"coverage: {100 * result.coverage:.1f}% of {result.unit} time attributed "
        f"(exact, without predicted-share splits: {100 * result.exact_coverage:.1f}%); "
        f"{result.unit}s fill {100 * result.busy:.0f}% of the step wall time, so the attributed "
        f"time is {100 * result.coverage * result.busy:.0f}% of it "
        f"(median step {seconds(_median(result.step_wall_s))}, profiler clock)"
    )
    console.print(f"time by attribution method over {n_steps} steps: " + ", ".join(
        f"{k} {seconds(v)}" for k, v in sorted(result.by_method.items(), key=lambda kv: -kv[1])))
    if result.unattributed_top:
        console.print("largest unattributed: " + ", ".join(
            f"{k} {seconds(v)}/step" for k, v in result.unattributed_top))
    console.print(f"median |measured/predicted - 1| over components >= 2% of the step: "
                  f"{_f(result.median_abs_error, '.2f')}")
    if result.overhead:
        o = result.overhead
        console.print(
            f"profiler overhead: step {seconds(o['step_s_without'])} without, "
            f"{seconds(o['step_s_with'])} with the profiler recording "
            f"({100 * o['overhead']:+.1f}%; median of {o['repeats']}, {o['clock']})"
        )
    if not result.prediction_available:
        console.print("[yellow]no prediction: gptperf.perfmodel.predict is not available[/yellow]")
    if result.provenance is not None:
        console.print(f"inductor provenance recorded {result.provenance['kernels']} generated "
                      f"kernels and {result.provenance['extern_calls']} extern calls")
    console.print(f"attribution: {result.method}")
    console.print("wrote: " + ", ".join(f"{k} {v}" for k, v in result.paths.items()))


def _median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs) if xs else math.nan


def _f(x: float | None, fmt: str) -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "—"
    return format(x, fmt)


__all__ = ["ProfileResult", "profile_workload", "analyse_trace_file", "print_result",
           "inductor_provenance", "line_components", "METHOD_PROVENANCE"]
