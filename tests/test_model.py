"""The model: config validation, math = sdpa attention, KV cache = recompute, parameters, names."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from gptperf import names
from gptperf.errors import UserError
from gptperf.model import GPT, GPTConfig, KVCache, preset

SMALL = dict(block_size=32, vocab_size=256, n_layer=2, n_head=4, n_embd=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_model(attention: str = "sdpa", seed: int = 0, **overrides: object) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **overrides}, attention=attention)).eval()


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        (dict(n_embd=30, n_head=4), "not divisible"),
        (dict(n_layer=0), "n_layer"),
        (dict(n_head=-2), "n_head"),
        (dict(block_size=0), "block_size"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(n_embd=32.0), "n_embd"),
        (dict(attention="flash"), "unknown attention"),
        (dict(layer_norm_epsilon=0.0), "layer_norm_epsilon"),
    ],
)
def test_config_rejects_invalid_fields(fields: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as err:
        GPTConfig(**{**SMALL, **fields})
    assert "\n" not in str(err.value)


def test_unknown_preset_and_field() -> None:
    with pytest.raises(UserError, match="unknown preset 'gpt5'.*tiny"):
        preset("gpt5")
    with pytest.raises(UserError, match="unknown config field"):
        preset("tiny", n_layers=3)
    assert preset("tiny", n_layer=2).n_layer == 2


def _from_name(name: str) -> GPTConfig:
    """The config a name made by `preset` describes: the preset with each `field=value` applied."""
    from gptperf.model.config import PRESETS

    base, _, changes = name.partition("+")
    fields = {}
    for part in filter(None, changes.split(",")):
        key, value = part.split("=")
        fields[key] = type(getattr(PRESETS[base], key))(value)
    return preset(base, **fields)


SEVEN_B = dict(n_layer=32, n_head=32, n_embd=4096, block_size=4096, vocab_size=32000)


@pytest.mark.parametrize("name, overrides", [
    ("tiny", SEVEN_B),  # the 7B shape written from the tiny preset
    ("tiny", dict(n_layer=2)),
    ("gpt2", dict(block_size=256, attention="math")),
    ("gpt2-xl", dict(vocab_size=50257, layer_norm_epsilon=1e-6)),
])
def test_a_changed_preset_is_named_for_what_it_is(name: str, overrides: dict) -> None:
    config = preset(name, **overrides)
    assert config.name != name and config.name.startswith(name + "+")
    for key, value in overrides.items():  # every change is in the name, attention is not
        assert (f"{key}={value}" in config.name) == (key != "attention")
    again = _from_name(config.name)  # the name alone makes the same config (attention aside)
    assert again.replace(attention=config.attention) == config
    assert again.name == config.name


def test_a_preset_keeps_its_name_when_nothing_that_names_it_changes() -> None:
    from gptperf.model.config import PRESETS, preset_of

    tiny = PRESETS["tiny"]
    assert preset("tiny").name == "tiny"
    assert preset("tiny", n_layer=tiny.n_layer, n_embd=tiny.n_embd).name == "tiny"  # same values
    assert preset("tiny", attention="math").name == "tiny"  # other kernels, same function
    assert preset_of(preset("tiny", **SEVEN_B)) == "tiny" and preset_of(preset("gpt2")) == "gpt2"
    assert preset_of(GPTConfig()) is None
    # different configs get different names
    names_ = {preset("tiny", n_layer=n, n_head=h).name for n in (1, 2, 4) for h in (1, 2, 4)}
    assert len(names_) == 9


def test_the_cli_reports_a_changed_preset_under_its_own_name(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gptperf.cli import main

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SEVEN_B.items()]
    assert main(["model", "--preset", "tiny", *flags, "--batch", "1", "--seq", "64", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["n_embd"] == 4096 and doc["config"]["name"] != "tiny"
    assert doc["config"]["name"] == preset("tiny", **SEVEN_B).name


def test_sequence_longer_than_block_size_is_a_user_error() -> None:
    model = small_model()
    with pytest.raises(UserError, match="exceeds block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_math_and_sdpa_agree_forward_and_backward() -> None:
    idx = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(1))
    results = {}
    for attention in ("math", "sdpa"):
        model = small_model(attention).train()
        logits, loss = model(idx, idx.roll(-1, dims=1))
        loss.backward()
        results[attention] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (lm, gm), (ls, gs) = results["math"], results["sdpa"]
    assert torch.allclose(lm, ls, atol=1e-5, rtol=0), (lm - ls).abs().max()
    assert gm.keys() == gs.keys()
    for name in gm:
        assert torch.allclose(gm[name], gs[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_kv_cache_matches_recompute(attention: str) -> None:
    model = small_model(attention)
    idx = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2))
    full, _ = model(idx)
    cache = KVCache(model.config, batch=2)
    # prefill 7, decode 1, a chunk of 5 after a non-empty cache, decode 1, chunk of 6
    pieces = []
    for a, b in [(0, 7), (7, 8), (8, 13), (13, 14), (14, 20)]:
        logits, _ = model(idx[:, a:b], kv_cache=cache)
        pieces.append(logits)
    assert cache.length == 20
    cached = torch.cat(pieces, dim=1)
    assert torch.allclose(cached, full, atol=1e-5, rtol=0), (cached - full).abs().max()
    # last_logits_only returns the last position's logits only
    cache.reset()
    last, _ = model(idx, kv_cache=cache, last_logits_only=True)
    assert last.shape == (2, 1, 256)
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-5, rtol=0)


def test_one_token_into_an_empty_kv_cache_is_the_first_position() -> None:
    model = small_model()
    idx = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(4))
    full, _ = model(idx)
    first, _ = model(idx[:, :1], kv_cache=KVCache(model.config, batch=2))
    assert torch.allclose(first, full[:, :1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_a_compiled_model_traces_whole_under_dynamic_shapes(attention: str) -> None:
    """torch.compile with dynamic sequence lengths (what a second length turns on) traces the
    model in one graph, labels included: a causal flag computed from T was a SymBool there, which
    sdpa refused, and the graph break that followed broke the labels' context managers."""
    model = small_model(attention).eval()
    compiled = torch.compile(model, backend="eager", dynamic=True, fullgraph=True)
    for t in (8, 13):
        idx = torch.randint(0, 256, (2, t), generator=torch.Generator().manual_seed(t))
        got, got_loss = compiled(idx, idx.roll(-1, dims=1))
        want, want_loss = model(idx, idx.roll(-1, dims=1))
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
        assert torch.allclose(got_loss, want_loss, atol=1e-6, rtol=0)


