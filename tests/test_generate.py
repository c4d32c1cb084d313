"""Generation: KV cache = recompute (tokens and logits), sampling options, streaming text, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptperf.data.tokenizer import ByteTokenizer
from gptperf.errors import UserError
from gptperf.generate import TextStream, generate, generate_batch, stream_logits
from gptperf.model import GPT, GPTConfig

BLOCK = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def peaked_model(attention: str = "sdpa", seed: int = 0, block_size: int = BLOCK, scale: bool = True) -> GPT:
    """A random model with larger weights: its greedy continuations vary (at 0.02 init they repeat
    one token) and the top two logits stay apart (gaps ~1e-2 against fp32 differences ~1e-6)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=256, n_layer=2, n_head=4, n_embd=32,
                          attention=attention)).eval()
    if scale:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2:
                    p.mul_(3.0 if name == "transformer.wte.weight" else 10.0)
    return model


def prompt_of(length: int, seed: int = 3) -> list[int]:
    return torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("attention", ["math", "sdpa"])
@pytest.mark.parametrize("prompt_len", [1, 5, 17, BLOCK])
def test_kv_cache_gives_the_recompute_tokens_and_logits(attention: str, prompt_len: int) -> None:
    model = peaked_model(attention)
    prompt = prompt_of(prompt_len)
    n = BLOCK - prompt_len + 1  # every step whose context still fits block_size
    cached = list(stream_logits(model, prompt, n, temperature=0, use_kv_cache=True))
    plain = list(stream_logits(model, prompt, n, temperature=0, use_kv_cache=False))
    assert [int(t) for t, _ in cached] == [int(t) for t, _ in plain]
    for (_, a), (_, b) in zip(cached, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    assert list(generate(model, prompt, n, temperature=0)) == [int(t) for t, _ in plain]
    assert len({int(t) for t, _ in plain}) > 1 or n == 1  # not a degenerate constant stream


def test_generation_past_block_size() -> None:
    model = peaked_model(block_size=16)
    prompt = prompt_of(10)
    cached = list(generate(model, prompt, 40, temperature=0, use_kv_cache=True))
    plain = list(generate(model, prompt, 40, temperature=0, use_kv_cache=False))
    assert len(cached) == len(plain) == 40
    fits = 16 - 10 + 1  # identical while the context fits; then the cache restarts from half a block
    assert cached[:fits] == plain[:fits]
    assert all(0 <= t < 256 for t in cached)


def test_cache_rebuild_keeps_the_last_half_block() -> None:
    """After the rebuild the cached path predicts from exactly the last block_size // 2 tokens."""
    model = peaked_model(block_size=16)
    prompt = prompt_of(16)
    steps = list(stream_logits(model, prompt, 3, temperature=0, use_kv_cache=True))
    context = prompt + [int(steps[0][0])]
    with torch.no_grad():
        expected, _ = model(torch.tensor([context[-8:]]))
    assert torch.allclose(steps[1][1][0], expected[0, -1], atol=1e-5, rtol=0)


def test_batched_generation_equals_one_at_a_time() -> None:
    model = peaked_model()
    prompts = torch.tensor([prompt_of(6, seed=s) for s in range(3)])
    for use_kv_cache in (True, False):
        out = generate_batch(model, prompts, 12, temperature=0, use_kv_cache=use_kv_cache)
        assert out.shape == (3, 18)
        assert torch.equal(out[:, :6], prompts)
        for row in range(3):
            assert out[row, 6:].tolist() == list(generate(model, prompts[row].tolist(), 12, temperature=0))


def test_sampling_is_seeded_and_respects_top_k() -> None:
    model = peaked_model(scale=False)  # flat distributions: sampling really varies
    prompt = prompt_of(4)

    def sample(seed: int, **kw) -> list[int]:
        return list(generate(model, prompt, 20, generator=torch.Generator().manual_seed(seed), **kw))

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    assert sample(1, top_k=1) == list(generate(model, prompt, 20, temperature=0))
    steps = stream_logits(model, prompt, 20, top_k=3, generator=torch.Generator().manual_seed(0))
    for token, logits in steps:
        assert int(token) in logits[0].topk(3).indices.tolist()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(max_new_tokens=0), "from 1 to 1000000"),
        (dict(max_new_tokens=10**14), "from 1 to 1000000, got 100000000000000"),
        (dict(temperature=-0.5), "temperature must be a finite number >= 0"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "finite"),
        (dict(top_k=0), "top-k"),
        (dict(prompt_tokens=[]), "empty"),
        (dict(prompt_tokens=[1] * (BLOCK + 1)), "block_size is 32"),
        (dict(prompt_tokens=[256]), "out of range"),
    ],
)
def test_bad_generation_arguments(kwargs: dict, needle: str) -> None:
    args = dict(prompt_tokens=[1, 2], max_new_tokens=3) | kwargs
    with pytest.raises(UserError, match=needle):
        list(generate(peaked_model(), **args))


