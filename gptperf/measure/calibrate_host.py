"""The calibration's host costs: what a step's Python and dispatch cost per block and per step,
measured on the host model (`measure_host`), for `gptperf.measure.calibrate` to keep.

Host costs (`Calibration.host["<mode>:<part>:<dtype>"]`) are measured on a tiny GPT (C 64, 2
heads, vocab 256, B 1, T 8: device time is negligible; compiled at the compiled recordings' B 8,
T 512, where inductor launches the split reductions of real training steps) with 1 and 4
blocks, through the project's own steps: the parts of `steps.train.TrainStep` (fwd, bwd, opt),
the decode_nocache step of `steps.inference` (infer: no grad, no KV cache), its eager prefill
into the model's KV cache (prefill) and its eager decode step with that cache (decode). A
straight line through the two block counts gives `per_layer_s` and `fixed_s` (an eager job in
which a part took no longer with more blocks, as a busy host can time it, is measured once more,
with a note); the compiled forward-only job's model is timed at HOST_DEEP_LAYERS blocks too, and
past 4 blocks its line goes on at the slope to that point (`fit_host_line`). On CUDA a part's
host time is the CPU time of the call among calls run back to back, no synchronisation between
them (the GPU keeps up at these sizes); on a CPU it is the whole call, the last of a run of
CPU_HOST_RUN calls of its step.
The host's speed moves while they are measured (2× within one calibration on the lent H200
machine), so each job's costs are brought to one speed: the host model's own step of the job's
kind (train, or decode for the inference jobs) is sampled after each of the job's timed rounds
(`gptperf.measure.probe.HostSampler`, as a command that measures a step samples it between the
step's runs), each part's time is read round by round against the sample after its round
(`paired_medians`), and the job's costs are scaled to the geometric mean of those units over the jobs
of its kind, kept as `probes["host"]["train_step_s"]` and `["step_s"]` (`fit_host_jobs`). The
train probe's phases are timed apart as well, and each part of a train job is brought to its own
phase's speed (fwd by the probe's fwd, ...), kept as `["train_fwd_s"]`, `["train_bwd_s"]` and
`["train_opt_s"]`: the phases of a step do not move together.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch

from gptperf.measure.calibrate_compiled import RECORD_BATCH, RECORD_SEQ
from gptperf.measure.calibration_plan import COMPILED_DTYPE
from gptperf.measure.calibration_tables import guarded
from gptperf.measure.probe import HostSampler, host_step_s, probe_of
from gptperf.measure.timer import Progress
from gptperf.model.config import GPTConfig
from gptperf.perfmodel.calibration import HOST_DEEP_LAYERS, HOST_MODEL, host_key, host_model_config
from gptperf.perfmodel.workload import Workload
from gptperf.plan import COMPILED, EAGER, ExecutionPlan
from gptperf.runtime import synchronize

# The host-cost model: tiny enough that the device never holds the host up.
HOST_LAYERS: tuple[int, int] = HOST_MODEL["layers"]
HOST_BATCH, HOST_SEQ = HOST_MODEL["batch"], HOST_MODEL["seq"]
# Compiled, it runs the compiled recordings' 4096 tokens (its block as long as their sequence),
# still host-bound: there inductor splits each weight gradient's sum over tokens into more
# kernels, each a launch, as in real training steps (H200: a compiled backward launched 34 kernels
# a block at 4096 tokens, 20 at 8; the line measured at 8 tokens charged real steps' backward
# 0.68-0.85 of their host time, at 4096 tokens 0.94-1.10; benchmarks/gpu_compiled_host_tokens.py).
COMPILED_BATCH, COMPILED_SEQ = RECORD_BATCH, RECORD_SEQ
HOST_PARTS: tuple[str, ...] = ("fwd", "bwd", "opt", "infer", "prefill", "decode", "nograd")
# A compiled train step's optimizer runs eagerly, but it is its own plan's (on CUDA in bf16 the
# master weights and the one-pass master AdamW), not the eager plan's (torch's fused AdamW): the
# compiled train job already runs it every round, and times it too.
COMPILED_PARTS: tuple[str, ...] = ("fwd", "bwd", "opt", "nograd")
HOST_REPEATS, HOST_QUICK_REPEATS, HOST_WARMUP, HOST_MIN_REPEATS = 20, 12, 2, 5
COMPILED_WARMUP = 3  # the first call compiles the forward, the first backward its graph
HOST_JOB_BUDGET_S = {False: 2.0, True: 1.0}  # timed seconds per group of steps (quick: True)
HOST_JOBS: tuple[str, ...] = ("train", "inference")  # each mode's host jobs, in this order
# On a CPU a timed call is the last of a run of this many calls of its step, as `bench` runs a step
# in a run of them. Timed once a round after the other parts and models, the 2-core VM's 1-block
# decode took 242 µs where a run of it took 188 µs a call, and a call after one untimed call
# 206 µs (the host model's and the parts' own caches); the calibration charged a C 160 decode
# 1.2x its time. On CUDA the host issues and the device runs: a call stays timed alone.
CPU_HOST_RUN = 3

# Seconds allowed for the compiled host jobs on CUDA (the whole calibration: <= 120 s on an H200).
# The first always runs, a later one only while compiling so far is under the budget. The first
# compile of a process pays inductor's start (~10 s): on the H200 the train job took 16-27 s
# first and the forward-only one 4-7 s after it (16 s first), so a later job is not judged by the
# one before. The notes say what was left out.
COMPILED_HOST_BUDGET_S = 30.0

# The host jobs ran in a slow spell when their decode unit reads this many times the reference
# (the host model's decode step probed before the kernels and again before the host jobs, the
# faster). On the H200 machine one calibration's jobs read 1.00-1.05 ms where the machine's usual
# unit is 0.35-0.43 ms, and their per-layer costs rose 2.0-3.0x while the unit rose 1.6-1.9x:
# scaling by the unit does not undo a spell, so validate then missed by up to 33%.
HOST_SPELL = 1.4
SETTLED = 1.15  # ... so they are measured again once a probe reads within this of the reference
SETTLE_WAIT_S = 10.0  # at most this long waited for that
REFERENCE_S = 0.2  # seconds of decode steps a reference probe samples


@dataclass(frozen=True)
class HostCosts:
    """What `measure_host` measured: `costs["<mode>:<part>:<dtype>"]` = {"per_layer_s",
    "fixed_s"} at the host speed where the host model's step of each probe takes `units[probe]`
    (a probe absent: no job of its kind ran) and each phase of it `phase_units[probe][phase]`
    (a probe of several phases), notes, and each job's own unit by
    "<mode>:<train|inference>:<dtype>" (`job_units`)."""

    costs: dict[str, dict[str, float]]
    units: dict[str, float]
    notes: list[str]
    job_units: dict[str, float] = field(default_factory=dict)
    phase_units: dict[str, dict[str, float]] = field(default_factory=dict)


# probe, mode, dtype, times, unit, and the unit of each phase of the probe's step ({}: one phase)
HostJob = tuple[str, str, str, dict[int, dict[str, float]], float, dict[str, float]]


def fit_host_jobs(measured: Sequence[HostJob]) -> tuple[dict[str, dict[str, float]], dict[str, float],
                                                         list[str], dict[str, dict[str, float]]]:
    """(host, units, notes, phase_units): `host["<mode>:<part>:<dtype>"]` fitted from each job's
    times per block count and scaled to one host speed per probe. A job is (probe, mode, dtype,
    times, unit, phases): `unit` is the host model's `probe` step sampled among the job's rounds
    (`probe.HostSampler`), so a job measured on a host 1.3× slower has its costs divided by 1.3
    against the others of its probe. `units[probe]`, the geometric mean of that probe's units, is
    the speed its jobs' costs are at; a command that measures a step later samples the same step
    among its own and compares. `phases` holds the probe step's phases sampled the same way: a
    part named as one of them is scaled by that phase alone, to `phase_units[probe][phase]`
    (their geometric mean). A note per probe says how far the host moved between its jobs
    (none within 5%).

    (On the H200 machine an eager fp32 decode's host cost came out 1.33× the bf16 one, the same
    ops, because the host slowed between their jobs: validate missed that case by 32%. In two
    validation runs a unit timed inside the rounds doubled validate's median error — validate then probed
    the host after each case, not among its steps.)"""
    by_probe: dict[str, list[float]] = defaultdict(list)
    by_phase: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for probe, *_, unit, phases in measured:
        by_probe[probe].append(unit)
        for phase, seconds in phases.items():
            by_phase[probe][phase].append(seconds)
    units = {p: statistics.geometric_mean(us) for p, us in by_probe.items()}
    phase_units = {p: {ph: statistics.geometric_mean(us) for ph, us in by.items()} for p, by in by_phase.items()}
    host: dict[str, dict[str, float]] = {}
    for probe, mode, dtype, times, unit, phases in measured:
        for part in times.get(HOST_LAYERS[0], {}):
            scale = (phase_units[probe][part] / phases[part] if part in phases
                     else units[probe] / unit)
            fit = fit_host_line(times, part)
            host[host_key(mode, part, dtype)] = {k: v * scale if k.endswith("_s") else v
                                                 for k, v in fit.items()}
    notes = [f"host costs: the host model's {p} step took {min(us) * 1e6:.0f}–{max(us) * 1e6:.0f} µs "
             f"among the {len(us)} {p} probe's host jobs' rounds (×{max(us) / min(us):.2f}); each "
             f"job's costs are scaled to {units[p] * 1e6:.0f} µs"
             for p, us in by_probe.items() if max(us) / min(us) > 1.05]
    return host, units, notes, phase_units


def host_tokens(mode: str) -> tuple[int, int]:
    """(batch, seq) of the host model's steps in `mode` (see `HOST_MODEL`)."""
    return (COMPILED_BATCH, COMPILED_SEQ) if mode == COMPILED else (HOST_BATCH, HOST_SEQ)


