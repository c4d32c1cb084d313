"""How fast this machine runs right now, in a fraction of a second: the host's rate of issuing
small torch ops, and the device's rate on one fixed matmul and one fixed copy, each repeated for
about a tenth of a second; on a CPU also its rate of small ops that torch splits over its threads.

`gptperf calibrate` takes a probe as it begins and as it ends, `gptperf validate` as it begins
and as it ends; the same probe compared across them says when the machine itself changed speed
(another tenant, a throttled clock, a virtual machine's burst credits spent).

The host costs' unit is another probe, `host_step_s`: the time of one eager step of the
calibration's own host model (one block), in a run of such steps — the very work the host costs
are measured on. There are two such probes (`HOST_PROBES`): the decode step, the unit of the
inference steps' host costs, and the train step (forward, backward, AdamW), the unit of the train
steps'. `calibrate` samples each among the rounds of the host jobs it is the unit of
(`probes["host"]`: "step_s" and "train_step_s"), and a command that measures a step samples the
probe of its kind between the step's own runs (`HostSampler`; probed after them, `host_speed`,
where no sample was taken), so the calibrated host cost is charged at the host's speed while the
step ran: a host's speed can move within one calibration while the device's does not, and a train
step is charged far more closely in the unit of a train step than of a decode step (BENCHMARKS.md,
"A train-shaped host probe"). The small-op part of the probe is too narrow for that unit: it can
read the host faster while steps run no faster.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptperf import names
from gptperf.errors import UserError
from gptperf.measure.timer import time_fn
from gptperf.memguard import is_out_of_memory
from gptperf.perfmodel import Workload
from gptperf.perfmodel.calibration import HOST_MODEL, host_model_config
from gptperf.plan import ExecutionPlan
from gptperf.units import MIB

if TYPE_CHECKING:
    import torch

    from gptperf.perfmodel.calibration import Calibration

# Relative change of any part beyond which the machine is said to have changed speed (a probe
# repeated back to back on the 2-core development VM varied by up to 20%).
DRIFT_TOLERANCE = 0.25
HOST_OPS = 200  # small adds per host sample
PART_S = 0.1  # seconds each part of a probe takes
MIN_REPEATS, MAX_REPEATS = 5, 2000
# (matmul side, copy bytes) per device type: a few milliseconds at most each
SIZES = {"cpu": (256, 8 * MIB), "cuda": (4096, 256 * MIB)}
PARTS = {"host_s": "host ops", "matmul_s": "the matmul", "copy_s": "the copy",
         "fork_s": "parallel CPU ops"}
REQUIRED_PARTS = ("host_s", "matmul_s", "copy_s")
# A CPU op over more elements than torch's grain (at::internal::GRAIN_SIZE, 32768) runs as a
# parallel region over its threads; one just above it is mostly the region's fork and join. On
# a VM, in spells of minutes, such adds slowed along with the CPU cases while the serial host ops,
# the matmul and the copy did not (BENCHMARKS.md, "Session 37: the CPU's spells of slow fork and
# join"): the part that names those spells.
FORK_ELEMENTS = 40 * 1024
FORK_OPS = 100  # parallel adds per sample
# A case's parallel adds at this many times their calibration time (or its inverse) ran in a
# spell: out of spells they read 0.98-1.02 on the VM, in them 1.38-1.58.
FORK_SPELL = 1.2


@dataclass(frozen=True)
class SpeedProbe:
    """Seconds per small host op, per fixed matmul and per fixed copy (medians of repeats), and
    on a CPU per small parallel op (`FORK_ELEMENTS`; None: not probed, as on a GPU, or a probe
    from before it was taken)."""

    host_s: float
    matmul_s: float
    copy_s: float
    fork_s: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PARTS if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpeedProbe:
        try:
            values = {k: float(d[k]) for k in PARTS if k in REQUIRED_PARTS or k in d}
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"a speed probe needs {', '.join(REQUIRED_PARTS)} in seconds, "
                            f"got {d!r}") from err
        if not all(v > 0 for v in values.values()):
            raise UserError(f"a speed probe's times must be positive, got {values}")
        return cls(**values)

    def slowdown(self, then: SpeedProbe) -> dict[str, float]:
        """now / then per part both probes took: 2.0 means this one took twice as long."""
        return {k: getattr(self, k) / getattr(then, k) for k in PARTS
                if getattr(self, k) is not None and getattr(then, k) is not None}


def _median_over(run: Callable[[], object], device: torch.device, budget_s: float) -> float:
    """Median seconds of `run`, repeated for about `budget_s` (a short probe is as noisy as the
    machine is from one millisecond to the next)."""
    estimate = time_fn(run, warmup=1, repeats=1, device=device).median
    repeats = max(MIN_REPEATS, min(MAX_REPEATS, int(budget_s / max(estimate, 1e-9))))
    return time_fn(run, warmup=1, repeats=repeats, device=device).median


def host_op_s(device: torch.device | str, budget_s: float = PART_S) -> float:
    """Seconds the host takes to issue one small torch op on `device` (median over about
    `budget_s`)."""
    import torch  # deferred: loads torch

    from gptperf.runtime import as_device  # deferred: loads torch

    device = as_device(device)
    small = [torch.ones(64, device=device) for _ in range(3)]

    def host_ops() -> None:  # on a GPU: issued and waited for, so the launch queue never fills
        for _ in range(HOST_OPS):
            torch.add(small[0], small[1], out=small[2])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return _median_over(host_ops, torch.device("cpu"), budget_s) / HOST_OPS


def fork_adds() -> Callable[[], None]:
    """FORK_OPS CPU adds, each just large enough to run as a parallel region over torch's threads
    (`FORK_ELEMENTS`), on tensors made once."""
    import torch  # deferred: loads torch

    a, b, out = (torch.ones(FORK_ELEMENTS) for _ in range(3))

    def adds() -> None:
        for _ in range(FORK_OPS):
            torch.add(a, b, out=out)

    return adds


def fork_op_s(budget_s: float = PART_S) -> float:
    """Seconds of one parallel CPU add (`fork_adds`; median over about `budget_s`)."""
    import torch  # deferred: loads torch

    return _median_over(fork_adds(), torch.device("cpu"), budget_s) / FORK_OPS


def last_speed_probe(calibration: Calibration | None) -> dict[str, Any]:
    """The calibration's last speed probe as saved (`SpeedProbe.to_dict`): the one at its end,
    else at its start; {} for a calibration without one."""
    probes = getattr(calibration, "probes", {})
    return probes.get("end") or probes.get("start") or {}


def fork_unit(calibration: Calibration | None) -> float | None:
    """A parallel CPU add's seconds when the calibration's curves were measured
    (probes["fork"]["unit_s"], read around each family of the passes kept; a calibration from
    before it: its last speed probe's part); None without either."""
    saved = (getattr(calibration, "probes", {}).get("fork", {}).get("unit_s")
             or last_speed_probe(calibration).get("fork_s"))
    return float(saved) if saved else None


def fork_speed(calibration: Calibration | None, fork_s: float | None) -> float | None:
    """A parallel CPU add's seconds `fork_s` over `fork_unit` — 1.4: parallel regions run 1.4x
    slower than then; None when either is missing."""
    unit = fork_unit(calibration)
    return fork_s / unit if fork_s and unit else None


def in_spell(speed: float | None) -> bool:
    """Whether a `fork_speed` says the step ran in a spell of the machine's fork and join: its
    parallel adds at FORK_SPELL times (or 1/FORK_SPELL of) their time at calibration."""
    return speed is not None and not 1 / FORK_SPELL < speed < FORK_SPELL


HOST_PROBES = ("decode", "train")
# host-model steps per sample of `host_step_s`, by probe (a train step is ~8x a decode step's
# host work: 3 of them take about as long as 10 decode steps)
STEP_RUN = {"decode": 10, "train": 3}
# Seconds of host-model steps a host-speed probe spans: a host can run in slow spells of tens to
# hundreds of ms, which a median over 0.1 s catches and one over 1 s does not (BENCHMARKS.md, "The
# GPU host in slow spells").
HOST_WINDOW_S = 1.0
# Steps run untimed first: after a device-bound case the host has idled in synchronisation, and a
# probe right after it may time a cold host, not the one that ran the case's steps (BENCHMARKS.md,
# "The host's speed, measured three more ways").
STEP_WARMUP_S = 0.1


def probe_of(kind: str) -> str:
    """The host probe whose unit a step of workload `kind` is charged in: train for train, decode
    for every inference step."""
    return "train" if kind == "train" else "decode"


def _check_probe(probe: str) -> None:
    if probe not in HOST_PROBES:
        raise UserError(f"unknown host probe {probe!r}; valid: {', '.join(HOST_PROBES)}")


@functools.lru_cache(maxsize=8)
def host_model_phases(device: str, probe: str = "decode") -> tuple[tuple[str, Callable[[], None]], ...]:
    """The phases, (name, run) in order, of the eager fp32 `probe` step (decode: one; train: fwd,
    bwd and opt of the step `gptperf train` runs) of the calibration's host model, one block,
    built once."""
    import torch  # deferred: loads torch

    from gptperf.steps.build import build_step  # deferred: loads torch

    _check_probe(probe)
    plan = (ExecutionPlan.default("train", torch.device(device).type, compile=False)
            if probe == "train" else ExecutionPlan.eager())
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:  # building a step sets the matmul precision of its dtype: the caller's is kept
        step = build_step(host_model_config(1), Workload(probe, HOST_MODEL["batch"], HOST_MODEL["seq"],
                          "fp32"), plan, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    return tuple(step.phases)


def host_model_step(device: str, probe: str = "decode") -> Callable[[], None]:
    """The host model's `probe` step (`host_model_phases`): every phase in order. Used by
    benchmarks (`cpu_spells.py`, `gpu_host_spells.py`) to time the host model's step itself."""
    return whole_step(host_model_phases(device, probe))


def whole_step(phases: Sequence[tuple[str, Callable[[], None]]]) -> Callable[[], None]:
    """One call that runs every one of `phases` in order (the step they tile)."""
    if len(phases) == 1:
        return phases[0][1]

    def every_phase() -> None:
        for _, run in phases:
            run()

    return every_phase


def _sample_phases(phases: Sequence[tuple[str, Callable[[], None]]], steps: int,
                   clock: Callable[[], float]) -> tuple[float, dict[str, float]]:
    """(seconds a step, {phase: its seconds a step}) of `steps` runs of `phases` back to back, the
    clock read once after each phase (the phases tile the step); a step of one phase has none but
    itself: {}."""
    spent = dict.fromkeys((name for name, _ in phases), 0.0)
    t0 = last = clock()
    for _ in range(steps):
        for name, run in phases:
            run()
            now = clock()
            spent[name] += now - last
            last = now
    by_phase = {name: s / steps for name, s in spent.items()} if len(phases) > 1 else {}
    return (last - t0) / steps, by_phase


def host_step_s(device: torch.device | str, budget_s: float | None = None, clock: Callable[[], float] | None = None,
                warmup_s: float = STEP_WARMUP_S, probe: str = "decode") -> float:
    """Host seconds of one eager `probe` step of the calibration's host model (one block, fp32)
    among steps run back to back (median of samples of STEP_RUN[probe] steps over about
    `budget_s`, default HOST_WINDOW_S, after `warmup_s` of untimed steps, in real time; `clock`
    times the samples): the unit of the calibration's host costs of that kind of step."""
    return host_phase_step_s(device, budget_s, clock, warmup_s, probe)[0]


def host_phase_step_s(device: torch.device | str, budget_s: float | None = None,
                      clock: Callable[[], float] | None = None, warmup_s: float = STEP_WARMUP_S,
                      probe: str = "decode") -> tuple[float, dict[str, float]]:
    """`host_step_s`, and the median seconds of each phase of the step from the same samples ({}
    for a step of one phase)."""
    from gptperf.runtime import as_device, synchronize  # deferred: loads torch

    budget_s = HOST_WINDOW_S if budget_s is None else budget_s
    device = as_device(device)
    clock = clock or time.perf_counter
    phases = host_model_phases(str(device), probe)
    run_step = whole_step(phases)
    steps = STEP_RUN[probe]
    warm_until = time.perf_counter() + warmup_s
    run_step()
    while time.perf_counter() < warm_until:  # the host busy, as in a run of steps
        run_step()
    synchronize(device)
    samples: list[float] = []
    by_phase: dict[str, list[float]] = defaultdict(list)
    spent = 0.0
    while len(samples) < MIN_REPEATS or (spent < budget_s and len(samples) < MAX_REPEATS):
        step, parts = _sample_phases(phases, steps, clock)
        samples.append(step)
        for name, seconds in parts.items():
            by_phase[name].append(seconds)
        spent += step * steps
    synchronize(device)
    return statistics.median(samples), {name: statistics.median(s) for name, s in by_phase.items()}


# Seconds of a measurement's own steps between two samples of `HostSampler` (a sample is
# 1 + STEP_RUN[probe] host-model steps, a few ms: 6-23% more time measuring on an H200 machine).
INTERLEAVE_S = 0.05


class HostSampler:
    """The host model's `probe` step (`host_model_step`), timed between the steps of another
    measurement so that both run on the same host: called after each of the measurement's steps
    (`timer.time_phases(between_steps=...)`), it takes a sample of STEP_RUN[probe] steps after one
    untimed once `every_s` of the measurement's own time has passed since the last. The host's
    speed moves within seconds, so a probe taken after a case sees another host than the case's
    steps ran on (BENCHMARKS.md, "The host sampled among the measured steps").

    A step of several phases (the train probe) is timed phase by phase as well (`phase_samples`):
    its phases do not move together (BENCHMARKS.md, "Runs 13–15: host costs charged phase by
    phase").

    On a CPU each sample also times FORK_OPS parallel adds (`fork_samples`, seconds per add): the
    VM's spells of slow fork and join, which the host model's step does not show, in the case's
    own time."""

    def __init__(self, device: torch.device | str, every_s: float | None = None,
                 clock: Callable[[], float] | None = None, probe: str = "decode") -> None:
        from gptperf.runtime import as_device  # deferred: loads torch

        self.device = as_device(device)
        self.probe = probe
        self.every_s = INTERLEAVE_S if every_s is None else every_s
        self.clock = clock or time.perf_counter
        self.samples: list[float] = []
        self.steps = 0  # the measurement's steps seen so far
        self.after_step: list[int] = []  # sample i was taken after step after_step[i] (1-based)
        self._phases = host_model_phases(str(self.device), probe)  # built now, not while measuring
        self._step = whole_step(self._phases)
        # each phase's seconds a step, sample by sample (a step of one phase: none)
        self.phase_samples: dict[str, list[float]] = defaultdict(list)
        self._since: float | None = None
        self.fork_samples: list[float] = []
        self._fork = fork_adds() if self.device.type == "cpu" else None

    def __call__(self) -> None:
        self.steps += 1
        now = self.clock()
        if self._since is None:
            self._since = now
        if now - self._since < self.every_s:
            return
        self.sample()

    def sample(self) -> None:
        """Take one sample now, after the measurement's step `steps` (a measurement too brief for
        `every_s` to pass takes one when it ends)."""
        from gptperf.runtime import synchronize  # deferred: loads torch

        self._step()  # untimed: the first step after the measurement's own
        step, phases = _sample_phases(self._phases, STEP_RUN[self.probe], self.clock)
        self.samples.append(step)
        for name, seconds in phases.items():
            self.phase_samples[name].append(seconds)
        self.after_step.append(self.steps)
        synchronize(self.device)
        if self._fork is not None:
            start = self.clock()
            self._fork()
            self.fork_samples.append((self.clock() - start) / FORK_OPS)
        self._since = self.clock()

    def step_s(self) -> float | None:
        """Median seconds of the host model's step over the samples; None without one."""
        return statistics.median(self.samples) if self.samples else None

    def fork_s(self) -> float | None:
        """Median seconds of a parallel CPU add over the samples; None without one (or on a GPU)."""
        return statistics.median(self.fork_samples) if self.fork_samples else None

    def speed(self, calibration: Calibration | None) -> float | None:
        """`step_s` over the calibration's unit of this probe (as `host_speed`); None without
        samples or without that unit."""
        return speed_over(calibration, self.step_s(), self.probe)

    def parallel_speed(self, calibration: Calibration | None) -> float | None:
        """`fork_s` over the calibration's (`fork_speed`): the speed a CPU step's parallel kernels
        are charged at; None without samples (a GPU's) or without the calibration's unit."""
        return fork_speed(calibration, self.fork_s())

    def phase_s(self) -> dict[str, float]:
        """Median seconds of each phase of the host model's step over the samples ({} for a step
        of one phase, or before the first sample)."""
        return {name: statistics.median(s) for name, s in self.phase_samples.items()}

    def phase_speeds(self, calibration: Calibration | None) -> dict[str, float] | None:
        """Each phase's `phase_s` over the calibration's unit of that phase (`phase_speeds_over`)."""
        return phase_speeds_over(calibration, self.phase_s(), self.probe)


# where a calibration keeps each probe's unit, in probes["host"]
UNIT_KEYS = {"decode": "step_s", "train": "train_step_s"}
# the phases of each probe's step timed apart, each with its own unit (a decode step is one phase)
PROBE_PHASES: dict[str, tuple[str, ...]] = {"decode": (), "train": names.PHASES}


def host_unit(calibration: Calibration | None, probe: str = "decode") -> float | None:
    """Seconds of the host model's `probe` step when `calibration`'s host costs of that kind of
    step were measured (their unit); None for a calibration from before that probe was taken."""
    _check_probe(probe)
    saved = getattr(calibration, "probes", {}).get("host", {}).get(UNIT_KEYS[probe])
    return float(saved) if saved else None


def phase_unit_key(probe: str, phase: str) -> str:
    """Where a calibration keeps the unit of one phase of a probe's step, in probes["host"]."""
    return f"{probe}_{phase}_s"


def phase_units(calibration: Calibration | None, probe: str) -> dict[str, float]:
    """Seconds of each phase of the host model's `probe` step when the host costs were measured
    ({} for a probe of one phase, or a calibration from before phases were timed)."""
    _check_probe(probe)
    saved = getattr(calibration, "probes", {}).get("host", {})
    keys = {phase: phase_unit_key(probe, phase) for phase in PROBE_PHASES[probe]}
    return {phase: float(saved[key]) for phase, key in keys.items() if saved.get(key)}


def phase_speeds_over(calibration: Calibration | None, phase_s: dict[str, float], probe: str
                      ) -> dict[str, float] | None:
    """Each phase's seconds `phase_s` over the calibration's unit of it: the speed that phase's
    host costs are charged at (`perfmodel.expected`'s `phase_speeds`); None when no phase has
    both."""
    units = phase_units(calibration, probe)
    speeds = {p: phase_s[p] / units[p] for p in units if phase_s.get(p, 0) > 0}
    return speeds or None


def probe_for(calibration: Calibration | None, kind: str) -> str:
    """The probe a step of workload `kind` samples against `calibration`: its own (`probe_of`)
    where the calibration has that unit, else decode (a calibration from before the train probe,
    whose train costs are in the decode step's unit)."""
    probe = probe_of(kind)
    return probe if host_unit(calibration, probe) is not None else "decode"


def step_sampler(calibration: Calibration | None, kind: str, device: torch.device | str) -> HostSampler | None:
    """A HostSampler of the probe a step of workload `kind` samples against `calibration`
    (`probe_for`), or None where the calibration has no unit of that probe to read samples by."""
    probe = probe_for(calibration, kind)
    return HostSampler(device, probe=probe) if host_unit(calibration, probe) else None


def speed_over(calibration: Calibration | None, step_s: float | None, probe: str = "decode") -> float | None:
    """The host model's `probe` step `step_s` over the calibration's unit of it; None when either
    is missing."""
    unit = host_unit(calibration, probe)
    return step_s / unit if unit and step_s else None


def take_probe(device: torch.device, budget_s: float = PART_S) -> SpeedProbe:
    """Measure a SpeedProbe on `device` (a torch.device): each part about `budget_s`."""
    import torch  # deferred: loads torch

    side, copy_bytes = SIZES["cuda" if device.type == "cuda" else "cpu"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    src = torch.empty(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    host_s = host_op_s(device, budget_s)
    matmul_s = _median_over(lambda: a @ b, device, budget_s)
    copy_s = _median_over(lambda: dst.copy_(src), device, budget_s)
    fork_s = fork_op_s(budget_s) if device.type == "cpu" else None  # a GPU's kernels do not fork
    return SpeedProbe(host_s, matmul_s, copy_s, fork_s)


def host_speed(calibration: Calibration | None, device: torch.device | str, budget_s: float | None = None,
               probe: str = "decode") -> float | None:
    """The host model's `probe` step time now over its time when `calibration`'s host costs were
    measured (2.0: the host is twice as slow now), probed on `device`; None for a calibration
    without that probe (one from before it was taken): its host costs are used as they are."""
    return host_speeds(calibration, device, budget_s, probe)[0]


def host_speeds(calibration: Calibration | None, device: torch.device | str, budget_s: float | None = None,
                probe: str = "decode") -> tuple[float | None, dict[str, float] | None]:
    """(`host_speed`, each phase's speed (`phase_speeds_over`; None for a step of one phase or a
    calibration without phase units)), from one probe."""
    if host_unit(calibration, probe) is None:
        return None, None
    step, phases = host_phase_step_s(device, budget_s, probe=probe)
    return speed_over(calibration, step, probe), phase_speeds_over(calibration, phases, probe)


MISS_WHY = ("predictions miss by as much for reasons of the machine, not of the model (shared, "
            "throttled or virtual machines change speed)")


def _factors(ratios: Sequence[float]) -> str:
    """'1.80× slower', or over several readings of one way '1.72–1.80× slower'."""
    factors = sorted(r if r > 1 else 1 / r for r in ratios)
    low, high = f"{factors[0]:.2f}", f"{factors[-1]:.2f}"
    return f"{low if low == high else low + '–' + high}× {'slower' if ratios[0] > 1 else 'faster'}"


def speed_note(slowdown: Mapping[str, float], since: str,
               tolerance: float = DRIFT_TOLERANCE) -> str | None:
    """A one-line note when a part of `slowdown` (now / then, `SpeedProbe.slowdown`) is off 1 by
    more than `tolerance` (relative), e.g. 'this machine ran host ops 1.80× slower than at the
    calibration's start (speed probe): predictions miss ...'; None when every part is within it."""
    changed = [f"{PARTS[k]} {_factors([r])}" for k, r in slowdown.items()
               if k in PARTS and abs(r - 1) > tolerance]
    if not changed:
        return None
    return f"this machine ran {', '.join(changed)} than at {since} (speed probe): {MISS_WHY}"


# a calibration taken in a slow (or fast) spell misses every step alike
RECALIBRATE = "if the machine stays so, `gptperf calibrate --force` measures it again"


def slowdown_since_calibration(calibration: Calibration | None, device: torch.device,
                               budget_s: float = PART_S) -> dict[str, float] | None:
    """The machine now over the machine at calibration (`SpeedProbe.slowdown`: 2.0, twice as slow
    now), probed on `device`: per part, over whichever of the calibration's two probes (at its
    start and at its end) is nearer, since its curves were measured between them and one probe
    may have caught a spell; None for a calibration that kept no probe."""
    if not last_speed_probe(calibration):
        return None
    return against_calibration(take_probe(device, budget_s), calibration)


def against_calibration(now: SpeedProbe, calibration: Calibration | None) -> dict[str, float] | None:
    """`now` over the machine at calibration, per part over the nearer of the calibration's two
    probes (`slowdown_since_calibration`); None for a calibration that kept no probe."""
    probes = getattr(calibration, "probes", {})
    saved = [SpeedProbe.from_dict(probes[k]) for k in ("start", "end") if probes.get(k)]
    if not saved:
        return None
    nearest: dict[str, float] = {}
    for then in saved:
        for part, ratio in now.slowdown(then).items():
            if part not in nearest or abs(math.log(ratio)) < abs(math.log(nearest[part])):
                nearest[part] = ratio
    return nearest


def machine_against_calibration(calibration: Calibration, device: torch.device
                                ) -> tuple[dict[str, float] | None, str | None]:
    """For a command that measured a step beside its calibrated prediction:
    (`slowdown_since_calibration`, the note to print or None). A probe that runs out of memory,
    the step's tensors still held, is left out with a note that says so."""
    try:
        slowdown = slowdown_since_calibration(calibration, device)
    except Exception as err:  # noqa: BLE001 - out of memory is told apart; the rest passes through
        if not is_out_of_memory(err):
            raise
        return None, ("the machine was not probed against its calibration: out of memory, the "
                      "step's tensors still held")
    return slowdown, calibration_speed_note(slowdown)


# The parts a command's calibrated prediction charges as calibrated: the host's costs it charges
# at the host-model step sampled as the step ran, and a CPU's fork-and-join spells have a note
# of their own (`measure.bench.spell_note`)
KERNEL_PARTS = ("matmul_s", "copy_s")


def calibration_speed_note(slowdown: Mapping[str, float] | None) -> str | None:
    """`speed_note` of the machine's kernels (KERNEL_PARTS) against its calibration, with the
    advice to measure it again; None when neither moved beyond the tolerance (or nothing was
    probed)."""
    kernels = {k: r for k, r in (slowdown or {}).items() if k in KERNEL_PARTS}
    note = speed_note(kernels, "calibration")
    return note and f"{note}; {RECALIBRATE}"


def speed_range_note(slowdowns: Sequence[Mapping[str, float]], since: str,
                     tolerance: float = DRIFT_TOLERANCE) -> str | None:
    """One note over the probes of several cases (one `slowdown` a case, as `speed_note` takes
    it): each part beyond `tolerance`, slower and faster apart, as the range of its factors and
    how many cases read it, e.g. 'this machine ran host ops 1.72–1.80× slower in 3 and 1.50×
    faster in 1 of 8 cases, the matmul 1.35× faster in 1 of 8 cases than at calibration (speed
    probe): predictions miss ...'; None when none is beyond it."""
    changed = []
    for part in PARTS:
        ratios = [s[part] for s in slowdowns if part in s and abs(s[part] - 1) > tolerance]
        ways = [w for w in ([r for r in ratios if r > 1], [r for r in ratios if r < 1]) if w]
        if ways:
            read = " and ".join(f"{_factors(w)} in {len(w)}" for w in ways)
            changed.append(f"{PARTS[part]} {read} of {len(slowdowns)} cases")
    if not changed:
        return None
    return f"this machine ran {', '.join(changed)} than at {since} (speed probe): {MISS_WHY}"
