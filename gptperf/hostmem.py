"""Keep freed host memory for reuse: how gptperf's processes ask glibc's allocator to behave.

By default glibc gives every freed block of 128 KiB or more straight back to the kernel (an
unmapped chunk, or a trimmed heap top), and the next allocation of that size page-faults it in
again, page by page. A CPU train step frees and reallocates its gradients, activations and
AdamW's temporaries every step, so it spent a large share of its time writing fresh pages. Every
block is therefore served from the heap (glibc's `M_MMAP_MAX` 0: no block is mapped apart), and
the heap is not trimmed below 1 GiB of free space (measured: BENCHMARKS.md, "The CPU: freed memory
kept, and three builds a case", and "Session 38", its part "A block over 32 MiB was mapped fresh
on every allocation"; `benchmarks/cpu_fresh_pages.py`).

Under torch.profiler that no longer holds: the profiler's own small allocations, made between the
step's, split the freed blocks, and the heap grows onto fresh pages every profiled step
(BENCHMARKS.md, "Session 39", its part "A CPU profile page-faults where the step does not").
`minor_faults` counts them, so a profile can say so.
"""

from __future__ import annotations

import ctypes
import os
import sys

from gptperf.units import GIB

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = GIB
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
_done: str | None = None  # what keep_freed_memory did in this process


def keep_freed_memory() -> str:
    """Ask glibc to keep freed blocks in the heap (once per process: the entry points call it);
    says what was done. Left alone where the user set glibc's own environment variables, and
    where the C library is not glibc (its `mallopt` refuses, or there is none)."""
    global _done
    if _done is None:
        _done = _apply()
    return _done


def minor_faults() -> int | None:
    """Page faults this process has taken that needed no disk read (first touches of fresh pages
    among them) so far; None where the platform does not count them."""
    try:
        import resource
    except ImportError:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def policy() -> str:
    """How this process's freed host memory is handled, for a result's environment."""
    return _done or "the C library's default"


def _apply() -> str:
    if any(name in os.environ for name in USER_SETTINGS):
        return "as set by the environment (" + ", ".join(n for n in USER_SETTINGS if n in os.environ) + ")"
    if not sys.platform.startswith("linux"):
        return "the platform's default"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "the C library's default (no mallopt)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "the C library's default (mallopt refused)"
    return f"freed blocks kept (glibc: every block from the heap, trimmed above {TRIM_THRESHOLD // GIB} GiB free)"
