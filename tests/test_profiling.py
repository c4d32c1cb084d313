"""Profiling: attribution of a trace recorded here (tiny GPT, CPU), outputs, bad traces, CLI errors."""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gptperf import names
from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.profiling.trace import attribute, attribute_file, load_trace

# Distinct matmul shapes: qkv (3C x C), fc (4C x C), mlp.proj (C x 4C), attn.proj (C x C),
# lm_head (V x C) with C=32, V=256; batch*seq = 2*16 rows.
C, V, B, T = 32, 256, 2, 16
SHAPES = {(3 * C, C): names.ATTN_QKV, (4 * C, C): names.MLP_FC, (C, 4 * C): names.MLP_PROJ,
          (C, C): names.ATTN_PROJ, (V, C): names.LM_HEAD}


def _config(attention: str):
    return preset("tiny", n_layer=2, n_head=2, n_embd=C, block_size=32, attention=attention)


@pytest.fixture(scope="module", params=["math", "sdpa"])
def profiled(request, tmp_path_factory):
    from gptperf.profiling import profile_workload

    out = tmp_path_factory.mktemp(f"prof-{request.param}") / "out"
    result = profile_workload(_config(request.param), "train", batch=B, seq=T, dtype="fp32",
                              device="cpu", out_dir=out, wait=1, warmup=1, active=2,
                              overhead=True, overhead_repeats=2, hardware="cpu")
    return request.param, out, result


def _mm_component(dims) -> str | None:
    """The component a backward aten::mm belongs to, from its shapes alone.

    dX = dY (BT x N) @ W (N x K)   and   dW = dY^T (N x BT) @ X (BT x K).
    """
    a, b = dims[0], dims[1]
    if a[0] == B * T:  # dX: dY (BT x N) @ W (N x K)
        n, k = a[1], b[1]
    else:  # dW: dY^T (N x BT) @ X (BT x K)
        n, k = a[0], b[1]
    return SHAPES.get((n, k))


def test_backward_matmuls_attributed_to_their_forward_operation(profiled):
    _, out, _ = profiled
    doc, att = attribute_file(out / "trace.json")
    events = doc["traceEvents"]
    checked: dict[str, int] = {}
    for w in att.work:
        if w.kernel != "aten::mm" or not w.parts or w.parts[0][1] != names.BACKWARD:
            continue
        name = w.parts[0][0]
        dims = events[w.index]["args"]["Input Dims"]
        expected = _mm_component(dims)
        if expected is None:  # e.g. attention's batched products are bmm, not mm
            continue
        assert names.component_of(name) == expected, (name, dims)
        checked[name] = checked.get(name, 0) + 1
    # Both matmuls (dX, dW) of each linear layer's backward, in each layer, in each step.
    for layer in (0, 1):
        for comp in (names.ATTN_QKV, names.MLP_FC, names.MLP_PROJ, names.ATTN_PROJ):
            assert checked.get(names.layer_name(layer, comp), 0) >= 2 * len(att.steps), checked
    assert checked.get(names.LM_HEAD, 0) >= 2 * len(att.steps)


def test_both_embedding_tables_backward_is_attributed_in_every_step(profiled):
    """The gradients' zero_ before a step carries the sequence number the token embedding's node
    then takes: the backward must still find the embedding, in every step, not only the first."""
    _, out, _ = profiled
    _, att = attribute_file(out / "trace.json")
    per_step = [sum(1 for w in att.work if w.step == k and w.kernel == "aten::embedding_dense_backward"
                    and (names.EMBED, names.BACKWARD) in [p[:2] for p in w.parts])
                for k in range(len(att.steps))]
    assert len(per_step) == 2 and per_step == [2, 2]


def test_the_last_operator_with_a_sequence_number_made_its_node():
    def x(name, cat, ts, dur, tid=1, **args):
        return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur,
                "args": args}

    seq = {"Sequence number": 9, "Fwd thread id": 0}
    doc = {"traceEvents": [
        x("ProfilerStep#2", "user_annotation", 0, 1000),
        x("aten::zero_", "cpu_op", 5, 3, **seq),  # makes no node: carries the next one's number
        x(names.EMBED, "user_annotation", 10, 100),
        x("aten::embedding", "cpu_op", 20, 50, **seq),
        x("aten::index_select", "cpu_op", 25, 20, **seq),  # nested: the outer one stays
        x("autograd::engine::evaluate_function: EmbeddingBackward0", "cpu_op", 300, 100,
          **{"Sequence number": 9, "Fwd thread id": 1}),
        x("aten::embedding_dense_backward", "cpu_op", 310, 40),
    ]}
    att = attribute(doc)
    got = {w.kernel: (w.parts[0][:2] if w.parts else None) for w in att.work}
    assert got["aten::embedding_dense_backward"] == (names.EMBED, names.BACKWARD)
    assert got["aten::zero_"] is None