def test_kv_cache_full_is_a_user_error() -> None:
    model = small_model()
    cache = KVCache(model.config, batch=1, max_len=8)
    model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
    with pytest.raises(UserError, match="KV cache full"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    with pytest.raises(UserError, match="exceeds block_size"):
        KVCache(model.config, batch=1, max_len=33)


@pytest.mark.parametrize("batch", [0, -1, True, 2.5, "2"])
def test_both_kv_caches_refuse_a_batch_that_is_not_a_positive_integer(batch: object) -> None:
    from gptperf.steps.fast_decode import StaticKVCache

    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=64)
    for cache in (KVCache, StaticKVCache):
        with pytest.raises(UserError, match=f"batch must be a positive integer, got {batch!r}"):
            cache(config, batch)  # type: ignore[arg-type]
        with pytest.raises(UserError, match="33"):
            cache(config, 2, max_len=33)
        assert cache(config, 2, max_len=8).max_len == 8 and cache(config, 3).max_len == 32


def test_parameter_count_with_tying() -> None:
    model = small_model()
    c = model.config
    C, L, V, T = c.n_embd, c.n_layer, c.vocab_size, c.block_size
    per_layer = 12 * C * C + 13 * C  # qkv, proj, fc, proj weights + biases, two LayerNorms
    expected = V * C + T * C + L * per_layer + 2 * C
    assert model.num_parameters() == expected == sum(p.numel() for p in model.parameters())
    assert model.num_parameters(include_embeddings=False) == L * per_layer + 2 * C
    with torch.device("meta"):  # GPT-2 small (its 50257 vocabulary), without allocating weights
        gpt2 = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768))
    assert gpt2.num_parameters() == 124_439_808  # nanoGPT: 123.65M without the 786,432 of wpe
    assert gpt2.num_parameters(include_embeddings=False) == 124_439_808 - 50257 * 768 - 1024 * 768


