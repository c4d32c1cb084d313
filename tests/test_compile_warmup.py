"""The GPU lock a calibration and its side processes share, the side processes that compile ahead,
and the calibration's kernel timer holding the lock (CPU stand-ins: the GPU run is in BENCHMARKS.md)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load

from gptperf.measure import compile_warmup_child as child
from gptperf.measure.calibrate_compiled import RECORD_BATCH, RECORD_KINDS, RECORD_SEQ, record_config
from gptperf.measure.calibrate_host import HOST_JOBS
from gptperf.measure.calibration_plan import COMPILED_DTYPE
from gptperf.measure.compile_warmup import DONE, PARTS, SIDE_PROCESSES, CompileWarmup
from gptperf.measure.gpu_lock import LOCK_ENV, NO_LOCK, GpuLock, available
from gptperf.measure.kernel_timer import KernelTimer
from gptperf.plan import COMPILED

pytestmark = pytest.mark.skipif(not available(), reason="no flock on this platform")


def test_lock_excludes_another_holder_and_is_reentrant(tmp_path):
    path = tmp_path / "gpu.lock"
    mine, other = GpuLock(path), GpuLock(path)
    assert not other.held_elsewhere()
    with mine:
        assert other.held_elsewhere()
        with mine:  # re-entrant: the inner exit keeps it held
            pass
        assert other.held_elsewhere()
    assert not other.held_elsewhere()
    with NO_LOCK, NO_LOCK:  # never waits, never held
        assert not NO_LOCK.held_elsewhere()


def test_lock_waits_for_another_process(tmp_path):
    path = tmp_path / "gpu.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gptperf.measure.gpu_lock import GpuLock\n"
         f"with GpuLock({str(path)!r}):\n    print('held', flush=True); time.sleep(0.6)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lock = GpuLock(path)
    t0 = time.perf_counter()
    with lock:
        waited = time.perf_counter() - t0
    holder.wait(timeout=10)
    assert waited > 0.3
    assert 0.3 < lock.waited_s <= waited + 0.01  # the wait is counted
    with lock:  # free now: the count hardly moves
        pass
    assert lock.waited_s < waited + 0.05


def test_side_process_gets_the_lock_path_and_its_failure_is_a_note():
    script = f"import os, sys; sys.stderr.write('lock at ' + os.environ[{LOCK_ENV!r}]); sys.exit(5)"
    warmup = CompileWarmup.start(0, False, argv=[sys.executable, "-c", script])
    lock_path = warmup.lock.path
    note = warmup.finish()
    assert not warmup.running()
    assert f"failed, exit 5: lock at {lock_path}" in note
    assert not lock_path.parent.exists()  # its folder is removed


def test_side_process_finished_or_stopped():
    script = f"import sys; sys.stderr.write('compiling\\n{DONE} 12.5 s\\n')"
    ok = CompileWarmup.start(0, True, argv=[sys.executable, "-c", script]).finish()
    assert ok.startswith("compiled jobs compiled ahead in a side process: 12.5 s, beside")
    slow = CompileWarmup.start(0, True, argv=[sys.executable, "-c", "import time; time.sleep(30)"])
    t0 = time.perf_counter()
    note = slow.finish(timeout_s=0.2)
    assert "stopped after 0 s" in note and time.perf_counter() - t0 < 10


def test_two_side_processes_are_waited_for_together_and_told_apart(tmp_path):
    def done(seconds, part):
        return [sys.executable, "-c", f"import sys; sys.stderr.write('{DONE} {seconds} s ({part})')"]

    (tmp_path / "ok").mkdir()
    both = CompileWarmup([done(4.5, "the decode kernels 1.0 s, 0.2 s of it holding the GPU; the "
                                    "recordings 3.5 s, 1.5 s of it holding the GPU"),
                          done(2.0, "the host jobs 2.0 s, 0.5 s of it holding the GPU")], tmp_path / "ok")
    assert both.finish().startswith(  # each process's line as the child writes it (`child.main`)
        "compiled jobs compiled ahead in 2 side processes: 4.5 s (the decode kernels 1.0 s, 0.2 s "
        "of it holding the GPU; the recordings 3.5 s, 1.5 s of it holding the GPU) and 2.0 s (the "
        "host jobs 2.0 s, 0.5 s of it holding the GPU), beside the kernels' timing")
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('no GPU'); sys.exit(4)"]
    (tmp_path / "bad").mkdir()
    one_bad = CompileWarmup([done(1.0, "x"), failing], tmp_path / "bad")
    assert "2 side processes: one failed, exit 4: no GPU (the calibration compiles cold)" in one_bad.finish()
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    (tmp_path / "slow").mkdir()
    stuck = CompileWarmup([done(1.0, "x"), slow], tmp_path / "slow")
    t0 = time.perf_counter()
    assert "stopped after 0 s of waiting (the calibration compiles what they did not)" in stuck.finish(0.3)
    assert time.perf_counter() - t0 < 10 and not stuck.running()  # the slow one was killed


def test_a_side_process_that_keeps_the_gpu_is_stopped_after_the_patience():
    script = ("import os, time; from gptperf.measure.gpu_lock import GpuLock\n"
              f"with GpuLock(os.environ[{LOCK_ENV!r}]):\n"
              "    open(os.environ[" + repr(LOCK_ENV) + "] + '.held', 'w').close(); time.sleep(60)")
    warmup = CompileWarmup.start(0, False, argv=[sys.executable, "-c", script], patience_s=0.3)
    held = warmup.lock.path.with_name(warmup.lock.path.name + ".held")
    deadline = time.monotonic() + 30
    while not held.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    with warmup.lock:  # waits 0.3 s, stops the side process, then has the GPU
        waited = time.perf_counter() - t0
    assert 0.25 < waited < 20
    assert warmup.finish().endswith("stopped, it held the GPU for more than 0 s (the calibration "
                                    "compiles what it did not)")


def test_patience_calls_its_timeout_once_and_waits_on(tmp_path):
    path = tmp_path / "gpu.lock"
    holder = GpuLock(path)
    calls = []

    def give_up():
        calls.append(1)
        holder.__exit__(None, None, None)  # as the other process's end would

    holder.__enter__()
    with GpuLock(path, patience_s=0.05, on_timeout=give_up):
        assert calls == [1]


def test_the_child_command_names_the_device_and_quick():
    seen = {}

    class Recorder(CompileWarmup):
        def __init__(self, argvs, lock_dir, patience_s):
            seen["argvs"] = argvs
            lock_dir.rmdir()

    Recorder.start(1, True, processes=[["triton", "record"], ["host"]])
    assert [argv[1:] for argv in seen["argvs"]] == [
        ["-m", "gptperf.measure.compile_warmup_child", "cuda:1", "quick", "parts=triton,record"],
        ["-m", "gptperf.measure.compile_warmup_child", "cuda:1", "quick", "parts=host"]]
    Recorder.start(0, False, dtypes=("bf16", "fp32"), processes=[PARTS])
    assert [argv[3:] for argv in seen["argvs"]] == [["cuda:0", "dtypes=bf16,fp32", "parts=triton,host,record"]]
    Recorder.start(0, False)  # every part compiled, each once, by SIDE_PROCESSES
    parts = [argv[-1].removeprefix("parts=").split(",") for argv in seen["argvs"]]
    assert len(parts) == len(SIDE_PROCESSES) and sorted(p for ps in parts for p in ps) == sorted(PARTS)


def test_the_child_compiles_its_parts_in_order_the_decode_kernels_in_the_calibrations_dtypes(
        monkeypatch, capsys):
    order = []
    monkeypatch.setattr(child, "can_share", lambda: True)
    monkeypatch.setattr(child, "autotune_inside", lambda lock: None)
    monkeypatch.setattr(child, "warm_triton", lambda device, quick, dtypes, lock:
                        order.append(("triton", device.type, quick, dtypes)))
    monkeypatch.setattr(child, "warm_host", lambda device, lock: order.append(("host",)))
    monkeypatch.setattr(child, "warm_record", lambda device, quick, lock: order.append(("record", quick)))
    assert child.main(["cpu", "quick", "dtypes=bf16,fp16"]) == 0
    assert order == [("triton", "cpu", True, ["bf16", "fp16"]), ("host",), ("record", True)]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    held = r"[0-9.]+ s, [0-9.]+ s of it holding the GPU"  # each part's time, and the lock's share
    assert re.fullmatch(rf"{DONE} [0-9.]+ s \(the decode kernels {held}; the host jobs {held}; "
                        rf"the recordings {held}\)", last), last
    order.clear()
    assert child.main(["cpu", "parts=record,host"]) == 0
    assert order == [("record", False), ("host",)]
    order.clear()
    capsys.readouterr()
    assert child.main(["cpu", "parts=triton,fast"]) == child.BAD_PART  # before any work
    assert order == [] and capsys.readouterr().err.strip() == (
        "unknown part 'fast'; valid: triton, host, record")


def test_warm_triton_makes_each_families_calls_once_holding_the_lock(monkeypatch, tmp_path):
    """The calibration's own decode families, each point's call made once (inside compile_only,
    stood in for here: this CPU has no Triton), the lock held for what is not compiling."""
    from gptperf.measure import calibrate_decode
    from gptperf.steps import gemv

    path = tmp_path / "gpu.lock"
    other = GpuLock(path)
    seen = []

    def families(device, dtype, quick, progress, timer, record=None, layer_times=None):
        made = []
        assert timer(lambda j: made.append(j), "a point") > 0 and made == [0]
        times = layer_times(object(), 12)
        assert set(times) == set(calibrate_decode.STEP_LAYER)
        seen.append((dtype, quick, other.held_elsewhere()))
        return {}, {}

    monkeypatch.setattr(gemv, "available", lambda: True)
    monkeypatch.setattr(child, "_jit_function", lambda: object)
    monkeypatch.setattr(child, "measure_decode_families", families)
    monkeypatch.setattr(child, "compile_only", lambda lock: contextlib.nullcontext())
    monkeypatch.setattr(child, "start_triton_driver", lambda: seen.append(("driver", other.held_elsewhere())))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    child.warm_triton(torch.device("cuda"), True, ["bf16", "fp32"], GpuLock(path))
    assert seen == [("driver", False), ("bf16", True, True), ("fp32", True, True)]  # the driver first, unlocked
    assert not other.held_elsewhere()
    child.warm_triton(torch.device("cpu"), True, ["bf16"], GpuLock(path))  # nothing on a CPU
    assert len(seen) == 3


def test_kernel_timer_holds_the_lock_while_it_times(tmp_path):
    path = tmp_path / "gpu.lock"
    other = GpuLock(path)
    held = []
    timer = KernelTimer(torch.device("cpu"), quick=True, lock=GpuLock(path))

    def call(j):
        held.append(other.held_elsewhere())

    timer(call)
    assert held and all(held)
    assert not other.held_elsewhere()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_kernel_timer_on_a_gpu_holds_the_lock_for_the_first_calls_the_capture_and_the_replays(
        tmp_path, monkeypatch):
    path = tmp_path / "gpu.lock"
    other, lock = GpuLock(path), GpuLock(path)
    held: list[bool] = []
    timed: list[bool] = []
    replay = KernelTimer._replay_s
    monkeypatch.setattr(KernelTimer, "_replay_s",
                        staticmethod(lambda graph: timed.append(other.held_elsewhere()) or replay(graph)))
    x = torch.ones(256, device="cuda")
    seconds = KernelTimer(torch.device("cuda"), quick=True, lock=lock)(
        lambda j: held.append(other.held_elsewhere()) or x.mul_(1.0))
    assert seconds > 0
    assert len(held) > 2 and all(held)  # the first calls (cuDNN's plan builds), then the capture's
    assert timed and all(timed)  # every replay
    assert not other.held_elsewhere()


def test_suspend_gives_the_lock_up_and_resume_takes_it_back_at_its_depth(tmp_path):
    path = tmp_path / "gpu.lock"
    mine, other = GpuLock(path), GpuLock(path)
    assert mine.suspend() == 0  # not held: nothing to give up
    mine.resume(0)
    assert not other.held_elsewhere()
    with mine, mine:
        depth = mine.suspend()
        assert depth == 2 and not other.held_elsewhere()
        mine.resume(depth)
        assert other.held_elsewhere()
    assert not other.held_elsewhere()  # both exits matched the depth resumed


def test_held_s_counts_the_time_held_and_not_the_time_suspended(tmp_path):
    lock = GpuLock(tmp_path / "gpu.lock")
    with lock:
        time.sleep(0.05)
        depth = lock.suspend()
        time.sleep(0.3)  # given up: not held
        lock.resume(depth)
        time.sleep(0.05)
    time.sleep(0.1)  # released: not held
    assert 0.1 <= lock.held_s < 0.3
    assert GpuLock(None).held_s == 0.0  # a lock that never waits holds nothing


def test_autotuning_in_the_child_holds_the_lock(tmp_path, monkeypatch):
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    monkeypatch.setattr(CachingAutotuner, "benchmark_all_configs",
                        lambda self, *a, **k: other.held_elsewhere())
    path = tmp_path / "gpu.lock"
    other = GpuLock(path)
    child.autotune_inside(GpuLock(path))
    assert CachingAutotuner.benchmark_all_configs(object()) is True  # held while it benchmarks
    assert not other.held_elsewhere()


def test_a_real_compile_gives_the_lock_up_and_the_compiled_run_holds_it(tmp_path):
    """torch's own compile callbacks, around a real dynamo compile (the eager backend: no C++)."""
    assert child.can_share()
    path = tmp_path / "gpu.lock"
    mine, other = GpuLock(path), GpuLock(path)
    seen = {}

    def backend(gm, inputs):
        seen["compiling"] = other.held_elsewhere()
        return gm.forward

    def f(x):
        return torch.sin(x) + 1

    torch.compiler.reset()
    compiled = torch.compile(f, backend=backend)
    with mine, child.released_while_compiling(mine):
        compiled(torch.randn(4))
        assert other.held_elsewhere()  # taken back at the compile's end, before the run
    torch.compiler.reset()
    assert seen["compiling"] is False
    assert not other.held_elsewhere()


