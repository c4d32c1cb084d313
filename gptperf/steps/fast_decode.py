"""The fast decode path: a static KV cache and a decode step that runs as one CUDA graph.

gpt-fast's recipe on gptperf's own model. The cache keeps every shape fixed (each step attends
over the whole preallocated buffer, with a boolean mask from the position) and keeps the
position itself on the device, so one decode step — forward, sampling, writing the token — has
no shape that changes and no host synchronisation: it can be compiled once and captured as a
CUDA graph that is replayed for every token. Tokens pile up in a device buffer; the host reads
them once, at the end. At batch 1 on a GPU the step is gptperf's own fused kernels
(`gptperf.steps.fused_decode`) captured the same way, with nothing to compile.

On CPU (or with compile and graphs off) the same step runs eagerly, which is how the tests check
that it gives the same logits and the same greedy tokens as the ordinary cache and as recompute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from gptperf.errors import UserError
from gptperf.model import GPT, GPTConfig
from gptperf.model.attention import cache_length
from gptperf.plan import COMPILED, CUDA_GRAPH, EAGER, FUSED_DECODE_BATCH, ExecutionPlan
from gptperf.runtime import cuda_graph
from gptperf.steps import decode_kernels, gemv
from gptperf.steps.fused_decode import fused_decode_step

# Decode steps one CUDA graph replays in `FastDecoder.run`: one launch for 16 tokens, and inside
# the graph each step's first kernel starts under the last one's tail (PDL) instead of after a
# graph boundary (BENCHMARKS.md, "Sixteen decode steps a graph, the anchors again, and γ in the
# weights").
GRAPH_STEPS = 16

class StaticKVCache:
    """Keys and values for `max_len` positions with the write position kept as a device tensor.

    Plugs into the model like `KVCache` (`positions`, `update`, `advance`, `reset`), but
    `update` returns the whole buffer and a (T, max_len) mask instead of a slice, so shapes
    never change from step to step. One tensor per layer, so that a compiled step mutates
    separate inputs in place (no aliasing views for the compiler to untangle).
    """

    def __init__(
        self,
        config: GPTConfig,
        batch: int,
        max_len: int | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        max_len = cache_length(config, batch, max_len)
        shape = (batch, config.n_head, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # next position to write
        self.slots = torch.arange(max_len, device=device)
        self.batch = batch
        self.max_len = max_len

    @property
    def length(self) -> int:
        """Positions filled so far (reads the device: a synchronisation, so not inside a step)."""
        return int(self.pos)

    def positions(self, new_tokens: int, device: torch.device) -> torch.Tensor:
        """Positions of the next `new_tokens` tokens, computed on the device.

        Bounds are checked on CPU only: on a GPU the check would synchronise with the host, so
        there `FastDecoder` counts its steps instead.
        """
        if self.pos.device.type == "cpu" and not torch.compiler.is_compiling():
            if int(self.pos) + new_tokens > self.max_len:
                raise UserError(
                    f"static KV cache full: {int(self.pos)} + {new_tokens} tokens exceed its "
                    f"{self.max_len} positions"
                )
        return self.pos + torch.arange(new_tokens, device=device)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write the new keys/values of `layer` at their positions; return the whole buffers and
        the mask that lets each new token see every filled position up to its own."""
        pos = self.pos + torch.arange(k.size(2), device=k.device)
        self.k[layer][:, :, pos] = k  # index_put_: the in-place write compilers keep in place
        self.v[layer][:, :, pos] = v
        mask = self.slots[None, :] <= pos[:, None]
        return self.k[layer], self.v[layer], mask

    def advance(self, new_tokens: int) -> None:
        self.pos += new_tokens

    def set_length(self, length: int) -> None:
        """Pretend `length` positions are filled (their contents are whatever the buffer holds)."""
        if not 0 <= length < self.max_len:
            raise UserError(f"cache length must be in 0..{self.max_len - 1}, got {length}")
        self.pos.fill_(length)

    def reset(self) -> None:
        self.pos.zero_()


