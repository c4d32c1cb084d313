"""Inference study: sweep logic, static cache = dynamic cache = recompute, bad arguments, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gptperf.cli import main
from gptperf.errors import UserError
from gptperf.generate import generate_batch
from gptperf.inference.sweep import (
    Point,
    choose_batches,
    choose_contexts,
    knee_batch,
    paths_note,
    plan_labels,
    predict_inference,
    ridge_batch,
    run_inference_study,
    sweep_batches,
)
from gptperf.model import GPT, KVCache, preset
from gptperf.perfmodel import COMPUTE, MEMORY, adhoc_hardware, matmul_parameters
from gptperf.steps.fast_decode import FastDecoder, StaticKVCache, build_model, sample_on_device

SMALL = preset("tiny", n_layer=2, n_head=4, n_embd=64, block_size=64)


# --- choosing contexts and batches ---------------------------------------------------------------


def test_default_contexts_are_powers_of_two_up_to_block_size() -> None:
    assert choose_contexts(preset("tiny")) == [16, 32, 64, 128, 256]
    assert choose_contexts(SMALL.replace(block_size=100)) == [16, 32, 64, 100]
    assert choose_contexts(SMALL.replace(block_size=8)) == [8]


def test_given_contexts_are_sorted_deduplicated_and_checked() -> None:
    assert choose_contexts(SMALL, [32, 8, 32]) == [8, 32]
    with pytest.raises(UserError, match="context 65 exceeds block_size=64"):
        choose_contexts(SMALL, [16, 65])
    with pytest.raises(UserError, match="positive"):
        choose_contexts(SMALL, [0])


def test_batches() -> None:
    assert choose_batches(None, "cpu") == [1, 2, 4, 8, 16, 32, 64]
    assert choose_batches(None, "cuda")[-1] == 512
    assert choose_batches([4, 1, 4]) == [1, 4]
    with pytest.raises(UserError, match="positive"):
        choose_batches([0])
    with pytest.raises(UserError):
        choose_batches([])


# --- the sweep's logic on synthetic data ---------------------------------------------------------


def _point(b: int, t: float) -> Point:
    return Point("decode", b, 16, t, t, 1.0, 1.0, b)


def test_the_paths_are_named_when_the_cache_and_recompute_ran_under_other_plans() -> None:
    """The speedup of a fast cached step over an eager recompute step is of the two paths: a note
    names both plans; one plan (or a point without one) says nothing."""
    from dataclasses import replace

    from gptperf.plan import ExecutionPlan

    eager, fast = ExecutionPlan("eager"), ExecutionPlan("cuda_graph", static_cache=True, fused_decode=True)
    cache = [replace(_point(1, 1e-4), plan=fast), replace(_point(1, 2e-4), plan=fast)]
    recompute = [replace(_point(1, 1e-3), kind="decode_nocache", plan=eager)] * 2
    assert plan_labels(cache) == fast.label and plan_labels(cache + recompute) == f"{fast.label}; {eager.label}"
    assert plan_labels([_point(1, 1e-4)]) == "—"
    note = paths_note(cache, recompute)
    assert note is not None and f"as {fast.label}; recomputing, as {eager.label}:" in note
    assert paths_note(recompute, recompute) is None and paths_note(cache, []) is None


def test_batch_sweep_stops_at_out_of_memory() -> None:
    seen = []

    def measure(b: int) -> Point:
        seen.append(b)
        if b >= 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return _point(b, 1e-3)

    points, stopped = sweep_batches([1, 2, 4, 8, 16], measure)
    assert [p.batch for p in points] == [1, 2, 4]
    assert seen == [1, 2, 4, 8]  # nothing after the first OOM
    assert stopped is not None and "batch 8" in stopped and "out of memory" in stopped


def test_batch_sweep_reraises_other_errors() -> None:
    def measure(b: int) -> Point:
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        sweep_batches([1], measure)


def test_knee_of_a_roofline_is_where_flat_meets_linear() -> None:
    batches = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    a, c = 1.0, 1 / 48  # flat floor a, compute line c·B: they meet at B = 48
    assert knee_batch(batches, [max(a, c * b) for b in batches]) == pytest.approx(48)
    noisy = [max(a, c * b) * (1 + 0.03 * (-1) ** i) for i, b in enumerate(batches)]
    assert knee_batch(batches, noisy) == pytest.approx(48, rel=0.1)


def test_knee_absent_when_flat_and_at_start_when_linear() -> None:
    batches = [1, 2, 4, 8]
    assert knee_batch(batches, [1.0, 1.02, 1.05, 1.1]) is None
    assert knee_batch(batches, [float(b) for b in batches]) == pytest.approx(1)


def test_ridge_batch_is_where_the_weight_matmuls_turn_compute_bound() -> None:
    hw = adhoc_hardware(100, 1000)  # ridge 100 FLOP/byte
    cfg = preset("gpt2")
    b = ridge_batch(cfg, 128, "bf16", hw)
    assert b is not None and 50 < b < 400
    name = "h.0.mlp.fc"
    assert predict_inference(cfg, "decode", b, 128, "bf16", hw).op(name).bound == COMPUTE
    assert predict_inference(cfg, "decode", b - 1, 128, "bf16", hw).op(name).bound == MEMORY


def test_inference_prediction_counts_weights_in_the_compute_dtype() -> None:
    hw = adhoc_hardware(100, 1000)
    cfg = preset("gpt2")
    bf16 = predict_inference(cfg, "decode", 1, 16, "bf16", hw)
    fp32 = predict_inference(cfg, "decode", 1, 16, "fp32", hw)
    weights = 2 * matmul_parameters(cfg)  # read once each; the position table only a row
    assert weights <= bf16.bytes < 1.05 * weights  # bf16 weights, as FastDecoder holds them
    assert fp32.bytes == pytest.approx(2 * bf16.bytes, rel=0.01)
    assert bf16.flops == fp32.flops


# --- the static cache against the dynamic cache and recompute ------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_static_cache_logits_equal_dynamic_cache_and_recompute(attention: str) -> None:
    cfg = SMALL.replace(attention=attention)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        full, _ = model(x)
        static = StaticKVCache(cfg, 2, 32)
        dynamic = KVCache(cfg, 2, 32)
        # prefill 12 tokens, then one at a time
        s_out = [model(x[:, :12], kv_cache=static)[0]]
        d_out = [model(x[:, :12], kv_cache=dynamic)[0]]
        for t in range(12, 20):
            s_out.append(model(x[:, t : t + 1], kv_cache=static)[0])
            d_out.append(model(x[:, t : t + 1], kv_cache=dynamic)[0])
    s_all, d_all = torch.cat(s_out, 1), torch.cat(d_out, 1)
    torch.testing.assert_close(s_all, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d_all, full, atol=1e-5, rtol=1e-5)
    assert static.length == dynamic.length == 20
    with pytest.raises(UserError, match="static KV cache full"):
        with torch.no_grad():
            model(x[:, :13], kv_cache=static)


@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_fast_decoder_greedy_tokens_equal_eager_paths(attention: str) -> None:
    cfg = SMALL.replace(attention=attention)
    torch.manual_seed(1)
    model = GPT(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (2, 5))
    fast = FastDecoder(model, 2, 40).generate(prompt, 30)
    cached = generate_batch(model, prompt, 30, temperature=0)[:, 5:]
    recomputed = generate_batch(model, prompt, 30, temperature=0, use_kv_cache=False)[:, 5:]
    assert torch.equal(fast, cached)
    assert torch.equal(fast, recomputed)


def test_fast_decoder_can_fill_every_position_and_be_reused() -> None:
    torch.manual_seed(2)
    model = GPT(SMALL).eval()
    dec = FastDecoder(model, 1, 16)
    prompt = torch.randint(0, SMALL.vocab_size, (1, 4))
    first = dec.generate(prompt, 13)  # the last step writes position 15, the cache's last
    again = dec.generate(prompt, 13)
    assert first.shape == (1, 13) and torch.equal(first, again)
    ref = generate_batch(model, prompt, 13, temperature=0)[:, 4:]
    assert torch.equal(first, ref)


def test_sampling_on_device() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0, -2.0], [3.0, 0.0, 0.0, 0.0]])
    assert sample_on_device(logits, 0.0, None).tolist() == [1, 0]
    assert sample_on_device(logits, 1.0, 1).tolist() == [1, 0]  # top-1 is greedy
    torch.manual_seed(0)
    draws = torch.stack([sample_on_device(logits[:1], 1.0, 2) for _ in range(400)]).flatten()
    assert set(draws.tolist()) <= {1, 2}  # only the top two
    frac = (draws == 2).float().mean().item()  # p = e^1 / (e^5 + e^1) ≈ 0.018
    assert frac < 0.08


def test_fast_decoder_bad_arguments() -> None:
    model = GPT(SMALL).eval()
    with pytest.raises(UserError, match="batch"):
        FastDecoder(model, 0, 16)
    with pytest.raises(UserError, match="exceeds block_size"):
        FastDecoder(model, 1, 65)
    with pytest.raises(UserError, match="CUDA graphs"):
        FastDecoder(model, 1, 16, cuda_graph=True)
    dec = FastDecoder(model, 1, 16)
    with pytest.raises(UserError, match="exceed the cache"):
        dec.generate(torch.zeros(1, 4, dtype=torch.long), 14)
    with pytest.raises(UserError, match="prompt must be"):
        dec.generate(torch.zeros(2, 4, dtype=torch.long), 2)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(UserError, match="steps a CUDA graph replays"):
            FastDecoder(model, 1, 16, graph_steps=bad)


def test_build_model_in_place_dtype() -> None:
    model = build_model(SMALL, "cpu", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored
    assert not model.training


# --- end to end ----------------------------------------------------------------------------------

TINIER = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32"]


def test_study_runs_and_draws(tmp_path) -> None:
    from gptperf.output import to_json
    from gptperf.plotting.inference import plot_all

    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    messages: list[str] = []
    r = run_inference_study(cfg, "cpu", "fp32", contexts=[8, 32], batches=[1, 2, 4],
                            progress=messages.append, hardware="cpu")
    assert [p.seq for p in r.cache] == [8, 32] and [p.seq for p in r.recompute] == [8, 32]
    assert [p.batch for p in r.batches] == [1, 2, 4] and r.batch_stopped is None
    assert all(p.time_s and p.time_s > 0 for p in r.cache + r.recompute + r.prefill + r.batches)
    assert r.batch_context == 32 and messages
    assert not [n for n in r.notes if "recomputing, as" in n]  # both eager: one path
    # on the nominal CPU this tiny step is launch-bound: where the bound has the cache lose, it
    # says why, and only there
    slower = [c.seq for c, q in zip(r.cache, r.recompute, strict=True) if c.predicted_s > q.predicted_s]
    said = [n for n in r.notes if "KV-cache step slower than recomputing" in n]
    assert len(said) == (1 if slower else 0)
    if slower:
        assert f"context {', '.join(map(str, slower))}:" in said[0] and "launch latency" in said[0]
    doc = json.loads(to_json(r.to_dict()))
    assert doc["environment"]["device_type"] == "cpu"
    assert doc["batch_sweep"]["ridge_batch_predicted"] == r.ridge_batch_predicted
    assert len(doc["prefill_decode_split"]) == 2
    plots = plot_all(r, tmp_path / "pics")
    assert set(plots) == {"tokens_per_s_vs_context", "decode_roofline_by_batch", "prefill_decode_split"}
    for png in plots.values():
        assert (tmp_path / "pics" / png.split("/")[-1]).stat().st_size > 1000
        assert (tmp_path / "pics" / png.split("/")[-1].replace(".png", ".svg")).exists()
    assert not list((tmp_path / "pics").glob(".*tmp"))  # atomic: no temporary files left


def test_failing_fast_path_falls_back_to_eager_with_a_note(monkeypatch) -> None:
    def fail(self: FastDecoder, steps: int = 3) -> None:
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(FastDecoder, "warmup", fail)
    cfg = preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=32)
    r = run_inference_study(cfg, "cpu", "fp32", contexts=[8], batches=[1, 2], fast=True, hardware="cpu")
    assert not r.fast and {p.path for p in r.cache + r.batches} == {"eager"}
    assert any("simulated compile failure" in n for n in r.notes)


def test_cli_json(capsys) -> None:
    code = main(["inference", *TINIER, "--device", "cpu", "--contexts", "8,16", "--batches", "1,2",
                 "--hardware", "cpu", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "gptperf.inference/1"
    speedups = doc["cache_vs_recompute"]["speedup"]
    assert [s["context"] for s in speedups] == [8, 16]
    assert all(s["predicted"] > 0 and math.isfinite(s["predicted"]) for s in speedups)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--contexts", "64"], "context 64 exceeds block_size=32"),
        (["--batches", "0"], "batches must be positive"),
        (["--dtype", "fp8"], "unknown dtype"),
    ],
)
def test_cli_bad_arguments_are_one_line_exit_2(capsys, extra: list[str], message: str) -> None:
    assert main(["inference", *TINIER, "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_unparsable_list_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["inference", "--batches", "one,two"])
    assert exc.value.code == 2


# --- GPU -----------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_graph_decoder_matches_eager_on_gpu() -> None:
    cfg = preset("gpt2", n_layer=2, block_size=128)
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build_model(cfg, "cuda", torch.float32)
    prompt = torch.randint(0, cfg.vocab_size, (1, 8), device="cuda")
    eager = generate_batch(model, prompt, 24, temperature=0)[:, 8:].cpu()
    dec = FastDecoder(model, 1, 64)  # compiled + CUDA graph
    assert torch.equal(dec.generate(prompt, 24), eager)
    dec.prefill(prompt)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation in a step raises
    try:
        for _ in range(8):
            dec.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batch", [1, 2])  # the fused kernels, the compiled model
def test_graphs_of_several_steps_give_the_single_steps_tokens(batch: int) -> None:
    """`run` replays graphs of `graph_steps` steps, then single steps: the greedy tokens of one
    graph a step, with no host synchronisation in the run."""
    cfg = preset("gpt2", n_layer=2, block_size=128)
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build_model(cfg, "cuda", torch.float32)
    prompt = torch.randint(0, cfg.vocab_size, (batch, 8), device="cuda")
    single = FastDecoder(model, batch, 64, graph_steps=1)
    assert single.fused == (batch == 1)
    want = single.generate(prompt, 24)
    del single
    dec = FastDecoder(model, batch, 64, graph_steps=5)
    assert torch.equal(dec.generate(prompt, 24), want)  # four graphs of 5, then 3 steps
    dec.prefill(prompt)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        dec.run(12)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(dec.tokens[:, 8:21].cpu(), want[:, :13])