class _FakeJit:
    """Stands for Triton's JITFunction: `_do_compile` says whether another holder could take the
    lock while it compiled; `run` compiles (a kernel missing from the in-process cache) and runs."""

    def __init__(self, other: GpuLock) -> None:
        self.other = other
        self.ran: list[bool] = []

    def _do_compile(self, *args, **kwargs):
        return self.other.held_elsewhere()

    def run(self, *args, warmup=False, **kwargs):
        self.ran.append(warmup)
        return type(self)._do_compile(self)


def test_triton_compiles_give_the_lock_up_and_take_it_back(monkeypatch, tmp_path):
    path = tmp_path / "gpu.lock"
    mine, other = GpuLock(path), GpuLock(path)
    jit = _FakeJit(other)
    original = _FakeJit._do_compile, _FakeJit.run
    synced: list[bool] = []
    monkeypatch.setattr(child, "_jit_function", lambda: _FakeJit)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: synced.append(other.held_elsewhere()))
    with mine, child.released_triton_compiles(mine):
        assert jit.run() is False  # not held by anyone while it compiled
        assert other.held_elsewhere()  # taken back after
    assert synced == [True]  # what this process queued ended before the GPU was handed over
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)  # nothing to sync
    assert (_FakeJit._do_compile, _FakeJit.run) == original and not other.held_elsewhere()
    with mine, child.compile_only(mine):
        assert jit.run() is False and jit.ran[-1] is True  # compiled, not launched
        assert other.held_elsewhere()
    assert (_FakeJit._do_compile, _FakeJit.run) == original
    with mine:
        assert jit.run() is True and jit.ran[-1] is False  # unpatched: compiled holding the lock
    monkeypatch.setattr(child, "_jit_function", lambda: None)  # no Triton: nothing to patch
    with mine, child.released_triton_compiles(mine):
        assert other.held_elsewhere()


