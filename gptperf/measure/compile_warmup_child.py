"""A side process of `compile_warmup`: compiles the compiled host jobs' steps and the compiled
recordings' steps of `calibrate` exactly as the calibration will (same builders, same shapes,
same inductor settings), so that inductor's on-disk caches hold them when it does; each process
the parts (`compile_warmup.PARTS`) it is given.

It holds the calibration's `GpuLock` (from $GPTPERF_GPU_LOCK) for all its work but the compiling:
a compile (dynamo's trace, AOT autograd, inductor, a backward compiled lazily) gives the lock up
from its start to its end, through torch's compile callbacks (`torch._dynamo.callback_handler`),
and so does Triton's JIT compiling one of gptperf's own kernels (`released_triton_compiles`); so
the calibration times kernels while this process compiles and never while it runs kernels of its
own (two processes' kernels on one GPU are time-sliced). Inductor's compile stack and Triton's
driver are made before the lock is first taken (`import_compile_stack`, `start_triton_driver`).
Inductor's autotuning of a generated kernel runs at the kernel's first call, so under the lock;
should a compile autotune, the autotuner holds the lock too — one patch, made in this process only:
`CachingAutotuner.benchmark_all_configs` runs inside the lock. Where this torch lacks the
callbacks or that method, the process compiles nothing and exits 3.

The part "triton" compiles the Triton kernels the calibration's decode families launch, without
running them (`warm_triton`), so that the calibration loads each from Triton's cache.

    python -m gptperf.measure.compile_warmup_child cuda:0 [quick] [dtypes=bf16,fp32]
        [parts=triton,host,record]
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from gptperf.measure.calibrate_compiled import (
    RECORD_KINDS,
    record_config,
    record_workload,
    warmed_compiled_step,
)
from gptperf.measure.calibrate_decode import STEP_LAYER, measure_decode_families
from gptperf.measure.calibrate_host import (
    COMPILED_WARMUP,
    HOST_JOBS,
    host_groups,
    time_host_parts,
)
from gptperf.measure.calibration_plan import COMPILED_DTYPE
from gptperf.measure.compile_warmup import DONE, DTYPES_ARG, PARTS, PARTS_ARG
from gptperf.measure.gpu_lock import LOCK_ENV, GpuLock
from gptperf.plan import COMPILED

NO_HOOKS = 3  # exit status: this torch lacks the compile callbacks or the autotuner method
BAD_PART = 2  # exit status: a part that is not one of PARTS
PART_NAMES = {"triton": "the decode kernels", "host": "the host jobs", "record": "the recordings"}


def _callback_handler() -> Any:
    handler = getattr(getattr(torch, "_dynamo", None), "callback_handler", None)
    needed = ("register_start_callback", "register_end_callback", "remove_start_callback",
              "remove_end_callback")
    return handler if handler is not None and all(hasattr(handler, n) for n in needed) else None


def can_share() -> bool:
    """Whether this torch has what the process needs to share the GPU: compile callbacks and the
    autotuner method."""
    try:
        from torch._inductor.runtime.triton_heuristics import (
            CachingAutotuner,  # deferred: loads triton
        )
    except ImportError:
        return False
    return _callback_handler() is not None and hasattr(CachingAutotuner, "benchmark_all_configs")


def autotune_inside(lock: GpuLock) -> None:
    """Make inductor's autotuning of a generated kernel hold `lock` (`can_share` first)."""
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner  # deferred: loads triton

    original = CachingAutotuner.benchmark_all_configs

    def benchmark_all_configs(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    CachingAutotuner.benchmark_all_configs = benchmark_all_configs


@contextlib.contextmanager
def released_while_compiling(lock: GpuLock) -> Iterator[None]:
    """Inside: `lock` is given up from each compile's start to its end (`can_share` first). Torch
    clears its callbacks when dynamo is reset, so a block must not span a `torch.compiler.reset`."""
    handler = _callback_handler()
    depths: list[int] = []

    def started(*_: Any) -> None:
        depths.append(lock.suspend())

    def ended(*_: Any) -> None:
        if depths:
            lock.resume(depths.pop())

    handler.register_start_callback(started)
    handler.register_end_callback(ended)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # gone if torch cleared them
            handler.remove_start_callback(started)
        with contextlib.suppress(ValueError):
            handler.remove_end_callback(ended)


def _jit_function() -> Any:
    """Triton's JITFunction where it has the two methods `compile_only` and
    `released_triton_compiles` patch, else None."""
    try:
        from triton.runtime.jit import JITFunction  # deferred: loads triton
    except ImportError:
        return None
    return JITFunction if all(hasattr(JITFunction, m) for m in ("run", "_do_compile")) else None


def import_compile_stack() -> None:
    """Import inductor's compile stack now, outside the lock: a process's first `torch.compile` or
    `torch.compiler.reset` imports it (about 550 modules; dynamo itself is in from `can_share`),
    and inside the lock the calibration waited for that (H100, 2026-12-06: about 4.9 s of the side
    processes' 13.5 s on the GPU, sampled by benchmarks/gpu_calibration_triton_warm.py's "ahead
    profiled")."""
    import torch._inductor.compile_fx  # noqa: F401  # deferred: this function exists to import it


@contextlib.contextmanager
def released_triton_compiles(lock: GpuLock) -> Iterator[None]:
    """Inside: `lock` is given up while Triton's JIT compiles one of gptperf's own `@triton.jit`
    kernels, such as the master weights' AdamW (inductor's kernels compile inside
    `released_while_compiling`), where this Triton has the method (`_jit_function`). Only a kernel
    missing from Triton's in-process cache gives the lock up: handing it over at every launch made
    both processes wait (H200, 2026-12-03: the side process took 75.4 s instead of 44.0, and the
    calibration 114.5 s instead of 96.8)."""
    jit = _jit_function()
    if jit is None:
        yield
        return
    do_compile = jit._do_compile

    def released_compile(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not torch.cuda.is_current_stream_capturing():
            torch.cuda.synchronize()  # what this process queued ends before the GPU is handed over
        depth = lock.suspend()
        try:
            kernel = do_compile(self, *args, **kwargs)
            init = getattr(kernel, "_init_handles", None)
            if callable(init):  # its launcher too: a C module per signature, built at first launch
                init()
            return kernel
        finally:
            lock.resume(depth)

    jit._do_compile = released_compile
    try:
        yield
    finally:
        jit._do_compile = do_compile


@contextlib.contextmanager
def compile_only(lock: GpuLock) -> Iterator[None]:
    """Inside: a Triton kernel launched is compiled (into Triton's on-disk cache, where the
    calibration's own launch finds it) and not run, with `lock` given up while it compiles
    (`_jit_function` first)."""
    jit = _jit_function()
    run = jit.run

    def compile_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["warmup"] = True  # Triton's own compile-without-launch
        return run(self, *args, **kwargs)

    jit.run = compile_run
    try:
        with released_triton_compiles(lock):
            yield
    finally:
        jit.run = run


def _called_once(call: Callable[[int], Any], what: str = "", nbytes: float = 0.0) -> float:
    """Stands for the calibration's KernelTimer in `warm_triton`: the call is made once."""
    call(0)
    return 1e-6


def start_triton_driver() -> None:
    """Make Triton's CUDA driver now, outside the lock: its first use, in a kernel's first launch,
    builds a C helper module with the system's compiler, which held the lock about 0.5 s a
    calibration from cold caches (H100, 2026-12-06, sampled by "ahead profiled")."""
    from triton.runtime import driver  # deferred: loads triton

    driver.active.get_current_device()


def warm_triton(device: torch.device, quick: bool, dtypes: Sequence[str], lock: GpuLock) -> None:
    """Compile without running them, holding `lock` but while compiling, the Triton kernels of
    gptperf's decode families (`calibrate_decode.measure_decode_families`) in `dtypes`, through
    the very calls the calibration times: the same shapes, tiles and operands, so the same
    kernels. From a cold cache those were 33 compiles, 17 s of an H200 calibration (2026-12-03)."""
    from gptperf.steps import decode_kernels, gemv  # deferred: loads triton

    if device.type != "cuda" or not (gemv.available() or decode_kernels.available()) or _jit_function() is None:
        return
    start_triton_driver()
    with lock, compile_only(lock):
        for dtype in dtypes:
            measure_decode_families(device, dtype, quick, None, _called_once,
                                    layer_times=lambda decoder, layers: dict.fromkeys(STEP_LAYER, 1e-6))
            torch.cuda.empty_cache()


def warm_host(device: torch.device, lock: GpuLock) -> None:
    """Compile what `calibrate_host.measure_host` compiles (its compiled jobs, warmed up as it warms
    them), holding `lock` but while compiling."""
    import_compile_stack()
    with lock, released_while_compiling(lock), released_triton_compiles(lock):
        for what in HOST_JOBS:
            groups = host_groups(COMPILED_DTYPE, COMPILED, device, what)
            time_host_parts(groups, [], device, warmup=COMPILED_WARMUP, repeats=0)
            del groups


def warm_record(device: torch.device, quick: bool, lock: GpuLock) -> None:
    """Compile what `calibrate_compiled.record_compiled_steps` compiles (two steps of each
    recording), holding `lock` but while compiling."""
    import_compile_stack()
    with lock, released_triton_compiles(lock):
        config = record_config()
        for kind in RECORD_KINDS[quick]:
            # each recording starts from a reset dynamo (`profiling.provenance`): without it frames
            # this process compiled before (the host model's) would recompile with dynamic sizes
            torch.compiler.reset()
            with released_while_compiling(lock):
                warmed_compiled_step(config, record_workload(kind), device)


def main(argv: list[str] | None = None) -> int:
    """argv: the device, then "quick" for a quick calibration, "dtypes=bf16,fp32" for the
    calibration's dtypes (the decode families' Triton kernels are compiled in these) and
    "parts=triton,record" for the parts to compile, in that order (default: PARTS)."""
    args = sys.argv[1:] if argv is None else argv
    parts = next((a[len(PARTS_ARG):].split(",") for a in args[1:] if a.startswith(PARTS_ARG)), PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        sys.stderr.write(f"unknown part {unknown[0]!r}; valid: {', '.join(PARTS)}\n")
        return BAD_PART
    if not can_share():
        sys.stderr.write("this torch lacks the compile callbacks or the autotuner method that "
                         "sharing the GPU needs\n")
        return NO_HOOKS
    lock = GpuLock(os.environ.get(LOCK_ENV))
    autotune_inside(lock)
    start = time.perf_counter()
    device = torch.device(args[0] if args else "cuda")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    quick = "quick" in args[1:]
    dtypes = [d for a in args[1:] if a.startswith(DTYPES_ARG) for d in a[len(DTYPES_ARG):].split(",") if d]
    work = {"triton": lambda: warm_triton(device, quick, dtypes, lock),
            "host": lambda: warm_host(device, lock),
            "record": lambda: warm_record(device, quick, lock)}
    took = []
    for part in parts:  # "triton" first where given: the calibration times those kernels first
        began, held = time.perf_counter(), lock.held_s
        work[part]()
        took.append(f"{PART_NAMES[part]} {time.perf_counter() - began:.1f} s, "
                    f"{lock.held_s - held:.1f} s of it holding the GPU")
    # the parent's note reads this line
    sys.stderr.write(f"{DONE} {time.perf_counter() - start:.1f} s ({'; '.join(took)})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
