"""The one training step: what `gptperf train` runs, and what `bench train` and `profile --workload
train` time and trace — AdamW with weight-decay groups, GradScaler for fp16, autocast, gradient
accumulation, clipping, torch.compile, the fused AdamW kernel and bf16 weights with fp32 master
copies (`gptperf.steps.master_weights`), stepped in one kernel (`gptperf.steps.master_adamw`), as
the ExecutionPlan says.

`TrainStep.run()` is one optimizer step for a training loop (it returns the loss); `phases` are
the same work apart — forward and backward once per micro-batch, then the optimizer — for a
timer that puts events between them (`gptperf.measure.timer.time_phases` sums a repeated phase).

With the fused AdamW kernel and no GradScaler (bf16, fp32) the step never waits for the device:
clipping and the skip of a non-finite step are folded into the kernel's `grad_scale` and
`found_inf` inputs (the protocol GradScaler itself uses), so the host queues the next step while
the device still runs this one; `run()` reads the loss once, after the update is queued.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.profiler import record_function

from gptperf import names
from gptperf.errors import UserError
from gptperf.model.labels import record_function as record_label
from gptperf.plan import ExecutionPlan
from gptperf.runtime import autocast
from gptperf.steps import cross_entropy, master_adamw
from gptperf.steps.master_weights import MasterWeights

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainSettings:
    """The optimisation a train step does (defaults: those of `gptperf train`'s tiny recipe; the
    rate does not change a step's time)."""

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0: off
    grad_accum: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.grad_accum, bool) or not isinstance(self.grad_accum, int) or self.grad_accum < 1:
            raise UserError(f"grad_accum must be a positive integer, got {self.grad_accum!r}")
        if not (isinstance(self.grad_clip, (int, float)) and math.isfinite(self.grad_clip)
                and self.grad_clip >= 0):
            raise UserError(f"grad_clip must be a finite number >= 0, got {self.grad_clip!r}")