def test_weight_shape_is_the_shape_of_the_weight_the_model_builds() -> None:
    model = small_model()
    block, c = model.transformer.h[0], model.config
    built = {names.ATTN_QKV: block.attn.c_attn, names.ATTN_PROJ: block.attn.c_proj,
             names.MLP_FC: block.mlp.c_fc, names.MLP_PROJ: block.mlp.c_proj, names.LM_HEAD: model.lm_head}
    for component, linear in built.items():
        assert c.weight_shape(component) == tuple(linear.weight.shape), component
    with pytest.raises(ValueError, match="attn.sdpa.*valid: attn.qkv"):
        c.weight_shape(names.ATTN_SDPA)


def test_weight_tying_holds_through_training() -> None:
    model = small_model().train()
    assert model.lm_head.weight is model.transformer.wte.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, 256, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert "lm_head.weight" not in dict(model.named_parameters())


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_profiler_labels_are_operation_names(attention: str) -> None:
    model = small_model(attention).train()
    idx = torch.randint(0, 256, (2, 16))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _, loss = model(idx, idx)
        loss.backward()
    labels = {e.name for e in prof.events() if e.is_user_annotation}
    bad = sorted(n for n in labels if not names.is_operation_name(n))
    assert not bad, bad
    attn = names.MATH_ATTENTION if attention == "math" else names.FUSED_ATTENTION
    per_layer = (names.LN_1, names.ATTN_QKV, *attn, names.ATTN_PROJ, names.LN_2,
                 names.MLP_FC, names.MLP_ACT, names.MLP_PROJ, names.RESIDUAL)
    expected = {names.EMBED, names.LN_F, names.LM_HEAD, names.LOSS} | {
        names.layer_name(i, comp) for i in range(model.config.n_layer) for comp in per_layer
    }
    assert labels == expected


# -- the LM head padded to aligned rows --------------------------------------------------------

def test_only_a_16_bit_gpu_head_over_many_rows_at_an_unaligned_vocabulary_is_padded() -> None:
    from gptperf.model.config import HEAD_PAD_MIN_ROWS, HEAD_ROW_MULTIPLE, pads_lm_head

    gpt2 = preset("gpt2", vocab_size=50257)
    assert gpt2.padded_vocab_size == 50304 and HEAD_ROW_MULTIPLE == 64 and HEAD_PAD_MIN_ROWS == 256
    assert pads_lm_head(gpt2, "cuda", 2, 256) and not pads_lm_head(gpt2, "cpu", 2, 256)
    assert not pads_lm_head(gpt2, "cuda", 4, 256) and not pads_lm_head(gpt2, "cuda", 2, 255)
    assert not pads_lm_head(preset("gpt2"), "cuda", 2, 256) and preset("gpt2").padded_vocab_size == 50304
    assert GPTConfig(**{**SMALL, "vocab_size": 65}).padded_vocab_size == 128


def _padded_and_plain(device: str, vocab: int = 1001) -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    plain = GPT(GPTConfig(**{**SMALL, "vocab_size": vocab})).to(device)
    padded = GPT(plain.config).to(device)
    padded.load_state_dict(plain.state_dict())
    plain.pad_head, padded.pad_head = False, True
    return padded, plain


