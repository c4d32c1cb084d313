"""The fused decode step inside FastDecoder (its kernels' references on a CPU), and the predictions
made for the plan that names it."""

from __future__ import annotations

import pytest
import torch

from gptperf.model import GPTConfig, preset
from gptperf.perfmodel import Workload, get_hardware, predict
from gptperf.perfmodel.kernel_calls import kernel_calls
from gptperf.plan import ExecutionPlan
from gptperf.steps.fast_decode import FastDecoder, build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CFG = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32, name="small")


def _model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    model = build_model(CFG, "cpu", dtype, seed=4)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)  # at the 0.02 init greedy decoding repeats one token: a weak check
    return model


def test_fused_greedy_tokens_and_cache_equal_the_model_step() -> None:
    model = _model()
    prompt = torch.tensor([[3, 14, 15, 92, 65]])
    fused = FastDecoder(model, 1, 24, compile=False, fused=True)
    plain = FastDecoder(model, 1, 24, compile=False, fused=False)
    out_fused = fused.generate(prompt, 12)
    out_plain = plain.generate(prompt, 12)
    assert out_fused.tolist() == out_plain.tolist()
    assert len(set(out_plain[0].tolist())) > 3  # the continuation varies
    assert int(fused.cache.pos) == int(plain.cache.pos) == 5 + 11
    for i in range(CFG.n_layer):
        filled = slice(0, 16)
        torch.testing.assert_close(fused.cache.k[i][:, :, filled], plain.cache.k[i][:, :, filled])
        torch.testing.assert_close(fused.cache.v[i][:, :, filled], plain.cache.v[i][:, :, filled])
    assert fused.plan.fused_decode and not plain.plan.fused_decode
    assert fused.plan.label == "fused decode kernels, static KV cache"


def test_fused_sampling_draws_valid_tokens_and_advances() -> None:
    torch.manual_seed(0)
    dec = FastDecoder(_model(), 1, 24, compile=False, fused=True, temperature=0.9, top_k=5)
    out = dec.generate(torch.tensor([[1, 2, 3]]), 8)
    assert out.shape == (1, 8) and 0 <= int(out.min()) and int(out.max()) < CFG.vocab_size
    assert int(dec.cache.pos) == 3 + 7
    assert dec.tokens[0, 3:11].tolist() == out[0].tolist()


def test_fused_decoder_is_batch_one() -> None:
    from gptperf.errors import UserError

    with pytest.raises(UserError, match="batch 1"):
        FastDecoder(_model(), 2, 24, compile=False, fused=True)
    assert not FastDecoder(_model(), 2, 24, compile=False).fused  # the default on a CPU: off


FUSED = ExecutionPlan("cuda_graph", static_cache=True, one_row_kernel=True, fused_decode=True)


def test_roofline_counts_the_fused_kernels() -> None:
    gpt2 = preset("gpt2")
    decode = Workload("decode", 1, 1024, "bf16")
    hw = get_hardware("h200")
    fused = predict(gpt2, decode, hw, plan=FUSED)
    compiled = predict(gpt2, decode, hw, plan=FUSED.replace(fused_decode=False))
    assert sum(op.count for op in fused.ops) == 1 + 5 * 12 + 1
    assert sum(op.count for op in compiled.ops) > 10 * 12
    assert fused.bytes == pytest.approx(compiled.bytes, rel=0.02)  # the same weights stream
    batch2 = predict(gpt2, Workload("decode", 2, 1024, "bf16"), hw, plan=FUSED)
    assert sum(op.count for op in batch2.ops) > 10 * 12  # batch 2 runs the compiled model


def test_calibrated_decomposition_of_the_fused_step() -> None:
    gpt2 = preset("gpt2")
    calls = kernel_calls(gpt2, Workload("decode", 1, 1024, "bf16"), FUSED)
    gemv = [c for c in calls if c.family == "gemv"]
    assert sum(c.count for c in calls) == 1 + 5 * 12 + 1
    assert len(gemv) == 4 * 12 + 1 and sum(c.family == "attention" for c in calls) == 12
    C, V = gpt2.n_embd, gpt2.vocab_size
    assert sorted({c.point[0] for c in gemv}) == [2 * C * C, 2 * 3 * C * C, 2 * 4 * C * C, 2 * C * V]


def test_fused_step_runs_under_the_operations_profiler_ranges() -> None:
    from torch.profiler import ProfilerActivity, profile

    from gptperf import names
    from gptperf.steps.fast_decode import StaticKVCache
    from gptperf.steps.fused_decode import fused_decode_step

    model = _model()
    cache = StaticKVCache(CFG, 1, 16)
    step = fused_decode_step(model, cache, torch.tensor([[5]]), torch.zeros(1, 17, dtype=torch.long))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ranges = {e.name for e in prof.events()}
    per_layer = (names.ATTN_QKV, names.ATTN_SDPA, names.ATTN_PROJ, names.MLP_FC, names.MLP_PROJ)
    expected = {names.EMBED, names.LM_HEAD} | {names.layer_name(i, c) for i in range(CFG.n_layer) for c in per_layer}
    assert expected <= ranges
    assert names.layer_name(0, names.LN_1) not in ranges  # inside the qkv kernel, not an op of its own


def test_memory_counts_the_fused_steps_scaled_weight_copies() -> None:
    """The fused step streams its own copy W∘γ of qkv and mlp.fc (and the LM head) where the
    weight is at most NORM_SCALED_WEIGHT_BYTES: gpt2's 3.5 and 4.7 MB weights, not its 77 MB
    head; none of the 7B shape's."""
    from gptperf.perfmodel import memory_breakdown
    from gptperf.plan import NORM_SCALED_WEIGHT_BYTES

    gpt2, C = preset("gpt2"), 768
    decode = Workload("decode", 1, 1024, "bf16")
    fused, unfused = memory_breakdown(gpt2, decode, FUSED), memory_breakdown(gpt2, decode, FUSED.replace(fused_decode=False))
    assert 4 * C * C * 2 <= NORM_SCALED_WEIGHT_BYTES < gpt2.vocab_size * C * 2
    assert fused.weight_copies - unfused.weight_copies == 12 * (3 + 4) * C * C * 2
    assert fused.total - unfused.total == 12 * 7 * C * C * 2
    assert FUSED.fuses_decode("decode", 1) and not FUSED.fuses_decode("decode", 2)
    batch2 = Workload("decode", 2, 1024, "bf16")  # runs the compiled model: no copies
    assert memory_breakdown(gpt2, batch2, FUSED).weight_copies == memory_breakdown(gpt2, batch2).weight_copies
    seven_b = GPTConfig(n_layer=32, n_head=32, n_embd=4096, vocab_size=50304, block_size=2048)
    assert (memory_breakdown(seven_b, decode, FUSED).weight_copies
            == memory_breakdown(seven_b, decode, FUSED.replace(fused_decode=False)).weight_copies)