def test_the_triton_warm_benchmarks_holds_as_before_rebuild_the_old_side_process(monkeypatch, tmp_path):
    """"holds as before": the import is skipped, the host jobs' and recordings' Triton compiles
    hold the lock, and the decode kernels' compile-only pass still gives it up (as it did)."""
    bench = _triton_warm_bench()
    for name in ("import_compile_stack", "start_triton_driver", "released_triton_compiles", "compile_only"):
        monkeypatch.setattr(child, name, getattr(child, name))  # put back after the test
    monkeypatch.setattr(child, "_jit_function", lambda: _FakeJit)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    exec(bench._OLD_HOLDS.replace("sys.exit(child.main())", ""), {})
    path = tmp_path / "gpu.lock"
    mine, other = GpuLock(path), GpuLock(path)
    jit = _FakeJit(other)
    for made_ahead in (child.import_compile_stack, child.start_triton_driver):  # nothing made ahead
        assert made_ahead() is None and made_ahead.__module__ != child.__name__
    with mine, child.released_triton_compiles(mine):
        assert jit.run() is True  # compiled holding the lock
    with mine, child.compile_only(mine):
        assert jit.run() is False and jit.ran[-1] is True  # given up, compiled without a launch
    with mine, child.released_triton_compiles(mine):
        assert jit.run() is True  # held again after the decode kernels' pass