def host_config(n_layer: int, mode: str = EAGER) -> GPTConfig:
    """The tiny GPT whose steps' host cost is measured in `mode` (`HOST_MODEL`, `n_layer`
    blocks), its block as long as the mode's sequence: the eager one is the host probe's model."""
    return host_model_config(n_layer, block_size=max(HOST_MODEL["block_size"], host_tokens(mode)[1]))


def flat_parts(times: dict[int, dict[str, float]], layers: tuple[int, int] = HOST_LAYERS) -> list[str]:
    """The parts whose step took no longer with `layers[1]` blocks than with `layers[0]`: a line
    through them charges no cost a block (a busy host timed the small model slow)."""
    lo, hi = layers
    return sorted(p for p, t in times.get(lo, {}).items() if times.get(hi, {}).get(p, math.inf) <= t)


def fit_host_line(times: dict[int, dict[str, float]], part: str) -> dict[str, float]:
    """`part`'s host line (`perfmodel.calibration.host_line_s`): the straight line through its
    times at HOST_LAYERS, and where it was timed at HOST_DEEP_LAYERS too, past the last of them
    the slope to that point (not below zero)."""
    lo, hi = HOST_LAYERS
    fit = fit_line(times[lo][part], times[hi][part])
    deep = times.get(HOST_DEEP_LAYERS, {}).get(part)
    if deep is not None:
        at_hi = fit["fixed_s"] + fit["per_layer_s"] * hi
        fit |= {"beyond_layers": float(hi),
                "beyond_per_layer_s": max((deep - at_hi) / (HOST_DEEP_LAYERS - hi), 0.0)}
    return fit


