"""fp32 master weights for a model trained in bf16 (the plan's `master_weights`, as llm.c trains):
the model's weights and gradients are bf16, so a compiled step casts no weight and runs a bf16
residual stream; AdamW steps fp32 copies of the weights, with fp32 moments.

Each update copies the bf16 gradients into the copies' fp32 gradients, steps the optimizer on the
copies and copies them back into the model: two multi-tensor casts beside AdamW's kernel (on the
H200 a gpt2 step, B=12, T=1024, took 25.46 ms against 26.40 under autocast with fp32 weights;
BENCHMARKS.md). Micro-batches accumulate their gradients in bf16, as the model's own gradients.
Checkpoints hold the fp32 copies (`state_dict`), so a checkpoint is the same with or without.
"""

from __future__ import annotations

from typing import Any

import torch

WEIGHTS_DTYPE = torch.bfloat16


class MasterWeights:
    """fp32 copies of `model`'s trainable parameters, made before `model` is cast to bf16 in
    place. `master` are the tensors an optimizer steps (each with an fp32 `.grad`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        # before the cast; leaves that require grad, as the parameters an optimizer takes
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        for m in self.master:
            m.grad = torch.zeros_like(m)  # kept between steps: each update overwrites it
        model.to(WEIGHTS_DTYPE)

    def gradients_in(self) -> list[torch.Tensor]:
        """The model's bf16 gradients cast into the copies' fp32 gradients (returned)."""
        grads = [m.grad for m in self.master]
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if missing:  # every GPT weight takes part in the loss; a model that skips one is not ours
            raise RuntimeError(f"master weights: {len(missing)} parameter(s) got no gradient")
        torch._foreach_copy_(grads, [p.grad for p in self.params])
        return grads

    @torch.no_grad()
    def weights_out(self) -> None:
        """The stepped fp32 copies cast back into the model's bf16 weights."""
        torch._foreach_copy_(self.params, self.master)

    def state_dict(self) -> dict[str, Any]:
        """The model's state dict with the fp32 copies in place of its bf16 weights (a tied weight
        under each of its names)."""
        copy_of = {id(p): m for p, m in zip(self.params, self.master, strict=True)}
        return {k: copy_of.get(id(v), v).detach()
                for k, v in self.model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Weights from `state` (fp32, as `state_dict` writes them) into the copies exactly and
        into the model rounded to bf16."""
        self.model.load_state_dict(state)
        named = dict(self.model.named_parameters())
        index = {id(p): i for i, p in enumerate(self.params)}
        for name, p in named.items():
            if id(p) in index:
                self.master[index[id(p)]].copy_(state[name])

    @torch.no_grad()
    def restore(self) -> None:
        """The model back in fp32 with the copies' weights (for evaluation or sampling after
        training); the step cannot run after this."""
        self.model.float()
        for p, m in zip(self.params, self.master, strict=True):
            p.copy_(m)
