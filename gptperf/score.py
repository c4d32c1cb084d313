"""The probability of a sentence by the chain rule: P(x_1:n) = P(x_1) · P(x_2 | x_1) ··· P(x_n | x_<n).

One forward pass over [start] + tokens gives every conditional at once: the logits at
position i are the model's distribution for token i + 1 given all tokens up to i (causal
attention sees no further). The first token also needs a context; it is conditioned on a
start token: a newline for the byte tokenizer (the start of a line of the corpus), or
the tokenizer's beginning-of-text token (GPT-2's <|endoftext|>) where it has one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gptperf.errors import UserError
from gptperf.model.gpt import GPT
from gptperf.schema import check_schema

LOG10_E = 1.0 / math.log(10.0)
SCHEMA = "gptperf.score/1"


@dataclass
class TokenScore:
    """One factor of the chain rule: P(token | everything before it)."""

    token: int
    text: str
    logprob: float  # natural log

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prob": self.prob}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenScore:
        return cls(d["token"], d["text"], d["logprob"])


@dataclass
class SentenceScore:
    """log P(sentence) in nats, the sum of its tokens' conditional log-probabilities."""

    text: str
    tokens: list[TokenScore] = field(default_factory=list)

    @property
    def logprob(self) -> float:
        return math.fsum(t.logprob for t in self.tokens)

    @property
    def log10prob(self) -> float:
        return self.logprob * LOG10_E

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)  # may underflow to 0 for long sentences; log10prob does not

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "logprob": self.logprob,
            "log10prob": self.log10prob,
            "prob": self.prob,
            "num_tokens": len(self.tokens),
            "tokens": [t.to_dict() for t in self.tokens],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SentenceScore:
        return cls(d["text"], [TokenScore.from_dict(t) for t in d["tokens"]])


def start_tokens(tokenizer: Any) -> list[int]:
    """The context of the first token: the tokenizer's beginning-of-text token, else a newline."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        return [int(bos)]
    return tokenizer.encode("\n")


@torch.no_grad()
def next_token_logprobs(model: GPT, context: Sequence[int]) -> torch.Tensor:
    """log P(next token | context) over the vocabulary (fp32, on CPU)."""
    device = next(model.parameters()).device
    idx = torch.tensor([list(context)], dtype=torch.long, device=device)
    logits, _ = model(idx, last_logits_only=True)
    return torch.log_softmax(logits[0, -1].float(), dim=-1).cpu()


@torch.no_grad()
def score_tokens(model: GPT, tokens: Sequence[int], start: Sequence[int]) -> list[float]:
    """log P(tokens[i] | start + tokens[:i]) for every i, from one forward pass."""
    tokens, start = list(tokens), list(start)
    if not tokens:
        raise UserError("cannot score an empty sentence; give at least one character")
    if not start:
        raise UserError("the start context is empty; the first token needs at least one token before it")
    length = len(start) + len(tokens) - 1  # the last token is only predicted, never fed
    block_size = model.config.block_size
    if length > block_size:
        raise UserError(
            f"the sentence has {len(tokens)} tokens; with {len(start)} start token(s) it needs a "
            f"context of {length} but the model's block_size is {block_size}"
        )
    device = next(model.parameters()).device
    seq = torch.tensor(start + tokens, dtype=torch.long, device=device)
    logits, _ = model(seq[None, :-1])
    logprobs = torch.log_softmax(logits[0].float(), dim=-1)  # (length, vocab)
    predicted = logprobs[len(start) - 1 :]  # rows that predict tokens[0], tokens[1], ...
    target = seq[len(start) :]
    return predicted.gather(1, target[:, None]).squeeze(1).tolist()


def score_sentences(
    model: GPT, tokenizer: Any, sentences: Sequence[str], *, start: Sequence[int] | None = None
) -> list[SentenceScore]:
    """Score each sentence by the chain rule, its first token conditioned on `start`
    (default: `start_tokens(tokenizer)`)."""
    if not sentences:
        raise UserError("no sentences to score; give at least one")
    start = start_tokens(tokenizer) if start is None else list(start)
    scores = []
    for text in sentences:
        tokens = tokenizer.encode(text)
        if not tokens:
            raise UserError(f"sentence {text!r} is empty; give at least one character")
        logprobs = score_tokens(model, tokens, start)
        scores.append(
            SentenceScore(
                text=text,
                tokens=[
                    TokenScore(token=t, text=tokenizer.token_text(t), logprob=lp)
                    for t, lp in zip(tokens, logprobs, strict=True)
                ],
            )
        )
    return scores


@dataclass
class ScoreResult:
    """Sentences scored from one start context (`score`): what `gptperf score --json` writes."""

    start: list[int]
    start_text: str
    sentences: list[SentenceScore]
    checkpoint: str | None = None  # where the model came from

    def ranking(self) -> list[int]:
        return ranking(self.sentences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "checkpoint": self.checkpoint,
            "formula": "log P(x_1:n) = sum_i log P(x_i | start, x_<i)",
            "start": {"tokens": self.start, "text": self.start_text},
            "units": {"logprob": "nats (natural log)", "log10prob": "log base 10"},
            "sentences": [s.to_dict() for s in self.sentences],
            "ranking": [
                {"rank": r + 1, "index": i, "text": self.sentences[i].text,
                 "logprob": self.sentences[i].logprob}
                for r, i in enumerate(self.ranking())
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreResult:
        """The inverse of `to_dict` (a UserError for another schema)."""
        check_schema(d, SCHEMA)
        return cls(list(d["start"]["tokens"]), d["start"]["text"],
                   [SentenceScore.from_dict(s) for s in d["sentences"]], d["checkpoint"])


def score(model: GPT, tokenizer: Any, sentences: Sequence[str], *,
          checkpoint: str | None = None) -> ScoreResult:
    """Score `sentences` by the chain rule from the tokenizer's start context."""
    start = start_tokens(tokenizer)
    return ScoreResult(start=start, start_text=tokenizer.decode(start),
                       sentences=score_sentences(model, tokenizer, sentences, start=start),
                       checkpoint=checkpoint)


def ranking(scores: Sequence[SentenceScore]) -> list[int]:
    """Indices of `scores`, most probable sentence first."""
    return sorted(range(len(scores)), key=lambda i: -scores[i].logprob)


def scientific(log10p: float) -> str:
    """10**log10p as '3.16e-25', exact even where a float would underflow."""
    if not math.isfinite(log10p):
        return "0"
    exponent = math.floor(log10p)
    mantissa = 10 ** (log10p - exponent)
    if mantissa >= 9.995:  # rounding would print 10.00
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2f}e{exponent:+03d}"
