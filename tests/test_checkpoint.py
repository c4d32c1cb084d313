"""Checkpoints: bitwise round trip, safe loading, clear errors, and crash-safe writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest
import torch

from gptperf.checkpoint import FILENAME, load_checkpoint, load_model, save_checkpoint
from gptperf.errors import UserError
from gptperf.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=32, vocab_size=256, n_layer=1, n_head=2, n_embd=32, name="test")


def _trained_state() -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        x = torch.randint(0, 256, (2, 16))
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _assert_equal_tree(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            _assert_equal_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_equal_tree(x, y)
    else:
        assert a == b


def test_round_trip_is_bitwise_equal(tmp_path) -> None:
    model, opt = _trained_state()
    path = save_checkpoint(tmp_path / "run", model_config=CONFIG, model=model.state_dict(),
                           optimizer=opt.state_dict(), step=2, losses=[5.5, 5.4])
    assert path == tmp_path / "run" / FILENAME
    doc = load_checkpoint(tmp_path / "run")  # the folder or the file both work
    _assert_equal_tree(model.state_dict(), doc["model"])
    _assert_equal_tree(opt.state_dict(), doc["optimizer"])
    assert doc["step"] == 2 and doc["losses"] == [5.5, 5.4]
    assert doc["model_config"] == CONFIG.to_dict()

    loaded = load_model(path)
    _assert_equal_tree(model.state_dict(), loaded.state_dict())
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied
    x = torch.randint(0, 256, (1, 8))
    model.eval()
    assert torch.equal(model(x)[0], loaded(x)[0])

    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(doc["optimizer"])
    _assert_equal_tree(opt.state_dict(), opt2.state_dict())


def test_no_temporary_files_are_left(tmp_path) -> None:
    model, _ = _trained_state()
    save_checkpoint(tmp_path, model_config=CONFIG, model=model.state_dict())
    save_checkpoint(tmp_path, model_config=CONFIG, model=model.state_dict())
    assert sorted(os.listdir(tmp_path)) == [FILENAME]


def _error(path, *words: str) -> str:
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_bad_checkpoints_give_one_line_errors(tmp_path) -> None:
    model, _ = _trained_state()
    good = save_checkpoint(tmp_path / "good.pt", model_config=CONFIG, model=model.state_dict())
    _error(tmp_path / "missing.pt", "missing.pt", "not found")
    _error(tmp_path, "no ckpt.pt")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _error(truncated, "truncated.pt", "cannot be read")

    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    _error(junk, "junk.pt", "cannot be read")

    text = tmp_path / "passwd"  # torch's legacy loader fails on it with a bare IndexError
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    _error(text, "passwd", "cannot be read", "not a torch.save file")

    other = tmp_path / "other.pt"
    torch.save({"state_dict": model.state_dict()}, other)
    _error(other, "other.pt", "not a gptperf checkpoint")

    future = tmp_path / "future.pt"
    torch.save({"format": "gptperf-checkpoint", "version": 99, "model_config": {},
                "model": {}}, future)
    _error(future, "version 99")

    wider = save_checkpoint(tmp_path / "wider.pt", model_config=CONFIG.replace(n_embd=64),
                            model=model.state_dict())
    _error(wider, "wider.pt", "shape", "n_embd=64")

    deeper = save_checkpoint(tmp_path / "deeper.pt", model_config=CONFIG.replace(n_layer=2),
                             model=model.state_dict())
    _error(deeper, "deeper.pt", "missing", "transformer.h.1")

    bad_config = save_checkpoint(tmp_path / "badcfg.pt", model_config={"n_head": 5, "n_embd": 32},
                                 model=model.state_dict())
    _error(bad_config, "badcfg.pt", "invalid model config")


def test_weights_with_a_nan_are_refused_as_a_model_is_loaded(tmp_path) -> None:
    """generate and score load a model: a NaN in its weights would make every logit NaN (sampling
    then fails deep in torch, and a score is NaN), so the load names the tensor instead."""
    from gptperf.checkpoint import load_model

    model, _ = _trained_state()
    state = model.state_dict()
    state["transformer.h.0.mlp.c_fc.weight"][3, 2] = float("inf")
    path = save_checkpoint(tmp_path / "inf.pt", model_config=CONFIG, model=state)
    with pytest.raises(UserError) as info:
        load_model(path)
    assert str(info.value) == (
        f"checkpoint {str(path)!r}: transformer.h.0.mlp.c_fc.weight holds 1 NaN or infinite "
        f"value(s) of {state['transformer.h.0.mlp.c_fc.weight'].numel()}; the weights are corrupt "
        "(a diverged run?): use another checkpoint")
    state["transformer.h.0.mlp.c_fc.weight"][3, 2] = 0.5
    assert load_model(save_checkpoint(tmp_path / "ok.pt", model_config=CONFIG, model=state))


def test_unsafe_pickles_are_refused(tmp_path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"format": "gptperf-checkpoint", "version": 1, "payload": Evil()}, path)
    _error(path, "evil.pt", "cannot be read")
    assert not marker.exists()


def test_hf_folder_is_delegated(tmp_path, monkeypatch) -> None:
    calls = []
    fake = types.ModuleType("gptperf.model.hf")
    fake.load_hf_gpt2 = lambda path, device="cpu": calls.append((path, device)) or "hf-model"
    monkeypatch.setitem(sys.modules, "gptperf.model.hf", fake)
    (tmp_path / "config.json").write_text("{}")
    assert load_model(tmp_path, device="cpu") == "hf-model"
    assert calls == [(tmp_path, "cpu")]


_WRITER = textwrap.dedent("""
    import sys, torch
    from gptperf.checkpoint import save_checkpoint
    from gptperf.model import GPT, GPTConfig
    config = GPTConfig(block_size=64, vocab_size=256, n_layer=2, n_head=4, n_embd=256)
    template = GPT(config).state_dict()
    step = 0
    while True:
        step += 1
        # every tensor holds the step number, so a reader can tell a mixed file
        state = {k: torch.full_like(v, float(step)) for k, v in template.items()}
        save_checkpoint(sys.argv[1], model_config=config, model=state, step=step)
        print(step, flush=True)
""")


def test_sigkill_during_write_leaves_a_loadable_checkpoint(tmp_path) -> None:
    path = tmp_path / FILENAME
    for delay in (0.002, 0.0005, 0.0):  # a fast disk may finish a write within the delay
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline(), "checkpoint writer died"  # one whole checkpoint
            # Kill once the next write has begun: its temporary file exists beside ckpt.pt.
            deadline = time.monotonic() + 60
            while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
                assert time.monotonic() < deadline and proc.poll() is None, "no write began"
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        doc = load_checkpoint(path)
        assert doc["step"] >= 1
        for key, value in doc["model"].items():
            assert torch.all(value == float(doc["step"])), f"{key} is not from step {doc['step']}"
        if any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
            return  # the kill cut a write short, and ckpt.pt is still a whole earlier one
    pytest.fail("no SIGKILL landed during a write; nothing was shown")
