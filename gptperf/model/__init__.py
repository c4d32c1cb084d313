"""The GPT model: config (pure Python), modules and KV cache (torch), GPT-2 checkpoints."""

from __future__ import annotations

from typing import Any

from gptperf.model.config import ATTENTION_IMPLEMENTATIONS, PRESETS, GPTConfig, preset

__all__ = ["ATTENTION_IMPLEMENTATIONS", "PRESETS", "GPTConfig", "preset", "GPT", "KVCache"]


def __getattr__(name: str) -> Any:
    # torch is imported only when the model itself is asked for, so config stays torch-free.
    if name == "GPT":
        from gptperf.model.gpt import GPT  # deferred: lazy package attribute

        return GPT
    if name == "KVCache":
        from gptperf.model.attention import KVCache  # deferred: lazy package attribute

        return KVCache
    raise AttributeError(name)
