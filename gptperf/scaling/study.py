"""Strong and weak scaling of data-parallel training, measured through torchrun and predicted.

    study = run_scaling_study(ScaleSpec(preset("tiny"), mode="strong", procs=(1, 2), batch=12))
    study.points[1].speedup, study.points[1].predicted_step_s, study.to_dict()

One torchrun launch per process count (`launch.py`); each runs the per-process batches of the
performance space (strong: global batch / p; weak: the batch itself), and with more than one
process first sweeps all-reduce sizes. Studies of one model run together (`run_scaling_studies`:
the report's strong and weak) share those launches. Per point: time per step (the slowest rank's,
median over steps), throughput (tokens/s, and per process), speedup S(p) = T(1)/T(p) and
efficiency S(p)/p (strong), weak-scaling efficiency T(1)/T(p) (weak), all-reduce time in flight
and exposed (not hidden by backward), bus bandwidth (busbw = algbw·2(p−1)/p) and skew between
ranks.

The prediction of a p-process step is calibrated, and says so: its compute (forward, backward,
optimizer) is measured in the same launch, the p processes stepping at once at the same
per-process batch but without DDP, one such step after every DDP step (so it holds what sharing
the machine costs — cores, caches, memory bandwidth, other work running then; on a GPU machine
next to nothing); its communication is DDP's buckets
(perfmodel.comm) on the α–β fit of the all-reduce sweep of the same launch, overlapped with
backward as far as the predicted order of backward allows. The same communication on the
one-process compute (`predicted_from_one`) is kept beside it: their ratio is what the processes
cost each other (`sharing`).

The typed results (`ScaleSpec`, `ScalingStudy` and its points) are in `results.py`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf import names
from gptperf.envinfo import device_name
from gptperf.errors import UserError
from gptperf.measure.collectives import CollectiveSweep
from gptperf.perfmodel import Workload, get_hardware, predict, resolve_hardware
from gptperf.perfmodel.comm import (
    AlphaBeta,
    DdpStepPrediction,
    WhatIfPoint,
    backward_ready_fractions,
    ddp_buckets,
    gradient_bytes_per_element,
    gradient_tensors,
    predict_ddp_step,
    what_if,
)
from gptperf.plan import ExecutionPlan
from gptperf.scaling import launch as launcher
from gptperf.scaling.launch import Launch, LaunchError
from gptperf.scaling.results import (
    CALIBRATED,
    Measured,
    ScalePoint,
    ScaleSpec,
    ScalingStudy,
    SpaceCell,
    ThreadPoint,
    WhatIfRow,
)
from gptperf.scaling.worker import SPEC, WorkerSpec

if TYPE_CHECKING:
    from gptperf.perfmodel.hardware import Hardware

OVERLAP = "overlapped with backward as far as the order of backward allows"
NO_OVERLAP = ("none of it hidden: gloo's all-reduce runs on the CPU, and every core computes "
              "(processes × threads ≥ cores)")
FROM_ONE = ("the same all-reduce on the compute of 1 process alone (this sweep's p = 1 run at the "
            "same per-process batch)")

Progress = Callable[[str], None]


# -- what one launch measured ---------------------------------------------------------------

def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total



def measured_from_ranks(ranks: list[dict[str, Any]], run_index: int, key: str = "steps") -> Measured:
    """Reduce the gathered per-rank records of one run (`ranks[r]['runs'][run_index][key]`;
    key "solo_steps": the paired steps without DDP)."""
    runs = [{**r["runs"][run_index], "steps": r["runs"][run_index][key]} for r in ranks]
    p = len(runs)
    n_steps = len(runs[0]["steps"])
    timed = [i for i in range(n_steps) if not runs[0]["steps"][i]["warmup"]] or list(range(n_steps))
    F, B, OPT = names.FORWARD, names.BACKWARD, names.OPTIMIZER_PHASE
    step_t, fwd, bwd, opt, comm, exposed, skew = [], [], [], [], [], [], []
    for i in timed:
        steps = [run["steps"][i] for run in runs]
        marks = [s["marks"] for s in steps]
        step_t.append(max(m[OPT] for m in marks))
        fwd.append(max(m[F] for m in marks))
        bwd.append(max(m[B] - m[F] for m in marks))
        opt.append(max(m[OPT] - m[B] for m in marks))
        per_rank_total, per_rank_exposed, last_ready = [], [], []
        for s in steps:
            spans = [(b["ready_s"], b["done_s"]) for b in s["buckets"] if b["done_s"] is not None]
            if not spans:
                continue
            ready = max(a for a, _ in spans)
            per_rank_total.append(_union(spans))
            per_rank_exposed.append(max(0.0, max(b for _, b in spans) - ready))
            last_ready.append(ready)
        comm.append(statistics.fmean(per_rank_total) if per_rank_total else 0.0)
        exposed.append(statistics.fmean(per_rank_exposed) if per_rank_exposed else 0.0)
        skew.append(max(last_ready) - min(last_ready) if len(last_ready) > 1 else 0.0)
    last = runs[0]["steps"][timed[-1]]["buckets"]
    losses = tuple(statistics.fmean(run["steps"][i]["loss"] for run in runs) for i in range(n_steps))
    med = statistics.median
    return Measured(p, int(ranks[0]["threads"]), int(runs[0]["per_process_batch"]), med(step_t),
                    med(fwd), med(bwd), med(opt), med(comm), med(exposed), med(skew),
                    tuple(b["bytes"] for b in sorted(last, key=lambda b: b["index"])),
                    tuple(step_t), losses)



# -- running it -----------------------------------------------------------------------------

def _worker_spec(spec: ScaleSpec, batches: Sequence[int], threads: int, collectives: bool,
                 out: Path, solo: Sequence[int] = ()) -> WorkerSpec:
    return WorkerSpec(spec.config.to_dict(), tuple(batches), spec.seq, str(out), tuple(solo), dtype=spec.dtype,
                      compile=spec.compile, device=spec.device, warmup=spec.warmup, steps=spec.steps,
                      threads=threads, seed=spec.seed, collectives=collectives,
                      timeout_s=max(60.0, spec.timeout_s))


def _device_type(spec: ScaleSpec) -> tuple[str, str, int]:
    """(device type, device name, GPUs) of `spec.device`, checked against the process counts."""
    import torch  # deferred: loads torch

    from gptperf.runtime import resolve_device  # deferred: loads torch

    dev = resolve_device(spec.device)
    gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.type == "cuda" and max(spec.procs) > gpus:
        raise UserError(f"--procs {max(spec.procs)} needs {max(spec.procs)} GPUs; this machine has {gpus} "
                        "(one process per GPU)")
    if dev.type == "cuda" and spec.threads:
        raise UserError("--threads sweeps intra-op CPU threads; on a GPU leave it out")
    return dev.type, device_name(dev), gpus


def _on(compute: Measured, buckets: list[Any], link: AlphaBeta | None, p: int,
        label: str, overlap: bool) -> DdpStepPrediction:
    """A predicted p-process step on measured compute (its phases' medians scaled to add up to
    its median step: medians do not add)."""
    k = compute.step_s / (compute.forward_s + compute.backward_s + compute.optimizer_s)
    return predict_ddp_step(buckets, forward_s=k * compute.forward_s, backward_s=k * compute.backward_s,
                            optimizer_s=k * compute.optimizer_s, link=link, world_size=p, label=label,
                            overlap=overlap)


@dataclass(frozen=True)
class _Machine:
    """Where the study runs: the device's type and name, the CPU cores this process may use, and
    the roofline's hardware."""

    dev_type: str
    dev_name: str
    cores: int
    roofline: Hardware


