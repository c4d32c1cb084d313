"""Training loop: AdamW, warm-up + cosine LR, clipping, accumulation, autocast, compile, resume.

`train(TrainConfig.for_preset("tiny"))` works in a notebook (no output at all); the CLI passes
a progress bar as `on_step`. torch is imported inside the functions that run it, so the config
and the command's `--help` stay instant. A checkpoint holds the data generator's state, so a resumed run
draws the same batches and, on CPU, reproduces the uninterrupted run's losses bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.dtypes import STEP_DTYPES
from gptperf.errors import UserError
from gptperf.model.config import PRESETS, GPTConfig, preset
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.writable import check_output_dir, usable_path

if TYPE_CHECKING:
    import torch

    from gptperf.data.corpus import Corpus
    from gptperf.model.gpt import GPT
    from gptperf.scaling.ddp import DistContext
    from gptperf.steps.train import TrainSettings, TrainStep

TRAIN_DTYPES: tuple[str, ...] = STEP_DTYPES
SCHEMA = "gptperf.train/1"
SEED_MAX = 2**64 - 1  # torch's generators take 64 bits: every command's --seed is checked to it

# Per-preset training defaults. `tiny` is nanoGPT's CPU character-level recipe; the GPT-2
# sizes take GPT-3's learning rates for their widths and a batch that fits an 80 GB GPU.
_GPT2_LIKE = dict(seq=1024, max_iters=5000, lr=6e-4, warmup_iters=100, weight_decay=0.1,
                  betas=(0.9, 0.95), eval_interval=250, eval_iters=20, log_interval=1)
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(batch=12, seq=64, max_iters=2000, lr=2e-3, min_lr=2e-4, warmup_iters=100,
                 weight_decay=0.1, betas=(0.9, 0.99), eval_interval=200, eval_iters=20,
                 log_interval=1),
    "gpt2": dict(_GPT2_LIKE, batch=16),
    "gpt2-medium": dict(_GPT2_LIKE, batch=8, lr=3e-4),
    "gpt2-large": dict(_GPT2_LIKE, batch=4, lr=2.5e-4),
    "gpt2-xl": dict(_GPT2_LIKE, batch=2, lr=2e-4),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are the `tiny` preset's recipe."""

    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)  # GPTConfig overrides, e.g. n_layer
    attention: str | None = None  # None: the preset's; "math" or "sdpa"
    data: str | None = None  # None: the embedded corpus; a text file; a train.bin folder
    vocab_size: int | None = None  # of a train.bin folder (None: largest token + 1)
    val_fraction: float = 0.1
    batch: int = 12
    seq: int = 64
    max_iters: int = 2000
    lr: float = 2e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: max_iters
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # 0: off
    grad_accum: int = 1
    dtype: str = "fp32"
    compile: bool | None = None  # None: compiled on a GPU (the fast step), eager on a CPU
    device: str = "auto"
    eval_interval: int = 200  # 0: only at the end
    eval_iters: int = 20
    log_interval: int = 1
    out_dir: str | None = "out"  # None: no checkpoint
    resume: bool = False
    seed: int = 1337

    @classmethod
    def for_preset(cls, name: str = "tiny", **overrides: Any) -> TrainConfig:
        """The preset's defaults with `overrides` applied. None values are ignored, except
        `out_dir=None`: no checkpoint, as on the config itself (read as "not given" it meant
        ./out, so a caller asking for no checkpoint wrote one into the current folder)."""
        if name not in PRESET_DEFAULTS:
            raise UserError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"unknown training option(s) {sorted(unknown)}")
        values = dict(PRESET_DEFAULTS[name], preset=name)
        given = {k: v for k, v in overrides.items() if v is not None or k == "out_dir"}
        if "lr" in given and "min_lr" not in given:
            values.pop("min_lr", None)  # lr/10 of the lr asked for, not of the preset's
        values.update(given)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}")
        for key in ("batch", "seq", "max_iters", "grad_accum", "eval_iters", "log_interval"):
            _check_int(key, getattr(self, key), minimum=1)
        for key in ("warmup_iters", "eval_interval", "seed"):
            _check_int(key, getattr(self, key), minimum=0)
        if self.seed > SEED_MAX:  # torch's generators take 64 bits
            raise UserError(f"seed must be at most 2**64 - 1, got {self.seed}")
        if self.lr_decay_iters is not None:
            _check_int("lr_decay_iters", self.lr_decay_iters, minimum=1)
        _check_number("lr", self.lr, positive=True)
        if self.min_lr is not None:
            _check_number("min_lr", self.min_lr)
            if self.min_lr > self.lr:
                raise UserError(f"min_lr {self.min_lr:g} is above lr {self.lr:g} (--min-lr above "
                                f"--lr); the cosine decay runs from lr down to min_lr, so pass "
                                f"--min-lr {self.lr:g} or less")
        _check_number("weight_decay", self.weight_decay)
        _check_number("grad_clip", self.grad_clip)
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise UserError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.dtype not in TRAIN_DTYPES:
            raise UserError(f"unknown training dtype {self.dtype!r}; valid: {', '.join(TRAIN_DTYPES)}")
        if self.attention is not None and self.attention not in ("math", "sdpa"):
            raise UserError(f"unknown attention {self.attention!r}; valid: math, sdpa")
        if self.resume and self.out_dir is None:
            raise UserError("resume needs out_dir (the folder holding ckpt.pt)")
        if self.out_dir is not None:
            usable_path(self.out_dir, "--out")  # '' is '.': it would write ./ckpt.pt where one stands

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def model_config(self, vocab_size: int | None = None) -> GPTConfig:
        """The preset's GPTConfig with the overrides; `vocab_size` widens it for the data, and
        block_size shrinks to `seq` unless set: position rows past the trained length would
        keep their random init, and sampling would wander into them."""
        overrides = dict(self.model)
        if self.attention is not None:
            overrides["attention"] = self.attention
        base = PRESETS[self.preset]
        # through `preset`, so that the config's name says these changes too
        if "block_size" not in overrides and self.seq < base.block_size:
            overrides["block_size"] = self.seq
        if vocab_size is not None and vocab_size > base.vocab_size and "vocab_size" not in overrides:
            overrides["vocab_size"] = vocab_size
        return preset(self.preset, **overrides)

    def step_settings(self) -> TrainSettings:
        """What one optimizer step does (gptperf.steps.train)."""
        from gptperf.steps.train import TrainSettings  # deferred: loads torch

        return TrainSettings(lr=self.lr, betas=self.betas, weight_decay=self.weight_decay,
                             grad_clip=self.grad_clip, grad_accum=self.grad_accum)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)  # plain types only: checkpoints load with weights_only
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "an integer >= 0"
        raise UserError(f"{key} must be {kind}, got {value!r}")


