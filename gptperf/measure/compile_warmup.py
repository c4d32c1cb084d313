"""Compiling ahead, beside a GPU calibration: a side process (`compile_warmup_child`) compiles the
Triton kernels of gptperf's decode families and the steps whose compiled host cost and kernels the
calibration measures last, while the calibration times its kernels, so that its own compiles find
Triton's and inductor's caches warm.

On an H200 machine with a slow host the compiles were a third of a calibration (2026-12-02: the
compiled train job 31 s with its compilation, the recordings 13 s, of 119 s; the compiled
inference job left out for time). The two share the GPU in turns through a `GpuLock`: the
calibration holds it while it times a kernel, the side process for all its work but its compiles;
and the calibration waits for the side process before it measures anything on the host
(`finish`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gptperf.measure.gpu_lock import LOCK_ENV, GpuLock, available

CHILD_MODULE = "gptperf.measure.compile_warmup_child"
DTYPES_ARG = "dtypes="  # the side process's argument naming the calibration's dtypes
DONE = "compiled ahead in"  # the side process's last line on stderr, with the seconds it took
# inductor's compile workers in the side process: fewer than an H200 machine's 16 cores, so the
# calibration's own host work (CUDA-graph capture, cuDNN's plans) keeps its cores
COMPILE_THREADS = 4
WAIT_S = 180.0  # the longest the calibration waits for it after timing its kernels
# the longest the calibration waits for the GPU while the side process holds it (a model's first
# steps and inductor's autotuning of their kernels: seconds) before it stops the side process
PATIENCE_S = 60.0


class CompileWarmup:
    """The side process, started by `start` with its lock; `finish` waits for it and says how it went."""

    def __init__(self, argv: list[str], lock_dir: Path, patience_s: float = PATIENCE_S) -> None:
        self._dir = lock_dir
        self._stopped = False
        self.lock = GpuLock(lock_dir / "gpu.lock", patience_s=patience_s, on_timeout=self._stop)
        self._log = (lock_dir / "warmup.log").open("w+b")
        env = dict(os.environ, **{LOCK_ENV: str(self.lock.path)})
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(COMPILE_THREADS))
        self._proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=self._log)

    @classmethod
    def start(cls, device_index: int, quick: bool, argv: list[str] | None = None,
              patience_s: float = PATIENCE_S, dtypes: Sequence[str] = ()) -> CompileWarmup | None:
        """The side process for CUDA device `device_index`, or None where this platform has no
        lock to share the GPU by; `dtypes`: the calibration's (its decode kernels are compiled in
        these). `argv`: another command (tests)."""
        if not available():
            return None
        if argv is None:
            argv = [sys.executable, "-m", CHILD_MODULE, f"cuda:{device_index}"]
            argv += ["quick"] if quick else []
            argv += [DTYPES_ARG + ",".join(dtypes)] if dtypes else []
        return cls(argv, Path(tempfile.mkdtemp(prefix="gptperf-warmup-")), patience_s)

    def running(self) -> bool:
        """Whether the side process is still at work."""
        return self._proc.poll() is None

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait()

    def _stop(self) -> None:
        """The side process held the GPU past the calibration's patience: it ends (freeing the lock)."""
        self._stopped = True
        self._kill()

    def finish(self, timeout_s: float = WAIT_S) -> str:
        """Wait for the side process (killed after `timeout_s`); a note saying how it went."""
        waited = time.perf_counter()
        try:
            code = self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill()
            code = None
        waited = time.perf_counter() - waited
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip().splitlines()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        head = "compiled jobs compiled ahead in a side process"
        if self._stopped:
            return (f"{head}: stopped, it held the GPU for more than "
                    f"{self.lock.patience_s:.0f} s (the calibration compiles what it did not)")
        if code is None:
            return (f"{head}: stopped after {timeout_s:.0f} s of waiting (the calibration "
                    "compiles what it did not)")
        if code != 0:
            last = tail[-1][:200] if tail else "no output"
            return f"{head}: it failed, exit {code}: {last} (the calibration compiles cold)"
        took = tail[-1].removeprefix(DONE).strip() if tail and tail[-1].startswith(DONE) else "?"
        return f"{head}: {took}, beside the kernels' timing; {waited:.0f} s waited for at their end"