def make_optimizer(weights: Iterable[torch.Tensor], settings: TrainSettings,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW over `weights` (a model's parameters, or their master copies) with weight decay on
    2-D weights (matmuls, embeddings) only, as nanoGPT; `fused`: the fused kernel (the plan's
    `fused_optimizer`)."""
    params = [p for p in weights if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas, **extra)


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all `grads` together, fp32 whatever their dtypes (bf16 gradients of master
    weights beside fp32 ones): each tensor's norm accumulated in fp32 by one multi-tensor kernel
    per dtype, as `torch.nn.utils.get_total_norm` (which would round bf16 tensors' norms to bf16)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    norms = [n for group in by_dtype.values() for n in torch._foreach_norm(group, 2, dtype=torch.float32)]
    return torch.linalg.vector_norm(torch.stack(norms))


class _LossOnly(torch.nn.Module):
    """The model's loss alone. A compiled graph that also returned the logits would be handed a
    dense zero gradient for them in backward (gpt2, B=12, T=1024: 1.2 GB filled, then added).
    `loss_fn(logits (N, V), targets (N,))`: a loss kernel of the plan's in place of the model's
    own cross-entropy."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[None, torch.Tensor]:
        if self.loss_fn is None:
            return None, self.model(x, y)[1]
        logits = self.model(x)[0]
        with record_label(names.LOSS):
            return None, self.loss_fn(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


class TrainStep:
    """One optimizer step of `model` on the batches `next_batch()` returns (one per micro-batch).

    `model` is the GPT itself (its weights are checkpointed, clipped and evaluated); the plan may
    run it compiled (`run_model`). Keeps the optimizer and the fp16 GradScaler, and under the
    plan's `master_weights` the fp32 copies the optimizer steps (`master`; the model is cast to
    bf16 here).
    """

    def __init__(self, model: torch.nn.Module, plan: ExecutionPlan, device: torch.device, dtype: str,
                 next_batch: Callable[[], Batch], settings: TrainSettings | None = None) -> None:
        plan.check("train", dtype)
        if dtype == "fp16" and device.type != "cuda":
            raise UserError("dtype 'fp16' needs a CUDA GPU (GradScaler autocast); on CPU use bf16 or fp32")
        self.model = model
        self.plan = plan
        self.device = device
        self.dtype = dtype
        self.next_batch = next_batch
        self.settings = settings or TrainSettings()
        self.run_model: torch.nn.Module = model
        if plan.master_weights and isinstance(model, DDP):
            raise UserError("master_weights trains a single-process step; under DDP use "
                            "master_weights=false")
        if plan.fused_master_update and not master_adamw.available(device):
            raise UserError("fused_master_update runs a Triton kernel on a CUDA GPU; use "
                            "fused_master_update=false here")
        self.master = (MasterWeights(model, copy_gradients=not plan.fused_master_update)
                       if plan.master_weights else None)
        if plan.fused_loss and (isinstance(model, DDP) or not cross_entropy.available(device)):
            raise UserError("fused_loss runs a single-process compiled step on a CUDA GPU with "
                            "Triton; use fused_loss=false here")
        if plan.compiled:  # DDP is compiled as it is: dynamo splits its graph at the buckets
            loss_fn = cross_entropy.fused_cross_entropy if plan.fused_loss else None
            self.run_model = torch.compile(model if isinstance(model, DDP) else _LossOnly(model, loss_fn))
        weights = self.master.stepped if self.master is not None else model.parameters()
        self.optimizer = make_optimizer(weights, self.settings, fused=plan.fused_optimizer)
        # the copies keep no gradient then: AdamW's kernel steps the fp32 parameters, this the copies
        self.master_update = (master_adamw.MasterAdamW(self.master.params, self.master.master, self.optimizer)
                              if self.master is not None and plan.fused_master_update else None)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
        # No host synchronisation in the step: the fused kernel clips and skips (module docstring).
        self.in_kernel_update = plan.update_in_kernel(dtype)
        self._loss: torch.Tensor | None = None
        self._total = torch.zeros((), device=device)

    # -- the phases ------------------------------------------------------------------------
    def forward(self) -> None:
        """One micro-batch forward (with the loss), under autocast."""
        x, y = self.next_batch()
        with autocast(self.device, self.dtype):
            _, loss = self.run_model(x, y)
        self._total += loss.detach().float()
        self._loss = loss

    def backward(self) -> None:
        """Its backward, the loss scaled for fp16 and divided over the micro-batches."""
        loss, self._loss = self._loss, None
        if loss is None:
            raise RuntimeError("TrainStep.backward without a forward before it")
        self.scaler.scale(loss / self.settings.grad_accum).backward()

    def optimizer_step(self) -> None:
        """Clip the gradient norm (if asked), step AdamW through the scaler, clear the gradients."""
        with record_function(names.OPTIMIZER):
            self._update()

    def _update(self) -> None:
        if self.in_kernel_update:
            self._update_in_kernel()
            return
        if self.master is not None:
            self.master.gradients_in()
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._stepped(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._finish_update()

    def _update_in_kernel(self) -> None:
        """`fused_step` on the optimizer's gradients (and the bf16 ones the one-pass master update
        reads), then the gradients and the loss cleared."""
        if self.master is not None and self.master_update is None:
            self.master.gradients_in()
        grads = [p.grad for p in self._stepped() if p.grad is not None]
        if self.master_update is not None:
            grads += [w.grad for w in self.master_update.weights]
        self.fused_step(grads)
        self._finish_update()

    def _stepped(self) -> list[torch.Tensor]:
        """The tensors the optimizer steps (the model's parameters or their master copies)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _finish_update(self) -> None:
        """The master copies cast back into the model; the model's gradients and the loss cleared
        (the master copies' gradients stay: the next update overwrites them)."""
        if self.master is not None and self.master_update is None:
            self.master.weights_out()  # (the one-pass update wrote them)
        self.model.zero_grad(set_to_none=True)
        self._total.zero_()

    def fused_step(self, grads: list[torch.Tensor]) -> None:
        """Clip and step on the device alone: AdamW's fused kernel divides `grads` (its own
        parameters' gradients) by `grad_scale` = max(‖g‖ / clip, 1) (clip_grad_norm_'s factor,
        inverted) and leaves weights, moments and step count as they were where `found_inf` is 1
        (a non-finite loss or norm); the one-pass master update takes the same two. Clears neither
        the gradients nor the loss."""
        bad = ~torch.isfinite(self._total)
        scale = None
        if self.settings.grad_clip > 0:
            norm = total_norm(grads)
            bad |= ~torch.isfinite(norm)
            scale = torch.clamp(norm / self.settings.grad_clip, min=1.0)
        found_inf = bad.float()
        self.optimizer.grad_scale, self.optimizer.found_inf = scale, found_inf
        try:
            self.optimizer.step()
        finally:
            self.optimizer.grad_scale = self.optimizer.found_inf = None
        if self.master_update is not None:
            self.master_update.step(scale, found_inf)

    @property
    def phases(self) -> list[tuple[str, Callable[[], None]]]:
        """forward, backward per micro-batch, then the optimizer (names from gptperf.names)."""
        micro = [(names.FORWARD, self.forward), (names.BACKWARD, self.backward)]
        return micro * self.settings.grad_accum + [(names.OPTIMIZER_PHASE, self.optimizer_step)]

    # -- the training loop's view ------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def run(self) -> float:
        """One optimizer step: every micro-batch forward and backward, then the update; returns
        the mean loss over the micro-batches (a host synchronisation; after the update is queued
        when the fused kernel clips). A non-finite loss skips the update (weights and optimizer
        state stay as they were) and is returned for the caller to stop on; under the fused
        kernel a non-finite gradient norm skips it too."""
        for _ in range(self.settings.grad_accum):
            self.forward()
            self.backward()
        if self.in_kernel_update:  # queue the update first, then wait for the loss
            total = self._total.clone()
            self.optimizer_step()
            return total.item() / self.settings.grad_accum
        loss = self._total.item() / self.settings.grad_accum
        if not math.isfinite(loss):
            self.model.zero_grad(set_to_none=True)
            self._total.zero_()
            return loss
        self.optimizer_step()
        return loss

    def compile_now(self, batch: int, seq: int) -> None:
        """Compile forward and backward on a dummy batch before any timed step; changes neither
        weights, optimizer state nor the data stream."""
        # two tensors, as a real batch: dynamo guards on aliasing, and one tensor passed as both
        # inputs and targets made the first real step compile everything again
        x, y = (torch.zeros(batch, seq, dtype=torch.long, device=self.device) for _ in range(2))
        with autocast(self.device, self.dtype):
            _, loss = self.run_model(x, y)
        loss.backward()
        self.model.zero_grad(set_to_none=True)
