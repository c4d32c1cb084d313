"""The fused decode step's operations in plain torch: what each kernel of
`gptperf.steps.decode_kernels` computes, the path its public function takes where no kernel runs
(a CPU, `reference=True`), and what the kernels' parity tests hold them to.

Each computes in fp32 and rounds to the input's dtype at the end, as the kernels do (they skip the
intermediate roundings of the unfused bf16 model). The argmax is taken over a packed int64 key
(`argmax_key`), the order the argmax kernel's atomic max keeps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LOW32 = 0xFFFFFFFF


def embed_reference(token: torch.Tensor, pos: torch.Tensor, wte: torch.Tensor,
                    wpe: torch.Tensor) -> torch.Tensor:
    x = wte.index_select(0, token.reshape(1)).float() + wpe.index_select(0, pos.reshape(1)).float()
    return x.to(wte.dtype).view(1, 1, -1)


def _layer_norm32(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor,
                  eps: float) -> torch.Tensor:
    k = x.size(-1)
    return F.layer_norm(x.reshape(k).float(), (k,), ln_weight.float(), ln_bias.float(), eps)


def ln_gemv_reference(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, eps: float,
                      weight: torch.Tensor, bias: torch.Tensor | None = None,
                      gelu: bool = False) -> torch.Tensor:
    y = F.linear(_layer_norm32(x, ln_weight, ln_bias, eps), weight.float(),
                 None if bias is None else bias.float())
    if gelu:
        y = F.gelu(y, approximate="tanh")
    return y.to(x.dtype).view(1, 1, -1)


def gemv_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   gelu: bool = False) -> torch.Tensor:
    """weight · x + bias [then GELU] for an x that is already normalised."""
    y = F.linear(x.reshape(-1).float(), weight.float(), None if bias is None else bias.float())
    if gelu:
        y = F.gelu(y, approximate="tanh")
    return y.to(x.dtype).view(1, 1, -1)


def gemv_residual_reference(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            residual: torch.Tensor) -> torch.Tensor:
    out = residual.reshape(-1).float() + F.linear(y.reshape(-1).float(), weight.float(),
                                                  None if bias is None else bias.float())
    return out.to(residual.dtype).view(1, 1, -1)


def decode_attention_reference(qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               pos: torch.Tensor, n_head: int) -> torch.Tensor:
    """Writes k, v at `pos`, then attends over 0..pos (reads `pos` on the host: a sync)."""
    C = qkv.size(-1) // 3
    D = C // n_head
    q, k, v = qkv.reshape(3, n_head, 1, D)
    at = pos.reshape(1)
    k_cache[0, :, at] = k.to(k_cache.dtype)
    v_cache[0, :, at] = v.to(v_cache.dtype)
    n = int(pos) + 1
    scores = (k_cache[0, :, :n].float() @ q.float().transpose(1, 2)).squeeze(-1) / math.sqrt(D)
    y = torch.softmax(scores, dim=-1)[:, None, :] @ v_cache[0, :, :n].float()  # (H, 1, D)
    return y.reshape(1, 1, C).to(qkv.dtype)


def argmax_key(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The int64 key the argmax kernel maximises: an order-preserving int32 image of the fp32
    value in the high half, 0xFFFFFFFF - index in the low half, so that the largest key is the
    largest value and, among equal values, the smallest index (torch.argmax's first maximum).
    -0.0 counts as +0.0; every NaN ranks above +inf (torch.argmax returns the first NaN)."""
    v = values.float()
    v = torch.where(v == 0, torch.zeros_like(v), v)
    bits = v.view(torch.int32).long()
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    ordered = torch.where(torch.isnan(v), torch.full_like(ordered, 0x7FFFFFFF), ordered)
    return (ordered << 32) | (_LOW32 - index.long())


def argmax_index(key: torch.Tensor) -> torch.Tensor:
    """The index packed into an `argmax_key`."""
    return _LOW32 - (key & _LOW32)


def ln_gemv_argmax_reference(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor,
                             eps: float, weight: torch.Tensor) -> torch.Tensor:
    """argmax of the logits rounded to x's dtype (as the model's logits are), via the packed key
    (`ln_weight` None: of weight · x)."""
    logits = (ln_gemv_reference(x, ln_weight, ln_bias, eps, weight) if ln_weight is not None
              else gemv_reference(x, weight)).reshape(-1)
    index = torch.arange(logits.numel(), device=logits.device)
    return argmax_index(argmax_key(logits, index).max()).reshape(1)


def finish_reference(token: torch.Tensor, pos: torch.Tensor, token_buf: torch.Tensor,
                     tokens_buf: torch.Tensor) -> None:
    token_buf.view(-1)[:1].copy_(token.reshape(1))
    tokens_buf.index_copy_(1, (pos + 1).reshape(1), token.reshape(1, 1).to(tokens_buf.dtype))
    pos.add_(1)