def _check_number(key: str, value: Any, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise UserError(f"{key} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


def learning_rate(it: int, cfg: TrainConfig) -> float:
    """LR for optimizer step `it` (0-based): linear warm-up to cfg.lr, cosine decay to min_lr
    at lr_decay_iters (default max_iters), then min_lr (nanoGPT's schedule)."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    if it >= decay_iters:
        return cfg.final_lr
    ratio = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg.final_lr + coeff * (cfg.lr - cfg.final_lr)


@dataclass
class StepEvent:
    """What `on_step` receives after every optimizer step."""

    step: int
    max_iters: int
    loss: float
    lr: float
    step_time_s: float
    tokens_per_s: float
    elapsed_s: float
    val_loss: float | None = None  # set on steps with a validation loss
    checkpoint: str | None = None  # set on steps that wrote a checkpoint
    note: str | None = None  # a message for the user, e.g. "compiling"


@dataclass
class TrainResult:
    """Losses, timings and where the checkpoint went. `model` is the trained (uncompiled) GPT."""

    config: TrainConfig
    model_config: GPTConfig
    model_name: str
    num_parameters: int
    data_name: str
    steps: int
    start_step: int  # 0, or the step a resumed run continued from
    losses: list[float]  # training loss of steps 1..steps (resumed runs include the history)
    val_losses: list[tuple[int, float]]  # (step, validation loss)
    step_times_s: list[float]  # this run's steps only
    tokens_per_step: int
    median_step_time_s: float
    tokens_per_s: float
    wall_time_s: float
    compile_time_s: float | None
    checkpoint: str | None
    environment: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    model: Any = field(default=None, repr=False)
    plan: ExecutionPlan | None = None  # how each step ran (compiled or not, fused AdamW or not)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "model": self.model_name,
            "parameters": self.num_parameters,
            "data": self.data_name,
            "steps": self.steps,
            "start_step": self.start_step,
            "losses": self.losses,
            "val_losses": [{"step": s, "loss": v} for s, v in self.val_losses],
            "final_val_loss": self.val_losses[-1][1] if self.val_losses else None,
            "loss_unit": "nats/token",
            "tokens_per_step": self.tokens_per_step,
            "median_step_time_s": self.median_step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "step_times_s": self.step_times_s,
            "wall_time_s": self.wall_time_s,
            "compile_time_s": self.compile_time_s,
            "checkpoint": self.checkpoint,
            "environment": self.environment,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        """The inverse of `to_dict`, without the model (a UserError for another schema)."""
        from gptperf.schema import check_schema  # deferred: keeps --help fast

        check_schema(d, SCHEMA)
        return cls(
            config=TrainConfig.from_dict(d["config"]),
            model_config=GPTConfig.from_dict(d["model_config"]), model_name=d["model"],
            num_parameters=d["parameters"], data_name=d["data"], steps=d["steps"],
            start_step=d["start_step"], losses=list(d["losses"]),
            val_losses=[(v["step"], v["loss"]) for v in d["val_losses"]],
            step_times_s=list(d["step_times_s"]), tokens_per_step=d["tokens_per_step"],
            median_step_time_s=d["median_step_time_s"], tokens_per_s=d["tokens_per_s"],
            wall_time_s=d["wall_time_s"], compile_time_s=d["compile_time_s"],
            checkpoint=d["checkpoint"], environment=dict(d["environment"]),
            notes=list(d["notes"]),
            plan=ExecutionPlan.from_dict(d["plan"]) if d["plan"] is not None else None,
        )


def estimate_loss(model: torch.nn.Module, corpus: Any, cfg: TrainConfig, device: torch.device,
                  split: str = "val") -> float:
    """Mean loss over cfg.eval_iters batches drawn from a fixed seed: every evaluation of a
    run sees the same batches, and the training data stream is not disturbed."""
    import torch  # deferred: loads torch

    from gptperf.runtime import autocast  # deferred: loads torch

    gen = torch.Generator().manual_seed((cfg.seed + 1) % (SEED_MAX + 1))  # a seed of its own
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(cfg.eval_iters):
        x, y = corpus.get_batch(split, cfg.batch, cfg.seq, gen, device)
        with torch.no_grad(), autocast(device, cfg.dtype):
            _, loss = model(x, y)
        total += loss.item()
    model.train(was_training)
    return total / cfg.eval_iters


def _check_resume(path: Path, state: dict[str, Any], cfg: TrainConfig, config: GPTConfig) -> None:
    """The run asked for must be the one in the checkpoint: same preset, same model shape."""
    saved = state.get("train_config") or {}
    if saved.get("preset", cfg.preset) != cfg.preset:
        raise UserError(f"checkpoint {str(path)!r} was trained with preset {saved['preset']!r}, "
                        f"not {cfg.preset!r}; pass --preset {saved['preset']} to resume it")
    for key, value in cfg.model.items():
        if getattr(config, key, value) != value:
            raise UserError(f"checkpoint {str(path)!r} has {key}={getattr(config, key)}, the run "
                            f"asks for {key}={value}; drop that override to resume, or train afresh")


def _check_resumable(path: Path, state: dict[str, Any]) -> None:
    """What a resumed run restores besides the weights' shapes (`load_checkpoint` checks those):
    finite weights, a step count, an optimizer state, the two generators' states; a one-line
    UserError before the run is built."""
    import torch  # deferred: loads torch

    from gptperf.safeload import check_finite  # deferred: keeps --help fast

    check_finite(repr(str(path)), state["model"])
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"checkpoint {str(path)!r} has step {step!r}; a resumable checkpoint "
                        "holds the count of steps trained, an integer >= 0")
    optimizer = state.get("optimizer")
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)):
        raise UserError(f"checkpoint {str(path)!r} has no optimizer state (a dict of 'state' and "
                        f"'param_groups'), found {type(optimizer).__name__}; train afresh with --force")
    for key in ("data_rng", "torch_rng"):
        rng = state.get(key)
        if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.dim() == 1):
            raise UserError(f"checkpoint {str(path)!r} has no generator state {key!r} (a 1-D uint8 "
                            f"tensor), found {type(rng).__name__}; train afresh with --force")


def _check_moments(optimizer: torch.optim.Optimizer) -> None:
    """Each restored per-parameter tensor (AdamW's moments) has its parameter's shape:
    `load_state_dict` checks only the count of parameters; a ValueError otherwise."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if getattr(value, "dim", lambda: 0)() and tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"{key} of shape {tuple(value.shape)} for a parameter of "
                                     f"shape {tuple(p.shape)}")


def _finite_parameters(model: torch.nn.Module) -> bool:
    import torch  # deferred: loads torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _kept(ckpt_path: Path | None, ours: bool) -> str:
    """What a run stopped on a non-finite loss leaves: this run's last checkpoint (`ours`: it
    saved or resumed one), an earlier run's that --force would have replaced, or none."""
    if ckpt_path is None or not ckpt_path.exists():
        return "no checkpoint was written"
    if ours:
        return f"the last good checkpoint {str(ckpt_path)!r} is left as it was"
    return f"the earlier run's checkpoint {str(ckpt_path)!r} is left as it was (this run saved none)"


def _check_out_dir(cfg: TrainConfig, force: bool) -> None:
    """cfg.out_dir must be a folder that can be written; for a fresh run (not `resume`) a
    checkpoint already there is an earlier run's, replaced only when `force` says so. Checked
    before the model is built and any step runs."""
    from gptperf.checkpoint import FILENAME  # deferred: loads torch

    if cfg.out_dir is None:
        return
    out = check_output_dir(cfg.out_dir, "--out")
    if cfg.resume:
        return  # the checkpoint is read, then written again: that is what resume asks for
    file = out / FILENAME
    if file.is_dir():  # the atomic rename of the new checkpoint onto it would fail at the end
        raise UserError(f"--out {str(cfg.out_dir)!r} holds a folder named {FILENAME}, where the "
                        "checkpoint goes; move it away or give another --out")
    if file.exists() and not force:
        raise UserError(f"--out {str(cfg.out_dir)!r} already holds a checkpoint ({str(file)!r}); "
                        "continue it with --resume, replace it with --force, or give another --out")


def _check_force(cfg: TrainConfig, force: bool) -> None:
    """`force` replaces the checkpoint a fresh run would otherwise refuse to overwrite: with
    --resume or with no checkpoint at all it contradicts the run asked for."""
    if force and cfg.resume:
        raise UserError("--force replaces the checkpoint in --out, --resume continues it; drop "
                        "one of them")
    if force and cfg.out_dir is None:
        raise UserError("--force with --no-checkpoint: no checkpoint is written, so there is "
                        "nothing to replace; drop one of them")


def _run_model_config(cfg: TrainConfig, corpus: Corpus, ckpt_path: Path | None,
                      said: list[str]) -> tuple[GPTConfig, dict[str, Any] | None]:
    """The model the run trains, checked against the data, and for a resumed run the checkpoint's
    state to restore (None for a fresh run). A resumed run keeps the checkpoint's model (only
    --attention may change it), so the weights load; a fresh one takes the preset's, widened for
    the data. Notes for the user go to `said`."""
    from gptperf.checkpoint import load_checkpoint  # deferred: loads torch

    state: dict[str, Any] | None = None
    if cfg.resume:
        assert ckpt_path is not None
        state = load_checkpoint(ckpt_path)
        model_config = GPTConfig.from_dict(state["model_config"])
        _check_resume(ckpt_path, state, cfg, model_config)
        _check_resumable(ckpt_path, state)
        if cfg.attention is not None and cfg.attention != model_config.attention:
            model_config = model_config.replace(attention=cfg.attention)
        if state.get("data") != corpus.name:
            said.append(f"checkpoint was trained on {state.get('data')!r}; continuing on {corpus.name!r}")
    else:
        model_config = cfg.model_config(corpus.vocab_size)
        if corpus.vocab_size > 256 and corpus.vocab_size > PRESETS[cfg.preset].vocab_size:
            said.append(f"vocab_size set to {model_config.vocab_size} to cover the data")
    if corpus.vocab_size > model_config.vocab_size:
        raise UserError(f"data {corpus.name!r} has vocabulary {corpus.vocab_size}, more than the "
                        f"model's vocab_size {model_config.vocab_size}")
    model_config.check_sequence(cfg.seq)
    return model_config, state


def run_plan(cfg: TrainConfig, attention: str, device_type: str) -> ExecutionPlan:
    """How each step of `cfg`'s run goes on a `device_type` device ("cpu" or "cuda"): compiled on
    a GPU and eager on a CPU unless `cfg.compile` says otherwise."""
    compile = device_type == "cuda" if cfg.compile is None else cfg.compile
    return ExecutionPlan.default("train", device_type, compile=compile, attention=attention,
                                 dtype=cfg.dtype)


def _checked_plan(cfg: TrainConfig, model_config: GPTConfig, device: torch.device) -> ExecutionPlan:
    """How each step runs, after the memory guard's check: before anything is allocated or
    trained, a batch whose predicted peak will not fit in free memory is a UserError."""
    from gptperf.memguard import check_memory  # deferred: keeps --help fast

    # ranks on one CPU share its RAM
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    plan = run_plan(cfg, model_config.attention, device.type)
    check_memory(model_config, Workload("train", cfg.batch, cfg.seq, cfg.dtype), device,
                 processes=sharing, plan=plan)
    return plan


def _restore(state: dict[str, Any], ckpt_path: Path | None, weights: Any, train_step: TrainStep,
             data_gen: torch.Generator) -> tuple[int, list[float], list[tuple[int, float]]]:
    """Load a resumable checkpoint's weights, optimizer, scaler and generator states into the
    run; return its step and loss histories. State that does not fit this run is a one-line
    UserError (out of memory stays the memory guard's error)."""
    import torch  # deferred: loads torch

    weights.load_state_dict(state["model"])
    try:  # a state of another optimizer's shape, or a generator's of another kind
        train_step.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            train_step.scaler.load_state_dict(state["scaler"])
        data_gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        _check_moments(train_step.optimizer)
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as err:
        from gptperf.memguard import is_out_of_memory  # deferred: keeps --help fast

        if is_out_of_memory(err):  # the memory guard's advice, not a fresh start
            raise
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserError(f"checkpoint {str(ckpt_path)!r} cannot be resumed: its optimizer or "
                        f"generator state does not fit this run ({why}); train afresh with "
                        "--force") from None
    start_step: int = state["step"]
    losses = [float(v) for v in state.get("losses", [])][:start_step]
    val_losses = [(int(s), float(v)) for s, v in state.get("val_losses", [])]
    return start_step, losses, val_losses


def _throughput(step_times: list[float], tokens_per_step: int) -> tuple[float, float]:
    """The median step time and the tokens per second it gives (NaN for a run of no steps)."""
    # The first steps include allocator and kernel warm-up; the median ignores them.
    timed = step_times[min(3, len(step_times) // 2):] or step_times
    median = statistics.median(timed) if timed else math.nan
    return median, tokens_per_step / median if timed else math.nan


@dataclass
class _Log:
    """What a run tells its caller: the notes it keeps for the result and, through `on_step`
    (None: nobody listens, as on every rank but 0 under torchrun), each note and step as it comes,
    timed from the run's start."""

    max_iters: int
    on_step: Callable[[StepEvent], None] | None
    t_begin: float = field(default_factory=time.perf_counter)
    notes: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_begin

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.on_step is not None:
            self.on_step(StepEvent(0, self.max_iters, math.nan, 0.0, math.nan, math.nan,
                                   self.elapsed(), note=text))


@dataclass
class _Setup:
    """What a run settles before anything is built, every check passed: this rank's place under
    torchrun, the data, where the checkpoint goes, the model and how each step runs."""

    cfg: TrainConfig
    dist_ctx: DistContext
    corpus: Corpus
    ckpt_path: Path | None
    model_config: GPTConfig
    plan: ExecutionPlan

    @property
    def device(self) -> torch.device:
        return self.dist_ctx.device

    @property
    def tokens_per_step(self) -> int:
        cfg = self.cfg
        return cfg.batch * cfg.seq * cfg.grad_accum * self.dist_ctx.world_size


@dataclass
class _Run:
    """A run under way: its setup, the model and its one train step, and what a checkpoint saves
    besides them (the data generator, the loss histories)."""

    setup: _Setup
    model: GPT
    train_step: TrainStep
    weights: Any  # what a checkpoint saves and resumes (`_build`)
    data_gen: torch.Generator
    start_step: int = 0
    losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    # the last checkpoint written (a resumed run's own, until it writes one)
    checkpoint: str | None = None
    step_times: list[float] = field(default_factory=list)  # this run's steps only
    compile_time: float | None = None


def _prepare(cfg: TrainConfig, force: bool, log: _Log) -> tuple[_Setup, dict[str, Any] | None]:
    """Join torchrun's process group (if any) and check the run against its device, its folder,
    its data and the free memory; then say the data's and the model's notes. Also returns the
    checkpoint's state for a resumed run (None for a fresh one)."""
    from gptperf.checkpoint import FILENAME  # deferred: loads torch
    from gptperf.data.corpus import load_corpus  # deferred: loads torch
    from gptperf.runtime import set_matmul_precision  # deferred: loads torch
    from gptperf.scaling.ddp import init_distributed  # deferred: loads torch

    # Under torchrun: this rank's process group and device; rank 0 alone logs and checkpoints.
    dist_ctx = init_distributed(cfg.device)
    device = dist_ctx.device
    if not dist_ctx.is_main:
        log.on_step = None
    if cfg.dtype == "fp16" and device.type != "cuda":
        raise UserError("dtype 'fp16' needs a CUDA GPU (GradScaler autocast); on CPU use bf16 or fp32")
    set_matmul_precision(cfg.dtype)
    # Before the data is read (a large file takes a while): a checkpoint folder that cannot be
    # written or holds an earlier run's checkpoint (rank 0 alone writes one, so it alone checks).
    if dist_ctx.is_main:
        _check_out_dir(cfg, force)
    corpus = load_corpus(cfg.data, cfg.val_fraction, cfg.vocab_size)
    said = list(corpus.notes)  # said once every check below has passed: a refusal is one line
    corpus.check_sequence(cfg.seq)

    # ~ expanded, as the check of the folder expands it (`writable.usable_path`)
    ckpt_path = Path(cfg.out_dir).expanduser() / FILENAME if cfg.out_dir is not None else None
    model_config, state = _run_model_config(cfg, corpus, ckpt_path, said)
    plan = _checked_plan(cfg, model_config, device)
    for text in said:
        log.note(text)
    return _Setup(cfg, dist_ctx, corpus, ckpt_path, model_config, plan), state


def _build(setup: _Setup, state: dict[str, Any] | None) -> _Run:
    """The model on its device and its one train step; for a resumed run (`state`) the
    checkpoint's weights, optimizer, scaler, generators and histories restored into them."""
    import torch  # deferred: loads torch

    from gptperf.model.gpt import GPT  # deferred: loads torch
    from gptperf.runtime import model_dtype  # deferred: loads torch
    from gptperf.scaling.ddp import parallelize, rank_rows  # deferred: loads torch
    from gptperf.steps.train import TrainStep  # deferred: loads torch

    cfg, corpus, dist_ctx, device = setup.cfg, setup.corpus, setup.dist_ctx, setup.device
    torch.manual_seed(cfg.seed)
    model = GPT(setup.model_config).to(device=device, dtype=model_dtype(cfg.dtype))
    data_gen = torch.Generator().manual_seed(cfg.seed)
    # The one train step (gptperf.steps.train), as bench and profile time it, fed by the corpus.
    # Data parallel (DDP from outside the model) under torchrun: every rank draws the same
    # world × batch windows and trains on its rows.
    train_step = TrainStep(parallelize(model, dist_ctx), setup.plan, device, cfg.dtype,
                           lambda: tuple(rank_rows(t, dist_ctx) for t in corpus.get_batch(
                               "train", cfg.batch * dist_ctx.world_size, cfg.seq, data_gen, device)),
                           cfg.step_settings())
    # what a checkpoint saves and resumes: fp32 weights (the master copies, where the plan keeps them)
    weights: Any = train_step.master if train_step.master is not None else model
    run = _Run(setup, model, train_step, weights, data_gen)
    if state is not None:
        run.start_step, run.losses, run.val_losses = _restore(state, setup.ckpt_path, weights,
                                                              train_step, data_gen)
    model.train()
    if cfg.resume and setup.ckpt_path is not None:
        run.checkpoint = str(setup.ckpt_path)
    return run


def _compile(run: _Run, log: _Log) -> None:
    """Compile the train step's graphs before any timed step, where the plan compiles, and keep
    how long that took."""
    from gptperf.runtime import synchronize  # deferred: loads torch

    if not run.setup.plan.compiled:
        return
    cfg = run.setup.cfg
    log.note("compiling the model (torch.compile); the first step is not timed")
    t0 = time.perf_counter()
    run.train_step.compile_now(cfg.batch, cfg.seq)  # both graphs, before any timed step
    synchronize(run.setup.device)
    run.compile_time = time.perf_counter() - t0


def _save_checkpoint(run: _Run, step: int) -> str | None:
    """Write the run's checkpoint after `step` and return its path; None where the run writes
    none (no out_dir, or a rank other than 0). Weights gone NaN/inf stop the run instead."""
    import torch  # deferred: loads torch

    from gptperf.checkpoint import save_checkpoint  # deferred: loads torch

    setup, ckpt_path = run.setup, run.setup.ckpt_path
    if ckpt_path is None or not setup.dist_ctx.is_main:
        return None
    if not _finite_parameters(run.model):
        raise UserError(f"parameters became NaN/inf after step {step}; "
                        f"{_kept(ckpt_path, run.checkpoint is not None)}; try a lower --lr")
    save_checkpoint(
        ckpt_path,
        model_config=setup.model_config.to_dict(),
        model=run.weights.state_dict(),
        optimizer=run.train_step.optimizer.state_dict(),
        scaler=run.train_step.scaler.state_dict(),
        step=step,
        data_rng=run.data_gen.get_state(),
        torch_rng=torch.get_rng_state(),
        train_config=setup.cfg.to_dict(),
        losses=list(run.losses),
        val_losses=[[s, v] for s, v in run.val_losses],
        data=setup.corpus.name,
        tokenizer=setup.corpus.tokenizer.name if setup.corpus.tokenizer is not None else None,
    )
    return str(ckpt_path)


def _train_steps(run: _Run, log: _Log) -> None:
    """Steps start_step + 1 to max_iters, each timed between device synchronisations; a
    validation loss and a checkpoint every eval_interval steps and at the last; each step
    reported every log_interval steps, with a validation loss and at the last."""
    from gptperf.runtime import synchronize  # deferred: loads torch

    setup, cfg, train_step = run.setup, run.setup.cfg, run.train_step
    if run.start_step >= cfg.max_iters:
        log.note(f"checkpoint is at step {run.start_step}, max_iters is {cfg.max_iters}: "
                 "nothing to do")
    for step in range(run.start_step + 1, cfg.max_iters + 1):
        lr = learning_rate(step - 1, cfg)
        train_step.set_lr(lr)
        synchronize(setup.device)
        t0 = time.perf_counter()
        step_loss = train_step.run()  # a non-finite loss leaves the weights as they were
        if not math.isfinite(step_loss):
            raise UserError(f"training loss is {step_loss} at step {step} (lr {lr:.3g}); "
                            f"stopped, {_kept(setup.ckpt_path, run.checkpoint is not None)}; try a "
                            "lower --lr or --dtype fp32/bf16")
        synchronize(setup.device)
        dt = time.perf_counter() - t0
        run.step_times.append(dt)
        run.losses.append(step_loss)

        val = None
        last = step == cfg.max_iters
        if (cfg.eval_interval and step % cfg.eval_interval == 0) or last:
            # The eager model: a compiled one would compile again for no_grad and eval mode.
            val = estimate_loss(run.model, setup.corpus, cfg, setup.device)
            if not math.isfinite(val):
                raise UserError(f"validation loss is {val} at step {step}; stopped, "
                                f"{_kept(setup.ckpt_path, run.checkpoint is not None)}; try a "
                                "lower --lr")
            run.val_losses.append((step, val))
            run.checkpoint = _save_checkpoint(run, step) or run.checkpoint
        if log.on_step is not None and (step % cfg.log_interval == 0 or val is not None or last):
            log.on_step(StepEvent(step, cfg.max_iters, step_loss, lr, dt,
                                  setup.tokens_per_step / dt, log.elapsed(), val_loss=val,
                                  checkpoint=run.checkpoint if val is not None else None))


def _result(run: _Run, log: _Log, wall: float) -> TrainResult:
    """The finished run's TrainResult: its histories, timings, checkpoint and notes."""
    from gptperf.envinfo import environment  # deferred: keeps --help fast

    setup = run.setup
    median, tokens_per_s = _throughput(run.step_times, setup.tokens_per_step)
    return TrainResult(
        config=setup.cfg,
        model_config=setup.model_config,
        model_name=setup.model_config.name,
        num_parameters=run.model.num_parameters(),
        data_name=setup.corpus.name,
        steps=max(run.start_step, len(run.losses)),
        start_step=run.start_step,
        losses=run.losses,
        val_losses=run.val_losses,
        step_times_s=run.step_times,
        tokens_per_step=setup.tokens_per_step,
        median_step_time_s=median,
        tokens_per_s=tokens_per_s,
        wall_time_s=wall,
        compile_time_s=run.compile_time,
        checkpoint=run.checkpoint,
        environment=environment(setup.device),
        notes=log.notes,
        model=run.model,
        plan=setup.plan,
    )


def train(
    cfg: TrainConfig,
    on_step: Callable[[StepEvent], None] | None = None,
    *,
    force: bool = False,
) -> TrainResult:
    """Train as `cfg` says; return losses, timings and the checkpoint path. Prints nothing.

    A fresh run refuses (UserError) an out_dir that already holds ckpt.pt unless `force`: the
    earlier run's checkpoint is replaced only when asked (`gptperf train --force`)."""
    _check_force(cfg, force)
    log = _Log(cfg.max_iters, on_step)
    setup, state = _prepare(cfg, force, log)
    run = _build(setup, state)
    del state  # the checkpoint's copy of the weights and moments is not held through training

    if cfg.warmup_iters >= cfg.max_iters:
        log.note(f"warm-up of {cfg.warmup_iters} steps in a run of {cfg.max_iters}: the learning "
                 f"rate stops at {learning_rate(cfg.max_iters - 1, cfg):.3g}, short of its peak "
                 f"{cfg.lr:g}")
    _compile(run, log)
    _train_steps(run, log)
    wall = log.elapsed()
    master = run.train_step.master
    if master is not None:  # the caller's model in fp32 again, with the trained weights
        master.restore()
    return _result(run, log, wall)
