"""Generated command lines for every sub-command (hypothesis): every outcome is success or a
one-line error with exit status 2 (and under --json an error document on stdout).

This tests argument *validation*, so it stays fast: the CLI runs in this process, the entry
points of long work (building a model, measuring, launching, drawing) are patched to raise
`Validated` — a case that gets that far passed every check — and the device's free memory is
fixed at 16 GiB so the memory guard's verdicts are the same on every machine. Values come from
pools of valid, boundary and malformed ones (paths that are files, folders, missing or
unwritable; numbers that are 0, negative, NaN, huge or not numbers; unknown names), drawn with
`derandomize=True`: the same cases on every run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hardening
import numpy as np
import pytest
from hardening import Validated, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptperf.cli import COMMANDS

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = 52  # per sub-command: 11 × 52 = 572 generated cases a run
assert hardening.COMMAND_NAMES == tuple(COMMANDS)  # the document lists every sub-command

TMP = "<tmp>"  # replaced by the test's folder when a case runs (the table shows it as is)


def pool(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


INT = pool("1", "2", "8", "16", "0", "-1", "3.5", "x", "", "1e3", "99999999999", " 4")
SMALL = pool("1", "2", "4", "8", "0", "-2", "two", "")
FLOAT = pool("0.001", "1", "0.5", "0", "-1", "nan", "inf", "-inf", "1e309", "abc", "")
SHAPE = pool("1", "2", "4", "8", "16", "32", "64", "0", "-3", "7", "abc", "4097")
PRESET = pool("tiny", "tiny", "gpt2", "gpt2-xl", "gpt5", "")
ATTENTION = pool("math", "sdpa", "flash", "")
DTYPE = pool("fp32", "fp32", "bf16", "fp16", "tf32", "fp64", "fp8", "", "FP32")
DEVICE = pool("cpu", "cpu", "cpu", "cpu", "cpu", "cpu", "cpu:x", "cuda:x", "tpu", "")
HARDWARE = pool("cpu", "h100-sxm", "a100-40gb", "measured", "nope", f"{TMP}/missing.toml",
                f"{TMP}/afile", f"{TMP}/adir")
PLOT = pool(f"{TMP}/new/x.png", f"{TMP}/x.svg", f"{TMP}/afile/x.png", f"{TMP}/adir",
            f"{TMP}/x.txt", "", f"{TMP}/{'n' * 300}.png", f"{TMP}/readonly/x.png")
FOLDER = pool(f"{TMP}/new", f"{TMP}/adir", f"{TMP}/afile", f"{TMP}/afile/sub", "",
              f"{TMP}/readonly/sub", f"{TMP}/{'d' * 300}")
DATA = pool(f"{TMP}/text.txt", f"{TMP}/tokens", f"{TMP}/missing.txt", f"{TMP}/adir",
            f"{TMP}/binary.bin", f"{TMP}/empty.txt", "")
CHECKPOINT = pool(f"{TMP}/ckpt", f"{TMP}/ckpt", f"{TMP}/ckpt/ckpt.pt", f"{TMP}/missing",
                  f"{TMP}/afile", f"{TMP}/adir", f"{TMP}/junk.pt")
TRACE = pool(f"{TMP}/missing.json", f"{TMP}/afile", f"{TMP}/adir", f"{TMP}/junk.pt",
             f"{TMP}/empty.txt")
LIST = pool("1,2", "1", "2,4,8", "0", "-1,2", "x", "", "1,,2", "99999999", "1,2,3,4,5,6,7,8")
TEXT = pool("a", "hello world", "", "ü", "x" * 200, "\n", "--json")
SENTENCE = pool("ab", "hello there", "ü", "x" * 40, "")
FLAG = None  # a flag without a value

MODEL: list[tuple[str, Any]] = [
    ("--preset", PRESET), ("--n-layer", SHAPE), ("--n-head", SHAPE), ("--n-embd", SHAPE),
    ("--block-size", SHAPE), ("--vocab-size", SHAPE), ("--attention", ATTENTION)]
COMPILE = [("--compile", FLAG), ("--no-compile", FLAG)]

# sub-command -> (choices of what comes first: positionals and required flags, a string or a
# pool each; optional flags with their value pools)
SPECS: dict[str, tuple[list[list[Any]], list[tuple[str, Any]]]] = {
    "report": ([[]], [("--preset", PRESET), ("--out", FOLDER), ("--dtype", DTYPE),
                      ("--train-seconds", FLOAT), *COMPILE, ("--quick", FLAG),
                      ("--keep-going", FLAG), ("--calibrate", FLAG), ("--no-calibrate", FLAG)]),
    "train": ([[]], [m for m in MODEL if m[0] != "--vocab-size"] + [
        ("--data", DATA), ("--vocab-size", INT), ("--batch", SMALL), ("--seq", INT),
        ("--max-iters", INT), ("--lr", FLOAT), ("--min-lr", FLOAT), ("--warmup-iters", INT),
        ("--weight-decay", FLOAT), ("--grad-accum", SMALL), ("--grad-clip", FLOAT),
        ("--dtype", DTYPE), *COMPILE, ("--seed", INT), ("--eval-interval", INT),
        ("--eval-iters", SMALL), ("--log-interval", SMALL), ("--out", FOLDER),
        ("--no-checkpoint", FLAG), ("--resume", FLAG)]),
    "generate": ([[], ["--checkpoint", CHECKPOINT]], [("--checkpoint", CHECKPOINT), ("--prompt", TEXT), ("--tokens", INT),
                        ("--temperature", FLOAT), ("--top-k", INT), ("--seed", INT),
                        ("--no-kv-cache", FLAG), ("--fast", FLAG), ("--no-fast", FLAG)]),
    "score": ([[SENTENCE, "--checkpoint", CHECKPOINT], [SENTENCE, SENTENCE]],
              [("--checkpoint", CHECKPOINT)]),
    "model": ([[]], MODEL + [
        ("--workload", pool("train", "forward", "prefill", "decode", "decode_nocache", "finetune")),
        ("--batch", INT), ("--seq", INT), ("--dtype", DTYPE), ("--hardware", HARDWARE),
        ("--peak-tflops", FLOAT), ("--bandwidth-gbs", FLOAT),
        ("--view", pool("all", "op", "component", "layer", "table")), ("--plot", PLOT),
        ("--plan", pool("eager", "compiled", "cuda_graph", "graph", "")), ("--calibrated", FLAG),
        ("--device", DEVICE)]),
    "roofline": ([["saxpy", "--n", INT], ["matmul", "--m", INT, "--n", INT, "--k", INT],
                  ["kv", "--n-embd", INT], ["saxpy"], ["gemm"], []],
                 [("--n", INT), ("--m", INT), ("--k", INT), ("--n-embd", INT), ("--dtype", DTYPE),
                  ("--hardware", HARDWARE), ("--peak-tflops", FLOAT), ("--bandwidth-gbs", FLOAT),
                  ("--accumulate", FLAG), ("--plot", PLOT)]),
    "ceilings": ([[]], [("--quick", FLAG), ("--force", FLAG), ("--plot", PLOT), ("--no-calibrate", FLAG)]),
    "calibrate": ([[]], [("--quick", FLAG), ("--force", FLAG)]),
    "validate": ([[]], [("--quick", FLAG), ("--isolate", FLAG), ("--plot-dir", FOLDER),
                        ("--out", pool(f"{TMP}/v.json", f"{TMP}/afile", f"{TMP}/x.txt", ""))]),
    "bench": ([["train"], ["forward"], ["prefill"], ["decode"], ["decode_nocache"], ["sleep"]],
              MODEL + [("--batch", INT), ("--seq", INT), ("--dtype", DTYPE), *COMPILE,
                       ("--fast", FLAG), ("--warmup", INT), ("--repeats", INT),
                       ("--hardware", HARDWARE), ("--seed", INT)]),
    "profile": ([[]], MODEL + [
        ("--workload", pool("train", "forward", "prefill", "decode", "decode_nocache")),
        ("--batch", INT), ("--seq", INT), ("--dtype", DTYPE), *COMPILE, ("--hardware", HARDWARE),
        ("--wait", INT), ("--warmup", INT), ("--active", INT), ("--no-overhead", FLAG),
        ("--out", FOLDER), ("--trace", TRACE), ("--top", INT)]),
    "inference": ([[]], MODEL + [
        ("--dtype", DTYPE), ("--contexts", LIST), ("--batches", LIST), ("--batch-context", INT),
        ("--fast", FLAG), ("--no-fast", FLAG), ("--hardware", HARDWARE), ("--plot-dir", FOLDER)]),
    "scale": ([[]], MODEL + [
        ("--mode", pool("strong", "weak", "strong,weak", "medium")), ("--procs", LIST), ("--threads", LIST),
        ("--space-batches", LIST), ("--warmup", INT), ("--steps", INT), ("--timeout", FLOAT),
        ("--batch", INT), ("--seq", INT), ("--dtype", DTYPE), *COMPILE, ("--seed", INT),
        ("--hardware", HARDWARE), ("--what-if", pool("2x8", "1x8,2x8", "2by8", "0x8", "")),
        ("--what-if-hardware", pool("h100-sxm", "nope")),
        ("--intra", pool("nvlink4", "carrier-pigeon")), ("--inter", pool("ib-ndr", "smoke")),
        ("--plot-dir", FOLDER)]),
}
NO_DEVICE = {"model", "roofline"}  # every other command is pinned to the CPU unless drawn bad


def _argv(data: st.DataObject, command: str) -> list[str]:
    heads, flags = SPECS[command]
    head = data.draw(st.sampled_from(heads), label="positional")
    argv = [command, *(a if isinstance(a, str) else data.draw(a) for a in head)]
    chosen = data.draw(st.lists(st.sampled_from(range(len(flags))), max_size=5, unique=True),
                       label="flags")
    for i in chosen:
        flag, values = flags[i]
        argv += [flag] if values is None else [flag, data.draw(values, label=flag)]
    if command not in NO_DEVICE:
        argv += ["--device", data.draw(DEVICE, label="--device")]
    if data.draw(st.booleans(), label="--json"):
        argv.append("--json")
    extra = data.draw(pool("", "", "", "", "", "", "", "--bogus", "stray"), label="extra")
    return argv + ([extra] if extra else [])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paths the pools name: a trained-shape checkpoint, text, token files, a file where
    a folder is wanted, an empty folder, junk, a read-only folder."""
    from gptperf.checkpoint import save_checkpoint
    from gptperf.model import GPT, GPTConfig

    tmp = tmp_path_factory.mktemp("hardening")
    config = GPTConfig(block_size=32, vocab_size=256, n_layer=1, n_head=2, n_embd=16)
    save_checkpoint(tmp / "ckpt", model_config=config, model=GPT(config).state_dict())
    (tmp / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (tmp / "junk.pt").write_bytes(os.urandom(512))
    (tmp / "afile").write_text("a file where a folder is wanted")
    (tmp / "adir").mkdir()
    (tmp / "readonly").mkdir()
    tokens = tmp / "tokens"
    tokens.mkdir()
    (np.arange(4000) % 300).astype(np.uint16).tofile(tokens / "train.bin")
    (np.arange(400) % 300).astype(np.uint16).tofile(tokens / "val.bin")
    return tmp


def _validated(*_args: Any, **_kwargs: Any) -> None:
    raise Validated


@pytest.fixture
def validation_only(monkeypatch: pytest.MonkeyPatch, files: Path) -> None:
    """Long work stops where it would begin; memory is 16 GiB everywhere; the read-only folder
    reads as read-only even to root; no ceilings cache."""
    import gptperf.generate
    import gptperf.inference.sweep
    import gptperf.measure.calibrate
    import gptperf.measure.ceilings
    import gptperf.memguard
    import gptperf.model.gpt
    import gptperf.plotting.roofline
    import gptperf.report
    import gptperf.scaling.launch
    import gptperf.score
    import gptperf.steps.build
    import gptperf.validate.run

    for module, name in ((gptperf.steps.build, "build_step"), (gptperf.model.gpt, "GPT"),
                         (gptperf.measure.ceilings, "measure_ceilings"),
                         (gptperf.measure.calibrate, "calibrate"), (gptperf.validate.run, "validate"),
                         (gptperf.inference.sweep, "_Bench"), (gptperf.scaling.launch, "launch"),
                         (gptperf.report, "build_report"), (gptperf.generate, "generate"),
                         (gptperf.generate, "generate_fast"), (gptperf.generate, "fast_decoder"),
                         (gptperf.score, "score"), (gptperf.plotting.roofline, "plot_prediction"),
                         (gptperf.plotting.roofline, "plot_roofline")):
        monkeypatch.setattr(module, name, _validated)
    monkeypatch.setattr(gptperf.memguard, "available_memory", lambda device: (16.0 * 2**30, "(test)"))
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(files / "cache"))
    real_access = os.access
    readonly = files / "readonly"
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if (
        Path(p) == readonly and mode & os.W_OK) else real_access(p, mode, *a, **k))
    monkeypatch.chdir(files / "adir")  # defaults such as ./out land in a folder of the test


