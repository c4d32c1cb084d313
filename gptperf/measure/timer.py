"""The one timing harness: warm-up, synchronisation, CUDA events or perf_counter, median of repeats.

Everything in gptperf that reports a time (bench, ceilings, profile, inference, report) times
through `time_fn` or `time_phases`, so every figure follows the same rules:

* warm-up calls run first and are never timed (compilation, autotuning, allocator growth and
  first-touch page faults all happen there; a compiled callable needs `warmup >= 1`);
* on CUDA each timed call sits between two CUDA events on the current stream and the host waits
  once (per batch of repeats in `time_fn`, per step in `time_phases` unless it times a run of
  steps), so the host never stalls the GPU between phases; on CPU `time.perf_counter` brackets
  each call;
* the reported figure is the median of the repeats, with mean, std, min and max beside it and
  a `wide_spread` flag when the repeats disagree by more than `WIDE_SPREAD` (see `Timing`).

This module imports torch only when a CUDA device is asked for.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptperf.errors import UserError

# The most steps one flag asks a command to run (bench's repeats, profile's schedule, scale's
# steps, train's evaluation batches): far past any use (a median settles within hundreds), and
# small enough that a typo's 10**8 is refused at once instead of running for days.
MAX_STEPS = 100_000

# Relative spread std/median above which a timing is flagged as noisy (10%).
WIDE_SPREAD = 0.10

Clock = Callable[[], float]
# progress(stage, done, total): stage is "warm-up" or "timed".
Progress = Callable[[str, int, int], None]


@dataclass
class Timing:
    """Seconds per call over `repeats` timed calls (warm-up excluded)."""

    samples: list[float]
    warmup: int = 0
    clock: str = "perf_counter"  # "cuda_event", "perf_counter" or "custom"

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")

    @property
    def repeats(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def std(self) -> float:
        """Sample standard deviation (n-1); 0 for a single sample."""
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def rel_spread(self) -> float:
        """std / median: how much the repeats disagree, relative to the reported figure."""
        median = self.median
        return self.std / median if median > 0 else math.inf

    @property
    def wide_spread(self) -> bool:
        """True when std/median exceeds WIDE_SPREAD: the median is less trustworthy than usual."""
        return self.rel_spread > WIDE_SPREAD

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "mean_s": self.mean,
            "std_s": self.std,
            "min_s": self.min,
            "max_s": self.max,
            "rel_spread": self.rel_spread,
            "wide_spread": self.wide_spread,
            "wide_spread_threshold": WIDE_SPREAD,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "clock": self.clock,
            "samples_s": list(self.samples),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        """The inverse of `to_dict` (the statistics are recomputed from the samples)."""
        return cls([float(x) for x in d["samples_s"]], warmup=int(d.get("warmup", 0)),
                   clock=str(d.get("clock", "perf_counter")))


@dataclass
class PhaseTiming:
    """Per-phase and whole-step timings of a multi-phase step (e.g. fwd, bwd, opt)."""

    phases: dict[str, Timing]
    total: Timing
    warmup: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.to_dict(),
            "phases": {name: t.to_dict() for name, t in self.phases.items()},
            "warmup": self.warmup,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhaseTiming:
        """The inverse of `to_dict`."""
        return cls({name: Timing.from_dict(t) for name, t in d["phases"].items()},
                   Timing.from_dict(d["total"]), warmup=int(d.get("warmup", 0)),
                   notes=list(d.get("notes", [])))


def _check_counts(warmup: int, repeats: int, compiled: bool) -> None:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats must be a positive integer, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"warmup must be a non-negative integer, got {warmup!r}")
    if compiled and warmup < 1:
        raise UserError(
            f"warmup={warmup} with a compiled model would time the compilation; use --warmup 1 or more"
        )


def _is_cuda(device: Any) -> bool:
    if device is None:
        return False
    if isinstance(device, str):
        return device.split(":")[0] == "cuda"
    return getattr(device, "type", None) == "cuda"


def _default_sync(device: Any) -> Callable[[], None]:
    if not _is_cuda(device):
        return lambda: None
    import torch  # deferred: loads torch

    return lambda: torch.cuda.synchronize(device)


def _announce(progress: Progress | None, warmup: int, repeats: int) -> None:
    """Show the bars before the first (possibly long: compiling) call, not after it."""
    if progress:
        if warmup:
            progress("warm-up", 0, warmup)
        progress("timed", 0, repeats)


def time_fn(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: Any = None,
    clock: Clock | None = None,
    sync: Callable[[], None] | None = None,
    compiled: bool = False,
    progress: Progress | None = None,
) -> Timing:
    """Time `fn()`: `warmup` untimed calls, then `repeats` timed ones.

    On CUDA (and no `clock` given) each call is bracketed by CUDA events and the host
    synchronises once after all repeats. Otherwise `clock` (default `time.perf_counter`) brackets
    each call, and `sync` (default: `torch.cuda.synchronize` on CUDA, nothing on CPU) runs before
    the closing reading. A fake `clock` and `sync` make the harness testable without a device.
    """
    _check_counts(warmup, repeats, compiled)
    sync = sync or _default_sync(device)
    _announce(progress, warmup, repeats)
    for i in range(warmup):
        fn()
        if progress:
            progress("warm-up", i + 1, warmup)
    sync()

    if clock is None and _is_cuda(device):
        import torch  # deferred: loads torch

        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(repeats)]
        for i, (start, end) in enumerate(events):
            start.record()
            fn()
            end.record()
            if progress:
                progress("timed", i + 1, repeats)
        sync()
        samples = [start.elapsed_time(end) / 1e3 for start, end in events]
        return Timing(samples, warmup=warmup, clock="cuda_event")

    read = clock or time.perf_counter
    samples = []
    for i in range(repeats):
        t0 = read()
        fn()
        sync()
        samples.append(read() - t0)
        if progress:
            progress("timed", i + 1, repeats)
    return Timing(samples, warmup=warmup, clock="custom" if clock else "perf_counter")


def time_phases(
    phases: Sequence[tuple[str, Callable[[], Any]]],
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: Any = None,
    clock: Clock | None = None,
    sync: Callable[[], None] | None = None,
    compiled: bool = False,
    before_timed: Callable[[], None] | None = None,
    between_steps: Callable[[], None] | None = None,
    progress: Progress | None = None,
    in_a_run: bool = False,
) -> PhaseTiming:
    """Time a step made of phases: each phase apart and the whole step, `repeats` times.

    On CUDA, events are recorded between phases inside one step and the host synchronises once
    per step, so the phases run back to back as in training; with `in_a_run`, once after the last
    step, so each step is queued behind the one before as generation replays a CUDA-graph decode
    step (the host's time to reach an idle device is then in no step). On CPU (or with a `clock`)
    `sync` runs after each phase before the clock is read. `before_timed` runs once after
    the warm-up and before the first timed step (e.g. to reset peak-memory counters);
    `between_steps` after each timed step, outside its timing (e.g. `probe.HostSampler`).
    A name may come back (forward and backward once per micro-batch under gradient
    accumulation): its time per step is the sum of its runs, and the phases still tile the step.
    """
    _check_counts(warmup, repeats, compiled)
    if not phases:
        raise ValueError("time_phases needs at least one phase")
    names = [name for name, _ in phases]
    sync = sync or _default_sync(device)
    _announce(progress, warmup, repeats)
    for i in range(warmup):
        for _, run in phases:
            run()
        if progress:
            progress("warm-up", i + 1, warmup)
    sync()
    if before_timed:
        before_timed()

    per_phase: dict[str, list[float]] = {name: [] for name in names}
    totals: list[float] = []

    def add(times: Iterable[tuple[str, float]]) -> None:
        step: dict[str, float] = dict.fromkeys(per_phase, 0.0)
        for name, t in times:
            step[name] += t
        for name, t in step.items():
            per_phase[name].append(t)
    use_events = clock is None and _is_cuda(device)
    if use_events:
        import torch  # deferred: loads torch

        queued = []
        for i in range(repeats):
            events = [torch.cuda.Event(enable_timing=True) for _ in range(len(phases) + 1)]
            events[0].record()
            for (_, run), event in zip(phases, events[1:], strict=True):
                run()
                event.record()
            queued.append(events)
            if not in_a_run or i == repeats - 1:
                sync()
                for done in queued:
                    add((name, start.elapsed_time(end) / 1e3)
                        for name, start, end in zip(names, done, done[1:], strict=False))
                    totals.append(done[0].elapsed_time(done[-1]) / 1e3)
                queued = []
            if between_steps:
                between_steps()
            if progress:
                progress("timed", i + 1, repeats)
        kind = "cuda_event"
    else:
        read = clock or time.perf_counter
        for i in range(repeats):
            marks = [read()]
            for _, run in phases:
                run()
                sync()
                marks.append(read())
            add((name, end - start) for name, start, end in zip(names, marks, marks[1:], strict=False))
            totals.append(marks[-1] - marks[0])
            if between_steps:
                between_steps()
            if progress:
                progress("timed", i + 1, repeats)
        kind = "custom" if clock else "perf_counter"

    return PhaseTiming(
        phases={name: Timing(s, warmup=warmup, clock=kind) for name, s in per_phase.items()},
        total=Timing(totals, warmup=warmup, clock=kind),
        warmup=warmup,
    )


def time_runner(runner: Any, *, warmup: int = 3, repeats: int = 10, **kwargs: Any) -> PhaseTiming:
    """`time_phases` over a `gptperf.steps.Step`, refusing `warmup=0` if it is compiled."""
    plan = getattr(runner, "plan", None)
    # what torch.compile returns wraps the module
    compiled = plan.compiled if plan is not None else hasattr(runner.model, "_orig_mod")
    return time_phases(runner.phases, warmup=warmup, repeats=repeats, device=runner.device,
                       compiled=compiled, **kwargs)
