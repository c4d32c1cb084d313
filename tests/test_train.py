"""Training: LR schedule, config validation, learning, exact resume, NaN stop, the CLI."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from gptperf import cli
from gptperf.checkpoint import load_checkpoint
from gptperf.errors import UserError
from gptperf.model.config import PRESETS
from gptperf.model.gpt import GPT
from gptperf.train import TrainConfig, learning_rate, train

SMALL = dict(n_layer=1, n_head=2, n_embd=32, block_size=32)


def small(tmp_path=None, **overrides) -> TrainConfig:
    values = dict(model=SMALL, batch=4, seq=32, max_iters=12, lr=3e-3, warmup_iters=2,
                  eval_interval=6, eval_iters=2, device="cpu",
                  out_dir=str(tmp_path / "out") if tmp_path is not None else None)
    values.update(overrides)
    return TrainConfig.for_preset("tiny", **values)


def test_lr_schedule_warms_up_then_decays_by_cosine() -> None:
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    lrs = [learning_rate(i, cfg) for i in range(130)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # linear warm-up ...
    assert lrs[0] == pytest.approx(1e-3 / 11)
    assert lrs[10] == pytest.approx(1e-3)  # ... to the peak
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111], strict=True))  # then monotone decay
    assert lrs[60] == pytest.approx((1e-3 + 1e-4) / 2)  # cosine: halfway at the midpoint
    assert lrs[110] == lrs[129] == pytest.approx(1e-4)  # min_lr after the decay
    assert TrainConfig(lr=6e-4).final_lr == pytest.approx(6e-5)


def test_config_validation_and_preset_defaults() -> None:
    tiny = TrainConfig.for_preset("tiny")
    gpt2 = TrainConfig.for_preset("gpt2", max_iters=300)
    assert (tiny.batch, tiny.seq) == (12, 64)
    assert gpt2.seq == 1024 and gpt2.max_iters == 300 and gpt2.lr == pytest.approx(6e-4)
    assert gpt2.model_config(256).vocab_size == PRESETS["gpt2"].vocab_size  # bytes fit in it
    assert gpt2.model_config().block_size == 1024
    assert tiny.model_config().block_size == 64  # positions past the trained length: none
    assert small(seq=16, model=dict(SMALL, block_size=32)).model_config().block_size == 32
    assert small(attention="math").model_config().attention == "math"
    for bad in (dict(batch=0), dict(lr=-1.0), dict(lr=math.nan), dict(dtype="fp8"),
                dict(betas=(0.9, 1.5)), dict(grad_accum=0), dict(attention="flash")):
        with pytest.raises(UserError):
            small(**bad)
    with pytest.raises(UserError, match="unknown preset"):
        TrainConfig.for_preset("gpt5")
    with pytest.raises(UserError, match="exceeds block_size"):
        train(small(seq=64))


def test_training_lowers_the_loss_and_reports_timings(tmp_path) -> None:
    events = []
    result = train(small(tmp_path, max_iters=30, eval_interval=10), on_step=events.append)
    assert result.steps == 30 and len(result.losses) == 30
    assert [s for s, _ in result.val_losses] == [10, 20, 30]
    assert result.val_losses[-1][1] < result.val_losses[0][1] < math.log(256)
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert result.tokens_per_step == 4 * 32
    assert result.median_step_time_s > 0 and result.tokens_per_s > 0
    assert [e.step for e in events if e.val_loss is not None] == [10, 20, 30]
    doc = load_checkpoint(result.checkpoint)
    assert doc["step"] == 30 and doc["losses"] == result.losses
    json.dumps(result.to_dict())  # the summary is plain JSON


def test_grad_accumulation_and_bf16_run() -> None:
    result = train(small(max_iters=3, grad_accum=2, dtype="bf16", eval_iters=1))
    assert result.tokens_per_step == 2 * 4 * 32
    assert all(math.isfinite(v) for v in result.losses)
    with pytest.raises(UserError, match="fp16"):
        train(small(dtype="fp16"))


class _Stop(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path) -> None:
    straight = train(small(tmp_path / "a"))

    def crash_after_checkpoint(event) -> None:
        if event.step == 8:  # the checkpoint of step 6 exists; steps 7-8 are lost
            raise _Stop

    with pytest.raises(_Stop):
        train(small(tmp_path / "b"), on_step=crash_after_checkpoint)
    assert load_checkpoint(tmp_path / "b" / "out")["step"] == 6
    resumed = train(small(tmp_path / "b", resume=True))

    assert resumed.start_step == 6 and resumed.steps == 12
    assert resumed.losses == straight.losses  # bitwise: float equality of every step
    assert resumed.val_losses == straight.val_losses
    a = load_checkpoint(straight.checkpoint)
    b = load_checkpoint(resumed.checkpoint)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for pid, st in a["optimizer"]["state"].items():
        for name, value in st.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    forward = GPT.forward

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = forward(self, idx, targets, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 9:  # the 9th training step
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    cfg = small(tmp_path, eval_interval=4)
    with pytest.raises(UserError) as info:
        train(cfg)
    message = str(info.value)
    assert "\n" not in message and "step 9" in message and "nan" in message
    path = tmp_path / "out" / "ckpt.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_checkpoint(path)["step"] == 8
    monkeypatch.setattr(GPT, "forward", forward)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_resume_errors_are_clear(tmp_path) -> None:
    with pytest.raises(UserError, match="no ckpt.pt|not found"):
        train(small(tmp_path, resume=True))
    train(small(tmp_path, max_iters=2, eval_iters=1))
    with pytest.raises(UserError, match="n_layer=1"):
        train(small(tmp_path, resume=True, max_iters=4, model=dict(SMALL, n_layer=2)))
    with pytest.raises(UserError, match="preset 'tiny'"):
        train(TrainConfig.for_preset("gpt2", out_dir=str(tmp_path / "out"), resume=True,
                                     device="cpu"))


def test_the_checkpoint_folder_is_refused_before_the_data_is_read(tmp_path) -> None:
    """An earlier run's checkpoint (or an unwritable folder) is named first, before a data file
    that takes a while to read is read, or found missing."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"an earlier run's")
    missing = str(tmp_path / "no-such-corpus.txt")
    with pytest.raises(UserError, match="--force") as refused:
        train(small(tmp_path, data=missing))
    assert missing not in str(refused.value)
    with pytest.raises(UserError, match="no-such-corpus"):  # the data's own error, once the folder is fine
        train(small(tmp_path, data=missing), force=True)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["train", *argv])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, words", [
    (["--batch", "0"], ["batch", "0"]),
    (["--dtype", "fp8"], ["--dtype", "fp8"]),
    (["--preset", "gpt5"], ["gpt5"]),
    (["--n-embd", "100", "--n-head", "3"], ["n_embd=100", "n_head=3"]),
    (["--data", "/no/such/file.txt"], ["/no/such/file.txt"]),
    (["--lr", "abc"], ["--lr", "abc"]),
    (["--resume", "--no-checkpoint"], ["--resume"]),
])
def test_cli_bad_arguments_exit_2_with_one_line(capsys, argv, words) -> None:
    code, out, err = _cli(capsys, *argv, "--device", "cpu")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


