"""Where and in what precision torch work runs: device and dtype from their short names, autocast, sync."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from gptperf.dtypes import check_dtype
from gptperf.errors import UserError
from gptperf.quiet import drop_tf32_advice

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is a one-line UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, colon, index = name.partition(":")
    # "cpu:3" names no fourth CPU (torch has one CPU device): refused, not quietly read as "cpu"
    if base not in ("cpu", "cuda") or (colon and (base == "cpu" or not index.isdigit())):
        raise UserError(f"unknown device {name!r}; valid: {', '.join(DEVICES)} (or cuda:N)")
    if base == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    if base == "cuda" and colon and int(index) >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def as_device(device: torch.device | str) -> torch.device:
    """A torch.device from a name (`resolve_device`, checked) or from a torch.device as it is."""
    return resolve_device(device) if isinstance(device, str) else torch.device(device)


def torch_dtype(name: str) -> torch.dtype:
    return TORCH_DTYPES[check_dtype(name)]


def set_matmul_precision(dtype: str) -> None:
    """tf32 lets fp32 matmuls use the tensor cores; every other name asks for full fp32 (and
    inductor's advice against that choice is filtered: `quiet.drop_tf32_advice`)."""
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    torch.backends.cudnn.allow_tf32 = dtype == "tf32"
    if dtype != "tf32":
        drop_tf32_advice()


@contextlib.contextmanager
def autocast(device: torch.device, dtype: str) -> Iterator[None]:
    """bf16/fp16: autocast with fp32 master weights; fp32/tf32/fp64: the model's own dtype."""
    if dtype in ("bf16", "fp16"):
        if device.type == "cpu" and dtype == "fp16":
            raise UserError("dtype 'fp16' autocast needs a GPU; on CPU use bf16 or fp32")
        with torch.autocast(device_type=device.type, dtype=torch_dtype(dtype)):
            yield
    else:
        yield


def model_dtype(dtype: str) -> torch.dtype:
    """The dtype parameters are kept in: fp32 under mixed precision, else the dtype itself."""
    return torch.float64 if dtype == "fp64" else torch.float32


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_graph(fn: Callable[[], Any], device: torch.device, warmup: Callable[[], Any] | None = None,
               warmups: int = 1) -> torch.cuda.CUDAGraph:
    """`fn` captured as a CUDA graph, after `warmup` (default: `fn`) ran `warmups` times on a side
    stream: off the capture's stream, as torch's CUDA-graph notes ask (cuBLAS handles, workspaces,
    a compiled `fn`'s compilation)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmups):
            (warmup or fn)()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph

