"""Data-parallel scaling through torchrun on CPU (gloo, 2 processes): DDP trains exactly like one
process on the same global batch, `gptperf scale --json` carries every number, a failing or killed
rank ends the run with one line and no hang, and two torchrun launches meet as two "nodes"
through torchrun's c10d rendezvous. torchrun starts slowly (~4 s per launch on 2 cores), so the
`scale` run is shared by the tests that read it, and the fault tests' launches run at once."""

from __future__ import annotations

import contextlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gptperf.errors import Terminated, UserError
from gptperf.model import preset
from gptperf.scaling.launch import Launch, LaunchError, free_port, launch
from gptperf.scaling.results import ScaleSpec
from gptperf.scaling.worker import WorkerSpec


def small(out: Path, fault: str | None = None) -> list[str]:
    """The worker's argument: a spec for a 1-layer tiny model, 3 short steps, on the CPU (gloo:
    on a one-GPU machine a second process would have no GPU)."""
    spec = WorkerSpec(preset("tiny").replace(n_layer=1).to_dict(), (2,), 16, str(out), warmup=1,
                      steps=2, device="cpu", fault=fault)
    return [str(spec.write(out / "spec.json"))]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`gptperf scale --device cpu --mode strong,weak --procs 1,2 --json` on the tiny model (2
    buckets of gradients): both studies from one launch a process count."""
    from gptperf.cli import main

    plots = tmp_path_factory.mktemp("plots")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["scale", "--device", "cpu", "--mode", "strong,weak", "--procs", "1,2", "--batch", "4", "--seq", "32",
                     "--warmup", "1", "--steps", "2", "--timeout", "120", "--plot-dir", str(plots), "--json"])
    assert code == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def strong(studies: dict[str, Any]) -> dict[str, Any]:
    """The strong study of `studies`: what `--mode strong` alone prints."""
    return studies["studies"][0]


@pytest.mark.slow
def test_scale_json_carries_every_number(strong: dict[str, Any]) -> None:
    d = strong
    assert d["schema"] == "gptperf.scale/1" and d["mode"] == "strong" and d["backend"] == "gloo"
    one, two = d["points"]
    assert (one["procs"], one["per_process_batch"], two["procs"], two["per_process_batch"]) == (1, 4, 2, 2)
    assert one["global_batch"] == two["global_batch"] == 4
    for pt in (one, two):
        for side in ("measured", "predicted"):
            for key in ("step_s", "tokens_per_s", "tokens_per_s_per_process", "speedup", "efficiency",
                        "comm_total_s", "comm_exposed_s", "busbw_bytes_per_s"):
                assert isinstance(pt[side][key], float), (side, key)
        assert pt["measured"]["step_s"] > 0 and pt["predicted"]["step_s"] > 0
    m1, m2 = one["measured"], two["measured"]
    assert m2["speedup"] == pytest.approx(m1["step_s"] / m2["step_s"])
    assert m2["efficiency"] == pytest.approx(m2["speedup"] / 2)
    assert m2["tokens_per_s"] == pytest.approx(4 * 32 / m2["step_s"])
    assert m2["tokens_per_s_per_process"] == pytest.approx(m2["tokens_per_s"] / 2)
    assert two["error"] == pytest.approx(m2["step_s"] / two["predicted"]["step_s"] - 1)
    assert one["error"] is None  # p = 1 calibrates the prediction
    # communication: measured from DDP's hooks, predicted from the all-reduce sweep's α–β fit
    assert m1["comm_total_s"] == 0.0 and m2["comm_total_s"] > 0
    assert 0 <= m2["comm_exposed_s"] <= m2["comm_total_s"]
    assert m2["busbw_bytes_per_s"] == pytest.approx(m2["gradient_bytes"] / m2["comm_total_s"])  # p=2
    p2 = two["predicted"]
    assert p2["comm_total_s"] > 0 and 0 <= p2["comm_exposed_s"] <= p2["comm_total_s"]
    assert "calibrated" in p2["label"]
    # the compute of the prediction is measured on 2 processes stepping at once without DDP; the
    # same communication on one process's compute is kept beside it, and their ratio is `sharing`
    one_p = two["predicted_from_one"]
    assert one_p["error"] == pytest.approx(m2["step_s"] / one_p["step_s"] - 1)
    assert two["sharing"] == pytest.approx(p2["compute_s"] / one_p["compute_s"])
    assert one_p["compute_s"] == pytest.approx(d["space"][0]["step_s"])  # 1 process at batch 2
    fit = d["collectives"]["2"]["fit"]
    assert fit["alpha_s"] >= 0 and fit["beta_bytes_per_s"] > 0 and fit["residual"] is not None
    assert len(d["collectives"]["2"]["points"]) >= 4
    # DDP's own buckets (seen by the hook) are the ones the model predicts
    assert m2["bucket_bytes"] == [b["bytes"] for b in p2["detail"]["buckets"]]
    assert len(m2["bucket_bytes"]) == 2
    # the performance space: every process count at every per-process batch
    assert {(c["procs"], c["per_process_batch"]) for c in d["space"]} == {(1, 2), (1, 4), (2, 2), (2, 4)}
    assert sorted(Path(p).name for p in d["plots"]) == ["strong-efficiency.png", "strong-space.png",
                                                        "strong-speedup.png"]
    assert all(Path(p).stat().st_size > 1000 for p in d["plots"])


@pytest.mark.slow
def test_both_modes_come_from_one_launch_a_process_count(studies: dict[str, Any]) -> None:
    """`--mode strong,weak`: the weak study (4 sequences a process) reads its p = 1 point from the
    very run the strong study's p = 1 point is (batch 4 on one process), and its own p = 2 point
    from the same launch of 2 processes."""
    assert studies["schema"] == "gptperf.scale-studies/1"
    strong, weak = studies["studies"]
    assert (strong["mode"], weak["mode"]) == ("strong", "weak") and weak["schema"] == "gptperf.scale/1"
    one, two = weak["points"]
    assert (one["per_process_batch"], two["per_process_batch"], two["global_batch"]) == (4, 4, 8)
    s1 = strong["points"][0]["measured"]
    assert {k: v for k, v in s1.items() if one["measured"][k] != v} == {}  # one run, not two
    assert one["measured"]["weak_efficiency"] == 1.0
    m1, m2 = one["measured"], two["measured"]
    assert m2["speedup"] == pytest.approx(2 * m1["step_s"] / m2["step_s"])  # weak: p·T(1)/T(p)
    assert m2["tokens_per_s"] == pytest.approx(8 * 32 / m2["step_s"])
    assert sorted(Path(p).name for p in weak["plots"]) == ["weak-efficiency.png", "weak-space.png",
                                                           "weak-speedup.png"]


@pytest.mark.slow
def test_ddp_trains_like_one_process_on_the_global_batch(strong: dict[str, Any]) -> None:
    import torch

    from gptperf.scaling import worker
    from gptperf.scaling.ddp import DistContext

    one, two = strong["points"]
    ddp_losses = two["measured"]["losses"]  # 2 processes × batch 2, mean over ranks
    single = one["measured"]["losses"]  # 1 process × batch 4, the same batches
    assert len(ddp_losses) == 3
    assert ddp_losses == pytest.approx(single, rel=1e-5, abs=1e-6)
    # and the same single-process training run here, outside torchrun
    config = preset("tiny")
    args = WorkerSpec(config.to_dict(), (4,), 32, "unused", warmup=1, steps=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = worker.run_batch(DistContext(0, 1, 0, None, torch.device("cpu")), config, 4, args)
    finally:
        torch.set_num_threads(threads)
    assert [s["loss"] for s in here["steps"]] == pytest.approx(ddp_losses, rel=1e-5, abs=1e-6)
    assert ddp_losses[-1] < ddp_losses[0] - 0.01  # it trained (the same batch every step)


FAILING = [
    (2, "kill:1:1", "rank 1 was killed by SIGKILL"),  # torchrun must stop rank 0, which waits on it
    (1, "raise:0:1", "rank 0 failed: RuntimeError: injected failure on rank 0 at step 1"),
]
# procs, fault, time limit (s): long enough for torchrun and the rank to start (~7 s alone on 2
# cores, more beside the other launches) and reach the hang, so the limit stops a hung rank
HUNG = (1, "hang:0:0", 15.0)


@dataclass
class Launched:
    """How one launch of the fault tests ended: `result()` returns or raises as `launch` did;
    `seconds` from its start to its end."""

    outcome: Any  # launch's result, or the LaunchError it raised
    seconds: float

    def result(self) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def _timed_launch(out: Path, procs: int, fault: str, timeout_s: float) -> Launched:
    t0 = time.perf_counter()
    try:
        outcome = launch(Launch(procs, small(out, fault), out, timeout_s=timeout_s))
    except LaunchError as err:
        outcome = err
    return Launched(outcome, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def faulty_launches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Launched]:
    """The fault tests' launches (FAILING with a 60 s time limit, and HUNG), by fault, run at the
    same time: each is mostly torchrun, then its ranks, starting Python and torch on one core,
    so on 2 cores the three together take about as long as the longest alone (~10 s, not ~25 s
    one after another). Each has its own folder, time limit and clock."""
    runs = {fault: (procs, 60.0) for procs, fault, _ in FAILING}
    runs[HUNG[1]] = (HUNG[0], HUNG[2])
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {fault: pool.submit(_timed_launch, tmp_path_factory.mktemp("fault"), procs,
                                      fault, limit)
                   for fault, (procs, limit) in runs.items()}
    return {fault: future.result() for fault, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("procs, fault, expected", FAILING)
def test_failing_rank_ends_the_run_with_one_line(faulty_launches: dict[str, Launched], procs: int,
                                                 fault: str, expected: str) -> None:
    run = faulty_launches[fault]  # launched on `procs` processes
    with pytest.raises(LaunchError) as err:
        run.result()
    message = str(err.value)
    assert expected in message and "\n" not in message and "torchrun.log" in message
    assert run.seconds < 50  # torchrun stopped the other rank: no wait for the timeout


def _torchrun_summary(failures: dict[int, tuple[int, float]]) -> str:
    """torchrun's closing summary, by torch's own formatter, of ranks failing with (exit code,
    timestamp): the earliest is its root cause."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    failed = {}
    for rank, (code, at) in failures.items():
        failure = ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=code, error_file="<N/A>")
        failure.timestamp = int(at)
        failed[rank] = failure
    return "Traceback ...\n" + ChildFailedError("gptperf.scaling.worker", failed).format_msg()


