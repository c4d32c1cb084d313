"""The inference study: KV cache against recompute over context, prefill against prompt length, and
the decode step against batch size up to where it turns compute-bound — measured on the device in
hand, each point beside the performance model's prediction.

    from gptperf.inference import run_inference_study
    r = run_inference_study(preset("gpt2"), torch.device("cuda"), "bf16")
    r.knee_batch_measured, r.ridge_batch_predicted, r.to_dict()

Inference runs with the weights held in the dtype itself (bf16 weights for bf16 decoding, as any
inference server does), not the fp32 master weights plus autocast of training: autocast would
re-cast every weight on every decode step. The performance model counts inference bytes the
same way.

Definitions (also in every JSON document under "definitions"):

* decode step at context L: one new token per sequence written at position L-1 after L-1 cached
  ones, attending to L positions (the performance model's `decode` workload); recompute at
  context L: a forward pass over all L tokens for the same one new token (`decode_nocache`).
* achieved bandwidth = the performance model's bytes of the step (weights once, the KV cache
  read, activations) / measured step time; arithmetic intensity = its FLOPs / those bytes.
* ridge batch (predicted): the smallest batch at which the weight matmuls of a decode step
  (h.0.mlp.fc) are compute-bound on the chosen hardware, i.e. their AI reaches the ridge π/β in
  the weights' dtype.
* knee batch (measured, and predicted from predicted times): where the step time starts to grow
  with the batch. Between consecutive batches b0 < b1 the log-log slope s = log(t1/t0)/log(b1/b0)
  is taken; at the first pair with s >= 1/2, with t_ the time of the batch before b0 (the flat
  part), the knee is b1·t_/t1 (on a roofline max(a, c·B) this is exactly a/c, the batch where
  the flat and the linear parts meet).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptperf import names
from gptperf.dtypes import check_dtype
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig

Progress = Callable[[str], None]
KNEE_SLOPE = 0.5
MAX_BATCH = {"cuda": 512, "cpu": 64}
DEFINITIONS = {
    "decode": "one new token per sequence at position L-1 after L-1 cached tokens (attends to L)",
    "decode_nocache": "one new token per sequence, recomputing all L positions",
    "prefill": "a prompt of P tokens fills the KV cache; logits of the last position only",
    "achieved_bandwidth": "performance-model bytes of the step / measured step time",
    "arithmetic_intensity": "performance-model FLOPs / bytes of the step",
    "ridge_batch_predicted": "smallest batch whose weight matmuls (h.0.mlp.fc) are compute-bound on the hardware",
    "knee_batch": "first batch pair b0<b1 with log-log slope of step time >= 1/2; knee = b1·t_/t1, "
                  "t_ the time at the batch before b0",
    "weights": "held in the dtype itself (no fp32 master weights, no autocast)",
}


# --- arguments ---------------------------------------------------------------------------------


def _positive_ints(values: Sequence[int], what: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise UserError(f"{what} must be positive integers, got {v!r}")
        out.append(v)
    if not out:
        raise UserError(f"give at least one {what[:-1] if what.endswith('s') else what}")
    return sorted(set(out))


def choose_contexts(config: GPTConfig, contexts: Sequence[int] | None = None) -> list[int]:
    """Context lengths for the cache/recompute sweep: powers of two from 16 up to block_size
    (and block_size itself); given ones must lie in 1..block_size."""
    if contexts is None:
        top = config.block_size
        out = [c for c in (2**i for i in range(4, 32)) if c <= top]
        if not out or out[-1] != top:
            out.append(top)
        return out
    out = _positive_ints(contexts, "contexts")
    for c in out:
        if c > config.block_size:
            raise UserError(
                f"context {c} exceeds block_size={config.block_size}; use contexts in 1..{config.block_size}"
            )
    return out


def choose_batches(batches: Sequence[int] | None = None, device_type: str = "cpu") -> list[int]:
    """Batch sizes for the decode sweep: 1, 2, 4, ... up to 512 on GPU (64 on CPU)."""
    if batches is None:
        top = MAX_BATCH.get(device_type, 64)
        return [2**i for i in range(top.bit_length()) if 2**i <= top]
    return _positive_ints(batches, "batches")


def choose_batch_context(config: GPTConfig) -> int:
    """The context of the batch sweep: short, so that the weights (not the KV cache) dominate
    the traffic at small batch and the compute-bound point of the weight matmuls can show."""
    return min(128, config.block_size)


# --- the performance model ---------------------------------------------------------------------


def predict_inference(config: GPTConfig, kind: str, batch: int, seq: int, dtype: str, hardware: Any,
                      *, compiled: bool = False) -> Any:
    """The performance model's Prediction of one inference step (weights held in `dtype`);
    `compiled`: kernel counts of a compiled step (the fast decode path)."""
    from gptperf.perfmodel import Workload, predict

    return predict(config, Workload(kind, batch, seq, dtype), hardware, compiled=compiled)


def ridge_batch(config: GPTConfig, context: int, dtype: str, hardware: Any, limit: int = 1 << 16) -> int | None:
    """Smallest batch whose decode-step weight matmuls are compute-bound (None if none ≤ limit)."""
    from gptperf.perfmodel import COMPUTE

    op = names.layer_name(0, names.MLP_FC)

    def compute_bound(b: int) -> bool:
        return predict_inference(config, "decode", b, context, dtype, hardware).op(op).bound == COMPUTE

    if not compute_bound(limit):
        return None
    lo, hi = 0, limit  # compute_bound(hi) is True; lo is 0 or a batch that is memory-bound
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if compute_bound(mid):
            hi = mid
        else:
            lo = mid
    return hi


def knee_batch(batches: Sequence[int], times: Sequence[float], slope: float = KNEE_SLOPE) -> float | None:
    """Where step time starts growing ~linearly with batch (see the module docstring); None when
    the log-log slope never reaches `slope`.

    At the first pair b0 < b1 whose slope reaches `slope`, b1 is taken to be on the linear part
    (t = c·b, so c = t1/b1) and the point before b0 on the flat part (t = a): the knee is a/c.
    """
    pts = sorted((b, t) for b, t in zip(batches, times, strict=True) if t and t > 0 and math.isfinite(t))
    for i in range(len(pts) - 1):
        (b0, t0), (b1, t1) = pts[i], pts[i + 1]
        if b1 > b0 and math.log(t1 / t0) / math.log(b1 / b0) >= slope:
            b_flat, t_flat = pts[max(i - 1, 0)]
            return min(max(b1 * t_flat / t1, b_flat), b1)
    return None


# --- results -----------------------------------------------------------------------------------


@dataclass
class Point:
    """One measured configuration and its prediction. Times in seconds."""

    kind: str  # decode | decode_nocache | prefill
    batch: int
    seq: int  # context L (decode*) or prompt length P (prefill)
    time_s: float | None  # measured median, None if not measured
    predicted_s: float
    flops: float
    bytes: float
    tokens: int  # tokens produced (decode*) or processed (prefill) per step
    path: str = "eager"  # eager | fast (static cache, compiled, CUDA graph)
    timing: dict[str, Any] | None = None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.time_s if self.time_s else None

    @property
    def predicted_tokens_per_s(self) -> float:
        return self.tokens / self.predicted_s

    @property
    def achieved_bandwidth(self) -> float | None:
        return self.bytes / self.time_s if self.time_s else None

    @property
    def achieved_flops(self) -> float | None:
        return self.flops / self.time_s if self.time_s else None

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes

    @property
    def ratio(self) -> float | None:
        """measured / predicted time."""
        return self.time_s / self.predicted_s if self.time_s else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "batch": self.batch, "seq": self.seq, "path": self.path,
            "time_s": self.time_s, "predicted_s": self.predicted_s, "ratio_measured_to_predicted": self.ratio,
            "tokens_per_s": self.tokens_per_s, "predicted_tokens_per_s": self.predicted_tokens_per_s,
            "flops": self.flops, "bytes": self.bytes, "arithmetic_intensity": self.arithmetic_intensity,
            "achieved_bandwidth": self.achieved_bandwidth, "achieved_flops_per_s": self.achieved_flops,
            "timing": self.timing,
        }


@dataclass
class InferenceResult:
    config: GPTConfig
    device: str
    device_name: str
    dtype: str
    fast: bool
    hardware: dict[str, Any]
    hardware_label: str
    cache: list[Point] = field(default_factory=list)
    recompute: list[Point] = field(default_factory=list)
    prefill: list[Point] = field(default_factory=list)
    batch_context: int = 0
    batches: list[Point] = field(default_factory=list)
    batch_stopped: str | None = None
    ridge_batch_predicted: int | None = None
    knee_batch_predicted: float | None = None
    knee_batch_measured: float | None = None
    ridge_intensity: float = math.nan
    new_tokens: int = 0  # tokens generated per request in the prefill/decode split
    notes: list[str] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def split(self) -> list[dict[str, Any]]:
        """Prefill/decode time of one request per prompt length P: prefill P tokens, then decode
        `new_tokens` tokens, each costed as a decode step at context P (measured and predicted)."""
        by_l = {p.seq: p for p in self.cache}
        rows = []
        for p in self.prefill:
            d = by_l.get(p.seq)
            if d is None:
                continue
            rows.append({
                "prompt": p.seq, "new_tokens": self.new_tokens,
                "prefill_s": p.time_s, "decode_s": d.time_s * self.new_tokens if d.time_s else None,
                "predicted_prefill_s": p.predicted_s, "predicted_decode_s": d.predicted_s * self.new_tokens,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gptperf.inference/1",
            "config": self.config.to_dict(),
            "device": {"type": self.device, "name": self.device_name},
            "dtype": self.dtype,
            "fast_decode": self.fast,
            "hardware": self.hardware,
            "hardware_label": self.hardware_label,
            "ridge_intensity": self.ridge_intensity,
            "cache_vs_recompute": {
                "cache": [p.to_dict() for p in self.cache],
                "recompute": [p.to_dict() for p in self.recompute],
                "speedup": [
                    {"context": c.seq, "measured": (r.time_s / c.time_s) if (c.time_s and r.time_s) else None,
                     "predicted": r.predicted_s / c.predicted_s}
                    for c, r in zip(self.cache, self.recompute, strict=False)
                ],
            },
            "prefill": [p.to_dict() for p in self.prefill],
            "prefill_decode_split": self.split(),
            "batch_sweep": {
                "context": self.batch_context,
                "points": [p.to_dict() for p in self.batches],
                "stopped": self.batch_stopped,
                "ridge_batch_predicted": self.ridge_batch_predicted,
                "knee_batch_predicted": self.knee_batch_predicted,
                "knee_batch_measured": self.knee_batch_measured,
            },
            "definitions": dict(DEFINITIONS),
            "notes": list(self.notes),
            "plots": dict(self.plots),
            "environment": dict(self.environment),
        }


# --- measuring ---------------------------------------------------------------------------------


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def sweep_batches(
    batches: Sequence[int], measure: Callable[[int], Point], progress: Progress | None = None
) -> tuple[list[Point], str | None]:
    """Measure each batch in order; stop at the first that runs out of memory (saying so)."""
    points: list[Point] = []
    for b in batches:
        if progress:
            progress(f"decode step, batch {b}")
        try:
            points.append(measure(b))
        except Exception as err:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raised
            if not is_out_of_memory(err):
                raise
            _free_memory()
            return points, f"stopped at batch {b}: out of memory ({str(err).splitlines()[0][:160]})"
    return points, None


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Bench:
    """Builds the model once and times its inference steps on one device."""

    def __init__(self, config: GPTConfig, device: Any, dtype: str, fast: bool, hardware: Any) -> None:
        import torch

        from gptperf.inference.static_cache import build_model
        from gptperf.runtime import set_matmul_precision, torch_dtype

        self.torch = torch
        self.config, self.device, self.dtype, self.fast, self.hw = config, device, dtype, fast, hardware
        set_matmul_precision(dtype)
        self.model = build_model(config, device, torch_dtype(dtype))
        self.gen = torch.Generator(device="cpu").manual_seed(0)
        cuda = device.type == "cuda"
        self.warmup, self.repeats = (3, 20) if cuda else (2, 5)
        self.notes: list[str] = []

    def _tokens(self, batch: int, length: int) -> Any:
        t = self.torch.randint(0, self.config.vocab_size, (batch, length), generator=self.gen)
        return t.to(self.device)

    def _time(self, fn: Callable[[], Any], repeats: int | None = None) -> Any:
        from gptperf.measure.timer import time_fn

        with self.torch.no_grad():
            return time_fn(fn, warmup=self.warmup, repeats=repeats or self.repeats, device=self.device)

    def _point(self, kind: str, batch: int, seq: int, timing: Any, path: str = "eager") -> Point:
        pred = predict_inference(self.config, kind, batch, seq, self.dtype, self.hw)
        tokens = batch if kind.startswith("decode") else batch * seq
        return Point(kind, batch, seq, timing.median if timing else None, pred.time_s, pred.flops,
                     pred.bytes, tokens, path, timing.to_dict() if timing else None)

    def decode(self, batch: int, context: int) -> Point:
        """One decode step at context L (fast path or the model's own KVCache)."""
        if self.fast:
            try:
                return self._fast_decode(batch, context)
            except Exception as err:  # noqa: BLE001 - out of memory re-raised; anything else noted
                if is_out_of_memory(err):
                    raise
                self.fast = False
                self.notes.append(f"the fast decode path failed ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:160]}); decode measured eagerly from here on")
                _free_memory()
        from gptperf.model import KVCache

        cache = KVCache(self.config, batch, context, device=self.device, dtype=self.model.lm_head.weight.dtype)
        token = self._tokens(batch, 1)

        def eager_step() -> None:
            cache.length = context - 1  # the same step every time: L-1 cached, one new
            self.model(token, kv_cache=cache, last_logits_only=True)

        return self._point("decode", batch, context, self._time(eager_step))

    def _fast_decode(self, batch: int, context: int) -> Point:
        from gptperf.inference.static_cache import FastDecoder

        dec = FastDecoder(self.model, batch, context, compile=True, cuda_graph=self.device.type == "cuda")
        dec.token.copy_(self._tokens(batch, 1))
        dec.warmup()

        def step() -> None:
            dec.set_length(context - 1)
            dec.step()

        return self._point("decode", batch, context, self._time(step), "fast")

    def recompute(self, batch: int, context: int) -> Point:
        x = self._tokens(batch, context)
        timing = self._time(lambda: self.model(x, last_logits_only=True),
                            repeats=max(3, self.repeats // 2))
        return self._point("decode_nocache", batch, context, timing)

    def prefill(self, batch: int, prompt: int) -> Point:
        from gptperf.model import KVCache

        cache = KVCache(self.config, batch, prompt, device=self.device, dtype=self.model.lm_head.weight.dtype)
        x = self._tokens(batch, prompt)

        def run() -> None:
            cache.reset()
            self.model(x, kv_cache=cache, last_logits_only=True)

        return self._point("prefill", batch, prompt, self._time(run, repeats=max(3, self.repeats // 2)))


def resolve_hardware(hardware: Any, device: Any, device_name: str) -> Any:
    """A Hardware as given, by name, else the measured ceilings of this device, else its datasheet."""
    from gptperf.measure.devices import datasheet_hardware_for
    from gptperf.perfmodel import Hardware, get_hardware

    if isinstance(hardware, Hardware):
        return hardware
    if hardware is not None:
        return get_hardware(str(hardware), device_name=device_name)
    try:
        return get_hardware("measured", device_name=device_name)
    except UserError:
        pass
    hw = datasheet_hardware_for(device_name, device.type)
    return hw if hw is not None else get_hardware("cpu" if device.type == "cpu" else "h100-sxm")


def check_study_args(config: GPTConfig, device: Any, dtype: str, fast: bool) -> None:
    check_dtype(dtype)
    if device.type == "cpu" and dtype == "fp16":
        raise UserError("dtype 'fp16' needs a GPU; on CPU use fp32 or bf16")
    if fast and device.type != "cuda" and dtype in ("bf16", "fp16"):
        raise UserError("--fast on CPU compiles the step; use it with fp32 (or run on a GPU)")


def run_inference_study(
    config: GPTConfig,
    device: Any,
    dtype: str,
    contexts: Sequence[int] | None = None,
    batches: Sequence[int] | None = None,
    fast: bool | None = None,
    progress: Progress | None = None,
    hardware: Any = None,
    *,
    batch_context: int | None = None,
    new_tokens: int = 64,
) -> InferenceResult:
    """Measure and predict: cache vs recompute over `contexts`, prefill over the same lengths,
    and the decode step over `batches` at `batch_context`. `fast` (default: on for CUDA) times
    the cached decode step through FastDecoder (static cache, compiled, CUDA graph)."""
    import torch

    from gptperf.envinfo import environment
    from gptperf.runtime import device_name as name_of

    device = torch.device(device)
    fast = device.type == "cuda" if fast is None else fast
    check_study_args(config, device, dtype, fast)
    contexts = choose_contexts(config, contexts)
    batches = choose_batches(batches, device.type)
    batch_context = choose_batch_context(config) if batch_context is None else batch_context
    config.check_sequence(batch_context)
    dev_name = name_of(device)
    hw = resolve_hardware(hardware, device, dev_name)
    hw.peak(dtype)  # a one-line error now if the hardware lists no peak for this dtype
    say = progress or (lambda _msg: None)

    result = InferenceResult(
        config=config, device=device.type, device_name=dev_name, dtype=dtype, fast=fast,
        hardware=hw.to_dict(), hardware_label=hw.label, batch_context=batch_context,
        ridge_intensity=hw.ridge_intensity(dtype), new_tokens=new_tokens,
    )
    say(f"building {config.name} ({dtype}) on {dev_name}")
    _measure_all(_Bench(config, device, dtype, fast, hw), result, contexts, batches, say)
    _free_memory()  # the model and its caches are gone with the bench
    result.fast = any(p.path == "fast" for p in result.cache + result.batches)
    done = [p.batch for p in result.batches]
    result.knee_batch_measured = knee_batch(done, [p.time_s for p in result.batches])
    result.knee_batch_predicted = knee_batch(batches, [
        predict_inference(config, "decode", b, batch_context, dtype, hw).time_s for b in batches
    ])
    result.ridge_batch_predicted = ridge_batch(config, batch_context, dtype, hw)
    if result.batch_stopped:
        result.notes.append(result.batch_stopped)
    if result.knee_batch_measured is None:
        result.notes.append(
            f"the measured step time never grew with slope >= {KNEE_SLOPE} up to batch "
            f"{done[-1] if done else '—'}: no knee within the sweep"
        )
    result.notes.append(f"predictions: {hw.label}; measured on {dev_name} ({device.type})")
    if device.type == "cpu":
        result.notes.append(
            "on CPU a small model's step is dominated by per-operator overhead, which the roofline "
            "counts only as the hardware's launch latency"
        )
    result.environment = environment(device)
    result.environment["dtype"] = dtype
    return result


def _measure_all(bench: _Bench, result: InferenceResult, contexts: list[int], batches: list[int],
                 say: Progress) -> None:
    for L in contexts:
        say(f"context {L}: decode with the KV cache")
        result.cache.append(bench.decode(1, L))
        say(f"context {L}: recompute")
        result.recompute.append(bench.recompute(1, L))
        say(f"prompt {L}: prefill")
        result.prefill.append(bench.prefill(1, L))
    result.batches, result.batch_stopped = sweep_batches(
        batches, lambda b: bench.decode(b, result.batch_context), say
    )
    result.notes.extend(bench.notes)


# --- printing ----------------------------------------------------------------------------------


def print_result(r: InferenceResult) -> None:
    """The terminal report: measured beside predicted, every figure with its unit and source."""
    from rich.table import Table

    from gptperf.output import console, seconds, si

    def pair(measured: float | None, predicted: float | None, fmt: Callable[[float | None], str]) -> str:
        return f"{fmt(measured)} / {fmt(predicted)}"

    def tps(x: float | None) -> str:
        return si(x, "")

    def times(x: float) -> str:
        return f"{x:.1f}×"

    console.print(f"[bold]{r.config.name}[/bold], {r.dtype}: measured on {r.device_name} ({r.device}); "
                  f"predicted with {r.hardware_label}. Cells: measured / predicted.")
    t = Table(title="decode, batch 1: tokens/s with the KV cache vs recomputing the context")
    for col in ("context L", "KV cache tok/s", "recompute tok/s", "speedup"):
        t.add_column(col, justify="right")
    for c, n in zip(r.cache, r.recompute, strict=False):
        speedup = n.time_s / c.time_s if c.time_s and n.time_s else None
        t.add_row(str(c.seq), pair(c.tokens_per_s, c.predicted_tokens_per_s, tps),
                  pair(n.tokens_per_s, n.predicted_tokens_per_s, tps),
                  pair(speedup, n.predicted_s / c.predicted_s, lambda x: "—" if x is None else times(x)))
    console.print(t)

    t = Table(title=f"one request: prefill P tokens, then decode {r.new_tokens} (each at ~context P)")
    for col in ("prompt P", "prefill", "decode", "prefill share"):
        t.add_column(col, justify="right")
    for row in r.split():
        share = (row["prefill_s"] / (row["prefill_s"] + row["decode_s"])
                 if row["prefill_s"] and row["decode_s"] else None)
        pshare = row["predicted_prefill_s"] / (row["predicted_prefill_s"] + row["predicted_decode_s"])
        t.add_row(str(row["prompt"]), pair(row["prefill_s"], row["predicted_prefill_s"], seconds),
                  pair(row["decode_s"], row["predicted_decode_s"], seconds),
                  pair(share, pshare, lambda x: "—" if x is None else f"{100 * x:.0f}%"))
    console.print(t)

    path = "static cache, compiled, CUDA graph" if r.fast and r.device == "cuda" else (
        "static cache, compiled" if r.fast else "eager, KVCache")
    t = Table(title=f"decode step against batch at context {r.batch_context} ({path})")
    for col in ("batch", "step", "meas/pred", "tok/s", "AI FLOP/B", "achieved B/s", "achieved FLOP/s"):
        t.add_column(col, justify="right")
    for p in r.batches:
        t.add_row(str(p.batch), pair(p.time_s, p.predicted_s, seconds), f"{p.ratio:.2f}" if p.ratio else "—",
                  si(p.tokens_per_s, ""), f"{p.arithmetic_intensity:.3g}", si(p.achieved_bandwidth, "B/s"),
                  si(p.achieved_flops, "FLOP/s"))
    console.print(t)

    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.3g}"

    console.print(
        f"ridge π/β = {r.ridge_intensity:.3g} FLOP/byte ({r.hardware_label}): the weight matmuls turn "
        f"compute-bound at batch {fmt(r.ridge_batch_predicted)} (predicted). Step-time knee: batch "
        f"{fmt(r.knee_batch_measured)} measured, {fmt(r.knee_batch_predicted)} predicted."
    )
    for note in r.notes:
        console.print(f"[dim]note: {note}[/dim]")
    for what, path_ in r.plots.items():
        console.print(f"picture ({what}): {path_}")
