"""Compiling ahead, beside a GPU calibration: side processes (`compile_warmup_child`) compile the
Triton kernels of gptperf's decode families and the steps whose compiled host cost and kernels the
calibration measures last, while the calibration times its kernels, so that its own compiles find
Triton's and inductor's caches warm.

On a machine with a slow host the compiles were a third of a calibration (BENCHMARKS.md,
"Figures moved here from the code's docstrings", "Compiling ahead"). The processes share the GPU
in turns through a `GpuLock`: the calibration holds it while it times a kernel, a side process for
all its work but its compiles; and the calibration waits for them before it measures anything on the host (`finish`).
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
PARTS_ARG = "parts="  # the side process's argument naming the parts it compiles, in order
DONE = "compiled ahead in"  # the side process's last line on stderr, with the seconds it took
NOTE_HEAD = "compiled jobs compiled ahead in"  # how `finish`'s note on the side processes begins
# What is compiled ahead, in parts: the decode families' Triton kernels, the compiled host jobs'
# steps, the compiled recordings' steps (`compile_warmup_child`).
PARTS = ("triton", "host", "record")
# The parts each side process takes, one process a group: one doing the three in turn ended after
# the kernels' timing, two started before the speed probes shortened a calibration from cold
# caches (benchmarks/gpu_calibration_triton_warm.py; BENCHMARKS.md, "Figures moved here from the
# code's docstrings", "Compiling ahead")
SIDE_PROCESSES: tuple[tuple[str, ...], ...] = (("triton", "record"), ("host",))
# inductor's compile workers in each side process: fewer than an H200 machine's 16 cores, so the
# calibration's own host work (CUDA-graph capture, cuDNN's plans) keeps its cores
COMPILE_THREADS = 4
WAIT_S = 180.0  # the longest the calibration waits for them after timing its kernels
# the longest the calibration waits for the GPU while a side process holds it (a model's first
# steps and inductor's autotuning of their kernels: seconds) before it stops the side processes
PATIENCE_S = 60.0


class CompileWarmup:
    """The side processes, started by `start` with their lock; `finish` waits for them and says how
    they went."""

    def __init__(self, argvs: list[list[str]], lock_dir: Path, patience_s: float = PATIENCE_S) -> None:
        self._dir = lock_dir
        self._stopped = False
        self.lock = GpuLock(lock_dir / "gpu.lock", patience_s=patience_s, on_timeout=self._stop)
        env = dict(os.environ, **{LOCK_ENV: str(self.lock.path)})
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(COMPILE_THREADS))
        self._logs = [(lock_dir / f"warmup{i}.log").open("w+b") for i in range(len(argvs))]
        self._procs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=log)
                       for argv, log in zip(argvs, self._logs, strict=True)]

    @classmethod
    def start(cls, device_index: int, quick: bool, argv: list[str] | None = None,
              patience_s: float = PATIENCE_S, dtypes: Sequence[str] = (),
              processes: Sequence[Sequence[str]] | None = None) -> CompileWarmup | None:
        """The side processes for CUDA device `device_index` (one a group of `processes`, default
        SIDE_PROCESSES), or None where this platform has no lock to share the GPU by; `dtypes`:
        the calibration's (its decode kernels are compiled in these). `argv`: one process running
        another command instead (tests)."""
        if not available():
            return None
        if argv is not None:
            argvs = [argv]
        else:
            base = [sys.executable, "-m", CHILD_MODULE, f"cuda:{device_index}"]
            base += ["quick"] if quick else []
            base += [DTYPES_ARG + ",".join(dtypes)] if dtypes else []
            argvs = [base + [PARTS_ARG + ",".join(parts)]
                     for parts in (SIDE_PROCESSES if processes is None else processes)]
        return cls(argvs, Path(tempfile.mkdtemp(prefix="gptperf-warmup-")), patience_s)

    def running(self) -> bool:
        """Whether a side process is still at work."""
        return any(proc.poll() is None for proc in self._procs)

    def _kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _stop(self) -> None:
        """A side process held the GPU past the calibration's patience: they end (freeing the lock)."""
        self._stopped = True
        self._kill()

    def finish(self, timeout_s: float = WAIT_S) -> str:
        """Wait for the side processes (killed after `timeout_s` in all); a note saying how they
        went."""
        waited = time.perf_counter()
        codes: list[int | None] = []
        for proc in self._procs:
            try:
                codes.append(proc.wait(timeout=max(0.0, waited + timeout_s - time.perf_counter())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        self._kill()
        waited = time.perf_counter() - waited
        tails = []
        for log in self._logs:
            log.seek(0)
            tails.append(log.read().decode(errors="replace").strip().splitlines())
            log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        count = len(self._procs)
        head = f"{NOTE_HEAD} a side process" if count == 1 else f"{NOTE_HEAD} {count} side processes"
        one, they = ("it", "it") if count == 1 else ("one", "they")
        if self._stopped:
            return (f"{head}: stopped, {one} held the GPU for more than "
                    f"{self.lock.patience_s:.0f} s (the calibration compiles what {they} did not)")
        if None in codes:
            return (f"{head}: stopped after {timeout_s:.0f} s of waiting (the calibration "
                    f"compiles what {they} did not)")
        failed = [(code, tail) for code, tail in zip(codes, tails, strict=True) if code != 0]
        if failed:
            code, tail = failed[0]
            last = tail[-1][:200] if tail else "no output"
            return f"{head}: {one} failed, exit {code}: {last} (the calibration compiles cold)"
        took = " and ".join(tail[-1].removeprefix(DONE).strip() if tail and tail[-1].startswith(DONE)
                            else "?" for tail in tails)
        return f"{head}: {took}, beside the kernels' timing; {waited:.0f} s waited for at their end"