@pytest.mark.parametrize("failures, own_errors, expected", [
    # a killed rank's peer fails first, on its lost connection: the killed rank is the cause
    ({0: (1, 100), 1: (-9, 101)}, {0: "DistBackendError: Connection closed by peer"},
     "rank 1 was killed by SIGKILL (exit code -9); torchrun stopped the other ranks"),
    # a rank's own error, then torchrun's SIGTERM to the other: the error is the cause
    ({1: (1, 100), 0: (-15, 101)}, {1: "RuntimeError: injected"}, "rank 1 failed: RuntimeError: injected"),
    ({0: (-9, 100)}, {}, "rank 0 was killed by SIGKILL (exit code -9)"),
    ({0: (1, 100)}, {}, "rank 0 exited with status 1"),
])
def test_the_failure_line_names_the_rank_that_ended_the_launch(
        tmp_path: Path, failures: dict[int, tuple[int, float]], own_errors: dict[int, str], expected: str) -> None:
    from gptperf.scaling.launch import failure_line

    for rank, text in own_errors.items():
        (tmp_path / f"error-rank{rank}.txt").write_text(text)
    line = failure_line(tmp_path, 1, _torchrun_summary(failures))
    assert line.startswith(expected) and "\n" not in line


@pytest.mark.slow
def test_hung_rank_is_stopped_at_the_time_limit(faulty_launches: dict[str, Launched]) -> None:
    run = faulty_launches[HUNG[1]]  # launched with a 15 s time limit
    with pytest.raises(LaunchError, match="did not finish within 15 s"):
        run.result()
    assert run.seconds < 30


