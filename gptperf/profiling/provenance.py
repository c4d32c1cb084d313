"""Which operations each kernel of a torch.compile'd step computes, recorded while inductor compiles.

Three pieces of metadata that torch itself carries, joined:

* The model's labels (`gptperf.model.labels.record_function`) annotate, while dynamo traces, the
  FX nodes made inside them with their operation name (`torch.fx.traceback.annotate`:
  `node.meta["custom"]["gptperf_op"] = "h.3.mlp.fc"`). AOT autograd copies a forward node's
  annotation onto the backward nodes made from it, so backward nodes carry the same name.
* A post-grad pass (inductor's `post_grad_custom_post_pass` option) keeps each graph inductor
  lowers, with those annotations; a graph that takes `tangents_*` is a backward graph.
* Inductor's provenance tracking (`trace.provenance_tracking_level = 1`) logs, once per compiled
  graph, the post-grad nodes each generated kernel and each extern call computes: the structured
  trace artifact `inductor_provenance_tracking_node_mappings` (the one tlparse reads), received
  here by a handler on torch's structured-trace logger. The few kernels it misses (mix-order
  reductions) are read off the comment inductor writes above each call in the generated
  wrapper, logged on the same logger (`inductor_output_code`).

Kernel -> post-grad nodes -> their annotations -> operation names, in a `Provenance` table that
`gptperf.profiling.trace.attribute` reads. Nothing here reads source files or replaces anything
in torch: only config options, a documented graph-pass hook and a logging handler, all undone
on exit. Where this torch lacks one of them, the table stays empty and compiled work falls back
to the predicted split (method 'predicted-share', visible in the exact coverage).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from gptperf import names
from gptperf.profiling.trace import Provenance, extern_key

ARTIFACT = "inductor_provenance_tracking_node_mappings"
OUTPUT_CODE = "inductor_output_code"  # the generated wrapper, logged once per graph
# What inductor writes in the wrapper above each kernel call (torch._inductor.utils.
# get_kernel_metadata), a Triton kernel call, and a mix-order reduction's partial sums finished
# in the wrapper.
_SOURCE_NODES = re.compile(r"#\s*(?:Topologically Sorted|Unsorted) Source Nodes: \[([^\]]*)\]")
_TRITON_CALL = re.compile(r"^\s*(\w+)\.run\(")
_WORKSPACE_SUM = re.compile(r"=\s*workspace_\d+\[[^\]]*\]\.view\(([\d,\s]+)\)\.sum\(dim=0\)")
_TRACE_LOGGER = "torch.__trace"  # torch._logging's structured trace (TORCH_TRACE, tlparse)

# Nodes that do no work of their own operation: views, layout changes, constants, and dtype
# casts (autocast's cast of a matmul's input, fused into the kernel that produces it). A kernel's
# nodes include such nodes of its neighbours, which would drag in their names (a LayerNorm
# kernel would be split with the next matmul). A kernel made of nothing else keeps them.
_NO_WORK = frozenset((
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "squeeze",
    "unsqueeze", "slice", "select", "split", "split_with_sizes", "as_strided", "alias", "detach",
    "clone", "arange", "iota", "full", "scalar_tensor", "empty", "zeros", "ones",
    "lift_fresh_copy", "getitem", "convert_element_type", "_to_copy",
))


def op_name(target: Any) -> str:
    """The operator name in an FX target or an inductor kernel name: `aten.addmm.default`,
    `extern_kernels.mm`, `torch.ops.aten._scaled_dot_product_flash_attention.default` -> `addmm`,
    `mm`, `_scaled_dot_product_flash_attention`; a generated kernel's name stays as it is."""
    if hasattr(target, "_opname") or not callable(target):  # an OpOverload prints aten.x.overload
        text = str(target)
    else:  # operator.getitem and other Python callables
        text = str(getattr(target, "__name__", target))
    if "aten." in text:
        return text.split("aten.", 1)[1].split(".")[0]
    if "prims." in text:
        return text.split("prims.", 1)[1].split(".")[0]
    return text.split(".")[-1]


def node_operations(node: Any) -> list[str]:
    """The operation name an FX node's label annotated it with ([] when none, or not a name)."""
    from gptperf.model.labels import ANNOTATION  # deferred: loads torch

    custom = (getattr(node, "meta", None) or {}).get("custom")
    name = custom.get(ANNOTATION) if isinstance(custom, dict) else None
    return [name] if isinstance(name, str) and names.is_operation_name(name) else []