def test_the_child_refuses_a_torch_without_the_hooks(monkeypatch):
    monkeypatch.setattr(child, "can_share", lambda: False)
    assert child.main(["cpu"]) == child.NO_HOOKS


@pytest.mark.parametrize("quick", [False, True])
def test_the_child_compiles_what_the_calibration_compiles(monkeypatch, tmp_path, quick):
    """Same builders, same shapes: the host jobs' groups in compiled mode and the recordings' steps,
    each run holding the lock."""
    groups, built, order, held = [], [], [], []
    path = tmp_path / "gpu.lock"
    other = GpuLock(path)

    def fake_groups(dtype, mode, device, what):
        groups.append((dtype, mode, what))
        return {1: {"fwd": lambda: (order.append(("host", what)), held.append(other.held_elsewhere()))}}

    class FakeStep:
        def __init__(self, kind):
            self.kind = kind

        def step(self):
            order.append(("record", self.kind))
            held.append(other.held_elsewhere())

    def fake_build(config, workload, plan, device):
        built.append((config.name, workload.kind, workload.batch, workload.seq, workload.dtype,
                      plan.compiled))
        return FakeStep(workload.kind)

    imported, released = [], []

    @contextlib.contextmanager
    def triton_compiles(lock):
        released.append(other.held_elsewhere())
        yield

    monkeypatch.setattr(child, "released_triton_compiles", triton_compiles)
    monkeypatch.setattr(child, "host_groups", fake_groups)
    monkeypatch.setattr("gptperf.steps.build.build_step", fake_build)
    monkeypatch.setattr(torch.compiler, "reset", lambda: order.append(("reset",)))
    monkeypatch.setattr(child, "import_compile_stack", lambda: imported.append(other.held_elsewhere()))
    child.warm_host(torch.device("cpu"), GpuLock(path))
    child.warm_record(torch.device("cpu"), quick, GpuLock(path))
    assert held and all(held) and not other.held_elsewhere()
    assert imported == [False, False]  # each part imports inductor's stack before the lock
    assert released == [True, True]  # each part's Triton compiles give the lock up
    assert groups == [(COMPILED_DTYPE, COMPILED, what) for what in HOST_JOBS]
    assert built == [(record_config().name, kind, RECORD_BATCH, RECORD_SEQ, COMPILED_DTYPE, True)
                     for kind in RECORD_KINDS[quick]]
    assert [o for o in order if o[0] == "record"] == [("record", k) for k in RECORD_KINDS[quick]
                                                      for _ in range(2)]
    # dynamo is reset before each recording, as the recording's provenance does
    assert [order[i + 1] for i, o in enumerate(order) if o == ("reset",)] == [
        ("record", k) for k in RECORD_KINDS[quick]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_side_process_compiles_on_a_gpu_and_leaves_the_gpu_to_the_timer():
    """The real side processes as shipped (`SIDE_PROCESSES`, quick): they finish, and while they
    work the lock is free for stretches (their compiles) that the calibration's timer gets."""
    warmup = CompileWarmup.start(torch.cuda.current_device(), True)
    got, deadline = 0, time.monotonic() + 120
    while warmup.running() and time.monotonic() < deadline:
        with warmup.lock:  # as KernelTimer takes it for a point
            got += 1
        time.sleep(0.01)
    note = warmup.finish()
    assert note.startswith(f"compiled jobs compiled ahead in {len(SIDE_PROCESSES)} side processes: "
                           if len(SIDE_PROCESSES) > 1 else "compiled jobs compiled ahead in a side process: ")
    for part in ("the decode kernels", "the host jobs", "the recordings"):  # each, with its GPU share
        assert re.search(rf"{part} [0-9.]+ s, [0-9.]+ s of it holding the GPU[;)]", note), note
    assert got > 10


_FAMILIES = """
import sys, torch
from gptperf.measure.calibrate_decode import measure_decode_families
from gptperf.measure.gpu_lock import GpuLock
from gptperf.measure.kernel_timer import KernelTimer
from gptperf.measure import compile_warmup_child as child
device = torch.device("cuda")
if sys.argv[1] == "warm":
    child.warm_triton(device, True, ["bf16"], GpuLock(None))
else:
    gemv, attention = measure_decode_families(device, "bf16", True, None, KernelTimer(device, True))
    assert gemv and attention
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_warm_triton_compiles_every_kernel_the_calibration_then_launches(tmp_path):
    """In a fresh Triton cache, the side process's compile-only pass leaves nothing for the
    calibration's decode families (quick, bf16) to compile: the cache gains no kernel after it."""
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path / "triton"))
    subprocess.run([sys.executable, "-c", _FAMILIES, "warm"], env=env, check=True, timeout=600)
    compiled = set(os.listdir(tmp_path / "triton"))
    assert len(compiled) >= 5  # gemv, the two chains or the step's kernels, the head, attention
    subprocess.run([sys.executable, "-c", _FAMILIES, "time"], env=env, check=True, timeout=600)
    assert set(os.listdir(tmp_path / "triton")) == compiled