def sample_on_device(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Next tokens (B,) from (B, vocab) logits without a host synchronisation.

    Greedy is argmax. Otherwise softmax(logits / T) over the top k, sampled by the exponential
    race argmax(p / E) with E ~ Exp(1), which draws exactly from p. torch.multinomial draws the
    same distribution but checks its input on the host (an `.item()`), which a CUDA graph forbids.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, -1:], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=-1)


class _MatmulBiasLinear(nn.Linear):
    """nn.Linear computed as matmul + bias, so the compiler sees a plain mm.

    With coordinate-descent tuning, inductor turns a one-row mm (a batch-1 decode step) into a
    bandwidth-tuned reduction; an addmm (the fused bias form nn.Linear lowers to) goes to a
    cuBLAS kernel instead. Same parameters, same result up to rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight.t()
        return y + self.bias if self.bias is not None else y


class _OneRowLinear(_MatmulBiasLinear):
    """A Linear whose one-row products (a batch-1 decode step) run `gemv`'s fixed-tile kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[:-1].numel() == 1:
            return gemv.gemv(x, self.weight, self.bias)
        return super().forward(x)


def split_linear_bias(model: nn.Module, one_row_kernel: bool = False) -> nn.Module:
    """Make every biased nn.Linear of `model` compute matmul + bias (in place; same weights);
    with `one_row_kernel`, every Linear sends one-row inputs to `gemv` instead."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.__class__ = (_OneRowLinear if one_row_kernel
                                else _MatmulBiasLinear if module.bias is not None else nn.Linear)
    return model


def plain_linear(model: nn.Module) -> nn.Module:
    """Undo `split_linear_bias`: every Linear of `model` computes as nn.Linear again (in place),
    so an eager step on a model a fast step used runs the kernels an eager step runs."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.__class__ = nn.Linear
    return model


class GraphStep:
    """A captured CUDA graph, called to replay it, holding the step it was captured from: a graph
    keeps the addresses of the buffers its kernels read and write, not the tensors, and once the
    step's closure (its tokens, its cache) is freed the allocator hands that memory to the next
    tensor asked for — a prefill graph then read another tensor's bytes as its tokens."""

    def __init__(self, graph: torch.cuda.CUDAGraph, captured: Callable[[], object]) -> None:
        self.graph = graph
        self.captured = captured

    def __call__(self) -> None:
        self.graph.replay()


def capture_graph(run: Callable[[], object], device: torch.device, warmup: int = 3) -> GraphStep:
    """Call `run` `warmup` times on a side stream (where a compiled `run` compiles), then capture
    one call as a CUDA graph: calling the result replays the same kernels on the same buffers."""
    return GraphStep(cuda_graph(run, device, warmups=warmup), run)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_model(
    config: GPTConfig, device: torch.device | str, dtype: torch.dtype, *, seed: int = 0
) -> GPT:
    """A GPT with random weights built directly on `device` in `dtype` (eval mode).

    A 7B-shaped model built in fp32 on the CPU first would take minutes and 27 GB of host
    memory; constructed in place it takes seconds and only its bf16 size on the GPU.
    """
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(dtype):
        model = GPT(config)
    return model.eval()


