"""The operation vocabulary: the one contract between the model, the performance model and the profiler.

The model labels its work with these names (torch.profiler.record_function), the performance
model emits one Op per name, and the profiler attributes every measured kernel or operator to
one. Per-layer work carries the block index, e.g. ``h.3.attn.qkv``; the component is the name
without it. This module is pure Python so that everything can import it.
"""

from __future__ import annotations

EMBED = "embed"
LN_1 = "ln_1"
ATTN_QKV = "attn.qkv"
ATTN_SCORES = "attn.scores"
ATTN_SOFTMAX = "attn.softmax"
ATTN_CONTEXT = "attn.context"
ATTN_SDPA = "attn.sdpa"  # fused attention: replaces scores + softmax + context
ATTN_PROJ = "attn.proj"
LN_2 = "ln_2"
MLP_FC = "mlp.fc"
MLP_ACT = "mlp.act"
MLP_PROJ = "mlp.proj"
RESIDUAL = "residual"
LN_F = "ln_f"
LM_HEAD = "lm_head"
LOSS = "loss"
OPTIMIZER = "optimizer"

# Components that run once per transformer block, in execution order.
LAYER_COMPONENTS: tuple[str, ...] = (
    LN_1,
    ATTN_QKV,
    ATTN_SCORES,
    ATTN_SOFTMAX,
    ATTN_CONTEXT,
    ATTN_SDPA,
    ATTN_PROJ,
    LN_2,
    MLP_FC,
    MLP_ACT,
    MLP_PROJ,
    RESIDUAL,
)
# Components that run once per model step.
MODEL_COMPONENTS: tuple[str, ...] = (EMBED, LN_F, LM_HEAD, LOSS, OPTIMIZER)
COMPONENTS: tuple[str, ...] = (EMBED, *LAYER_COMPONENTS, LN_F, LM_HEAD, LOSS, OPTIMIZER)

# Attention components per implementation: `math` materialises the scores, `sdpa` fuses them.
MATH_ATTENTION: tuple[str, ...] = (ATTN_SCORES, ATTN_SOFTMAX, ATTN_CONTEXT)
FUSED_ATTENTION: tuple[str, ...] = (ATTN_SDPA,)

# Phases: forward work, the backward work it causes, and the optimizer step.
FORWARD = "fwd"
BACKWARD = "bwd"
OPTIMIZER_PHASE = "opt"
PHASES: tuple[str, ...] = (FORWARD, BACKWARD, OPTIMIZER_PHASE)

_LAYER_PREFIX = "h."


def layer_name(layer: int, component: str) -> str:
    """The per-layer name of `component` in block `layer`, e.g. ``h.3.attn.qkv``."""
    if component not in LAYER_COMPONENTS:
        raise ValueError(f"{component!r} is not a per-layer component; valid: {', '.join(LAYER_COMPONENTS)}")
    if layer < 0:
        raise ValueError(f"layer index must be >= 0, got {layer}")
    return f"{_LAYER_PREFIX}{layer}.{component}"


def split_name(name: str) -> tuple[int | None, str]:
    """Split ``h.3.attn.qkv`` into ``(3, "attn.qkv")`` and ``lm_head`` into ``(None, "lm_head")``.

    Raises ValueError for a name outside the contract.
    """
    if name.startswith(_LAYER_PREFIX):
        index, _, component = name[len(_LAYER_PREFIX):].partition(".")
        if index.isdigit() and component in LAYER_COMPONENTS:
            return int(index), component
    elif name in MODEL_COMPONENTS:
        return None, name
    raise ValueError(
        f"{name!r} is not an operation name; valid: {', '.join(MODEL_COMPONENTS)} "
        f"or h.<layer>.<{'|'.join(LAYER_COMPONENTS)}>"
    )


def component_of(name: str) -> str:
    """The component of an operation name: ``h.3.attn.qkv`` -> ``attn.qkv``."""
    return split_name(name)[1]


def is_operation_name(name: str) -> bool:
    """Whether `name` belongs to the contract."""
    try:
        split_name(name)
    except ValueError:
        return False
    return True