def test_backward_layers_follow_reverse_order(profiled):
    """Independent of sequence numbers: within a step, layer 1's backward work all runs before
    layer 0's, so the layer each backward operator got must agree with its time."""
    _, out, _ = profiled
    doc, att = attribute_file(out / "trace.json")
    events = doc["traceEvents"]
    for step in range(len(att.steps)):
        ts = {0: [], 1: []}
        for w in att.work:
            if w.step == step and w.parts and w.parts[0][1] == names.BACKWARD:
                layer, comp = names.split_name(w.parts[0][0])
                if layer is not None and w.method == "sequence":
                    ts[layer].append(float(events[w.index]["ts"]))
        assert ts[0] and ts[1]
        assert max(ts[1]) < min(ts[0])


def attributed_share(trace: Path) -> float:
    """The share of a trace's operators attributed, by count: on a busy machine one preempted
    operator of these microsecond steps can hold most of their time, so a time-weighted share
    says as much about the machine as about the attribution."""
    _, att = attribute_file(trace)
    return sum(w.attributed for w in att.work) / len(att.work)


def test_coverage_names_and_phases(profiled):
    attention, out, result = profiled
    assert result.unit == "operator"
    assert attributed_share(out / "trace.json") >= 0.95, result.by_method
    assert result.exact_coverage == pytest.approx(result.coverage)  # no predicted-share split
    measured = {(r.name, r.phase) for r in result.comparison.ops if r.measured_s > 0}
    assert all(names.is_operation_name(n) for n, _ in measured)
    phases = {p for _, p in measured}
    assert phases == {names.FORWARD, names.BACKWARD, names.OPTIMIZER_PHASE}
    attn = names.FUSED_ATTENTION if attention == "sdpa" else names.MATH_ATTENTION
    for comp in attn + (names.ATTN_QKV, names.MLP_FC, names.MLP_ACT, names.LN_1):
        for phase in (names.FORWARD, names.BACKWARD):
            assert (names.layer_name(1, comp), phase) in measured, (comp, phase)
    # Every predicted (name, phase) is measured, and the other way round: the join is complete.
    predicted = {(r.name, r.phase) for r in result.comparison.ops if not math.isnan(r.predicted_s)}
    assert predicted, "no predicted operation to join"
    assert predicted == measured, ("predicted, never measured:", sorted(predicted - measured),
                                   "measured, never predicted:", sorted(measured - predicted))
    assert result.overhead is not None and result.overhead["step_s_with"] > 0


