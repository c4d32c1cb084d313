"""Inference: KV cache against recompute, prefill against decode, the batch where decoding turns
compute-bound (`sweep`). The fast decode path it measures — static KV cache, compiled step, CUDA
graph — is `gptperf.steps.fast_decode` (re-exported here). Importing this package does not
import torch."""

from __future__ import annotations

from typing import Any

__all__ = ["FastDecoder", "InferenceResult", "StaticKVCache", "build_model", "run_inference_study"]


def __getattr__(name: str) -> Any:  # lazy, so `gptperf.inference.sweep`'s pure helpers stay light
    if name in ("FastDecoder", "StaticKVCache", "build_model"):
        from gptperf.steps import fast_decode  # deferred: loads torch

        return getattr(fast_decode, name)
    if name in ("InferenceResult", "run_inference_study"):
        from gptperf.inference import sweep  # deferred: lazy package attribute

        return getattr(sweep, name)
    raise AttributeError(name)