def test_cli_json_summary(capsys, tmp_path) -> None:
    code, out, err = _cli(capsys, "--json", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
                          "--batch", "2", "--seq", "16", "--max-iters", "3", "--eval-iters", "1",
                          "--device", "cpu", "--out", str(tmp_path))
    assert code == 0
    doc = json.loads(out)
    assert doc["steps"] == 3 and len(doc["losses"]) == 3
    assert doc["model_config"]["n_layer"] == 1 and doc["checkpoint"].endswith("ckpt.pt")
    assert doc["environment"]["device_type"] == "cpu"


def test_a_warm_up_longer_than_the_run_is_noted(capsys) -> None:
    """The learning rate of a run shorter than its warm-up never reaches its peak: said once."""
    run = ("--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--batch", "2", "--seq", "16",
           "--max-iters", "3", "--eval-iters", "1", "--device", "cpu", "--no-checkpoint", "--lr", "0.002")
    code, out, err = _cli(capsys, *run, "--warmup-iters", "10")
    expected = 0.002 * 3 / 11  # the warm-up line at the last step (0-based 2): lr·(2 + 1)/(10 + 1)
    assert code == 0 and f"warm-up of 10 steps in a run of 3: the learning rate stops at {expected:.3g}, " \
        "short of its peak 0.002" in " ".join(err.split())
    code, out, err = _cli(capsys, *run, "--warmup-iters", "2")
    assert code == 0 and "warm-up of" not in err

