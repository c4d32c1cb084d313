"""Attribution: every GPU kernel (or CPU operator's self time) of a Kineto JSON trace -> (operation, phase).

The walk, for one piece of work in an active profiler step:

* GPU kernel -> its launching runtime call (`cudaLaunchKernel`, `cuLaunchKernel`, ...) through the
  shared `correlation` id -> the innermost CPU event around that call on the same thread.
  On CPU the piece of work is the operator itself, timed by its self time.
* From that CPU event walk outwards through the time-nested events of its thread:
  - an autograd node (`Sequence number` with a non-zero `Fwd thread id`) is backward work: the
    forward operator with the same sequence number (the last outermost: one that makes no node
    carries the next node's number) sits inside the forward `record_function` range of the
    operation that created the node -> (that name, bwd);
  - a `record_function` range named from `gptperf.names` -> (name, fwd), or (optimizer, opt);
  - torch's own `Optimizer.step#...` / `Optimizer.zero_grad#...` ranges -> (optimizer, opt);
  - `AccumulateGrad` (no sequence number) -> the backward node that ran just before it on the
    same thread, the node whose output gradient it stores;
  - the engine's sum of two gradients meeting at one tensor (an `aten::add_` directly inside a
    node's `evaluate_function`, beside the node's own operator) where a LayerNorm's backward
    brings the second: the residual stream's join -> (that layer's residual, bwd), where the
    model places it.
* Compiled code (torch.compile) has no gptperf ranges inside. Its kernels are looked up in a
  provenance table captured while inductor generated them (kernel -> the FX nodes it fuses ->
  the operation names the model's labels annotated them with, see provenance.py); an aten
  operator that compiled code calls (matmul, attention, a fallback) by its op and shapes; a
  kernel that fuses several operations is split between them by their predicted time. A kernel
  that no table explains is split over the phase's predicted operations (method
  `predicted-share`, reported apart).

Coverage = attributed time / all kernel (operator) time of the active steps.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import shutil
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptperf import names
from gptperf.checks import is_finite_number
from gptperf.errors import UserError

GPU_WORK_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
_CPU_TREE_CATEGORIES = ("cpu_op", "user_annotation", "cuda_runtime", "cuda_driver", "python_function")
_LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_GRAPH_PREFIX = re.compile(r"^graph_\d+_")

# How a piece of work found its name, best first.
METHOD_RANGE = "range"  # inside the operation's record_function range
METHOD_SEQUENCE = "sequence"  # backward node -> forward op with the same sequence number -> range
METHOD_ACCUMULATE = "accumulate-grad"  # AccumulateGrad -> the backward node just before it
METHOD_STREAM_JOIN = "stream-join"  # the engine's add of the stream's two gradients -> residual
METHOD_OPTIMIZER = "optimizer-range"  # torch's Optimizer.step / zero_grad ranges
METHOD_PROVENANCE = "inductor-provenance"  # compiled kernel -> FX nodes -> their labels' names
METHOD_SHARE = "predicted-share"  # unexplained compiled work split by the prediction
EXACT_METHODS = (METHOD_RANGE, METHOD_SEQUENCE, METHOD_ACCUMULATE, METHOD_STREAM_JOIN,
                 METHOD_OPTIMIZER, METHOD_PROVENANCE)

Key = tuple[str, str]  # (operation name, phase)


@dataclass
class Work:
    """One kernel (GPU) or one operator's self time (CPU) in an active step, and where it went."""

    index: int  # position in the trace's traceEvents (for the augmented trace)
    kernel: str
    step: int  # position of its active step, 0-based
    dur_us: float
    parts: list[tuple[str, str, float]] = field(default_factory=list)  # (name, phase, weight)
    method: str | None = None
    occupancy: float | None = None  # `est. achieved occupancy %`
    blocks_per_sm: float | None = None
    launcher: int | None = None  # a kernel's innermost CPU event around its launch (traceEvents index)

    @property
    def attributed(self) -> bool:
        return bool(self.parts)


