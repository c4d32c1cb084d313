"""Scoring by the chain rule: per-token conditionals, sentence totals, ranking, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gptperf.data.tokenizer import ByteTokenizer
from gptperf.errors import UserError
from gptperf.model import GPT, GPTConfig
from gptperf.score import (
    next_token_logprobs,
    ranking,
    scientific,
    score_sentences,
    score_tokens,
    start_tokens,
)

HOME = "There's no place like home"
SCRAMBLED = "There's no home place like"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_model(attention: str = "sdpa", block_size: int = 64) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=256, n_layer=2, n_head=4, n_embd=32,
                          attention=attention)).eval()
    with torch.no_grad():  # larger weights: conditionals far from uniform, so the test can tell
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    return model


@pytest.fixture(scope="module")
def trained_model() -> GPT:
    """A tiny model fitted for a few seconds to lines of the lecture's sentence."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = GPT(GPTConfig(block_size=32, vocab_size=256, n_layer=1, n_head=2, n_embd=32))
    data = torch.tensor(list(("\n" + HOME).encode() * 40))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        starts = torch.randint(0, len(data) - 33, (16,))
        x = torch.stack([data[s : s + 32] for s in starts])
        y = torch.stack([data[s + 1 : s + 33] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_chain_rule_equals_independent_prefix_scores(attention: str) -> None:
    model = random_model(attention)
    tok = ByteTokenizer()
    [score] = score_sentences(model, tok, [HOME])
    start = start_tokens(tok)
    tokens = tok.encode(HOME)
    independent = []  # one forward pass per prefix: P(x_i | start, x_<i) computed on its own
    for i, t in enumerate(tokens):
        logprobs = next_token_logprobs(model, start + tokens[:i])
        assert abs(logprobs.exp().sum().item() - 1.0) <= 1e-5  # a distribution over the vocabulary
        independent.append(logprobs[t].item())
    assert [t.logprob for t in score.tokens] == pytest.approx(independent, abs=1e-5)
    assert score.logprob == pytest.approx(math.fsum(independent), abs=1e-4)
    assert score.logprob == pytest.approx(math.fsum(t.logprob for t in score.tokens), abs=1e-9)
    assert [t.token for t in score.tokens] == tokens
    assert all(0 < t.prob < 1 for t in score.tokens)
    assert max(t.logprob for t in score.tokens) - min(t.logprob for t in score.tokens) > 1.0


def test_start_token_is_a_newline_for_bytes_and_bos_where_there_is_one() -> None:
    assert start_tokens(ByteTokenizer()) == [10]

    class WithBos(ByteTokenizer):
        bos_token_id = 7

    assert start_tokens(WithBos()) == [7]
    model = random_model()
    first = score_tokens(model, [65], [10])[0]
    assert first == pytest.approx(next_token_logprobs(model, [10])[65].item(), abs=1e-6)
    assert first != pytest.approx(score_tokens(model, [65], [7])[0], abs=1e-3)  # context matters


def test_trained_model_prefers_the_real_sentence(trained_model: GPT) -> None:
    scores = score_sentences(trained_model, ByteTokenizer(), [SCRAMBLED, HOME])
    assert ranking(scores) == [1, 0]
    assert scores[1].logprob > scores[0].logprob + 5  # nats: clearly, not marginally
    assert len(scores[0].tokens) == len(scores[1].tokens) == len(HOME.encode())


def test_scientific_notation_beyond_float_range() -> None:
    assert scientific(-2.5) == "3.16e-03"
    assert scientific(-400.0) == "1.00e-400"
    assert scientific(math.log10(0.99999)) == "1.00e+00"


@pytest.mark.parametrize(
    ("sentences", "needle"),
    [([], "no sentences"), ([""], "empty"), (["x" * 65], "block_size is 64")],
)
def test_bad_sentences(sentences: list[str], needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        score_sentences(random_model(), ByteTokenizer(), sentences)


def test_longest_sentence_that_fits() -> None:
    # 1 start token + 64 tokens: the last is only predicted, never fed, so the context is 64
    [score] = score_sentences(random_model(), ByteTokenizer(), ["y" * 64])
    assert len(score.tokens) == 64


# --- the `gptperf score` command ---------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, trained_model: GPT) -> Path:
    from gptperf.model.hf import save_hf_gpt2

    return save_hf_gpt2(trained_model, tmp_path_factory.mktemp("score") / "model")


def cli(argv: list[str]) -> int:
    from gptperf.cli import main

    return main(argv)


def test_cli_json(checkpoint: Path, capsys) -> None:
    assert cli(["score", HOME, SCRAMBLED, "--checkpoint", str(checkpoint), "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["text"] for s in doc["sentences"]] == [HOME, SCRAMBLED]
    assert doc["start"] == {"tokens": [10], "text": "\n"}
    for s in doc["sentences"]:
        assert s["logprob"] == pytest.approx(sum(t["logprob"] for t in s["tokens"]), abs=1e-6)
        assert {"token", "text", "logprob", "prob"} <= set(s["tokens"][0])
    assert [r["text"] for r in doc["ranking"]] == [HOME, SCRAMBLED]


def test_cli_tables(checkpoint: Path, capsys) -> None:
    assert cli(["score", HOME, SCRAMBLED, "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "ranked" in out and "P(token | context)" in out and "nats" in out and "start token" in out


def test_cli_missing_checkpoint(tmp_path: Path, capsys) -> None:
    assert cli(["score", HOME, "--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
