"""Configurations drawn at random for `gptperf validate --random N`: models, workloads and plans
from a seed, each off the fixed sweep and off every shape the calibration measures, so the
prediction is checked where nobody tuned it.

A draw picks a kind of step, a dtype and a plan, then a width (heads × a head size), a depth, a
vocabulary, a batch and a length for it until its step is one a sweep can afford and
the machine can hold (the roofline bound and the memory model on the device type's datasheet
entry), and none of its matmuls, attention calls or models is one the calibration measures
(`disjoint.overlaps`, against the full and the quick calibration). The same seed draws the same
cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gptperf.errors import UserError
from gptperf.measure.calibration_plan import planned_shapes
from gptperf.model.config import PRESETS, GPTConfig, preset
from gptperf.perfmodel import get_hardware, predict
from gptperf.perfmodel.kernel_calls import kernel_calls
from gptperf.perfmodel.workload import Workload, count_parameters
from gptperf.plan import COMPILED, EAGER
from gptperf.validate.disjoint import overlaps
from gptperf.validate.sweep import DEVICE_TYPES, ValidationCase, case_name, cases, plan_for

MAX_CASES = 64  # a random sweep of more would outlast any session's budget
TRIES_PER_CASE = 200  # draws before giving up on one case (a shared shape or an unaffordable step)


@dataclass(frozen=True)
class DrawSpace:
    """What one device type draws from, and the steps it can afford."""

    head_dims: tuple[int, ...]
    heads: tuple[int, int]  # inclusive range
    layers: tuple[int, int]
    vocabularies: tuple[int, ...]
    block_size: int
    dtypes: tuple[tuple[str, float], ...]  # (dtype, weight)
    compiled_share: float  # of train and forward cases, when the model is small enough
    compiled_max_params: float  # torch.compile of larger models eats the sweep's time
    fast_share: float  # of prefill and decode cases (static cache and CUDA graph)
    batch_one_share: float  # of decode cases: the fused batch-1 kernels where the plan has them
    batch: tuple[int, int]
    decode_batch: tuple[int, int]
    seq: tuple[int, int]
    step_s: tuple[float, float]  # the roofline bound on the datasheet entry, lowest and highest
    memory_bytes: float  # the memory model's total, at most
    datasheet: str  # registry entry the bounds are computed on


SPACES: dict[str, DrawSpace] = {
    "cuda": DrawSpace(
        head_dims=(32, 64, 64, 80, 96, 128), heads=(3, 26), layers=(1, 24),
        vocabularies=(50304, 50257, 32000, 8000, 65), block_size=1024,
        dtypes=(("bf16", 0.65), ("fp32", 0.35)), compiled_share=0.3, compiled_max_params=250e6,
        fast_share=0.4, batch_one_share=0.35, batch=(1, 16), decode_batch=(2, 32), seq=(64, 1024),
        step_s=(2e-5, 0.02), memory_bytes=40e9, datasheet="h200"),
    # eager fp32 only and the fixed sweep's sizes (steps of a few to tens of ms on two cores): a
    # compile per case would take the minute
    "cpu": DrawSpace(
        head_dims=(16, 32, 32, 64), heads=(2, 8), layers=(1, 4),
        vocabularies=(65, 256, 1000, 8000), block_size=512, dtypes=(("fp32", 1.0),),
        compiled_share=0.0, compiled_max_params=0.0, fast_share=0.0, batch_one_share=0.35,
        batch=(1, 12), decode_batch=(2, 12), seq=(16, 320), step_s=(5e-4, 1e-2), memory_bytes=2e9,
        datasheet="cpu"),
}
KINDS: tuple[str, ...] = ("train", "forward", "prefill", "decode", "decode_nocache")


def model_label(config: GPTConfig) -> str:
    """A short name for a drawn model, e.g. 'c832h13-7L' (gpt2's padded vocabulary) or
    'c512h8-3L-v65'."""
    label = f"c{config.n_embd}h{config.n_head}-{config.n_layer}L"
    return label if config.vocab_size == PRESETS["gpt2"].vocab_size else f"{label}-v{config.vocab_size}"


def _step(rng: random.Random, space: DrawSpace) -> tuple[str, str, str]:
    """(kind, dtype, mode) of one case, drawn before its model so that the models an unaffordable
    draw throws away do not tilt the kinds."""
    kind = rng.choice(KINDS)
    dtype = rng.choices([d for d, _ in space.dtypes], [w for _, w in space.dtypes])[0]
    if kind in ("train", "forward"):
        mode = "compiled" if rng.random() < space.compiled_share else "eager"
    else:
        mode = "fast" if rng.random() < space.fast_share else "eager"
    return kind, dtype, mode


def _draw_one(rng: random.Random, device_type: str, space: DrawSpace, kind: str, dtype: str,
              mode: str) -> ValidationCase | None:
    """A model and a workload for the step (kind, dtype, mode); None: a compiled step of a model
    too large to compile in a sweep."""
    head_dim = rng.choice(space.head_dims)
    n_head = rng.randint(*space.heads)
    config = preset("gpt2", n_layer=rng.randint(*space.layers), n_head=n_head,
                    n_embd=n_head * head_dim, vocab_size=rng.choice(space.vocabularies),
                    block_size=space.block_size)
    if mode == "compiled" and count_parameters(config) > space.compiled_max_params:
        return None
    if kind == "decode":
        batch = 1 if rng.random() < space.batch_one_share else rng.randint(*space.decode_batch)
    else:
        batch = rng.randint(*space.batch)
    seq = rng.randint(*space.seq) if kind != "decode" else rng.randint(16, space.seq[1])
    seq = min(seq, config.block_size)
    name = case_name(kind, model_label(config), batch, seq, dtype, mode)
    workload = Workload(kind, batch, seq, dtype)
    return ValidationCase(name, config, workload,
                          plan_for(kind, batch, dtype, device_type, mode, config.attention))


def _affordable(case: ValidationCase, space: DrawSpace) -> bool:
    p = predict(case.config, case.workload, get_hardware(space.datasheet), case.plan)
    low, high = space.step_s
    return low <= p.time_s <= high and p.memory.total <= space.memory_bytes


def calibrated_shapes(device_type: str) -> list[dict]:
    """What the full and the quick calibration measure on `device_type`, models included."""
    from gptperf.measure.calibrate_compiled import record_config  # deferred: loads torch
    from gptperf.measure.calibrate_host import host_model_names  # deferred: loads torch

    models = {"configs": [*host_model_names(EAGER), *host_model_names(COMPILED), record_config().name]}
    return [{**planned_shapes(device_type, quick), **models} for quick in (False, True)]


def draw_cases(device_type: str, n: int, seed: int) -> list[ValidationCase]:
    """`n` cases for `device_type` ("cpu" or "cuda") drawn from `seed`: each affordable, off the
    fixed sweep and off the calibration's shapes, no two alike."""
    if device_type not in DEVICE_TYPES:
        raise UserError(f"unknown device type {device_type!r}; valid: {', '.join(DEVICE_TYPES)}")
    if not 1 <= n <= MAX_CASES:
        raise UserError(f"cannot draw {n} cases: draw 1 to {MAX_CASES}")
    space = SPACES[device_type]
    planned = calibrated_shapes(device_type)
    taken = {c.name for quick in (False, True) for c in cases(device_type, quick)}
    rng = random.Random(seed)
    out: list[ValidationCase] = []
    for _ in range(n):
        step = _step(rng, space)
        for _ in range(TRIES_PER_CASE):
            case = _draw_one(rng, device_type, space, *step)
            if case is None or case.name in taken or not _affordable(case, space):
                continue
            calls = kernel_calls(case.config, case.workload, case.plan, device_type)
            if any(overlaps(calls, p, case.config) for p in planned):
                continue
            taken.add(case.name)
            out.append(case)
            break
        else:  # pragma: no cover - the spaces leave thousands of cases to draw from
            raise UserError(f"no affordable case off the calibration's shapes in {TRIES_PER_CASE} "
                            f"draws (seed {seed}); try another seed")
    return out
