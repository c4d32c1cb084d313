"""Every sub-command's `--json` is one JSON document naming its versioned schema ("gptperf.<what>/<n>"),
run on the CPU with the cheapest settings (a one-layer tiny model)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gptperf.cli import COMMANDS

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32"]
SCHEMA = re.compile(r"gptperf\.[a-z.]+/[0-9]+")


def _check(doc: dict[str, Any], expected: str) -> None:
    assert SCHEMA.fullmatch(doc.get("schema", "")), doc.get("schema")
    assert doc["schema"] == expected


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for two steps: what `generate` and `score` read."""
    from gptperf.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt")
    train(TrainConfig.for_preset("tiny", model=dict(n_layer=1, n_embd=32, n_head=2, block_size=32),
                                 batch=2, seq=16, max_iters=2, eval_iters=1, device="cpu",
                                 out_dir=str(out)))
    return out


def _fake_stage(ctx: Any, progress: Any) -> dict[str, Any]:
    return {"value": 1}


def _argv(command: str, tmp_path: Path, checkpoint: Callable[[], Path]) -> list[str]:
    """The cheapest invocation of `command` (a function for the checkpoint: only generate and
    score train one)."""
    return {
        "report": ["report", "--device", "cpu", "--out", str(tmp_path / "report")],
        "train": ["train", *TINY[2:], "--batch", "2", "--seq", "16", "--max-iters", "2",
                  "--eval-iters", "1", "--device", "cpu", "--no-checkpoint"],
        "generate": ["generate", "--checkpoint", str(checkpoint()), "--prompt", "a",
                     "--tokens", "2", "--device", "cpu"],
        "score": ["score", "ab", "--checkpoint", str(checkpoint()), "--device", "cpu"],
        "model": ["model", *TINY, "--batch", "1", "--seq", "8"],
        "roofline": ["roofline", "saxpy", "--n", "1000"],
        "ceilings": ["ceilings", "--quick", "--device", "cpu", "--no-calibrate"],
        "bench": ["bench", "forward", *TINY, "--batch", "1", "--seq", "8", "--warmup", "1",
                  "--repeats", "1", "--device", "cpu", "--hardware", "cpu"],
        "profile": ["profile", *TINY, "--workload", "forward", "--batch", "1", "--seq", "8",
                    "--wait", "0", "--warmup", "1", "--active", "1", "--no-overhead",
                    "--device", "cpu", "--hardware", "cpu", "--out", str(tmp_path / "profile")],
        "inference": ["inference", *TINY, "--device", "cpu", "--contexts", "8", "--batches", "1",
                      "--hardware", "cpu"],
    }[command]


EXPECTED = {
    "report": "gptperf.report.run/1", "train": "gptperf.train/1", "generate": "gptperf.generate/1",
    "score": "gptperf.score/1", "model": "gptperf.perfmodel/1", "roofline": "gptperf.roofline/1",
    "ceilings": "gptperf.ceilings/1", "bench": "gptperf.bench/1", "profile": "gptperf.profile/1",
    "inference": "gptperf.inference/1",
}


# Commands whose --json schema another module checks, because one run costs much more there.
CHECKED_ELSEWHERE = {"scale": ("test_scaling.py", "gptperf.scale/1"),  # a torchrun launch
                     "calibrate": ("test_calibrate.py", "gptperf.calibration/1"),
                     "validate": ("test_validate.py", "gptperf.validate/1")}


def test_every_command_is_covered() -> None:
    assert set(EXPECTED) | set(CHECKED_ELSEWHERE) == set(COMMANDS)
    for module, schema in CHECKED_ELSEWHERE.values():
        text = (Path(__file__).parent / module).read_text(encoding="utf-8")
        assert f'["schema"] == "{schema}"' in text, (module, schema)


@pytest.mark.parametrize("command", list(EXPECTED))
def test_json_names_its_schema(command: str, cli_json: Callable[..., dict[str, Any]],
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))  # ceilings are cached here
    if command == "report":  # the stage machinery, without the stages' cost
        from gptperf.report import Stage
        from gptperf.report import stages as report_stages

        monkeypatch.setattr(report_stages, "STAGES", [Stage("a", "A", _fake_stage, 1.0)])
    doc = cli_json(*_argv(command, tmp_path, lambda: request.getfixturevalue("checkpoint")))
    _check(doc, EXPECTED[command])