def _logits_loss_grads(model: GPT, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    logits, loss = model(idx, idx.roll(-1, dims=1))
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_the_padded_head_computes_what_the_plain_head_does() -> None:
    """In fp32 on the CPU (where it is asked for): the same logits and loss, the same gradients
    (the padded rows' part of the tied table's gradient is cut off by the join), the same
    parameters and state dict (the padding is made anew each step)."""
    padded, plain = _padded_and_plain("cpu")
    idx = torch.randint(0, 1001, (3, 32), generator=torch.Generator().manual_seed(1))
    (lp, sp, gp), (lq, sq, gq) = _logits_loss_grads(padded, idx), _logits_loss_grads(plain, idx)
    assert lp.shape == lq.shape == (3, 32, 1001)
    assert lp.stride(1) == 1024  # the logits are the padded product's first 1001 columns
    assert torch.equal(lp, lq) and torch.equal(sp, sq)
    for name in gq:
        assert torch.allclose(gp[name], gq[name], atol=1e-7, rtol=1e-5), name
    assert {k: v.shape for k, v in padded.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    last, _ = padded(idx, last_logits_only=True)  # 3 rows, whose kernel may sum in another order
    assert torch.allclose(last, lq[:, -1:, :], atol=1e-6, rtol=0)


def test_the_padded_heads_loss_ignores_its_pad_columns_and_masked_targets_in_the_losss_dtype() -> None:
    """The loss reads the padded product with its pad columns at -inf: the same loss where targets
    are -1 (ignored), under bf16 autocast, and with a plain bf16 model, in the unpadded loss's
    dtype each time; the logits returned keep their values."""
    padded, plain = _padded_and_plain("cpu")
    idx = torch.randint(0, 1001, (2, 16), generator=torch.Generator().manual_seed(2))
    targets = idx.roll(-1, dims=1)
    targets[:, ::3] = -1
    (lp, sp), (lq, sq) = padded(idx, targets), plain(idx, targets)
    assert torch.equal(sp, sq) and torch.equal(lp, lq) and torch.isfinite(lp).all()
    with torch.autocast("cpu", torch.bfloat16):
        (sp, sq) = (padded(idx, targets)[1], plain(idx, targets)[1])
    assert sp.dtype == sq.dtype == torch.float32 and torch.allclose(sp, sq, atol=1e-5, rtol=0)
    padded, plain = padded.to(torch.bfloat16), plain.to(torch.bfloat16)
    (sp, sq) = (padded(idx, targets)[1], plain(idx, targets)[1])
    assert sp.dtype == sq.dtype == torch.bfloat16 and torch.equal(sp, sq)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_an_eager_gpu_model_pads_its_head_and_computes_the_same_under_autocast() -> None:
    padded, plain = _padded_and_plain("cuda", vocab=50257)
    padded.pad_head = None  # the device's rule: padded in bf16 over 256 rows (8 × 32), eagerly on a GPU
    idx = torch.randint(0, 50257, (8, 32), device="cuda")

    def builds_the_padded_table(model: GPT, batch: torch.Tensor) -> bool:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(batch)
        return any(e.key == "aten::cat" for e in prof.key_averages())

    assert not builds_the_padded_table(padded, idx)  # fp32: its loads are 4 bytes either way
    with torch.autocast("cuda", torch.bfloat16):
        assert not builds_the_padded_table(padded, idx[:7])  # 224 rows
        assert builds_the_padded_table(padded, idx)
        (lp, sp, gp) = _logits_loss_grads(padded, idx)
        (lq, sq, gq) = _logits_loss_grads(plain, idx)
    assert lp.shape == lq.shape == (8, 32, 50257) and lp.stride(1) == 50304
    assert torch.allclose(lp.float(), lq.float(), atol=2e-2, rtol=2e-2)
    assert abs(sp.item() - sq.item()) < 1e-2
    for name in gq:  # bf16's kernels may differ between the two products: relative to the norm
        assert (gp[name] - gq[name]).norm() <= 2e-2 * gq[name].norm(), name