@pytest.mark.parametrize("args, says", [
    (["--rounds", "0"], "--rounds must be a positive integer, got 0"),
    (["--variants", "ahead,fast"], "--variants: unknown fast; choose from ahead, one process, not ahead, ahead niced, no cudnn, holds as before, cuda first, ahead profiled"),
])
def test_the_triton_warm_benchmark_refuses_bad_arguments_in_one_line(args, says):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_calibration_triton_warm.py"
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(says)


def _triton_warm_bench():
    return load("gpu_calibration_triton_warm")


_CHILD = [sys.executable, "-m", "gptperf.measure.compile_warmup_child", "cuda:0", "quick"]


def _side_commands(monkeypatch, patch: str, dtypes: tuple[str, ...], started: list) -> None:
    """`CompileWarmup.start` with the benchmark's `patch` made in this process (undone after the
    test): each side process's command is appended to `started`, none is run."""
    from gptperf.measure import compile_warmup

    class Popen:
        def __init__(self, argv, **kwargs):
            started.append(argv)

    for name in ("__init__", "start"):
        monkeypatch.setattr(compile_warmup.CompileWarmup, name, getattr(compile_warmup.CompileWarmup, name))
    monkeypatch.setattr(compile_warmup, "SIDE_PROCESSES", compile_warmup.SIDE_PROCESSES)
    monkeypatch.setattr(compile_warmup, "available", lambda: True)
    monkeypatch.setattr(compile_warmup.subprocess, "Popen", Popen)
    exec(_triton_warm_bench()._PATCH + patch, {})
    side = compile_warmup.CompileWarmup.start(0, True, dtypes=dtypes)
    for log in side._logs:
        log.close()
    shutil.rmtree(side._dir)