@dataclass
class _Launched:
    """What the launches brought back, gathered over all of them."""

    measured: dict[tuple[int, int, int], Measured] = field(default_factory=dict)  # (procs, threads, batch)
    solo_runs: dict[tuple[int, int], Measured] = field(default_factory=dict)  # (procs, batch): stepping at once, no DDP
    collectives: dict[int, CollectiveSweep] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    backend: Any = None

    def add(self, p: int, t: int, batches: Sequence[int], res: Any) -> None:
        """Reduce one launch of `p` processes × `t` threads and keep what it measured."""
        doc = res.result
        self.backend = doc["backend"] or self.backend
        self.environment = self.environment or doc["environment"]
        self.launches.append({"procs": p, "threads": t, "batches": list(batches), **res.to_dict()})
        for i, run in enumerate(doc["ranks"][0]["runs"]):
            b = int(run["per_process_batch"])
            self.measured[(p, t, b)] = measured_from_ranks(doc["ranks"], i)
            if "solo_steps" in run:
                self.solo_runs[(p, b)] = measured_from_ranks(doc["ranks"], i, "solo_steps")
        if doc.get("collectives"):
            self.collectives[p] = CollectiveSweep.from_dict(doc["collectives"])


def run_scaling_study(spec: ScaleSpec, progress: Progress | None = None) -> ScalingStudy:
    """Launch every point through torchrun, reduce, predict; the typed result (prints nothing)."""
    return run_scaling_studies([spec], progress)[0]


