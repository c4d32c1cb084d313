"""Loading a Hugging Face GPT-2 folder checks the weights' names and shapes against config.json
before allocating the model, and every bad config or index field is a one-line UserError;
gptperf's own checkpoints refuse a model_config that is not a mapping, and empty paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hardening import one_line_user_error

from gptperf.checkpoint import load_checkpoint, load_model, save_checkpoint
from gptperf.model import GPT, GPTConfig
from gptperf.model import hf as hf_module
from gptperf.model.hf import config_from_hf, load_hf_gpt2, save_hf_gpt2

pytest.importorskip("safetensors")

SMALL = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_hf_gpt2(GPT(SMALL).eval(), tmp_path / "hf")


def _edit_config(folder: Path, **changes: Any) -> None:
    doc = json.loads((folder / "config.json").read_text())
    doc.update(changes)
    (folder / "config.json").write_text(json.dumps(doc))


@pytest.fixture
def no_allocation(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every GPT the HF loader builds must be on the meta device, and no tensor may be read:
    what it built off the meta device or read is listed (the test asserts the list is empty)."""
    seen: list[str] = []
    real_gpt = hf_module.GPT

    def gpt(config: GPTConfig) -> GPT:
        model = real_gpt(config)
        if next(model.parameters()).device.type != "meta":
            seen.append(f"built {config.name} off the meta device")
        return model

    def read(file: Path) -> dict[str, torch.Tensor]:
        seen.append(f"read {file}")
        return {}

    monkeypatch.setattr(hf_module, "GPT", gpt)
    monkeypatch.setattr(hf_module, "_read_safetensors", read)
    return seen


def test_larger_config_than_weights_is_refused_before_allocating(folder: Path,
                                                                 no_allocation: list[str]) -> None:
    # the audit's case: GPT-2-sized claims (here 64 layers of width 4096: 13 B parameters on
    # the meta device, nothing real) beside a tiny weights file
    _edit_config(folder, n_layer=64, n_embd=4096, n_head=32)
    one_line_user_error(lambda: load_hf_gpt2(folder), "transformer.wte.weight has shape (64, 16) but "
              "config.json implies (64, 4096)", "n_layer=64", "n_embd=4096")
    assert no_allocation == []


# HF stores c_attn as (in, out) = (16, 48) for n_embd 16: both shapes in the message are in that
# layout, the file's as it is and the config's as the file should hold it; a stored lm_head must
# have the tied embedding's shape
@pytest.mark.parametrize("name, stored, implied", [
    ("transformer.h.0.attn.c_attn.weight", (16, 40), (16, 48)),
    ("lm_head.weight", (64, 8), (64, 16)),
])
def test_a_tensor_of_another_shape_is_named_in_the_files_layout(
        folder: Path, no_allocation: list[str], name: str, stored: tuple[int, int],
        implied: tuple[int, int]) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name] = torch.zeros(*stored)
    save_file(tensors, str(folder / "model.safetensors"))
    one_line_user_error(lambda: load_hf_gpt2(folder),
              f"{name} has shape {stored} but config.json implies {implied}")
    assert no_allocation == []


def test_more_layers_than_the_file_names_a_missing_tensor(folder: Path,
                                                         no_allocation: list[str]) -> None:
    _edit_config(folder, n_layer=40)
    one_line_user_error(lambda: load_hf_gpt2(folder), "lacks", "h.2.", "n_layer=40")
    assert no_allocation == []


def test_matching_folder_still_loads_bit_for_bit(folder: Path) -> None:
    torch.manual_seed(0)
    original = GPT(SMALL).eval()
    loaded = load_hf_gpt2(folder)
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


# --- config.json fields ------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("layer_norm_epsilon", "abc", "a positive number"),
    ("layer_norm_epsilon", True, "a positive number"),
    ("layer_norm_epsilon", -1.0, "a positive number"),
    ("n_layer", "64", "a positive integer"),
    ("n_embd", 16.5, "a positive integer"),
    ("n_head", True, "a positive integer"),
    ("vocab_size", None, "a positive integer"),
    ("n_positions", 0, "a positive integer"),
    ("n_inner", "x", "null or an integer"),
    ("scale_attn_weights", "no", "true or false"),
    ("tie_word_embeddings", "false", "true or false"),
])
def test_config_field_of_the_wrong_type_isone_line_user_error(field: str, value: Any, expected: str) -> None:
    from gptperf.model.hf import hf_config

    doc = hf_config(SMALL)
    doc[field] = value
    one_line_user_error(lambda: config_from_hf(doc), f"config.json {field}={value!r}", expected)