@pytest.mark.parametrize("variant, expected", [
    ("not ahead", [[*_CHILD, "parts=" + ",".join(parts)] for parts in SIDE_PROCESSES]),
    ("ahead niced", [["nice", "-n", "10", *_CHILD, "dtypes=bf16,fp32", "parts=" + ",".join(parts)]
                     for parts in SIDE_PROCESSES]),
    ("one process", [[*_CHILD, "dtypes=bf16,fp32", "parts=triton,host,record"]]),
])
def test_the_triton_warm_benchmarks_variants_edit_the_side_process_command(variant, expected,
                                                                           monkeypatch):
    started: list[list[str]] = []
    _side_commands(monkeypatch, _triton_warm_bench().PATCHES[variant], ("bf16", "fp32"), started)
    assert started == expected


def test_the_triton_warm_benchmarks_profiled_side_process_runs_the_child_and_writes_its_holds(
        monkeypatch, tmp_path):
    bench = _triton_warm_bench()
    started: list[list[str]] = []
    # its side processes' part (the rest would sample this process)
    _side_commands(monkeypatch, bench._PROFILED_SIDE, ("bf16",), started)
    assert [argv[:3] for argv in started] == [[sys.executable, "-c", bench._HOLD_PROFILE]] * len(SIDE_PROCESSES)
    assert started[0][3:] == ["cuda:0", "quick", "dtypes=bf16", "parts=" + ",".join(SIDE_PROCESSES[0])]
    monkeypatch.undo()  # subprocess's own Popen again
    # the child as the prelude runs it: a bad part refused, and its (empty) profile written at exit
    done = subprocess.run([*started[0][:3], "cpu", "parts=fast"], capture_output=True, text=True,
                          env=dict(os.environ, **{bench.HOLD_PROFILE_ENV: str(tmp_path)}), timeout=120)
    assert done.returncode == child.BAD_PART and "unknown part 'fast'" in done.stderr
    (written,) = tmp_path.glob("holds-*.txt")
    assert written.read_text().startswith("a side process, cpu parts=fast, holding the GPU: 0.0 s sampled")


