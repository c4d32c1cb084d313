"""AdamW on master copies in one pass (the plan's `fused_master_update`, CUDA): one Triton kernel
reads each bf16 gradient once, steps its fp32 copy and moments, and writes the copy rounded to
bf16 into the model's weight. The plain master step (`MasterWeights.gradients_in`, AdamW's fused
kernel, `weights_out`) casts the gradients into fp32 copies first and the copies back after: 14
bytes a copied parameter more, and 4 more kept (the copies' fp32 gradients).

It takes about half the time of the casts and AdamW's kernel, and the train step gains that
(BENCHMARKS.md, "Figures moved here from the code's docstrings", "The master update in one
kernel"). Tensors whose sizes are not all multiples of 8 (a width that is not) run a slower
variant without vector loads.

The arithmetic is torch's fused AdamW's (`torch._fused_adamw_`, fp32; equal to fp32 rounding, the
bias corrections taken as exp2 of a log2): decoupled weight decay,
bias corrections from the step count, the gradient divided by `grad_scale`, nothing written where
`found_inf` is nonzero. The moments and step counts live in the optimizer's own state under the
copies, as AdamW keeps them, so checkpoints are the same with or without this kernel.
"""

from __future__ import annotations

import math

import torch

try:  # Triton ships with CUDA builds of torch only
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU builds: `available()` says no
    triton = None

# parameters a program steps (8 a thread at 4 warps): the best of the blocks and warps tried
# (BENCHMARKS.md, "Figures moved here from the code's docstrings")
BLOCK = 1024
NUM_WARPS = 4
VECTOR = 8  # elements of one 16-byte bf16 load: every tensor's size a multiple, for vector loads


def available(device: torch.device) -> bool:
    """Whether the one-pass update can run on `device` (a CUDA device with Triton)."""
    return device.type == "cuda" and triton is not None


