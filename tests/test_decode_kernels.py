"""The fused batch-1 decode kernels (gptperf.steps.decode_kernels) and their plain-torch references
(gptperf.steps.decode_reference).

Everywhere: each plain-torch reference against a float64 composition of the model's own ops
(nn.LayerNorm, F.linear, F.gelu, F.scaled_dot_product_attention), the argmax key's ordering, and
whole greedy decode steps against GPT.forward with a KVCache. With TRITON_INTERPRET=1 and Triton
installed the public functions launch the real kernels on CPU tensors: the step tests then run
the kernels, and the `interpreter` tests hold each kernel to its reference at small shapes with
ragged tails. The `gpu` tests do that on CUDA at gpt2 and 7B shapes and replay a captured step.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptperf.model import GPT, KVCache, preset
from gptperf.plan import NORM_SCALED_WEIGHT_BYTES
from gptperf.steps import decode_kernels as dk
from gptperf.steps import decode_reference as ref
from gptperf.steps.fast_decode import FastDecoder, StaticKVCache, build_model
from gptperf.steps.fused_decode import fused_decode_step

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and dk.triton is not None


def _interpreter_loops_over_arguments() -> bool:
    """Whether Triton's interpreter runs a loop bounded by a kernel argument: Triton 3.6's holds
    arguments as 1-element arrays and converts them with int(), which numpy 2.4 refuses
    (triton-lang/triton#9171, fixed in Triton 3.7)."""
    try:
        _count_to[(1,)](torch.zeros(1, dtype=torch.int32), 3)
    except Exception as err:  # the interpreter's own error type differs between Triton versions
        if "only 0-dimensional arrays can be converted" in str(err):
            return False
        raise  # anything else is a failure to see, not this known one to skip
    return True


if INTERPRET:
    import triton
    import triton.language as tl

    @triton.jit
    def _count_to(out_ptr, n):
        total = 0
        for _ in range(0, n, 1):
            total += 1
        tl.store(out_ptr, total)


if INTERPRET and not _interpreter_loops_over_arguments():
    pytest.skip("this Triton's interpreter cannot run the kernels' loops under this numpy "
                "(triton-lang/triton#9171): install triton>=3.7 or numpy<2.4",
                allow_module_level=True)
interpreter = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 and triton")
cuda = pytest.mark.skipif(not dk.available(), reason="needs CUDA and Triton")
EPS = 1e-5


def _rand(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu", shift: float = 0.0,
          scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, device=device) * scale + shift).to(dtype)


