"""Start torchrun as a subprocess — one launch per point of a scaling sweep — with a time limit,
and turn a failed or killed rank into one line.

    result = launch(Launch(nproc=2, args=[str(WorkerSpec(..., out=d).write(d / "spec.json"))], out_dir=d))

One node: torchrun with a static rendezvous on a free local port. Several nodes: torchrun's own
c10d rendezvous (`--nnodes N --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:PORT`), run
once on every node with the same endpoint. torchrun stops the other ranks when one fails; the
time limit stops torchrun itself (its whole process group) if anything still waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptperf.errors import Terminated
from gptperf.signals import signals_ignored, signals_raise

WORKER = "gptperf.scaling.worker"
LOG = "torchrun.log"


class LaunchError(RuntimeError):
    """A launch that did not produce its result: a rank failed, was killed, or time ran out.
    The message is one line; the full torchrun output is in the log it names (`log`; None when
    torchrun wrote nothing there, and the message says so)."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def _log_named(log: Path) -> tuple[str, Path | None]:
    """How an error points at a launch's log: its path, or that it holds nothing (an empty log
    is not kept: run_scaling_study removes its folder)."""
    try:
        written = log.stat().st_size > 0
    except OSError:
        written = False
    return (f"log: {log}", log) if written else ("torchrun wrote no output", None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (the kernel picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Launch:
    """One torchrun launch of `module` with `args` (for the worker: the path of its spec, whose
    `out` is `out_dir`); `out_dir` holds torchrun's log, the ranks' error lines and the result."""

    nproc: int
    args: Sequence[str]
    out_dir: str | os.PathLike[str]
    module: str = WORKER
    threads: int | None = 1  # OMP_NUM_THREADS per rank; None leaves the environment's
    timeout_s: float = 600.0
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # HOST:PORT of the c10d rendezvous (several nodes)
    rdzv_id: str = "gptperf"
    env: dict[str, str] = field(default_factory=dict)

    def command(self, port: int | None = None) -> list[str]:
        """The torchrun command line (python -m torch.distributed.run ...)."""
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={self.nproc}"]
        if self.rdzv_endpoint is None and self.nnodes == 1:
            cmd += ["--nnodes=1", "--node-rank=0", "--master-addr=127.0.0.1",
                    f"--master-port={port if port is not None else free_port()}"]
        else:
            if self.rdzv_endpoint is None:
                raise ValueError("several nodes need a rendezvous endpoint HOST:PORT")
            cmd += [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={self.rdzv_endpoint}", f"--rdzv-id={self.rdzv_id}"]
        return [*cmd, "-m", self.module, *self.args]


@dataclass
class LaunchResult:
    """What a launch left: the result document (rank 0's gathered JSON), wall time, the log."""

    result: dict[str, Any]
    wall_s: float
    log: Path
    command: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "log": str(self.log), "command": self.command}


def _signal_name(code: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(code).name
    return f"signal {code}"


# The signals torchrun stops the other ranks with once one has failed.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# One failure in torchrun's summary: its "rank : N (local_rank: M)" line, then "exitcode : C".
_FAILURE = r"^\s*rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)"


def _cause(log_text: str) -> tuple[int, int] | None:
    """(rank, exit code) of the failure that ended the launch: a rank killed from outside (by a
    signal torchrun does not send) over torchrun's root cause, which is only the first failure
    it observed: the peers of a killed rank can fail first, on their lost connection."""
    root = re.search(r"Root Cause.*?" + _FAILURE, log_text, re.S | re.M)
    if root is None:
        return None
    failures = [(int(r), int(c)) for r, c in re.findall(_FAILURE, log_text, re.M)]
    killed = next(((r, c) for r, c in failures if c < 0 and -c not in STOP_SIGNALS), None)
    rank, code = int(root.group(1)), int(root.group(2))
    return killed if code >= 0 and killed is not None else (rank, code)


def failure_line(out_dir: Path, returncode: int, log_text: str) -> str:
    """One line saying which rank failed and how: the rank killed by a signal, or the root
    cause's own error line when it wrote one (`_cause`), else its exit status; without torchrun's
    summary a rank's own error line, else the last line of the log."""
    errors = sorted(out_dir.glob("error-rank*.txt"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    cause = _cause(log_text)
    if cause is not None:
        rank, code = cause
        own = out_dir / f"error-rank{rank}.txt"
        if own.is_file():
            return f"rank {rank} failed: {own.read_text().strip()}"
        if code < 0:
            return (f"rank {rank} was killed by {_signal_name(-code)} (exit code {code}); "
                    "torchrun stopped the other ranks")
        return f"rank {rank} exited with status {code}"
    if errors:
        rank = re.sub(r"\D", "", errors[0].name)
        return f"rank {rank} failed: {errors[0].read_text().strip()}"
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    return f"torchrun exited with status {returncode}" + (f": {lines[-1][:200]}" if lines else "")


def launch(spec: Launch) -> LaunchResult:
    """Run one torchrun launch to its end or its time limit; return rank 0's result document.

    Raises LaunchError (one line, naming the rank and the log) when a rank fails or is killed,
    when the time limit passes (torchrun's process group is stopped: SIGTERM, then SIGKILL), or
    when no result was written."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("error-rank*.txt"), out / "result.json"]:
        stale.unlink(missing_ok=True)
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    if spec.threads is not None:
        env["OMP_NUM_THREADS"] = str(spec.threads)
    cmd = spec.command()
    log = out / LOG
    t0 = time.perf_counter()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # its own group: a time-out stops every rank
        try:
            # torchrun's group, in a session of its own, would outlive a plain kill of this process
            with signals_raise():
                code = proc.wait(timeout=spec.timeout_s)
        except Terminated:  # killed (a scheduler, `timeout`, `kill`): the ranks go too
            with signals_ignored():  # a second signal must not cut the stopping short
                _stop_group(proc)
            raise
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            log_file.flush()
            where, kept = _log_named(log)
            raise LaunchError(f"{spec.nproc}-process run did not finish within {spec.timeout_s:g} s; "
                              f"stopped it ({where})", kept) from None
        except BaseException:
            _stop_group(proc)
            raise
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    where, kept = _log_named(log)
    if code != 0:
        raise LaunchError(f"{failure_line(out, code, text)} ({where})", kept)
    result_path = out / "result.json"
    if not result_path.is_file():
        raise LaunchError(f"torchrun finished but wrote no {result_path.name} ({where})", kept)
    return LaunchResult(json.loads(result_path.read_text()), wall, log, cmd)


def _descendants(pid: int) -> list[int]:
    """Process ids below `pid` (Linux /proc; empty elsewhere): torchrun starts each rank in a
    session of its own, so stopping torchrun's group alone could leave ranks behind."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _stop_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM to torchrun's process group (it forwards it to its ranks), then SIGKILL to
    torchrun and every rank it started that is still there."""
    ranks = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *ranks]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)
