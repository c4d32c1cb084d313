"""What `gptperf scale` measured and predicted, as typed results: the study's spec (`ScaleSpec`),
what one launch measured (`Measured`), each process count's measured and calibrated step with its
speedup, efficiency, bus bandwidth and error (`ScalePoint`), the intra-op threads beside their ideal
(`ThreadPoint`), the performance space (`SpaceCell`), the what-if machines (`WhatIfRow`), and the
whole study (`ScalingStudy`). `to_dict()` is the JSON document ("gptperf.scale/1"); `from_dict`
reads it back. `study.py` runs the launches that produce them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gptperf.errors import UserError
from gptperf.measure.collectives import CollectiveSweep
from gptperf.measure.timer import MAX_STEPS
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.comm import DdpStepPrediction, WhatIfPoint, busbw
from gptperf.schema import check_schema

SCHEMA = "gptperf.scale/1"
MODES: tuple[str, ...] = ("strong", "weak")
CALIBRATED = ("calibrated prediction: compute = the p processes stepping at once without DDP, "
              "measured in the same launch at the same per-process batch, each such step paired with "
              "a DDP step; all-reduce = DDP's buckets on the α–β fit of that launch's all-reduce "
              "sweep")
IDEAL_THREADS = {
    "strong": "ideal: the 1-thread step divided by the threads that can run at once, "
              "min(threads, cores) (no model of intra-op overheads)",
    "weak": "ideal: the 1-thread step, each thread's share of the batch as large as the one "
            "thread's (times threads / cores past the cores; no model of intra-op overheads)"}

WHAT_IF_HARDWARE = "h100-sxm"  # the GPU of a what-if unless named
# A launch starts torchrun and a Python with torch in every rank before its first step
MIN_TIMEOUT_S = 10.0
# Past this a what-if's one flat ring all-reduce says little (real clusters reduce hierarchically)
MAX_WHAT_IF_GPUS = 65536


def _positive_ints_refusing_repeats(values: Sequence[int], what: str) -> tuple[int, ...]:
    """`values` sorted; a one-line UserError for none at all, a value that is no positive integer,
    or one given twice. Unlike `inference.sweep._positive_ints_dropping_repeats`, a repeat is
    refused here."""
    out = tuple(values)
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise UserError(f"{what} must be positive integers, got {list(values)!r}")
    if len(set(out)) != len(out):
        raise UserError(f"{what} has a value twice: {list(values)!r}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class ScaleSpec:
    """What to sweep. `batch` is the global batch (strong) or the per-process batch (weak);
    `threads`: intra-op threads of one process to sweep as well (CPU); `space_batches`: the
    per-process batches of the performance space (default: those the sweep needs);
    `what_if`: (nodes, GPUs per node) pairs to predict on datasheet `what_if_hardware`."""

    config: GPTConfig
    mode: str = "strong"
    procs: tuple[int, ...] = (1, 2)
    threads: tuple[int, ...] | None = None
    batch: int = 12
    seq: int = 64
    dtype: str = "fp32"
    compile: bool = False
    device: str = "auto"
    warmup: int = 3
    steps: int = 10
    seed: int = 0
    space_batches: tuple[int, ...] | None = None
    hardware: str | None = None
    what_if: tuple[tuple[int, int], ...] = ()
    what_if_hardware: str = WHAT_IF_HARDWARE
    intra: str = "nvlink4"
    inter: str = "ib-ndr"
    timeout_s: float = 600.0
    work_dir: str | None = None  # where the launches write (default: a temporary folder)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown scaling mode {self.mode!r}; valid: {', '.join(MODES)}")
        procs = _positive_ints_refusing_repeats(self.procs, "--procs")
        if 1 not in procs:
            raise UserError(f"--procs {','.join(map(str, procs))} lacks 1: T(1) is the baseline of "
                            "speedup and efficiency, and calibrates the prediction")
        object.__setattr__(self, "procs", procs)
        if self.threads is not None:
            object.__setattr__(self, "threads", _positive_ints_refusing_repeats(self.threads, "--threads"))
        if self.space_batches is not None:
            object.__setattr__(self, "space_batches",
                               _positive_ints_refusing_repeats(self.space_batches, "--space-batches"))
        for key, minimum in (("batch", 1), ("seq", 1), ("warmup", 0), ("steps", 1), ("seed", 0)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise UserError(f"{key} must be an integer >= {minimum}, got {v!r}")
        for key in ("warmup", "steps"):
            if getattr(self, key) > MAX_STEPS:
                raise UserError(f"--{key} {getattr(self, key)}: at most {MAX_STEPS} steps a point")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not math.isfinite(self.timeout_s) or self.timeout_s < MIN_TIMEOUT_S:
            raise UserError(f"--timeout {self.timeout_s!r}: give the seconds one launch may take, a "
                            f"number >= {MIN_TIMEOUT_S:g} (a launch starts torchrun and Python "
                            "first; default 600)")
        if self.warmup < 1:  # DDP's first step is its own: buckets in parameter order, rebuilt after
            raise UserError(f"--warmup {self.warmup}: scaling needs at least 1 untimed step; DDP's "
                            "first step reduces in buckets of its own, rebuilt after it"
                            + (" (and --compile compiles in it)" if self.compile else ""))
        if self.mode == "strong":
            bad = [p for p in procs if self.batch % p]
            if bad:
                raise UserError(f"strong scaling splits the global batch {self.batch} over the processes; "
                                f"it does not divide by {', '.join(map(str, bad))}: pick a batch divisible "
                                f"by every --procs value")
        self.config.check_sequence(self.seq)
        if len(set(self.what_if)) != len(self.what_if):
            raise UserError(f"--what-if names a machine twice: "
                            f"{','.join(f'{n}x{g}' for n, g in self.what_if)}")
        for nodes, gpus in self.what_if:
            if nodes * gpus > MAX_WHAT_IF_GPUS:
                raise UserError(f"--what-if {nodes}x{gpus}: {nodes * gpus} GPUs, more than the "
                                f"{MAX_WHAT_IF_GPUS} the α–β model of one flat all-reduce is meant for")
            if self.mode == "strong" and self.batch % (nodes * gpus):
                raise UserError(f"--what-if {nodes}x{gpus}: the global batch {self.batch} does not divide "
                                f"over {nodes * gpus} GPUs")
        if self.what_if and self.what_if_hardware.strip().lower() == "cpu":
            raise UserError("--what-if-hardware 'cpu': the what-if predicts GPUs over NVLink and "
                            "InfiniBand; name a GPU entry, e.g. h100-sxm")

    def per_process_batch(self, procs: int) -> int:
        return self.batch // procs if self.mode == "strong" else self.batch

    @property
    def grid_batches(self) -> tuple[int, ...]:
        """Per-process batches every launch runs: the performance space's columns."""
        needed = {self.per_process_batch(p) for p in self.procs}
        if self.space_batches is not None:
            return tuple(sorted(set(self.space_batches) | needed))
        # both modes' cells: the strong split batch/p and the weak batch itself
        return tuple(sorted(needed | {self.batch // p for p in self.procs if self.batch % p == 0}))

    def thread_batch(self, threads: int) -> int:
        return self.batch if self.mode == "strong" else self.batch * threads

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "procs": list(self.procs),
                "threads": list(self.threads) if self.threads else None, "batch": self.batch,
                "batch_meaning": "global batch" if self.mode == "strong" else "per-process batch",
                "seq": self.seq, "dtype": self.dtype, "compile": self.compile, "device": self.device,
                "warmup": self.warmup, "steps": self.steps, "seed": self.seed,
                "space_batches": list(self.grid_batches), "hardware": self.hardware,
                "what_if": [f"{n}x{g}" for n, g in self.what_if], "what_if_hardware": self.what_if_hardware,
                "intra": self.intra, "inter": self.inter}

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: GPTConfig) -> ScaleSpec:
        """The inverse of `to_dict` for the model `config` (the space's batches come back whole)."""
        what_if = tuple(tuple(int(x) for x in item.split("x")) for item in d["what_if"])
        return cls(config, mode=d["mode"], procs=tuple(d["procs"]),
                   threads=tuple(d["threads"]) if d["threads"] else None, batch=d["batch"],
                   seq=d["seq"], dtype=d["dtype"], compile=d["compile"], device=d["device"],
                   warmup=d["warmup"], steps=d["steps"], seed=d["seed"],
                   space_batches=tuple(d["space_batches"]), hardware=d["hardware"],
                   what_if=what_if, what_if_hardware=d["what_if_hardware"], intra=d["intra"],
                   inter=d["inter"])


# -- what one launch measured ---------------------------------------------------------------

@dataclass(frozen=True)
class Measured:
    """One (processes, threads, per-process batch) run, over its timed steps: medians of the
    slowest rank's step and phases; all-reduce time in flight (union of bucket-ready → reduced)
    and exposed (past the last bucket's readiness, i.e. after backward's compute), mean over
    ranks; skew: spread over ranks of the time their last gradient was ready."""

    procs: int
    threads: int
    per_process_batch: int
    step_s: float
    forward_s: float
    backward_s: float
    optimizer_s: float
    comm_total_s: float
    comm_exposed_s: float
    skew_s: float
    bucket_bytes: tuple[int, ...]
    step_times_s: tuple[float, ...]
    losses: tuple[float, ...]  # every step (warm-up included), mean over ranks

    @property
    def gradient_bytes(self) -> int:
        return sum(self.bucket_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {"step_s": self.step_s, "forward_s": self.forward_s, "backward_s": self.backward_s,
                "optimizer_s": self.optimizer_s, "comm_total_s": self.comm_total_s,
                "comm_exposed_s": self.comm_exposed_s, "skew_s": self.skew_s,
                "bucket_bytes": list(self.bucket_bytes), "gradient_bytes": self.gradient_bytes,
                "step_times_s": list(self.step_times_s), "losses": list(self.losses)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], procs: int, threads: int, per_process_batch: int) -> Measured:
        """The inverse of `to_dict`, given the run's shape (which its point holds)."""
        return cls(procs, threads, per_process_batch, d["step_s"], d["forward_s"], d["backward_s"],
                   d["optimizer_s"], d["comm_total_s"], d["comm_exposed_s"], d["skew_s"],
                   tuple(d["bucket_bytes"]), tuple(d["step_times_s"]), tuple(d["losses"]))


# -- the study and its points ---------------------------------------------------------------

@dataclass(frozen=True)
class ScalePoint:
    """One process count of the sweep: measured, predicted (calibrated), and the metrics."""

    procs: int
    per_process_batch: int
    seq: int
    measured: Measured
    predicted: DdpStepPrediction
    baseline_step_s: float  # T(1): measured, 1 process, at the batch the mode compares with
    mode: str
    roofline_s: float | None = None  # per-process compute at the roofline bound
    predicted_from_one: DdpStepPrediction | None = None  # compute of 1 process alone

    @property
    def sharing(self) -> float:
        """How much slower each of the p processes computes than one alone (measured, without
        communication): 1.0 when they share nothing."""
        one = self.predicted_from_one
        return self.predicted.compute_s / one.compute_s if one is not None else 1.0

    @property
    def global_batch(self) -> int:
        return self.procs * self.per_process_batch

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq

    @property
    def step_s(self) -> float:
        return self.measured.step_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s

    @property
    def tokens_per_s_per_process(self) -> float:
        return self.tokens_per_s / self.procs

    def _speedup(self, t: float) -> float:
        """Strong: S = T(1)/T(p). Weak: the throughput ratio p·T(1)/T(p) (scaled speedup)."""
        return self.baseline_step_s / t * (self.procs if self.mode == "weak" else 1)

    @property
    def speedup(self) -> float:
        return self._speedup(self.step_s)

    @property
    def efficiency(self) -> float:
        """S(p)/p — for weak scaling this is T(1)/T(p), the weak-scaling efficiency."""
        return self.speedup / self.procs

    @property
    def predicted_speedup(self) -> float:
        return self._speedup(self.predicted.step_s)

    @property
    def predicted_efficiency(self) -> float:
        return self.predicted_speedup / self.procs

    @property
    def busbw(self) -> float:
        """Effective bus bandwidth of the gradients' all-reduces (bytes/s): gradient bytes over
        the time an all-reduce was in flight, times 2(p−1)/p. In flight runs from this rank's
        bucket ready to reduced, so waiting for a later rank is in it: below the link's (the
        all-reduce sweep's) when the ranks are skewed."""
        m = self.measured
        if self.procs == 1 or m.comm_total_s <= 0:
            return 0.0
        return busbw(m.gradient_bytes, m.comm_total_s, self.procs)

    @property
    def error(self) -> float | None:
        """measured / predicted − 1 of the step; None at p = 1 (the calibration point)."""
        return None if self.procs == 1 else self.step_s / self.predicted.step_s - 1

    def to_dict(self) -> dict[str, Any]:
        m, pr = self.measured, self.predicted
        d = {
            "procs": self.procs, "threads_per_process": m.threads,
            "per_process_batch": self.per_process_batch, "global_batch": self.global_batch,
            "tokens_per_step": self.tokens_per_step,
            "measured": {
                "step_s": m.step_s, "tokens_per_s": self.tokens_per_s,
                "tokens_per_s_per_process": self.tokens_per_s_per_process,
                "speedup": self.speedup, "efficiency": self.efficiency,
                "comm_total_s": m.comm_total_s, "comm_exposed_s": m.comm_exposed_s,
                "busbw_bytes_per_s": self.busbw, "skew_s": m.skew_s, **m.to_dict(),
            },
            "predicted": {
                "step_s": pr.step_s, "tokens_per_s": self.tokens_per_step / pr.step_s,
                "tokens_per_s_per_process": self.tokens_per_step / pr.step_s / self.procs,
                "speedup": self.predicted_speedup, "efficiency": self.predicted_efficiency,
                "comm_total_s": pr.comm_total_s, "comm_exposed_s": pr.comm_exposed_s,
                "busbw_bytes_per_s": pr.busbw, "compute_s": pr.compute_s,
                "label": pr.label, "detail": pr.to_dict(),
            },
            "error": self.error, "roofline_bound_s": self.roofline_s,
            "baseline_step_s": self.baseline_step_s, "sharing": self.sharing,
        }
        one = self.predicted_from_one
        if one is not None:
            d["predicted_from_one"] = {"step_s": one.step_s, "compute_s": one.compute_s,
                                       "error": self.step_s / one.step_s - 1, "label": one.label,
                                       "detail": one.to_dict()}
        if self.mode == "weak":
            d["measured"]["weak_efficiency"] = self.efficiency
            d["predicted"]["weak_efficiency"] = self.predicted_efficiency
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], seq: int, mode: str) -> ScalePoint:
        """The inverse of `to_dict`, given the study's sequence length and mode."""
        procs, batch = d["procs"], d["per_process_batch"]
        one = d.get("predicted_from_one")
        return cls(procs, batch, seq,
                   Measured.from_dict(d["measured"], procs, d["threads_per_process"], batch),
                   DdpStepPrediction.from_dict(d["predicted"]["detail"]), d["baseline_step_s"],
                   mode, d["roofline_bound_s"],
                   DdpStepPrediction.from_dict(one["detail"]) if one is not None else None)


