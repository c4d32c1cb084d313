"""Bad input, one test per class the hardening issue found: each feeds the input through the CLI
(in this process) and expects a one-line error naming the value with exit status 2 — or, where
the input is fine, that nothing unwanted happens. Every case is recorded for docs/RELIABILITY.md.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hardening
import numpy as np
import pytest
import torch
from hardening import MODEL, TRAIN, Validated, run_cli, shown

# picture_files' module is imported here, before a test stands in for plot_roofline, which it
# binds at import
from gptperf.cli import build_parser
from gptperf.commands.common import config_from_args
from gptperf.plotting.inference import picture_files

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = "output path that cannot be written"
MEMORY = "batch too large for memory"
OOM = "out-of-memory error that still happens"
TOKENS = "token id at or above --vocab-size"
NO_CKPT = "train --no-checkpoint beside an existing checkpoint"
CKPT = "malicious or garbage checkpoint"
FLAGS = "contradictory flags"
TEMPS = "temporary files left by killed writes"
NOISE = "stderr noise (Kineto USDT lines, dynamo profiler warning)"
JSON = "errors under --json"
DEVICE = "malformed --device"
WRONG_KIND = hardening.WRONG_KIND
assert all(hardening.CLASSES[c] == hardening.BAD_INPUT for c in (
    PATHS, MEMORY, OOM, TOKENS, NO_CKPT, CKPT, FLAGS, TEMPS, NOISE, JSON, DEVICE, WRONG_KIND))

GIB = 2**30


def _fail(*_args: Any, **_kwargs: Any) -> None:
    raise AssertionError("long work started before the bad input was refused")


def _validated(*_args: Any, **_kwargs: Any) -> None:
    raise Validated


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry point of long work fails the test: a refusal must come before it."""
    import gptperf.measure.ceilings
    import gptperf.plotting.roofline
    import gptperf.report
    import gptperf.scaling.study
    import gptperf.steps.build
    import gptperf.steps.train

    for module, name in ((gptperf.steps.build, "build_step"), (gptperf.steps.train, "TrainStep"),
                         (gptperf.measure.ceilings, "measure_ceilings"),
                         (gptperf.report, "build_report"),
                         (gptperf.scaling.study, "run_scaling_study"),
                         (gptperf.scaling.study, "run_scaling_studies"),
                         (gptperf.plotting.roofline, "plot_prediction"),
                         (gptperf.plotting.roofline, "plot_roofline")):
        monkeypatch.setattr(module, name, _fail)


def _refused(capsys: Any, argv: list[str], tmp: Path, cls: str, *words: str) -> str:
    """Run `argv`; it must end in one line naming each of `words`, exit 2. Recorded."""
    o = run_cli(capsys, argv)
    hardening.record(cls, shown(argv, tmp), o.kind)
    assert o.code == 2 and o.one_line_error, (argv, o)
    for word in words:
        assert word in o.err, (argv, word, o.err)
    if "--json" in argv:
        assert o.json_error()["error"] in o.err
    return o.err


def _accepted(capsys: Any, argv: list[str], tmp: Path, cls: str) -> None:
    o = run_cli(capsys, argv)
    hardening.record(cls, shown(argv, tmp), o.kind)
    assert o.code in (None, 0), (argv, o)


# --- 1. output paths ----------------------------------------------------------------------------


