"""The batch-1 decode step as gptperf's fused kernels (`gptperf.steps.decode_kernels`): the
embedding, five kernels a layer, and the LM head that also picks, writes and advances — 62 kernels
for gpt2 where the compiled step runs about 140. `FastDecoder` captures it as its CUDA graph when
the plan says `fused_decode`; on a CPU the same calls run the kernels' plain-torch references.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gptperf import names
from gptperf.model import GPT
from gptperf.model.labels import record_function
from gptperf.steps import decode_kernels as K


def fused_decode_step(model: GPT, cache: object, token: torch.Tensor, tokens: torch.Tensor,
                      sample: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      tuning: K.KernelTuning = K.DEFAULT_TUNING) -> Callable[[], None]:
    """One decode step of `model` (batch 1) on a StaticKVCache `cache`: reads the last token from
    `token` (1, 1) and the position from `cache.pos`, writes K and V there, puts the next token in
    `token` and in `tokens[0, pos + 1]`, and advances `cache.pos`. Greedy unless `sample` (logits
    (1, vocab) -> tokens (1,)) is given; no host synchronisation either way.

    Each LayerNorm runs inside the gemv after it, from constants (`decode_kernels.fold_layer_norm`)
    computed here from the weights as they are now: build a new step after changing the model's
    weights. `tuning`: the kernels' launch settings (`decode_kernels.KernelTuning`)."""
    cfg = model.config
    eps = cfg.layer_norm_epsilon
    tr = model.transformer
    blocks = list(tr.h)
    head = model.lm_head.weight
    scratch = K.DecodeScratch.new(cfg.n_head, token.device)  # counters the kernels reset themselves
    with torch.no_grad():  # each LayerNorm's constants for the gemv after it
        attn_c = [K.fold_layer_norm(b.attn.c_attn.weight, b.attn.c_attn.bias, b.ln_1.weight, b.ln_1.bias,
                                    tuning=tuning) for b in blocks]
        fc_c = [K.fold_layer_norm(b.mlp.c_fc.weight, b.mlp.c_fc.bias, b.ln_2.weight, b.ln_2.bias,
                                  tuning=tuning) for b in blocks]
        head_c = K.fold_layer_norm(head, None, tr.ln_f.weight, tr.ln_f.bias, tuning=tuning)

    # each kernel under its operation's profiler range (names.py), so `profile` attributes an
    # uncaptured fused step's kernels; the LayerNorms, GELU and residual adds ride inside them
    label = [{c: names.layer_name(i, c) for c in (names.ATTN_QKV, names.ATTN_SDPA, names.ATTN_PROJ,
                                                  names.MLP_FC, names.MLP_PROJ)} for i in range(len(blocks))]

    @torch.no_grad()
    def step() -> None:
        with record_function(names.EMBED):
            x = K.embed(token, cache.pos, tr.wte.weight, tr.wpe.weight, tuning=tuning)
        for i, b in enumerate(blocks):
            at = label[i]
            with record_function(at[names.ATTN_QKV]):
                qkv = K.ln_gemv(x, b.ln_1.weight, b.ln_1.bias, eps, b.attn.c_attn.weight, folded=attn_c[i],
                                tuning=tuning)  # the bias is folded in
            with record_function(at[names.ATTN_SDPA]):
                y = K.decode_attention(qkv, cache.k[i], cache.v[i], cache.pos, cfg.n_head, scratch=scratch,
                                       tuning=tuning)
            with record_function(at[names.ATTN_PROJ]):
                x = K.gemv_residual(y, b.attn.c_proj.weight, b.attn.c_proj.bias, x, tuning=tuning)
            with record_function(at[names.MLP_FC]):
                h = K.ln_gemv(x, b.ln_2.weight, b.ln_2.bias, eps, b.mlp.c_fc.weight, gelu=True, folded=fc_c[i],
                              tuning=tuning)
            with record_function(at[names.MLP_PROJ]):
                x = K.gemv_residual(h, b.mlp.c_proj.weight, b.mlp.c_proj.bias, x, tuning=tuning)
        with record_function(names.LM_HEAD):
            if sample is None:
                K.ln_gemv_argmax(x, tr.ln_f.weight, tr.ln_f.bias, eps, head, folded=head_c, scratch=scratch,
                                 finish=(cache.pos, token, tokens), tuning=tuning)
                return
            logits = K.ln_gemv(x, tr.ln_f.weight, tr.ln_f.bias, eps, head, folded=head_c,
                               tuning=tuning).view(1, -1)
        K.finish(sample(logits), cache.pos, token, tokens, tuning=tuning)

    return step