@dataclass(frozen=True)
class ThreadPoint:
    """One process with `threads` intra-op threads on `cores` cores; predicted: the ideal, each
    core that a thread can run on as fast as the one thread alone (`IDEAL_THREADS`)."""

    threads: int
    batch: int
    seq: int
    step_s: float
    baseline_step_s: float
    mode: str
    cores: int

    @property
    def parallel(self) -> int:
        """Threads that can run at once."""
        return min(self.threads, self.cores)

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.seq / self.step_s

    @property
    def speedup(self) -> float:
        return self.baseline_step_s / self.step_s * (self.threads if self.mode == "weak" else 1)

    @property
    def efficiency(self) -> float:
        return self.speedup / self.threads

    @property
    def predicted_step_s(self) -> float:
        work = 1 if self.mode == "strong" else self.threads  # weak: each thread brings its batch
        return self.baseline_step_s * work / self.parallel

    @property
    def predicted_speedup(self) -> float:
        return float(self.parallel)

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "batch": self.batch, "step_s": self.step_s,
                "baseline_step_s": self.baseline_step_s,
                "tokens_per_s": self.tokens_per_s, "tokens_per_s_per_thread": self.tokens_per_s / self.threads,
                "speedup": self.speedup, "efficiency": self.efficiency,
                "cores": self.cores,
                "predicted": {"step_s": self.predicted_step_s, "speedup": self.predicted_speedup,
                              "efficiency": self.predicted_speedup / self.threads,
                              "label": IDEAL_THREADS[self.mode]}}

    @classmethod
    def from_dict(cls, d: dict[str, Any], seq: int, mode: str) -> ThreadPoint:
        # documents from before the cores were kept: as many cores as threads, as they assumed
        return cls(d["threads"], d["batch"], seq, d["step_s"], d["baseline_step_s"], mode,
                   d.get("cores", d["threads"]))


