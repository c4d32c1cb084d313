"""The calibration's AdamW family: seconds of an optimizer step over tensors of the sizes the
calibration's design lists (`calibration_plan.optimizer_axes`, `optimizer_loop_sizes`), as
`gptperf.measure.kernel_timer` times them, returned as `perfmodel.calibration` Grids for
`calibrate_kernels` to keep with the other families.

On CUDA a step over equal tensors, per variant: torch's fused AdamW, its for-each kernels, and
gptperf's one-pass master update. On a CPU torch's per-tensor loop, a tensor's seconds at each
size, timed twice: stepping one set of tensors every call (from the cache where they fit) and
stepping another copy each call (from memory), which a step reads by its cache share.
"""

from __future__ import annotations

import torch

from gptperf.measure.calibration_plan import (
    OPTIMIZER_BYTES_PER_PARAM,
    OPTIMIZER_LOOP_PARAMS,
    optimizer_axes,
    optimizer_cold_copies,
    optimizer_loop_sizes,
    optimizer_loop_tensors,
)
from gptperf.measure.calibration_tables import report
from gptperf.measure.kernel_timer import Call, KernelTimer, random_tensor
from gptperf.measure.timer import Progress
from gptperf.perfmodel.calibration import ADAMW_LOOP, ADAMW_LOOP_COLD
from gptperf.perfmodel.curves import Grid
from gptperf.runtime import as_device


def measure_optimizer(device: torch.device | str, quick: bool = False,
                      progress: Progress | None = None,
                      timer: KernelTimer | None = None) -> dict[str, Grid]:
    """Grids "adamw_fused" and "adamw_foreach" over (parameter tensors, parameters) on CUDA: one
    AdamW step (lr 3e-4, weight decay 0.1, built as gptperf's train step builds it) over fp32
    tensors of equal size, a third of them 2-D (decayed), as a GPT block's 4 weights of 12; and
    "adamw_master" (CUDA with Triton): the one-pass master update over bf16 weights of those
    sizes (`gptperf.steps.master_adamw`). On a CPU "adamw_loop" over (parameters,): the seconds
    of one tensor in torch's per-tensor loop: a step over equal tensors (a third of them 2-D; a
    single one 2-D) divided by their count; and "adamw_loop_cold", the same with each call
    stepping another copy of them (`measure_optimizer_loop`). Each point is timed by `timer`
    (default: a KernelTimer of its own)."""
    from gptperf.steps import master_adamw  # deferred: loads triton

    device = as_device(device)
    timer = KernelTimer(device, quick) if timer is None else timer
    kind = device.type
    if kind != "cuda":
        return measure_optimizer_loop(device, quick, progress, timer)
    variants = ["adamw_fused", "adamw_foreach"]
    if master_adamw.available(device):
        variants.append("adamw_master")
    tensors, params = optimizer_axes(kind, quick)
    free, _ = torch.cuda.mem_get_info(device)
    params = tuple(p for p in params if OPTIMIZER_BYTES_PER_PARAM * p < 0.8 * free) or params[:1]
    total, done = len(variants) * len(tensors) * len(params), 0
    out: dict[str, Grid] = {}
    for name in variants:
        seconds = []
        for t in tensors:
            for p in params:
                step = optimizer_step(device, t, p, name)
                seconds.append(timer(step, f"optimizer {name} {t} tensors {p} parameters",
                                     nbytes=OPTIMIZER_BYTES_PER_PARAM * p))
                del step  # its memory stays cached for the next point (see below)
                done += 1
                report(progress, "optimizer", done, total)
        how = {"adamw_fused": "fused kernel", "adamw_foreach": "foreach kernels",
               "adamw_master": "the one-pass master update: bf16 weights and gradients, fp32 copies"}[name]
        out[name] = Grid(("tensors", "parameters"), (tensors, params), tuple(seconds), (1.0, 1.0), what=(
            f"s per AdamW step over (parameter tensors, {'bf16' if name == 'adamw_master' else 'fp32'} "
            "parameters), tensors of equal size, a third 2-D; lr 3e-4, weight decay 0.1 on 2-D "
            "tensors as gptperf's train step; " + how))
    # once, not after each point: the largest points hold tens of GB, and handing them back to
    # the driver and taking them again cost seconds
    torch.cuda.empty_cache()
    return out