def test_the_cli_exits_as_the_signal_that_stopped_a_launch(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    import gptperf.commands.scale as scale_command

    def stopped(args: object) -> int:
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(scale_command, "run", stopped)
    from gptperf.cli import main

    assert main(["scale"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().endswith(f"stopped by signal {int(signal.SIGTERM)}")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks left through Linux's /proc")
def test_a_terminated_launch_takes_its_ranks_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import sys
    import threading

    marker = f"gptperf-test-rank-{os.getpid()}"  # in the command lines of the stand-in ranks
    rank = f"import time; time.sleep(60)  # {marker}"
    # torchrun's stand-in: a rank in a session of its own, as torchrun starts them, then a wait
    runner = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {rank!r}], "
              f"start_new_session=True); time.sleep(60)  # {marker}")
    monkeypatch.setattr(Launch, "command", lambda self, port=None: [sys.executable, "-c", runner])

    def alive() -> list[str]:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker in cmdline.read_bytes().decode(errors="replace"):
                    found.append(cmdline.parent.name)
            except OSError:
                continue
        return found

    # outside the launch a SIGTERM must not end pytest: a handler of the test's own catches it
    def outside(signum: int, frame: object) -> None:
        raise AssertionError("SIGTERM arrived outside the launch")

    previous = signal.signal(signal.SIGTERM, outside)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))  # a scheduler's kill
    try:
        timer.start()
        with pytest.raises(Terminated) as exc:
            launch(Launch(1, [], tmp_path, timeout_s=30))
        assert exc.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is outside  # the launch put the handler back
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGTERM, previous)
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive() == []