def test_the_triton_warm_benchmarks_profile_of_the_calibration_names_its_gptperf_frames(tmp_path):
    """The calibration's own sampler, in a process whose main thread spends its time in a gptperf
    function: its seconds land on that function's name, below the innermost frame."""
    bench = _triton_warm_bench()
    assert bench.PATCHES["ahead profiled"].startswith(bench._MAIN_PROFILE)
    busy = bench._MAIN_PROFILE + textwrap.dedent("""
        import os
        source = "def spin():\\n    t = _time.monotonic()\\n    while _time.monotonic() - t < 0.6:\\n        pass\\n"
        exec(compile(source, os.path.join(_OURS, "measure", "spin.py"), "exec"))  # a gptperf frame
        spin()
        """)
    done = subprocess.run([sys.executable, "-c", busy], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **{bench.HOLD_PROFILE_ENV: str(tmp_path)}))
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.glob("main-*.txt")
    lines = written.read_text().splitlines()
    assert lines[0].startswith("the calibration's process: ")
    places = [line for line in lines[1:] if " in all: " not in line]
    top = max(places, key=lambda line: float(line.split()[0]))
    assert float(top.split()[0]) >= 0.3 and top.endswith(" spin | spin.py:spin"), lines
    totals = {line.split(" in all: ")[1]: float(line.split()[0]) for line in lines[1:] if " in all: " in line}
    assert totals["spin"] >= float(top.split()[0]) and sum(totals.values()) == pytest.approx(
        sum(float(line.split()[0]) for line in places), abs=0.05 * len(places)), lines