def run_scaling_studies(specs: Sequence[ScaleSpec], progress: Progress | None = None) -> list[ScalingStudy]:
    """Several studies of one model and one way of running it (strong and weak, say) from one
    set of launches: the launch of p processes runs every study's batches at p, so a point two
    studies share (the weak study's per-process batch is often a strong one's) is measured once
    and no process count is started twice. The typed results, in the order of `specs`."""
    if not specs:
        raise ValueError("run_scaling_studies needs at least one ScaleSpec")
    keys = {json.dumps(_launch_settings(spec), sort_keys=True) for spec in specs}
    if len(keys) > 1:
        raise ValueError("studies run from one set of launches share the model and every setting "
                         f"the ranks run with ({', '.join(_launch_settings(specs[0]))}); these differ")
    say = progress or (lambda _msg: None)
    dev_type, dev_name, _ = _device_type(specs[0])
    for spec in specs[1:]:
        _device_type(spec)  # each study's process and thread counts checked against the machine
    launched = _launch_all(specs, say)
    return [_study(spec, launched, dev_type, dev_name) for spec in specs]


def _launch_settings(spec: ScaleSpec) -> dict[str, Any]:
    """What the ranks of a launch run with, besides the batches: studies sharing launches agree."""
    return {"config": spec.config.to_dict(), "seq": spec.seq, "dtype": spec.dtype,
            "compile": spec.compile, "device": spec.device, "warmup": spec.warmup,
            "steps": spec.steps, "seed": spec.seed, "timeout_s": spec.timeout_s,
            "work_dir": str(spec.work_dir) if spec.work_dir else None}


def _study(spec: ScaleSpec, launched: _Launched, dev_type: str, dev_name: str) -> ScalingStudy:
    """One study's points, predicted, from what the launches measured."""
    roof_hw = resolve_hardware(spec.hardware, dev_name, dev_type, dtype=spec.dtype)
    wi_hw = get_hardware(spec.what_if_hardware) if spec.what_if else None
    machine = _Machine(dev_type, dev_name, _usable_cores(), roof_hw)
    notes = _oversubscription_notes(spec, machine)
    plan = ExecutionPlan.default("train", dev_type, compile=spec.compile,
                                 attention=spec.config.attention, ddp=True)  # as the workers run
    points = _scale_points(spec, launched, machine, plan, notes)
    thread_points = _thread_points(spec, launched.measured, machine.cores)
    space = [SpaceCell(p, b, m.step_s, p * b * spec.seq / m.step_s)
             for (p, t, b), m in sorted(launched.measured.items())
             if t == 1 and p in spec.procs and b in spec.grid_batches]
    rows = _what_if_rows(spec, wi_hw) if spec.what_if and wi_hw is not None else []
    return ScalingStudy(spec, points, thread_points, space, launched.collectives, rows, launched.backend,
                        dev_name, roof_hw.label, launched.launches, launched.environment, notes)


def _usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _oversubscription_notes(spec: ScaleSpec, machine: _Machine) -> list[str]:
    """Notes on a CPU sweep asking for more processes, or threads, than there are cores."""
    notes: list[str] = []
    cores = machine.cores
    if machine.dev_type == "cpu" and max(spec.procs) > cores:
        notes.append(f"{max(spec.procs)} processes on {cores} CPU cores: oversubscribed")
    if machine.dev_type == "cpu" and spec.threads and max(spec.threads) > cores:
        notes.append(f"{max(spec.threads)} threads in one process on {cores} CPU cores: "
                     f"oversubscribed; the ideal counts {cores} at once")
    return notes


def _launch_runs(specs: Sequence[ScaleSpec]) -> dict[tuple[int, int], tuple[list[int], list[int]]]:
    """(processes, threads) -> (per-process batches, those paired with solo steps) of every
    launch the studies need: each process count at every study's grid batches, then each thread
    count of one process; one launch per (processes, threads), in that order."""
    runs: dict[tuple[int, int], tuple[set[int], set[int]]] = {}
    for spec in specs:
        for p in spec.procs:
            batches, solo = runs.setdefault((p, 1), (set(), set()))
            batches.update(spec.grid_batches)
            if p > 1:
                solo.add(spec.per_process_batch(p))
    for spec in specs:
        for t in spec.threads or ():
            if t != 1 or 1 not in spec.procs:
                runs.setdefault((1, t), (set(), set()))[0].add(spec.thread_batch(t))
    return {key: (sorted(batches), sorted(solo)) for key, (batches, solo) in runs.items()}


