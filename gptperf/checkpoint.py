"""Checkpoints: written atomically, read back only as tensors and plain data (gptperf.safeload).

A checkpoint is one plain dict (tensors, dicts, lists, str, int, float) in `<out>/ckpt.pt`:
a format tag and version, the model config, the model and optimizer state, the GradScaler
state, the step, the data RNG state, the training config and the loss history.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gptperf.atomic import atomic_path
from gptperf.errors import UserError
from gptperf.model import gpt
from gptperf.model.config import GPTConfig
from gptperf.safeload import check_finite, load_tensors
from gptperf.writable import usable_path

FORMAT = "gptperf-checkpoint"
VERSION = 1
FILENAME = "ckpt.pt"
REQUIRED = ("format", "version", "model_config", "model")


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """`path` itself if it is a file, else `<path>/ckpt.pt`."""
    path = usable_path(path, "checkpoint")
    return path / FILENAME if path.is_dir() else path


def save_checkpoint(path: str | os.PathLike[str], **state: Any) -> Path:
    """Write `state` (plus the format tag and version) atomically to `path` (a file, or a
    folder that gets ckpt.pt). `model_config` may be a GPTConfig; everything else must be
    what `torch.load(weights_only=True)` accepts."""
    target = usable_path(path, "checkpoint")
    if target.is_dir() or (not target.suffix and not target.exists()):
        target = target / FILENAME
    if "model_config" in state and isinstance(state["model_config"], GPTConfig):
        state["model_config"] = state["model_config"].to_dict()
    doc = {"format": FORMAT, "version": VERSION, **state}
    with atomic_path(target) as tmp:
        torch.save(doc, tmp)
    return target


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint: a one-line UserError if it is missing, truncated, not a
    gptperf checkpoint, of another format version, or its weights do not fit its config."""
    file = checkpoint_file(path)
    if not file.is_file():
        where = f"{str(path)!r} has no {FILENAME}" if Path(path).is_dir() else f"{str(path)!r} not found"
        raise UserError(f"checkpoint {where}; train one with `gptperf train --out DIR`")
    doc = load_tensors(file, "checkpoint", map_location)  # tensors and plain data only
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        tag = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise UserError(f"{str(file)!r} is not a gptperf checkpoint (format {tag!r}, "
                        f"expected {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise UserError(f"checkpoint {str(file)!r} has format version {doc.get('version')!r}; "
                        f"this gptperf reads version {VERSION}")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise UserError(f"checkpoint {str(file)!r} lacks {', '.join(missing)}")
    try:
        config = GPTConfig.from_dict(doc["model_config"])
    except (UserError, TypeError) as err:
        raise UserError(f"checkpoint {str(file)!r} has an invalid model config: {err}") from None
    _check_state_dict(file, config, doc["model"])
    return doc


def _check_state_dict(file: Path, config: GPTConfig, state: Any) -> None:
    """Compare names and shapes with a model built on the meta device (no memory, no init)."""
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {str(file)!r}: model state is a {type(state).__name__}, "
                        "not a state_dict")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in gpt.GPT(config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' …' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' …' if len(unexpected) > 3 else ''}")
        raise UserError(f"checkpoint {str(file)!r}: weights do not match its config "
                        f"({'; '.join(parts)})")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(f"checkpoint {str(file)!r}: {key} has shape {got}, its config "
                            f"({config.name}, n_embd={config.n_embd}, "
                            f"vocab_size={config.vocab_size}) needs {shape}")


def load_model(path: str | os.PathLike[str], device: Any = "cpu") -> gpt.GPT:
    """A GPT in eval mode from a gptperf checkpoint (file or folder with ckpt.pt) or from a
    Hugging Face GPT-2 folder (config.json + weights)."""
    folder = usable_path(path, "checkpoint")
    if folder.is_dir() and not (folder / FILENAME).is_file() and (folder / "config.json").is_file():
        from gptperf.model.hf import load_hf_gpt2  # deferred: tests swap this module in sys.modules

        return load_hf_gpt2(folder, device=device)
    doc = load_checkpoint(path)
    check_finite(repr(str(checkpoint_file(path))), doc["model"])
    model = gpt.GPT(GPTConfig.from_dict(doc["model_config"]))
    model.load_state_dict(doc["model"])
    return model.to(device).eval()
