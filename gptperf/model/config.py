"""GPTConfig: the shape of a GPT-2-style decoder, its presets and its validation (pure Python)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gptperf import names
from gptperf.errors import UserError

ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("math", "sdpa")
# (out, in) of each weight matrix in units of the width C, as nn.Linear stores it
_WEIGHTS_IN_C = {names.ATTN_QKV: (3, 1), names.ATTN_PROJ: (1, 1), names.MLP_FC: (4, 1),
                 names.MLP_PROJ: (1, 4)}
LAYER_WEIGHTS: tuple[str, ...] = tuple(_WEIGHTS_IN_C)  # a block's weight matrices, in forward order
# the weights a LayerNorm feeds: ln_1 the qkv, ln_2 the MLP's up projection, ln_f the LM head
NORM_FED_WEIGHTS: tuple[str, ...] = (names.ATTN_QKV, names.MLP_FC, names.LM_HEAD)
# cuBLAS loads 16 bytes at a time only from rows that are a multiple of 16 bytes: on a GPU a
# vocabulary such as GPT-2's 50257 sends the LM head's three matmuls to kernels 5-8x slower in
# bf16 (BENCHMARKS.md, "Session 55"). There the head multiplies by the token table padded with
# zero rows to a multiple of this many (nanoGPT's 50304) and the logits are the first vocab_size
# columns of its output: `pads_lm_head`, `GPTConfig.padded_vocab_size`. (On an H100, gpt2's eager bf16
# train step at B=8, T=1024: 43.1 ms, padded 29.8, at 50304 tokens 28.3.)
HEAD_ROW_MULTIPLE = 64
# The padded table is built each step (a read and a write of the table): it pays where the head's
# matmuls are long, in 16-bit and over this many rows or more. Below that (a decode step's batch)
# the slow kernels cost less than the copy: on an H100 the break-even is near 150 rows forward,
# 85 in training (BENCHMARKS.md, "Session 56"); fp32 runs both alike.
HEAD_PAD_MIN_ROWS = 256


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the model. Defaults are GPT-2 small (124M)."""

    block_size: int = 1024  # longest sequence the position embedding covers
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    attention: str = "sdpa"  # "math": explicit QK^T, mask, softmax, @V; "sdpa": fused kernel
    layer_norm_epsilon: float = 1e-5
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for key in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{key} must be a positive integer, got {value!r}")
            if value <= 0:
                raise UserError(f"{key} must be a positive integer, got {value}")
        if self.n_embd % self.n_head != 0:
            raise UserError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                f"choose n_head among the divisors of {self.n_embd}"
            )
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise UserError(
                f"unknown attention {self.attention!r}; valid: {', '.join(ATTENTION_IMPLEMENTATIONS)}"
            )
        if not (isinstance(self.layer_norm_epsilon, (int, float)) and self.layer_norm_epsilon > 0):
            raise UserError(f"layer_norm_epsilon must be a positive number, got {self.layer_norm_epsilon!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def weight_shape(self, component: str) -> tuple[int, int]:
        """(out, in) of the weight matrix `component` multiplies by, as nn.Linear stores it: a
        block's attn.qkv, attn.proj, mlp.fc or mlp.proj, or the LM head (the tied embedding)."""
        if component == names.LM_HEAD:
            return self.vocab_size, self.n_embd
        if component not in _WEIGHTS_IN_C:
            raise ValueError(f"{component!r} multiplies by no weight matrix; valid: "
                             f"{', '.join([*_WEIGHTS_IN_C, names.LM_HEAD])}")
        rows, cols = _WEIGHTS_IN_C[component]
        return rows * self.n_embd, cols * self.n_embd

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the LM head's weight where the head is padded (`pads_lm_head`): the vocabulary
        rounded up to a multiple of HEAD_ROW_MULTIPLE."""
        return -(-self.vocab_size // HEAD_ROW_MULTIPLE) * HEAD_ROW_MULTIPLE

    def check_sequence(self, length: int) -> None:
        """Raise a UserError if a sequence of `length` tokens does not fit the position embedding."""
        if length <= 0:
            raise UserError(f"sequence length must be positive, got {length}")
        if length > self.block_size:
            raise UserError(
                f"sequence length {length} exceeds block_size={self.block_size}; "
                f"use at most {self.block_size} tokens"
            )

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with `changes` applied (validated like any config)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise UserError(f"unknown config field(s) {sorted(unknown)}; valid: {config_fields()}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GPTConfig:
        # A string is iterable too: without this, "hi" reads as the unknown fields 'h' and 'i'.
        if not isinstance(data, Mapping):
            shown = repr(data)
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            raise UserError(f"model_config must be a mapping of config fields "
                            f"({', '.join(config_fields())}), got a {type(data).__name__}: {shown}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:  # key=repr: a file's keys need not all be strings, and mixed types don't sort
            raise UserError(f"unknown config field(s) {sorted(unknown, key=repr)}; valid: "
                            f"{config_fields()}")
        return cls(**data)


def pads_lm_head(config: GPTConfig, device_type: str, element_bytes: int, rows: int) -> bool:
    """Whether the model's eager LM head runs padded to `config.padded_vocab_size` rows on a `device_type`
    ("cpu", "cuda") device, multiplying `rows` rows of `element_bytes`-byte numbers: on a GPU, in
    16-bit, over at least HEAD_PAD_MIN_ROWS rows, where the vocabulary is not a multiple of
    HEAD_ROW_MULTIPLE (a compiled step's head is inductor's, which pads such operands itself)."""
    return (device_type == "cuda" and element_bytes == 2 and rows >= HEAD_PAD_MIN_ROWS
            and config.padded_vocab_size != config.vocab_size)


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(GPTConfig)]


# `tiny` is nanoGPT's character-level shape (0.8M parameters): it reaches a validation loss
# under 1.5 nats/byte on the embedded corpus within a few minutes on 2 CPU cores.
# The GPT-2 shapes pad the vocabulary 50257 -> 50304 (a multiple of 64), as nanoGPT does, so the
# LM head's GEMMs keep the tensor cores' alignment. Checkpoints loaded from GPT-2 keep 50257.
GPT2_PADDED_VOCAB = 50304
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(block_size=256, vocab_size=256, n_layer=4, n_head=4, n_embd=128, name="tiny"),
    "gpt2": GPTConfig(vocab_size=GPT2_PADDED_VOCAB, n_layer=12, n_head=12, n_embd=768, name="gpt2"),
    "gpt2-medium": GPTConfig(
        vocab_size=GPT2_PADDED_VOCAB, n_layer=24, n_head=16, n_embd=1024, name="gpt2-medium"
    ),
    "gpt2-large": GPTConfig(
        vocab_size=GPT2_PADDED_VOCAB, n_layer=36, n_head=20, n_embd=1280, name="gpt2-large"
    ),
    "gpt2-xl": GPTConfig(vocab_size=GPT2_PADDED_VOCAB, n_layer=48, n_head=25, n_embd=1600, name="gpt2-xl"),
}


# Fields that change the function the model computes (its shape and numerics), in the order of
# the command-line flags. `attention` is not among them: math and sdpa compute the same function
# with the same weights, only with different kernels, and every JSON records it beside the name.
NAMING_FIELDS: tuple[str, ...] = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size",
                                  "layer_norm_epsilon")


def preset(name: str, **overrides: Any) -> GPTConfig:
    """The preset `name`, with any fields overridden (None values are ignored).

    A config that differs from the preset in a field of NAMING_FIELDS is not the preset and is
    named for what it is: the preset's name, '+', then `field=value` for each field that differs,
    comma-separated in NAMING_FIELDS order — e.g. 'tiny+n_layer=32,n_head=32,n_embd=4096'. The
    name is exact (`preset('tiny', n_layer=32, n_head=32, n_embd=4096)` makes that config again)
    and stays the bare preset name when only `attention` changes.
    """
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    base = PRESETS[name]
    if not changes:
        return base
    config = base.replace(**changes)
    differ = [f"{k}={getattr(config, k)}" for k in NAMING_FIELDS if getattr(config, k) != getattr(base, k)]
    return config.replace(name=f"{name}+{','.join(differ)}") if differ else config


def config_from_name(name: str) -> GPTConfig | None:
    """The config a gptperf name spells ('tiny+n_layer=1,n_embd=64' or a preset, as `preset` names
    them), else None."""
    base, _, rest = name.partition("+")
    overrides: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            overrides[key] = int(value)
        except ValueError:
            try:
                overrides[key] = float(value)
            except ValueError:
                return None
    try:
        return preset(base, **overrides)
    except (UserError, TypeError):
        return None


def preset_of(config: GPTConfig) -> str | None:
    """The preset `config` was made from (see `preset`), or None when it was not made from one."""
    base = config.name.split("+", 1)[0]
    return base if base in PRESETS else None
