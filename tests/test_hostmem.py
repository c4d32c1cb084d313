"""gptperf.hostmem: freed host memory kept in glibc's heap, and left alone where the user says."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from gptperf import hostmem

# A fresh process allocates and frees a block (argv[2] bytes, 4 MiB by default) and reports
# how many bytes glibc had mapped outside its heap while the block was alive (mallinfo2's hblkhd).
_PROBE = """
import ctypes, sys
from gptperf import hostmem
size = int(sys.argv[2]) if len(sys.argv) > 2 else 4 << 20
if sys.argv[1] == "keep":
    print(hostmem.keep_freed_memory(), file=sys.stderr)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblkhd
block = libc.malloc(size)
print(libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


def _has_mallinfo2() -> bool:
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")


def _mapped_while_alive(mode: str, env: dict[str, str] | None = None, size: int = 4 << 20) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode, str(size)], capture_output=True,
                         text=True, check=True, env=env)
    return int(out.stdout.strip())


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_a_large_block_comes_from_the_heap_once_kept() -> None:
    assert _mapped_while_alive("default") >= 4 << 20  # glibc's default: mapped apart, unmapped on free
    assert _mapped_while_alive("keep") == 0
    # above the 32 MiB that glibc's mapping threshold can be raised to (a gpt2 embedding's
    # gradient is 154 MB): from the heap too
    assert _mapped_while_alive("keep", size=160 << 20) == 0


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_the_users_own_glibc_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    assert _mapped_while_alive("keep", env) >= 4 << 20
    env = dict(os.environ, MALLOC_MMAP_MAX_="65536")
    assert _mapped_while_alive("keep", env, size=160 << 20) >= 160 << 20
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert hostmem._apply() == "as set by the environment (MALLOC_TRIM_THRESHOLD_)"


def test_the_policy_says_what_was_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostmem, "_done", None)
    assert hostmem.policy() == "the C library's default"
    monkeypatch.setattr(hostmem, "_apply", lambda: "done here")
    assert hostmem.keep_freed_memory() == "done here"
    assert hostmem.policy() == "done here"


def test_fresh_pages_are_counted_as_page_faults() -> None:
    import mmap

    if hostmem.minor_faults() is None:
        pytest.skip("this platform does not count page faults")
    pages = 512
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as fresh:
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            fresh.madvise(mmap.MADV_NOHUGEPAGE)  # one 2 MiB huge page would be one fault
        before = hostmem.minor_faults()
        for i in range(pages):
            fresh[i * mmap.PAGESIZE] = 1  # the first touch of each page faults it in
        after = hostmem.minor_faults()
    assert after - before >= pages