def _working(nodes: list[Any]) -> list[Any]:
    work = [n for n in nodes if op_name(getattr(n, "target", "")) not in _NO_WORK]
    return work or nodes


def _operations(nodes: list[Any]) -> list[str]:
    """The names of a kernel's nodes; where none carries a label (a node a pattern pass made, a
    gradient accumulation), the names of their inputs: e.g. the tied LM-head/embedding weight's
    gradient, one addmm that a pass made of lm_head's dW and the embedding's gradient."""
    work = _working(nodes)
    ops = [o for n in work for o in node_operations(n)]
    if not ops:
        ops = [o for n in work for a in getattr(n, "all_input_nodes", ()) for o in node_operations(a)]
    return list(dict.fromkeys(ops))


def _is_backward(graph: Any) -> bool:
    """Whether AOT autograd made this graph for the backward pass: it takes the gradients of the
    forward's outputs (`tangents_<i>`). Node tags do not say it: the partitioner moves some
    backward nodes (e.g. LayerNorm's rstd / N) into the forward graph."""
    return any(n.op == "placeholder" and str(n.target).startswith("tangents") for n in graph.nodes)


def _tensor_shapes(node: Any) -> list[list[int]]:
    """Shapes of a node's tensor arguments, in argument order (what the profiler's Input Dims list)."""
    shapes: list[list[int]] = []

    def visit(arg: Any) -> None:
        if isinstance(arg, (list, tuple)):
            for a in arg:
                visit(a)
            return
        shape = getattr((getattr(arg, "meta", None) or {}).get("val"), "shape", None)
        if shape is not None:
            try:
                shapes.append([int(s) for s in shape])
            except (TypeError, ValueError):  # symbolic size: no key the trace could match
                shapes.append([-1])

    visit(node.args)
    return shapes


def _handle(key: str) -> int:
    """Inductor's debug handle after the kernel name, `cpp_fused_add_0:7` -> 7 (generation order)."""
    _, _, handle = key.rpartition(":")
    return int(handle) if handle.isdigit() else 0


def record_graph(prov: Provenance, graph: Any, kernels: dict[str, list[str]],
                 code: str | None = None) -> int:
    """Add one compiled graph's kernels to `prov`: `kernels` maps `name:handle` to the post-grad
    node names inductor lists for it; `code`, the graph's generated wrapper, adds the kernels
    that table misses. Returns how many kernels and extern calls were added."""
    by_name = {n.name: n for n in graph.nodes}
    backward = _is_backward(graph)
    added = _unlisted_kernels(prov, graph, code, {k.rpartition(":")[0] for k in kernels},
                              backward) if code else 0
    for key in sorted(kernels, key=_handle):
        name = key.rpartition(":")[0] or key
        nodes = [by_name[n] for n in kernels[key] if n in by_name]
        if "." in name:  # an extern call: extern_kernels.mm, torch.ops.aten.<op>.default
            op = op_name(name)
            own = [n for n in nodes if op_name(getattr(n, "target", "")) == op]
            shapes = _tensor_shapes(own[0]) if own else []
            prov.externs.setdefault((backward, op, extern_key(op, shapes)), []).append(
                _operations(own or nodes))
        else:
            prov.kernels.setdefault((backward, name), []).append(_operations(nodes))
        added += 1
    return added


def _unlisted_kernels(prov: Provenance, graph: Any, code: str, listed: set[str],
                      backward: bool) -> int:
    """Kernels the provenance table misses, from the comment inductor writes above each call.

    Inductor gives a mix-order reduction (LayerNorm backward's row and column sums in one
    Triton kernel) no provenance entry, but names its nodes in the wrapper as for any kernel: the
    source node of each node (`meta["from_node"][0]`), or the node itself for a backward node
    without one. Its column sums are finished in the wrapper (`workspace[...].sum(dim=0)`):
    they belong to the same operation. Calls come in generation order, as in the table.
    """
    sources: dict[str, list[Any]] = defaultdict(list)  # the comment's names -> post-grad nodes
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        origin = n.meta.get("from_node")
        if origin:
            sources[str(getattr(origin[0], "name", ""))].append(n)
        elif n.meta.get("partitioner_tag") == "is_backward":
            sources[n.name].append(n)
    added = 0
    nodes: list[Any] = []
    ops: list[str] | None = None  # names of the last unlisted kernel, for its partial sums
    for line in code.splitlines():
        if m := _SOURCE_NODES.search(line):
            nodes = [n for s in m.group(1).split(",") for n in sources.get(s.strip(), ())]
        elif m := _TRITON_CALL.match(line):
            ops = None
            if m.group(1) not in listed:
                ops = _operations(nodes)
                prov.kernels.setdefault((backward, m.group(1)), []).append(ops)
                added += 1
        elif ops is not None and (m := _WORKSPACE_SUM.search(line)):
            shape = [int(x) for x in m.group(1).split(",") if x.strip()]
            prov.externs.setdefault((backward, "sum", extern_key("sum", [shape])), []).append(ops)
            added += 1
    return added