def test_config_read_from_a_folder_names_the_field(folder: Path) -> None:
    _edit_config(folder, layer_norm_epsilon="abc")
    one_line_user_error(lambda: load_hf_gpt2(folder), "layer_norm_epsilon='abc'", "a positive number")


# --- sharded index ----------------------------------------------------------------------------


def _shard(folder: Path) -> Path:
    """The folder's weights as one shard with an index, as HF writes large models."""
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    index = folder / "model.safetensors.index.json"
    from safetensors import safe_open

    with safe_open(str(folder / "model-00001-of-00001.safetensors"), framework="pt") as f:
        names = list(f.keys())
    index.write_text(json.dumps({"metadata": {}, "weight_map": {
        n: "model-00001-of-00001.safetensors" for n in names}}))
    return index


def test_sharded_folder_loads(folder: Path) -> None:
    _shard(folder)
    torch.manual_seed(0)
    original = GPT(SMALL).eval()
    assert torch.equal(load_hf_gpt2(folder).transformer.wte.weight, original.transformer.wte.weight)


@pytest.mark.parametrize(("weight_map", "needles"), [
    (["model-00001-of-00001.safetensors"], ["weight_map is a list", "an object mapping tensor names to file names"]),
    ("model.safetensors", ["weight_map is a str", "an object mapping tensor names to file names"]),
    ({"wte.weight": 3}, ["weight_map['wte.weight'] is 3", "file names"]),
    ({"wte.weight": "../hf/model-00001-of-00001.safetensors"}, ["weight_map['wte.weight']", "file names"]),
    (None, ["has no weight_map"]),
])
def test_bad_index_isone_line_user_error(folder: Path, weight_map: Any, needles: list[str]) -> None:
    index = _shard(folder)
    index.write_text(json.dumps({} if weight_map is None else {"weight_map": weight_map}))
    one_line_user_error(lambda: load_hf_gpt2(folder), str(index), *needles)


def test_pytorch_bin_with_a_non_tensor_isone_line_user_error(tmp_path: Path) -> None:
    from gptperf.model.hf import hf_config

    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config(SMALL)))
    state: dict[str, Any] = {k: v for k, v in GPT(SMALL).state_dict().items()}
    state["transformer.wte.weight"] = 3
    torch.save(state, folder / "pytorch_model.bin")
    one_line_user_error(lambda: load_hf_gpt2(folder), "'transformer.wte.weight' is a int, not a tensor")


# --- gptperf checkpoints: model_config, empty paths --------------------------------------------


@pytest.mark.parametrize("config", ["hi", ["block_size"], 3])
def test_model_config_that_is_not_a_mapping(tmp_path: Path, config: Any) -> None:
    file = save_checkpoint(tmp_path / "run", model_config=config, model={})
    message = one_line_user_error(lambda: load_checkpoint(file), "model_config must be a mapping of config fields",
                        f"got a {type(config).__name__}")
    assert "'h'" not in message  # not the string's letters as unknown fields
    one_line_user_error(lambda: GPTConfig.from_dict(config), "model_config must be a mapping")


def test_unknown_keys_of_mixed_types_are_listed() -> None:
    one_line_user_error(lambda: GPTConfig.from_dict({"n_layer": 1, 1: 2, "zz": 3}), "unknown config field(s)",
              "1", "'zz'")


@pytest.mark.parametrize("path", ["", " ", "a\0b"])
def test_empty_checkpoint_paths_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            path: str) -> None:
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "ckpt.pt", model_config=SMALL, model=GPT(SMALL).state_dict())
    for call in (lambda: load_checkpoint(path), lambda: load_model(path),
                 lambda: load_hf_gpt2(path),
                 lambda: save_checkpoint(path, model_config=SMALL, model={})):
        one_line_user_error(call, "is not a usable path")