def test_output_paths_are_checked_before_any_work(tmp_path: Path, capsys: Any, no_work: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    adir = tmp_path / "adir.png"
    adir.mkdir()
    ro = tmp_path / "readonly"
    ro.mkdir()
    real_access = os.access
    # Read-only without chmod (root may write anywhere): the folder says it is not writable.
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if (
        Path(p) == ro and mode & os.W_OK) else real_access(p, mode, *a, **k))
    # A folder whose bits say writable that takes no file (root on /proc, a full disk)
    nofiles = tmp_path / "nofiles"
    nofiles.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*a: Any, dir: Any = None, **k: Any) -> Any:
        if dir is not None and Path(dir) == nofiles:
            raise FileNotFoundError(2, "No such file or directory")
        return real_mkstemp(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))
    under = f"{afile}/x"
    # folders where a command's pictures go: the pictures would fail only after the work
    pictures = tmp_path / "pictures"
    (pictures / "speedup.png").mkdir(parents=True)
    model_name = config_from_args(build_parser("inference").parse_args(["inference", *MODEL])).name
    (pictures / picture_files(model_name)[-1]).mkdir()
    # a user's own files where a picture would go: never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("chart.png", "chart.svg", "efficiency.png", "validation.svg"):
        (mine / name).write_bytes(b"a user's picture")
    cases = [
        (["model", "--plot", f"{under}.png"], "is a file"),
        (["model", "--plot", str(adir)], "is a folder"),
        (["model", "--plot", str(tmp_path / "x.txt")], ".png"),
        (["model", "--plot", f"{ro}/x.png", "--json"], "not writable"),
        (["roofline", "saxpy", "--n", "10", "--plot", f"{under}.svg"], "is a file"),
        (["ceilings", "--device", "cpu", "--plot", f"{ro}/c.png"], "not writable"),
        (["inference", *MODEL, "--device", "cpu", "--plot-dir", under], "is a file"),
        (["profile", *MODEL, "--device", "cpu", "--out", str(afile)], "is a file"),
        (["profile", *MODEL, "--device", "cpu", "--out", f"{ro}/p"], "not writable"),
        (["report", "--device", "cpu", "--out", under], "is a file"),
        (["train", *TRAIN, "--out", under], "is a file"),
        (["train", *TRAIN, "--out", f"{ro}/out"], "not writable"),
        (["report", "--device", "cpu", "--out", f"{nofiles}/r"], "no file can be created"),
        (["model", "--plot", f"{nofiles}/x.png"], "no file can be created"),
        (["scale", *MODEL, "--device", "cpu", "--plot-dir", str(afile)], "is a file"),
        (["scale", *MODEL, "--device", "cpu", "--plot-dir", str(pictures)], "speedup.png' is a folder"),
        (["inference", *MODEL, "--device", "cpu", "--plot-dir", str(pictures)],
         f"inference-{model_name}-split.svg' is a folder"),
        (["model", "--plot", str(mine / "chart.png")], "holds no gptperf picture"),
        (["roofline", "saxpy", "--n", "10", "--plot", str(mine / "chart.svg")], "not replaced"),
        (["scale", *MODEL, "--device", "cpu", "--plot-dir", str(mine)], "efficiency.png' exists"),
        (["validate", "--device", "cpu", "--plot-dir", str(mine)], "validation.svg' exists"),
    ]
    for argv, why in cases:
        flag_value = argv[-2] if argv[-1] == "--json" else argv[-1]
        _refused(capsys, argv, tmp_path, PATHS, repr(flag_value).strip("'"), why)
    assert afile.read_text() == "a file, not a folder" and not any(ro.iterdir())
    assert all(f.read_bytes() == b"a user's picture" for f in mine.iterdir())
    assert not any(nofiles.iterdir()) and not list(tmp_path.glob("**/.gptperf-probe.*"))
    hardening.finish(PATHS)


def test_a_file_the_system_refuses_mid_run_is_one_line(tmp_path: Path, capsys: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.commands.roofline

    def full_disk(args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "roofline.png"))

    monkeypatch.setattr(gptperf.commands.roofline, "run", full_disk)
    o = run_cli(capsys, ["roofline", "saxpy", "--n", "10"])
    hardening.record(PATHS, "gptperf roofline saxpy --n 10, the disk full as it writes", o.kind)
    assert o.code == 2 and o.one_line_error, o
    assert "No space left on device" in o.err and "roofline.png" in o.err

    def refused_connection(args: Any) -> None:  # not a file the system refused: a bug, shown whole
        raise OSError(errno.ECONNREFUSED, "Connection refused")

    monkeypatch.setattr(gptperf.commands.roofline, "run", refused_connection)
    with pytest.raises(OSError, match="Connection refused"):
        run_cli(capsys, ["roofline", "saxpy", "--n", "10"])
    hardening.finish(PATHS)


# --- 2. memory ----------------------------------------------------------------------------------


@pytest.fixture
def four_gib(monkeypatch: pytest.MonkeyPatch) -> float:
    """The device has 4 GiB free, whatever this machine has: the verdicts are the same everywhere."""
    import gptperf.memguard

    monkeypatch.setattr(gptperf.memguard, "available_memory", lambda device: (4.0 * GIB, "(test)"))
    return 4.0 * GIB