class FastDecoder:
    """Generates with a static KV cache; on CUDA the decode step is compiled and replayed as a
    CUDA graph. `generate` synchronises once, at the end.

    `compile` and `cuda_graph` default to on for CUDA, off elsewhere; with a graph, `run` and
    `generate` replay `graph_steps` steps a launch (default GRAPH_STEPS). `fused` (default: on for a
    compiled batch-1 decoder on CUDA with Triton) runs gptperf's fused decode kernels
    (`gptperf.steps.fused_decode`) instead of the compiled model: nothing is compiled, and
    `kernel_tuning` sets their launch (`decode_kernels.KernelTuning`, for benchmarks). The model
    is used as it is (its dtype is the cache's; no autocast): give it weights in the precision
    to decode in.
    """

    def __init__(
        self,
        model: GPT,
        batch: int,
        max_len: int | None = None,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        compile: bool | None = None,
        cuda_graph: bool | None = None,
        one_row_kernel: bool | None = None,
        fused: bool | None = None,
        graph_steps: int | None = None,
        kernel_tuning: decode_kernels.KernelTuning = decode_kernels.DEFAULT_TUNING,
    ) -> None:
        param = next(model.parameters())
        self.device = param.device
        on_cuda = self.device.type == "cuda"
        self.compile = on_cuda if compile is None else compile
        self.cuda_graph = on_cuda if cuda_graph is None else cuda_graph
        self.one_row_kernel = (self.compile and gemv.available()) if one_row_kernel is None else one_row_kernel
        self.fused = (self.compile and on_cuda and batch == FUSED_DECODE_BATCH
                      and decode_kernels.available() if fused is None else fused)
        if self.fused and batch != FUSED_DECODE_BATCH:
            raise UserError(f"the fused decode kernels run batch {FUSED_DECODE_BATCH}, not {batch}; "
                            "use fused=False")
        if self.cuda_graph and not on_cuda:
            raise UserError("CUDA graphs need a CUDA device; use cuda_graph=False on CPU")
        if not temperature >= 0:
            raise UserError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if top_k is not None and top_k <= 0:
            raise UserError(f"top-k must be a positive integer (or unset), got {top_k}")
        graph_steps = (GRAPH_STEPS if self.cuda_graph else 1) if graph_steps is None else graph_steps
        if isinstance(graph_steps, bool) or not isinstance(graph_steps, int) or graph_steps < 1:
            raise UserError(f"steps a CUDA graph replays must be a positive integer, got {graph_steps!r}")
        self.graph_steps = graph_steps
        self.model = model
        self.config = model.config
        self.temperature = temperature
        self.top_k = top_k
        self.cache = StaticKVCache(self.config, batch, max_len, device=self.device, dtype=param.dtype)
        self.batch = batch
        self.max_len = self.cache.max_len
        # The step's static input and output: the last token, and every token by position.
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        # One slot more than the cache: the last step's token lands at position max_len.
        self.tokens = torch.zeros(batch, self.max_len + 1, dtype=torch.long, device=self.device)

        def forward(token: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
            logits, _ = model(token, kv_cache=cache, last_logits_only=True)
            # greedy: the argmax is compiled with the step (eager's one-block argmax takes 14 µs)
            return logits[:, -1, :].argmax(dim=-1) if temperature == 0 else logits[:, -1, :]

        self._forward: Callable[[torch.Tensor, StaticKVCache], torch.Tensor] = forward
        self._fused: Callable[[], None] | None = None
        if self.fused:
            sample = None if temperature == 0 else (lambda logits: sample_on_device(logits, temperature, top_k))
            self._fused = fused_decode_step(model, self.cache, self.token, self.tokens, sample,
                                            tuning=kernel_tuning)
        elif self.compile:
            if on_cuda:
                split_linear_bias(model, self.one_row_kernel)
            # Graphs are captured here, not by inductor. Without the one-row kernel, gpt-fast's
            # coordinate-descent tuning turns one-row matmuls into bandwidth-bound reductions; with
            # it, tuning is left off: its tiles differ from compile to compile, slow ones included.
            options = ({"coordinate_descent_tuning": not self.one_row_kernel, "triton.cudagraphs": False}
                       if on_cuda else {})
            self._forward = torch.compile(forward, fullgraph=True, options=options)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._multi_graph: torch.cuda.CUDAGraph | None = None  # graph_steps steps, captured by `run`

    @property
    def plan(self) -> ExecutionPlan:
        """The ExecutionPlan its decode step runs under (a graph of an uncompiled step is
        predicted as the eager step it replays)."""
        mode = (CUDA_GRAPH if self.cuda_graph else COMPILED) if self.compile else EAGER
        one_row = self.one_row_kernel and self.compile and self.device.type == "cuda"
        return ExecutionPlan(mode, self.config.attention, static_cache=True, one_row_kernel=one_row,
                             fused_decode=self.fused)

    # -- the step --------------------------------------------------------------------------
    def _step(self) -> None:
        if self._fused is not None:
            self._fused()
            return
        out = self._forward(self.token, self.cache)  # tokens when greedy, else logits
        nxt = (out if self.temperature == 0 else sample_on_device(out, self.temperature, self.top_k))[:, None]
        self.token.copy_(nxt)
        # The position just advanced to is this token's (index_copy_: a 0-d index would sync).
        self.tokens.index_copy_(1, self.cache.pos.view(1), nxt)

    def warmup(self, steps: int = 3) -> None:
        """Compile (if asked) and capture the graph (if asked), leaving the cache empty."""
        with torch.no_grad():
            if self.cuda_graph and self._graph is None:
                self.cache.reset()
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):  # warm-up off the default stream, as capture wants
                    for _ in range(steps):
                        self._step()
                torch.cuda.current_stream(self.device).wait_stream(side)
                self.cache.reset()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._step()
                self._graph = graph
            elif not self.cuda_graph:  # compiles (torch.compile, or the fused kernels' Triton JIT)
                for _ in range(min(steps, 2) if self.compile or self.fused else 0):
                    self._step()
            self.cache.reset()

    def step(self) -> None:
        """One decode step from the current position (no synchronisation)."""
        if self._graph is not None:
            self._graph.replay()
        else:
            with torch.no_grad():
                self._step()

    def run(self, steps: int) -> None:
        """`steps` decode steps from the current position (no synchronisation): with a CUDA graph,
        as many replays of a graph of `graph_steps` steps as fit, then single steps. The caller
        keeps the positions inside the cache, as for `step`."""
        full, rest = divmod(steps, self.graph_steps) if self._graph is not None else (0, steps)
        if full and self._multi_graph is None:
            self._multi_graph = self._capture_steps(self.graph_steps)
        for _ in range(full):
            self._multi_graph.replay()
        for _ in range(rest):
            self.step()

    @torch.no_grad()
    def _capture_steps(self, steps: int) -> torch.cuda.CUDAGraph:
        # `warmup` has run (and compiled) the step, so capture alone: nothing executes, the
        # cache and its position are untouched
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(steps):
                self._step()
        return graph

    def set_length(self, length: int) -> None:
        """Let the next step write position `length` (for timing one step at a fixed context)."""
        self.cache.set_length(length)

    # -- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """Fill the cache with `prompt` (B, P) and sample the first new token; returns its logits."""
        prompt = self._check_prompt(prompt)
        self.cache.reset()
        logits, _ = self.model(prompt, kv_cache=self.cache, last_logits_only=True)
        last = logits[:, -1, :]
        nxt = sample_on_device(last, self.temperature, self.top_k)[:, None]
        self.token.copy_(nxt)
        P = prompt.size(1)
        self.tokens[:, :P] = prompt
        self.tokens[:, P : P + 1] = nxt
        return last

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """(B, P) prompt -> (B, max_new_tokens) new tokens; one host synchronisation, at the end."""
        prompt = self._check_prompt(prompt)
        P = prompt.size(1)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise UserError(f"number of new tokens must be a positive integer, got {max_new_tokens!r}")
        if P + max_new_tokens - 1 > self.max_len:
            raise UserError(
                f"prompt ({P}) + new tokens ({max_new_tokens}) - 1 exceed the cache's "
                f"{self.max_len} positions; use at most {self.max_len - P + 1} new tokens"
            )
        if self.compile or self.cuda_graph or self.fused:
            self.warmup()
        self.prefill(prompt)
        self.run(max_new_tokens - 1)
        return self.tokens[:, P : P + max_new_tokens].cpu()

    def _check_prompt(self, prompt: torch.Tensor) -> torch.Tensor:
        prompt = torch.as_tensor(prompt, dtype=torch.long, device=self.device)
        if prompt.dim() == 1:
            prompt = prompt.unsqueeze(0)
        if prompt.dim() != 2 or prompt.size(0) != self.batch or prompt.size(1) == 0:
            raise UserError(
                f"prompt must be (batch={self.batch}, P>0) token ids, got shape {tuple(prompt.shape)}"
            )
        if prompt.size(1) > self.max_len:
            raise UserError(f"prompt of {prompt.size(1)} tokens exceeds the cache's {self.max_len} positions")
        return prompt