def _launch_all(specs: Sequence[ScaleSpec], say: Progress) -> _Launched:
    """Run every launch the studies need (`_launch_runs`) in the first spec's `work_dir`, else a
    temporary folder removed afterwards (kept when a launch fails with an error naming its log
    there)."""
    spec = specs[0]  # the settings the ranks run with are every spec's (`_launch_settings`)
    tmp = None
    work = Path(spec.work_dir) if spec.work_dir else Path(tmp := tempfile.mkdtemp(prefix="gptperf-scale-"))
    launched = _Launched()
    try:
        for (p, t), (batches, solo) in _launch_runs(specs).items():
            say(f"launching {p} process{'es' if p > 1 else ''} × {t} thread{'s' if t > 1 else ''}, "
                f"per-process batch {', '.join(map(str, batches))}")
            out = work / f"p{p}-t{t}"
            ws = _worker_spec(spec, batches, t, collectives=p > 1, out=out, solo=solo).write(out / SPEC)
            res = launcher.launch(Launch(p, [str(ws)], out, threads=t, timeout_s=spec.timeout_s))
            launched.add(p, t, batches, res)
    except BaseException as err:
        # kept only where the error names its log; nothing names it after an interrupt or a
        # signal, nor a log torchrun wrote nothing to
        if tmp is not None and not (isinstance(err, LaunchError) and err.log is not None):
            shutil.rmtree(tmp, ignore_errors=True)
        raise

    if tmp is not None:  # kept when a launch fails: its error names the log there
        shutil.rmtree(tmp, ignore_errors=True)
        for entry in launched.launches:
            entry["log"] = None
    return launched


def _scale_points(spec: ScaleSpec, launched: _Launched, machine: _Machine, plan: ExecutionPlan,
                  notes: list[str]) -> list[ScalePoint]:
    """One point per process count: measured, and predicted on the compute measured beside it
    (and on one process's); a note where DDP's buckets differ from the model's."""
    config = spec.config
    bpe = gradient_bytes_per_element(spec.dtype)
    measured = launched.measured
    points: list[ScalePoint] = []
    for p in spec.procs:
        b = spec.per_process_batch(p)
        m = measured[(p, 1, b)]
        base = measured[(1, 1, spec.batch)]  # strong: the global batch on one; weak: the same batch
        one = measured[(1, 1, b)]  # one process alone at this per-process batch
        prediction = predict(config, Workload("train", b, spec.seq, spec.dtype), machine.roofline, plan)
        buckets = ddp_buckets(gradient_tensors(config), bpe, ready=backward_ready_fractions(prediction.ops))
        link: AlphaBeta | None = launched.collectives[p].fit if p in launched.collectives else None
        # gloo reduces on the CPU: with no core to spare, backward cannot hide it
        overlap = machine.dev_type == "cuda" or p * m.threads < machine.cores
        label = f"{CALIBRATED}, {OVERLAP if overlap else NO_OVERLAP}"
        if p == 1:
            pred = _on(one, buckets, link, p, "calibration point: measured on 1 process", overlap)
            from_one = None
        else:
            pred = _on(launched.solo_runs[(p, b)], buckets, link, p, label, overlap)
            from_one = _on(one, buckets, link, p, FROM_ONE, overlap)
        if p > 1 and m.bucket_bytes and list(m.bucket_bytes) != [bk.bytes for bk in buckets]:
            notes.append(f"p={p}: DDP's buckets were {list(m.bucket_bytes)} bytes, the model's "
                         f"{[bk.bytes for bk in buckets]}")
        points.append(ScalePoint(p, b, spec.seq, m, pred, base.step_s, spec.mode, prediction.time_s,
                                 from_one))
    return points


def _thread_points(spec: ScaleSpec, measured: dict[tuple[int, int, int], Measured],
                   cores: int) -> list[ThreadPoint]:
    """One point per thread count of the one-process thread sweep (none without one)."""
    thread_points = []
    if spec.threads:
        base_t = measured[(1, 1, spec.thread_batch(1))].step_s
        for t in spec.threads:
            mt = measured[(1, t, spec.thread_batch(t))]
            thread_points.append(ThreadPoint(t, spec.thread_batch(t), spec.seq, mt.step_s, base_t,
                                             spec.mode, cores))
    return thread_points


def _what_if_rows(spec: ScaleSpec, wi_hw: Hardware) -> list[WhatIfRow]:
    """The predicted what-if cluster points on `wi_hw`, each with its speedup over one GPU."""
    config = spec.config

    def wi(nodes: int, gpus: int) -> WhatIfPoint:
        per_gpu = spec.batch // (nodes * gpus) if spec.mode == "strong" else spec.batch
        return what_if(config, nodes=nodes, gpus_per_node=gpus, per_gpu_batch=per_gpu, seq=spec.seq,
                       dtype=spec.dtype, hardware=wi_hw, intra=spec.intra, inter=spec.inter)

    rows: list[WhatIfRow] = []
    one_gpu = wi(1, 1)
    for nodes, gpus in spec.what_if:
        pt = wi(nodes, gpus)
        s = one_gpu.step.step_s / pt.step.step_s * (pt.world_size if spec.mode == "weak" else 1)
        rows.append(WhatIfRow(pt, s, s / pt.world_size))
    return rows