def host_layers(mode: str, what: str) -> tuple[int, ...]:
    """The block counts a host job's model is timed at: HOST_LAYERS, and for the compiled
    forward-only job HOST_DEEP_LAYERS too (`perfmodel.calibration.HOST_DEEP_LAYERS`). (Timed
    16 blocks deep on an H100, the eager jobs' slopes past 4 blocks came within 9% of their 1-4
    lines and validate moved no closer (benchmarks/validate_host_knee.py --only eager): they stay
    straight.)"""
    return HOST_LAYERS + ((HOST_DEEP_LAYERS,) if mode == COMPILED and what == "inference" else ())


def host_model_names(mode: str) -> list[str]:
    """The names of the host models `mode`'s jobs time, at every block count any of them uses
    (`host_layers`): what a calibration names among its shapes so that no validation case runs
    them."""
    layers = sorted({n for what in HOST_JOBS for n in host_layers(mode, what)})
    return [host_config(n, mode).name for n in layers]


def fit_line(t1: float, t4: float, layers: tuple[int, int] = HOST_LAYERS) -> dict[str, float]:
    """{"per_layer_s", "fixed_s"}: the straight line through (layers[0], t1) and (layers[1], t4),
    neither below zero (noise can tilt a line through two points)."""
    lo, hi = layers
    per_layer = max((t4 - t1) / (hi - lo), 0.0)
    return {"per_layer_s": per_layer, "fixed_s": max(t1 - lo * per_layer, 0.0)}


