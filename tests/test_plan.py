"""The ExecutionPlan (validation, JSON round trip, label, the documented defaults) and the one
hardware resolver (spec, then measured ceilings covering the dtype, datasheet, cpu, error)."""

from __future__ import annotations

import pytest

from gptperf.errors import UserError
from gptperf.perfmodel import Hardware, adhoc_hardware, resolve_hardware, save_measured_hardware
from gptperf.plan import ExecutionPlan

FAST_GPU = ExecutionPlan("cuda_graph", "sdpa", static_cache=True, one_row_kernel=True, fused_decode=True)


def test_round_trip_and_label() -> None:
    for plan in (ExecutionPlan(), FAST_GPU, ExecutionPlan("compiled", "math", fused_optimizer=True)):
        d = plan.to_dict()
        assert ExecutionPlan.from_dict(d) == plan and d["label"] == plan.label
    assert FAST_GPU.label == "fused decode kernels, CUDA graph, static KV cache"
    assert FAST_GPU.replace(fused_decode=False).label == "compiled + CUDA graph, sdpa, static KV cache, one-row gemv"
    assert ExecutionPlan("compiled", "math", fused_optimizer=True).label == "compiled, math, fused AdamW"
    assert ExecutionPlan.eager("math").label == "eager, math"
    assert FAST_GPU.compiled and FAST_GPU.cuda_graph and FAST_GPU.fast
    assert not ExecutionPlan().compiled and not ExecutionPlan().fast


