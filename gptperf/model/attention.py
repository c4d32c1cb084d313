"""Causal multi-head self-attention, `math` or `sdpa`, and the KV cache that decoding keeps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptperf import names
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.model.labels import record_function


def cache_length(config: GPTConfig, batch: int, max_len: int | None) -> int:
    """The positions a KV cache of `batch` sequences holds (`max_len`, default the block size),
    after checking both: a one-line UserError naming the bad value."""
    max_len = config.block_size if max_len is None else max_len
    config.check_sequence(max_len)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise UserError(f"batch must be a positive integer, got {batch!r}")
    return max_len


class KVCache:
    """Keys and values of past tokens for every layer, preallocated for `max_len` positions.

    Shapes are (n_layer, batch, n_head, max_len, head_dim). `length` counts the positions
    already filled; a forward pass writes its new tokens after them and then `advance`s.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch: int,
        max_len: int | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        max_len = cache_length(config, batch, max_len)
        shape = (config.n_layer, batch, config.n_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def positions(self, new_tokens: int, device: torch.device) -> torch.Tensor:
        """Positions of the next `new_tokens` tokens."""
        if self.length + new_tokens > self.max_len:
            raise UserError(
                f"KV cache full: {self.length} + {new_tokens} tokens exceed its {self.max_len} positions"
            )
        return torch.arange(self.length, self.length + new_tokens, device=device)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Store the new keys/values of `layer`; return all keys, values and the attention mask.

        The mask is None when plain causal masking (or none, for one new token) is right.
        """
        new = k.size(2)
        end = self.length + new
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        mask = None
        if self.length > 0 and new > 1:  # new tokens see all the past and the causal part of themselves
            mask = torch.ones(new, end, dtype=torch.bool, device=k.device).tril(diagonal=self.length)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end], mask

    def advance(self, new_tokens: int) -> None:
        self.length += new_tokens

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Q = XW_q, K = XW_k, V = XW_v; softmax(QK^T / sqrt(d)) V per head; heads concatenated, projected."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.layer = layer
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # W_q, W_k, W_v side by side
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attention = config.attention
        self.register_buffer(
            "causal_mask",
            torch.ones(config.block_size, config.block_size, dtype=torch.bool).tril(),
            persistent=False,
        )
        self._labels = {c: names.layer_name(layer, c) for c in names.LAYER_COMPONENTS}

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        label = self._labels
        with record_function(label[names.ATTN_QKV]):
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            mask = None
            if kv_cache is not None:  # storing the new K and V is part of computing them
                k, v, mask = kv_cache.update(self.layer, k, v)
        # causal without a mask, except one new token after a cache's past (it sees every key);
        # decided from the cache's length, a plain int: a test on T would be a SymBool under
        # torch.compile's dynamic shapes, which sdpa's is_causal refuses
        causal = mask is None and (kv_cache is None or kv_cache.length == 0)
        if self.attention == "sdpa":
            with record_function(label[names.ATTN_SDPA]):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        else:
            y = self._math_attention(q, k, v, mask, causal)
        with record_function(label[names.ATTN_PROJ]):
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.c_proj(y)

    def _math_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        label = self._labels
        T, L = q.size(2), k.size(2)
        with record_function(label[names.ATTN_SCORES]):
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            if causal:
                mask = self.causal_mask[:T, :L]
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
        with record_function(label[names.ATTN_SOFTMAX]):
            probs = F.softmax(scores, dim=-1)
        with record_function(label[names.ATTN_CONTEXT]):
            return probs @ v