def _ln_params(k: int, dtype: torch.dtype, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return _rand(k, dtype=dtype, device=device, shift=1.0, scale=0.5), _rand(k, dtype=dtype, device=device, scale=0.3)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.double().reshape(ref.shape)
    assert torch.isfinite(out).all()
    return ((out - ref).abs().max() / ref.abs().max()).item()


def _tol(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 1e-2


def _ln_linear64(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, w: torch.Tensor,
                 bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    """The model's own ops in float64: nn.LayerNorm, then F.linear [then GELU, tanh]."""
    k = x.size(-1)
    ln = nn.LayerNorm(k, eps=EPS, device=x.device, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(g.double())
        ln.bias.copy_(b.double())
        y = F.linear(ln(x.double().reshape(k)), w.double(), None if bias is None else bias.double())
    return F.gelu(y, approximate="tanh") if gelu else y


def _attention64(qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, p: int,
                 n_head: int) -> torch.Tensor:
    """sdpa in float64 over the p cached positions plus the new token (caches read before the call)."""
    C = qkv.size(-1) // 3
    q, k, v = qkv.double().reshape(3, n_head, 1, -1)
    keys = torch.cat([k_cache[0, :, :p].double(), k], dim=1)
    values = torch.cat([v_cache[0, :, :p].double(), v], dim=1)
    return F.scaled_dot_product_attention(q[None], keys[None], values[None]).reshape(C)


def _caches(H: int, L: int, D: int, p: int, dtype: torch.dtype, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random caches whose positions after p are NaN: a kernel that reads them returns NaN."""
    k, v = _rand(1, H, L, D, dtype=dtype, device=device), _rand(1, H, L, D, dtype=dtype, device=device)
    k[:, :, p + 1:] = float("nan")
    v[:, :, p + 1:] = float("nan")
    return k, v


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))


# -- the references against float64 compositions of the model's ops ---------------------------


@pytest.mark.parametrize(("n", "k"), [(37, 100), (96, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("gelu", "has_bias"), [(False, True), (True, True), (False, False)])
def test_ln_gemv_reference_matches_layer_norm_linear(n: int, k: int, dtype: torch.dtype, gelu: bool,
                                                     has_bias: bool) -> None:
    torch.manual_seed(0)
    x = _rand(1, 1, k, dtype=dtype, shift=3.0, scale=2.0)  # a mean far from 0: centred variance
    g, b = _ln_params(k, dtype)
    w, bias = _rand(n, k, dtype=dtype, scale=0.2), _rand(n, dtype=dtype) if has_bias else None
    out = dk.ln_gemv(x, g, b, EPS, w, bias, gelu, reference=True)
    assert out.shape == (1, 1, n) and out.dtype == dtype
    assert _rel(out, _ln_linear64(x, g, b, w, bias, gelu)) < _tol(dtype)


@pytest.mark.parametrize(("n", "k"), [(37, 100), (96, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemv_residual_reference_adds_the_residual(n: int, k: int, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    y, w, bias, r = _rand(1, 1, k, dtype=dtype), _rand(n, k, dtype=dtype), _rand(n, dtype=dtype), _rand(1, 1, n, dtype=dtype)
    out = dk.gemv_residual(y, w, bias, r, reference=True)
    assert out.shape == (1, 1, n) and out.dtype == dtype
    ref = r.double().reshape(n) + F.linear(y.double().reshape(k), w.double(), bias.double())
    assert _rel(out, ref) < _tol(dtype)
    in_place = r.clone()
    assert dk.gemv_residual(y, w, bias, in_place, out=in_place, reference=True) is in_place
    assert torch.equal(in_place, out)


def test_embed_reference_adds_token_and_position_rows() -> None:
    torch.manual_seed(2)
    wte, wpe = _rand(50, 24), _rand(16, 24)
    x = dk.embed(torch.tensor([[13]]), torch.tensor(5), wte, wpe, reference=True)
    assert x.shape == (1, 1, 24)
    assert torch.equal(x.reshape(24), wte[13] + wpe[5])


@pytest.mark.parametrize("p", [0, 9, 39])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_attention_reference_writes_pos_and_reads_only_up_to_it(p: int, dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    H, D, L = 3, 16, 40
    qkv = _rand(1, 1, 3 * H * D, dtype=dtype)
    k_cache, v_cache = _caches(H, L, D, p, dtype)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    ref = _attention64(qkv, before_k, before_v, p, H)
    y = dk.decode_attention(qkv, k_cache, v_cache, torch.tensor(p), H, reference=True)
    assert y.shape == (1, 1, H * D) and y.dtype == dtype
    assert _rel(y, ref) < _tol(dtype)
    _, k_new, v_new = qkv.reshape(3, H, D)
    assert torch.equal(k_cache[0, :, p], k_new) and torch.equal(v_cache[0, :, p], v_new)
    others = torch.arange(L) != p
    assert _same(k_cache[:, :, others], before_k[:, :, others])
    assert _same(v_cache[:, :, others], before_v[:, :, others])


def test_argmax_key_orders_values_then_smallest_index() -> None:
    special = torch.tensor([-float("inf"), -3.5, -1e-40, -0.0, 0.0, 1e-40, 1e-30, 2.0, 2.0,
                            float("inf"), float("nan"), -float("nan")])
    assert special[-1].view(torch.int32) < 0  # a NaN with its sign bit set ranks as high as any
    finite = torch.tensor([-3.5, -1.0, -1e-40, 0.0, 1e-40, 1e-30, 2.0, 3e38])
    keys = ref.argmax_key(finite, torch.zeros(8, dtype=torch.long))
    assert (keys[1:] > keys[:-1]).all()  # order preserving, negatives and subnormals included
    gen = torch.Generator().manual_seed(4)
    for _ in range(300):
        v = special[torch.randint(0, len(special), (int(torch.randint(1, 9, (1,), generator=gen)),), generator=gen)]
        key = ref.argmax_key(v, torch.arange(len(v))).max()
        assert ref.argmax_index(key).item() == torch.argmax(v).item(), v  # first max, first NaN
    assert ref.argmax_index(ref.argmax_key(torch.tensor([-0.0, 0.0]), torch.arange(2)).max()) == 0
    index = torch.tensor([0, 7, 2**31, 2**32 - 1])
    assert torch.equal(ref.argmax_index(ref.argmax_key(torch.tensor([-1.0, 0.0, 5.0, float("nan")]), index)), index)
    assert (ref.argmax_key(special, torch.arange(len(special))) > dk.INT64_MIN).all()


@pytest.mark.parametrize("blocks", [0, -2, 1.5])
def test_ln_gemv_argmax_refuses_a_bad_block_count(blocks: object) -> None:
    x, w = torch.randn(1, 1, 8), torch.randn(5, 8)
    with pytest.raises(ValueError, match=f"blocks must be a positive number .*got {blocks!r}"):
        dk.ln_gemv_argmax(x, None, None, EPS, w, blocks=blocks)


def test_argmax_blocks_aims_at_the_program_count() -> None:
    """Row blocks a program: the fewest that keep the programs at or under the target, never 0."""
    assert dk.argmax_blocks(50304, 16, 1056) == 3  # 3144 blocks -> 1048 programs
    assert dk.argmax_blocks(32000, 16, 1056) == 2  # 2000 blocks -> 1000 programs
    assert dk.argmax_blocks(256, 16, 1056) == 1
    assert dk.argmax_blocks(50304, 16) == dk.argmax_blocks(50304, 16, dk.ARGMAX_PROGRAMS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ln_gemv_argmax_reference_picks_the_first_maximum(dtype: torch.dtype) -> None:
    torch.manual_seed(5)
    k, n = 100, 37
    x = _rand(1, 1, k, dtype=dtype, shift=1.0)
    g, b = _ln_params(k, dtype)
    w = _rand(n, k, dtype=dtype)
    logits = _ln_linear64(x, g, b, w, None, False)
    token = dk.ln_gemv_argmax(x, g, b, EPS, w, reference=True)
    assert token.shape == (1,) and token.dtype == torch.long
    assert logits[token.item()] >= logits.max() - _tol(dtype) * logits.abs().max()
    best = int(logits.argmax())
    w[30] = w[best]  # a tie after the winner changes nothing, one before it wins
    assert dk.ln_gemv_argmax(x, g, b, EPS, w, reference=True).item() == best
    w[3] = w[best]
    assert dk.ln_gemv_argmax(x, g, b, EPS, w, reference=True).item() == min(3, best)


def test_finish_reference_writes_the_token_and_advances() -> None:
    token_buf, tokens_buf, pos = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 9, dtype=torch.long), torch.tensor(4)
    dk.finish(torch.tensor([11]), pos, token_buf, tokens_buf, reference=True)
    assert token_buf.item() == 11 and tokens_buf[0, 5].item() == 11 and pos.item() == 5
    assert tokens_buf.count_nonzero().item() == 1


# -- whole decode steps against GPT.forward with a KVCache -------------------------------------


def _model() -> GPT:
    """A small GPT whose LayerNorms and biases are random too (they start as ones and zeros)."""
    config = preset("tiny", n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=96)
    model = build_model(config, "cpu", torch.float32, seed=6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interpreted kernels cost per program: give the tiny model's weights a few big tiles."""
    if INTERPRET:
        monkeypatch.setattr(dk, "fused_tile", lambda n, k, ln: (64, 64, 4))


def _composed_step(model: GPT, cache: StaticKVCache, token_buf: torch.Tensor, tokens_buf: torch.Tensor,
                   scratch: dk.DecodeScratch, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The decode step from the public functions, with the logits computed beside the argmax
    (the LayerNorm constants computed by the call in the first layer, given in the others)."""
    t, eps = model.transformer, model.config.layer_norm_epsilon
    x = dk.embed(token_buf, cache.pos, t.wte.weight, t.wpe.weight)
    for layer, block in enumerate(t.h):
        w_attn, b_attn = block.attn.c_attn.weight, block.attn.c_attn.bias
        folded = None if layer == 0 else dk.fold_layer_norm(w_attn, b_attn, block.ln_1.weight, block.ln_1.bias)
        qkv = dk.ln_gemv(x, block.ln_1.weight, block.ln_1.bias, eps, w_attn, b_attn, folded=folded)
        y = dk.decode_attention(qkv, cache.k[layer], cache.v[layer], cache.pos, model.config.n_head,
                                chunk=chunk, scratch=scratch)
        x = dk.gemv_residual(y, block.attn.c_proj.weight, block.attn.c_proj.bias, x)
        h = dk.ln_gemv(x, block.ln_2.weight, block.ln_2.bias, eps, block.mlp.c_fc.weight, block.mlp.c_fc.bias,
                       gelu=True)
        x = dk.gemv_residual(h, block.mlp.c_proj.weight, block.mlp.c_proj.bias, x)
    logits = dk.ln_gemv(x, t.ln_f.weight, t.ln_f.bias, eps, model.lm_head.weight)
    token = dk.ln_gemv_argmax(x, t.ln_f.weight, t.ln_f.bias, eps, model.lm_head.weight, scratch=scratch)
    dk.finish(token, cache.pos, token_buf, tokens_buf)
    return logits, token


@torch.no_grad()
def test_composed_step_matches_gpt_forward_with_kv_cache(small_tiles: None) -> None:
    model = _model()
    H, steps = model.config.n_head, 8
    cache, kv = StaticKVCache(model.config, 1), KVCache(model.config, 1)
    token_buf, tokens_buf = torch.tensor([[17]]), torch.zeros(1, cache.max_len + 1, dtype=torch.long)
    scratch = dk.DecodeScratch.new(H, "cpu")
    token = torch.tensor([[17]])
    for step in range(steps):  # chunks of 3: the context crosses split boundaries
        logits, fused = _composed_step(model, cache, token_buf, tokens_buf, scratch, chunk=3)
        expected, _ = model(token, kv_cache=kv)
        assert torch.allclose(logits.reshape(-1), expected.reshape(-1), atol=1e-5, rtol=1e-5)
        assert fused.item() == expected.reshape(-1).argmax().item()
        token = fused.view(1, 1)
        assert token_buf.item() == fused.item() and tokens_buf[0, step + 1].item() == fused.item()
        assert cache.pos.item() == step + 1
    for layer in range(model.config.n_layer):
        assert torch.allclose(cache.k[layer][:, :, :steps], kv.k[layer, :, :, :steps], atol=1e-6)
        assert torch.allclose(cache.v[layer][:, :, :steps], kv.v[layer, :, :, :steps], atol=1e-6)
    assert not scratch.attention_done.any() and scratch.argmax_key.item() == dk.INT64_MIN


@torch.no_grad()
def test_greedy_step_generates_what_the_model_generates(small_tiles: None) -> None:
    model = _model()
    cache, kv = StaticKVCache(model.config, 1), KVCache(model.config, 1)
    token_buf, tokens_buf = torch.tensor([[5]]), torch.zeros(1, cache.max_len + 1, dtype=torch.long)
    tokens_buf[0, 0] = 5
    step = fused_decode_step(model, cache, token_buf, tokens_buf)
    expected = [5]
    for _ in range(6):
        logits, _ = model(torch.tensor([expected[-1:]]), kv_cache=kv)
        expected.append(int(logits.reshape(-1).argmax()))
        step()
        assert expected[-1] == token_buf.item()
    assert tokens_buf[0, :7].tolist() == expected and cache.pos.item() == 6


@torch.no_grad()
def test_the_step_gives_the_models_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused step's logits (handed to `sample`) are the model's with a KV cache, biases and
    all: each LayerNorm gemv's bias is in its folded constants for the kernel and given to the
    plain-torch reference beside them."""
    if INTERPRET:  # few, big tiles: interpreted kernels cost per program
        monkeypatch.setattr(dk, "fused_tile", lambda n, k, ln: (16, 64, 4))
    model = _model()
    cache, kv = StaticKVCache(model.config, 1), KVCache(model.config, 1)
    token_buf, tokens_buf = torch.tensor([[5]]), torch.zeros(1, cache.max_len + 1, dtype=torch.long)
    seen: list[torch.Tensor] = []

    def greedy(logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits.clone())
        return logits.argmax(-1)

    step = fused_decode_step(model, cache, token_buf, tokens_buf, sample=greedy)
    token = torch.tensor([[5]])
    for _ in range(5):
        expected, _ = model(token, kv_cache=kv)
        step()
        assert torch.allclose(seen[-1].reshape(-1), expected.reshape(-1), atol=1e-5, rtol=1e-5)
        token = token_buf.clone()


def test_kernel_tuning_defaults_are_the_settings_the_step_runs() -> None:
    t = dk.DEFAULT_TUNING
    assert t == dk.KernelTuning()
    assert (t.pdl, t.attention_prefetch, t.early_weight_loads) == (True, True, True)
    assert t.scale_weight_bytes == NORM_SCALED_WEIGHT_BYTES
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.pdl = False  # type: ignore[misc]


def test_scaled_copies_follow_the_tuning_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dk, "_use_triton", lambda t: True)  # as where a kernel streams the weight
    w, g, beta = torch.randn(8, 16), torch.randn(16), torch.randn(16)  # 512 bytes
    assert dk.scales_weight(w) and dk.scales_weight(w, dk.KernelTuning(scale_weight_bytes=512))
    assert not dk.scales_weight(w, dk.KernelTuning(scale_weight_bytes=511))
    assert dk.fold_layer_norm(w, None, g, beta).weight is not None
    assert dk.fold_layer_norm(w, None, g, beta, tuning=dk.KernelTuning(scale_weight_bytes=0)).weight is None
    no_copies = dk.fold_for_copies([w, w.clone()], g, beta, tuning=dk.KernelTuning(scale_weight_bytes=0))
    assert all(f.weight is None for f in no_copies)


@torch.no_grad()
@pytest.mark.parametrize("greedy", [True, False])
def test_the_tuning_given_reaches_every_kernel_of_the_step(greedy: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """FastDecoder(kernel_tuning=...) hands its tuning to every fold and every launch of the
    fused step (greedy: the argmax kernel finishes the step; sampling: ln_gemv, then finish)."""
    tuning = dk.KernelTuning(pdl=False, attention_prefetch=False, early_weight_loads=False,
                             scale_weight_bytes=0)
    seen: dict[str, set[object]] = {}
    for name in ("fold_layer_norm", "embed", "ln_gemv", "decode_attention", "gemv_residual",
                 "ln_gemv_argmax", "finish"):
        def spy(*args: object, _name: str = name, _fn: object = getattr(dk, name), **kwargs: object) -> object:
            seen.setdefault(_name, set()).add(kwargs.get("tuning"))
            return _fn(*args, **kwargs)  # type: ignore[operator]
        monkeypatch.setattr(dk, name, spy)
    sampling = {} if greedy else {"temperature": 0.9, "top_k": 5}
    dec = FastDecoder(_model(), 1, 24, compile=False, fused=True, kernel_tuning=tuning, **sampling)
    dec.step()
    expected = {"fold_layer_norm", "embed", "ln_gemv", "decode_attention", "gemv_residual",
                "ln_gemv_argmax" if greedy else "finish"}
    assert set(seen) == expected and all(s == {tuning} for s in seen.values()), seen


# -- the kernels against the references, in Triton's interpreter --------------------------------


@interpreter
@pytest.mark.parametrize("scaled", [True, False], ids=["w-scaled", "gamma-loaded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_interpreted_ln_gemv_and_gemv_residual(dtype: torch.dtype, scaled: bool) -> None:
    # without γ-scaled copies the kernels load γ beside x
    tuning = dk.DEFAULT_TUNING if scaled else dk.KernelTuning(scale_weight_bytes=0)
    torch.manual_seed(7)
    tiles = [(37, 100, (8, 32, 4)), (64, 200, (4, 64, 4))]
    for n, k, tile in tiles + ([(37, 100, None)] if dtype == torch.float32 else []):  # None: fused_tile's
        x = _rand(1, 1, k, dtype=dtype, shift=2.0)
        g, b = _ln_params(k, dtype)
        w, bias, r = _rand(n, k, dtype=dtype, scale=0.2), _rand(n, dtype=dtype), _rand(1, 1, n, dtype=dtype)
        for gelu, bb in [(False, bias), (True, bias), (False, None)]:
            out = torch.full((1, 1, n), float("nan"), dtype=dtype)
            assert dk.ln_gemv(x, g, b, EPS, w, bb, gelu, out=out, config=tile, tuning=tuning) is out
            assert _rel(out, _ln_linear64(x, g, b, w, bb, gelu)) < _tol(dtype)
            assert _rel(out, dk.ln_gemv(x, g, b, EPS, w, bb, gelu, reference=True).double()) < _tol(dtype)
        for bb in (bias, None):
            out = dk.gemv_residual(x, w, bb, r, config=tile, tuning=tuning)
            assert _rel(out, dk.gemv_residual(x, w, bb, r, reference=True).double()) < _tol(dtype)
            in_place = r.clone()
            dk.gemv_residual(x, w, bb, in_place, out=in_place, config=tile, tuning=tuning)
            assert torch.equal(in_place, out)


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_interpreted_embed_and_finish(dtype: torch.dtype) -> None:
    wte, wpe = _rand(50, 1500, dtype=dtype), _rand(16, 1500, dtype=dtype)  # C over one block: two programs
    token, pos = torch.tensor([[13]]), torch.tensor(5)
    out = dk.embed(token, pos, wte, wpe, out=torch.full((1, 1, 1500), float("nan"), dtype=dtype))
    ref = wte[13].double() + wpe[5].double()
    # fp32: exact; bf16 within its rounding (the interpreter rounds toward zero, GPUs to nearest)
    assert _rel(out, ref) < (1e-7 if dtype == torch.float32 else 2**-7)
    token_buf, tokens_buf = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 9, dtype=torch.long)
    dk.finish(torch.tensor([11]), pos, token_buf, tokens_buf)
    assert token_buf.item() == 11 and tokens_buf[0, 6].item() == 11 and pos.item() == 6


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fused", [True, False])
def test_interpreted_decode_attention(dtype: torch.dtype, fused: bool) -> None:
    torch.manual_seed(8)
    H, D, L = 3, 24, 40  # D not a power of two: masked head columns
    scratch = dk.DecodeScratch.new(H, "cpu")
    for chunk, block, split_block in [(8, 4, 2), (16, None, None), (64, 16, None), (3, None, 4)]:
        for p in (0, 7, 8, 9, 21, 39):
            qkv = _rand(1, 1, 3 * H * D, dtype=dtype)
            k_cache, v_cache = _caches(H, L, D, p, dtype)
            ref_k, ref_v = k_cache.clone(), v_cache.clone()
            ref = dk.decode_attention(qkv, ref_k, ref_v, torch.tensor(p), H, reference=True)
            out = torch.full((1, 1, H * D), float("nan"), dtype=dtype)
            dk.decode_attention(qkv, k_cache, v_cache, torch.tensor(p), H, chunk=chunk, block=block,
                                split_block=split_block, fused_combine=fused, scratch=scratch, out=out)
            assert _rel(out, ref.double()) < _tol(dtype), (chunk, p)
            assert _rel(out, _attention64(qkv, ref_k, ref_v, p, H)) < _tol(dtype)
            assert _same(k_cache, ref_k) and _same(v_cache, ref_v)
            assert not scratch.attention_done.any()  # the last split put its count back


@interpreter
@pytest.mark.parametrize("scaled", [True, False], ids=["w-scaled", "gamma-loaded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_interpreted_ln_gemv_argmax(dtype: torch.dtype, scaled: bool) -> None:
    tuning = dk.DEFAULT_TUNING if scaled else dk.KernelTuning(scale_weight_bytes=0)
    torch.manual_seed(9)
    k, n, tile = 100, 37, (8, 32, 4)  # five row blocks, the last one ragged
    x = _rand(1, 1, k, dtype=dtype, shift=1.0)
    g, b = _ln_params(k, dtype)
    w = _rand(n, k, dtype=dtype)
    scratch = dk.DecodeScratch.new(1, "cpu")

    def pick(weight: torch.Tensor, blocks: int | None) -> int:
        token = dk.ln_gemv_argmax(x, g, b, EPS, weight, scratch=scratch, config=tile, blocks=blocks,
                                  tuning=tuning)
        assert scratch.argmax_key.item() == dk.INT64_MIN and scratch.argmax_done.item() == 0
        return token.item()

    # one block a program, two (the last program's second block past the rows), all five in one
    for blocks in (1, 2, 5):
        best = pick(w, blocks)
        assert best == dk.ln_gemv_argmax(x, g, b, EPS, w, reference=True).item()
        tied = w.clone()
        tied[36] = tied[best]  # a tie in the last block loses; one in the first wins
        assert pick(tied, blocks) == best
        tied[2] = tied[best]
        assert pick(tied, blocks) == min(2, best)
        tied[20] = float("nan")  # a NaN logit wins, as in torch.argmax
        tied[33] = float("nan")
        assert pick(tied, blocks) == 20
    pos, token_buf, tokens_buf = torch.tensor(3), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 9, dtype=torch.long)
    token = dk.ln_gemv_argmax(x, g, b, EPS, w, scratch=scratch, config=tile, finish=(pos, token_buf, tokens_buf),
                              tuning=tuning)
    assert token.item() == best == token_buf.item() == tokens_buf[0, 4].item() and pos.item() == 4


# -- the kernels on CUDA at gpt2 and 7B shapes (run by the lead on the GPU) ---------------------

SHAPES = {"gpt2": dict(C=768, H=12, V=50304, L=1024), "7b": dict(C=4096, H=32, V=32000, L=4096)}
GPU_TOL = {torch.bfloat16: 1e-2, torch.float16: 5e-3, torch.float32: 1e-4}


def _nan(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), device="cuda", dtype=dtype)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("early", [False, True])  # the first weight tile after / before the wait
@pytest.mark.parametrize("scale_bytes", [0, 2**62])  # γ loaded beside x / in a scaled copy of W
def test_gemv_kernels_on_cuda(shape: str, dtype: torch.dtype, early: bool, scale_bytes: int) -> None:
    torch.manual_seed(10)
    tuning = dk.KernelTuning(early_weight_loads=early, scale_weight_bytes=scale_bytes)
    C = SHAPES[shape]["C"]
    x, r = _rand(1, 1, C, dtype=dtype, device="cuda", shift=1.0), _rand(1, 1, C, dtype=dtype, device="cuda")
    g, b = _ln_params(C, dtype, "cuda")
    for n, gelu in [(3 * C, False), (4 * C, True)]:
        w, bias = _rand(n, C, dtype=dtype, device="cuda", scale=0.05), _rand(n, dtype=dtype, device="cuda")
        out = dk.ln_gemv(x, g, b, EPS, w, bias, gelu, out=_nan(1, 1, n, dtype=dtype), tuning=tuning)
        assert _rel(out, _ln_linear64(x, g, b, w, bias, gelu)) < GPU_TOL[dtype], (n, gelu)
    for k in (C, 4 * C):
        y, w, bias = _rand(1, 1, k, dtype=dtype, device="cuda"), _rand(C, k, dtype=dtype, device="cuda", scale=0.05), _rand(C, dtype=dtype, device="cuda")
        out = dk.gemv_residual(y, w, bias, r, out=_nan(1, 1, C, dtype=dtype), tuning=tuning)
        ref = r.double().reshape(C) + F.linear(y.double().reshape(k), w.double(), bias.double())
        assert _rel(out, ref) < GPU_TOL[dtype], k
    wte, wpe = _rand(SHAPES[shape]["V"], C, dtype=dtype, device="cuda"), _rand(64, C, dtype=dtype, device="cuda")
    token, pos = torch.tensor([[123]], device="cuda"), torch.tensor(17, device="cuda")
    assert torch.equal(dk.embed(token, pos, wte, wpe, out=_nan(1, 1, C, dtype=dtype), tuning=tuning).reshape(C),
                       (wte[123].float() + wpe[17].float()).to(dtype))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("prefetch", [True, False])
def test_decode_attention_on_cuda(shape: str, dtype: torch.dtype, prefetch: bool) -> None:
    torch.manual_seed(11)
    tuning = dk.KernelTuning(attention_prefetch=prefetch)
    C, H, L = SHAPES[shape]["C"], SHAPES[shape]["H"], SHAPES[shape]["L"]
    D, chunk = C // H, dk.DEFAULT_CHUNK
    scratch = dk.DecodeScratch.new(H, "cuda")
    for p in (0, chunk - 1, chunk, 3 * chunk + 5, L // 2 + 3, L - 1):
        qkv = _rand(1, 1, 3 * C, dtype=dtype, device="cuda")
        k_cache, v_cache = _caches(H, L, D, p, dtype, "cuda")
        ref = _attention64(qkv, k_cache, v_cache, p, H)
        # default tiles, then a chunk of several tiles (the loop after the prefetched one)
        for fused, tiles in ((True, {}), (False, {}), (True, {"chunk": 64, "block": 16})):
            kc, vc = k_cache.clone(), v_cache.clone()
            out = dk.decode_attention(qkv, kc, vc, torch.tensor(p, device="cuda"), H, fused_combine=fused,
                                      scratch=scratch, out=_nan(1, 1, C, dtype=dtype), tuning=tuning, **tiles)
            assert _rel(out, ref) < GPU_TOL[dtype], (p, fused, tiles)
            _, k_new, v_new = qkv.reshape(3, H, D)
            assert torch.equal(kc[0, :, p], k_new) and torch.equal(vc[0, :, p], v_new)
            assert _same(kc[:, :, :p], k_cache[:, :, :p])
            assert not scratch.attention_done.any()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("scale_bytes", [0, 2**62])
def test_ln_gemv_argmax_on_cuda(shape: str, dtype: torch.dtype, scale_bytes: int) -> None:
    torch.manual_seed(12)
    tuning = dk.KernelTuning(scale_weight_bytes=scale_bytes)
    C, V = SHAPES[shape]["C"], SHAPES[shape]["V"]
    x = _rand(1, 1, C, dtype=dtype, device="cuda", shift=1.0)
    g, b = _ln_params(C, dtype, "cuda")
    w = _rand(V, C, dtype=dtype, device="cuda", scale=0.05)
    scratch = dk.DecodeScratch.new(1, "cuda")
    logits = _ln_linear64(x, g, b, w, None, False)
    token = dk.ln_gemv_argmax(x, g, b, EPS, w, scratch=scratch, out=torch.full((1,), -1, device="cuda"),
                              tuning=tuning)
    assert logits[token.item()] >= logits.max() - GPU_TOL[dtype] * logits.abs().max()
    assert dk.ln_gemv_argmax(x, g, b, EPS, w, scratch=scratch, blocks=1, tuning=tuning).item() == token.item()
    w[V - 1] = 4 * w[token.item()]  # a clear winner in the last program, then a tie before it
    for blocks in (None, 1, 3):
        assert dk.ln_gemv_argmax(x, g, b, EPS, w, scratch=scratch, blocks=blocks, tuning=tuning).item() == V - 1
    w[5] = w[V - 1]
    pos, token_buf, tokens_buf = torch.tensor(9, device="cuda"), torch.zeros(1, 1, dtype=torch.long, device="cuda"), torch.zeros(1, 20, dtype=torch.long, device="cuda")
    token = dk.ln_gemv_argmax(x, g, b, EPS, w, scratch=scratch, finish=(pos, token_buf, tokens_buf),
                              tuning=tuning)
    assert token.item() == 5 == token_buf.item() == tokens_buf[0, 10].item() and pos.item() == 10
    assert scratch.argmax_key.item() == dk.INT64_MIN and scratch.argmax_done.item() == 0


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_captured_greedy_step_on_cuda() -> None:
    """gpt2 in fp32: a CUDA graph of the fused step, replayed, makes the tokens that eager launches
    make, and tokens the reference path (on the CPU) agrees with."""
    from gptperf.steps.fast_decode import capture_graph

    model = build_model(preset("gpt2"), "cuda", torch.float32)
    caches = [StaticKVCache(model.config, 1, device="cuda") for _ in range(2)]
    bufs = [(torch.tensor([[50]], device="cuda"), torch.zeros(1, 1025, dtype=torch.long, device="cuda")) for _ in range(2)]
    cache, (token_buf, tokens_buf) = caches[0], bufs[0]
    graph = capture_graph(fused_decode_step(model, cache, token_buf, tokens_buf), torch.device("cuda"))
    for c in caches:
        c.reset()
    token_buf.fill_(50)
    steps = 300  # past the first attention splits
    for _ in range(steps):
        graph()
    eager_cache, (eager_token, eager_tokens) = caches[1], bufs[1]
    eager = fused_decode_step(model, eager_cache, eager_token, eager_tokens)
    for _ in range(steps):
        eager()
    assert cache.pos.item() == eager_cache.pos.item() == steps
    assert torch.equal(tokens_buf[0, 1:steps + 1], eager_tokens[0, 1:steps + 1])
    cpu_model = copy.deepcopy(model).cpu()
    ref_cache = StaticKVCache(model.config, 1)
    ref_token, ref_tokens = torch.tensor([[50]]), torch.zeros(1, 1025, dtype=torch.long)
    reference = fused_decode_step(cpu_model, ref_cache, ref_token, ref_tokens)
    for _ in range(20):
        reference()
    assert torch.equal(ref_tokens[0, 1:21], tokens_buf[0, 1:21].cpu())


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("shift", [0.0, 3.0])
@pytest.mark.parametrize("gelu", [False, True])
def test_single_pass_layer_norm_algebra_is_layer_norm_then_linear(shift: float, gelu: bool,
                                                                  scale: bool) -> None:
    """What `_dot` computes with LN — r·(W·(x·γ) − μ·c1) + c2 with μ, r from Σx and Σx², and
    `fold_layer_norm`'s c1, c2; with `scale`, r·(W'·x − μ·c1) + c2 streaming its copy W' = W∘γ —
    is nn.LayerNorm then F.linear (fp32; an input mean far from 0 included: the one-pass variance
    stays within fp32 noise)."""
    torch.manual_seed(3)
    n, k = 37, 100
    x = _rand(k, shift=shift)
    g, beta = _ln_params(k, torch.float32)
    w, b = _rand(n, k, scale=0.1), _rand(n)
    f = dk.fold_layer_norm(w, b, g, beta, rows=16, scale=scale)  # rows: the chunked loop is exercised
    assert (f.weight is not None) == scale
    mean = x.sum() / k
    rstd = torch.rsqrt((x * x).sum() / k - mean * mean + EPS)
    streamed = w @ (x * g) if f.weight is None else f.weight @ x
    y = rstd * (streamed - mean * f.c1) + f.c2
    if gelu:
        y = F.gelu(y, approximate="tanh")
    assert _rel(y, _ln_linear64(x, g, beta, w, b, gelu)) < 1e-5


def test_scaled_bf16_weight_cancels_the_mean_against_the_weights_streamed() -> None:
    """In bf16 the copy W∘γ is rounded; c1 is its own row sums, so the mean's term cancels
    exactly against what is streamed (a mean of 30 beside a spread of 1: the exact W·γ would
    leave μ·(rounding) behind, ~100× the error)."""
    torch.manual_seed(4)
    n, k = 64, 768
    x = _rand(k, shift=30.0)
    g, beta = _ln_params(k, torch.float32)
    w = _rand(n, k, scale=0.05).to(torch.bfloat16)
    f = dk.fold_layer_norm(w, None, g.to(torch.bfloat16), beta.to(torch.bfloat16), scale=True)
    assert f.weight is not None and f.weight.dtype == torch.bfloat16
    assert torch.equal(f.c1, f.weight.float().sum(1))
    mean = x.sum() / k
    rstd = torch.rsqrt((x * x).sum() / k - mean * mean + EPS)
    y = rstd * (f.weight.float() @ x - mean * f.c1) + f.c2
    ref = _ln_linear64(x, g.to(torch.bfloat16).float(), beta.to(torch.bfloat16).float(), w.float(), None, False)
    assert _rel(y, ref) < 1e-2  # bf16 rounding of W∘γ, one 2^-9 per element
    exact_c1 = w.float() @ g.to(torch.bfloat16).float()
    y_exact_c1 = rstd * (f.weight.float() @ x - mean * exact_c1) + f.c2
    assert _rel(y_exact_c1, ref) > 3 * _rel(y, ref)


@pytest.mark.parametrize("scale", [False, True])
def test_equal_rows_fold_to_equal_constants_wherever_they_sit(scale: bool) -> None:
    # the argmax's ties need equal logits from equal rows: W @ γ on this CPU rounded row 36, a
    # copy of row 29, an ulp apart (seed 9, 37×100), and the interpreted argmax then picked 36
    torch.manual_seed(9)
    w = torch.randn(37, 100)
    w[36] = w[29]
    f = dk.fold_layer_norm(w, None, torch.randn(100) + 1, torch.randn(100), scale=scale)
    assert f.c1[36] == f.c1[29] and f.c2[36] == f.c2[29]


def test_fold_for_copies_streams_each_copy_where_a_copy_is_streamed() -> None:
    ws = [torch.randn(8, 16) for _ in range(3)]
    g, beta = torch.randn(16), torch.randn(16)
    folded = dk.fold_for_copies(ws, g, beta)
    assert torch.equal(folded[0].c1, (ws[0] * g).sum(1))  # the first copy's constants, γ unscaled
    if dk.scales_weight(ws[0]):  # a kernel streams it (on a CPU: Triton's interpreter)
        assert all(f.weight is w and f.c1 is folded[0].c1 for f, w in zip(folded, ws, strict=True))
    else:  # nothing streams it: no copy at all
        assert all(f.weight is None for f in folded)


@pytest.mark.parametrize("reference", [True, False])
def test_the_bias_folded_in_is_the_one_bias_both_paths_add(reference: bool) -> None:
    """A `folded` holds the bias its c2 adds; the plain-torch reference adds that same bias, so a
    call given `folded` and no `bias` computes the layer with its bias on either path (a
    reference that read `bias` alone once dropped it), and a second, different bias is refused."""
    torch.manual_seed(12)
    n, k = 40, 96
    x = _rand(k).view(1, 1, k)
    g, beta = _ln_params(k, torch.float32)
    w, b = _rand(n, k, scale=0.1), _rand(n)
    folded = dk.fold_layer_norm(w, b, g, beta)
    expected = _ln_linear64(x.view(-1), g, beta, w, b, False)
    for bias in (None, b):
        y = dk.ln_gemv(x, g, beta, EPS, w, bias, folded=folded, reference=reference)
        assert _rel(y.view(-1), expected) < 1e-5
    with pytest.raises(ValueError, match="not the bias folded into"):
        dk.ln_gemv(x, g, beta, EPS, w, b.clone(), folded=folded, reference=reference)
    with pytest.raises(ValueError, match="holds a bias"):
        dk.ln_gemv_argmax(x, g, beta, EPS, w, folded=folded, reference=reference)
    assert all(f.bias is b for f in dk.fold_for_copies([w, w.clone()], g, beta, b))
