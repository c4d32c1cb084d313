"""`calibrate`: measure this device's `Calibration` — the kernel curves (`calibrate_kernels`), the
host cost of a step's Python and dispatch (`calibrate_host`), and on CUDA the kernels a compiled
step runs (`calibrate_compiled`) and the slowdown of a matmul kept up under the card's power cap
(`sustained`) — and `calibration_for`, the cached one of this device, checked.

On CUDA the compiled jobs' and recordings' steps are compiled ahead by side processes while the
kernels are timed (`compile_warmup`), so their own compiles here find inductor's caches warm.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gptperf.envinfo import device_name, last_level_cache_bytes
from gptperf.errors import UserError
from gptperf.measure import calibrate_kernels
from gptperf.measure.calibrate_compiled import ProfilerHooks, record_compiled_steps, record_config
from gptperf.measure.calibrate_host import (
    REFERENCE_S,
    host_model_names,
    measure_host,
    measure_host_settled,
)
from gptperf.measure.calibration_plan import COMPILED_DTYPE, check_dtypes
from gptperf.measure.calibration_tables import guarded
from gptperf.measure.compile_warmup import CompileWarmup
from gptperf.measure.gpu_lock import NO_LOCK
from gptperf.measure.launch_gap import measure_launch_gap
from gptperf.measure.metrics import gpu_clock_reader
from gptperf.measure.optimizer_overlap import measure_optimizer_overlap
from gptperf.measure.probe import UNIT_KEYS, host_step_s, phase_unit_key, speed_note, take_probe
from gptperf.measure.sustained import measure_sustained, sustained_note
from gptperf.measure.timer import Progress
from gptperf.perfmodel.calibration import (
    Calibration,
    calibration_path,
    load_calibration,
    save_calibration,
)
from gptperf.perfmodel.hardware import check_cache_dir
from gptperf.plan import COMPILED, EAGER
from gptperf.runtime import as_device

# dtypes calibrated when none are asked for (the GPU's training and inference formats; fp32 only
# on a CPU, where bf16 matmuls are emulated and nobody trains in them)
DEFAULT_DTYPES: dict[str, tuple[str, ...]] = {"cuda": ("bf16", "fp32"), "cpu": ("fp32",)}

QUICK_NOTE = "quick calibration: fewer sizes and repeats"
REUSE_DAYS = 1.0  # `ensure_calibration` reuses a cached calibration younger than this
# A calibration's time budget by device type (at most 2 minutes on a GPU, 60 s on a CPU), and the
# part of it kept for what follows the host jobs (the compiled recording: 7-9 s on the H200):
# host jobs measured in a slow spell are measured again only within the rest
BUDGET_S = {"cuda": 120.0, "cpu": 60.0}
AFTER_HOST_S = {"cuda": 15.0, "cpu": 0.0}
# ... and the part kept for what follows a CPU's kernel passes (the cache reach, the host jobs and
# the last probe: 4-6 s on the 2-core VMs), within which a pass over families measured in spells
# must end (`calibration_passes.retry_spells`)
AFTER_KERNEL_PASSES_S = 8.0


def default_dtypes(device: torch.device) -> tuple[str, ...]:
    return DEFAULT_DTYPES["cuda" if device.type == "cuda" else "cpu"]


def _busy_note() -> str | None:
    """A note when other work was competing for the CPU as the calibration began: its host costs
    (and a CPU's curves) come out inflated then, several times over with two threads per op."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load <= 0.5 * cores:
        return None
    return (f"load average {load:.1f} on {cores} cores as the calibration began: other work "
            "competed for the CPU, so times may be inflated; calibrate on an idle machine")


def calibrate(device: torch.device | str = "auto", quick: bool = False,
              progress: Progress | None = None, dtypes: Sequence[str] | None = None, *,
              hooks: ProfilerHooks | None = None, warm_compiles: bool = True) -> Calibration:
    """Measure this device's Calibration: kernel curves, host costs and (CUDA, with `hooks`)
    compiled recordings; see the module docstring. `dtypes` default: `DEFAULT_DTYPES`.
    `warm_compiles` (CUDA): compile the compiled jobs' steps ahead in side processes while the
    kernels are timed (`compile_warmup`)."""
    device = as_device(device)
    dtypes = check_dtypes(dtypes if dtypes is not None else default_dtypes(device), device.type)
    start = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes: list[str] = [QUICK_NOTE] if quick else []
    if device.type == "cpu":  # a CPU's curves and host costs are those of this many threads
        notes.append(f"CPU threads: {torch.get_num_threads()}")
    busy = _busy_note()
    if busy:
        notes.append(busy)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    # the compiled jobs' compilation, in side processes while the kernels are timed
    side = warm_compiles and device.type == "cuda" and COMPILED_DTYPE in dtypes

    def start_side() -> CompileWarmup | None:
        if not side:
            return None
        index = torch.cuda.current_device() if device.index is None else device.index
        return CompileWarmup.start(index, quick, dtypes=dtypes)

    host_reference = functools.partial(host_step_s, device, REFERENCE_S)  # the host model's decode step
    # the side processes start before the speed probes, which take the GPU lock like a kernel: the
    # probes' first CUDA work took 6-9 s on an H200, time the side processes compile in
    warmup = start_side()
    try:
        with warmup.lock if warmup is not None else NO_LOCK:
            first = take_probe(device)
            reference_s = host_reference()  # host idle so far (but for the side processes' start)
        besides = {"probes": time.perf_counter() - start}  # the kernel stage's time outside its families
        kernels = calibrate_kernels.measure_kernels(
            device, dtypes=dtypes, quick=quick, progress=progress,
            lock=warmup.lock if warmup is not None else NO_LOCK,
            budget_s=BUDGET_S["cpu"] - AFTER_KERNEL_PASSES_S - besides["probes"] if device.type == "cpu" else None)
        notes += list(kernels.get("notes", []))
        # GPU-only work, timed under the lock while the side processes may still be compiling
        with warmup.lock if warmup is not None else NO_LOCK:
            launch, sustained = _launch_and_sustained(device, dtypes, notes, besides)
        if warmup is not None:  # nothing else shares the GPU or the host from here on
            waited_from = time.perf_counter()
            notes.append(warmup.finish())
            besides["the side processes' end"] = time.perf_counter() - waited_from
            warmup = None
        kernels_s = time.perf_counter() - start
        reference_s = min(reference_s, host_reference())
        kind = "cuda" if device.type == "cuda" else "cpu"
        measured_host = measure_host_settled(
            lambda: measure_host(device, dtypes, quick=quick, progress=progress), reference_s,
            BUDGET_S[kind] - AFTER_HOST_S[kind] - (time.perf_counter() - start), host_reference)
        host, host_notes = measured_host.costs, measured_host.notes
        host_probe = {UNIT_KEYS[p]: unit for p, unit in measured_host.units.items()}
        host_probe |= {phase_unit_key(p, phase): unit
                       for p, by in measured_host.phase_units.items() for phase, unit in by.items()}
        overlap: dict[str, Any] = {}
        if device.type == "cuda":
            overlap, overlap_notes = guarded(
                "the optimizer's overlap", lambda: _optimizer_overlap(device), {})
            host_notes += overlap_notes
        host_s = time.perf_counter() - start - kernels_s
        compiled: dict[str, dict[str, Any]] = {}
        if device.type == "cuda":
            compiled, rec_notes = guarded(
                "the compiled recording",
                lambda: record_compiled_steps(device, hooks, quick=quick, progress=progress), {})
            host_notes += rec_notes
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        if warmup is not None:  # the probes or kernels failed: the side processes are not waited for
            warmup.finish(timeout_s=0.0)
    last = take_probe(device)
    seconds = time.perf_counter() - start
    notes += host_notes
    drift = speed_note(last.slowdown(first), "the calibration's start")
    if drift:  # the curves measured early and late disagree as much: this calibration is unsure
        notes.append(drift)
    notes.append(time_note(kernels, kernels_s, host_s, seconds - kernels_s - host_s, besides))
    configs = host_model_names(EAGER)
    if any(key.startswith(f"{COMPILED}:") for key in host):  # its own block length
        configs += host_model_names(COMPILED)
    if compiled:
        configs.append(record_config().name)
    if overlap:
        configs.append(overlap["config"])
    shapes = {**dict(kernels.get("shapes", {})), "configs": configs}
    return Calibration(
        device_name=device_name(device), device_type=device.type, torch_version=torch.__version__,
        created_at=created, seconds=seconds,
        matmul=dict(kernels.get("matmul", {})), attention=dict(kernels.get("attention", {})),
        vector=dict(kernels.get("vector", {})), optimizer=dict(kernels.get("optimizer", {})),
        gemv=dict(kernels.get("gemv", {})), host=host, compiled=compiled, shapes=shapes,
        notes=notes, probes={"start": first.to_dict(), "host": host_probe,
                             "host_jobs": measured_host.job_units, "end": last.to_dict(),
                             "host_reference": {"step_s": reference_s},
                             **({"fork": {"unit_s": kernels["fork_s"]}} if "fork_s" in kernels else {})},
        launch_gap_s=float(launch["gap_s"]), matmul_bias=dict(kernels.get("matmul_bias", {})),
        matmul_offgrid=dict(kernels.get("matmul_offgrid", {})),
        matmul_probes=dict(kernels.get("matmul_probes", {})),
        matmul_rows=dict(kernels.get("matmul_rows", {})),
        matmul_in_step=dict(kernels.get("matmul_in_step", {})),
        matmul_unaligned=dict(kernels.get("matmul_unaligned", {})), optimizer_overlap=overlap,
        sustained=sustained, cache_bytes=float(last_level_cache_bytes()) if device.type == "cpu" else 0.0,
        cache_reach=kernels.get("cache_reach"),
    )


def time_note(kernels: dict[str, Any], kernels_s: float, host_s: float, compiled_s: float,
              besides: dict[str, float] | None = None) -> str:
    """Where a calibration's time went: the kernels (each family's, what the families waited for
    the side processes' GPU work, and the stage's time `besides` its families: the probes before
    them, the launch gap, the sustained load, the wait for the side processes' end), the host
    costs, the compiled steps."""
    families = ", ".join(f"{k} {v:.1f}" for k, v in kernels.get("family_seconds", {}).items())
    waits = {k: v for k, v in kernels.get("family_lock_wait_seconds", {}).items() if v >= 0.05}
    waited = "; waiting for the side processes' GPU work: " + ", ".join(
        f"{k} {v:.1f}" for k, v in waits.items()) if waits else ""
    others = "; besides them: " + ", ".join(
        f"{k} {v:.1f}" for k, v in besides.items()) if besides else ""
    inner = families + waited + others
    return (f"time: kernels {kernels_s:.1f} s" + (f" ({inner})" if inner else "")
            + f", host {host_s:.1f} s, compiled {compiled_s:.1f} s")


def _launch_and_sustained(device: torch.device, dtypes: list[str], notes: list[str],
                          besides: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The launch gap and the sustained load on CUDA (neither reads the host's speed: the gap's
    kernels are queued behind a sleep, the sustained matmuls run long), their notes appended to
    `notes` and their seconds to `besides`."""
    launch: dict[str, Any] = {"gap_s": 0.0}
    sustained: dict[str, Any] = {}
    if device.type != "cuda":
        return launch, sustained
    started = time.perf_counter()
    launch, gap_notes = guarded("the launch gap", lambda: (measure_launch_gap(device), []), launch)
    notes += gap_notes + list(launch.get("notes", []))
    if "kernels" in launch:
        notes.append("launch gap: " + ", ".join(
            f"{k} {v['stream_s'] * 1e6:.2f} µs from a stream, {v['graph_s'] * 1e6:.2f} in a graph"
            for k, v in launch["kernels"].items()))
    besides["launch gap"] = time.perf_counter() - started
    if "bf16" in dtypes:
        started = time.perf_counter()
        sustained, sustained_notes = guarded("the sustained load", lambda: _sustained(device), {})
        notes += sustained_notes
        besides["sustained load"] = time.perf_counter() - started
    return launch, sustained


def _sustained(device: torch.device) -> tuple[dict[str, Any], list[str]]:
    index = torch.cuda.current_device() if device.index is None else device.index
    measured = measure_sustained(device, clock=gpu_clock_reader(index)[0])
    return measured, [sustained_note(measured)]


def _optimizer_overlap(device: torch.device) -> tuple[dict[str, Any], list[str]]:
    overlap = measure_optimizer_overlap(device)
    return overlap, [
        f"optimizer: {overlap['share']:.0%} of the fused AdamW phase's host time runs after its "
        f"kernels start (host {overlap['host_s'] * 1e3:.2f} ms, done {overlap['end_s'] * 1e3:.2f} ms "
        f"after it began, kernels {overlap['device_s'] * 1e3:.2f} ms; {overlap['tensors']} tensors, "
        f"{overlap['parameters'] / 1e6:.0f}M parameters)"]


def is_quick(calibration: Calibration) -> bool:
    """Whether `calibration` was a quick one (fewer points)."""
    return QUICK_NOTE in calibration.notes


def calibration_for(device: torch.device | str = "auto", *, required: bool = False) -> Calibration | None:
    """The cached calibration of this device, checked against this device and torch (a stale,
    foreign or broken one is a one-line UserError); None when there is none, unless `required`."""
    device = as_device(device)
    return load_calibration(device_name(device), torch.__version__, required=required)


def ensure_calibration(device: torch.device | str = "auto", *, quick: bool = False,
                       force: bool = False, progress: Progress | None = None,
                       hooks: ProfilerHooks | None = None) -> tuple[Calibration, bool, Path]:
    """(calibration, cached, path): the cached one when usable and younger than REUSE_DAYS (and
    not a quick one when a full one is asked for), unless `force`; else a new one, saved."""
    device = as_device(device)
    if not force:
        with contextlib.suppress(UserError):  # stale, foreign or broken: measured again
            cached = calibration_for(device)
            if (cached is not None and cached.age_days() < REUSE_DAYS
                    and (quick or not is_quick(cached))):
                return cached, True, Path(calibration_path(cached.device_name))

    check_cache_dir("calibration")  # where it is saved: before the measurement
    calibration = calibrate(device, quick=quick, progress=progress, hooks=hooks)
    return calibration, False, Path(save_calibration(calibration))
