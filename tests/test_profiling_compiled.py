"""Compiled attribution: a torch.compile'd step's kernels land on operation names through the
labels' FX annotations and inductor's provenance (gptperf.profiling.provenance), no source read."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from gptperf import names
from gptperf.model import preset
from gptperf.profiling.trace import METHOD_PROVENANCE, Provenance, extern_key

# tiny's shapes with two blocks (layer indices must be told apart): C=128, vocab 256. Every
# linear layer's weight has its own shape, so a backward matmul's shapes name its component.
CONFIG = preset("tiny", n_layer=2)
C, V = CONFIG.n_embd, CONFIG.vocab_size
B, T = 8, 128
SHAPES = {(3 * C, C): names.ATTN_QKV, (4 * C, C): names.MLP_FC, (C, 4 * C): names.MLP_PROJ,
          (C, C): names.ATTN_PROJ, (V, C): names.LM_HEAD}


# ---------------------------------------------------------------------------------------------
# One compiled train step (forward, backward, optimizer), profiled once for the module


@pytest.fixture(scope="module")
def compiled_train(tmp_path_factory):
    import torch

    from gptperf.profiling import profile_workload

    out = tmp_path_factory.mktemp("compiled") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as tests/conftest.py's one_thread: far faster on a busy 2-core machine
    try:
        result = profile_workload(CONFIG, "train", batch=B, seq=T, dtype="fp32", device="cpu",
                                  compile=True, hardware="cpu", out_dir=out, wait=0, warmup=1,
                                  active=2, overhead=False, plot=False)
    finally:
        torch.set_num_threads(threads)
    doc = json.loads((out / "trace.gptperf.json").read_text())
    exact = [e for e in doc["traceEvents"]
             if isinstance(e, dict) and (e.get("args") or {}).get("gptperf.method") == METHOD_PROVENANCE]
    return result, exact


@pytest.mark.slow
def test_compiled_train_is_attributed_exactly(compiled_train):
    result, exact = compiled_train
    assert result.provenance["kernels"] > 0 and result.provenance["extern_calls"] > 0
    # Exact = found by provenance or a range, not split by the prediction.
    assert result.exact_coverage >= 0.90, (result.exact_coverage, result.by_method,
                                           result.unattributed_top)
    assert result.by_method.get(METHOD_PROVENANCE, 0.0) > 0
    phases = {e["args"]["gptperf.phase"] for e in exact}
    assert phases == {names.FORWARD, names.BACKWARD}
    measured = {row.phase for row in result.comparison.ops if row.measured_s > 0}
    assert {names.FORWARD, names.BACKWARD, names.OPTIMIZER_PHASE} <= measured


@pytest.mark.slow
def test_compiled_kernels_carry_per_layer_names_in_both_phases(compiled_train):
    _, exact = compiled_train
    found = {(op, e["args"]["gptperf.phase"]) for e in exact
             for op in e["args"]["gptperf.op"].split(",")}
    # Matmuls and attention (extern calls) and generated kernels (GELU, LayerNorms), every layer,
    # both phases. (The residual's backward is a gradient sum fused into LayerNorm backward.)
    for layer in range(CONFIG.n_layer):
        for comp in (names.LN_1, names.ATTN_QKV, names.ATTN_SDPA, names.ATTN_PROJ, names.LN_2,
                     names.MLP_FC, names.MLP_ACT, names.MLP_PROJ):
            for phase in (names.FORWARD, names.BACKWARD):
                assert (names.layer_name(layer, comp), phase) in found, (layer, comp, phase)
        assert (names.layer_name(layer, names.RESIDUAL), names.FORWARD) in found
    for name in (names.EMBED, names.LN_F, names.LM_HEAD, names.LOSS):
        assert {(name, names.FORWARD), (name, names.BACKWARD)} <= found, name
    assert all(names.is_operation_name(op) for op, _ in found)
    generated = [e for e in exact if "cpp_fused" in e["name"]]
    assert any(e["args"]["gptperf.phase"] == names.BACKWARD and "h.1." in e["args"]["gptperf.op"]
               for e in generated)


@pytest.mark.slow
def test_compiled_backward_matmuls_match_their_shapes(compiled_train):
    """A backward aten::mm's shapes say which linear layer it belongs to (dX = dY·W, dW = dYᵀ·X);
    the name the provenance gave it must agree (the layer index is checked above)."""
    _, exact = compiled_train
    checked = 0
    for e in exact:
        if e["name"] != "aten::mm" or e["args"]["gptperf.phase"] != names.BACKWARD:
            continue
        a, b = e["args"]["Input Dims"][:2]
        n, k = (a[1], b[1]) if a[0] == B * T else (a[0], b[1])
        expected = SHAPES.get((n, k))
        if expected is None:
            continue
        assert {names.component_of(op) for op in e["args"]["gptperf.op"].split(",")} == {expected}, e
        checked += 1
    assert checked >= 2 * 4 * CONFIG.n_layer  # dX and dW of four linear layers per block


# ---------------------------------------------------------------------------------------------
# The pieces, without compiling


def test_node_operations_read_the_label_annotation():
    from gptperf.model.labels import ANNOTATION
    from gptperf.profiling.provenance import node_operations

    assert node_operations(SimpleNamespace(meta={"custom": {ANNOTATION: "h.1.mlp.fc"}})) == ["h.1.mlp.fc"]
    assert node_operations(SimpleNamespace(meta={"custom": {ANNOTATION: "lm_head"}})) == ["lm_head"]
    assert node_operations(SimpleNamespace(meta={"custom": {ANNOTATION: "h.x.bogus"}})) == []
    assert node_operations(SimpleNamespace(meta={"custom": {"other": 1}})) == []
    assert node_operations(SimpleNamespace(meta={})) == []


def _graph(backward: bool):
    """A post-grad-like graph: x @ w (mlp.fc) viewed, GELU-ish mul (mlp.act), an unlabelled add."""
    import torch
    from torch.fx import Graph

    from gptperf.model.labels import ANNOTATION

    g = Graph()
    x, w = g.placeholder("primals_1"), g.placeholder("primals_2")
    x.meta["val"], w.meta["val"] = torch.empty(64, 128, device="meta"), torch.empty(128, 512, device="meta")
    if backward:
        g.placeholder("tangents_1")

    def node(target, args, label, shape):
        n = g.call_function(target, args)
        n.meta["val"] = torch.empty(*shape, device="meta")
        if label:
            n.meta["custom"] = {ANNOTATION: label}
        return n

    aten = torch.ops.aten
    mm = node(aten.mm.default, (x, w), "h.1.mlp.fc", (64, 512))
    view = node(aten.view.default, (mm, [4, 16, 512]), "h.1.mlp.fc", (4, 16, 512))
    mul = node(aten.mul.Tensor, (view, view), "h.1.mlp.act", (4, 16, 512))
    add = node(aten.add.Tensor, (mul, view), None, (4, 16, 512))
    g.output((add,))
    return g, {"mm": mm.name, "view": view.name, "mul": mul.name, "add": add.name}


@pytest.mark.parametrize("backward", [False, True])
def test_record_graph_names_kernels_and_extern_calls(backward):
    from gptperf.profiling.provenance import record_graph

    g, n = _graph(backward)
    prov = Provenance()
    added = record_graph(prov, g, {
        "cpp_fused_mul_view_0:2": [n["mul"], n["view"]],  # the view moves no data: not named
        "extern_kernels.mm:1": [n["mm"]],
        "cpp_fused_add_1:3": [n["add"]],  # no label: its inputs' names
        "cpp_fused_mul_view_0:4": [n["view"], n["mul"]],  # the same kernel again, later
    })
    assert added == 4
    assert prov.kernels[(backward, "cpp_fused_mul_view_0")] == [["h.1.mlp.act"], ["h.1.mlp.act"]]
    assert prov.kernels[(backward, "cpp_fused_add_1")] == [["h.1.mlp.act", "h.1.mlp.fc"]]
    assert prov.externs == {(backward, "mm", extern_key("mm", [[64, 128], [128, 512]])): [["h.1.mlp.fc"]]}


def test_kernels_the_table_misses_come_from_the_wrapper_comments():
    """A mix-order reduction (LayerNorm backward on GPU) has no provenance entry: its nodes come
    from the comment inductor writes above its call, its partial sums' finish goes with it."""
    from gptperf.profiling.provenance import record_graph

    g, n = _graph(True)
    nodes = {node.name: node for node in g.nodes}
    nodes[n["mul"]].meta["partitioner_tag"] = "is_backward"  # named by itself in the comment
    nodes[n["mm"]].meta["from_node"] = [SimpleNamespace(name="linear")]  # named by its source
    code = "\n".join([
        "        # Topologically Sorted Source Nodes: [linear], Original ATen: [aten.mm]",
        "        # [Provenance debug handles] extern_kernels.mm:1",
        "        extern_kernels.mm(buf0, primals_2, out=buf1)",
        "        # Call mix order reduction kernel",
        f"        # Topologically Sorted Source Nodes: [{n['mul']}], Original ATen: [aten.mul]",
        "        workspace_0 = empty_strided_cuda((786432, ), (1, ), torch.float32)",
        "        triton_per_fused_mul_0.run(buf1, workspace_0, 64, 512, stream=stream0)",
        "        buf8 = workspace_0[0 * 512 * 768 : (0 + 1) * 512 * 768].view(512, 768).sum(dim=0)",
        "        buf9 = workspace_0[1 * 512 * 768 : (1 + 1) * 512 * 768].view(512, 768).sum(dim=0)",
        "        # Topologically Sorted Source Nodes: [linear], Original ATen: [aten.mm]",
        "        triton_poi_fused_listed_1.run(buf1, stream=stream0)",
        "        triton_per_fused_mul_0.run(buf2, workspace_1, 64, 512, stream=stream0)",
    ])
    prov = Provenance()
    added = record_graph(prov, g, {"triton_poi_fused_listed_1:2": [n["mul"]]}, code)
    assert added == 1 + 2 + 1 + 1
    # The second call follows a listed kernel's comment: mm (from its source 'linear') -> mlp.fc.
    assert prov.kernels[(True, "triton_per_fused_mul_0")] == [["h.1.mlp.act"], ["h.1.mlp.fc"]]
    assert prov.kernels[(True, "triton_poi_fused_listed_1")] == [["h.1.mlp.act"]]
    assert prov.externs == {(True, "sum", extern_key("sum", [[512, 768]])): [["h.1.mlp.act"]] * 2}