Parts = dict[str, Callable[[], None]]


def _train_parts(config: GPTConfig, dtype: str, mode: str, device: torch.device) -> Parts:
    """fwd, bwd, opt of the train step `gptperf train` runs (fused AdamW on CUDA, as its plan)."""
    from gptperf.steps.build import build_step  # deferred: tests patch it

    plan = ExecutionPlan.default("train", device.type, compile=mode == COMPILED,
                                 attention=config.attention, dtype=dtype)
    step = build_step(config, Workload("train", *host_tokens(mode), dtype), plan, device)
    train = step.train
    assert train is not None  # a train step always has one
    return {"fwd": train.forward, "bwd": train.backward, "opt": train.optimizer_step}


def _inference_part(config: GPTConfig, kind: str, dtype: str, mode: str,
                    device: torch.device) -> Callable[[], None]:
    """The one-phase inference step of `kind` (decode_nocache: infer; prefill; decode: KV-cache
    decode)."""
    from gptperf.steps.build import build_step  # deferred: tests patch it

    plan = ExecutionPlan(mode, config.attention)
    step = build_step(config, Workload(kind, *host_tokens(mode), dtype), plan, device)
    return step.phases[0][1]


def time_host_parts(groups: dict[int, Parts], timed: Sequence[str], device: torch.device, *,
                    warmup: int = HOST_WARMUP, repeats: int = HOST_REPEATS,
                    budget_s: float | None = None, min_repeats: int = HOST_MIN_REPEATS,
                    clock: Callable[[], float] = time.perf_counter,
                    between_rounds: Callable[[], None] | None = None,
                    run_of: int = 1, chained: bool = False,
                    rounds: dict[int, dict[str, list[float]]] | None = None,
                    ) -> dict[int, dict[str, float]]:
    """Median host seconds of each part in `timed`, per block count: every part of every group
    runs in order once a round, the groups interleaved (slow drift of the machine hits each alike),
    `warmup` rounds untimed, then `repeats` timed ones — fewer (at least `min_repeats`) once the
    timed rounds have taken `budget_s` (a busy machine). `between_rounds` runs after each timed
    round, outside the parts' times (e.g. a `probe.HostSampler`). With `run_of` n, each timed call
    is the last of n calls in a row of its part — of its group's parts in order where they are
    `chained` (the phases of one step: a backward needs its forward). `rounds`, when given, is
    filled with every timed round's seconds, in order, by block count and part.

    The rounds run back to back, the device synchronised only after the warm-up and at the end,
    as `bench` runs a step: on the H200 machine a tiny decode step took 722 µs of host time when
    called with the GPU idle after a synchronisation, 454 µs behind a busy queue and 367 µs a
    step in a run of steps (`benchmarks/gpu_host_cost.py --queue`). The host model's kernels are
    too small to hold the host up."""
    samples = rounds if rounds is not None else {}
    samples.update({n: {p: [] for p in parts if p in timed} for n, parts in groups.items()})
    timed_from = None
    for i in range(warmup + repeats):
        if i == warmup:
            synchronize(device)
            timed_from = clock()
        elif (timed_from is not None and budget_s is not None and i - warmup >= min_repeats
              and clock() - timed_from > budget_s):
            break
        for n, parts in groups.items():
            for _ in range(run_of - 1 if chained else 0):
                for run in parts.values():
                    run()
            for part, run in parts.items():
                for _ in range(0 if chained else run_of - 1):
                    run()
                t0 = clock()
                run()
                t1 = clock()
                if i >= warmup and part in samples[n]:
                    samples[n][part].append(t1 - t0)
        if i >= warmup and between_rounds is not None:
            between_rounds()
    synchronize(device)
    return {n: {p: statistics.median(s) for p, s in by_part.items()} for n, by_part in samples.items()}


def paired_medians(rounds: dict[int, dict[str, list[float]]], samples: Sequence[float],
                   phase_samples: dict[str, list[float]]) -> dict[int, dict[str, float]] | None:
    """Each part's seconds per block count, read round by round against the host-model sample
    taken right after its round: median(part / sample) × median(sample), where a part named as
    a phase of the probe's step is read against that phase's samples. None when a part's rounds
    and its samples do not pair one to one.

    The lent H200 machine's host runs in slow spells of 30-540 ms, a round with its sample 20-40
    ms: a part and the sample after it mostly share the host's state, while the parts' median and
    the samples' median each fall on either side of a spell as it happens."""
    out: dict[int, dict[str, float]] = {}
    for n, by_part in rounds.items():
        out[n] = {}
        for part, times in by_part.items():
            against = phase_samples.get(part) or samples
            if not times or len(against) != len(times) or min(against) <= 0:
                return None
            over = statistics.median(t / s for t, s in zip(times, against, strict=True))
            out[n][part] = over * statistics.median(against)
    return out


