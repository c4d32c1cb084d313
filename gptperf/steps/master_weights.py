"""fp32 master weights for a model whose matmuls train in bf16 (the plan's `master_weights`): the
blocks' Linear weights and gradients are bf16, so autocast casts none of them each step; AdamW
steps fp32 copies of them, with fp32 moments. Embeddings (the tied LM head with them) and
LayerNorms stay fp32, and so does the residual stream.

Each update copies the bf16 gradients into the copies' fp32 gradients, steps the optimizer on the
copies and the fp32 parameters, and copies the copies back into the model: two multi-tensor
casts beside AdamW's kernel; under the plan's `fused_master_update` (the default with master
weights) `gptperf.steps.master_adamw` does all three in one kernel and the copies keep no
gradients (`copy_gradients=False`). This is a little faster than every weight fp32 under
autocast and, unlike every weight bf16 (a bf16 residual stream, as llm.c trains), keeps the loss
within the tolerance the fast step is held to (benchmarks/gpu_speed_numerics.py; BENCHMARKS.md,
"Master weights in the train step").
Micro-batches accumulate the bf16 gradients in bf16. Checkpoints hold the fp32 copies
(`state_dict`), so a checkpoint is the same with or without.
"""

from __future__ import annotations

from typing import Any

import torch

WEIGHTS_DTYPE = torch.bfloat16  # of the matmul weights


def matmul_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable weights and biases of `model`'s Linear layers but those tied to an embedding
    (the LM head): what master weights keep in bf16."""
    tied = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    seen: set[int] = set()
    out = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            for p in m.parameters(recurse=False):
                if p.requires_grad and id(p) not in tied and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


class MasterWeights:
    """fp32 copies of `model`'s matmul weights (`matmul_weights`), made before those are cast to
    bf16 in place; the embeddings (the tied LM head with them) and LayerNorms stay fp32, so the
    residual stream stays fp32. `stepped` are the tensors an optimizer steps: the copies (each
    with an fp32 `.grad` unless `copy_gradients` is false) and the fp32 parameters themselves."""

    def __init__(self, model: torch.nn.Module, copy_gradients: bool = True) -> None:
        self.model = model
        self.params = matmul_weights(model)
        # before the cast; leaves that require grad, as the parameters an optimizer takes
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        if copy_gradients:  # for `gradients_in` (not for the one-pass update, which reads the bf16 ones)
            for m in self.master:
                m.grad = torch.zeros_like(m)  # kept between steps: each update overwrites it
        self._copy_of = copy_of = {id(p): m for p, m in zip(self.params, self.master, strict=True)}
        # in the model's parameter order, each copy in its weight's place: an optimizer's state
        # (by position) is the same with or without master weights, so checkpoints move between plans
        self.stepped = [copy_of.get(id(p), p) for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            for p in self.params:
                p.data = p.data.to(WEIGHTS_DTYPE)

    def gradients_in(self) -> None:
        """The model's bf16 gradients cast into the copies' fp32 gradients."""
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if missing:  # every GPT weight takes part in the loss; a model that skips one is not ours
            raise RuntimeError(f"master weights: {len(missing)} parameter(s) got no gradient")
        torch._foreach_copy_([m.grad for m in self.master], [p.grad for p in self.params])

    @torch.no_grad()
    def weights_out(self) -> None:
        """The stepped fp32 copies cast back into the model's bf16 weights."""
        torch._foreach_copy_(self.params, self.master)

    def state_dict(self) -> dict[str, Any]:
        """The model's state dict with the fp32 copies in place of its bf16 weights: every tensor
        fp32, as the model's own state dict without master weights."""
        return {k: self._copy_of.get(id(v), v).detach()
                for k, v in self.model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Weights from `state` (fp32, as `state_dict` writes them) into the copies exactly and
        into the model rounded to bf16."""
        self.model.load_state_dict(state)
        for name, p in self.model.named_parameters():
            if id(p) in self._copy_of:
                self._copy_of[id(p)].copy_(state[name])

    @torch.no_grad()
    def restore(self) -> None:
        """The model back in fp32 with the copies' weights (for evaluation or sampling after
        training); the step cannot run after this."""
        for p, m in zip(self.params, self.master, strict=True):
            p.data = m.detach().clone()
