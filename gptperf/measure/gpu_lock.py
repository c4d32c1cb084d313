"""One GPU shared by a calibration and its side processes, in turns: the calibration holds this lock
while it times a kernel, and each side process that warms the compile caches (`compile_warmup`)
holds it while it runs anything on the GPU, so no process times another's kernels (two processes'
kernels on one GPU are time-sliced: each slows the other's)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # not POSIX: no lock, and no side process is started (`available`)
    fcntl = None  # type: ignore[assignment]

LOCK_ENV = "GPTPERF_GPU_LOCK"  # the lock file's path, handed to the side process
POLL_S = 5e-4  # how often a lock with patience tries again


def available() -> bool:
    """Whether this platform has the lock (POSIX `flock`)."""
    return fcntl is not None


class GpuLock:
    """An exclusive `flock` on `path`, re-entrant within one holder; `None`: a lock that never
    waits (nothing shares the GPU). With `patience_s`, a wait longer than that calls
    `on_timeout()` once (which should end the other holder: its process's end frees the lock)
    and then waits on. `waited_s`: the seconds this holder has spent waiting for it; `held_s`:
    holding it, counted at each release (a hold still open is not in it yet; while suspended is
    not held)."""

    def __init__(self, path: str | Path | None, *, patience_s: float | None = None,
                 on_timeout: Callable[[], None] | None = None) -> None:
        self.path = None if path is None or fcntl is None else Path(path)
        self.patience_s = patience_s
        self.on_timeout = on_timeout
        self._fd: int | None = None
        self._depth = 0
        self.waited_s = 0.0
        self.held_s = 0.0
        self._taken_at = 0.0

    def __enter__(self) -> GpuLock:
        if self.path is not None:
            if self._depth == 0:
                self._fd = self._open()
                self._take(self._fd)
                self._taken_at = time.monotonic()
            self._depth += 1
        return self

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def _take(self, fd: int) -> None:
        start = time.monotonic()
        try:
            self._wait_for(fd)
        finally:
            self.waited_s += time.monotonic() - start

    def _wait_for(self, fd: int) -> None:
        if self.patience_s is None or self.on_timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + self.patience_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_S)
        self.on_timeout()
        fcntl.flock(fd, fcntl.LOCK_EX)

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.path is None or self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            self.held_s += time.monotonic() - self._taken_at
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def suspend(self) -> int:
        """Give the lock up for a while, however deeply held; the depth to `resume` at."""
        depth = self._depth
        if depth and self._fd is not None:
            self._depth = 1
            self.__exit__(None, None, None)
        return depth

    def resume(self, depth: int) -> None:
        """Take the lock back at the depth `suspend` returned (0: it was not held)."""
        if depth:
            self.__enter__()
            self._depth = depth

    def held_elsewhere(self) -> bool:
        """Whether another holder has the lock now (a try that gives it straight back)."""
        if self.path is None or self._depth:
            return False
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)


NO_LOCK = GpuLock(None)
