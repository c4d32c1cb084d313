"""GPT-2 checkpoints in Hugging Face's format: load a `GPT2LMHeadModel` folder into GPT, save GPT as one.

A folder holds `config.json` and the weights as `model.safetensors` (or a sharded
`model.safetensors.index.json`), or as `pytorch_model.bin` (loaded with weights_only=True).
HF GPT-2 keeps its linear layers as `Conv1D`, whose weight is (in, out): the transpose of
`nn.Linear`'s (out, in). Nothing here touches the network.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gptperf.atomic import atomic_dir
from gptperf.errors import UserError
from gptperf.model.config import ATTENTION_IMPLEMENTATIONS, GPTConfig
from gptperf.model.gpt import GPT
from gptperf.safeload import check_finite, load_tensors
from gptperf.writable import check_replaceable_dir, usable_path

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAVED_BY = "saved_by"  # config.json's key naming gptperf in a folder `save_hf_gpt2` wrote
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"

# Conv1D layers: HF stores (in, out), nn.Linear wants (out, in).
_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
# Non-persistent buffers older checkpoints saved: the causal mask and the masking constant.
_IGNORED = (".attn.bias", ".attn.masked_bias")
# The sizes every GPT-2 config.json gives, each a positive integer.
_SIZES = ("n_positions", "n_embd", "n_layer", "n_head", "vocab_size")
# GELU with the tanh approximation, under its two HF names.
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
# Config fields whose non-default value changes the computation in a way GPT does not.
_REQUIRED: dict[str, Any] = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
}


def is_hf_gpt2_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder with a config.json and GPT-2 weights in a known file."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and any(
        (p / f).is_file() for f in (SAFETENSORS_FILE, SAFETENSORS_INDEX, TORCH_FILE)
    )


def _shown(value: Any) -> str:
    """`value` as a message shows it: its repr, cut short (a config field may hold anything)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _invalid(key: str, value: Any, expected: str) -> UserError:
    return UserError(f"config.json {key}={_shown(value)} is not valid; expected {expected}")


def _int_field(hf: dict[str, Any], key: str) -> int:
    value = hf[key]
    # JSON true is a Python bool, an int subclass: not a size
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _invalid(key, value, "a positive integer")
    return value


def _bool_field(hf: dict[str, Any], key: str, default: bool) -> bool:
    value = hf.get(key, default)
    if not isinstance(value, bool):  # bool("false") is True: a string must not pass as a flag
        raise _invalid(key, value, "true or false")
    return value


def _epsilon_field(hf: dict[str, Any], key: str, default: float) -> float:
    value = hf.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise _invalid(key, value, "a positive number")
    return float(value)


def config_from_hf(hf: dict[str, Any], attention: str = "sdpa", name: str = "hf-gpt2") -> GPTConfig:
    """GPTConfig from the fields of an HF GPT-2 config.json; a one-line UserError naming the field,
    its value and what it should be for a value of the wrong type, or what GPT can't represent."""
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise UserError(f"config.json model_type={_shown(model_type)} is not supported; valid: 'gpt2'")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise UserError(f"config.json activation_function={_shown(activation)} is not supported; "
                        f"valid: {', '.join(_ACTIVATIONS)}")
    for key, wanted in _REQUIRED.items():
        if _bool_field(hf, key, wanted) != wanted:
            raise UserError(f"config.json {key}={hf[key]!r} is not supported; gptperf's GPT needs {wanted}")
    if not _bool_field(hf, "tie_word_embeddings", True):
        raise UserError("config.json tie_word_embeddings=false is not supported; GPT ties lm_head to wte")
    missing = [k for k in _SIZES if k not in hf]
    if missing:
        raise UserError(f"config.json lacks {', '.join(missing)}; a GPT-2 config needs them")
    sizes = {k: _int_field(hf, k) for k in _SIZES}
    n_inner = hf.get("n_inner")
    if n_inner is not None:
        if isinstance(n_inner, bool) or not isinstance(n_inner, int):
            raise _invalid("n_inner", n_inner, "null or an integer")
        if n_inner != 4 * sizes["n_embd"]:
            raise UserError(f"config.json n_inner={n_inner} is not supported; valid: null or "
                            f"4*n_embd={4 * sizes['n_embd']}")
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise UserError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTION_IMPLEMENTATIONS)}")
    return GPTConfig(
        block_size=sizes["n_positions"],
        vocab_size=sizes["vocab_size"],
        n_layer=sizes["n_layer"],
        n_head=sizes["n_head"],
        n_embd=sizes["n_embd"],
        attention=attention,
        layer_norm_epsilon=_epsilon_field(hf, "layer_norm_epsilon", 1e-5),
        name=name,
    )


def _safetensors_error(file: Path, err: BaseException) -> UserError:
    return UserError(f"cannot read {file}: {str(err).splitlines()[0]} (truncated or not a "
                     "safetensors file?)")


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError  # deferred: loads safetensors
    from safetensors.torch import load_file  # deferred: loads safetensors

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise _safetensors_error(file, err) from None