def test_the_triton_warm_benchmarks_cuda_first_makes_the_context_before_the_side_processes(monkeypatch):
    order: list = []

    def randn(*shape, device=None, **kwargs):
        order.append(f"randn on {device}")
        return torch.ones(*shape)

    monkeypatch.setattr(torch, "randn", randn)
    _side_commands(monkeypatch, _triton_warm_bench().PATCHES["cuda first"], ("bf16",), order)
    assert order[0] == "randn on cuda" and len(order) == 1 + len(SIDE_PROCESSES)
    assert all(isinstance(argv, list) for argv in order[1:])  # the side processes' commands, after


def test_the_side_processes_compile_every_part_once_the_kernels_first():
    parts = [p for group in SIDE_PROCESSES for p in group]
    assert sorted(parts) == sorted(PARTS) and parts.index("triton") == 0  # the kernels timed first


def test_the_triton_warm_benchmark_alternates_the_order_of_its_variants():
    bench = _triton_warm_bench()
    assert bench.run_order(["ahead", "not ahead"], 3) == [
        "ahead", "not ahead", "not ahead", "ahead", "ahead", "not ahead"]
    assert bench.run_order(["ahead"], 2) == ["ahead", "ahead"]


def test_the_triton_warm_benchmark_splits_the_wall_time_outside_the_calibrations_clock(
        monkeypatch, capsys):
    import atexit

    from gptperf.measure import calibrate as cal_mod

    bench = _triton_warm_bench()
    # each run's marks, as its prelude writes them around the calibration and at its exit
    monkeypatch.setattr(cal_mod, "calibrate", lambda *a, **k: "calibrated")
    at_exit = []
    monkeypatch.setattr(atexit, "register", at_exit.append)
    exec(bench._CLOCK, {})
    assert cal_mod.calibrate() == "calibrated" and len(at_exit) == 1
    at_exit[0]()
    marks = [line.split()[1] for line in capsys.readouterr().err.splitlines()]
    assert marks == ["start", "end", "exit"]
    # launched at 100 s, the calibration from 105.5 to 200, the exit from 201.5, ended at 204
    stderr = "a warning\n[clock] start 105.5\n[clock] end 200.0\n[clock] exit 201.5\n"
    assert bench.outside_clock(stderr, 100.0, 204.0) == {"before_s": 5.5, "after_s": 1.5, "exit_s": 2.5}
    assert bench.outside_clock("[clock] start 105.5\n", 100.0, 204.0) == {
        "before_s": 5.5, "after_s": None, "exit_s": None}  # a run that died in its calibration


def test_the_triton_warm_benchmark_compares_each_runs_grids_with_the_first():
    bench = _triton_warm_bench()
    first = {"matmul bf16": [1.0, 2.0, 4.0], "attention bf16:one_query": [1.0], "gone": [1.0]}
    other = {"matmul bf16": [1.1, 2.0, 3.0], "attention bf16:one_query": [1.0, 2.0]}
    agree = bench.grid_agreement(first, other)
    assert agree.keys() == {"matmul bf16"}  # the others are not comparable cell by cell
    median, worst, cells = agree["matmul bf16"]
    assert (median, cells) == (1.0, 3) and worst == pytest.approx(0.25)
