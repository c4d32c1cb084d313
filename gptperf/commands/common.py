"""Command-line flags several sub-commands share: the model shape (a preset plus overrides), the device."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

# GPTConfig fields with a flag of the same name (--n-layer, ...) that overrides the preset's value
MODEL_FIELDS: tuple[str, ...] = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "attention")

def add_model_arguments(parser: argparse._ActionsContainer, default_preset: str, *, preset_help: str | None = None,
                        vocab_size: bool = True) -> None:
    """--preset and the flags that override its fields; `vocab_size=False` leaves --vocab-size to
    the caller (it means something else where the data decides the vocabulary)."""
    from gptperf.model.config import ATTENTION_IMPLEMENTATIONS, PRESETS

    parser.add_argument("--preset", default=default_preset, choices=list(PRESETS),
                        help=preset_help or f"model shape (default: {default_preset})")
    parser.add_argument("--n-layer", type=int, metavar="N", help="override the preset's number of blocks")
    parser.add_argument("--n-head", type=int, metavar="N", help="override the preset's number of heads")
    parser.add_argument("--n-embd", type=int, metavar="N", help="override the preset's width C")
    parser.add_argument("--block-size", type=int, metavar="N", help="override the preset's longest sequence")
    if vocab_size:
        parser.add_argument("--vocab-size", type=int, metavar="N", help="override the preset's vocabulary size")
    parser.add_argument("--attention", choices=ATTENTION_IMPLEMENTATIONS,
                        help="attention implementation (default: the preset's)")


def model_overrides(args: argparse.Namespace, fields: Sequence[str] = MODEL_FIELDS) -> dict[str, Any]:
    """The model fields among `fields` given on the command line (flags left out are absent)."""
    return {k: getattr(args, k) for k in fields if getattr(args, k, None) is not None}


def config_from_args(args: argparse.Namespace) -> Any:  # -> GPTConfig
    """The GPTConfig of --preset with the override flags applied (validated: UserError if bad)."""
    from gptperf.model.config import preset

    return preset(args.preset, **model_overrides(args))


def add_device_argument(parser: argparse._ActionsContainer, default: str | None = "auto") -> None:
    """--device; None leaves the choice to the library (whose own default is auto)."""
    parser.add_argument("--device", default=default, help="auto, cpu or cuda[:N] (default: auto)")
