"""Inference steps — prefill, decode and decode_nocache — eager, compiled, or fast (static KV cache,
compiled, replayed as a CUDA graph), each one callable that runs one step under an ExecutionPlan.

Definitions (those of the performance model's workloads): prefill P fills a KV cache with a prompt
of P tokens; decode at context L writes one new token per sequence at position L-1 after L-1
cached ones (it attends to L positions), the same step every call; decode_nocache recomputes all
L positions for that one new token. Logits of the last position only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gptperf.errors import UserError
from gptperf.model import GPT, KVCache
from gptperf.plan import ExecutionPlan
from gptperf.steps.fast_decode import FastDecoder, StaticKVCache, capture_graph, plain_linear


def inference_step(model: GPT, kind: str, batch: int, seq: int, plan: ExecutionPlan,
                   tokens: torch.Tensor) -> Callable[[], None]:
    """One step of `kind` (prefill, decode, decode_nocache) on `model` under `plan`, built and,
    when compiled or graphed, warmed up; `tokens` (batch, >= seq) are the prompt or context.
    The model's weights are used in their own dtype (no autocast)."""
    plan.check(kind)
    device = next(model.parameters()).device
    if plan.cuda_graph and device.type != "cuda":
        raise UserError("a CUDA-graph step needs a CUDA device; use mode 'eager' or 'compiled' on CPU")
    config = model.config
    dtype = next(model.parameters()).dtype
    x = tokens[:, :seq]

    if kind == "decode" and plan.static_cache:
        # FastDecoder's own step: forward, greedy pick and token bookkeeping, as `generate` runs it.
        dec = FastDecoder(model, batch, seq, compile=plan.compiled, cuda_graph=plan.cuda_graph,
                          one_row_kernel=plan.one_row_kernel, fused=plan.fused_decode)
        dec.token.copy_(x[:, seq - 1 : seq])
        dec.warmup()

        def fast_decode() -> None:
            dec.set_length(seq - 1)  # the cache's contents do not change the step's time
            dec.step()

        return fast_decode

    plain_linear(model)  # undo a fast decode step's Linear classes: eager kernels are eager's
    if plan.static_cache:  # prefill into the static cache
        cache: KVCache | StaticKVCache = StaticKVCache(config, batch, seq, device=device, dtype=dtype)
    elif kind != "decode_nocache":
        cache = KVCache(config, batch, seq, device=device, dtype=dtype)

    # A growing KVCache keeps its length on the host (compiled as it is, graph breaks allowed);
    # the static cache and recompute have fixed shapes and compile to one graph.
    run_model = (torch.compile(model, fullgraph=plan.static_cache or kind == "decode_nocache")
                 if plan.compiled else model)
    if kind == "prefill":
        @torch.no_grad()
        def step() -> None:
            cache.reset()
            run_model(x, kv_cache=cache, last_logits_only=True)
    elif kind == "decode":
        with torch.no_grad():
            if seq > 1:
                model(x[:, : seq - 1], kv_cache=cache, last_logits_only=True)
        new_token = x[:, seq - 1 : seq]

        @torch.no_grad()
        def step() -> None:
            cache.length = seq - 1  # the same step every time: L-1 cached, one new
            run_model(new_token, kv_cache=cache, last_logits_only=True)
    else:
        @torch.no_grad()
        def step() -> None:
            run_model(x, last_logits_only=True)

    if not plan.cuda_graph:
        if plan.compiled:
            step()  # compile now, not in the first timed call
        return step
    return capture_graph(step, device)