if triton is not None:

    @triton.jit
    def _master_adamw_kernel(block_tensor, block_start, numels, grads, copies, exp_avgs, exp_avg_sqs,
                             weights, decays, step_ptr, scale_ptr, found_ptr, lr, beta1, beta2, eps,
                             HAS_SCALE: tl.constexpr, HAS_FOUND: tl.constexpr, ALIGNED: tl.constexpr,
                             VECTOR: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        t = tl.load(block_tensor + pid)
        offs = tl.multiple_of(tl.load(block_start + pid), BLOCK) + tl.arange(0, BLOCK)
        numel = tl.load(numels + t)
        if HAS_FOUND:  # a skipped step writes nothing
            numel = tl.where(tl.load(found_ptr) == 0.0, numel, 0)
        # each tensor's address, from the tables (one kernel over every tensor)
        g_ptr = tl.load(grads + t).to(tl.pointer_type(tl.bfloat16))
        p_ptr = tl.load(copies + t).to(tl.pointer_type(tl.float32))
        m_ptr = tl.load(exp_avgs + t).to(tl.pointer_type(tl.float32))
        v_ptr = tl.load(exp_avg_sqs + t).to(tl.pointer_type(tl.float32))
        w_ptr = tl.load(weights + t).to(tl.pointer_type(tl.bfloat16))
        # addresses read from a table carry no alignment: without these hints no vector loads
        # (gpt2's copies at 3.17 TB/s, 3.92 with them)
        if ALIGNED:
            numel = tl.multiple_of(numel, VECTOR)
            g_ptr, w_ptr = tl.multiple_of(g_ptr, 16), tl.multiple_of(w_ptr, 16)
            p_ptr, m_ptr, v_ptr = tl.multiple_of(p_ptr, 16), tl.multiple_of(m_ptr, 16), tl.multiple_of(v_ptr, 16)
        mask = offs < numel
        g = tl.load(g_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        p = tl.load(p_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_first")
        m = tl.load(m_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_first")
        v = tl.load(v_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_first")
        if HAS_SCALE:
            g = g / tl.load(scale_ptr)
        step = tl.load(step_ptr)
        p = p - lr * tl.load(decays + t) * p
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        bias1 = 1.0 - tl.exp2(step * tl.log2(beta1))
        bias2_sqrt = tl.sqrt(1.0 - tl.exp2(step * tl.log2(beta2)))
        p = p - (lr / bias1) * m / (tl.sqrt(v) / bias2_sqrt + eps)
        tl.store(p_ptr + offs, p, mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        tl.store(w_ptr + offs, p.to(tl.bfloat16, fp_downcast_rounding="rtne"), mask=mask)


class MasterAdamW:
    """Steps the fp32 `copies` of the bf16 `weights` (index for index) from the weights'
    gradients, as `optimizer` (a torch AdamW holding the copies in its groups) would step them
    from fp32 gradients, and writes each copy back into its weight. The copies keep no `.grad`:
    AdamW's own step passes over them and steps the rest of its parameters."""

    def __init__(self, weights: list[torch.nn.Parameter], copies: list[torch.Tensor],
                 optimizer: torch.optim.Optimizer) -> None:
        if len(weights) != len(copies) or not copies:
            raise ValueError(f"{len(weights)} weights for {len(copies)} copies")
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        groups = [group_of[id(c)] for c in copies]
        for key in ("betas", "eps"):
            if len({tuple(g[key]) if key == "betas" else g[key] for g in groups}) != 1:
                raise ValueError(f"the copies' parameter groups differ in {key}")
        if any(g.get("amsgrad") or g.get("maximize") for g in groups):
            raise ValueError("the one-pass master update is plain AdamW: no amsgrad, no maximize")
        self.weights, self.copies, self.optimizer, self._groups = weights, copies, optimizer, groups
        device = copies[0].device
        numels = [c.numel() for c in copies]
        blocks = [math.ceil(n / BLOCK) for n in numels]
        self._numels = torch.tensor(numels, dtype=torch.int64, device=device)
        self._block_tensor = torch.repeat_interleave(
            torch.arange(len(copies), dtype=torch.int32), torch.tensor(blocks)).to(device)
        self._block_start = torch.cat([torch.arange(b, dtype=torch.int64) * BLOCK for b in blocks]).to(device)
        self._decays = torch.tensor([g["weight_decay"] for g in groups], dtype=torch.float32, device=device)
        self._tables: torch.Tensor | None = None
        self._addresses: list[int] = []
        self._sizes_aligned = all(n % VECTOR == 0 for n in numels)
        self._aligned = False  # every address 16-byte aligned and every size a multiple of VECTOR

    def _state(self) -> list[dict[str, torch.Tensor]]:
        """Each copy's AdamW state, made as the fused kernel makes it where there is none."""
        out = []
        for c in self.copies:
            state = self.optimizer.state[c]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=c.device)
                state["exp_avg"] = torch.zeros_like(c, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(c, memory_format=torch.preserve_format)
            out.append(state)
        return out

    def _address_tables(self, grads: list[torch.Tensor], states: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """The (5, tensors) table of addresses the kernel reads; sent to the device only when an
        address moved (gradients come back at the same addresses step after step)."""
        addresses = [t.data_ptr() for t in grads] + [t.data_ptr() for t in self.copies]
        for key in ("exp_avg", "exp_avg_sq"):
            addresses += [s[key].data_ptr() for s in states]
        addresses += [w.data_ptr() for w in self.weights]
        if addresses != self._addresses or self._tables is None:
            self._aligned = self._sizes_aligned and all(a % 16 == 0 for a in addresses)
            table = torch.tensor(addresses, dtype=torch.int64).view(5, -1)
            # pinned and asynchronous: the host does not wait for the step queued before it
            pinned = table.pin_memory() if self.copies[0].is_cuda else table
            self._tables = pinned.to(self.copies[0].device, non_blocking=True)
            self._addresses = addresses
        return self._tables

    @torch.no_grad()
    def step(self, grad_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None) -> None:
        """One AdamW step of every copy from its weight's bf16 gradient divided by `grad_scale`
        (a 0-d fp32 tensor), skipped where `found_inf` (0-d fp32) is nonzero; then each weight is
        its copy in bf16. The gradients are left as they are."""
        grads = [w.grad for w in self.weights]
        if any(g is None for g in grads):
            raise RuntimeError("master AdamW: a weight has no gradient")
        if any(g.dtype != torch.bfloat16 or not g.is_contiguous() for g in grads):
            raise RuntimeError("master AdamW: the weights' gradients must be contiguous bf16")
        lrs = {g["lr"] for g in self._groups}
        if len(lrs) != 1:
            raise RuntimeError(f"master AdamW: one learning rate for every copy, got {sorted(lrs)}")
        states = self._state()
        steps = [s["step"] for s in states]
        tables = self._address_tables(grads, states)
        torch._foreach_add_(steps, 1)  # as torch's fused AdamW: count, step, then uncount a skip
        beta1, beta2 = self._groups[0]["betas"]
        dummy = steps[0]  # any fp32 scalar where a flag is off: the kernel does not read it
        _master_adamw_kernel[(self._block_tensor.numel(),)](
            self._block_tensor, self._block_start, self._numels, tables[0], tables[1], tables[2],
            tables[3], tables[4], self._decays, steps[0],
            grad_scale if grad_scale is not None else dummy, found_inf if found_inf is not None else dummy,
            float(lrs.pop()), float(beta1), float(beta2), float(self._groups[0]["eps"]),
            HAS_SCALE=grad_scale is not None, HAS_FOUND=found_inf is not None, ALIGNED=self._aligned,
            VECTOR=VECTOR, BLOCK=BLOCK, num_warps=NUM_WARPS)
        if found_inf is not None:
            torch._foreach_sub_(steps, [found_inf] * len(steps))