@dataclass(frozen=True)
class SpaceCell:
    """The performance space: throughput at (processes, per-process batch)."""

    procs: int
    per_process_batch: int
    step_s: float
    tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"procs": self.procs, "per_process_batch": self.per_process_batch, "step_s": self.step_s,
                "tokens_per_s": self.tokens_per_s, "tokens_per_s_per_process": self.tokens_per_s / self.procs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpaceCell:
        return cls(d["procs"], d["per_process_batch"], d["step_s"], d["tokens_per_s"])


@dataclass(frozen=True)
class WhatIfRow:
    """A what-if point with speedup and efficiency against the 1-GPU what-if."""

    point: WhatIfPoint
    speedup: float
    efficiency: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.point.to_dict(), "speedup": self.speedup, "efficiency": self.efficiency}

    @classmethod
    def from_dict(cls, d: dict[str, Any], seq: int) -> WhatIfRow:
        point = {k: v for k, v in d.items() if k not in ("speedup", "efficiency")}
        return cls(WhatIfPoint.from_dict(point, seq), d["speedup"], d["efficiency"])


@dataclass
class ScalingStudy:
    """Everything `gptperf scale` measured and predicted (JSON schema gptperf.scale/1)."""

    spec: ScaleSpec
    points: list[ScalePoint]
    thread_points: list[ThreadPoint]
    space: list[SpaceCell]
    collectives: dict[int, Any]  # procs -> measure.collectives.CollectiveSweep
    what_if: list[WhatIfRow]
    backend: str | None
    device: str
    hardware: str | None  # the roofline bound's hardware label
    launches: list[dict[str, Any]]
    environment: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs_error(self) -> float | None:
        errors = [abs(p.error) for p in self.points if p.error is not None]
        return max(errors) if errors else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "mode": self.spec.mode, "spec": self.spec.to_dict(),
            "model": self.spec.config.to_dict(), "backend": self.backend, "device": self.device,
            "points": [p.to_dict() for p in self.points],
            "threads": [t.to_dict() for t in self.thread_points],
            "space": [c.to_dict() for c in self.space],
            "collectives": {str(p): s.to_dict() for p, s in self.collectives.items()},
            "what_if": [w.to_dict() for w in self.what_if],
            "prediction": self.points[-1].predicted.label if self.points else CALIBRATED,
            "roofline_hardware": self.hardware,
            "max_abs_error": self.max_abs_error,
            "definitions": {
                "step_s": "slowest rank's step, median over timed steps",
                "speedup": "strong: T(1)/T(p) at a fixed global batch; weak: p·T(1)/T(p)",
                "efficiency": "speedup/p; for weak scaling T(1)/T(p)",
                "comm_total_s": "time with a gradient all-reduce in flight (bucket ready to reduced)",
                "comm_exposed_s": "all-reduce time after the last gradient was ready (not hidden by backward)",
                "busbw": "gradient bytes / comm_total_s · 2(p-1)/p: nccl-tests' bus-bandwidth "
                         "formula over the time in flight, which counts waiting for the other "
                         "ranks' buckets (skew) too; the all-reduce sweep's busbw is the link's",
                "skew_s": "spread over ranks of when their last gradient was ready",
                "error": "measured / predicted − 1",
            },
            "launches": self.launches, "environment": self.environment, "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScalingStudy:
        """The inverse of `to_dict` (a UserError for another schema)."""
        check_schema(d, SCHEMA)
        spec = ScaleSpec.from_dict(d["spec"], GPTConfig.from_dict(d["model"]))
        seq, mode = spec.seq, spec.mode
        return cls(
            spec, [ScalePoint.from_dict(p, seq, mode) for p in d["points"]],
            [ThreadPoint.from_dict(t, seq, mode) for t in d["threads"]],
            [SpaceCell.from_dict(c) for c in d["space"]],
            {int(p): CollectiveSweep.from_dict(c) for p, c in d["collectives"].items()},
            [WhatIfRow.from_dict(w, seq) for w in d["what_if"]], d["backend"], d["device"],
            d["roofline_hardware"], list(d["launches"]), dict(d["environment"]), list(d["notes"]),
        )