def _safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from the file's header alone: no tensor is read."""
    from safetensors import SafetensorError, safe_open  # deferred: loads safetensors

    try:
        with safe_open(str(file), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise _safetensors_error(file, err) from None


def _shards(folder: Path) -> list[Path]:
    """The shard files model.safetensors.index.json names, checked to be files of `folder`."""
    index = folder / SAFETENSORS_INDEX
    try:
        doc = json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {index}: {err}") from None
    mapping = "an object mapping tensor names to file names"
    if not isinstance(doc, dict) or "weight_map" not in doc:
        raise UserError(f"{index} has no weight_map; it must hold one, {mapping}")
    weight_map = doc["weight_map"]
    if not isinstance(weight_map, dict):
        raise UserError(f"{index}: weight_map is a {type(weight_map).__name__}; it must be {mapping}")
    for key, shard in weight_map.items():
        # a plain name: a shard lies beside the index, not elsewhere on the disk
        if not isinstance(shard, str) or not shard or Path(shard).name != shard or shard == "..":
            raise UserError(f"{index}: weight_map[{_shown(key)}] is {_shown(shard)}; it must be "
                            f"{mapping} in {folder}")
    shards = [folder / shard for shard in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise UserError(f"shard {shard} named in {SAFETENSORS_INDEX} is missing")
    return shards


def _open_weights(folder: Path) -> tuple[dict[str, tuple[int, ...]], Callable[[], dict[str, torch.Tensor]]]:
    """The weights' names and shapes, and a function that reads the tensors. Safetensors files
    give their shapes from their headers, so a config can be checked against them before any
    tensor is read or any model allocated; pytorch_model.bin is read whole (its own size)."""
    if (folder / SAFETENSORS_FILE).is_file():
        files = [folder / SAFETENSORS_FILE]
    elif (folder / SAFETENSORS_INDEX).is_file():
        files = _shards(folder)
    elif (folder / TORCH_FILE).is_file():
        state = load_tensors(folder / TORCH_FILE, "weights file",  # tensors and plain data only
                             message="cannot read {path}: {reason}")
        if not isinstance(state, dict):
            raise UserError(f"{folder / TORCH_FILE} holds a {type(state).__name__}, not a state dict")
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise UserError(f"{folder / TORCH_FILE}: {_shown(key)} is a "
                                f"{type(value).__name__}, not a tensor")
        return {k: tuple(v.shape) for k, v in state.items()}, lambda: state
    else:
        raise UserError(
            f"{folder} has no weights; expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or {TORCH_FILE}"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update(_safetensors_shapes(file))

    def read() -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(_read_safetensors(file))
        return state

    return shapes, read


def _strip(key: str) -> str:
    return key[len("transformer."):] if key.startswith("transformer.") else key


def _file_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Each parameter of a GPT of `config` (names without `transformer.`, in the model's order)
    with the shape an HF file stores it in (Conv1D weights as (in, out)). Built on the meta
    device, as gptperf.checkpoint checks its own files: no memory, no initialisation."""
    with torch.device("meta"):
        model = GPT(config)
    return {_strip(name): tuple(p.shape)[::-1] if name.endswith(_CONV1D) else tuple(p.shape)
            for name, p in model.named_parameters()}  # the tied lm_head appears once, as wte


def _check_shapes(config: GPTConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """The weights' names and shapes against those `config` implies; a one-line UserError for
    the first tensor (in the model's order) whose shape differs, then unexpected or missing ones."""
    expected = _file_shapes(config)
    sizes = (f"config.json has n_layer={config.n_layer}, n_head={config.n_head}, "
             f"n_embd={config.n_embd}, n_positions={config.block_size}, "
             f"vocab_size={config.vocab_size}")
    found: dict[str, str] = {}  # name in the model -> key in the file
    unexpected: list[str] = []
    for key in shapes:
        name = _strip(key)
        if name.endswith(_IGNORED):
            continue
        if name in expected or name == "lm_head.weight":  # the tied head, if the file holds it
            found[name] = key
        else:
            unexpected.append(key)
    # the LM head last, as in the model; it has the token embedding's shape
    for name, shape in [*expected.items(), ("lm_head.weight", expected["wte.weight"])]:
        key = found.get(name)
        if key is not None and shapes[key] != shape:
            raise UserError(f"{key} has shape {shapes[key]} but config.json implies {shape}; {sizes}")
    if unexpected:
        raise UserError(f"unexpected tensors in the checkpoint: {', '.join(sorted(unexpected)[:5])}; "
                        f"{sizes}")
    missing = [name for name in expected if name not in found]
    if missing:
        raise UserError(f"checkpoint lacks {len(missing)} tensor(s) that config.json implies, "
                        f"e.g. {missing[0]}; {sizes}")


def load_hf_gpt2(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", attention: str = "sdpa"
) -> GPT:
    """A GPT with the weights of the HF GPT-2 checkpoint folder `path` (fp32, on `device`, eval mode).

    The weights' names and shapes are checked against config.json before the model is
    allocated: a config claiming a far larger model than its weights is refused at once, not
    after allocating that model."""
    folder = usable_path(path, "checkpoint")  # '' is not '.'
    if not folder.is_dir():
        raise UserError(f"checkpoint folder {folder} does not exist; give a folder with {CONFIG_FILE} and weights")
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}; an HF GPT-2 checkpoint folder needs one")
    try:
        hf = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {folder / CONFIG_FILE}: {err}") from None
    if not isinstance(hf, dict):
        raise UserError(f"{folder / CONFIG_FILE} is not a JSON object")
    config = config_from_hf(hf, attention=attention, name=folder.resolve().name)
    shapes, read = _open_weights(folder)
    _check_shapes(config, shapes)
    state = read()
    check_finite(repr(str(folder)), state)

    model = GPT(config)
    params = {_strip(k): p for k, p in model.named_parameters()}  # the tied lm_head appears once, as wte
    with torch.no_grad():
        for key, tensor in state.items():
            name = _strip(key)
            if name.endswith(_IGNORED):
                continue
            if name == "lm_head.weight":  # tied: it must be the token embedding itself
                wte = state.get("transformer.wte.weight", state.get("wte.weight"))
                if wte is not None and not torch.equal(tensor, wte):
                    raise UserError(f"{key} differs from wte.weight; GPT ties the LM head to the token embedding")
                continue
            if name.endswith(_CONV1D):
                tensor = tensor.t()
            params[name].copy_(tensor)  # names and shapes were checked above
    return model.to(device).eval()


def hf_config(config: GPTConfig) -> dict[str, Any]:
    """The config.json of an HF GPT2LMHeadModel with the shape of `config`."""
    gpt2_vocab = config.vocab_size == 50257  # GPT-2's BPE, whose last token is <|endoftext|>
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": 50256 if gpt2_vocab else None,
        "eos_token_id": 50256 if gpt2_vocab else None,
        "torch_dtype": "float32",
    }


def _fsync(file: Path) -> None:
    with open(file, "rb+") as f:
        os.fsync(f.fileno())


def save_hf_gpt2(model: GPT, path: str | os.PathLike[str]) -> Path:
    """Write `model` as an HF GPT-2 folder (config.json + model.safetensors), swapped in whole:
    `path` must be new, empty or an earlier such folder with nothing else in it (a UserError
    otherwise, before anything is written: a folder of the user's is never replaced).

    `transformers.GPT2LMHeadModel.from_pretrained(path)` loads it; the tied LM head is not
    stored (HF ties it again on load). Weights are written in the model's dtype.
    """
    from safetensors.torch import save_file  # deferred: loads safetensors

    path = check_replaceable_dir(path, "path", what="HF GPT-2", marker_file=CONFIG_FILE,
                                 is_ours=lambda doc: isinstance(doc, dict) and doc.get(SAVED_BY) == "gptperf",
                                 written=lambda doc: [SAFETENSORS_FILE])

    tensors: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():  # the tied lm_head.weight is skipped as a duplicate
        t = p.detach()
        if name.endswith(_CONV1D):
            t = t.t()
        tensors[name] = t.contiguous().cpu()
    doc = hf_config(model.config)
    doc["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    doc[SAVED_BY] = "gptperf"  # a later save may replace this folder (HF keeps unknown keys as attributes)
    with atomic_dir(path) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        save_file(tensors, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        for f in (CONFIG_FILE, SAFETENSORS_FILE):
            _fsync(tmp / f)
    return Path(path)


class HFTokenizer:
    """A tokenizer saved beside an HF checkpoint (e.g. GPT-2's BPE), with ByteTokenizer's methods."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer
        self.vocab_size = len(tokenizer)
        self.name = type(tokenizer).__name__
        # GPT-2's <|endoftext|> separates documents: the context a first token is predicted from.
        self.bos_token_id = tokenizer.bos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, tokens: Any) -> str:
        return self.hf.decode(list(tokens), clean_up_tokenization_spaces=False)

    def token_text(self, token: int) -> str:
        return repr(self.decode([token]))[1:-1]


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def has_hf_tokenizer(path: str | os.PathLike[str]) -> bool:
    """Whether the folder `path` holds tokenizer files."""
    return any((Path(path) / f).is_file() for f in _TOKENIZER_FILES)


def load_hf_tokenizer(path: str | os.PathLike[str]) -> HFTokenizer:
    """The tokenizer saved in the HF folder `path` (local files only; needs transformers)."""
    folder = Path(path)
    if not has_hf_tokenizer(folder):
        raise UserError(
            f"{folder} has no tokenizer files ({' or '.join(_TOKENIZER_FILES)}); "
            "save the tokenizer with the model (tokenizer.save_pretrained)"
        )
    try:
        from transformers import AutoTokenizer  # deferred: loads transformers
    except ImportError:
        raise UserError("reading an HF tokenizer needs transformers: pip install transformers") from None
    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the tokenizer in {folder}: {str(err).splitlines()[0]}") from None