def test_memory_guard_refuses_with_the_largest_batch_that_fits(
        tmp_path: Path, capsys: Any, four_gib: float, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.model.gpt
    import gptperf.steps.build
    from gptperf.model import preset
    from gptperf.perfmodel.memory import max_batch, memory_breakdown
    from gptperf.perfmodel.workload import Workload

    gpt2 = ["--preset", "gpt2", "--device", "cpu"]
    cases = [
        ("bench", ["bench", "train", *gpt2, "--batch", "64", "--seq", "1024"], "train", 64, 1024),
        ("profile", ["profile", *gpt2, "--batch", "64", "--seq", "1024"], "train", 64, 1024),
        ("train", ["train", *gpt2, "--batch", "64", "--seq", "1024", "--no-checkpoint"], "train",
         64, 1024),
        ("bench", ["bench", "decode", *gpt2, "--batch", "4096", "--seq", "1024"], "decode", 4096,
         1024),
    ]
    monkeypatch.setattr(gptperf.steps.build, "build_step", _validated)
    monkeypatch.setattr(gptperf.model.gpt, "GPT", _validated)  # train builds it before its step
    for _, argv, kind, batch, seq in cases:
        fits = max_batch(preset("gpt2"), Workload(kind, batch, seq, "fp32"), four_gib)
        assert 0 < fits < batch
        err = _refused(capsys, argv, tmp_path, MEMORY, f"batch {batch}", "4.00 GiB",
                       f"largest batch that fits is {fits} (--batch {fits})")
        assert "predicted peak" in err
        # the advice is right: that batch passes the guard, one more would not
        assert memory_breakdown(preset("gpt2"), Workload(kind, fits + 1, seq, "fp32")).total > four_gib
        _accepted(capsys, [*argv[:argv.index("--batch")], "--batch", str(fits),
                           *argv[argv.index("--batch") + 2:]], tmp_path, MEMORY)
    # whole sweeps: the inference study's must-run points, every scaling launch (2 processes
    # share a CPU's memory)
    _refused(capsys, ["inference", "--preset", "gpt2-xl", "--device", "cpu", "--batches", "1"],
             tmp_path, MEMORY, "gpt2-xl", "not even batch 1 fits")
    alone = max_batch(preset("gpt2"), Workload("train", 1, 256, "fp32"), four_gib)
    batch = alone - alone % 2  # fits one process, not two side by side
    assert 2 * memory_breakdown(preset("gpt2"), Workload("train", batch, 256, "fp32")).total > four_gib
    _refused(capsys, ["scale", "--preset", "gpt2", "--device", "cpu", "--batch", str(batch),
                      "--seq", "256", "--procs", "1,2"], tmp_path, MEMORY, f"batch {batch}",
             "× 2 processes")
    hardening.finish(MEMORY)


def test_out_of_memory_that_still_happens_gets_the_same_advice(
        tmp_path: Path, capsys: Any, four_gib: float, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.measure.bench
    import gptperf.steps.train

    def cuda_oom(*_a: Any, **_k: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)")

    def cpu_oom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 21474836480 bytes.")

    monkeypatch.setattr(gptperf.measure.bench, "run_bench", cuda_oom)
    err = _refused(capsys, ["bench", "forward", *MODEL, "--device", "cpu", "--batch", "3"],
                   tmp_path, OOM, "out of GPU memory", "Tried to allocate 20.00 GiB", "batch 3",
                   "largest batch that fits is")
    assert "Traceback" not in err
    monkeypatch.setattr(gptperf.steps.train.TrainStep, "run", cpu_oom)
    _refused(capsys, ["train", *TRAIN, "--no-checkpoint", "--json"], tmp_path, OOM,
             "can't allocate memory", "largest batch that fits is")
    hardening.finish(OOM)


# --- 3. token ids -------------------------------------------------------------------------------


def test_token_ids_at_or_above_the_vocabulary_are_refused(tmp_path: Path, capsys: Any,
                                                           no_work: None) -> None:
    from gptperf.data.corpus import load_corpus
    from gptperf.errors import UserError

    data = tmp_path / "tokens"
    data.mkdir()
    (np.arange(5000) % 300).astype(np.uint16).tofile(data / "train.bin")
    (np.arange(500) % 200).astype(np.uint16).tofile(data / "val.bin")
    _refused(capsys, ["train", *TRAIN, "--data", str(data), "--vocab-size", "256", "--no-checkpoint"],
             tmp_path, TOKENS, "token id 299", "--vocab-size 256", "train.bin", "--vocab-size 300")
    (np.arange(500) % 260).astype(np.uint16).tofile(data / "train.bin")
    (np.full(500, 257)).astype(np.uint16).tofile(data / "val.bin")
    _refused(capsys, ["train", *TRAIN, "--data", str(data), "--vocab-size", "257", "--no-checkpoint"],
             tmp_path, TOKENS, "token id 259", "train.bin")
    (np.arange(500) % 200).astype(np.uint16).tofile(data / "train.bin")
    with pytest.raises(UserError, match="val.bin' holds token id 257"):
        load_corpus(data, vocab_size=257)
    hardening.record(TOKENS, "load_corpus(<tmp>/tokens, vocab_size=257), id 257 in val.bin",
                     "one-line error, exit 2")
    assert load_corpus(data, vocab_size=258).vocab_size == 258  # the largest id + 1 is enough
    hardening.finish(TOKENS)


# --- 4. --no-checkpoint -------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_no_checkpoint_writes_nothing(tmp_path: Path, capsys: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.cli import build_parser
    from gptperf.commands.train import train_config_from_args

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"an earlier run's checkpoint")
    before = _tree(tmp_path)
    argv = ["train", *TRAIN, "--no-checkpoint"]
    cfg = train_config_from_args(build_parser("train").parse_args(argv))
    assert cfg.out_dir is None and not cfg.resume  # the option reaches the training config
    o = run_cli(capsys, [*argv, "--json"])
    hardening.record(NO_CKPT, shown(argv, tmp_path) + " (./out/ckpt.pt exists)",
                     "nothing written" if o.code == 0 and _tree(tmp_path) == before else o.kind)
    assert o.code == 0, o.err
    assert _tree(tmp_path) == before
    import json

    assert json.loads(o.out)["checkpoint"] is None
    hardening.finish(NO_CKPT)


# --- 5. checkpoints -----------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


def test_bad_checkpoints_never_advise_unsafe_loading(tmp_path: Path, capsys: Any,
                                                      no_work: None) -> None:
    from gptperf.checkpoint import save_checkpoint
    from gptperf.model import GPT, GPTConfig

    marker = tmp_path / "code-ran"
    config = GPTConfig(block_size=16, vocab_size=256, n_layer=1, n_head=2, n_embd=16)
    good = save_checkpoint(tmp_path / "good", model_config=config, model=GPT(config).state_dict())
    files: dict[str, Path] = {}
    files["evil"] = tmp_path / "evil.pt"
    torch.save({"format": "gptperf-checkpoint", "version": 1, "model": _Evil(marker)}, files["evil"])
    files["pickle"] = tmp_path / "pickle.pt"
    files["pickle"].write_bytes(pickle.dumps({"model": _Evil(marker)}, protocol=4))
    files["junk"] = tmp_path / "junk.pt"
    files["junk"].write_bytes(os.urandom(2048))
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(good.read_bytes()[:1000])
    files["empty"] = tmp_path / "empty.pt"
    files["empty"].write_bytes(b"")
    for name, path in files.items():
        for argv in (["generate", "--checkpoint", str(path), "--device", "cpu", "--tokens", "2"],
                     ["score", "ab", "--checkpoint", str(path), "--device", "cpu"]):
            err = _refused(capsys, argv, tmp_path, CKPT, str(path), "cannot be read")
            assert "weights_only" not in err and "trust" not in err, (name, err)
    resume = tmp_path / "run"
    resume.mkdir()
    (resume / "ckpt.pt").write_bytes(files["evil"].read_bytes())
    err = _refused(capsys, ["train", *TRAIN, "--out", str(resume), "--resume"], tmp_path, CKPT,
                   "ckpt.pt", f"a Python object ({open.__module__}.open)", "never unpickles")  # _io.open in 3.12
    assert "weights_only" not in err
    assert not marker.exists()
    state = GPT(config).state_dict()
    state["transformer.wte.weight"][0, 0] = float("nan")  # a diverged run's weights
    nan = save_checkpoint(tmp_path / "nan", model_config=config, model=state)
    for argv in (["generate", "--checkpoint", str(nan), "--device", "cpu", "--tokens", "2"],
                 ["score", "ab", "--checkpoint", str(nan), "--device", "cpu"]):
        _refused(capsys, argv, tmp_path, CKPT, "transformer.wte.weight holds 1 NaN or infinite value")
    hardening.finish(CKPT)


def test_a_checkpoint_that_cannot_be_resumed_is_refused_before_training(tmp_path: Path,
                                                                        capsys: Any) -> None:
    """Resuming restores more than the weights' shapes: NaN weights, a negative step, a missing
    optimizer or generator state, or an optimizer state of another shape are each one line and
    exit 2 before any step (no traceback, no 'try a lower --lr'), the checkpoint left as it was."""
    run = tmp_path / "run"
    assert run_cli(capsys, ["train", *TRAIN, "--out", str(run)]).code == 0
    good = torch.load(run / "ckpt.pt", weights_only=True)

    def broken(change: Any) -> dict[str, Any]:
        doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
        change(doc)
        return doc

    def nan(doc: dict[str, Any]) -> None:
        doc["model"]["transformer.wte.weight"] = torch.full_like(good["model"]["transformer.wte.weight"],
                                                                 float("nan"))

    def other_shape(doc: dict[str, Any]) -> None:  # one parameter fewer in the first group
        groups = [dict(g) for g in good["optimizer"]["param_groups"]]
        groups[0]["params"] = groups[0]["params"][1:]
        doc["optimizer"] = {**good["optimizer"], "param_groups": groups}

    def moments_of_another_shape(doc: dict[str, Any]) -> None:  # as many, but transposed
        state = {k: {n: (v.t() if getattr(v, "dim", lambda: 0)() == 2 else v) for n, v in s.items()}
                 for k, s in good["optimizer"]["state"].items()}
        doc["optimizer"] = {**good["optimizer"], "state": state}

    cases = {"nan-weights": (nan, "transformer.wte.weight holds"),
             "moments-of-another-shape": (moments_of_another_shape, "exp_avg of shape"),
             "negative-step": (lambda d: d.update(step=-5), "has step -5"),
             "no-optimizer": (lambda d: d.update(optimizer="garbage"), "has no optimizer state"),
             "no-torch-rng": (lambda d: d.update(torch_rng=[1, 2]), "has no generator state 'torch_rng'"),
             "optimizer-of-another-shape": (other_shape, "cannot be resumed: its optimizer or "
                                                         "generator state does not fit")}
    for name, (change, words) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        torch.save(broken(change), folder / "ckpt.pt")
        before = (folder / "ckpt.pt").read_bytes()
        _refused(capsys, ["train", *TRAIN, "--out", str(folder), "--resume"], tmp_path, CKPT,
                 "ckpt.pt", words)
        assert (folder / "ckpt.pt").read_bytes() == before and os.listdir(folder) == ["ckpt.pt"]
    hardening.finish(CKPT)


# --- 6. contradictory flags ---------------------------------------------------------------------


def test_contradictory_flags_are_refused(tmp_path: Path, capsys: Any, no_work: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "text.txt"
    text.write_text("hello world " * 200)
    trace = tmp_path / "trace.json"
    trace.write_text("{}")
    cases = [
        (["train", *TRAIN, "--lr", "0.01", "--min-lr", "0.1"], ["min_lr 0.1", "lr 0.01"]),
        (["train", *TRAIN, "--vocab-size", "300"], ["--vocab-size 300", "embedded"]),
        (["train", *TRAIN, "--data", str(text), "--vocab-size", "300"], ["--vocab-size 300", str(text)]),
        (["train", *TRAIN, "--no-checkpoint", "--out", "elsewhere"], ["'elsewhere'", "--no-checkpoint"]),
        (["train", *TRAIN, "--no-checkpoint", "--resume"], ["--resume"]),
        (["profile", *MODEL, "--trace", str(trace), "--compile"], ["--trace", "--compile"]),
        (["profile", "--trace", str(trace), "--active", "7", "--no-overhead"],
         ["--trace", "--active --no-overhead would not apply"]),
        (["profile", "--trace", ""], ["--trace ''", "not a usable path"]),
        (["scale", *MODEL, "--intra", "pcie4"], ["--intra 'pcie4' without --what-if"]),
        (["scale", *MODEL, "--timeout", "1"], ["--timeout 1.0", ">= 10"]),
        (["model", *MODEL, "--device", "h900"], ["--device 'h900'", "--calibrated", "--hardware"]),
        (["bench", "train", *MODEL, "--fast"], ["--fast", "train", "--compile"]),
    ]
    for command, head in (("train", TRAIN), ("bench", ["train", *MODEL]), ("profile", MODEL),
                          ("scale", MODEL), ("report", []), ("inference", MODEL),
                          ("generate", [])):
        flag = "fast" if command in ("inference", "generate") else "compile"
        cases.append(([command, *head, f"--{flag}", f"--no-{flag}"], [f"--no-{flag}", f"--{flag}"]))
    for argv, words in cases:
        _refused(capsys, argv, tmp_path, FLAGS, *words)
    # --lr alone is no contradiction: the preset's min_lr follows it (lr/10)
    import gptperf.steps.train

    monkeypatch.setattr(gptperf.steps.train, "TrainStep", _validated)
    _accepted(capsys, ["train", *TRAIN, "--lr", "1e-5", "--no-checkpoint"], tmp_path, FLAGS)
    hardening.finish(FLAGS)


def test_input_of_the_wrong_kind_or_place_is_named_as_such(
        tmp_path: Path, capsys: Any, no_work: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.measure.calibrate

    monkeypatch.setattr(gptperf.measure.calibrate, "calibrate", _fail)
    trace = tmp_path / "trace.json"
    trace.write_text('{"traceEvents": [{"ph": "X", "name": "ProfilerStep#1", "ts": "abc", "dur": 5}]}')
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    cases = [
        (["model", *MODEL, "--hardware", str(tmp_path)], [f"hardware file {str(tmp_path)!r} is a folder"]),
        (["profile", "--trace", str(tmp_path), "--out", str(tmp_path / "p")],
         [f"trace file {str(tmp_path)!r} is a folder; give the trace.json in it"]),
        (["profile", "--trace", str(trace), "--out", str(tmp_path / "p")], ["has ts 'abc' and dur 5"]),
        (["profile", *MODEL, "--device", "cpu", "--out", str(tmp_path / 'p"q')],
         ["torch.profiler writes into the trace unescaped"]),
        (["train", *TRAIN, "--data", "", "--no-checkpoint"], ["data '' is empty"]),
        (["scale", *MODEL, "--device", "cpu", "--dtype", "fp16", "--batch", "4", "--seq", "16"],
         ["dtype 'fp16' autocast needs a GPU"]),
    ]
    for argv, words in cases:
        _refused(capsys, argv, tmp_path, WRONG_KIND, *words)
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(afile))
    _refused(capsys, ["calibrate", "--device", "cpu", "--quick", "--force"], tmp_path, WRONG_KIND,
             "the cache folder (GPTPERF_CACHE_DIR", "is a file, not a folder")
    hardening.finish(WRONG_KIND)  # a report too large to fit: tests/test_report.py


# --- 7. temporary files -------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftover_temporaries_are_removed_by_the_next_write(tmp_path: Path) -> None:
    from gptperf.atomic import _host, atomic_dir, write_text
    from gptperf.checkpoint import save_checkpoint
    from gptperf.model import GPT, GPTConfig
    from gptperf.writable import check_output_dir

    host, dead, live = _host(), _dead_pid(), os.getppid()
    hour_ago = time.time() - 2 * 3600
    out = tmp_path / "out"
    out.mkdir()

    def temp(name: str, *, old: bool = False, folder: bool = False) -> Path:
        p = out / name
        p.mkdir() if folder else p.write_bytes(b"half a write")
        if old:
            os.utime(p, (hour_ago, hour_ago))
        return p

    stale = [temp(f".ckpt.pt.{host}.{dead}.a1b2c3d4.tmp"),  # its writer was killed
             temp(".ckpt.pt.k3j_4h5g.tmp", old=True),  # an unmarked one, long ago
             temp(f".ckpt.pt.otherhost.{live}.zz99yy88.tmp", old=True),  # another host, long ago
             temp(f".report.{host}.{dead}.q1w2e3r4.tmp", folder=True),
             temp(f".gptperf-probe.{host}.{dead}.t5y6u7i8.tmp")]  # a killed check's probe
    kept = [temp(f".ckpt.pt.{host}.{live}.e5f6g7h8.tmp"),  # a live writer's
            temp(".ckpt.pt.m1n2b3v4.tmp"),  # unmarked but fresh: maybe live
            temp(f".ckpt.pt.otherhost.{dead}.p0o9i8u7.tmp"),  # another host, fresh
            temp("notes.txt")]
    config = GPTConfig(block_size=16, vocab_size=256, n_layer=1, n_head=2, n_embd=16)
    check_output_dir(out, "--out")  # tests the folder with a probe of its own, and cleans old ones
    save_checkpoint(out, model_config=config, model=GPT(config).state_dict())
    with atomic_dir(out / "report") as folder:
        write_text(folder / "index.html", "<p>new</p>")
    for p in stale:
        hardening.record(TEMPS, p.name.replace(host, "<host>").replace(str(dead), "<dead pid>")
                         .replace(str(live), "<live pid>"), "removed" if not p.exists() else "FAILED: kept")
        assert not p.exists(), p
    for p in kept:
        hardening.record(TEMPS, p.name.replace(host, "<host>").replace(str(dead), "<dead pid>")
                         .replace(str(live), "<live pid>"), "kept" if p.exists() else "FAILED: removed")
        assert p.exists(), p
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["ckpt.pt", "report"] + [p.name for p in kept]), names
    # a new write's own temporary names say whose it is
    from gptperf.atomic import atomic_path

    with atomic_path(out / "ckpt.pt") as tmp:
        assert tmp.name.startswith(f".ckpt.pt.{host}.{os.getpid()}.") and tmp.name.endswith(".tmp")
    hardening.finish(TEMPS)


def test_a_refusal_after_the_data_is_read_is_still_one_line(tmp_path: Path, capsys: Any) -> None:
    """The data's notes (no val.bin, the vocabulary inferred) wait until every check has passed:
    resuming a 256-token checkpoint on 1000-token data is the error line alone."""
    import numpy as np

    run = tmp_path / "run"
    assert run_cli(capsys, ["train", *TRAIN, "--out", str(run)]).code == 0
    data = tmp_path / "tokens"
    data.mkdir()
    np.arange(1000, dtype=np.uint16).tofile(data / "train.bin")
    _refused(capsys, ["train", *TRAIN, "--out", str(run), "--resume", "--data", str(data)], tmp_path,
             FLAGS, "vocabulary 1000", "vocab_size 256")
    hardening.finish(FLAGS)


def test_a_command_killed_while_it_writes_leaves_no_temporary_file(tmp_path: Path, capsys: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (a scheduler, `timeout`) unwinds a command as Ctrl-C does: the checkpoint being
    written is removed, the one before it kept, the exit status 128 + 15 with one line."""
    import signal

    import gptperf.checkpoint

    out = tmp_path / "run"
    assert run_cli(capsys, ["train", *TRAIN, "--out", str(out)]).code == 0
    before = (out / "ckpt.pt").read_bytes()
    real_save = torch.save

    def killed_midway(obj: Any, f: Any) -> None:
        real_save({"half": torch.zeros(8)}, f)  # some bytes in the temporary file
        os.kill(os.getpid(), signal.SIGTERM)

    class Outside(Exception):
        pass

    def outside(signum: int, frame: Any) -> None:  # the command did not take it: fail, not die
        raise Outside(signum)

    monkeypatch.setattr(gptperf.checkpoint.torch, "save", killed_midway)
    previous = signal.signal(signal.SIGTERM, outside)
    try:
        o = run_cli(capsys, ["train", *TRAIN, "--out", str(out), "--force"])
        assert signal.getsignal(signal.SIGTERM) is outside  # the command put the handler back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert o.code == 128 + signal.SIGTERM and o.err.strip().splitlines()[-1].endswith(
        f"stopped by signal {int(signal.SIGTERM)}"), o
    assert os.listdir(out) == ["ckpt.pt"] and (out / "ckpt.pt").read_bytes() == before
    hardening.record(TEMPS, "train killed by SIGTERM while writing ckpt.pt", "removed")
    hardening.finish(TEMPS)


# --- 8. stderr noise ----------------------------------------------------------------------------


def test_kineto_and_dynamo_noise_is_dropped_and_nothing_else(tmp_path: Path, capfd: Any) -> None:
    from gptperf.quiet import kineto_lines_dropped

    with kineto_lines_dropped():
        os.write(2, b"USDT:2026-12-01 12:24:09 7400:7400 SyncActivityProfilerHandler.cpp:52] "
                    b"profiler_start\nERROR: something kineto really wants said\n")
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "something kineto really wants said" in err

    argv = ["profile", *MODEL, "--workload", "forward", "--batch", "1", "--seq", "8", "--wait", "0",
            "--warmup", "1", "--active", "1", "--device", "cpu", "--hardware", "cpu",
            "--out", str(tmp_path / "profile"), "--json"]
    o = run_cli(capfd, argv)
    assert o.code == 0, o.err
    assert "USDT" not in o.err and "profiler_start" not in o.err, o.err
    hardening.record(NOISE, shown(argv, tmp_path),
                     "no USDT line on stderr" if "USDT" not in o.err else "FAILED: USDT shown")

    import gptperf.model.labels  # noqa: F401 - installs the filter, as every model import does

    class Collect(logging.Handler):  # torch's loggers do not propagate to pytest's
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    seen = Collect()
    for name in ("torch._dynamo.variables.ctx_manager", "torch._dynamo.variables.torch"):
        logger = logging.getLogger(name)
        logger.addHandler(seen)
        try:
            logger.warning("Profiler record function %s will be ignored", "record_function")
            logger.warning("Profiler function %s will be ignored", "profile")
            logger.warning("a warning that must still show")
        finally:
            logger.removeHandler(seen)
    capfd.readouterr()
    messages = [r.getMessage() for r in seen.records]
    assert not any("will be ignored" in m for m in messages), messages
    assert messages.count("a warning that must still show") == 2
    hardening.record(NOISE, "dynamo: 'Profiler record function ... will be ignored'",
                     "dropped; other warnings shown")
    hardening.finish(NOISE)


def test_profiler_cycle_warning_and_tf32_advice_are_dropped_and_nothing_else(capfd: Any) -> None:
    import warnings

    from gptperf.quiet import profiler_quiet
    from gptperf.runtime import set_matmul_precision

    cycle = ("Warning: Profiler clears events at the end of each cycle.Only events from the current "
             "cycle will be reported.To keep events across cycles, set acc_events=True.")  # torch's text
    advice = ("TensorFloat32 tensor cores for float32 matrix multiplication available but not enabled. "
              "Consider setting `torch.set_float32_matmul_precision('high')` for better performance.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with profiler_quiet():
            warnings.warn(cycle, UserWarning, stacklevel=1)
            warnings.warn("a profiler warning that must still show", UserWarning, stacklevel=1)
            os.write(2, b"USDT:2026-12-03 16:00:00 1:1 ActivityProfiler.cpp:1] profiler_stop\n")
        warnings.warn(cycle, UserWarning, stacklevel=1)  # outside the block it shows again
        set_matmul_precision("fp32")
        warnings.warn(advice, UserWarning, stacklevel=1)
        warnings.warn("a compile warning that must still show", UserWarning, stacklevel=1)
    shown_ = [str(w.message) for w in caught]
    assert shown_ == ["a profiler warning that must still show", cycle,
                      "a compile warning that must still show"], shown_
    assert "profiler_stop" not in capfd.readouterr().err
    set_matmul_precision("tf32")  # asked for: no advice to filter, the filter stays harmless
    assert torch.backends.cuda.matmul.allow_tf32
    set_matmul_precision("fp32")


# --- 9. --json errors ---------------------------------------------------------------------------


def test_json_errors_are_json_documents(tmp_path: Path, capsys: Any) -> None:
    for argv, word in ((["model", "--batch", "0", "--json"], "0"),
                       (["train", *TRAIN, "--min-lr", "1", "--json"], "min_lr 1"),
                       (["roofline", "saxpy", "--n", "-5", "--json"], "-5")):
        err = _refused(capsys, argv, tmp_path, JSON, word)
        assert word in err
    for argv in (["model", "--bogus", "--json"], ["bench", "nonsense", "--json"],
                 ["roofline", "saxpy", "--n", "four", "--json"]):  # argparse's own errors
        o = run_cli(capsys, argv)
        hardening.record(JSON, shown(argv, tmp_path), o.kind)
        assert o.code == 2 and o.one_line_error, o
        doc = o.json_error()
        assert doc["exit_status"] == 2 and doc["error"] in o.err
    hardening.finish(JSON)


def test_malformed_devices_are_one_line(tmp_path: Path, capsys: Any, no_work: None) -> None:
    for device in ("cpu:x", "cpu:-1", "cpu:3", "cuda:x", "", "tpu", "CPU"):
        _refused(capsys, ["bench", "forward", *MODEL, "--device", device], tmp_path, DEVICE,
                 repr(device))
    hardening.finish(DEVICE)


def test_a_users_file_in_a_pictures_place_is_refused_in_one_line_naming_the_way_out(tmp_path):
    from gptperf.commands.common import check_folder, check_plot_file
    from gptperf.errors import UserError

    mine = tmp_path / "chart.png"
    mine.write_bytes(b"a user's picture")
    with pytest.raises(UserError) as refused:
        check_plot_file(str(mine))
    assert str(refused.value) == (f"--plot {str(mine)!r} exists and holds no gptperf picture: it is "
                                  "not replaced; give a new file name, or remove it first")
    with pytest.raises(UserError) as refused:
        check_folder(str(tmp_path), "--plot-dir", pictures=["chart.png"])
    assert str(refused.value) == (f"--plot-dir {str(tmp_path)!r}: {str(mine)!r} exists and holds no "
                                  "gptperf picture: it is not replaced; give another folder, or "
                                  "remove it first")
    assert mine.read_bytes() == b"a user's picture"
    check_folder(str(tmp_path), "--plot-dir", pictures=["other.png"])  # a new name passes
