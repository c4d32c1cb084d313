"""The validation sweeps: which configurations `gptperf validate` measures and predicts, per device
and size of sweep — chosen to lie off every shape the calibration measures.

Widths are mostly not powers of two (384, 640, 768, 1280, 1600) and batch·sequence products not
powers of four, so no matmul (M, N, K), attention (batch·heads, length, head size) or model of a
case is one `gptperf calibrate` measured (the calibration's grid: M in powers of 4, N and K in
powers of 2 from 128, lengths 128/512/2048/8192; `tests/test_validate.py` checks every case
against `planned_shapes`). Sequence lengths avoid 128, 512, 2048 and 8192 for the same reason.

GPU (H200): the full sweep (22 cases) measures in about 4–5 minutes including torch.compile,
the quick one (8 cases, the report's) in about 90 s; compiled training stays on models no
larger than gpt2 so compilation does not eat the budget. CPU (2 cores): eager fp32 only, tiny
to small models, steps of 5–200 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptperf.errors import UserError
from gptperf.model.config import GPTConfig, preset
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan

DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda")
MODES: tuple[str, ...] = ("eager", "compiled", "fast")  # fast: static KV cache + CUDA graph
PROFILED_KINDS: tuple[str, ...] = ("train", "forward", "prefill", "decode")  # `gptperf profile`'s


@dataclass(frozen=True)
class ValidationCase:
    """One configuration of the sweep: model, workload and the plan it runs under. `profile`:
    also profile it for the per-operation error (eager or compiled plans only)."""

    name: str
    config: GPTConfig
    workload: Workload
    plan: ExecutionPlan
    profile: bool = False

    def __post_init__(self) -> None:
        self.plan.check(self.workload.kind, self.workload.dtype)
        self.config.check_sequence(self.workload.seq)
        if self.plan.attention != self.config.attention:
            raise UserError(f"case {self.name!r}: plan attention {self.plan.attention!r} differs "
                            f"from the model's {self.config.attention!r}")
        if self.profile and (self.plan.cuda_graph or self.workload.kind not in PROFILED_KINDS):
            raise UserError(f"case {self.name!r}: only eager or compiled steps of "
                            f"{', '.join(PROFILED_KINDS)} are profiled per operation")


# Models, by the short name a case is labelled with. Only presets and their overrides, so every
# config is named for what it is (e.g. 'gpt2+n_layer=6').
def _configs() -> dict[str, GPTConfig]:
    return {
        # GPU
        "char-6L": preset("tiny", n_layer=6, n_head=6, n_embd=384, block_size=512),
        "gpt2-6L": preset("gpt2", n_layer=6),
        "c640-4L": preset("gpt2", n_layer=4, n_head=10, n_embd=640),
        "gpt2": preset("gpt2"),
        "gpt2-medium": preset("gpt2-medium"),
        "gpt2-large": preset("gpt2-large"),
        "gpt2-xl": preset("gpt2-xl"),
        "7B": preset("gpt2", n_layer=32, n_head=32, n_embd=4096, vocab_size=32000,
                     block_size=4096),
        # CPU
        "tiny-c96": preset("tiny", n_head=3, n_embd=96),
        "tiny-c160": preset("tiny", n_head=5, n_embd=160),
        "small-c192": preset("tiny", n_layer=2, n_head=6, n_embd=192),
        "mini-gpt2": preset("gpt2", n_layer=2, n_head=6, n_embd=384),
        "mini-v8k": preset("gpt2", n_layer=2, n_head=6, n_embd=384, vocab_size=8000,
                           block_size=256),
    }


# (kind, model, batch, seq, dtype, mode, profile); seq is T (train, forward, prefill) or the
# context L (decode, decode_nocache). Step times are estimates for an H200.
_GPU_FULL: tuple[tuple[str, str, int, int, str, str, bool], ...] = (
    ("train", "char-6L", 24, 384, "fp32", "eager", False),  # ~15 ms
    ("train", "gpt2", 6, 640, "bf16", "eager", True),  # ~10 ms
    ("train", "gpt2", 4, 320, "fp32", "eager", False),  # ~20 ms
    ("train", "gpt2-medium", 3, 1000, "bf16", "eager", False),  # ~20 ms
    ("train", "gpt2-xl", 2, 384, "bf16", "eager", False),  # ~40 ms
    ("train", "gpt2-6L", 10, 768, "bf16", "compiled", False),  # ~10 ms
    ("train", "c640-4L", 8, 480, "fp32", "compiled", False),  # ~25 ms
    ("forward", "gpt2", 8, 1000, "fp32", "eager", True),  # ~40 ms (device-bound, TF32)
    ("forward", "gpt2-large", 4, 768, "bf16", "eager", True),  # ~10 ms
    ("forward", "gpt2-xl", 2, 640, "bf16", "eager", False),  # ~10 ms
    ("forward", "gpt2", 12, 896, "bf16", "compiled", False),  # ~6 ms
    ("prefill", "char-6L", 8, 448, "fp32", "eager", False),  # ~2 ms
    ("prefill", "gpt2-xl", 1, 1000, "bf16", "eager", False),  # ~8 ms
    ("prefill", "gpt2", 4, 768, "bf16", "fast", False),  # ~2 ms
    ("decode", "gpt2", 12, 640, "fp32", "eager", True),  # ~2 ms (host)
    ("decode", "gpt2-large", 24, 768, "bf16", "eager", False),  # ~4 ms (host)
    ("decode", "gpt2", 8, 1000, "bf16", "fast", False),  # ~0.5 ms
    ("decode", "7B", 1, 1000, "bf16", "fast", False),  # ~3 ms (13 GB of weights)
    ("decode", "7B", 8, 1000, "bf16", "eager", False),  # ~8 ms (host)
    ("decode_nocache", "gpt2", 4, 640, "bf16", "eager", False),  # ~2 ms
    ("decode_nocache", "char-6L", 16, 320, "fp32", "eager", False),  # ~2 ms
    ("decode_nocache", "gpt2", 6, 448, "bf16", "fast", False),  # ~2 ms
)
# The report's sweep, cases of the full one (name -> profile it): each kind, a compiled train
# and a CUDA-graph decode; two profiles only, for the 90 s budget.
_GPU_QUICK: dict[str, bool] = {
    "train char-6L fp32 B=24 T=384 eager": False,
    "train gpt2 bf16 B=6 T=640 eager": True,
    "train c640-4L fp32 B=8 T=480 compiled": False,
    "forward gpt2-large bf16 B=4 T=768 eager": False,
    "prefill gpt2-xl bf16 B=1 T=1000 eager": False,
    "decode gpt2 fp32 B=12 L=640 eager": True,
    "decode gpt2 bf16 B=8 L=1000 fast": False,
    "decode_nocache gpt2 bf16 B=4 L=640 eager": False,
}
# CPU: eager fp32; step times measured on the 2-core machine (busy, they vary 2x).
_CPU_FULL: tuple[tuple[str, str, int, int, str, str, bool], ...] = (
    ("train", "tiny-c96", 6, 72, "fp32", "eager", True),
    ("train", "small-c192", 5, 48, "fp32", "eager", False),
    ("train", "mini-v8k", 2, 40, "fp32", "eager", False),
    ("forward", "tiny-c160", 6, 96, "fp32", "eager", True),
    ("forward", "mini-gpt2", 1, 64, "fp32", "eager", False),
    ("forward", "tiny-c96", 20, 100, "fp32", "eager", False),
    ("prefill", "tiny-c96", 4, 200, "fp32", "eager", False),
    ("prefill", "mini-gpt2", 1, 320, "fp32", "eager", False),
    ("decode", "tiny-c160", 6, 200, "fp32", "eager", True),
    ("decode", "mini-gpt2", 3, 480, "fp32", "eager", False),
    ("decode_nocache", "tiny-c96", 2, 240, "fp32", "eager", False),
    ("decode_nocache", "small-c192", 3, 160, "fp32", "eager", False),
)
_CPU_QUICK: dict[str, bool] = {
    "train tiny-c96 fp32 B=6 T=72 eager": True,
    "train mini-v8k fp32 B=2 T=40 eager": False,
    "forward tiny-c160 fp32 B=6 T=96 eager": True,
    "prefill tiny-c96 fp32 B=4 T=200 eager": False,
    "prefill mini-gpt2 fp32 B=1 T=320 eager": False,
    "decode tiny-c160 fp32 B=6 L=200 eager": True,
    "decode mini-gpt2 fp32 B=3 L=480 eager": False,
    "decode_nocache tiny-c96 fp32 B=2 L=240 eager": False,
}


def case_name(kind: str, model: str, batch: int, seq: int, dtype: str, mode: str) -> str:
    """E.g. 'decode gpt2 bf16 B=8 L=1000 fast' (L: the context of a decode, T: tokens)."""
    length = "L" if kind.startswith("decode") else "T"
    return f"{kind} {model} {dtype} B={batch} {length}={seq} {mode}"


def plan_for(kind: str, batch: int, dtype: str, device_type: str, mode: str, attention: str) -> ExecutionPlan:
    """The plan a case runs: the command's default for its mode, without the fused decode kernels
    where the batch leaves them out (they run batch 1 only: the case asks for what will run)."""
    if mode not in MODES:
        raise UserError(f"unknown sweep mode {mode!r}; valid: {', '.join(MODES)}")
    plan = ExecutionPlan.default(kind, device_type, compile=mode == "compiled",
                                 fast=mode == "fast", attention=attention, dtype=dtype)
    if plan.fused_decode and not plan.fuses_decode(kind, batch):
        plan = plan.replace(fused_decode=False)
    return plan


def _build(rows: tuple[tuple[str, str, int, int, str, str, bool], ...], device_type: str,
           only: dict[str, bool] | None) -> list[ValidationCase]:
    """The cases of `rows`; with `only`, just those it names, profiled as it says."""
    configs = _configs()
    out = []
    for kind, model, batch, seq, dtype, mode, profile in rows:
        name = case_name(kind, model, batch, seq, dtype, mode)
        if only is not None:
            if name not in only:
                continue
            profile = only[name]
        config = configs[model]
        out.append(ValidationCase(name, config, Workload(kind, batch, seq, dtype),
                                  plan_for(kind, batch, dtype, device_type, mode, config.attention), profile))
    if only is not None and len(out) != len(only):  # a quick list naming no full case
        missing = sorted(set(only) - {c.name for c in out})
        raise AssertionError(f"quick sweep names cases the full sweep lacks: {missing}")
    return out


def cases(device_type: str, quick: bool = False) -> list[ValidationCase]:
    """The sweep for a device type ("cpu" or "cuda"): the full one, or with `quick` the report's
    (a subset of the full one)."""
    if device_type not in DEVICE_TYPES:
        raise UserError(f"unknown device type {device_type!r}; valid: {', '.join(DEVICE_TYPES)}")
    if device_type == "cuda":
        return _build(_GPU_FULL, device_type, _GPU_QUICK if quick else None)
    return _build(_CPU_FULL, device_type, _CPU_QUICK if quick else None)