def test_recorder_takes_each_graphs_new_kernels_from_the_growing_table():
    """Inductor logs one table per compile that grows from the forward to the backward graph."""
    from gptperf.profiling.provenance import ARTIFACT, OUTPUT_CODE, _Recorder

    prov = Provenance()
    rec = _Recorder(prov)
    fwd, nf = _graph(False)
    bwd, nb = _graph(True)

    def log(table=None, code=None):
        record = logging.LogRecord("torch.__trace", logging.DEBUG, __file__, 1, "", (), None)
        record.metadata = {"artifact": {"name": ARTIFACT, "encoding": "json"}, "frame_id": 0,
                           "frame_compile_id": 0, "attempt": 0}
        if code is not None:
            record.metadata = {OUTPUT_CODE: {"filename": "x.py"}, "frame_id": 0}
        record.payload = code if code is not None else json.dumps(
            {"cppCodeToPost": table, "version": 2.0})
        rec.emit(record)

    rec.graphs.append(fwd)
    log({"extern_kernels.mm:1": [nf["mm"]]})
    rec.graphs.append(bwd)
    [view] = [node for node in bwd.nodes if node.name == nb["view"]]
    view.meta["partitioner_tag"] = "is_backward"
    log(code=f"    # Topologically Sorted Source Nodes: [{nb['view']}], Original ATen: []\n"
             "    triton_per_fused_view_1.run(buf0, stream=stream0)\n")
    log({"extern_kernels.mm:1": [nf["mm"]], "cpp_fused_mul_view_0:2": [nb["mul"]]})
    log({"unrelated": "not a list"})  # ignored
    assert list(prov.externs) == [(False, "mm", extern_key("mm", [[64, 128], [128, 512]]))]
    assert prov.kernels == {(True, "cpp_fused_mul_view_0"): [["h.1.mlp.act"]],
                            (True, "triton_per_fused_view_1"): [["h.1.mlp.fc"]]}