@pytest.mark.parametrize("mode, ideal_s", [("strong", [0.1, 0.05, 0.05]), ("weak", [0.1, 0.1, 0.2])])
def test_the_threads_ideal_counts_only_the_threads_that_can_run_at_once(mode: str,
                                                                        ideal_s: list[float]) -> None:
    from gptperf.scaling.results import ThreadPoint

    # one thread takes 0.1 s; on 2 cores, 4 threads run 2 at a time
    points = [ThreadPoint(t, 4, 32, 0.1, 0.1, mode, cores=2) for t in (1, 2, 4)]
    assert [p.predicted_step_s for p in points] == pytest.approx(ideal_s)
    assert [p.to_dict()["predicted"]["speedup"] for p in points] == [1.0, 2.0, 2.0]
    assert points[2].to_dict()["predicted"]["efficiency"] == pytest.approx(0.5)
    # read back from a document of before the cores were kept: as many cores as threads
    old = {k: v for k, v in points[2].to_dict().items() if k != "cores"}
    assert ThreadPoint.from_dict(old, 32, mode).parallel == 4


def test_spec_and_flags_reject_bad_input() -> None:
    from gptperf.cli import main

    config = preset("tiny")
    with pytest.raises(UserError, match="lacks 1"):
        ScaleSpec(config, procs=(2, 4))
    with pytest.raises(UserError, match="does not divide by 5"):
        ScaleSpec(config, procs=(1, 5), batch=12)
    ScaleSpec(config, mode="weak", procs=(1, 5), batch=12)  # weak keeps the batch per process
    with pytest.raises(UserError, match="scaling mode"):
        ScaleSpec(config, mode="medium")
    with pytest.raises(UserError, match="--what-if 2x8"):
        ScaleSpec(config, batch=12, what_if=((2, 8),))
    assert ScaleSpec(config, procs=(1, 2, 4), batch=8).grid_batches == (2, 4, 8)
    assert ScaleSpec(config, mode="weak", procs=(1, 2), batch=8).grid_batches == (4, 8)
    with pytest.raises(UserError, match="--warmup 0: scaling needs at least 1 untimed step"):
        ScaleSpec(config, warmup=0)
    with pytest.raises(UserError, match="names a machine twice"):
        ScaleSpec(config, batch=16, what_if=((1, 8), (1, 8)))
    with pytest.raises(UserError, match="more than the 65536"):
        ScaleSpec(config, mode="weak", what_if=((1_000_000, 8),))
    with pytest.raises(UserError, match="name a GPU entry"):
        ScaleSpec(config, batch=16, what_if=((1, 8),), what_if_hardware="cpu")
    for timeout in (0, -1.0, float("nan"), 9.0):
        with pytest.raises(UserError, match="--timeout"):
            ScaleSpec(config, timeout_s=timeout)
    for bad in (["--procs", "1,x"], ["--what-if", "2by8"]):
        with pytest.raises(SystemExit) as exit_:
            main(["scale", *bad])
        assert exit_.value.code == 2
    assert main(["scale", "--what-if-hardware", "h200"]) == 2  # no --what-if: nothing to predict


