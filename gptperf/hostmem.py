"""Keep freed host memory for reuse: how gptperf's processes ask glibc's allocator to behave.

By default glibc gives every freed block of 128 KiB or more straight back to the kernel (an
unmapped chunk, or a trimmed heap top), and the next allocation of that size page-faults it in
again, page by page. A CPU train step frees and reallocates its gradients every step: on the
2-core development VM a 6.7M-parameter step (validate's `train mini-v8k`) took 106-113 ms, 26
of them in `fill_` and `add` writing freshly mapped pages, and 67-76 ms with freed blocks kept
(those two ops 3 ms). Blocks up to 32 MiB (glibc's ceiling for the threshold) are then served
from the heap, and the heap is not trimmed below 1 GiB of free space.
"""

from __future__ import annotations

import ctypes
import os
import sys

from gptperf.units import GIB, MIB

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
HEAP_BLOCK_LIMIT = 32 * MIB  # the largest M_MMAP_THRESHOLD glibc accepts on 64-bit
TRIM_THRESHOLD = GIB
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_done: str | None = None  # what keep_freed_memory did in this process


def keep_freed_memory() -> str:
    """Ask glibc to keep freed blocks in the heap (once per process: the entry points call it);
    says what was done. Left alone where the user set glibc's own environment variables, and
    where the C library is not glibc (its `mallopt` refuses, or there is none)."""
    global _done
    if _done is None:
        _done = _apply()
    return _done


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
    if mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "the C library's default (mallopt refused)"
    return f"freed blocks kept (glibc: heap up to {HEAP_BLOCK_LIMIT // MIB} MiB a block, no trim)"