def test_labels_annotate_forward_and_backward_nodes_when_compiling():
    """What the provenance relies on from torch: dynamo keeps the label as node.meta["custom"],
    and AOT autograd copies it onto the backward nodes (no inductor: a capturing backend)."""
    import torch
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    from gptperf.model.labels import ANNOTATION, _annotate, record_function

    if _annotate is None:
        pytest.skip("this torch has no torch.fx.traceback.annotate")
    graphs: dict[str, list] = {"fwd": [], "bwd": []}

    def keep(kind):
        def compiler(gm, _inputs):
            graphs[kind].append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    def f(x, w):
        with record_function("h.1.mlp.fc"):
            y = x @ w
        with record_function("h.1.mlp.act"):
            return torch.nn.functional.gelu(y).sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, backend=aot_autograd(fw_compiler=keep("fwd"), bw_compiler=keep("bwd")))
    x, w = torch.randn(4, 8), torch.randn(8, 16, requires_grad=True)
    compiled(x, w).backward()
    torch._dynamo.reset()

    def labels(kind, op):
        return {n.meta.get("custom", {}).get(ANNOTATION) for gm in graphs[kind] for n in gm.graph.nodes
                if n.op == "call_function" and op in str(n.target)}

    assert labels("fwd", "aten.mm") == {"h.1.mlp.fc"}
    assert labels("fwd", "gelu") == {"h.1.mlp.act"}
    assert labels("bwd", "aten.mm") == {"h.1.mlp.fc"}  # dW = xᵀ · dY
    assert labels("bwd", "gelu_backward") == {"h.1.mlp.act"}
