"""How a step runs (`ExecutionPlan`): eager, compiled or CUDA graph; attention; static KV cache;
one-row kernel; fused optimizer; fused loss; master weights — the shared vocabulary of the steps that run and the predictions
made for them. Pure Python, like `gptperf.names`.

Every measurement records the plan it ran under (`plan.to_dict()` in its JSON) and its
prediction is `perfmodel.predict(config, workload, hardware, plan)` for that same plan.

Defaults (`ExecutionPlan.default`), per workload kind and device:

* train: eager, or compiled with `--compile`; the fused AdamW kernel on CUDA (it exists for
  CUDA tensors only, as `gptperf train` has always used it there); compiled on CUDA, the
  one-pass Triton cross-entropy (`fused_loss`: 0.45 ms less a gpt2 step on the H200), except
  in the scaling study's DDP step (`ddp=True`), which keeps the model's own loss; compiled on
  CUDA in bf16 (`dtype="bf16"`), the blocks' Linear weights in bf16 with fp32 master copies
  (`master_weights`: 0.24–0.40 ms less a gpt2 step on the H200), again except under DDP, and
  with them AdamW on the copies in one Triton kernel (`fused_master_update`: 0.44 ms less again).
* forward: eager, or compiled with `--compile`.
* prefill, decode, decode_nocache with `fast` (the default on CUDA for `generate` and
  `inference`): on CUDA the step is compiled and replayed as one CUDA graph, with a static KV
  cache (prefill, decode) and the one-row Triton gemv for batch-1 matmuls (decode, as
  `FastDecoder` chooses by default); on a CPU compiled with a static cache (no graphs there).
  A batch-1 decode step on CUDA runs gptperf's fused decode kernels instead of the compiled
  model (`fused_decode`: five kernels a layer), captured as the same CUDA graph.
  Without `fast`: eager, or compiled with `--compile`, with the model's own growing KV cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from gptperf.errors import UserError
from gptperf.units import MIB

EAGER, COMPILED, CUDA_GRAPH = "eager", "compiled", "cuda_graph"
MODES: tuple[str, ...] = (EAGER, COMPILED, CUDA_GRAPH)
ATTENTIONS: tuple[str, ...] = ("math", "sdpa")
INFERENCE_KINDS: tuple[str, ...] = ("prefill", "decode", "decode_nocache")
TRAINING_KINDS: tuple[str, ...] = ("train", "forward")
_MODE_LABEL = {EAGER: "eager", COMPILED: "compiled", CUDA_GRAPH: "compiled + CUDA graph"}
# The fused decode step streams its own copy W∘γ of a weight that follows a LayerNorm when the
# weight is at most this large (the kernel then loads no γ beside x): memory the plan adds. On
# the H200 up to gpt2-large's 13.1 MB mlp.fc (its step 872.7 -> 856.3 µs); gpt2-xl with its 15.4
# and 20.5 MB weights so ran 0.4% slower, the 7B shape's 100-134 MB ones 0.5%.
NORM_SCALED_WEIGHT_BYTES = 14 * MIB
# The batch the fused decode kernels run (one token's matrix-vector products); any other batch
# of a fused_decode plan runs the compiled model.
FUSED_DECODE_BATCH = 1


@dataclass(frozen=True)
class ExecutionPlan:
    """How one step runs; everything here changes which kernels run (and so the prediction).

    mode: "eager"; "compiled" (torch.compile); "cuda_graph" (compiled, then captured once as a
    CUDA graph and replayed, as `FastDecoder` does). attention: "math" or "sdpa" (the model's).
    static_cache: a preallocated KV cache of fixed shape with the position on the device
    (prefill, decode; needed for a CUDA graph). one_row_kernel: one-row matmuls (batch-1 decode)
    run gptperf's Triton gemv in a compiled step. fused_optimizer: AdamW's fused kernel (train).
    fused_decode: a batch-1 decode step runs `gptperf.steps.decode_kernels` (LayerNorm inside the
    gemv, one attention kernel that also writes the cache, the residual add inside the gemv, the
    argmax inside the LM head) instead of the compiled model; it needs the static cache.
    fused_loss: a compiled train step computes its cross-entropy in `gptperf.steps.cross_entropy`'s
    two one-pass Triton kernels instead of the model's F.cross_entropy (CUDA). master_weights: a
    bf16 train step keeps the blocks' Linear weights and their gradients in bf16, and AdamW steps
    fp32 copies of them (`gptperf.steps.master_weights`), instead of autocast casting fp32 weights.
    fused_master_update: under master weights and the fused optimizer, one Triton kernel steps the
    copies from the bf16 gradients and writes the bf16 weights (`gptperf.steps.master_adamw`, CUDA)
    instead of casting the gradients in and the copies out around AdamW's kernel.
    """

    mode: str = EAGER
    attention: str = "sdpa"
    static_cache: bool = False
    one_row_kernel: bool = False
    fused_optimizer: bool = False
    fused_decode: bool = False
    fused_loss: bool = False
    master_weights: bool = False
    fused_master_update: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown execution mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.attention not in ATTENTIONS:
            raise UserError(f"unknown attention {self.attention!r}; valid: {', '.join(ATTENTIONS)}")
        for key in ("static_cache", "one_row_kernel", "fused_optimizer", "fused_decode", "fused_loss",
                    "master_weights", "fused_master_update"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"plan {key} must be true or false, got {getattr(self, key)!r}")
        if self.one_row_kernel and self.mode == EAGER:
            raise UserError("the one-row gemv kernel runs in a compiled step; use mode 'compiled' "
                            "or 'cuda_graph', or one_row_kernel=false")

    @property
    def compiled(self) -> bool:
        """True for torch.compile'd steps (with or without a CUDA graph)."""
        return self.mode != EAGER

    @property
    def cuda_graph(self) -> bool:
        return self.mode == CUDA_GRAPH

    @property
    def fast(self) -> bool:
        """The fast inference path: a static KV cache or a CUDA graph."""
        return self.static_cache or self.cuda_graph

    def update_in_kernel(self, dtype: str) -> bool:
        """True when a train step in `dtype` clips and skips non-finite steps inside the fused
        AdamW kernel (no GradScaler: every dtype but fp16), so no host synchronisation and no
        separate gradient rescale (gptperf.steps.train)."""
        return self.fused_optimizer and dtype != "fp16"

    def fuses_decode(self, kind: str, batch: int) -> bool:
        """True when a step of workload `kind` at `batch` runs the fused decode kernels: a
        batch-1 decode under `fused_decode` (another batch runs the compiled model)."""
        return self.fused_decode and kind == "decode" and batch == FUSED_DECODE_BATCH

    @property
    def label(self) -> str:
        """e.g. 'compiled + CUDA graph, sdpa, static KV cache, one-row gemv'."""
        if self.fused_decode:  # nothing is compiled and attention is gptperf's own kernel
            graph = ", CUDA graph" if self.cuda_graph else ""
            return f"fused decode kernels{graph}, static KV cache"
        parts = [_MODE_LABEL[self.mode], self.attention]
        if self.static_cache:
            parts.append("static KV cache")
        if self.one_row_kernel:
            parts.append("one-row gemv")
        if self.fused_optimizer:
            parts.append("fused AdamW")
        if self.fused_loss:
            parts.append("fused loss")
        if self.master_weights:
            parts.append("bf16 matmul weights, fp32 master")
        if self.fused_master_update:
            parts.append("one-pass master AdamW")
        return ", ".join(parts)

    def replace(self, **changes: Any) -> ExecutionPlan:
        return ExecutionPlan(**{**asdict(self), **changes})

    def check(self, kind: str, dtype: str | None = None) -> None:
        """A one-line UserError when a step of workload `kind` (in `dtype`, where given) cannot run
        under this plan."""
        if kind in TRAINING_KINDS:
            if self.cuda_graph:
                raise UserError(f"a {kind} step runs eager or compiled, not as a CUDA graph; "
                                "use mode 'eager' or 'compiled'")
            if self.static_cache or self.one_row_kernel or self.fused_decode:
                raise UserError(f"a {kind} step has no KV cache and no one-row matmuls; "
                                "static_cache, one_row_kernel and fused_decode are for inference")
        elif kind in INFERENCE_KINDS:
            if kind == "decode_nocache" and self.static_cache:
                raise UserError("decode_nocache recomputes the context and keeps no KV cache; "
                                "use static_cache=false")
            if self.cuda_graph and kind != "decode_nocache" and not self.static_cache:
                raise UserError(f"a CUDA-graph {kind} step needs the static KV cache (its shapes "
                                "never change); use static_cache=true")
        else:
            raise UserError(f"unknown workload {kind!r}; valid: "
                            f"{', '.join(TRAINING_KINDS + INFERENCE_KINDS)}")
        if self.fused_decode and (kind != "decode" or not self.static_cache):
            raise UserError(f"fused_decode runs a decode step with the static KV cache, not a {kind} "
                            f"step with static_cache={self.static_cache}; or use fused_decode=false")
        if self.fused_optimizer and kind != "train":
            raise UserError(f"fused_optimizer is for train steps; a {kind} step has no optimizer")
        if self.fused_loss and (kind != "train" or self.mode != COMPILED):
            raise UserError(f"fused_loss is for compiled train steps, not a {self.mode} {kind} step; "
                            "use fused_loss=false")
        if self.master_weights and (kind != "train" or dtype not in (None, "bf16")):
            what = f"a {kind} step" + (f" in {dtype}" if dtype else "")
            raise UserError(f"master_weights is for bf16 train steps, not {what}; "
                            "use master_weights=false")
        if self.fused_master_update and not (self.master_weights and self.fused_optimizer):
            raise UserError("fused_master_update steps master weights in the fused optimizer's place; "
                            "use it with master_weights=true and fused_optimizer=true, or set it false")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionPlan:
        """From `to_dict` (its `label` is ignored); unknown keys are a UserError."""
        if not isinstance(data, dict):
            raise UserError(f"an execution plan must be a table, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"label"})
        if unknown:
            raise UserError(f"unknown execution plan key(s) {unknown}; valid: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def eager(cls, attention: str = "sdpa") -> ExecutionPlan:
        return cls(EAGER, attention)

    @classmethod
    def default(cls, kind: str, device_type: str, *, compile: bool = False,
                fast: bool | None = False, attention: str = "sdpa", ddp: bool = False,
                dtype: str | None = None) -> ExecutionPlan:
        """The plan a command runs `kind` under on `device_type` ("cpu" or "cuda") when the user
        names none (see the module docstring). `fast=None` means on for CUDA, off elsewhere;
        it applies to prefill, decode and decode_nocache only. `ddp`: the train step of the
        scaling study (DDP wraps the whole model, its own loss included: no fused loss, no master
        weights). `dtype`: the train step's ("bf16" turns master weights on where they apply)."""
        cuda = device_type == "cuda"
        if kind == "train":
            fast_train = cuda and compile and not ddp
            master = fast_train and dtype == "bf16"
            return cls(COMPILED if compile else EAGER, attention, fused_optimizer=cuda,
                       fused_loss=fast_train, master_weights=master, fused_master_update=master)
        if kind == "forward":
            return cls(COMPILED if compile else EAGER, attention)
        if kind not in INFERENCE_KINDS:
            raise UserError(f"unknown workload {kind!r}; valid: "
                            f"{', '.join(TRAINING_KINDS + INFERENCE_KINDS)}")
        if not (cuda if fast is None else fast):
            return cls(COMPILED if compile else EAGER, attention)
        return cls(CUDA_GRAPH if cuda else COMPILED, attention,
                   static_cache=kind != "decode_nocache",
                   one_row_kernel=cuda and kind == "decode", fused_decode=cuda and kind == "decode")