class _Recorder(logging.Handler):
    """Receives inductor's provenance artifact and records the kernels of the graph just lowered."""

    def __init__(self, prov: Provenance) -> None:
        super().__init__(logging.DEBUG)
        self.prov = prov
        self.graphs: list[Any] = []  # post-grad graphs, in the order inductor lowered them
        self.seen: dict[Any, set[str]] = {}  # kernel keys already logged, per compile id
        self.code: str | None = None  # the wrapper of the graph being compiled

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # bookkeeping must never break compilation
            meta = getattr(record, "metadata", None) or {}
            if OUTPUT_CODE in meta:  # logged before the graph's provenance table
                payload = getattr(record, "payload", None)
                self.code = payload if isinstance(payload, str) else None
                return
            artifact = meta.get("artifact")
            if not isinstance(artifact, dict) or artifact.get("name") != ARTIFACT or not self.graphs:
                return
            payload = getattr(record, "payload", None)
            mapping = json.loads(payload) if isinstance(payload, str) else payload
            kernels = (mapping or {}).get("cppCodeToPost") or {}
            # The table grows over one compile (forward, then backward graph): new keys only.
            seen = self.seen.setdefault(
                (meta.get("frame_id"), meta.get("frame_compile_id"), meta.get("attempt")), set())
            new = {k: v for k, v in kernels.items() if k not in seen and isinstance(v, list)}
            seen.update(new)
            if new or self.code:
                record_graph(self.prov, self.graphs[-1], new, self.code)
            self.code = None


def _graph_pass(recorder: _Recorder, previous: Any) -> Any:
    """A post-grad pass that keeps each graph (after any pass the user had set)."""
    from torch._inductor.custom_graph_pass import CustomGraphPass  # deferred: loads torch

    class KeepGraph(CustomGraphPass):
        def __call__(self, graph: Any) -> None:
            if previous is not None:
                previous(graph)
            recorder.graphs.append(graph)

        def uuid(self) -> Any:
            inner = previous.uuid() if hasattr(previous, "uuid") else None
            return ("gptperf-provenance", inner)

    return KeepGraph()


@contextlib.contextmanager
def inductor_provenance(n_layer: int | None = None) -> Iterator[Provenance]:
    """Record, while inductor compiles inside this block, which operations each kernel computes.

    The labels carry each node's full name (layer included), so `n_layer` is not needed; it is
    accepted for the callers that pass it. Clears dynamo's compiled code (`torch.compiler.reset`)
    and turns off the compile caches inside, since a graph compiled before, in this process or
    on disk, generates no code to record; compiles the backward graph with the forward one
    (inductor logs a lazily compiled backward graph's kernels without their nodes).
    """
    del n_layer
    prov = Provenance()
    try:
        import torch  # deferred: loads torch
        from torch._functorch import config as fconfig  # deferred: loads torch
        from torch._inductor import config as iconfig  # deferred: loads torch
        from torch._inductor.custom_graph_pass import (  # deferred: loads torch
            CustomGraphPass,  # noqa: F401
        )
    except ImportError:
        yield prov
        return
    if not hasattr(iconfig.trace, "provenance_tracking_level") or not hasattr(
            iconfig, "post_grad_custom_post_pass"):
        yield prov  # this torch cannot say which nodes a kernel computes
        return
    torch.compiler.reset()
    recorder = _Recorder(prov)
    patches: dict[str, Any] = {
        "fx_graph_cache": False,
        "trace.provenance_tracking_level": 1,
        "post_grad_custom_post_pass": _graph_pass(recorder, iconfig.post_grad_custom_post_pass),
    }
    if hasattr(iconfig.cpp, "enable_kernel_profile"):  # CPU kernels: a profiler range each
        patches["cpp.enable_kernel_profile"] = True
    fpatches = {k: v for k, v in (("enable_autograd_cache", False),
                                  ("force_non_lazy_backward_lowering", True))
                if hasattr(fconfig, k)}
    logger = logging.getLogger(_TRACE_LOGGER)
    level = logger.level
    logger.addHandler(recorder)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)
    try:
        with iconfig.patch(patches), fconfig.patch(fpatches):
            yield prov
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
