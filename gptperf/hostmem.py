"""Keep freed host memory for reuse: how gptperf's processes ask glibc's allocator to behave.

By default glibc gives every freed block of 128 KiB or more straight back to the kernel (an
unmapped chunk, or a trimmed heap top), and the next allocation of that size page-faults it in
again, page by page (~1 µs a 4 KiB page on the 2-core VM). A CPU train step frees and
reallocates its gradients, activations and AdamW's temporaries every step. Every block is then
served from the heap (glibc's `M_MMAP_MAX` 0: no block is mapped apart), and the heap is not
trimmed below 1 GiB of free space. On the 2-core development VM:

* a 6.7M-parameter step (validate's `train mini-v8k`) took 106-113 ms with glibc's default, 26
  of them in `fill_` and `add` writing freshly mapped pages, 67-76 ms with freed blocks kept;
* gpt2's train step (B=1, T=64) took 0.83-0.91 s with blocks up to 32 MiB kept (the mapping
  threshold's ceiling), 620-770 MB a step mapped fresh in its backward and AdamW, and 0.56-0.67 s
  with every block kept (none mapped; peak RSS 2.87-3.07 GB against 2.74-2.86; 2026-12-05,
  benchmarks/cpu_fresh_pages.py).

Under torch.profiler that no longer holds: the profiler's own small allocations, made between the
step's, split the freed blocks, and the heap grows onto fresh pages every profiled step (a
mini-v8k train step: 9000-15000 faults, 35-60 MB, a step; none unprofiled; 2026-12-05).
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
