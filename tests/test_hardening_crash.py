"""Crash safety: a writer killed with SIGKILL at many points while it writes a checkpoint, a report
folder or the ceilings cache leaves the previous version whole and loadable, and the next write
removes what the killed one left behind.

The points are exact, not timed: a writer process (forked from a warm server, so that each point
costs milliseconds) counts the file-system calls of one write (open, write, write_record, fsync,
replace, renameat2, mkdir, …, Python's and C's) with `sys.setprofile`, stops just before the k-th
and says so; the test kills it there with SIGKILL. k runs over the whole write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hardening
import pytest

CHECKPOINT = "checkpoint (gptperf.checkpoint.save_checkpoint)"
REPORT = "report folder (gptperf report, atomic folder swap)"
CEILINGS = "ceilings cache (hardware TOML + curves JSON)"
DEVICE = "crash-test-device"
POINTS = 16  # kill points per kind, spread over the write's file-system calls

_SERVER = textwrap.dedent(r'''
    import contextlib, io, os, signal, sys, time, types
    import torch

    torch.set_num_threads(1)  # no thread pool before fork()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed writers vanish at once (no zombies)
    FS = {"open", "write", "write_record", "write_bytes", "write_text", "fsync", "replace",
          "rename", "renameat2", "mkdir", "mkdtemp", "mkstemp", "unlink", "rmtree", "rmdir",
          "close", "fchmod", "chmod", "copyfile", "scandir"}

    import gptperf.report.stages as stages
    from gptperf.checkpoint import save_checkpoint
    from gptperf.cli import main
    from gptperf.measure.ceilings import SCHEMA, Ceilings, save_ceilings
    from gptperf.model import GPT, GPTConfig
    from gptperf.report import Stage

    config = GPTConfig(block_size=32, vocab_size=256, n_layer=2, n_head=2, n_embd=32)
    template = GPT(config).state_dict()
    VERSION = [0]
    stages.STAGES = [Stage("a", "A", lambda ctx, progress: {"value": VERSION[0]}, 1.0)]

    def checkpoint(target, v):
        state = {k: torch.full_like(t, float(v)) for k, t in template.items()}
        save_checkpoint(target, model_config=config, model=state, step=v)

    def report(target, v):
        VERSION[0] = v
        with contextlib.redirect_stdout(io.StringIO()):  # stdout is the test's channel
            assert main(["report", "--device", "cpu", "--out", target, "--json"]) == 0

    def ceilings(device, v):
        save_ceilings(Ceilings.from_dict({
            "schema": SCHEMA, "device": device, "device_type": "cpu", "measured_at": f"v{v}",
            "matmul": {"fp32": {"points": [{"n": 64, "flops_per_s": 1e10 * v}],
                                "best_flops_per_s": 1e10 * v, "best_shape": "64"}},
            "bandwidth": {"copy": {"best_bytes_per_s": 1e9, "best_buffer_bytes": 2**20}}}))

    WRITERS = {"checkpoint": checkpoint, "report": report, "ceilings": ceilings}

    PY = {"os", "shutil", "tempfile", "pathlib", "io", "gptperf.atomic", "torch.serialization"}
    C_OWNERS = {"posix", "builtins", "_io", "io"}

    def file_system_call(frame, event, arg):
        """The name of a file-system call about to run, else None (str.replace is not one)."""
        if event == "call":
            name = frame.f_code.co_name
            return name if name in FS and frame.f_globals.get("__name__") in PY else None
        if event != "c_call" or getattr(arg, "__name__", "") not in FS:
            return None
        name = arg.__name__
        if name not in ("open", "write", "replace", "close"):  # names nothing else uses
            return name  # e.g. torch's write_record, ctypes' renameat2, os.fsync
        owner = getattr(arg, "__self__", None)
        if hasattr(owner, "fileno") or (isinstance(owner, types.ModuleType)
                                        and owner.__name__ in C_OWNERS):
            return name  # a file's write or close, os.open, os.replace, builtins.open
        return None

    def counting(stop_at):
        seen = [0]

        def hook(frame, event, arg):
            name = file_system_call(frame, event, arg)
            if name is not None:
                seen[0] += 1
                if seen[0] == stop_at:  # stop just before it: the test kills us here
                    os.write(1, f"stopped {name}\n".encode())
                    while True:
                        time.sleep(1)
        return hook, seen

    os.write(1, b"ready\n")
    for line in sys.stdin:
        cmd, kind, target, *args = line.rstrip("\n").split("\t")
        write = WRITERS[kind]
        if cmd == "write":
            write(target, int(args[0]))
            os.write(1, b"ok\n")
        elif cmd == "count":
            hook, seen = counting(0)
            sys.setprofile(hook)
            write(target, int(args[0]))
            sys.setprofile(None)
            os.write(1, f"{seen[0]}\n".encode())
        elif cmd == "kill":
            stop_at, v = int(args[0]), int(args[1])
            pid = os.fork()
            if pid == 0:
                hook, _ = counting(stop_at)
                sys.setprofile(hook)
                write(target, v)
                sys.setprofile(None)
                os.write(1, b"finished\n")
                os._exit(0)
            os.write(1, f"pid {pid}\n".encode())  # one write: the child writes to this pipe too
''')


class _Server:
    """The warm writer process: `write` in itself, `kill` in a fork stopped at a given call."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def ask(self, *words: object) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\t".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, f"the writer server died on {words!r}"
        return answer

    def kill_at(self, kind: str, target: str, stop_at: int, version: int) -> str:
        """Fork a writer of `version`, SIGKILL it just before its `stop_at`-th call; the call."""
        first = self.ask("kill", kind, target, stop_at, version)
        assert self.proc.stdout is not None
        second = self.proc.stdout.readline().strip()
        pid = int(next(x for x in (first, second) if x.startswith("pid ")).split()[1])
        said = next(x for x in (first, second) if not x.startswith("pid "))
        assert said.startswith("stopped "), said  # it stopped inside the write
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:  # gone (the server reaps it), so its temporaries are stale
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return said.split()[1]
            assert time.monotonic() < deadline, "killed writer still there"
            time.sleep(0.001)

    def close(self) -> None:
        self.proc.kill()  # nothing of its own to finish; torch's exit alone takes a second
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith((".tmp", ".old")))