@pytest.mark.parametrize(("data", "needle"), [
    ({"mode": "jit"}, "'jit'"),
    ({"attention": "flash"}, "'flash'"),
    ({"static_cache": "yes"}, "static_cache"),
    ({"fused_decode": "yes"}, "fused_decode"),
    ({"fused_loss": "yes"}, "'yes'"),
    ({"master_weights": 1}, "master_weights"),
    ({"mode": "eager", "one_row_kernel": True}, "compiled"),
    ({"mode": "eager", "turbo": True}, "turbo"),
])
def test_bad_plans_are_one_line_user_errors(data: dict, needle: str) -> None:
    with pytest.raises(UserError) as err:
        ExecutionPlan.from_dict(data)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("plan", "kind", "needle"), [
    (ExecutionPlan("cuda_graph", static_cache=True), "train", "CUDA graph"),
    (ExecutionPlan(static_cache=True), "forward", "static_cache"),
    (ExecutionPlan("cuda_graph"), "decode", "static"),
    (ExecutionPlan(static_cache=True), "decode_nocache", "no KV cache"),
    (ExecutionPlan(fused_optimizer=True), "decode", "optimizer"),
    (ExecutionPlan(fused_decode=True), "train", "fused_decode"),
    (ExecutionPlan("compiled", fused_decode=True), "decode", "static_cache=False"),
    (ExecutionPlan("cuda_graph", static_cache=True, fused_decode=True), "prefill", "not a prefill"),
    (ExecutionPlan(), "sample", "unknown workload"),
    (ExecutionPlan(fused_loss=True), "train", "compiled train steps"),
    (ExecutionPlan("compiled", fused_loss=True), "forward", "not a compiled forward"),
])
def test_plans_a_step_cannot_run(plan: ExecutionPlan, kind: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        plan.check(kind)


def test_defaults() -> None:
    d = ExecutionPlan.default
    assert d("train", "cuda") == ExecutionPlan(fused_optimizer=True)
    assert d("train", "cuda", compile=True, attention="math") == ExecutionPlan(
        "compiled", "math", fused_optimizer=True, fused_loss=True)
    assert d("train", "cpu", compile=True) == ExecutionPlan("compiled")  # Triton's loss: CUDA only
    assert d("train", "cuda", compile=True, ddp=True) == ExecutionPlan(  # DDP keeps the model's loss
        "compiled", fused_optimizer=True)
    assert d("train", "cpu") == ExecutionPlan() and d("forward", "cpu", compile=True).mode == "compiled"
    # inference: fast on CUDA is the CUDA graph with the static cache (and gemv for decode)
    assert d("decode", "cuda", fast=True) == FAST_GPU and d("decode", "cuda", fast=None) == FAST_GPU
    assert d("prefill", "cuda", fast=True) == ExecutionPlan("cuda_graph", static_cache=True)
    assert d("decode_nocache", "cuda", fast=True) == ExecutionPlan("cuda_graph")
    assert d("decode", "cpu", fast=True) == ExecutionPlan("compiled", static_cache=True)
    assert d("decode", "cpu", fast=None) == d("decode", "cuda") == ExecutionPlan()
    assert d("prefill", "cpu", compile=True) == ExecutionPlan("compiled")
    for kind in ("train", "forward", "prefill", "decode", "decode_nocache"):
        for device in ("cpu", "cuda"):
            for fast in (False, True):
                d(kind, device, fast=fast).check(kind)  # every default can run its kind
                d(kind, device, fast=fast, compile=True).check(kind)


# --- the one hardware resolver -------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))


def test_resolver_spec_wins(cache, tmp_path) -> None:
    adhoc = adhoc_hardware(10, 100)
    assert resolve_hardware(adhoc, "NVIDIA H100 80GB HBM3", "cuda") is adhoc
    assert resolve_hardware("a100-40gb", "NVIDIA H100 80GB HBM3", "cuda").name == "a100-40gb"
    toml = tmp_path / "mine.toml"
    toml.write_text('name = "mine"\nbandwidth_gbs = 100\nmemory_gib = 8\n[peak_tflops]\nfp32 = 1\n')
    assert resolve_hardware(str(toml), "x", "cpu").name == "mine"
    with pytest.raises(UserError, match="no-such"):
        resolve_hardware("no-such", "x", "cpu")
    with pytest.raises(UserError, match="no measured ceilings"):
        resolve_hardware("measured", "NVIDIA H100 80GB HBM3", "cuda")


def test_resolver_default_measured_then_datasheet(cache) -> None:
    gpu = "NVIDIA H100 80GB HBM3"
    sheet = resolve_hardware(None, gpu, "cuda")
    assert sheet.label == "datasheet: h100-sxm"
    sheet.peak_flops["bf16"] = 1.0  # a copy: the registry stays as it was
    assert resolve_hardware(None, gpu, "cuda").peak_flops["bf16"] > 1.0
    save_measured_hardware(Hardware("m", {"fp32": 5e13}, 2e12, 2**36, source="measured"), gpu)
    assert resolve_hardware(None, gpu, "cuda").source == "measured"
    assert resolve_hardware(None, gpu, "cuda", dtype="fp32").source == "measured"
    # measured ceilings without a bf16 peak do not cover a bf16 prediction: the datasheet does
    assert resolve_hardware(None, gpu, "cuda", dtype="bf16").label == "datasheet: h100-sxm"


def test_resolver_default_on_cpu_and_unknown_gpu(cache) -> None:
    assert resolve_hardware(None, "AMD EPYC 9654", "cpu").label == "nominal: cpu"
    assert resolve_hardware(None, None, "cpu").label == "nominal: cpu"
    for name in ("Tesla T4", None):
        with pytest.raises(UserError) as err:
            resolve_hardware(None, name, "cuda")
        assert "gptperf ceilings" in str(err.value) and "--hardware" in str(err.value)
        assert "\n" not in str(err.value)


def test_update_in_kernel_needs_the_fused_optimizer_and_no_grad_scaler() -> None:
    fused = ExecutionPlan(fused_optimizer=True)
    assert fused.update_in_kernel("bf16") and fused.update_in_kernel("fp32")
    assert not fused.update_in_kernel("fp16")  # GradScaler unscales and skips itself
    assert not ExecutionPlan().update_in_kernel("bf16")
