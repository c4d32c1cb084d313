"""Runnable workloads: one step of train, forward, prefill, decode or decode_nocache on a real model.

bench, profile, inference and report all run their steps through `build_runner`, so every tool
measures the same work that the performance model predicts for the same `Workload`.
A step is a list of phases (forward, backward, optimizer for training; one phase otherwise) so a
timer can put events between them without synchronising.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.profiler import record_function

from gptperf import names
from gptperf.dtypes import check_dtype
from gptperf.errors import UserError
from gptperf.model import GPT, GPTConfig, KVCache
from gptperf.runtime import autocast, model_dtype, set_matmul_precision, torch_dtype

WORKLOAD_KINDS: tuple[str, ...] = ("train", "forward", "prefill", "decode", "decode_nocache")


@dataclass
class Runner:
    """One workload on one model. `step()` runs every phase once; `phases` are the same, apart."""

    kind: str
    config: GPTConfig
    model: torch.nn.Module  # the (possibly compiled) module that runs
    device: torch.device
    dtype: str
    batch: int
    seq: int
    phases: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None

    @property
    def tokens_per_step(self) -> int:
        """Tokens processed (trained on, prefilled or generated) per step."""
        return self.batch if self.kind.startswith("decode") else self.batch * self.seq

    def step(self) -> None:
        for _, run_phase in self.phases:
            run_phase()


def check_workload(kind: str, batch: int, seq: int, config: GPTConfig) -> None:
    """One-line errors for a workload the model cannot run."""
    if kind not in WORKLOAD_KINDS:
        raise UserError(f"unknown workload {kind!r}; valid: {', '.join(WORKLOAD_KINDS)}")
    if batch <= 0:
        raise UserError(f"batch must be positive, got {batch}")
    config.check_sequence(seq)


def build_runner(
    config: GPTConfig,
    kind: str,
    *,
    batch: int,
    seq: int,
    dtype: str = "fp32",
    device: torch.device | str = "cpu",
    compile: bool = False,
    seed: int = 0,
    model: GPT | None = None,
) -> Runner:
    """A ready-to-run step of `kind` with random weights (or `model`) and random tokens.

    For decode and decode_nocache `seq` is the context length L: decode writes one new token at
    position L-1 after L-1 cached ones (so it attends to L positions), decode_nocache recomputes
    all L positions for the same new token.
    """
    check_workload(kind, batch, seq, config)
    check_dtype(dtype)
    device = torch.device(device)
    set_matmul_precision(dtype)
    torch.manual_seed(seed)
    if model is None:
        model = GPT(config)
    # Training and its forward keep fp32 master weights under autocast; inference keeps the
    # weights themselves in bf16/fp16, so a decode step reads 2 bytes per parameter, not 4 + a cast.
    inference = kind in ("prefill", "decode", "decode_nocache")
    weights_dtype = torch_dtype(dtype) if inference else model_dtype(dtype)
    model = model.to(device=device, dtype=weights_dtype)
    model.train(kind == "train")
    run_model: torch.nn.Module = torch.compile(model) if compile else model
    tokens = torch.randint(0, config.vocab_size, (batch, seq + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    runner = Runner(kind, config, run_model, device, dtype, batch, seq)

    if kind == "train":
        fused = device.type == "cuda"  # the fused AdamW kernel exists for CUDA tensors only
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
        runner.optimizer = opt
        state: dict[str, torch.Tensor] = {}

        def forward() -> None:
            with autocast(device, dtype):
                _, state["loss"] = run_model(x, y)

        def backward() -> None:
            scaler.scale(state.pop("loss")).backward()

        def optimizer_step() -> None:
            with record_function(names.OPTIMIZER):
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)

        runner.phases = [(names.FORWARD, forward), (names.BACKWARD, backward),
                         (names.OPTIMIZER_PHASE, optimizer_step)]
        return runner

    if kind == "forward":

        @torch.no_grad()
        def forward_only() -> None:
            with autocast(device, dtype):
                run_model(x, y)

        runner.phases = [(names.FORWARD, forward_only)]
        return runner

    cache_dtype = weights_dtype
    if kind == "prefill":
        cache = KVCache(config, batch, seq, device=device, dtype=cache_dtype)

        @torch.no_grad()
        def prefill() -> None:
            cache.reset()
            run_model(x, kv_cache=cache, last_logits_only=True)

        runner.phases = [(names.FORWARD, prefill)]
        return runner

    if kind == "decode":
        cache = KVCache(config, batch, seq, device=device, dtype=cache_dtype)
        with torch.no_grad():
            if seq > 1:
                model(x[:, : seq - 1], kv_cache=cache, last_logits_only=True)
        new_token = x[:, seq - 1 : seq]

        @torch.no_grad()
        def decode() -> None:
            cache.length = seq - 1  # the same step every time: L-1 cached, one new
            run_model(new_token, kv_cache=cache, last_logits_only=True)

        runner.phases = [(names.FORWARD, decode)]
        return runner

    # decode_nocache: the whole context recomputed for one new token.
    @torch.no_grad()
    def recompute() -> None:
        run_model(x, last_logits_only=True)

    runner.phases = [(names.FORWARD, recompute)]
    return runner
