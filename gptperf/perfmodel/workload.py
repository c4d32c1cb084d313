"""What a step runs (`Workload`: kind, batch, sequence, dtype), the sizes it implies for a GPTConfig
(`Shape`), and the parameter counts: the shared ground of the performance model's ops
(transformer), memory and FLOP conventions, which all import it and nothing of each other's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gptperf import names
from gptperf.checks import check_positive_int
from gptperf.dtypes import MIXED_PRECISION, check_dtype, dtype_bytes
from gptperf.errors import UserError
from gptperf.model.config import LAYER_WEIGHTS, GPTConfig

TRAIN, FORWARD, PREFILL, DECODE, DECODE_NOCACHE = "train", "forward", "prefill", "decode", "decode_nocache"
WORKLOADS: tuple[str, ...] = (TRAIN, FORWARD, PREFILL, DECODE, DECODE_NOCACHE)
WORKLOAD_HELP: dict[str, str] = {
    TRAIN: "forward + backward + AdamW step on B sequences of T=seq tokens (with the loss)",
    FORWARD: "forward pass with the loss on B sequences of T=seq tokens (no backward)",
    PREFILL: "a prompt of P=seq tokens fills the KV cache; logits of the last position only",
    DECODE: "one new token per sequence with the KV cache, attending to L=seq positions (L−1 cached + itself)",
    DECODE_NOCACHE: "one new token per sequence recomputing the whole context of L=seq tokens",
}


@dataclass(frozen=True)
class Workload:
    """What runs: `kind` in WORKLOADS, `batch` sequences, `seq` tokens (the context length L for
    decode and decode_nocache, the prompt length P for prefill), numeric format `dtype`."""

    kind: str
    batch: int
    seq: int
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.kind not in WORKLOADS:
            raise UserError(f"unknown workload {self.kind!r}; valid: {', '.join(WORKLOADS)}")
        check_positive_int(self.batch, "batch")
        check_positive_int(self.seq, "seq")
        check_dtype(self.dtype)

    @property
    def new_tokens(self) -> int:
        """T: tokens per sequence the model runs on this step."""
        return 1 if self.kind == DECODE else self.seq

    @property
    def context(self) -> int:
        """L: positions each new token attends to (its own included)."""
        return self.seq

    @property
    def tokens(self) -> int:
        """Tokens processed (train/forward/prefill) or generated (decode*) per step."""
        return self.batch if self.kind in (DECODE, DECODE_NOCACHE) else self.batch * self.seq

    @property
    def has_backward(self) -> bool:
        return self.kind == TRAIN

    @property
    def has_loss(self) -> bool:
        return self.kind in (TRAIN, FORWARD)

    @property
    def uses_kv_cache(self) -> bool:
        return self.kind in (PREFILL, DECODE)

    @property
    def last_logits_only(self) -> bool:
        return self.kind in (PREFILL, DECODE, DECODE_NOCACHE)

    @property
    def mixed_precision(self) -> bool:
        """bf16/fp16 training and its forward run under autocast with fp32 master weights;
        inference (prefill, decode*) keeps the weights themselves in bf16/fp16."""
        return self.dtype in MIXED_PRECISION and self.kind in (TRAIN, FORWARD)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "batch": self.batch, "seq": self.seq, "dtype": self.dtype,
                "new_tokens": self.new_tokens, "context": self.context, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Workload:
        """The inverse of `to_dict` (the derived sizes are recomputed)."""
        return cls(d["kind"], d["batch"], d["seq"], d.get("dtype", "fp32"))


def count_parameters(config: GPTConfig, include_embeddings: bool = True) -> int:
    """Parameters counted once (the LM head is tied to the token embedding), as GPT.num_parameters."""
    C, V = config.n_embd, config.vocab_size
    per_layer = 12 * C * C + 13 * C  # ln_1 2C, c_attn 3C²+3C, c_proj C²+C, ln_2 2C, c_fc 4C²+4C, c_proj 4C²+C
    n = config.n_layer * per_layer + 2 * C  # + ln_f
    if include_embeddings:
        n += V * C + config.block_size * C
    return n


def count_parameter_tensors(config: GPTConfig) -> int:
    """Parameter tensors an optimizer steps (GPT.parameters(), the tied head once): 12 a block
    (ln_1, c_attn, c_proj, ln_2, c_fc, mlp c_proj: weight and bias each), wte, wpe, ln_f's two."""
    return 12 * config.n_layer + 4