@pytest.mark.parametrize("mode", ["medium", "strong,medium", "", ","])
def test_a_bad_mode_list_is_refused_in_one_line_naming_it(mode: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["scale", "--mode", mode])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2
    assert err.endswith(f"argument --mode: expected strong, weak or strong,weak, got {mode!r}")


def test_a_step_the_workers_cannot_run_is_refused_before_any_launch(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gptperf.cli import main
    from gptperf.scaling import study

    monkeypatch.setattr(study, "run_scaling_studies", lambda *a, **k: pytest.fail("launched"))
    assert main(["scale", "--device", "cpu", "--dtype", "fp16", "--batch", "4", "--seq", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gptperf scale: error: dtype 'fp16' autocast needs a GPU; on CPU use bf16 or fp32"


def test_both_modes_are_checked_once_before_the_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The studies differ only in mode: one memory check a process count, of the largest batch."""
    from gptperf.cli import main
    from gptperf.commands import scale
    from gptperf.scaling import study

    checked: list[tuple[int, int]] = []
    monkeypatch.setattr(scale, "guard_memory",
                        lambda config, kind, batch, *a, processes, **k: checked.append((batch, processes)))
    monkeypatch.setattr(study, "run_scaling_studies", lambda *a, **k: pytest.fail("launched"))
    with pytest.raises(pytest.fail.Exception):
        main(["scale", "--device", "cpu", "--mode", "strong,weak", "--procs", "1,2", "--batch", "4",
              "--seq", "16"])
    assert checked == [(4, 1), (4, 2)]


@pytest.mark.parametrize("log, kept", [(None, False), ("", False), ("rank 0 failed\n", True)])
def test_a_failed_launch_keeps_its_folder_only_for_a_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         log: str | None, kept: bool) -> None:
    import tempfile

    import gptperf.scaling.launch as launch_module
    from gptperf.scaling.study import run_scaling_study

    def failing(spec: Launch) -> None:  # as launch ends: naming its log where it holds a line
        path = Path(spec.out_dir) / launch_module.LOG
        if log is not None:  # an empty log: torchrun stopped before it wrote a line
            path.write_text(log)
        where, named = launch_module._log_named(path)
        raise LaunchError(f"rank 0 failed ({where})", named)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(launch_module, "launch", failing)
    with pytest.raises(LaunchError):
        run_scaling_study(ScaleSpec(preset("tiny"), procs=(1,), batch=2, seq=8, device="cpu"))
    left = list(tmp_path.glob("gptperf-scale-*"))
    assert len(left) == kept


@pytest.mark.slow
def test_train_on_two_nodes_through_c10d_rendezvous(tmp_path: Path) -> None:
    """Two torchrun launches on localhost as two "nodes" (--nnodes 2 --node-rank 0/1
    --rdzv-backend c10d --rdzv-endpoint localhost:PORT), each running `gptperf train` on one
    process: DDP over gloo, rank 0 alone prints and writes the checkpoint; together they train
    like one process on the global batch, and the checkpoint resumes on a world size of one."""
    import os
    import subprocess

    import torch

    from gptperf.checkpoint import load_checkpoint
    from gptperf.model import GPT
    from gptperf.train import TrainConfig, train

    out = tmp_path / "out"
    # on the CPU: two "nodes" on one host would share its one GPU, which NCCL refuses
    args = ["train", "--device", "cpu", "--preset", "tiny", "--n-layer", "1", "--seq", "16", "--eval-interval", "3",
            "--eval-iters", "1", "--warmup-iters", "0", "--seed", "3", "--batch", "2", "--max-iters", "3",
            "--out", str(out), "--json"]
    endpoint = f"localhost:{free_port()}"
    cmds = [Launch(1, args, out, module="gptperf", nnodes=2, node_rank=r, rdzv_endpoint=endpoint,
                   rdzv_id="two-nodes").command() for r in (0, 1)]
    assert all("--rdzv-backend=c10d" in c and f"--node-rank={r}" in c for r, c in enumerate(cmds))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) for c in cmds]
    try:
        outputs = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    docs = [json.loads(line) for o, _ in outputs for line in o.splitlines() if line.startswith("{")]
    assert len(docs) == 1  # rank 0 alone reports ...
    assert docs[0]["tokens_per_step"] == 2 * 2 * 16 and docs[0]["checkpoint"]
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt"]  # ... and checkpoints

    def one_process(**kw: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return train(TrainConfig.for_preset("tiny", model={"n_layer": 1}, seq=16, eval_interval=3,
                                                eval_iters=1, warmup_iters=0, seed=3, device="cpu", **kw))
        finally:
            torch.set_num_threads(threads)

    # the same 3 steps on one process with the global batch of 4 give the same model (compared
    # by its loss: the key bias has no true gradient, so Adam turns rounding noise into steps)
    single = one_process(batch=4, max_iters=3, out_dir=None)
    saved = GPT(single.model_config)
    saved.load_state_dict(load_checkpoint(out / "ckpt.pt")["model"])
    tokens = torch.randint(0, 256, (8, 17), generator=torch.Generator().manual_seed(0))

    def loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(model(tokens[:, :-1], tokens[:, 1:])[1])

    assert loss(saved) == pytest.approx(loss(single.model), rel=1e-5)
    assert loss(saved) != pytest.approx(loss(one_process(batch=4, max_iters=1, out_dir=None).model), rel=1e-4)
    resumed = one_process(batch=4, max_iters=5, out_dir=str(out), resume=True)
    assert resumed.start_step == 3 and resumed.steps == 5 and len(resumed.losses) == 5


def _measured(procs: int, batch: int, step_s: float) -> Any:
    from gptperf.scaling.results import Measured

    return Measured(procs, 1, batch, step_s, 0.3 * step_s, 0.6 * step_s, 0.1 * step_s, 0.0, 0.0, 0.0,
                    (), (step_s,), (4.0,))


def test_strong_and_weak_studies_share_one_launch_a_process_count() -> None:
    """The report's two studies (strong at global batch 4, weak at per-process batch 2) need the
    same runs at p = 2: one launch of each process count runs both studies' batches, and each
    study reads its own points and performance space from what those launches measured."""
    from gptperf.measure.collectives import CollectiveSweep
    from gptperf.perfmodel.comm import AlphaBeta
    from gptperf.scaling import study as study_mod

    config = preset("tiny")
    strong = ScaleSpec(config, mode="strong", procs=(1, 2), batch=4, seq=8, device="cpu")
    weak = ScaleSpec(config, mode="weak", procs=(1, 2), batch=2, seq=8, device="cpu")
    runs = study_mod._launch_runs([strong, weak])
    assert list(runs) == [(1, 1), (2, 1)]  # two launches, not four
    assert runs[(1, 1)] == (sorted({*strong.grid_batches, *weak.grid_batches}), [])
    assert runs[(2, 1)] == (sorted({*strong.grid_batches, *weak.grid_batches}), [2])
    assert study_mod._launch_runs([strong]) == {(1, 1): ([2, 4], []), (2, 1): ([2, 4], [2])}

    launched = study_mod._Launched()
    steps = {(1, 1): 0.01, (1, 2): 0.02, (1, 4): 0.04, (2, 1): 0.012, (2, 2): 0.025, (2, 4): 0.05}
    launched.measured = {(p, 1, b): _measured(p, b, t) for (p, b), t in steps.items()}
    launched.solo_runs = {(2, 2): _measured(2, 2, 0.022)}
    launched.collectives = {2: CollectiveSweep("gloo", 2, "cpu", "fp32", [], AlphaBeta(1e-4, 1e9, 2, "fit"), 1)}
    s, w = (study_mod._study(spec, launched, "cpu", "cpu") for spec in (strong, weak))
    assert [p.per_process_batch for p in s.points] == [4, 2] and [p.per_process_batch for p in w.points] == [2, 2]
    assert s.points[1].speedup == pytest.approx(0.04 / 0.025)  # T(1, batch 4) / T(2, batch 2)
    assert w.points[1].efficiency == pytest.approx(0.02 / 0.025)  # T(1, batch 2) / T(2, batch 2)
    assert {(c.procs, c.per_process_batch) for c in s.space} == {(p, b) for p in (1, 2) for b in strong.grid_batches}
    assert {(c.procs, c.per_process_batch) for c in w.space} == {(p, b) for p in (1, 2) for b in weak.grid_batches}

    with pytest.raises(ValueError, match="share the model"):
        study_mod.run_scaling_studies([strong, ScaleSpec(config, mode="weak", procs=(1, 2), batch=2, seq=16,
                                                         device="cpu")])


NCCL_REFUSAL = """NCCL error in: /pytorch/torch/csrc/distributed/c10d/NCCLUtils.cpp:93, invalid usage (run with NCCL_DEBUG=WARN for details), NCCL version 2.28.9
ncclInvalidUsage: This usually reflects invalid usage of NCCL library.
Last error:
Duplicate GPU detected : rank 0 and rank 1 both on CUDA device 60
"""


@pytest.mark.parametrize("raised, says", [
    (NCCL_REFUSAL, "rank 1: the gloo process group could not start: Duplicate GPU detected : rank 0 and "
                   "rank 1 both on CUDA device 60"),
    ("\nConnection reset by peer\nmore", "rank 1: the gloo process group could not start: Connection reset by peer"),
])
def test_a_process_group_that_cannot_start_is_one_line_naming_why(monkeypatch: pytest.MonkeyPatch, raised: str,
                                                                  says: str) -> None:
    """The backend's refusal (NCCL's below a traceback of its own: two ranks of one host on one
    GPU) ends the rank with one line: its rank, the backend and the backend's own reason."""
    import torch.distributed as dist

    from gptperf.errors import UserError
    from gptperf.scaling import ddp

    def refuse(*args: Any, **kw: Any) -> None:
        raise dist.DistBackendError(raised)

    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
                       "MASTER_PORT": "29500", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    assert ddp.distributed_env()
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ddp.dist, "init_process_group", refuse)
    with pytest.raises(UserError) as err:
        ddp.init_distributed("cpu")
    assert str(err.value) == says
