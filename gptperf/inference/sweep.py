"""The inference study: KV cache against recompute over context, prefill against prompt length, and
the decode step against batch size up to where it turns compute-bound — measured on the device in
hand, each point beside the performance model's two predictions: the roofline bound
(`predicted_s`, what the hardware allows) and, when `gptperf calibrate` left a usable calibration
of the device, the calibrated expected time (`expected_s`, what this machine will take).

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

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gptperf import names
from gptperf.dtypes import check_dtype
from gptperf.envinfo import device_name as name_of
from gptperf.envinfo import environment
from gptperf.errors import UserError
from gptperf.measure.bench import calibrated_expected, device_calibration
from gptperf.measure.probe import HostSampler, machine_against_calibration, step_sampler
from gptperf.measure.timer import time_fn, time_phases
from gptperf.memguard import is_out_of_memory, release_memory
from gptperf.model.config import GPTConfig
from gptperf.perfmodel import COMPUTE, Workload, predict, resolve_hardware
from gptperf.plan import ExecutionPlan
from gptperf.schema import check_schema, number

if TYPE_CHECKING:
    import torch

    from gptperf.perfmodel.calibration import Calibration
    from gptperf.perfmodel.expected import Expected
    from gptperf.perfmodel.hardware import Hardware
    from gptperf.perfmodel.transformer import Prediction

Progress = Callable[[str], None]
SCHEMA = "gptperf.inference/1"
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


def _positive_ints_dropping_repeats(values: Sequence[int], what: str) -> list[int]:
    """`values` sorted, a repeated one kept once (a context or batch given twice is the same
    point); a one-line UserError for a value that is no positive integer, or for none at all.
    Unlike `scaling.results._positive_ints_refusing_repeats`, repeats are no error here."""
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
    out = _positive_ints_dropping_repeats(contexts, "contexts")
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
    return _positive_ints_dropping_repeats(batches, "batches")


def choose_batch_context(config: GPTConfig) -> int:
    """The context of the batch sweep: short, so that the weights (not the KV cache) dominate
    the traffic at small batch and the compute-bound point of the weight matmuls can show."""
    return min(128, config.block_size)


# --- the performance model ---------------------------------------------------------------------


def predict_inference(config: GPTConfig, kind: str, batch: int, seq: int, dtype: str, hardware: Hardware,
                      *, plan: ExecutionPlan | None = None) -> Prediction:
    """The performance model's Prediction of one inference step (weights held in `dtype`) run
    under `plan` (an ExecutionPlan; None: eager)."""
    return predict(config, Workload(kind, batch, seq, dtype), hardware, plan)


def ridge_batch(config: GPTConfig, context: int, dtype: str, hardware: Hardware, limit: int = 1 << 16) -> int | None:
    """Smallest batch whose decode-step weight matmuls are compute-bound (None if none ≤ limit)."""
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
    plan: ExecutionPlan | None = None  # the plan it ran under and was predicted for
    expected_s: float | None = None  # calibrated expected time, None without a calibration
    expected_source: str | None = None  # the calibration's label (device, date, age, torch)

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
        return _ratio(self.time_s, self.predicted_s)

    @property
    def expected_ratio(self) -> float | None:
        """measured / calibrated expected time."""
        return _ratio(self.time_s, self.expected_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "batch": self.batch, "seq": self.seq, "path": self.path,
            "time_s": self.time_s, "predicted_s": self.predicted_s, "ratio_measured_to_predicted": self.ratio,
            "tokens_per_s": self.tokens_per_s, "predicted_tokens_per_s": self.predicted_tokens_per_s,
            "flops": self.flops, "bytes": self.bytes, "arithmetic_intensity": self.arithmetic_intensity,
            "achieved_bandwidth": self.achieved_bandwidth, "achieved_flops_per_s": self.achieved_flops,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "expected_s": self.expected_s, "expected_source": self.expected_source,
            "ratio_measured_to_expected": self.expected_ratio,
            "timing": self.timing,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Point:
        """The inverse of `to_dict` (the tokens of a step follow from its kind and shape)."""
        kind, batch, seq = d["kind"], d["batch"], d["seq"]
        return cls(kind, batch, seq, d["time_s"], d["predicted_s"], d["flops"], d["bytes"],
                   batch if kind.startswith("decode") else batch * seq, d["path"], d["timing"],
                   ExecutionPlan.from_dict(d["plan"]) if d["plan"] is not None else None,
                   d.get("expected_s"), d.get("expected_source"))


def _ratio(slow: float | None, fast: float | None) -> float | None:
    """slow / fast, or None where either side has no time."""
    return slow / fast if slow and fast else None


@dataclass(frozen=True)
class Speedup:
    """The KV cache against recomputing at one context: recompute's time over the cache's,
    measured, on the roofline bound and calibrated (None where a side has no time)."""

    context: int
    measured: float | None
    predicted: float
    expected: float | None

    @classmethod
    def of(cls, cache: Point, recompute: Point) -> Speedup:
        return cls(cache.seq, _ratio(recompute.time_s, cache.time_s),
                   recompute.predicted_s / cache.predicted_s, _ratio(recompute.expected_s, cache.expected_s))


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
    expected_label: str | None = None  # the calibration of the expected times; None: none used

    def speedups(self) -> list[Speedup]:
        """Recompute against the KV cache at each context both were measured at."""
        return [Speedup.of(c, r) for c, r in zip(self.cache, self.recompute, strict=False)]

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
                "expected_prefill_s": p.expected_s,
                "expected_decode_s": d.expected_s * self.new_tokens if d.expected_s else None,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "config": self.config.to_dict(),
            "device": {"type": self.device, "name": self.device_name},
            "dtype": self.dtype,
            "fast_decode": self.fast,
            "hardware": self.hardware,
            "hardware_label": self.hardware_label,
            "expected_label": self.expected_label,
            "ridge_intensity": self.ridge_intensity,
            "cache_vs_recompute": {
                "cache": [p.to_dict() for p in self.cache],
                "recompute": [p.to_dict() for p in self.recompute],
                "speedup": [asdict(x) for x in self.speedups()],
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceResult:
        """The inverse of `to_dict` (a UserError for another schema)."""
        check_schema(d, SCHEMA)
        cvr, sweep, split = d["cache_vs_recompute"], d["batch_sweep"], d["prefill_decode_split"]
        return cls(
            config=GPTConfig.from_dict(d["config"]), device=d["device"]["type"],
            device_name=d["device"]["name"], dtype=d["dtype"], fast=d["fast_decode"],
            hardware=d["hardware"], hardware_label=d["hardware_label"],
            cache=[Point.from_dict(p) for p in cvr["cache"]],
            recompute=[Point.from_dict(p) for p in cvr["recompute"]],
            prefill=[Point.from_dict(p) for p in d["prefill"]], batch_context=sweep["context"],
            batches=[Point.from_dict(p) for p in sweep["points"]], batch_stopped=sweep["stopped"],
            ridge_batch_predicted=sweep["ridge_batch_predicted"],
            knee_batch_predicted=sweep["knee_batch_predicted"],
            knee_batch_measured=sweep["knee_batch_measured"],
            ridge_intensity=number(d["ridge_intensity"]),
            new_tokens=split[0]["new_tokens"] if split else 0, notes=list(d["notes"]),
            plots=dict(d["plots"]), environment=dict(d["environment"]),
            expected_label=d.get("expected_label"),
        )


# --- measuring ---------------------------------------------------------------------------------


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
            release_memory()
            return points, f"stopped at batch {b}: out of memory ({str(err).splitlines()[0][:160]})"
    return points, None


class _Bench:
    """Builds the model once and times its inference steps (`gptperf.steps.build_step`, each
    under its own plan) on one device; each point is predicted for the plan it ran under."""

    def __init__(self, config: GPTConfig, device: torch.device, dtype: str, fast: bool,
                 hardware: Hardware, calibration: Calibration | None = None) -> None:
        from gptperf.runtime import set_matmul_precision, torch_dtype  # deferred: loads torch
        from gptperf.steps.fast_decode import build_model  # deferred: loads torch

        self.config, self.device, self.dtype, self.hw = config, device, dtype, hardware
        self.calibration = calibration  # for the calibrated expected time of each point
        self.host_speeds: list[float] = []  # each eager point's host, over its time at calibration
        set_matmul_precision(dtype)
        self.model = build_model(config, device, torch_dtype(dtype))
        self.eager = ExecutionPlan.eager(config.attention)
        self.fast: ExecutionPlan | None = (ExecutionPlan.default("decode", device.type, fast=True,
                                                attention=config.attention) if fast else None)
        self.seed = 0  # fresh tokens for every point
        cuda = device.type == "cuda"
        self.warmup, self.repeats = (3, 20) if cuda else (2, 5)
        self.notes: list[str] = []

    def _measure(self, kind: str, batch: int, seq: int, plan: ExecutionPlan, repeats: int | None = None) -> Point:
        from gptperf.steps.build import build_step  # deferred: loads torch

        self.seed += 1
        step = build_step(self.config, Workload(kind, batch, seq, self.dtype), plan, self.device,
                          model=self.model, seed=self.seed)
        self.notes.extend(n for n in step.notes if n not in self.notes)
        repeats = repeats or self.repeats
        sampler = self._sampler(kind, step.plan)
        if sampler is None:
            timing = time_fn(step.step, warmup=self.warmup, repeats=repeats, device=self.device,
                             compiled=step.plan.compiled)
        else:  # as `gptperf bench` times a step with the host in its loop: the host sampled between
            timing = time_phases([("step", step.step)], warmup=self.warmup, repeats=repeats,
                                 device=self.device, compiled=step.plan.compiled,
                                 between_steps=sampler).total
            if not sampler.samples:  # too brief for one between its steps: one right after them
                sampler.sample()
        pred = predict_inference(self.config, kind, batch, seq, self.dtype, self.hw, plan=step.plan)
        tokens = batch if kind.startswith("decode") else batch * seq
        e = self._expected(kind, batch, seq, step.plan, sampler)
        return Point(kind, batch, seq, timing.median, pred.time_s, pred.flops, pred.bytes, tokens,
                     "fast" if step.plan.fast else "eager", timing.to_dict(), step.plan,
                     e.step_time_s if e is not None else None, e.label if e is not None else None)

    def _sampler(self, kind: str, plan: ExecutionPlan) -> HostSampler | None:
        """A sampler of the host between the steps of a point whose host is in its loop (not a
        CUDA graph), against a calibration with the host unit of its probe; else None."""
        if self.calibration is None or plan.cuda_graph:
            return None
        return step_sampler(self.calibration, kind, self.device)

    def _expected(self, kind: str, batch: int, seq: int, plan: ExecutionPlan,
                  sampler: HostSampler | None = None) -> Expected | None:
        """The calibrated Expected of the step that ran (None without a calibration, or where
        it cannot cost the step: noted once per reason): its host costs (and a CPU's parallel
        kernels) charged at the speeds `sampler` read among the point's own steps (none: as
        calibrated; a CUDA graph has none)."""
        if self.calibration is None:
            return None

        speed = sampler.speed(self.calibration) if sampler is not None else None
        phases = sampler.phase_speeds(self.calibration) if sampler is not None else None
        if speed is not None:
            self.host_speeds.append(speed)
        parallel = sampler.parallel_speed(self.calibration) if sampler is not None else None
        e, why = calibrated_expected(self.config, Workload(kind, batch, seq, self.dtype), plan,
                                     self.calibration, speed=speed, phase_speeds=phases,
                                     parallel_speed=parallel)
        note = f"no calibrated expected time for {kind}: {why}"
        if why and note not in self.notes:
            self.notes.append(note)
        return e

    def decode(self, batch: int, context: int) -> Point:
        """One decode step at context L (the fast plan, or the model's own KVCache)."""
        if self.fast is not None:
            try:
                return self._measure("decode", batch, context, self.fast)
            except Exception as err:  # noqa: BLE001 - out of memory re-raised; anything else noted
                if is_out_of_memory(err):
                    raise
                self.fast = None
                self.notes.append(f"the fast decode path failed ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:160]}); decode measured eagerly from here on")
                release_memory()
        return self._measure("decode", batch, context, self.eager)

    def recompute(self, batch: int, context: int) -> Point:
        return self._measure("decode_nocache", batch, context, self.eager,
                             repeats=max(3, self.repeats // 2))

    def prefill(self, batch: int, prompt: int) -> Point:
        return self._measure("prefill", batch, prompt, self.eager, repeats=max(3, self.repeats // 2))


def check_study_args(config: GPTConfig, device: torch.device, dtype: str, fast: bool) -> None:
    check_dtype(dtype)
    if device.type == "cpu" and dtype == "fp16":
        raise UserError("dtype 'fp16' needs a GPU; on CPU use fp32 or bf16")
    if fast and device.type != "cuda" and dtype in ("bf16", "fp16"):
        raise UserError("--fast on CPU compiles the step; use it with fp32 (or run on a GPU)")


def run_inference_study(
    config: GPTConfig,
    device: torch.device | str,
    dtype: str,
    contexts: Sequence[int] | None = None,
    batches: Sequence[int] | None = None,
    fast: bool | None = None,
    progress: Progress | None = None,
    hardware: str | Hardware | None = None,
    *,
    batch_context: int | None = None,
    new_tokens: int = 64,
) -> InferenceResult:
    """Measure and predict: cache vs recompute over `contexts`, prefill over the same lengths,
    and the decode step over `batches` at `batch_context`. `fast` (default: on for CUDA) times
    the cached decode step under the fast plan (`ExecutionPlan.default(..., fast=True)`: static
    cache, compiled, CUDA graph on a GPU); recompute and prefill run eagerly. Each point records
    its plan and is predicted for it. `hardware`: `perfmodel.resolve_hardware`'s spec."""
    import torch  # deferred: loads torch

    device = torch.device(device)
    fast = device.type == "cuda" if fast is None else fast
    check_study_args(config, device, dtype, fast)
    contexts = choose_contexts(config, contexts)
    batches = choose_batches(batches, device.type)
    batch_context = choose_batch_context(config) if batch_context is None else batch_context
    config.check_sequence(batch_context)
    dev_name = name_of(device)
    hw = resolve_hardware(hardware, dev_name, device.type, dtype=dtype)
    hw.peak(dtype)  # a one-line error now if the hardware lists no peak for this dtype
    say = progress or (lambda _msg: None)

    result = InferenceResult(
        config=config, device=device.type, device_name=dev_name, dtype=dtype, fast=fast,
        hardware=hw.to_dict(), hardware_label=hw.label, batch_context=batch_context,
        ridge_intensity=hw.ridge_intensity(dtype), new_tokens=new_tokens,
    )

    calibration, why = device_calibration(device)
    if why:
        result.notes.append(f"no calibrated expected time: {why}")
    say(f"building {config.name} ({dtype}) on {dev_name}")
    bench = _Bench(config, device, dtype, fast, hw, calibration)
    _measure_all(bench, result, contexts, batches, say)
    if bench.host_speeds:
        low, high = f"{min(bench.host_speeds):.2f}", f"{max(bench.host_speeds):.2f}"
        result.notes.append(
            "calibrated expected times charge each point's host costs at the host's speed sampled "
            f"among its own steps: ×{low if low == high else f'{low}–{high}'} its time at "
            "calibration; with them as calibrated they are what `gptperf model --calibrated` gives")
    points = result.cache + result.recompute + result.prefill + result.batches
    result.expected_label = next((p.expected_source for p in points if p.expected_source), None)
    release_memory()  # the model and its caches are gone with the bench
    if calibration is not None and any(p.expected_s is not None for p in points):
        _, drift = machine_against_calibration(calibration, device)  # its curves are of then
        if drift:
            result.notes.append(drift)
    result.fast = any(p.path == "fast" for p in result.cache + result.batches)
    done = [p.batch for p in result.batches]
    result.knee_batch_measured = knee_batch(done, [p.time_s for p in result.batches])
    sweep_plan = result.batches[-1].plan if result.batches else None
    result.knee_batch_predicted = knee_batch(batches, [
        predict_inference(config, "decode", b, batch_context, dtype, hw, plan=sweep_plan).time_s
        for b in batches
    ])
    result.ridge_batch_predicted = ridge_batch(config, batch_context, dtype, hw)
    if result.batch_stopped:
        result.notes.append(result.batch_stopped)
    if result.knee_batch_measured is None:
        result.notes.append(
            f"the measured step time never grew with slope >= {KNEE_SLOPE} up to batch "
            f"{done[-1] if done else '—'}: no knee within the sweep"
        )
    plans_note = paths_note(result.cache, result.recompute)
    if plans_note:
        result.notes.append(plans_note)
    slower = [c.seq for c, r in zip(result.cache, result.recompute, strict=False)
              if c.predicted_s > r.predicted_s]
    if slower:  # the bound's reason, where it says the cache loses
        result.notes.append(
            f"the roofline bound has the KV-cache step slower than recomputing at context "
            f"{', '.join(map(str, slower))}: steps this small are bound by each kernel's launch "
            f"latency ({hw.launch_latency_s * 1e6:.3g} µs on {hw.label}), and the cached step "
            "launches more kernels (its cache writes)")
    result.notes.append(f"predictions: {hw.label} (roofline bound)"
                        + (f", {result.expected_label} (expected time)" if result.expected_label else "")
                        + f"; measured on {dev_name} ({device.type})")
    if device.type == "cpu":
        result.notes.append(
            "on CPU a small model's step is dominated by per-operator overhead, which the roofline "
            "counts only as the hardware's launch latency"
        )
    result.environment = environment(device)
    result.environment["dtype"] = dtype
    return result


def plan_labels(points: Sequence[Point]) -> str:
    """The plans `points` ran under, each once, in order ("; " between; "—": none recorded)."""
    return "; ".join(dict.fromkeys(p.plan.label for p in points if p.plan is not None)) or "—"


def paths_note(cache: Sequence[Point], recompute: Sequence[Point]) -> str | None:
    """What the cache-against-recompute speedup compares when the two ran under other plans (the
    recompute step eager beside the fast cached step on a GPU), else None."""
    cached, recomputed = plan_labels(cache), plan_labels(recompute)
    if not cache or not recompute or cached == recomputed:
        return None
    return (f"with the KV cache the step ran as {cached}; recomputing, as {recomputed}: the measured "
            "speedup is of the two paths as each ran, the recompute step's host time included, "
            "and each calibrated time is predicted for its own plan")


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