def test_outputs_written(profiled):
    _, out, result = profiled
    for f in ("trace.json", "trace.gptperf.json", "ops.csv", "components.csv", "layers.csv",
              "profile.json", "roofline.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert list((out / "tensorboard").glob("*.pt.trace.json*"))
    rows = list(csv.DictReader((out / "components.csv").open()))
    assert {"name", "phase", "measured_s", "predicted_s", "measured_over_predicted",
            "pct_of_roofline", "achieved_flops"} <= set(rows[0])
    doc = json.loads((out / "profile.json").read_text())
    assert doc["coverage"] == pytest.approx(result.coverage)
    assert doc["environment"]["torch"] if "torch" in doc["environment"] else doc["environment"]
    assert not list(out.parent.glob(".out.*"))  # the atomic temporary folder is gone


def test_a_cpu_profile_counts_each_steps_page_faults(profiled):
    from gptperf.hostmem import minor_faults
    from gptperf.profiling.run import ProfileResult

    _, out, result = profiled
    if minor_faults() is None:
        pytest.skip("this platform does not count page faults")
    assert result.page_faults_per_step is not None and result.page_faults_per_step >= 0
    again = ProfileResult.from_dict(json.loads((out / "profile.json").read_text()))
    assert again.page_faults_per_step == result.page_faults_per_step


def test_a_profile_says_when_its_steps_page_fault():
    from gptperf.profiling.run import NOTED_FAULTS, fault_note

    assert fault_note(NOTED_FAULTS) is None and fault_note(0) is None
    import mmap

    note = fault_note(15000)
    assert note is not None and f"15000 page faults ({15000 * mmap.PAGESIZE / 2**20:.0f} MiB" in note


def test_augmented_trace_splits_prediction_by_measured_share(profiled):
    _, out, result = profiled
    doc = json.loads((out / "trace.gptperf.json").read_text())
    att = attribute(load_trace(out / "trace.json"))
    sums: dict[tuple[str, str, int], float] = {}
    for w in att.work:
        args = doc["traceEvents"][w.index].get("args", {})
        if w.parts:
            assert args["gptperf.op"] == w.parts[0][0] and args["gptperf.phase"] == w.parts[0][1]
            key = (w.parts[0][0], w.parts[0][1], w.step)
            sums[key] = sums.get(key, 0.0) + args["gptperf.predicted_us"] * 1e-6
    predicted = {(r.name, r.phase): r.predicted_s for r in result.comparison.ops}
    for (name, phase, _), total in sums.items():
        assert total == pytest.approx(predicted[(name, phase)], rel=1e-6)


def test_reanalyse_existing_trace(profiled, tmp_path):
    from gptperf.profiling import analyse_trace_file

    attention, out, result = profiled
    again = analyse_trace_file(out / "trace.json", _config(attention), "train", batch=B, seq=T,
                               hardware="cpu", out_dir=tmp_path / "again", plot=False)
    assert again.coverage == pytest.approx(result.coverage)
    assert (tmp_path / "again" / "ops.csv").is_file()


# ---------------------------------------------------------------------------------------------
# A synthetic GPU trace: kernel -> correlation -> launch -> op -> range; backward on its own thread.


def _gpu_trace() -> dict:
    def x(name, cat, ts, dur, tid=1, **args):
        return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur,
                "args": args}

    ev = [
        x("ProfilerStep#3", "user_annotation", 0, 1000),
        x("h.0.mlp.fc", "user_annotation", 10, 100),
        x("aten::addmm", "cpu_op", 20, 50, **{"Sequence number": 7, "Fwd thread id": 0}),
        x("cudaLaunchKernel", "cuda_runtime", 30, 5, correlation=11),
        x("optimizer", "user_annotation", 700, 200),
        x("Optimizer.step#AdamW.step", "user_annotation", 710, 150),
        x("cudaLaunchKernel", "cuda_runtime", 720, 5, correlation=13),
        # backward, on the autograd thread
        x("autograd::engine::evaluate_function: AddmmBackward0", "cpu_op", 300, 100, tid=2,
          **{"Sequence number": 7, "Fwd thread id": 1}),
        x("aten::mm", "cpu_op", 310, 40, tid=2),
        x("cudaLaunchKernel", "cuda_runtime", 320, 5, tid=2, correlation=12),
        x("cudaLaunchKernel", "cuda_runtime", 500, 5, tid=2, correlation=14),  # no op around it
        # kernels on the GPU
        {"ph": "X", "cat": "kernel", "name": "sm90_gemm_fwd", "pid": 0, "tid": 7, "ts": 40,
         "dur": 30, "args": {"correlation": 11, "est. achieved occupancy %": 50,
                             "blocks per SM": 2.0}},
        {"ph": "X", "cat": "kernel", "name": "sm90_gemm_bwd", "pid": 0, "tid": 7, "ts": 330,
         "dur": 60, "args": {"correlation": 12}},
        {"ph": "X", "cat": "kernel", "name": "multi_tensor_apply", "pid": 0, "tid": 7, "ts": 730,
         "dur": 10, "args": {"correlation": 13}},
        {"ph": "X", "cat": "kernel", "name": "mystery", "pid": 0, "tid": 7, "ts": 510,
         "dur": 100, "args": {"correlation": 14}},
    ]
    return {"traceEvents": ev}


def test_gpu_kernels_follow_correlation_sequence_and_optimizer():
    att = attribute(_gpu_trace())
    assert att.unit == "kernel"
    got = {w.kernel: (w.parts[0][:2] if w.parts else None, w.method) for w in att.work}
    assert got["sm90_gemm_fwd"] == (("h.0.mlp.fc", names.FORWARD), "range")
    assert got["sm90_gemm_bwd"] == (("h.0.mlp.fc", names.BACKWARD), "sequence")
    assert got["multi_tensor_apply"] == ((names.OPTIMIZER, names.OPTIMIZER_PHASE), "optimizer-range")
    assert got["mystery"] == (None, None)
    assert att.coverage == pytest.approx(100 / 200)
    assert att.occupancy()[("h.0.mlp.fc", names.FORWARD)] == (50, 2.0)
    ev = _gpu_trace()["traceEvents"]
    launcher = {w.kernel: None if w.launcher is None else ev[w.launcher]["name"] for w in att.work}
    assert launcher == {"sm90_gemm_fwd": "aten::addmm", "sm90_gemm_bwd": "aten::mm",
                        "multi_tensor_apply": "Optimizer.step#AdamW.step",
                        "mystery": None}  # launched outside every CPU event