def block_shapes(width: int) -> list[tuple[int, ...]]:
    """The 12 parameter tensors of one GPT block of width C (ln_1, attn.qkv, attn.proj, ln_2,
    mlp.fc, mlp.proj: weights and biases)."""
    c = width
    return [(c,), (c,), (3 * c, c), (3 * c,), (c, c), (c,), (c,), (c,), (4 * c, c), (4 * c,),
            (c, 4 * c), (c,)]


def parameter_sizes(config: GPTConfig) -> tuple[tuple[int, int], ...]:
    """(parameters, tensors of that size) of the tensors an optimizer steps, largest first: the
    tensors of `count_parameter_tensors`, whose sizes sum to `count_parameters`."""
    C = config.n_embd
    per_layer = [math.prod(s) for s in block_shapes(C)]
    sizes: dict[int, int] = {}
    for n in [config.vocab_size * C, config.block_size * C, C, C] + per_layer * config.n_layer:
        sizes[n] = sizes.get(n, 0) + 1
    return tuple(sorted(sizes.items(), reverse=True))


def master_copied_parameters(config: GPTConfig) -> int:
    """Parameters the plan's master weights keep in bf16 beside fp32 copies: the blocks' Linear
    weights and biases (not the LM head, which is the fp32 token embedding)."""
    per_layer = sum(math.prod(config.weight_shape(op)) + config.weight_shape(op)[0] for op in LAYER_WEIGHTS)
    return config.n_layer * per_layer


def master_copied_tensors(config: GPTConfig) -> int:
    """Parameter tensors of `master_copied_parameters`: each Linear layer's weight and bias."""
    return 2 * len(LAYER_WEIGHTS) * config.n_layer


def matmul_parameters(config: GPTConfig) -> int:
    """Weights that multiply activations: the four Linear weights per layer and the tied head."""
    per_layer = sum(math.prod(config.weight_shape(op)) for op in LAYER_WEIGHTS)
    return config.n_layer * per_layer + math.prod(config.weight_shape(names.LM_HEAD))


@dataclass(frozen=True)
class Shape:
    """The sizes of one step: B batch, T new tokens, L context, C width, H heads, D head size,
    V vocabulary; `a` and `w` bytes per element (see gptperf.perfmodel.transformer)."""


    B: int
    T: int
    L: int
    C: int
    H: int
    D: int
    V: int
    n_layer: int
    a: int  # bytes per element of the compute dtype
    w: int  # bytes per element of parameters / residual stream / fp32-kept outputs
    causal: bool
    wl: int  # bytes per element of the blocks' Linear weights: w, or a under master weights

    @property
    def N(self) -> int:
        return self.B * self.T

    @property
    def scores_full(self) -> int:
        """Elements of the materialised score matrix: B·H·T·L."""
        return self.B * self.H * self.T * self.L

    @property
    def scores_causal(self) -> int:
        """Score elements on or below the diagonal: B·H·T(T+1)/2 when causal (L = T), else B·H·T·L."""
        return self.B * self.H * self.T * (self.T + 1) // 2 if self.causal else self.scores_full


def shape(config: GPTConfig, workload: Workload, master_weights: bool = False) -> Shape:
    """The sizes of `workload` on `config`; `master_weights`: the plan keeps the blocks' Linear
    weights in the compute dtype (fp32 copies beside them for the optimizer)."""
    config.check_sequence(workload.seq)
    a = dtype_bytes(workload.dtype)
    w = 4 if workload.mixed_precision else a
    T = workload.new_tokens
    return Shape(B=workload.batch, T=T, L=workload.context, C=config.n_embd, H=config.n_head,
                 D=config.head_dim, V=config.vocab_size, n_layer=config.n_layer, a=a, w=w,
                 causal=workload.context == T,  # no past: the model masks causally (1×1 too)
                 wl=a if master_weights and workload.has_backward else w)
