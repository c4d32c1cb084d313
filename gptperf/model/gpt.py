"""The GPT-2-style decoder: embeddings, N blocks (LayerNorm, attention, LayerNorm, 4C MLP), LM head.

Every operation runs inside a `record_function` range named from `gptperf.names`; that is all
the model knows of profiling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptperf import names
from gptperf.model.attention import CausalSelfAttention, KVCache
from gptperf.model.config import GPTConfig, pads_lm_head
from gptperf.model.labels import record_function


class MLP(nn.Module):
    """C -> 4C -> C with GELU (tanh approximation, as GPT-2)."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self._fc = names.layer_name(layer, names.MLP_FC)
        self._act = names.layer_name(layer, names.MLP_ACT)
        self._proj = names.layer_name(layer, names.MLP_PROJ)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with record_function(self._fc):
            x = self.c_fc(x)
        with record_function(self._act):
            x = F.gelu(x, approximate="tanh")
        with record_function(self._proj):
            return self.c_proj(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config, layer)
        self._ln_1 = names.layer_name(layer, names.LN_1)
        self._ln_2 = names.layer_name(layer, names.LN_2)
        self._residual = names.layer_name(layer, names.RESIDUAL)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        with record_function(self._ln_1):
            h = self.ln_1(x)
        h = self.attn(h, kv_cache)
        with record_function(self._residual):
            x = x + h
        with record_function(self._ln_2):
            h = self.ln_2(x)
        h = self.mlp(h)
        with record_function(self._residual):
            return x + h


class GPT(nn.Module):
    """A GPT-2-style decoder whose LM head shares its weight with the token embedding.

    `pad_head`: whether the LM head multiplies by the token table padded to `config.padded_vocab_size`
    rows (the logits are the same); None follows `pads_lm_head` for the device, dtype and rows
    the head runs at, in eager steps.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.pad_head: bool | None = None
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as GPT-2
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that feed the residual stream.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Parameters counted once (the tied LM head is the token embedding)."""
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
        last_logits_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) — or (B, 1, vocab) with `last_logits_only` — and the mean
        cross-entropy against `targets` (positions with target -1 are ignored)."""
        B, T = idx.shape
        with record_function(names.EMBED):  # the positions' arange too: it is the embedding's work
            if kv_cache is None:
                self.config.check_sequence(T)
                pos = torch.arange(T, device=idx.device)
            else:
                pos = kv_cache.positions(T, idx.device)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        with record_function(names.LN_F):
            x = self.transformer.ln_f(x)
        if last_logits_only:
            x = x[:, -1:, :]
        with record_function(names.LM_HEAD):
            padded = self._padded_head(x)
            logits = self.lm_head(x) if padded is None else padded[..., : self.config.vocab_size]
        loss = None
        if targets is not None:
            with record_function(names.LOSS):
                scores = logits if padded is None else _fill_pad_columns(padded, self.config.vocab_size)
                loss = F.cross_entropy(
                    scores.reshape(-1, scores.size(-1)), targets.reshape(-1), ignore_index=-1
                )
        return logits, loss

    def _padded_head(self, x: torch.Tensor) -> torch.Tensor | None:
        """The head's product with the padded table, its columns past the vocabulary zero; None
        where the head is not padded."""
        pad = self.pad_head
        if pad is None and torch.compiler.is_compiling():
            pad = False  # a compiled step's head is left to inductor, which pads such operands itself
        elif pad is None:
            device = x.device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
            pad = pads_lm_head(self.config, device, dtype.itemsize, x.numel() // x.size(-1))
        if not pad or self.config.padded_vocab_size == self.config.vocab_size:
            return None
        weight = self.lm_head.weight  # the table with zero rows below it: rows of 16 bytes for cuBLAS
        weight = torch.cat([weight, weight.new_zeros(self.config.padded_vocab_size - weight.size(0), weight.size(1))])
        return F.linear(x, weight)


def _fill_pad_columns(padded: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The padded product with its columns past the vocabulary set to -inf in place, for the loss
    to read whole: dense rows, and no slice's gradient to zero and copy in backward. Outside
    autograd, which needs nothing of it: the matmul keeps no copy of its output, and the loss's
    gradient at these columns is exp(-inf) = 0 (so the loss and its gradient are the unpadded ones)."""
    with torch.no_grad():
        padded[..., vocab_size:] = float("-inf")
    return padded
