"""HF GPT-2 checkpoints: logits parity with transformers both ways, file formats, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptperf.errors import UserError
from gptperf.model import GPT, GPTConfig
from gptperf.model.hf import load_hf_gpt2, save_hf_gpt2

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# Two shapes: GPT-2's layout scaled down, and another head count, vocabulary and epsilon.
HF_CONFIGS = {
    "small": dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=100),
    "other": dict(n_layer=3, n_head=4, n_embd=48, n_positions=40, vocab_size=256, layer_norm_epsilon=1e-6),
}


def hf_model(name: str, seed: int = 0) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    fields = HF_CONFIGS[name]
    config = transformers.GPT2Config(
        **fields, initializer_range=0.1, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # HF initialises biases and LayerNorms to 0/1: give them values to map
        for n, p in model.named_parameters():
            if n.endswith("bias") or ".ln_" in n:
                p.add_(0.05 * torch.randn_like(p))
    return model


def tokens(vocab: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(seed))


def save_bin(model: transformers.GPT2LMHeadModel, folder: Path, hub_layout: bool = False) -> None:
    """pytorch_model.bin as transformers 4 wrote it; `hub_layout`: the original GPT-2 upload's
    keys (no `transformer.` prefix, the causal-mask buffers, the tied lm_head stored too)."""
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if hub_layout:
        state = {k.removeprefix("transformer."): v for k, v in state.items()}
        n = model.config.n_positions
        for i in range(model.config.n_layer):
            state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
            state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, folder / "pytorch_model.bin")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("shape", list(HF_CONFIGS))
@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_load_safetensors_matches_transformers(tmp_path: Path, shape: str, attention: str) -> None:
    hf = hf_model(shape)
    hf.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    ours = load_hf_gpt2(tmp_path / "ckpt", attention=attention)
    assert ours.config.attention == attention
    assert ours.config.block_size == hf.config.n_positions
    assert ours.config.layer_norm_epsilon == hf.config.layer_norm_epsilon
    idx = tokens(hf.config.vocab_size, hf.config.n_positions)
    with torch.no_grad():
        ref = hf(idx).logits
        got, _ = ours(idx)
    assert ref.std() > 0.1  # logits that actually depend on the weights
    assert max_diff(got, ref) <= 1e-4


@pytest.mark.parametrize("hub_layout", [False, True])
def test_load_pytorch_bin_matches_transformers(tmp_path: Path, hub_layout: bool) -> None:
    hf = hf_model("small", seed=3)
    save_bin(hf, tmp_path / "ckpt", hub_layout=hub_layout)
    ours = load_hf_gpt2(tmp_path / "ckpt", attention="math")
    idx = tokens(100, 64)
    with torch.no_grad():
        assert max_diff(ours(idx)[0], hf(idx).logits) <= 1e-4


@pytest.mark.parametrize("shape", list(HF_CONFIGS))
def test_save_loads_in_transformers(tmp_path: Path, shape: str) -> None:
    fields = HF_CONFIGS[shape]
    torch.manual_seed(5)
    ours = GPT(
        GPTConfig(
            block_size=fields["n_positions"], vocab_size=fields["vocab_size"], n_layer=fields["n_layer"],
            n_head=fields["n_head"], n_embd=fields["n_embd"],
            layer_norm_epsilon=fields.get("layer_norm_epsilon", 1e-5),
        )
    ).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_hf_gpt2(ours, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = tokens(fields["vocab_size"], fields["n_positions"])
    with torch.no_grad():
        ref, _ = ours(idx)
        assert max_diff(hf(idx).logits, ref) <= 1e-4
    # and back into gptperf: bitwise the same weights
    again = load_hf_gpt2(tmp_path / "out")
    for (n, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_save_replaces_whole_folder_and_failure_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "notes.txt").write_text("a user's own")
    with pytest.raises(UserError, match="is not a gptperf HF GPT-2 folder"):
        save_hf_gpt2(model, target)  # a folder of the user's is not replaced
    (target / "notes.txt").unlink()
    downloaded = tmp_path / "downloaded"  # an HF GPT-2 folder gptperf did not write
    downloaded.mkdir()
    (downloaded / "config.json").write_text('{"model_type": "gpt2"}')
    (downloaded / "model.safetensors").write_bytes(b"the user's weights")
    with pytest.raises(UserError, match="is not a gptperf HF GPT-2 folder"):
        save_hf_gpt2(model, downloaded)
    assert (downloaded / "model.safetensors").read_bytes() == b"the user's weights"
    save_hf_gpt2(model, target)  # an empty one is
    (target / "notes.txt").write_text("a user's own, beside an earlier save")
    with pytest.raises(UserError, match="holds 'notes.txt'"):
        save_hf_gpt2(model, target)
    (target / "notes.txt").unlink()
    save_hf_gpt2(model, target)  # an earlier save alone is replaced
    before = (target / "model.safetensors").read_bytes()

    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_hf_gpt2(model, target)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "downloaded"]  # no temporary left


def one_line_error(path: Path, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as err:
        load_hf_gpt2(path)
    assert "\n" not in str(err.value)


def test_missing_folder_config_or_weights(tmp_path: Path) -> None:
    one_line_error(tmp_path / "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "no config.json")
    hf_model("small").config.save_pretrained(tmp_path / "config_only")
    one_line_error(tmp_path / "config_only", "has no weights")


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    model = hf_model("small")
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "ckpt")
    one_line_error(tmp_path / "ckpt", r"h\.0\.attn\.c_attn\.weight holds 1 NaN or infinite value")


def test_truncated_safetensors(tmp_path: Path) -> None:
    hf_model("small").save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    one_line_error(tmp_path / "ckpt", "cannot read .*model.safetensors")


def test_truncated_pytorch_bin(tmp_path: Path) -> None:
    save_bin(hf_model("small"), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    one_line_error(tmp_path / "ckpt", "cannot read .*pytorch_model.bin")


def test_shape_mismatch(tmp_path: Path) -> None:
    hf_model("small").save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["n_positions"] = 128
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    one_line_error(tmp_path / "ckpt", r"wpe.weight has shape \(64, 32\) but config.json implies \(128, 32\)")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("activation_function", "relu"),
        ("scale_attn_by_inverse_layer_idx", True),
        ("reorder_and_upcast_attn", True),
        ("scale_attn_weights", False),
        ("n_inner", 100),
        ("tie_word_embeddings", False),
        ("model_type", "llama"),
    ],
)
def test_unsupported_config_names_the_field(tmp_path: Path, field: str, value: object) -> None:
    hf_model("small").save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config[field] = value
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    one_line_error(tmp_path / "ckpt", field)
