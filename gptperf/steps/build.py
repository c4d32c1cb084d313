"""`build_step`: one step of any workload (train, forward, prefill, decode, decode_nocache) on a real
model under an ExecutionPlan — what bench, profile, inference and report time and trace, and,
for train, the very step `gptperf train` runs.

A step is a list of phases (forward, backward, optimizer for training; one phase otherwise) so a
timer can put events between them without synchronising; `step()` runs them all once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gptperf import names
from gptperf.dtypes import check_dtype
from gptperf.errors import UserError
from gptperf.model import GPTConfig
from gptperf.perfmodel import Workload
from gptperf.plan import FUSED_DECODE_BATCH, INFERENCE_KINDS, ExecutionPlan
from gptperf.runtime import autocast, model_dtype, set_matmul_precision, torch_dtype
from gptperf.steps import decode_kernels, gemv
from gptperf.steps.fast_decode import build_model
from gptperf.steps.inference import inference_step
from gptperf.steps.train import TrainSettings, TrainStep

Phase = tuple[str, Callable[[], None]]


@dataclass
class Step:
    """One workload on one model under `plan` (the plan that runs: see `notes` for what was
    changed from the plan asked for). `step()` runs every phase once; `phases` are the same, apart."""

    config: GPTConfig
    workload: Workload
    plan: ExecutionPlan
    model: torch.nn.Module  # the GPT whose weights run (uncompiled)
    device: torch.device
    phases: list[Phase]
    train: TrainStep | None = None  # the training step itself (optimizer, scaler), for train
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.workload.kind

    @property
    def batch(self) -> int:
        return self.workload.batch

    @property
    def seq(self) -> int:
        return self.workload.seq

    @property
    def dtype(self) -> str:
        return self.workload.dtype

    @property
    def tokens_per_step(self) -> int:
        """Tokens trained on (every micro-batch), prefilled or generated per step."""
        accum = self.train.settings.grad_accum if self.train is not None else 1
        return self.workload.tokens * accum

    def step(self) -> None:
        for _, run_phase in self.phases:
            run_phase()


def check_step(config: GPTConfig, workload: Workload, plan: ExecutionPlan, device: torch.device) -> None:
    """One-line UserErrors for a step that cannot run, before any model is built."""
    if not isinstance(workload, Workload):
        raise UserError(f"workload must be a Workload, got {type(workload).__name__}")
    if not isinstance(plan, ExecutionPlan):
        raise UserError(f"plan must be an ExecutionPlan, got {type(plan).__name__}")
    check_dtype(workload.dtype)
    config.check_sequence(workload.seq)
    plan.check(workload.kind, workload.dtype)
    if plan.attention != config.attention:
        raise UserError(f"plan attention {plan.attention!r} differs from the model's "
                        f"{config.attention!r}; use one attention for both")
    if plan.cuda_graph and device.type != "cuda":
        raise UserError("CUDA graphs need a CUDA device; on CPU use mode 'eager' or 'compiled'")
    if workload.kind in ("train", "forward") and workload.dtype == "fp16" and device.type != "cuda":
        raise UserError("dtype 'fp16' autocast needs a GPU; on CPU use bf16 or fp32")


def runnable_plan(plan: ExecutionPlan, device: torch.device, batch: int) -> tuple[ExecutionPlan, list[str]]:
    """`plan` without the kernels this device cannot run (the one-row gemv and the fused decode
    kernels need CUDA and Triton; the fused ones batch 1), and a note for each one dropped."""
    notes: list[str] = []
    if plan.one_row_kernel and not (device.type == "cuda" and gemv.available()):
        plan = plan.replace(one_row_kernel=False)
        notes.append("the one-row gemv kernel needs CUDA and Triton: the step runs without it")
    if plan.fused_decode and not (device.type == "cuda" and decode_kernels.available()
                                  and batch == FUSED_DECODE_BATCH):
        plan = plan.replace(fused_decode=False)
        notes.append("the fused decode kernels run batch 1 on CUDA with Triton: this step runs "
                     "the compiled model")
    return plan, notes


def build_step(
    config: GPTConfig,
    workload: Workload,
    plan: ExecutionPlan,
    device: torch.device | str = "cpu",
    *,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    train_settings: TrainSettings | None = None,
) -> Step:
    """A ready-to-run (compiled, warmed, captured as the plan says) step with random weights (or
    `model`) and random tokens.

    Training and its forward keep fp32 master weights under autocast; inference keeps the
    weights themselves in the dtype, so a decode step reads 2 bytes per bf16 parameter. A train
    step is `TrainStep` — the step `gptperf train` runs — fed one fixed random batch. Kernels the
    device cannot run are dropped from the plan (`runnable_plan`); `notes` say so.
    """
    device = torch.device(device)
    check_step(config, workload, plan, device)
    kind, batch, seq, dtype = workload.kind, workload.batch, workload.seq, workload.dtype
    plan, notes = runnable_plan(plan, device, batch)
    set_matmul_precision(dtype)
    inference = kind in INFERENCE_KINDS
    weights_dtype = torch_dtype(dtype) if inference else model_dtype(dtype)
    if model is None:
        model = build_model(config, device, weights_dtype, seed=seed)
    else:
        model = model.to(device=device, dtype=weights_dtype)
    model.train(kind == "train")
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, config.vocab_size, (batch, seq + 1), generator=gen).to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    made = Step(config, workload, plan, model, device, [], notes=notes)

    if kind == "train":
        made.train = TrainStep(model, plan, device, dtype, lambda: (x, y), train_settings)
        made.phases = made.train.phases
        return made

    if kind == "forward":
        run_model = torch.compile(model) if plan.compiled else model

        @torch.no_grad()
        def forward_only() -> None:
            with autocast(device, dtype):
                run_model(x, y)

        made.phases = [(names.FORWARD, forward_only)]
        return made

    made.phases = [(names.FORWARD, inference_step(model, kind, batch, seq, plan, x))]
    return made
