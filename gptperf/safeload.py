"""torch.load of a file a user hands us: tensors and plain data only (`weights_only=True`), and
our own one-line reason when it is refused — never torch's advice to load it unsafely instead;
and weights read from such a file checked for NaN and infinity (`check_finite`)."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import Any

from gptperf.errors import UserError


def _reason(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, EOFError) or "Ran out of input" in text:
        return "the file is empty or cut short"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a Python object ({found.group(1)}) besides tensors and plain data, "
                "and gptperf never unpickles those (they could run code)")
    if isinstance(err, pickle.UnpicklingError):
        return "it is not a torch.save file of tensors and plain data (an unknown pickle or junk)"
    if "zip archive" in text or "central directory" in text:
        return "it is truncated or corrupted (its zip archive is incomplete)"
    first = (text.strip().splitlines() or [type(err).__name__])[0]
    if "weights_only" in first or "trust" in first:  # torch's advice to load unsafely: never shown
        return f"torch refused it ({type(err).__name__})"
    # torch's legacy loader trips over other files anywhere (a text file: IndexError)
    return (f"it is not a torch.save file of tensors and plain data "
            f"({type(err).__name__}: {first[:120]})")


def load_tensors(path: str | os.PathLike[str], what: str, map_location: Any = "cpu", *,
                 message: str = "{what} {path!r} cannot be read: {reason}") -> Any:
    """`torch.load(path, weights_only=True)`, or a one-line UserError: `message` formatted with
    `what`, `path` (a str) and the reason."""
    import torch  # deferred: loads torch

    try:
        with warnings.catch_warnings():  # e.g. torch's note on pickle protocols, naming weights_only
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, pickle and unpickler-policy errors all mean an unusable file
        raise UserError(message.format(what=what, path=str(path), reason=_reason(err))) from None


def check_finite(where: str, tensors: Any) -> None:
    """A one-line UserError naming the first floating-point tensor of `tensors` (name -> tensor)
    holding a NaN or an infinity: weights no training step leaves (a NaN loss keeps the old
    checkpoint), which would make every logit NaN."""
    import torch  # deferred: loads torch

    for key, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise UserError(f"checkpoint {where}: {key} holds {bad} NaN or infinite value(s) of "
                                f"{value.numel()}; the weights are corrupt (a diverged run?): use "
                                "another checkpoint")