def _checkpoint_version(target: Path) -> list[int]:
    import torch

    from gptperf.checkpoint import load_checkpoint

    doc = load_checkpoint(target)
    v = doc["step"]
    assert all(torch.all(t == float(v)) for t in doc["model"].values()), "a mixed checkpoint"
    return [v]


def _report_version(target: Path) -> list[int]:
    assert sorted(os.listdir(target)) == ["index.html", "report.json"]
    assert (target / "index.html").stat().st_size > 0
    return [json.loads((target / "report.json").read_text())["stages"]["a"]["data"]["value"]]


def _ceilings_versions(_target: Path) -> list[int]:
    from gptperf.measure.ceilings import load_cached_ceilings
    from gptperf.perfmodel import get_hardware

    toml = round(get_hardware("measured", device_name=DEVICE).peak("fp32") / 1e10)
    cached = load_cached_ceilings(DEVICE)
    assert cached is not None, "curves JSON unreadable"
    return [toml, int(cached.measured_at[1:])]


def _run(server: _Server, kind: str, cls: str, target: Path, folder: Path,
         versions: Callable[[Path], list[int]]) -> None:
    assert server.ask("write", kind, target, 1) == "ok"
    total = int(server.ask("count", kind, target, 2))  # a whole write of version 2, calls counted
    assert total >= 5, total
    assert set(versions(target)) == {2}
    current, newest = 2, 2
    points = sorted({round(1 + i * (total - 1) / (POINTS - 1)) for i in range(POINTS)})
    for k in points:
        newest += 1
        call = server.kill_at(kind, str(target), k, newest)
        found = versions(target)  # loadable, and one whole version per file
        assert all(v in (current, newest) for v in found), (k, call, found, current, newest)
        left = _leftovers(folder)
        whole = "previous version whole" if set(found) == {current} else (
            "new version whole (killed after its rename)" if set(found) == {newest}
            else "each file a whole version")
        newest += 1
        assert server.ask("write", kind, target, newest) == "ok"  # the next run
        current = newest
        assert set(versions(target)) == {current}
        assert _leftovers(folder) == [], _leftovers(folder)
        hardening.record(cls, f"SIGKILL before file-system call {k} of {total} ({call})",
                         f"{whole}; {len(left)} leftover(s), removed by the next write")
    hardening.finish(cls)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def server(cache: Path) -> Iterator[_Server]:
    """One writer process for the module (importing torch once costs seconds)."""
    srv = _Server({**os.environ, "GPTPERF_CACHE_DIR": str(cache)})
    yield srv
    srv.close()


def test_killed_checkpoint_writes(tmp_path: Path, server: _Server) -> None:
    out = tmp_path / "out"
    _run(server, "checkpoint", CHECKPOINT, out / "ckpt.pt", out, _checkpoint_version)


def test_killed_report_writes(tmp_path: Path, server: _Server) -> None:
    _run(server, "report", REPORT, tmp_path / "report", tmp_path, _report_version)


def test_killed_ceilings_cache_writes(cache: Path, server: _Server,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.perfmodel.hardware import measured_hardware_path

    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(cache))
    _run(server, "ceilings", CEILINGS, Path(DEVICE), measured_hardware_path(DEVICE).parent,
         _ceilings_versions)