def test_the_streams_gradient_sum_goes_to_its_layers_residual():
    """The autograd engine adds the two gradients meeting at the residual stream inside the
    evaluate_function of the LayerNorm backward that brings the second one, beside the node's own
    operator: that add is the layer's residual backward (where the model charges it). An add inside
    the node's operator, or beside another node (a matmul's), stays with its node."""
    def x(name, cat, ts, dur, tid=1, **args):
        return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur,
                "args": args}

    def kernel(name, ts, corr):
        return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": ts, "dur": 10,
                "args": {"correlation": corr}}

    node = {"Fwd thread id": 1}
    ev = [
        x("ProfilerStep#3", "user_annotation", 0, 1000),
        x("h.2.ln_1", "user_annotation", 10, 30),
        x("aten::native_layer_norm", "cpu_op", 12, 20, **{"Sequence number": 21, "Fwd thread id": 0}),
        x("h.2.mlp.fc", "user_annotation", 50, 30),
        x("aten::addmm", "cpu_op", 52, 20, **{"Sequence number": 22, "Fwd thread id": 0}),
        x("autograd::engine::evaluate_function: AddmmBackward0", "cpu_op", 300, 50, tid=2,
          **{"Sequence number": 22, **node}),
        x("aten::mm", "cpu_op", 305, 20, tid=2),
        x("cudaLaunchKernel", "cuda_runtime", 306, 2, tid=2, correlation=30),
        x("aten::add_", "cpu_op", 330, 10, tid=2),
        x("cudaLaunchKernel", "cuda_runtime", 331, 2, tid=2, correlation=31),
        x("autograd::engine::evaluate_function: NativeLayerNormBackward0", "cpu_op", 400, 100,
          tid=2, **{"Sequence number": 21, **node}),
        x("NativeLayerNormBackward0", "cpu_op", 405, 50, tid=2, **{"Sequence number": 21, **node}),
        x("aten::native_layer_norm_backward", "cpu_op", 410, 20, tid=2),
        x("cudaLaunchKernel", "cuda_runtime", 411, 2, tid=2, correlation=32),
        x("aten::add_", "cpu_op", 435, 10, tid=2),
        x("cudaLaunchKernel", "cuda_runtime", 436, 2, tid=2, correlation=33),
        x("aten::add_", "cpu_op", 470, 10, tid=2),
        x("cudaLaunchKernel", "cuda_runtime", 471, 2, tid=2, correlation=34),
        kernel("gemm_dgrad", 310, 30), kernel("add_beside_mm", 335, 31),
        kernel("layer_norm_bwd", 415, 32), kernel("add_inside_ln", 440, 33),
        kernel("stream_sum", 480, 34),
    ]
    att = attribute({"traceEvents": ev})
    got = {w.kernel: (w.parts[0][:2] if w.parts else None, w.method) for w in att.work}
    bwd = names.BACKWARD
    assert got["stream_sum"] == (("h.2.residual", bwd), "stream-join")
    assert got["layer_norm_bwd"] == (("h.2.ln_1", bwd), "sequence")
    assert got["add_inside_ln"] == (("h.2.ln_1", bwd), "sequence")
    assert got["gemm_dgrad"] == got["add_beside_mm"] == (("h.2.mlp.fc", bwd), "sequence")
    assert att.exact_coverage == pytest.approx(1.0)


def _compiled_trace() -> dict:
    def x(name, cat, ts, dur, tid=1, **args):
        return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur,
                "args": args}

    return {"traceEvents": [
        x("ProfilerStep#5", "user_annotation", 0, 1000),
        x("Torch-Compiled Region: 0/0", "user_annotation", 10, 200),
        x("CompiledFunction", "cpu_op", 20, 150, **{"Sequence number": 5, "Fwd thread id": 0}),
        x("autograd::engine::evaluate_function: CompiledFunctionBackward", "cpu_op", 300, 300,
          tid=2, **{"Sequence number": 5, "Fwd thread id": 1}),
        x("triton_poi_fused_add_gelu_0", "cpu_op", 310, 20, tid=2),
        x("cuLaunchKernel", "cuda_driver", 315, 5, tid=2, correlation=21),
        {"ph": "X", "cat": "kernel", "name": "triton_poi_fused_add_gelu_0", "pid": 0, "tid": 7,
         "ts": 400, "dur": 80, "args": {"correlation": 21}},
    ]}


