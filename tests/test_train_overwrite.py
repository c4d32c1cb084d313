"""`gptperf train` never replaces an earlier run's checkpoint unless asked (--force), and an
empty --out / --checkpoint is refused instead of meaning the current folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gptperf import cli
from gptperf.checkpoint import load_checkpoint
from gptperf.errors import UserError
from gptperf.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = dict(n_layer=1, n_head=2, n_embd=32, block_size=32)
TRAIN = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
         "--block-size", "32", "--batch", "2", "--seq", "16", "--max-iters", "2",
         "--eval-iters", "1", "--device", "cpu"]


def small(out: Path | None, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = dict(model=SMALL, batch=2, seq=16, max_iters=2, eval_iters=1,
                                  device="cpu", out_dir=str(out) if out is not None else None)
    values.update(overrides)
    return TrainConfig.for_preset("tiny", **values)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def earlier_run(tmp_path: Path) -> Path:
    """A folder holding a checkpoint of an earlier 2-step run."""
    out = tmp_path / "run"
    train(small(out))
    assert (out / "ckpt.pt").is_file()
    return out


def test_fresh_run_refuses_an_existing_checkpoint_before_building_the_model(
        earlier_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptperf.model.gpt

    before = (earlier_run / "ckpt.pt").read_bytes()
    built: list[Any] = []
    real_gpt = gptperf.model.gpt.GPT
    monkeypatch.setattr(gptperf.model.gpt, "GPT", lambda *a, **k: built.append(1) or real_gpt(*a, **k))
    steps: list[Any] = []
    with pytest.raises(UserError) as err:
        train(small(earlier_run, max_iters=3), on_step=steps.append)
    message = str(err.value)
    assert "\n" not in message
    for word in (str(earlier_run / "ckpt.pt"), "--resume", "--force", "another --out"):
        assert word in message, message
    assert not built and not [s for s in steps if s.note is None]  # refused before any step
    assert (earlier_run / "ckpt.pt").read_bytes() == before


def test_force_replaces_and_resume_continues(earlier_run: Path) -> None:
    replaced = train(small(earlier_run, max_iters=3, seed=7), force=True)
    doc = load_checkpoint(earlier_run / "ckpt.pt")
    assert replaced.start_step == 0 and doc["step"] == 3 and doc["train_config"]["seed"] == 7
    resumed = train(small(earlier_run, max_iters=4, seed=7, resume=True))  # no --force needed
    assert resumed.start_step == 3 and load_checkpoint(earlier_run / "ckpt.pt")["step"] == 4


def test_a_tilde_out_dir_is_checked_and_written_in_the_home_folder(
        earlier_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's check expands ~ (`writable.usable_path`): so do the checkpoint's write and its
    read on --resume."""
    monkeypatch.setenv("HOME", str(earlier_run.parent))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="already holds a checkpoint"):
        train(small(Path("~") / earlier_run.name))  # the earlier run's, found through ~
    train(small(Path("~") / "fresh"))
    assert (earlier_run.parent / "fresh" / "ckpt.pt").is_file() and not (tmp_path / "~").exists()
    resumed = train(small(Path("~") / earlier_run.name, max_iters=3, resume=True))
    assert resumed.start_step == 2 and load_checkpoint(earlier_run / "ckpt.pt")["step"] == 3


def test_force_into_a_new_folder_and_no_checkpoint_without_force(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert train(small(tmp_path / "new"), force=True).checkpoint == str(tmp_path / "new" / "ckpt.pt")
    # out_dir=None asks for no checkpoint (it once meant ./out): nothing written, nothing refused
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"an earlier run's checkpoint")
    assert TrainConfig.for_preset("tiny", out_dir=None).out_dir is None
    assert TrainConfig.for_preset("tiny").out_dir == "out"  # not given: the default
    assert train(small(None)).checkpoint is None
    assert (tmp_path / "out" / "ckpt.pt").read_bytes() == b"an earlier run's checkpoint"


def test_contradictory_force_is_refused(earlier_run: Path) -> None:
    with pytest.raises(UserError, match="--force .*--resume"):
        train(small(earlier_run, resume=True), force=True)
    with pytest.raises(UserError, match="--no-checkpoint"):
        train(small(None), force=True)


def test_a_folder_named_ckpt_pt_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ckpt.pt").mkdir()
    with pytest.raises(UserError, match="folder named ckpt.pt"):
        train(small(tmp_path), force=True)


@pytest.mark.parametrize("value", ["", "   ", "a\0b"])
def test_empty_out_dir_is_refused_by_the_config(value: str) -> None:
    with pytest.raises(UserError, match="is not a usable path"):
        small(None, out_dir=value)


def test_cli_refuses_then_force_replaces(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    code, _, err = _cli(capsys, *TRAIN, "--out", out, "--json")
    assert code == 0, err
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    code, _, err = _cli(capsys, *TRAIN, "--out", out)
    line = _one_line(err)
    assert code == 2 and "already holds a checkpoint" in line and "--force" in line, line
    code, stdout, err = _cli(capsys, *TRAIN, "--out", out, "--json")
    assert code == 2 and "already holds a checkpoint" in json.loads(stdout)["error"]
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before
    code, stdout, err = _cli(capsys, *TRAIN, "--out", out, "--seed", "9", "--force", "--json")
    assert code == 0, err
    assert json.loads(stdout)["config"]["seed"] == 9
    assert load_checkpoint(tmp_path / "run")["train_config"]["seed"] == 9
    code, _, err = _cli(capsys, *TRAIN, "--out", out, "--force", "--resume")
    assert code == 2 and "drop one of them" in _one_line(err)
    code, _, err = _cli(capsys, *TRAIN, "--force", "--no-checkpoint")
    assert code == 2 and "--no-checkpoint" in _one_line(err)


def test_cli_default_out_is_protected_too(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"an earlier run's checkpoint")
    code, _, err = _cli(capsys, *TRAIN)
    assert code == 2 and "--out 'out' already holds a checkpoint" in _one_line(err)
    assert (tmp_path / "out" / "ckpt.pt").read_bytes() == b"an earlier run's checkpoint"


def test_cli_empty_paths_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, *TRAIN, "--out", "")
    assert code == 2 and "--out '' is not a usable path" in _one_line(err)
    assert list(tmp_path.iterdir()) == []  # no ./ckpt.pt
    # a checkpoint in the current folder: '' must not mean it
    train(small(tmp_path))
    for argv in (["generate", "--checkpoint", "", "--tokens", "2", "--device", "cpu"],
                 ["score", "ab", "--checkpoint", "", "--device", "cpu"]):
        capsys.readouterr()
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code == 2 and "--checkpoint '' is not a usable path" in _one_line(err), (argv, err)
        assert out == ""


def test_help_names_force(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--force" in capsys.readouterr().out
