"""Autoregressive sampling, with a KV cache (one new token per forward pass) or without one.

Without the cache every new token recomputes the whole context, cropped to block_size as in
nanoGPT: the lecture's picture of decoding. With the cache the prompt is prefilled once and
each step feeds only the token just produced; the keys and values of the past are read back.

The position embedding is absolute, so a cache can't slide: once the context would pass
block_size, the cache is rebuilt from the last block_size // 2 tokens (one re-prefill every
block_size // 2 new tokens). Up to that point both paths see the same context and greedy
decoding gives the same tokens; after it the recompute path keeps a full block_size window
and the two may diverge.

`fast_decoder` + `generate_fast` run the same cached decoding on the fast path (static KV cache;
on a GPU gptperf's fused decode kernels replayed as CUDA graphs, on a CPU a compiled step:
`gptperf.steps.fast_decode`), `gptperf generate`'s default on CUDA.

`run_generation` is `gptperf generate`'s work: it picks the path and plan, seeds, builds the
decoder, streams the text as it is decoded and times it, returning a `GenerationResult`.
"""

from __future__ import annotations

import codecs
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from gptperf.checkpoint import load_model
from gptperf.data.tokenizer import ByteTokenizer
from gptperf.envinfo import device_name, environment
from gptperf.errors import UserError
from gptperf.model.attention import KVCache
from gptperf.model.gpt import GPT
from gptperf.model.hf import has_hf_tokenizer, is_hf_gpt2_dir, load_hf_gpt2, load_hf_tokenizer
from gptperf.plan import ExecutionPlan
from gptperf.runtime import resolve_device, synchronize
from gptperf.steps.build import runnable_plan
from gptperf.steps.fast_decode import FastDecoder

if TYPE_CHECKING:
    from gptperf.model.config import GPTConfig