@pytest.mark.parametrize("command", list(COMMANDS))
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_arguments_succeed_or_fail_in_one_line(command: str, data: st.DataObject,
                                                         capsys: Any, files: Path,
                                                         validation_only: None) -> None:
    argv = _argv(data, command)
    real = [a.replace(TMP, str(files)) for a in argv]
    o = run_cli(capsys, real)
    hardening.record(f"gptperf {command} …", "gptperf " + " ".join(
        a if a else "''" for a in argv), o.kind)
    assert o.code in (None, 0) or (o.code == 2 and o.one_line_error), (real, o)
    if o.code == 2 and "--json" in real and "--help" not in real:
        assert o.json_error()["error"] in o.err
    assert "weights_only" not in o.err and "USDT" not in o.err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_was_generated_enough(command: str) -> None:
    """Runs after the generated cases (same module, later in the file): at least EXAMPLES - 2
    cases each (hypothesis may stop a little short), 500 in all."""
    cls = f"gptperf {command} …"
    if not hardening.cases(cls):
        pytest.skip("the generated cases did not run in this session")
    assert hardening.cases(cls) >= EXAMPLES - 2
    if command == list(COMMANDS)[-1]:
        assert sum(hardening.cases(f"gptperf {c} …") for c in COMMANDS) >= 500
    hardening.finish(cls)
