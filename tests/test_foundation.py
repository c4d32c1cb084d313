"""The shared foundation: operation names, atomic writes, the CLI's promises, lint."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gptperf import atomic, names
from gptperf.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


def test_layer_names_round_trip() -> None:
    for component in names.LAYER_COMPONENTS:
        name = names.layer_name(7, component)
        assert name == f"h.7.{component}"
        assert names.split_name(name) == (7, component)
        assert names.component_of(name) == component
    for component in names.MODEL_COMPONENTS:
        assert names.split_name(component) == (None, component)


@pytest.mark.parametrize("bad", ["h.x.attn.qkv", "h.1.embed", "attn.qkv", "h.1", "", "lm_heads", "h.-1.ln_1"])
def test_names_outside_the_contract_are_rejected(bad: str) -> None:
    assert not names.is_operation_name(bad)
    with pytest.raises(ValueError, match="not an operation name"):
        names.split_name(bad)


def test_layer_name_rejects_model_components() -> None:
    with pytest.raises(ValueError, match="not a per-layer component"):
        names.layer_name(0, names.LM_HEAD)


def test_every_component_is_named_once() -> None:
    assert len(set(names.COMPONENTS)) == len(names.COMPONENTS)
    assert set(names.MATH_ATTENTION) | set(names.FUSED_ATTENTION) <= set(names.LAYER_COMPONENTS)


def test_atomic_write_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic.write_text(target, "old")
    atomic.write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_write_failure_keeps_previous(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic.write_bytes(target, b"previous")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_dir_swaps_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "report"
    with atomic.atomic_dir(target) as d:
        (d / "index.html").write_text("v1")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_dir(target) as d:
        (d / "index.html").write_text("half of v2")
        raise KeyboardInterrupt
    assert (target / "index.html").read_text() == "v1"
    with atomic.atomic_dir(target) as d:
        (d / "index.html").write_text("v2")
    assert (target / "index.html").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_every_command_module_exists_and_keeps_torch_out_of_its_top_level() -> None:
    code = (
        "import sys, importlib\n"
        f"for m in {list(COMMANDS.values())!r}:\n"
        "    importlib.import_module('gptperf.commands.' + m)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for module in COMMANDS.values():
        mod = importlib.import_module(f"gptperf.commands.{module}")
        assert isinstance(mod.HELP, str) and mod.HELP


def test_unknown_command_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-command" in err


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_clean() -> None:
    out = subprocess.run(
        ["ruff", "check", "--no-cache", "gptperf", "tests", "benchmarks"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    assert out.returncode == 0, out.stdout[-3000:]