@dataclass
class Attribution:
    """The attributed work of a trace's active steps."""

    path: str
    unit: str  # "kernel" (GPU) or "operator" (CPU self time)
    steps: list[str]
    step_wall_s: list[float]
    work: list[Work]
    compiled: bool  # whether compiled-code ranges were seen

    @property
    def total_s(self) -> float:
        return sum(w.dur_us for w in self.work) * 1e-6

    def attributed_s(self, methods: tuple[str, ...] | None = None) -> float:
        return sum(w.dur_us for w in self.work
                   if w.attributed and (methods is None or w.method in methods)) * 1e-6

    @property
    def coverage(self) -> float:
        """Attributed time / all kernel (operator) time of the active steps."""
        total = self.total_s
        return self.attributed_s() / total if total > 0 else math.nan

    @property
    def exact_coverage(self) -> float:
        """As `coverage`, without the work split by the prediction."""
        total = self.total_s
        return self.attributed_s(EXACT_METHODS) / total if total > 0 else math.nan

    @property
    def busy(self) -> float:
        """Kernel (operator) time / step wall time: how full the steps are."""
        wall = sum(self.step_wall_s)
        return self.total_s / wall if wall > 0 else math.nan

    def by_method(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for w in self.work:
            out[w.method or "unattributed"] += w.dur_us * 1e-6
        return dict(out)

    def per_step(self) -> dict[Key, list[float]]:
        """Seconds per (name, phase) in each active step."""
        n = len(self.steps)
        out: dict[Key, list[float]] = defaultdict(lambda: [0.0] * n)
        for w in self.work:
            for name, phase, weight in w.parts:
                out[(name, phase)][w.step] += w.dur_us * weight * 1e-6
        return dict(out)

    def calls(self) -> dict[Key, int]:
        """Kernels (operators) per (name, phase) per step (a split kernel counts for each part)."""
        out: dict[Key, int] = defaultdict(int)
        for w in self.work:
            for name, phase, _ in w.parts:
                out[(name, phase)] += 1
        n = max(len(self.steps), 1)
        return {k: round(v / n) for k, v in out.items()}

    def occupancy(self) -> dict[Key, tuple[float | None, float | None]]:
        """Time-weighted mean achieved occupancy (%) and blocks per SM per (name, phase)."""
        acc: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
        for w in self.work:
            for name, phase, weight in w.parts:
                t = w.dur_us * weight
                a = acc[(name, phase)]
                if w.occupancy is not None:
                    a[0] += w.occupancy * t
                    a[1] += t
                if w.blocks_per_sm is not None:
                    a[2] += w.blocks_per_sm * t
                    a[3] += t
        return {k: (a[0] / a[1] if a[1] else None, a[2] / a[3] if a[3] else None)
                for k, a in acc.items()}

    def unattributed_top(self, n: int = 5) -> list[tuple[str, float]]:
        """The kernels (operators) that took the most unattributed time, seconds per step."""
        acc: dict[str, float] = defaultdict(float)
        for w in self.work:
            if not w.parts:
                acc[w.kernel] += w.dur_us * 1e-6 / max(len(self.steps), 1)
        return sorted(acc.items(), key=lambda kv: -kv[1])[:n]


# ----------------------------------------------------------------------------------------------
# Loading


def load_trace(path: str | Path) -> dict[str, Any]:
    """A Chrome/Kineto JSON trace (plain or .gz) as a dict; a one-line UserError when it isn't one."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"trace file {str(path)!r} is a folder; give the trace.json in it (or a "
                        "torch.profiler JSON trace)")
    if not path.is_file():
        raise UserError(f"trace file {str(path)!r} does not exist (or is not a file)")
    try:
        raw = path.read_bytes()
    except OSError as err:  # unreadable: permissions, or a file the system will not read out
        raise UserError(f"trace file {str(path)!r} cannot be read ({err.strerror or err})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise UserError(f"trace file {str(path)!r} is a truncated or corrupt gzip file ({err})") from None
    if not raw.strip():
        raise UserError(f"trace file {str(path)!r} is empty; expected a torch.profiler JSON trace")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(
            f"trace file {str(path)!r} is not valid JSON (truncated? {str(err).splitlines()[0]}); "
            "expected a torch.profiler JSON trace"
        ) from None
    if isinstance(doc, list):  # the bare-array Chrome trace form
        doc = {"traceEvents": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise UserError(
            f"trace file {str(path)!r} has no 'traceEvents' list; expected a torch.profiler JSON trace"
        )
    events = doc["traceEvents"]
    for n, e in enumerate(events):
        _check_event(path, n, e)
    if not any(e.get("ph") == "X" and _STEP_RE.match(str(e.get("name", ""))) for e in events):
        raise UserError(
            f"trace file {str(path)!r} has no ProfilerStep#N ranges; record it with a "
            "torch.profiler schedule and prof.step() (as `gptperf profile` does)"
        )
    return doc


def _check_event(path: Path, n: int, e: Any) -> None:
    """A one-line UserError for event `n` where it is no object, or a complete ("X") event without
    a finite start time and a duration of at least 0 µs (what attribution reads)."""
    if not isinstance(e, dict):
        raise UserError(f"trace file {str(path)!r}: event {n} is {type(e).__name__}, not an object; "
                        "expected a torch.profiler JSON trace")
    if e.get("ph") == "X":
        ts, dur = e.get("ts"), e.get("dur")
        if not (is_finite_number(ts) and is_finite_number(dur) and dur >= 0):
            raise UserError(
                f"trace file {str(path)!r}: event {n} ({str(e.get('name', ''))[:60]!r}) has ts "
                f"{ts!r} and dur {dur!r}; a complete event needs a finite start time and a "
                "duration of at least 0 µs")


# ----------------------------------------------------------------------------------------------
# What was profiled, carried in the trace itself

# Chrome's JSON trace format keeps top-level keys other than traceEvents as metadata (Perfetto and
# TensorBoard ignore them), so a trace can say what it was recorded with wherever it is copied.
RECORD_KEY = "gptperf"
PROFILED_KEY = "profiled"
_TAIL_BYTES = 4096  # Kineto ends its object with `"traceName": "..." }`: the brace is near the end


def trace_record(doc: Mapping[str, Any]) -> Any:
    """What `gptperf profile` recorded in a loaded trace (`{"gptperf": {"profiled": ...}}`), as
    written (gptperf.profiling.run reads it); None in a trace without one."""
    ours = doc.get(RECORD_KEY)
    return ours.get(PROFILED_KEY) if isinstance(ours, dict) else None


def copy_with_record(src: str | Path, dst: str | Path, record: Mapping[str, Any]) -> bool:
    """Copy the JSON trace `src` to `dst` with `record` added under {"gptperf": {"profiled": ...}};
    False (a plain copy) where that cannot be done without parsing it: a gzip file, or one whose
    top-level object does not end the file. The trace is streamed, not parsed: a GPU trace can
    be hundreds of MB."""
    src, dst = Path(src), Path(dst)
    size = src.stat().st_size
    with open(src, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        start = max(0, size - _TAIL_BYTES)
        f.seek(start)
        tail = f.read().rstrip()
    # a non-empty object: `load_trace` insists on its traceEvents, so `{}` never gets this far
    if gzipped or not tail.endswith(b"}") or size < 3:
        shutil.copyfile(src, dst)
        return False
    cut = start + len(tail) - 1  # the offset of the object's closing brace
    extra = json.dumps({PROFILED_KEY: dict(record)}).encode()
    with open(src, "rb") as f, open(dst, "wb") as g:
        left = cut
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            g.write(chunk)
            left -= len(chunk)
        g.write(b',\n"' + RECORD_KEY.encode() + b'": ' + extra + b"}\n")
    return True


# ----------------------------------------------------------------------------------------------
# The CPU event forest


class _Forest:
    """Time-nested CPU events per thread, with parent links."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.parent: dict[int, int | None] = {}
        self.children_time: dict[int, float] = defaultdict(float)  # child cpu_op/annotation time
        self.order: list[int] = []  # CPU tree events in (thread, time) order
        per_thread: dict[tuple[Any, Any], list[int]] = defaultdict(list)
        for i, e in enumerate(events):
            if e.get("ph") == "X" and e.get("cat") in _CPU_TREE_CATEGORIES and "dur" in e:
                per_thread[(e.get("pid"), e.get("tid"))].append(i)
        for idx in per_thread.values():
            idx.sort(key=lambda i: (float(events[i]["ts"]), -float(events[i]["dur"]), i))
            stack: list[int] = []
            for i in idx:
                ts = float(events[i]["ts"])
                while stack and ts >= _end(events[stack[-1]]) - 1e-6:
                    stack.pop()
                p = stack[-1] if stack else None
                self.parent[i] = p
                if p is not None and events[i].get("cat") in ("cpu_op", "user_annotation"):
                    self.children_time[p] += float(events[i]["dur"])
                stack.append(i)
                self.order.append(i)

    def ancestors(self, i: int | None):
        while i is not None:
            yield i
            i = self.parent.get(i)


def _end(e: Mapping[str, Any]) -> float:
    return float(e["ts"]) + float(e.get("dur", 0.0))


def _arg(e: Mapping[str, Any], key: str) -> Any:
    args = e.get("args")
    return args.get(key) if isinstance(args, dict) else None


def _inside_engine(forest: _Forest, events: list[dict[str, Any]], i: int) -> bool:
    return any(str(events[a].get("name", "")).startswith("autograd::engine::evaluate_function")
               for a in forest.ancestors(forest.parent.get(i)))


def _is_backward_node(e: Mapping[str, Any]) -> bool:
    fwd = _arg(e, "Fwd thread id")
    return e.get("cat") == "cpu_op" and _arg(e, "Sequence number") is not None and bool(fwd)


# ----------------------------------------------------------------------------------------------
# Attribution


@dataclass
class Provenance:
    """Compiled kernels -> operations, captured while inductor generated them (see provenance.py).

    `kernels[(graph_is_backward, kernel_name)]` and `externs[(graph_is_backward, op, dims)]` hold,
    in generation order, for each generated kernel the operation names it computes.
    """

    kernels: dict[tuple[bool, str], list[list[str]]] = field(default_factory=dict)
    externs: dict[tuple[bool, str, str], list[list[str]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kernels": {f"{'bwd' if b else 'fwd'}:{k}": v for (b, k), v in self.kernels.items()},
                "externs": {f"{'bwd' if b else 'fwd'}:{o}{d}": v
                            for (b, o, d), v in self.externs.items()}}


def extern_key(op: str, dims: Any) -> str:
    """A text key of an extern call: its op and the shapes of its two matrix operands.

    The operands are the first two tensors (mm, bmm, attention: q and k), after the bias for
    addmm/baddbmm; an `out=` tensor that the trace lists after them is left out.
    """
    op = op.removeprefix("aten::")
    shapes = [tuple(int(x) for x in d) for d in (dims or []) if isinstance(d, (list, tuple)) and d]
    skip = 1 if op in ("addmm", "baddbmm") else 0
    return f"{op}{shapes[skip:skip + 2]}"


def _split(candidates: list[str], phase: str, shares: Mapping[Key, float] | None
           ) -> list[tuple[str, str, float]]:
    """Weights of `candidates` by their predicted time in `phase` (equal when unknown)."""
    cands = list(dict.fromkeys(candidates))
    weights = [max((shares or {}).get((n, phase), 0.0), 0.0) for n in cands]
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(cands), float(len(cands))
    return [(n, phase, w / total) for n, w in zip(cands, weights, strict=True) if w > 0]


_Target = tuple[str, str, str]  # (operation name, phase, method)


def _active_steps(events: list[dict[str, Any]], path: str) -> dict[str, int]:
    """The active steps, ProfilerStep#N name -> its range's traceEvents index, in time order."""
    # Kineto may write a step's range twice.
    step_events: dict[str, int] = {}
    for i, e in enumerate(events):
        if e.get("ph") == "X" and e.get("cat") != "gpu_user_annotation":
            m = _STEP_RE.match(str(e.get("name", "")))
            if m and e["name"] not in step_events:
                step_events[e["name"]] = i
    steps = sorted(step_events, key=lambda s: float(events[step_events[s]]["ts"]))
    if not steps:
        raise UserError(f"trace {path!r} has no ProfilerStep#N ranges")
    return {s: step_events[s] for s in steps}


def _forward_ops_by_sequence(forest: _Forest, events: list[dict[str, Any]]) -> dict[int, int]:
    """Forward operators by sequence number: the one that made the backward node of that number."""
    # An operator that makes no node (a gradient's zero_, an optimizer's op) carries the number
    # the next node will take, so the maker is the last outermost operator with it.
    # Sequence numbers count per thread, so only operators outside the autograd engine qualify.
    fwd_by_seq: dict[int, int] = {}
    for i in forest.order:
        e = events[i]
        seq = _arg(e, "Sequence number")
        if (e.get("cat") == "cpu_op" and seq is not None and not _arg(e, "Fwd thread id")
                and not _inside_engine(forest, events, i)):
            before = fwd_by_seq.get(int(seq))
            if before is None or before not in forest.ancestors(forest.parent.get(i)):
                fwd_by_seq[int(seq)] = i
    return fwd_by_seq


def _forward_range(forest: _Forest, events: list[dict[str, Any]], i: int) -> str | None:
    """The operation whose forward range encloses CPU event `i` (None inside the optimizer's)."""
    for a in forest.ancestors(i):
        e = events[a]
        if e.get("cat") == "user_annotation" and names.is_operation_name(e["name"]):
            return e["name"] if e["name"] != names.OPTIMIZER else None
    return None


def _in_backward(forest: _Forest, events: list[dict[str, Any]], i: int | None) -> bool:
    return any(str(events[a].get("name", "")).startswith("autograd::engine::evaluate_function")
               or _is_backward_node(events[a]) for a in forest.ancestors(i))


def _has_compiled_regions(events: list[dict[str, Any]]) -> bool:
    return any(str(e.get("name", "")).startswith(("Torch-Compiled Region", "CompiledFunction"))
               for e in events if e.get("ph") == "X")


class _Attributor:
    """The indexes over one trace's CPU event forest that name its work, and the naming walk.

    Attribute the work in launch order: a kernel generated for several call sites is matched
    to them by how many times it was launched before in its step.
    """

    def __init__(self, events: list[dict[str, Any]], forest: _Forest, step_ranges: list[int],
                 shares: Mapping[Key, float] | None, provenance: Provenance | None) -> None:
        self.events = events
        self.forest = forest
        self.shares = shares
        self.provenance = provenance
        self.step_of_range = {s: k for k, s in enumerate(step_ranges)}
        self.step_spans = [(float(events[s]["ts"]), _end(events[s])) for s in step_ranges]
        self.fwd_by_seq = _forward_ops_by_sequence(forest, events)
        self.resolved: dict[int, _Target | None] = {}  # resolve's answer per CPU event walked
        self.accumulate = self._accumulate_grad_owners()
        self.compiled = _has_compiled_regions(events)
        self.launches: dict[Any, int] = defaultdict(int)  # (step, is_bwd, generated key) -> count
        self.phase_candidates: dict[str, list[str]] = defaultdict(list)
        for (n, ph) in (shares or {}):
            self.phase_candidates[ph].append(n)

    def step_of(self, i: int) -> int | None:
        """Position of the active step that CPU event `i` ran in."""
        for a in self.forest.ancestors(i):
            if a in self.step_of_range:
                return self.step_of_range[a]
        # Other threads (the autograd engine's on GPU) are not nested in the step range: by time.
        ts = float(self.events[i]["ts"])
        for k, (start, end) in enumerate(self.step_spans):
            if start <= ts < end:
                return k
        return None

    def resolve(self, i: int | None) -> _Target | None:
        """(name, phase, method) of CPU event `i`, from itself or its enclosing events."""
        path_: list[int] = []
        result: _Target | None = None
        for a in self.forest.ancestors(i):
            if a in self.resolved:
                result = self.resolved[a]
                break
            path_.append(a)
            e = self.events[a]
            name = str(e.get("name", ""))
            if _is_backward_node(e):
                f = self.fwd_by_seq.get(int(_arg(e, "Sequence number")))
                target = _forward_range(self.forest, self.events, f) if f is not None else None
                if target is not None:
                    result = (target, names.BACKWARD, METHOD_SEQUENCE)
                    break
                continue
            if e.get("cat") == "user_annotation":
                if name == names.OPTIMIZER:
                    result = (names.OPTIMIZER, names.OPTIMIZER_PHASE, METHOD_RANGE)
                    break
                if names.is_operation_name(name):
                    result = (name, names.FORWARD, METHOD_RANGE)
                    break
                if name.startswith(("Optimizer.step#", "Optimizer.zero_grad#")):
                    result = (names.OPTIMIZER, names.OPTIMIZER_PHASE, METHOD_OPTIMIZER)
                    break
                if _STEP_RE.match(name):
                    break
        for a in path_:
            self.resolved[a] = result
        return result

    def _accumulate_grad_owners(self) -> dict[int, _Target]:
        """AccumulateGrad -> the backward node that ran just before it on its thread."""
        accumulate: dict[int, _Target] = {}
        last_bwd: dict[Any, _Target] = {}
        for i in self.forest.order:
            e = self.events[i]
            tid = (e.get("pid"), e.get("tid"))
            if e.get("cat") != "cpu_op" or "evaluate_function" not in str(e.get("name", "")):
                continue
            if "AccumulateGrad" in e["name"]:
                if tid in last_bwd:
                    name, phase, _ = last_bwd[tid]
                    accumulate[i] = (name, phase, METHOD_ACCUMULATE)
            else:
                r = self.resolve(i)
                if r is not None and r[1] == names.BACKWARD:
                    last_bwd[tid] = r
        return accumulate

    def operation_of(self, i: int | None) -> _Target | None:
        """As `resolve`, but work inside an AccumulateGrad goes to the node that ran before it,
        and the stream's gradient sum inside a LayerNorm's node to its layer's residual."""
        for a in self.forest.ancestors(i):
            if a in self.accumulate:
                return self.accumulate[a]
            if _is_backward_node(self.events[a]) or self.events[a].get("cat") == "user_annotation":
                break
        return self._stream_join(i) or self.resolve(i)

    def _stream_join(self, i: int | None) -> _Target | None:
        """(h.k.residual, bwd) for the engine's sum of the two gradients at the residual stream:
        an `aten::add_` whose parent is a backward node's `evaluate_function` (outside the node's
        own operator) resolving to layer k's ln_1 or ln_2, the operation whose backward brought
        the second gradient of the tensor its LayerNorm and the residual's skip both read."""
        add = next((a for a in self.forest.ancestors(i)
                    if self.events[a].get("cat") == "cpu_op"), None)
        if add is None or self.events[add].get("name") != "aten::add_":
            return None
        node = self.forest.parent.get(add)
        if node is None or "evaluate_function" not in str(self.events[node].get("name", "")):
            return None
        target = self.resolve(node)
        if target is None or target[1] != names.BACKWARD:
            return None
        layer, component = names.split_name(target[0])
        if layer is None or component not in (names.LN_1, names.LN_2):
            return None
        return (names.layer_name(layer, names.RESIDUAL), names.BACKWARD, METHOD_STREAM_JOIN)

    def compiled_parts(self, kernel_name: str, cpu: int | None, phase: str, step: int
                       ) -> tuple[list[tuple[str, str, float]], str | None]:
        """Parts and method of compiled work: by provenance, else split over the phase's shares."""
        if self.provenance is not None:
            cands = self._generated_operations(self.provenance, kernel_name, cpu,
                                               phase == names.BACKWARD, step)
            if cands:
                return _split(cands, phase, self.shares), METHOD_PROVENANCE
        cands = self.phase_candidates.get(phase)
        if cands:
            return _split(cands, phase, self.shares), METHOD_SHARE
        return [], None

    def _generated_operations(self, provenance: Provenance, kernel_name: str, cpu: int | None,
                              is_bwd: bool, step: int) -> list[str] | None:
        """The operation names of the generated code that this launch ran, when provenance knows."""
        lists, key = self._generated_lists(provenance, kernel_name, cpu, is_bwd)
        if not lists:
            return None
        # The k-th launch in a step of a kernel generated for several call sites
        # (the same shapes in every layer) belongs to the k-th generated one.
        n = self.launches[(step, is_bwd, key)]
        self.launches[(step, is_bwd, key)] += 1
        return lists[n % len(lists)]

    def _generated_lists(self, provenance: Provenance, kernel_name: str, cpu: int | None,
                         is_bwd: bool) -> tuple[list[list[str]] | None, str]:
        """Provenance's lists for a launch, a generated kernel's or an extern call's, and their key."""
        # CPU kernel ranges are named 'graph_<i>_cpp_fused_...' after the generated kernel.
        key = _GRAPH_PREFIX.sub("", kernel_name)
        lists = provenance.kernels.get((is_bwd, key))
        if lists is None and cpu is not None:
            # An aten operator called by compiled code (matmul, attention, a fallback):
            # match op and shapes, innermost first (_flash_attention_forward, then
            # _scaled_dot_product_flash_attention, the one inductor called).
            for a in self.forest.ancestors(cpu):
                e = self.events[a]
                if e.get("cat") == "cpu_op" and str(e.get("name", "")).startswith("aten::"):
                    key = extern_key(e["name"], _arg(e, "Input Dims"))
                    lists = provenance.externs.get((is_bwd, e["name"].removeprefix("aten::"), key))
                    if lists:
                        break
        return lists, key

    def assign(self, w: Work, op: int | None) -> Work:
        """Give `w` the operation(s) of the CPU operator `op` it belongs to."""
        r = self.operation_of(op)
        if r is not None:
            w.parts, w.method = [(r[0], r[1], 1.0)], r[2]
        elif self.compiled:
            phase = names.BACKWARD if _in_backward(self.forest, self.events, op) else names.FORWARD
            w.parts, w.method = self.compiled_parts(w.kernel, op, phase, w.step)
        return w

    def kernel_work(self, kernels: list[int]) -> list[Work]:
        """The GPU work (`kernels`, traceEvents indexes) launched inside the active steps."""
        by_corr: dict[Any, int] = {}
        for i in self.forest.order:
            e = self.events[i]
            if e.get("cat") in _LAUNCH_CATEGORIES and _arg(e, "correlation") is not None:
                by_corr[_arg(e, "correlation")] = i
        work: list[Work] = []
        for i in sorted(kernels, key=lambda i: float(self.events[i]["ts"])):
            e = self.events[i]
            launch = by_corr.get(_arg(e, "correlation"))
            step = self.step_of(launch) if launch is not None else None
            if step is None:
                continue  # launched outside the active steps
            cpu = self.forest.parent.get(launch)
            work.append(self.assign(Work(i, str(e.get("name", "")), step, float(e.get("dur", 0.0)),
                                         occupancy=_num(_arg(e, "est. achieved occupancy %")),
                                         blocks_per_sm=_num(_arg(e, "blocks per SM")),
                                         launcher=cpu), cpu))
        return work

    def operator_work(self) -> list[Work]:
        """Each CPU operator's self time inside the active steps."""
        work: list[Work] = []
        for i in self.forest.order:
            e = self.events[i]
            if e.get("cat") != "cpu_op":
                continue
            step = self.step_of(i)
            if step is None:
                continue
            self_us = max(float(e["dur"]) - self.forest.children_time.get(i, 0.0), 0.0)
            work.append(self.assign(Work(i, str(e.get("name", "")), step, self_us), i))
        return work


def attribute(
    doc: dict[str, Any],
    *,
    path: str = "<trace>",
    shares: Mapping[Key, float] | None = None,
    provenance: Provenance | None = None,
) -> Attribution:
    """Attribute the work of every active step of a loaded trace (see the module docstring).

    `shares` (predicted seconds per (name, phase)) splits a compiled kernel that fuses several
    operations, and compiled work that no provenance explains; without it the split is equal.
    """
    # Same positions as doc["traceEvents"], so `Work.index` finds the event again.
    events: list[dict[str, Any]] = [e if isinstance(e, dict) else {} for e in doc["traceEvents"]]
    forest = _Forest(events)
    steps = _active_steps(events, path)
    attributor = _Attributor(events, forest, list(steps.values()), shares, provenance)
    kernels = [i for i, e in enumerate(events)
               if e.get("ph") == "X" and e.get("cat") in GPU_WORK_CATEGORIES]
    if kernels:
        work, unit = attributor.kernel_work(kernels), "kernel"
    else:
        work, unit = attributor.operator_work(), "operator"
    if not work:
        raise UserError(f"trace {path!r} has no {unit} inside its ProfilerStep#N ranges: nothing "
                        "to attribute; record the work inside the profiled steps")
    wall = [float(events[i]["dur"]) * 1e-6 for i in steps.values()]
    return Attribution(path, unit, list(steps), wall, work, attributor.compiled)


def _num(x: Any) -> float | None:
    try:
        return float(x) if x is not None else None
    except (TypeError, ValueError):
        return None


def attribute_file(
    path: str | Path,
    *,
    shares: Mapping[Key, float] | None = None,
    provenance: Provenance | None = None,
) -> tuple[dict[str, Any], Attribution]:
    """Load and attribute a trace file; the loaded document comes back for augmentation."""
    doc = load_trace(path)
    return doc, attribute(doc, path=str(path), shares=shares, provenance=provenance)


# ----------------------------------------------------------------------------------------------
# Augmented trace


def augment(
    doc: dict[str, Any],
    attribution: Attribution,
    predicted: Mapping[Key, tuple[float, float, float]],
) -> dict[str, Any]:
    """Write operation, phase and predicted FLOPs, bytes and time into each attributed event's args.

    `predicted[(name, phase)] = (flops, bytes, seconds)` per step. An operation's prediction is
    split over its kernels (operators) in proportion to their measured time, so the shares of
    one operation's kernels in one step add up to the operation's prediction.
    """
    per_step_total: dict[tuple[Key, int], float] = defaultdict(float)
    for w in attribution.work:
        for name, phase, weight in w.parts:
            per_step_total[((name, phase), w.step)] += w.dur_us * weight
    events = doc["traceEvents"]
    for w in attribution.work:
        if not w.parts:
            continue
        e = events[w.index]
        args = e.setdefault("args", {})
        flops = nbytes = secs = 0.0
        for name, phase, weight in w.parts:
            total = per_step_total[((name, phase), w.step)]
            share = w.dur_us * weight / total if total > 0 else 0.0
            f, b, t = predicted.get((name, phase), (math.nan, math.nan, math.nan))
            flops += f * share
            nbytes += b * share
            secs += t * share
        main = max(w.parts, key=lambda p: p[2])
        args["gptperf.op"] = main[0] if len(w.parts) == 1 else ",".join(p[0] for p in w.parts)
        args["gptperf.phase"] = main[1]
        args["gptperf.method"] = w.method
        if all(math.isfinite(x) for x in (flops, nbytes, secs)):
            args["gptperf.predicted_flops"] = flops
            args["gptperf.predicted_bytes"] = nbytes
            args["gptperf.predicted_us"] = secs * 1e6
    doc.setdefault("gptperf", {})["note"] = (
        "gptperf.predicted_* = the operation's predicted FLOPs/bytes/time per step, split over its "
        "kernels in proportion to their measured time"
    )
    return doc