class PairTokenizer:
    """Not the byte tokenizer: each token is two bytes, so characters split at odd places."""

    vocab_size = 65536

    def decode(self, tokens):
        data = b"".join(t.to_bytes(2, "big") for t in tokens)
        return data.decode("utf-8", errors="replace")


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), PairTokenizer()])
def test_text_stream_never_splits_a_character(tokenizer) -> None:
    text = "héllo → 日本語 🙂!"
    data = text.encode("utf-8")
    if isinstance(tokenizer, PairTokenizer):
        data += b" " * (len(data) % 2)
        text = data.decode()
        tokens = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    else:
        tokens = list(data)
    stream = TextStream(tokenizer)
    pieces = [stream.push(t) for t in tokens] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) > 5  # it streamed, rather than holding everything back


# --- the `gptperf generate` command ------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from gptperf.model.hf import save_hf_gpt2

    folder = tmp_path_factory.mktemp("gen") / "model"
    save_hf_gpt2(peaked_model(), folder)
    return folder


def cli(argv: list[str]) -> int:
    from gptperf.cli import main

    return main(argv)


def test_cli_streams_text_and_reports_speed(checkpoint: Path, capsys) -> None:
    assert cli(["generate", "--checkpoint", str(checkpoint), "--prompt", "Once", "--tokens", "12",
                "--temperature", "0", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Once")
    assert "12 tokens in" in err and "tokens/s" in err and "KV cache on" in err and "cpu" in err


def test_cli_reads_a_training_checkpoint(tmp_path: Path, capsys) -> None:
    from gptperf.checkpoint import save_checkpoint

    model = peaked_model()
    save_checkpoint(tmp_path / "out", model_config=model.config, model=model.state_dict())
    assert cli(["generate", "--checkpoint", str(tmp_path / "out"), "--prompt", "ab", "--tokens", "8",
                "--temperature", "0", "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["token_ids"] == list(generate(model, [97, 98], 8, temperature=0))


def test_cli_json_is_the_same_with_and_without_cache(checkpoint: Path, capsys) -> None:
    docs = []
    for extra in ([], ["--no-kv-cache"]):
        assert cli(["generate", "--checkpoint", str(checkpoint), "--prompt", "ab", "--tokens", "10",
                    "--temperature", "0", "--device", "cpu", "--json", *extra]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    with_cache, without = docs
    for key in ("prompt", "text", "tokens", "tokens_per_s", "kv_cache", "device"):
        assert key in with_cache
    assert with_cache["kv_cache"] is True and without["kv_cache"] is False
    assert with_cache["tokens"] == 10 and with_cache["tokens_per_s"] > 0
    assert with_cache["token_ids"] == without["token_ids"]
    assert with_cache["text"] == ByteTokenizer().decode(with_cache["token_ids"])


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_fast_generation_gives_the_cached_tokens_past_block_size(attention: str) -> None:
    """The fast path (static KV cache; eager here, so no compile) streams generate's greedy tokens,
    through two cache rebuilds past block_size."""
    from gptperf.generate import fast_decoder, generate_fast
    from gptperf.plan import ExecutionPlan

    model = peaked_model(attention)
    plan = ExecutionPlan("eager", attention, static_cache=True)
    dec = fast_decoder(model, temperature=0, plan=plan)
    assert dec.plan == plan
    prompt = prompt_of(5)
    n = 2 * BLOCK + 7
    assert list(generate_fast(dec, prompt, n)) == list(generate(model, prompt, n, temperature=0))
    with pytest.raises(UserError, match="static KV cache"):
        fast_decoder(model, plan=ExecutionPlan.eager(attention))


@pytest.mark.parametrize("graph_steps", [3, 8])
def test_fast_generation_in_runs_of_steps_gives_the_same_tokens(graph_steps: int) -> None:
    """Read back a run of steps at a time (as graphs of `graph_steps` steps are on a GPU), the
    streamed tokens are the one-at-a-time ones, through cache rebuilds at runs cut short by the
    cache's end and by the token count."""
    from gptperf.generate import fast_decoder, generate_fast
    from gptperf.plan import ExecutionPlan

    model = peaked_model("sdpa")
    dec = fast_decoder(model, temperature=0, plan=ExecutionPlan("eager", "sdpa", static_cache=True))
    assert dec.graph_steps == 1  # no graph on a CPU: one step a run
    prompt, n = prompt_of(5), 2 * BLOCK + 7
    one_at_a_time = list(generate_fast(dec, prompt, n))
    dec.graph_steps = graph_steps
    assert list(generate_fast(dec, prompt, n)) == one_at_a_time
    assert list(generate_fast(dec, prompt, 1)) == one_at_a_time[:1]


def test_cli_fast_records_its_plan_and_gives_the_eager_tokens(checkpoint: Path, capsys, monkeypatch) -> None:
    """--fast on a CPU compiles the static-cache step (compiling is swapped for the step itself
    here, to stay fast): the JSON records the plan that ran, and greedy tokens are the eager ones."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    docs = {}
    for flag in ("--fast", "--no-fast"):
        assert cli(["generate", "--checkpoint", str(checkpoint), "--prompt", "ab", "--tokens", "40",
                    "--temperature", "0", "--device", "cpu", "--json", flag]) == 0
        docs[flag] = json.loads(capsys.readouterr().out)
    fast, eager = docs["--fast"], docs["--no-fast"]
    assert len(compiled) == 1  # the fast decode step, once
    assert fast["plan"]["mode"] == "compiled" and fast["plan"]["static_cache"] is True
    assert eager["plan"]["mode"] == "eager" and eager["plan"]["static_cache"] is False
    assert fast["token_ids"] == eager["token_ids"] and fast["compile_s"] >= 0
    assert fast["graph_steps"] is None and eager["graph_steps"] is None  # no CUDA graph on a CPU
    assert cli(["generate", "--checkpoint", str(checkpoint), "--device", "cpu", "--fast",
                "--no-kv-cache"]) == 2
    assert "--no-kv-cache" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tokens", "0"], "argument --tokens: must be an integer >= 1, got 0"),
        (["--tokens", "1000001"], "from 1 to 1000000"),
        (["--top-k", "0"], "argument --top-k"),
        (["--temperature", "-1"], "temperature"),
        (["--prompt", "x" * (BLOCK + 1)], "block_size"),
        (["--prompt", ""], "empty"),
        (["--checkpoint", "/no/such/dir"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(checkpoint: Path, capsys, args: list[str], needle: str) -> None:
    try:
        status = cli(["generate", "--checkpoint", str(checkpoint), "--device", "cpu", *args])
    except SystemExit as exc:  # argparse's refusal of a flag's value
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def write_bpe_tokenizer(folder: Path) -> int:
    """A GPT-2-style byte-level BPE (256 byte symbols, 3 merges, <|endoftext|>) in `folder`."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):  # GPT-2's bytes_to_unicode
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b], extra = chr(256 + extra), extra + 1
    vocab = {symbols[b]: b for b in range(256)}
    merges = [("t", "h"), ("th", "e"), ("Ġ", "t")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return len(vocab)


def test_cli_uses_the_tokenizer_saved_with_an_hf_checkpoint(tmp_path: Path, capsys) -> None:
    pytest.importorskip("transformers")
    from gptperf.model.hf import save_hf_gpt2

    folder = tmp_path / "model"
    torch.manual_seed(0)
    save_hf_gpt2(GPT(GPTConfig(block_size=32, vocab_size=260, n_layer=1, n_head=2, n_embd=16)), folder)
    assert write_bpe_tokenizer(folder) == 260
    assert cli(["generate", "--checkpoint", str(folder), "--prompt", "the théâtre", "--tokens", "6",
                "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    from gptperf.model.hf import load_hf_tokenizer

    tokenizer = load_hf_tokenizer(folder)
    assert doc["prompt_tokens"] == len(tokenizer.encode("the théâtre")) < len("the théâtre".encode())
    assert doc["text"] == tokenizer.decode(doc["token_ids"])
    assert cli(["score", "the the", "--checkpoint", str(folder), "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["start"]["tokens"] == [259]  # <|endoftext|>, not a newline
    assert [t["token"] for t in doc["sentences"][0]["tokens"]] == tokenizer.encode("the the")


def test_text_that_is_not_utf8_is_one_line_naming_it() -> None:
    from gptperf.data.tokenizer import ByteTokenizer

    # what an argument of bytes that are not UTF-8 becomes in Python: surrogate escapes
    text = b"ab\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(UserError, match=r"not UTF-8 \(b'\\xff' at character 2\)"):
        ByteTokenizer().encode(text)


# --- the library's timed generation (what `gptperf generate` runs) ---------------------------


def test_run_generation_result_is_consistent() -> None:
    """run_generation on a CPU with a tiny model: the streamed pieces add up to the text, the text
    is the tokens' decoding, the rates are positive and finite, and the document carries the
    schema, every field `gptperf generate --json` writes, and survives JSON."""
    import math

    from gptperf.generate import GenerationResult, run_generation
    from gptperf.model.config import preset

    torch.manual_seed(0)
    model = GPT(preset("tiny", n_layer=1, n_embd=32, n_head=2)).eval()
    events: list[str] = []
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        events.append("text")
        pieces.append(piece)

    r = run_generation(model, ByteTokenizer(), "héllo", 24, temperature=1.0, top_k=40, seed=7,
                       fast=False, checkpoint="mem", on_start=lambda: events.append("start"),
                       on_text=on_text)
    assert isinstance(r, GenerationResult)
    assert events[0] == "start" and events.count("start") == 1 and "text" in events
    assert r.tokens == len(r.token_ids) == 24 and r.prompt_tokens == len("héllo".encode())
    assert "".join(pieces) == r.text == ByteTokenizer().decode(r.token_ids)
    assert all(0 <= t < 256 for t in r.token_ids)
    assert 0 < r.time_to_first_token_s <= r.elapsed_s
    for rate in (r.tokens_per_s, r.decode_tokens_per_s):
        assert rate is not None and math.isfinite(rate) and rate > 0
    assert r.kv_cache and r.compile_s is None and r.graph_steps is None and r.plan.label
    assert r.device.startswith("cpu: ")

    doc = json.loads(json.dumps(r.to_dict()))
    assert doc["schema"] == GenerationResult.SCHEMA == "gptperf.generate/1"
    assert list(doc) == ["schema", "checkpoint", "prompt", "text", "tokens", "token_ids",
                         "prompt_tokens", "elapsed_s", "time_to_first_token_s", "tokens_per_s",
                         "decode_tokens_per_s", "kv_cache", "plan", "graph_steps", "compile_s",
                         "temperature", "top_k", "seed", "device", "config", "environment"]
    assert doc["tokens"] == 24 and doc["tokens_per_s"] == r.tokens_per_s
    assert doc["checkpoint"] == "mem" and doc["seed"] == 7 and doc["top_k"] == 40
    assert doc["config"] == model.config.to_dict() and doc["plan"] == r.plan.to_dict()

    # the seed alone decides the tokens, with or without the cache and with no callbacks
    again = run_generation(model, ByteTokenizer(), "héllo", 24, temperature=1.0, top_k=40, seed=7,
                           use_kv_cache=False)
    assert again.token_ids == r.token_ids and not again.kv_cache
    greedy = run_generation(model, ByteTokenizer(), "ab", 5, temperature=0)
    assert greedy.token_ids == tuple(generate(model, [97, 98], 5, temperature=0))
    assert greedy.decode_tokens_per_s is not None


def test_run_generation_refusals_and_a_callback_that_stops_it() -> None:
    from gptperf.generate import run_generation
    from gptperf.model.config import preset

    torch.manual_seed(0)
    model = GPT(preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=8)).eval()
    with pytest.raises(UserError, match="block_size is 8"):
        run_generation(model, ByteTokenizer(), "x" * 9, 2)
    with pytest.raises(UserError, match="static KV cache"):
        run_generation(model, ByteTokenizer(), "x", 2, fast=True, use_kv_cache=False)
    with pytest.raises(UserError, match="from 1 to"):
        run_generation(model, ByteTokenizer(), "x", 0)

    class Enough(Exception):
        pass

    seen: list[str] = []

    def stop(piece: str) -> None:
        seen.append(piece)
        raise Enough

    with pytest.raises(Enough):  # what the callback raises ends the generation and passes through
        run_generation(model, ByteTokenizer(), "x", 50, temperature=0, on_text=stop)
    assert len(seen) == 1