def test_compiled_kernels_by_provenance_and_share():
    from gptperf.profiling.trace import Provenance

    doc = _compiled_trace()
    prov = Provenance(kernels={(True, "triton_poi_fused_add_gelu_0"): [["h.0.mlp.act", "h.0.residual"]]})
    shares = {("h.0.mlp.act", names.BACKWARD): 3.0, ("h.0.residual", names.BACKWARD): 1.0,
              ("h.0.mlp.act", names.FORWARD): 1.0}
    att = attribute(doc, shares=shares, provenance=prov)
    (w,) = att.work
    assert att.compiled and w.method == "inductor-provenance"
    assert sorted(w.parts) == [("h.0.mlp.act", "bwd", 0.75), ("h.0.residual", "bwd", 0.25)]
    # No provenance: the kernel is split over the backward phase's predicted operations.
    (w2,) = attribute(doc, shares=shares, provenance=Provenance()).work
    assert w2.method == "predicted-share"
    assert sorted(w2.parts) == [("h.0.mlp.act", "bwd", 0.75), ("h.0.residual", "bwd", 0.25)]
    att3 = attribute(doc, shares=shares, provenance=Provenance())
    assert att3.coverage == 1.0 and att3.exact_coverage == 0.0


# ---------------------------------------------------------------------------------------------
# Bad trace files and bad arguments


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b'{"traceEvents": [{"ph": "X", "name": "ProfilerStep#1", "ts": 0, "du', "not valid JSON"),
    (b'{"hello": "world"}', "traceEvents"),
    (b'{"traceEvents": [{"ph": "X", "name": "aten::mm", "ts": 0, "dur": 1}]}', "ProfilerStep"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
    (b"\xff\xfe not json at all", "not valid JSON"),
    (b'{"traceEvents": [{"ph": "X", "name": "ProfilerStep#1", "ts": "abc", "dur": 5}]}',
     "event 0 ('ProfilerStep#1') has ts 'abc' and dur 5"),
    (b'{"traceEvents": [{"ph": "X", "name": "ProfilerStep#1", "ts": 0, "dur": -5}]}', "dur -5"),
    (b'{"traceEvents": [{"ph": "X", "name": "ProfilerStep#1", "ts": 0}]}', "dur None"),
    (b'{"traceEvents": [{"ph": "X", "name": "ProfilerStep#1", "ts": 0, "dur": true}]}', "dur True"),
    (b'{"traceEvents": [{"ph": "X", "name": "ProfilerStep#1", "ts": 0, "dur": 5}, null]}',
     "event 1 is NoneType, not an object"),
])
def test_bad_trace_files_give_one_line_errors(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_trace(path)
    msg = str(err.value)
    assert "bad.json" in msg and words in msg and "\n" not in msg


def test_a_trace_with_nothing_inside_its_steps_is_refused():
    doc = {"traceEvents": [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": 0, "dur": 50},
                           {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 100, "dur": 5}]}
    with pytest.raises(UserError, match=r"has no operator inside its ProfilerStep#N ranges"):
        attribute(doc, path="t.json")


def test_gzip_trace_loads(tmp_path):
    path = tmp_path / "t.json.gz"
    path.write_bytes(gzip.compress(json.dumps(_gpu_trace()).encode()))
    assert load_trace(path)["traceEvents"]
    with pytest.raises(UserError, match="does not exist"):
        load_trace(tmp_path / "missing.json")


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux's /proc")
def test_a_trace_the_system_will_not_read_is_one_line_naming_it():
    with pytest.raises(UserError, match=r"trace file '/proc/self/mem' cannot be read \("):
        load_trace("/proc/self/mem")  # a regular file whose read fails (EIO at offset 0)


@pytest.mark.parametrize("argv", [
    ["--active", "0"],
    ["--workload", "bogus"],
    ["--batch", "-1"],
    ["--trace", "EMPTY"],
    ["--preset", "nope"],
])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, argv):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    proc = subprocess.run([sys.executable, "-m", "gptperf", "profile", *argv, "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name, char", [('p"q', '"'), ("p\\q", "\\")])
def test_a_folder_torch_would_write_into_its_trace_unescaped_is_refused_before_the_run(
        tmp_path, monkeypatch, name, char):
    """torch.profiler writes the trace's own path into it unescaped: a '"' or a '\\' would leave
    the trace invalid JSON after the steps ran, so recording there is refused first (the library
    call builds no step); a re-analysis writes its own JSON and may go there."""
    import gptperf.steps.build
    from gptperf.profiling import profile_workload
    from gptperf.profiling.recorded import check_trace_folder

    monkeypatch.setattr(gptperf.steps.build, "build_step", lambda *a, **k: pytest.fail("built a step"))
    with pytest.raises(UserError, match=rf"--out .*: its path holds {re.escape(repr(char))}, which "
                                        "torch.profiler writes into the trace unescaped"):
        check_trace_folder(tmp_path / name, "--out")
    with pytest.raises(UserError, match="torch.profiler writes into the trace unescaped"):
        profile_workload(_config("sdpa"), "train", batch=B, seq=T, out_dir=tmp_path / name, overhead=False)
    assert not (tmp_path / name).exists()
    check_trace_folder(tmp_path / "p q'é")  # spaces, quotes and letters torch escapes well enough


def test_an_earlier_profile_is_replaced_but_not_a_file_put_beside_it(profiled, tmp_path):
    """A profile replaces an earlier one whole: its own files (every one a recording and its
    analysis write) go, but a file a user put beside them stops it; a re-analysis in place
    keeps the folder's other files, so it may go on."""
    from gptperf.profiling import analyse_trace_file
    from gptperf.profiling.recorded import PROFILE_FILES, check_profile_dir, trace_in_folder
    from gptperf.profiling.run import ANALYSIS_FILES

    _, out, _ = profiled
    assert {e.name for e in out.iterdir()} == set(PROFILE_FILES) and set(ANALYSIS_FILES) <= set(PROFILE_FILES)
    folder = tmp_path / "p"
    shutil.copytree(out, folder)
    assert check_profile_dir(folder) == folder
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds 'notes.txt', which no gptperf profile wrote"):
        check_profile_dir(folder)
    assert trace_in_folder(folder / "trace.json", folder) and not trace_in_folder(out / "trace.json", folder)
    assert check_profile_dir(folder, keeps_others=True) == folder
    analyse_trace_file(folder / "trace.json", out_dir=folder, plot=False)
    assert (folder / "notes.txt").read_text() == "mine"


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    from gptperf.profiling import profile_workload

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a gptperf profile folder"):
        profile_workload(_config("sdpa"), "train", batch=B, seq=T, out_dir=tmp_path, overhead=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_forward_workload_has_forward_only(tmp_path):
    from gptperf.profiling import profile_workload

    r = profile_workload(_config("sdpa"), "forward", batch=B, seq=T, out_dir=tmp_path / "f",
                         wait=0, warmup=1, active=2, overhead=False, plot=False, hardware="cpu")
    assert attributed_share(Path(r.paths["trace"])) >= 0.95, (r.by_method, r.unattributed_top)
    assert {row.phase for row in r.comparison.ops if row.measured_s > 0} == {names.FORWARD}
    assert Path(r.paths["augmented_trace"]).is_file()


def test_the_step_set_against_the_expected_time_is_timed_as_bench_times_it():
    """The profile's step timed without the profiler is the one its expected time is set
    against: warmed up and repeated as `bench` does a step of its kind, so the few slow steps
    after the build (a CPU decode: up to 2.3x its steady time) are not its median."""
    import time

    from gptperf.measure.bench import default_counts
    from gptperf.profiling.run import _measure_overhead

    class Ramp:  # a step whose first calls are slow, as a freshly built one's are
        calls = 0

        def step(self) -> None:
            self.calls += 1
            time.sleep(0.02 if self.calls <= 4 else 0.002)

    over = _measure_overhead(Ramp(), "cpu", "decode", 5)
    warmup, repeats = default_counts("decode")
    assert over["without"]["warmup"] == warmup and over["without"]["repeats"] == repeats
    assert over["step_s_without"] < 0.01  # past the ramp: 2 ms steps, not the 20 ms ones
    train = _measure_overhead(Ramp(), "cpu", "train", 5)
    assert (train["without"]["warmup"], train["without"]["repeats"]) == default_counts("train")