def host_groups(dtype: str, mode: str, device: torch.device, what: str,
                layers: Iterable[int] | None = None) -> dict[int, Parts]:
    """Per block count in `layers` (default: the job's `host_layers`), the parts of the train
    steps (`what` "train") or the inference steps."""
    groups: dict[int, Parts] = {}
    for n in host_layers(mode, what) if layers is None else layers:
        config = host_config(n, mode)
        if what == "train":
            groups[n] = _train_parts(config, dtype, mode, device)
        else:
            # the forward workload: no grad, autocast (cheaper than a train step's forward)
            groups[n] = {"nograd": _inference_part(config, "forward", dtype, mode, device)}
            if mode == EAGER:
                groups[n]["infer"] = _inference_part(config, "decode_nocache", dtype, mode, device)
                # its KV-cache writes are ~10% more ops a layer than decode_nocache's recompute:
                # charged as infer, prefill measured 1.21-1.27x its host cost on the H200
                groups[n]["prefill"] = _inference_part(config, "prefill", dtype, mode, device)
                groups[n]["decode"] = _inference_part(config, "decode", dtype, mode, device)
    return groups


def measure_host(device: torch.device, dtypes: Iterable[str], *, quick: bool = False,
                 compiled: bool | None = None, progress: Progress | None = None,
                 budget_s: float = COMPILED_HOST_BUDGET_S) -> HostCosts:
    """`HostCosts`: `costs["<mode>:<part>:<dtype>"] = {"per_layer_s", "fixed_s"}` for every dtype
    in eager mode, and compiled (`compiled`, default: on CUDA) for fwd, bwd and nograd in
    COMPILED_DTYPE when it is among `dtypes` — a later compiled job only while compiling so far
    is under `budget_s`; every job's costs brought to one host speed (`fit_host_jobs`)."""
    dtypes = list(dtypes)
    compiled = device.type == "cuda" if compiled is None else compiled
    repeats = HOST_QUICK_REPEATS if quick else HOST_REPEATS
    jobs = [(EAGER, dt, what) for dt in dtypes for what in HOST_JOBS]
    if compiled and COMPILED_DTYPE in dtypes:
        jobs += [(COMPILED, COMPILED_DTYPE, what) for what in HOST_JOBS]
    measured: list[HostJob] = []
    job_units: dict[str, float] = {}
    notes: list[str] = []
    compiling_s = 0.0
    for done, (mode, dtype, what) in enumerate(jobs):
        if progress:
            progress("host", done, len(jobs))
        if mode == COMPILED and compiling_s > budget_s:
            notes.append(f"compiled host cost of the {what} step left out: compiling took "
                         f"{compiling_s:.0f} s of the {budget_s:.0f} s allowed")
            continue
        start = time.perf_counter()
        timed = [p for p in HOST_PARTS if mode == EAGER or p in COMPILED_PARTS]
        warmup = COMPILED_WARMUP if mode == COMPILED else HOST_WARMUP

        probe = probe_of(what)  # the host model's step the job's costs are in units of

        def measure(dtype: str = dtype, mode: str = mode, what: str = what, timed: list[str] = timed,
                    warmup: int = warmup, probe: str = probe,
                    ) -> tuple[tuple[dict[int, dict[str, float]], float, dict[str, float]], list[str]]:
            groups = host_groups(dtype, mode, device, what)
            # warmed up first (a compiled part compiles in its first call)
            time_host_parts(groups, [], device, warmup=warmup, repeats=0)
            # the unit sampled among the rounds, as validate samples the host among a case's
            # steps: on the H200 machine a probe for a second after a case read 0.54-1.25 of the
            # calibration's unit where samples among its steps read 0.56-1.30, case by case apart
            sampler = HostSampler(device, every_s=0.0, probe=probe)
            rounds: dict[int, dict[str, list[float]]] = {}
            times = time_host_parts(groups, timed, device, warmup=0, repeats=repeats,
                                    budget_s=HOST_JOB_BUDGET_S[quick], between_rounds=sampler,
                                    run_of=CPU_HOST_RUN if device.type == "cpu" else 1,
                                    chained=what == "train", rounds=rounds)
            times = paired_medians(rounds, sampler.samples, sampler.phase_samples) or times
            return (times, sampler.step_s() or host_step_s(device, probe=probe),
                    sampler.phase_s()), []

        if mode == COMPILED:
            (times, unit, phases), failed = guarded(f"compiled host cost of the {what} step",
                                                    measure, ({}, 0.0, {}))
            notes += failed
            took = time.perf_counter() - start
            compiling_s += took
            notes.append(f"compiled host cost of the {what} step: {took:.0f} s with its compilation")
        else:
            (times, unit, phases), _ = measure()
            flat = flat_parts(times)
            if flat:  # measured again once: a line with no cost a block under-charges deep models
                again = measure()[0]
                if len(flat_parts(again[0])) < len(flat):
                    times, unit, phases = again
                notes.append(_flat_note(mode, what, dtype, flat, flat_parts(times)))
        if times:
            measured.append((probe, mode, dtype, times, unit, phases))
            job_units[host_key(mode, what, dtype)] = unit
    if progress:
        progress("host", len(jobs), len(jobs))
    host, units, drift, phase_units = fit_host_jobs(measured)
    notes += drift
    if compiled and COMPILED_DTYPE not in dtypes:
        notes.append(f"compiled host costs are measured in {COMPILED_DTYPE}, not among the dtypes "
                     f"{dtypes}: left out")
    return HostCosts(host, units, notes, job_units, phase_units)


