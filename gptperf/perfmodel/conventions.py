"""Model FLOPs per token under the conventions other tools use, beside gptperf's exact count.

MFU figures are only comparable under one convention. With k = 6 for training (forward and
backward) and k = 2 for a forward pass, T the sequence (context) length, L layers, H heads,
Q = head dim, C = n_embd:

* gptperf: the sum of every predicted op (forward + backward, no optimizer), causal attention
  at the causal count, per token processed; `gptperf-full`: attention at the full T×T count.
* nanoGPT: k·N + 2k·L·H·Q·T, N = parameters without the position embedding.
* llm.c: k·N + k·L·C·T, N = all parameters (tied head once).
* torchtitan: k·N + 2k·L·H·Q·T, N = parameters without any embedding; causal masking ignored.
* Megatron: k·N_matmul + k·L·C·T: matmul weights only (12·L·C² + V·C) and causal attention halved.
"""

from __future__ import annotations

from typing import Any

from gptperf.errors import UserError
from gptperf.perfmodel.workload import count_parameters, matmul_parameters

CONVENTIONS: dict[str, str] = {
    "gptperf": "sum of every op (fwd+bwd, no optimizer), causal attention at T(T+1)/2, per token",
    "gptperf-full": "as gptperf with attention at the full T×T count (FlopCounterMode's matmul convention)",
    "nanogpt": "6N + 12·L·H·Q·T (N without position embedding)",
    "llm.c": "6N + 6·L·C·T (N all parameters)",
    "torchtitan": "6N + 12·L·H·Q·T (N without embeddings)",
    "megatron": "6·N_matmul + 6·L·C·T (N_matmul = 12·L·C² + V·C; causal attention halved)",
}


# The same conventions for a forward-only step (k = 2): what their formulas count there.
FORWARD_CONVENTIONS: dict[str, str] = {
    "gptperf": "sum of every op (forward only), causal attention at T(T+1)/2, per token",
    "gptperf-full": CONVENTIONS["gptperf-full"],
    "nanogpt": "2N + 4·L·H·Q·T (N without position embedding; forward only)",
    "llm.c": "2N + 2·L·C·T (N all parameters; forward only)",
    "torchtitan": "2N + 4·L·H·Q·T (N without embeddings; forward only)",
    "megatron": "2·N_matmul + 2·L·C·T (N_matmul = 12·L·C² + V·C; causal attention halved; forward only)",
}


def convention_formula(convention: str, has_backward: bool = True) -> str:
    """The formula of `convention` as it counts a step with a backward (k = 6) or without (k = 2)."""
    return (CONVENTIONS if has_backward else FORWARD_CONVENTIONS)[convention]


def _k(workload: Any) -> int:
    return 6 if workload.has_backward else 2


def flops_per_token(prediction: Any, convention: str = "gptperf") -> float:
    """FLOPs per token of `prediction` (a Prediction) under `convention` (see CONVENTIONS).

    The formula conventions are defined for training; for a forward-only workload they use k = 2,
    and for decoding T is the context length.
    """
    if convention not in CONVENTIONS:
        raise UserError(f"unknown FLOPs convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
    config, workload = prediction.config, prediction.workload
    tokens = prediction.tokens
    if convention == "gptperf":
        return prediction.model_flops / tokens
    if convention == "gptperf-full":
        return sum(o.full_flops for o in prediction.ops if o.phase != "opt") / tokens
    k = _k(workload)
    L, H, C, T = config.n_layer, config.n_head, config.n_embd, workload.context
    Q = config.head_dim
    if convention == "nanogpt":
        n = count_parameters(config) - config.block_size * C
        return k * n + 2 * k * L * H * Q * T
    if convention == "llm.c":
        return k * count_parameters(config) + k * L * C * T
    if convention == "torchtitan":
        return k * count_parameters(config, include_embeddings=False) + 2 * k * L * H * Q * T
    return k * matmul_parameters(config) + k * L * C * T  # megatron


def conventions_table(prediction: Any) -> dict[str, dict[str, Any]]:
    """{convention: {flops_per_token, mfu, formula}} for every convention."""
    out = {}
    for name in CONVENTIONS:
        fpt = flops_per_token(prediction, name)
        out[name] = {
            "flops_per_token": fpt,
            "mfu": fpt * prediction.tokens_per_s / prediction.peak_flops,
            "formula": convention_formula(name, prediction.workload.has_backward),
        }
    return out