# New tokens one call may ask for: far past any use (an hour of CPU decoding), and small enough
# that a typo's 10**14 is refused at once instead of running until killed.
MAX_NEW_TOKENS = 1_000_000


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    """UserError for a token count not in 1..MAX_NEW_TOKENS, a temperature that is negative or
    not finite, or a non-positive top-k."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 0 < max_new_tokens <= MAX_NEW_TOKENS:
        raise UserError(f"number of new tokens must be an integer from 1 to {MAX_NEW_TOKENS}, "
                        f"got {max_new_tokens!r}")
    if not 0 <= temperature < math.inf:  # also rejects NaN
        raise UserError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k <= 0:
        raise UserError(f"top-k must be a positive integer (or unset), got {top_k}")


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Next tokens (B,) from last-position logits (B, vocab): argmax if temperature == 0."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def _growing_context_attention() -> Any:
    """SDPA without the cuDNN backend, which builds a new plan (hundreds of µs) for every new
    context length: a cached decode step, whose context grows by one each time, never reuses one."""
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _as_batch(model: GPT, prompt: Sequence[int] | torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    idx = torch.as_tensor(prompt, dtype=torch.long, device=device)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise UserError("the prompt is empty; give at least one token")
    block_size, vocab = model.config.block_size, model.config.vocab_size
    if idx.size(1) > block_size:
        raise UserError(
            f"the prompt has {idx.size(1)} tokens but the model's block_size is {block_size}; "
            f"use at most {block_size}"
        )
    if int(idx.min()) < 0 or int(idx.max()) >= vocab:
        raise UserError(f"prompt token out of range; valid tokens are 0..{vocab - 1}")
    return idx


@torch.no_grad()
def stream_logits(
    model: GPT,
    prompt: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    use_kv_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (next tokens (B,), the logits (B, vocab) they were drawn from), one step at a time.

    `prompt` is a list of token ids or a (B, T) tensor of equally long prompts.
    """
    check_sampling(max_new_tokens, temperature, top_k)
    idx = _as_batch(model, prompt)
    block_size = model.config.block_size
    cache: KVCache | None = None
    if use_kv_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(model.config, idx.size(0), device=idx.device, dtype=dtype)
        with _growing_context_attention():
            logits, _ = model(idx, kv_cache=cache, last_logits_only=True)  # prefill
    for step in range(max_new_tokens):
        if cache is None:
            logits, _ = model(idx[:, -block_size:], last_logits_only=True)
        elif step > 0:
            with _growing_context_attention():
                if cache.length == block_size:  # full: rebuild from the last half (module docstring)
                    cache.reset()
                    keep = max(1, block_size // 2)
                    logits, _ = model(idx[:, -keep:], kv_cache=cache, last_logits_only=True)
                else:
                    logits, _ = model(idx[:, -1:], kv_cache=cache, last_logits_only=True)
        last = logits[:, -1, :]
        token = sample_next(last, temperature, top_k, generator)
        idx = torch.cat([idx, token[:, None]], dim=1)
        yield token, last


def generate(
    model: GPT,
    prompt_tokens: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    use_kv_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Stream `max_new_tokens` new token ids continuing `prompt_tokens` (greedy when temperature == 0)."""
    for token, _ in stream_logits(
        model, list(prompt_tokens), max_new_tokens, temperature=temperature, top_k=top_k,
        use_kv_cache=use_kv_cache, generator=generator,
    ):
        yield int(token[0])


def generate_batch(
    model: GPT,
    prompts: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    use_kv_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T) equally long prompts -> (B, T + max_new_tokens) prompts with their continuations."""
    out = [torch.as_tensor(prompts, dtype=torch.long)]
    out[0] = out[0].to(next(model.parameters()).device)
    for token, _ in stream_logits(
        model, out[0], max_new_tokens, temperature=temperature, top_k=top_k,
        use_kv_cache=use_kv_cache, generator=generator,
    ):
        out.append(token[:, None])
    return torch.cat(out, dim=1)


def fast_decoder(model: GPT, *, temperature: float = 1.0, top_k: int | None = None,
                 plan: ExecutionPlan | None = None) -> FastDecoder:
    """A FastDecoder for batch-1 generation with `model`, compiled where its plan compiles and
    its graph captured now (not inside the first token's time). `plan` (default: the fast decode
    plan for the model's device) must have the static cache; its one-row and fused kernels are
    dropped where Triton cannot run."""
    check_sampling(1, temperature, top_k)
    device = next(model.parameters()).device
    if plan is None:
        plan = ExecutionPlan.default("decode", device.type, fast=True, attention=model.config.attention)
    plan.check("decode")
    if not plan.static_cache:
        raise UserError(f"the fast decoder runs with the static KV cache; plan {plan.label!r} has none")
    plan, _ = runnable_plan(plan, device, 1)
    dec = FastDecoder(model, 1, model.config.block_size, temperature=temperature, top_k=top_k,
                      compile=plan.compiled, cuda_graph=plan.cuda_graph,
                      one_row_kernel=plan.one_row_kernel, fused=plan.fused_decode)
    if plan.compiled or dec.fused:
        dec.warmup()
    return dec


@torch.no_grad()
def generate_fast(dec: FastDecoder, prompt_tokens: Sequence[int], max_new_tokens: int) -> Iterator[int]:
    """Stream new token ids as `generate` does, the decode steps FastDecoder's (`run`: CUDA-graph
    replays of `dec.graph_steps` steps on a GPU). Past block_size the cache is rebuilt from the
    last block_size // 2 tokens, as `generate`'s cache is, so greedy decoding gives `generate`'s
    tokens. Sampling draws on the device from torch's global generator (seed it with
    torch.manual_seed). The host reads the tokens once a run of steps, `graph_steps` at most;
    the steps themselves have no synchronisation."""
    check_sampling(max_new_tokens, dec.temperature, dec.top_k)
    idx = _as_batch(dec.model, list(prompt_tokens))
    block = dec.max_len
    history = idx[0].tolist()
    dec.prefill(idx)  # samples the first new token
    pos = idx.size(1)  # positions filled, kept on the host: reading the device's would sync
    new = [int(dec.token[0, 0])]
    while True:
        for token in new:
            history.append(token)
            yield token
        left = max_new_tokens - (len(history) - idx.size(1))
        if left <= 0:
            return
        if pos == block:  # full: rebuild from the last half, as `generate` does
            keep = max(1, block // 2)
            dec.prefill(torch.tensor([history[-keep:]], device=idx.device))
            pos = keep
            new = [int(dec.token[0, 0])]
            continue
        steps = min(left, dec.graph_steps, block - pos)
        dec.run(steps)  # each step writes position p and puts its token at tokens[0, p + 1]
        new = dec.tokens[0, pos + 1 : pos + 1 + steps].tolist()
        pos += steps


class TextStream:
    """Turns tokens into text as they arrive; a character split across tokens comes out whole.

    For the byte tokenizer an incremental UTF-8 decoder holds back an incomplete character;
    for any other tokenizer the text decoded so far is compared with what was already shown,
    holding back a trailing U+FFFD that the next token may complete.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._bytes = isinstance(tokenizer, ByteTokenizer)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tokens: list[int] = []
        self._shown = 0

    def push(self, token: int) -> str:
        """The text that `token` completes (possibly empty)."""
        if self._bytes:
            return self._utf8.decode(bytes([token]))
        self._tokens.append(token)
        text = self.tokenizer.decode(self._tokens)
        ready = len(text.rstrip("\ufffd"))
        if ready <= self._shown:
            return ""
        new, self._shown = text[self._shown : ready], ready
        return new

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        if self._bytes:
            return self._utf8.decode(b"", final=True)
        text = self.tokenizer.decode(self._tokens)
        new, self._shown = text[self._shown :], len(text)
        return new


def load_for_inference(checkpoint: str | os.PathLike[str], device: str = "auto") -> tuple[GPT, Any]:
    """The model (eval mode, on `device`) and the tokenizer that goes with it.

    `checkpoint` is what `gptperf train` wrote (its folder or ckpt.pt) or an HF GPT-2 folder.
    Tokenizer files in the folder (vocab.json + merges.txt or tokenizer.json) are used when
    present; otherwise a 256-token vocabulary means the byte tokenizer.
    """
    dev = resolve_device(device)
    path = Path(checkpoint)
    if not path.exists():
        raise UserError(
            f"checkpoint {str(path)!r} does not exist; run `gptperf train` first or pass "
            "--checkpoint with a training output folder, ckpt.pt or an HF GPT-2 folder"
        )
    if is_hf_gpt2_dir(path):
        model = load_hf_gpt2(path, dev)
    else:
        model = load_model(path, dev)
    model.eval()
    vocab = model.config.vocab_size
    if path.is_dir() and has_hf_tokenizer(path):
        tokenizer = load_hf_tokenizer(path)
    elif vocab == ByteTokenizer.vocab_size:
        tokenizer = ByteTokenizer()
    else:
        raise UserError(
            f"no tokenizer for a vocabulary of {vocab} tokens in {path}; the byte tokenizer "
            "has 256, any other needs HF tokenizer files (vocab.json + merges.txt) beside the weights"
        )
    if tokenizer.vocab_size > vocab:
        raise UserError(
            f"the tokenizer in {path} has {tokenizer.vocab_size} tokens but the model only {vocab}"
        )
    return model, tokenizer


@dataclass(frozen=True)
class GenerationResult:
    """One timed generation (`run_generation`); `to_dict()` is `gptperf generate --json`'s document."""

    SCHEMA = "gptperf.generate/1"

    checkpoint: str  # where the model came from, as the caller named it
    prompt: str
    text: str  # the continuation, without the prompt
    token_ids: tuple[int, ...]
    prompt_tokens: int
    elapsed_s: float  # the timed decode, prompt prefill included
    time_to_first_token_s: float
    kv_cache: bool
    plan: ExecutionPlan  # the plan that ran
    graph_steps: int | None  # decode steps a CUDA graph replays (the fast path on a GPU)
    compile_s: float | None  # building the fast decoder (compile, graph capture); None off it
    temperature: float
    top_k: int | None
    seed: int
    device: str  # "cpu: <model name>", "cuda: <card>"
    config: GPTConfig
    environment: dict[str, Any]

    @property
    def tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_s(self) -> float:
        """New tokens / elapsed time: the first token's wait (the prefill) included."""
        return self.tokens / self.elapsed_s

    @property
    def decode_tokens_per_s(self) -> float | None:
        """The tokens after the first / the time after it: the decode rate alone (None with a
        single token)."""
        n, first, elapsed = self.tokens, self.time_to_first_token_s, self.elapsed_s
        return (n - 1) / (elapsed - first) if n > 1 and elapsed > first else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.SCHEMA,
            "checkpoint": self.checkpoint,
            "prompt": self.prompt,
            "text": self.text,
            "tokens": self.tokens,
            "token_ids": list(self.token_ids),
            "prompt_tokens": self.prompt_tokens,
            "elapsed_s": self.elapsed_s,
            "time_to_first_token_s": self.time_to_first_token_s,
            "tokens_per_s": self.tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "kv_cache": self.kv_cache,
            "plan": self.plan.to_dict(),
            "graph_steps": self.graph_steps,
            "compile_s": self.compile_s,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "seed": self.seed,
            "device": self.device,
            "config": self.config.to_dict(),
            "environment": dict(self.environment),
        }


def run_generation(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 1337,
    use_kv_cache: bool = True,
    fast: bool | None = None,
    checkpoint: str = "",
    on_start: Callable[[], object] | None = None,
    on_text: Callable[[str], object] | None = None,
) -> GenerationResult:
    """Continue `prompt` by `max_new_tokens` tokens of batch-1 sampling and time it.

    `fast` decodes on the fast path (`fast_decoder`; None: on CUDA only, and never without the
    KV cache); its compilation and graph capture are timed apart (`compile_s`), not in the
    decode. `on_start()` is called once everything is built, just before the timed decode (where
    `gptperf generate` echoes the prompt); `on_text(piece)` with each non-empty piece of text
    as its token arrives, inside the timed decode, then with what the stream still held back
    (`TextStream.flush`), after it: the pieces add up to `result.text`. What either callback
    raises ends the generation and passes through. `checkpoint` is only recorded.
    """
    check_sampling(max_new_tokens, temperature, top_k)
    if fast and not use_kv_cache:
        raise UserError("the fast path decodes with the static KV cache; pass use_kv_cache=True "
                        "or fast=False")
    device = next(model.parameters()).device
    prompt_ids = tokenizer.encode(prompt)
    if len(prompt_ids) > model.config.block_size:
        raise UserError(
            f"the prompt has {len(prompt_ids)} tokens but the model's block_size is "
            f"{model.config.block_size}; shorten it to at most {model.config.block_size}"
        )
    fast = (device.type == "cuda" if fast is None else fast) and use_kv_cache
    plan = ExecutionPlan.default("decode", device.type, fast=fast, attention=model.config.attention)
    torch.manual_seed(seed)
    compile_s = None
    graph_steps = None
    if fast:
        t0 = time.perf_counter()
        dec = fast_decoder(model, temperature=temperature, top_k=top_k, plan=plan)
        synchronize(device)
        compile_s = time.perf_counter() - t0
        plan = dec.plan  # the plan that runs (the one-row kernel needs Triton)
        graph_steps = dec.graph_steps if dec.cuda_graph else None
        torch.manual_seed(seed)  # the warm-up's draws do not move the seed's stream
        tokens_out = generate_fast(dec, prompt_ids, max_new_tokens)
    else:
        tokens_out = generate(
            model, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
            use_kv_cache=use_kv_cache, generator=torch.Generator(device=device).manual_seed(seed),
        )
    stream = TextStream(tokenizer)
    if on_start is not None:
        on_start()

    tokens: list[int] = []
    pieces: list[str] = []
    synchronize(device)
    start = time.perf_counter()
    first = None
    for token in tokens_out:
        if first is None:  # int(token) already waited for the device
            first = time.perf_counter() - start
        tokens.append(token)
        piece = stream.push(token)
        pieces.append(piece)
        if piece and on_text is not None:
            on_text(piece)  # inside the timed loop: streaming is part of what a reader waits for
    synchronize(device)
    elapsed = time.perf_counter() - start
    pieces.append(stream.flush())
    if pieces[-1] and on_text is not None:
        on_text(pieces[-1])
    assert first is not None  # check_sampling: at least one new token
    return GenerationResult(
        checkpoint=checkpoint, prompt=prompt, text="".join(pieces), token_ids=tuple(tokens),
        prompt_tokens=len(prompt_ids), elapsed_s=elapsed, time_to_first_token_s=first,
        kv_cache=use_kv_cache, plan=plan, graph_steps=graph_steps, compile_s=compile_s,
        temperature=temperature, top_k=top_k, seed=seed,
        device=f"{device.type}: {device_name(device)}", config=model.config,
        environment=environment(device),
    )