def optimizer_point_shapes(tensors: int, params: int, variant: str) -> list[tuple[int, ...]]:
    """The parameter shapes an optimizer grid point steps: `tensors` of equal size, every third
    2-D; for "adamw_master" sizes in whole 16-byte vectors, as every GPT tensor of a width that is
    a multiple of 8 (the one-pass kernel's aligned variant: the one those tensors run)."""
    from gptperf.steps.master_adamw import VECTOR  # deferred: loads triton

    size = max(1, params // tensors)
    if variant == "adamw_master":
        size = max(VECTOR, size // VECTOR * VECTOR)
    return [(1, size) if i % 3 == 0 else (size,) for i in range(tensors)]


def optimizer_step(device: torch.device, tensors: int, params: int, variant: str) -> Call:
    """One optimizer step of `variant` (adamw_fused, adamw_foreach, adamw_master) over the grid
    point's parameters (`optimizer_point_shapes`), as the calibration times it."""
    from gptperf.steps.master_adamw import MasterAdamW  # deferred: loads triton
    from gptperf.steps.train import TrainSettings, make_optimizer  # deferred: loads triton

    shapes = optimizer_point_shapes(tensors, params, variant)
    dtype = torch.bfloat16 if variant == "adamw_master" else torch.float32
    weights = torch.nn.ParameterList(torch.nn.Parameter(random_tensor(s, dtype, device)) for s in shapes)
    for p in weights:
        p.grad = random_tensor(p.shape, dtype, device)  # set once: the step never clears them
    settings = TrainSettings(lr=3e-4, weight_decay=0.1)
    if variant == "adamw_master":  # with the clip's scale and the skip flag, as the train step
        copies = [p.detach().float().requires_grad_(True) for p in weights]
        master = MasterAdamW(list(weights), copies, make_optimizer(copies, settings, fused=True))
        scale, found = torch.ones((), device=device), torch.zeros((), device=device)
        return lambda j: master.step(scale, found)
    opt = make_optimizer(weights, settings, fused=variant == "adamw_fused")
    # A step with torch's default (non-capturable) settings is what a train step runs; its host
    # scalars (the bias corrections) are fixed at capture, which changes no kernel's time.
    for check in ("_accelerator_graph_capture_health_check", "_cuda_graph_capture_health_check"):
        if hasattr(opt, check):
            setattr(opt, check, lambda: None)
    return lambda j: opt.step()


def measure_optimizer_loop(device: torch.device, quick: bool, progress: Progress | None,
                           timer: KernelTimer) -> dict[str, Grid]:
    """"adamw_loop" and "adamw_loop_cold": the per-tensor loop's seconds a tensor, with one set
    of tensors stepped every call (in the cache where they fit), and with each call stepping
    another copy (`optimizer_cold_copies`: from memory; at the largest point, which fills the pool
    alone, the one-set time)."""
    sizes = optimizer_loop_sizes(quick)
    warm, cold = [], []
    for i, size in enumerate(sizes):
        tensors = optimizer_loop_tensors(size)
        nbytes = OPTIMIZER_BYTES_PER_PARAM * tensors * size
        point = f"optimizer loop {tensors} tensors of {size} parameters"
        step = optimizer_step(device, tensors, tensors * size, "adamw_foreach")
        warm.append(timer(step, point, nbytes=nbytes) / tensors)
        copies = optimizer_cold_copies(size)
        if copies == 1:  # the tensors alone fill the pool: they ran from memory already
            cold.append(warm[-1])
        else:  # the set just timed is the first copy
            cycled = _cycled([step, *(optimizer_step(device, tensors, tensors * size, "adamw_foreach")
                                      for _ in range(copies - 1))])
            cold.append(timer(cycled, f"{point}, {copies} copies cycled", nbytes=nbytes) / tensors)
            del cycled
        del step
        report(progress, "optimizer", i + 1, len(sizes))
    what = ("s per fp32 tensor of so many parameters in an AdamW step (torch's per-tensor loop on a "
            "CPU; lr 3e-4, weight decay 0.1): a step over equal tensors, a third of them 2-D, "
            f"{OPTIMIZER_LOOP_PARAMS} parameters in all (1 to 64 tensors), over their count")
    axes = (tuple(float(s) for s in sizes),)
    return {ADAMW_LOOP: Grid(("parameters",), axes, tuple(warm), (1.0,), what=what + "; one set"),
            ADAMW_LOOP_COLD: Grid(("parameters",), axes, tuple(cold), (1.0,), what=(
                what + "; each call another copy, their state cycled through a pool past the cache"))}


def _cycled(steps: list[Call]) -> Call:
    """Call j steps copy j mod their count; each stepped once here (AdamW makes its moments on a
    tensor's first step)."""
    for step in steps:
        step(0)
    return lambda j: steps[j % len(steps)](j)
