"""The steps every measurement runs: the one train step (`train.TrainStep`, what `gptperf train`
runs), the eager and fast inference steps (`inference`, `fast_decode`: static KV cache, compiled,
CUDA graph; `gemv`: the one-row Triton kernel), and `build_step`, which makes any of them from
(config, workload, ExecutionPlan, device). Importing this package does not import torch.

    from gptperf.steps import build_step
    step = build_step(preset("tiny"), Workload("train", 12, 64), ExecutionPlan(), "cpu")
    step.step(); step.phases; step.plan.to_dict()
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FastDecoder", "StaticKVCache", "Step", "TrainSettings", "TrainStep", "build_model",
           "build_step", "make_optimizer"]

_WHERE = {
    "FastDecoder": "fast_decode", "StaticKVCache": "fast_decode", "build_model": "fast_decode",
    "Step": "build", "build_step": "build",
    "TrainSettings": "train", "TrainStep": "train", "make_optimizer": "train",
}


def __getattr__(name: str) -> Any:  # lazy: torch is imported when a step is asked for
    if name in _WHERE:
        return getattr(importlib.import_module(f"gptperf.steps.{_WHERE[name]}"), name)
    raise AttributeError(name)
