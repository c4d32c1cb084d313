"""The performance model's matmul FLOPs against torch.utils.flop_counter on the real gptperf model,
operation by operation (attributed through the model's record_function ranges)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, flop_registry  # noqa: E402

from gptperf import names  # noqa: E402
from gptperf.model import GPT, GPTConfig, KVCache  # noqa: E402
from gptperf.perfmodel import Workload, adhoc_hardware, count_parameters, predict  # noqa: E402
from gptperf.perfmodel import ops as K  # noqa: E402

HW = adhoc_hardware(100, 1000)
ATTENTION_OPS = {names.ATTN_SDPA, names.ATTN_SCORES, names.ATTN_CONTEXT}
# Non-matmul FLOPs per score element of each attention op (gptperf.perfmodel.ops, docs/perfmodel.md).
PER_SCORE = {names.ATTN_SCORES: K.SCALE, names.ATTN_CONTEXT: 0, names.ATTN_SDPA: K.SDPA_FWD_PER_SCORE}


class RangeFlops(TorchDispatchMode):
    """FLOPs of every aten op (FlopCounterMode's formulas), summed per innermost record_function range."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.flops: dict[str, int] = {}

    def __enter__(self):
        # the model opens its record_function ranges only while a profiler listens
        self._profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self._profiler.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        self._profiler.__exit__(None, None, None)
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if str(packet) == "profiler._record_function_enter_new":
            self.stack.append(args[0])
            return func(*args, **kwargs)
        if str(packet) == "profiler._record_function_exit":
            self.stack.pop()
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if packet in flop_registry:
            name = self.stack[-1] if self.stack else "<none>"
            self.flops[name] = self.flops.get(name, 0) + flop_registry[packet](*args, **kwargs, out_val=out)
        return out


CONFIGS = [
    GPTConfig(block_size=64, vocab_size=256, n_layer=2, n_head=4, n_embd=64),
    GPTConfig(block_size=32, vocab_size=96, n_layer=1, n_head=2, n_embd=32),
    GPTConfig(block_size=48, vocab_size=128, n_layer=3, n_head=3, n_embd=48),
]


def _model(config: GPTConfig) -> GPT:
    torch.manual_seed(0)
    return GPT(config).eval()


def _ratio_full_to_causal(T: int) -> float:
    return 2 * T / (T + 1)  # full T² over causal T(T+1)/2


@pytest.mark.parametrize("attention", ["math", "sdpa"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"L{c.n_layer}C{c.n_embd}")
def test_forward_matmul_flops_match_flopcounter_per_op(config: GPTConfig, attention: str) -> None:
    config = config.replace(attention=attention)
    B, T = 2, config.block_size // 2
    model = _model(config)
    idx = torch.randint(0, config.vocab_size, (B, T))
    counter = RangeFlops()
    # the math backend decomposes SDPA into bmm that FlopCounterMode's formulas see on CPU
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(idx, idx)
    pred = predict(config, Workload("forward", B, T, "fp32"), HW)
    seen = set()
    for op in pred.ops:
        measured = counter.flops.get(op.name, 0)
        seen.add(op.name)
        if op.component in ATTENTION_OPS:
            # FlopCounterMode counts attention at the full T×T; gptperf at the causal T(T+1)/2
            assert measured == pytest.approx(op.matmul_flops * _ratio_full_to_causal(T), rel=1e-12), op.name
            # counted by hand: QKᵀ and P·V are each 2·B·T·T·C at the full T×T
            matmuls = 2 if op.component == names.ATTN_SDPA else 1
            assert measured == matmuls * 2 * B * T * T * config.n_embd, op.name
            # full_flops is that full count plus the per-score work (scale, softmax), also full
            scores_full = B * config.n_head * T * T
            extra = PER_SCORE[op.component] * scores_full
            assert op.full_flops == pytest.approx(measured + extra, rel=1e-12), op.name
        else:
            assert measured == op.matmul_flops, op.name
        if op.matmul_flops == 0:  # softmax, norms, elementwise: FlopCounterMode counts 0, gptperf > 0
            assert measured == 0 and op.flops > 0, op.name
    assert set(counter.flops) <= seen  # nothing outside a named range


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_decode_with_kv_cache_matches_flopcounter(attention: str) -> None:
    config = CONFIGS[0].replace(attention=attention)
    B, L = 2, 20
    model = _model(config)
    cache = KVCache(config, B, max_len=L)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(torch.randint(0, config.vocab_size, (B, L - 1)), kv_cache=cache, last_logits_only=True)
        counter = RangeFlops()
        with counter:
            model(torch.randint(0, config.vocab_size, (B, 1)), kv_cache=cache, last_logits_only=True)
    pred = predict(config, Workload("decode", B, L, "fp32"), HW)
    for op in pred.ops:  # one new token attends to all L positions: no causal halving
        assert counter.flops.get(op.name, 0) == op.matmul_flops, op.name


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_prefill_matches_flopcounter(attention: str) -> None:
    config = CONFIGS[1].replace(attention=attention)
    B, P = 3, 12
    model = _model(config)
    cache = KVCache(config, B, max_len=P)
    counter = RangeFlops()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.randint(0, config.vocab_size, (B, P)), kv_cache=cache, last_logits_only=True)
    pred = predict(config, Workload("prefill", B, P, "fp32"), HW)
    for op in pred.ops:
        expected = op.matmul_flops * (_ratio_full_to_causal(P) if op.component in ATTENTION_OPS else 1)
        assert counter.flops.get(op.name, 0) == pytest.approx(expected, rel=1e-12), op.name


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_backward_matmul_flops_total(attention: str) -> None:
    """Backward: 2× forward per matmul. For fused SDPA gptperf counts the flash backward's five
    matmuls (S recomputed); the CPU math decomposition runs four — the difference is one
    forward-sized QK^T per layer."""
    config = CONFIGS[0].replace(attention=attention)
    B, T = 2, 16
    model = _model(config).train()
    idx = torch.randint(0, config.vocab_size, (B, T))
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fwd_counter:
            _, loss = model(idx, idx)
        with FlopCounterMode(display=False) as bwd_counter:
            loss.backward()
    pred = predict(config, Workload("train", B, T, "fp32"), HW)
    ratio = _ratio_full_to_causal(T)
    fwd = sum(o.matmul_flops * (ratio if o.component in ATTENTION_OPS else 1)
              for o in pred.ops if o.phase == names.FORWARD)
    bwd = sum(o.matmul_flops * (ratio if o.component in ATTENTION_OPS else 1)
              for o in pred.ops if o.phase == names.BACKWARD)
    assert fwd_counter.get_total_flops() == pytest.approx(fwd, rel=1e-12)
    if attention == "sdpa":
        recompute = config.n_layer * 2 * B * config.n_head * T * T * config.head_dim
        bwd -= recompute
    assert bwd_counter.get_total_flops() == pytest.approx(bwd, rel=1e-12)
    assert bwd_counter.get_total_flops() == 2 * fwd_counter.get_total_flops()


@pytest.mark.parametrize("config", CONFIGS + [GPTConfig(n_layer=1, n_head=2, n_embd=32)], ids=str)
def test_parameter_count_equals_the_model(config: GPTConfig) -> None:
    model = GPT(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    assert count_parameters(config, include_embeddings=False) == model.num_parameters(include_embeddings=False)


def _saved_for_backward(config: GPTConfig, B: int, T: int, dtype: str) -> int:
    """Bytes of the distinct non-parameter storages autograd keeps for backward."""
    model = _model(config).train()
    params = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    idx = torch.randint(0, config.vocab_size, (B, T))
    targets = torch.randint(0, config.vocab_size, (B, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        model(idx, targets)
    return sum(saved.values())


@pytest.mark.parametrize("attention, dtype", [("sdpa", "fp32"), ("math", "fp32"), ("sdpa", "bf16")])
def test_memory_model_matches_what_autograd_saves(attention: str, dtype: str) -> None:
    """Activations + autocast weight copies + log-probabilities + token ids and positions equal the
    tensors autograd keeps, to the byte (but the loss's 4-byte scalar). CPU autocast keeps softmax
    in bf16 where CUDA's runs it in fp32, so math attention under bf16 is checked on the GPU only."""
    config = CONFIGS[0].replace(attention=attention)
    B, T = 2, 32
    m = predict(config, Workload("train", B, T, dtype), HW).memory
    logprobs = B * T * config.vocab_size * 4
    ids = (2 * B * T + T) * 8
    predicted = m.activations + m.weight_copies + logprobs + ids
    assert _saved_for_backward(config, B, T, dtype) == pytest.approx(predicted, abs=4)