def _flat_note(mode: str, what: str, dtype: str, flat: list[str], still: list[str]) -> str:
    lo, hi = HOST_LAYERS
    said = (f"host costs of the {mode} {what} step in {dtype}: {', '.join(flat)} took no longer "
            f"with {hi} blocks than with {lo} (a busy host); measured again: ")
    if not still:
        return said + "each part now takes longer with more blocks"
    return said + (f"{', '.join(still)} still not, charged no cost a block (deep models' host time "
                   "under-charged): `gptperf calibrate --force` on a quieter machine")


def measure_host_settled(measure: Callable[[], HostCosts], reference_s: float, time_left_s: float,
                         probe: Callable[[], float], *, clock: Callable[[], float] = time.perf_counter,
                         ) -> HostCosts:
    """`measure()` (the host jobs), and once more if their decode unit reads over HOST_SPELL times
    `reference_s` (the host model's decode step probed outside the jobs) and a second measurement,
    as long as the first, fits in what is left of `time_left_s` (counted from the first's start):
    first waiting, up to SETTLE_WAIT_S and never past that budget, for `probe()` (seconds of a
    decode step now) to read within SETTLED of the reference. The measurement with the faster unit
    is kept, with a note.

    (The check before counted the second measurement and the whole wait against the time left,
    not the first's time too: two H100 calibrations in spells took 115 and 116 s of the 120.)"""
    start = clock()
    first = measure()
    took = clock() - start
    unit = first.units.get("decode")
    if unit is None or reference_s <= 0 or unit <= HOST_SPELL * reference_s:
        return first
    read = (f"the host model's decode step read {unit * 1e6:.0f} µs among the host jobs' rounds, "
            f"{unit / reference_s:.2f}× the {reference_s * 1e6:.0f} µs probed before them (a slow "
            "spell of the host)")
    wait_s = min(SETTLE_WAIT_S, time_left_s - 2 * took)  # the second takes about as long
    if wait_s < 0:
        return replace(first, notes=[*first.notes, f"{read}; not measured again: "
                                     f"{max(time_left_s - took, 0.0):.0f} s left of the calibration's "
                                     f"budget, the jobs take {took:.0f} s"])
    waited_from = clock()
    now = probe()
    while now > SETTLED * reference_s and clock() - waited_from < wait_s:
        now = probe()
    waited = clock() - waited_from
    second = measure()
    again = second.units.get("decode", math.inf)
    kept = second if again < unit else first
    return replace(kept, notes=[*kept.notes, (
        f"{read}; measured again after {waited:.0f} s, when a probe read {now * 1e6:.0f} µs: "
        f"{again * 1e6:.0f} µs; kept the {'second' if kept is second else 'first'}")])
