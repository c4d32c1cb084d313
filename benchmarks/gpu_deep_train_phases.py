"""Where a deep eager train step's prediction goes wrong, phase by phase. On one GPU, for eager bf16
train steps the host holds up (gpt2-xl, the fixed sweep's most over-predicted case on the H100,
0.85-0.86 in sessions 69-70, and two shallower neighbours that read true):

1. host: each phase's call time (fwd, bwd, opt) in the same rounds as the calibration's host-model
   parts at 1 and 4 blocks (`time_host_parts`, so drift hits all alike), beside the line through
   those parts at the step's depth — does the line hold for the real step?
2. device: the step timed as `bench` times it (events between phases, one sync a step), and the
   optimizer phase alone after a sync (max(host, kernels): AdamW's kernels when they are longer);
3. the calibrated prediction of the cached calibration, per phase (host at the speed probed now,
   device) and for the step;
4. the host-model parts' call time behind a busy queue (a `torch.cuda._sleep` kernel queued before
   each part) over their time with the device idle, as the calibration times them: do launches
   cost less while the device still runs earlier work, as big kernels leave it?

    python -m gptperf calibrate && python benchmarks/gpu_deep_train_phases.py [CASE...]

Findings (H100, 2026-12-07, BENCHMARKS.md "Session 71"): launches behind a busy queue cost
0.69-0.90x; charging that in the composition made every stored sweep worse (not built).

CASE: model:batch:seq (default gpt2-xl:2:384 gpt2-medium:3:1000 gpt2:6:640, all bf16). Prints one
table per part; `cpu` as the only argument runs a tiny case on the CPU (a smoke test).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

from gptperf import names
from gptperf.measure.calibrate_host import fit_line, host_groups, time_host_parts
from gptperf.measure.probe import host_speeds, probe_for
from gptperf.measure.timer import time_phases
from gptperf.model import preset
from gptperf.perfmodel import Workload
from gptperf.perfmodel.calibration import load_calibration
from gptperf.perfmodel.expected import expected
from gptperf.plan import EAGER, ExecutionPlan
from gptperf.runtime import synchronize
from gptperf.steps.build import build_step

CASES = ("gpt2-xl:2:384", "gpt2-medium:3:1000", "gpt2:6:640")
PHASES = names.PHASES  # fwd, bwd, opt
LAYERS = (1, 4)  # the calibration's eager host points


def _opt_alone_s(train: Any, dev: torch.device, repeats: int = 10) -> float:
    """The optimizer phase after a sync: max(its host time, its kernels), median seconds."""
    times = []
    for _ in range(repeats):
        train.forward()
        train.backward()
        synchronize(dev)
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            train.optimizer_step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            train.optimizer_step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _busy_over_idle(host_parts: dict, dev: torch.device, sleep_s: float = 0.02) -> dict[int, dict[str, float]]:
    """Per block count and phase: the part's call time with a `sleep_s` kernel queued just before
    it, over its call time without (both in the same rounds; each busy group drains the device
    after itself, so that the idle ones start idle)."""
    if dev.type != "cuda":
        return {}
    cycles = int(sleep_s * 2e9)  # at most ~2 GHz SM clock: at least sleep_s
    groups: dict[int, dict] = {}
    for n in LAYERS:
        groups[n] = dict(host_parts[n])
        busy: dict = {}
        for p in PHASES:
            busy[f"sleep_{p}"] = lambda: torch.cuda._sleep(cycles)
            busy[p] = host_parts[n][p]
        busy["drain"] = lambda: synchronize(dev)  # the next group starts on an idle device
        groups[-n] = busy
    times = time_host_parts(groups, list(PHASES), dev, warmup=3, repeats=15)
    return {n: {p: times[-n][p] / times[n][p] for p in PHASES} for n in LAYERS}


def main() -> int:
    args = sys.argv[1:]
    dev = torch.device("cpu" if args == ["cpu"] else "cuda")
    cases = ["tiny:2:64"] if dev.type == "cpu" else (args or list(CASES))
    dtype = "bf16" if dev.type == "cuda" else "fp32"
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    cal = load_calibration(name, torch.__version__) if dev.type == "cuda" else None
    print(f"device {name}; calibration: {cal.label() if cal else 'none cached (no prediction)'}", flush=True)
    plan = ExecutionPlan.default("train", dev.type, compile=False)
    host_parts = host_groups(dtype, EAGER, dev, "train", LAYERS)
    rows = []
    for case in cases:
        model, batch, seq = case.split(":")
        config = preset(model)
        work = Workload("train", int(batch), int(seq), dtype)
        step = build_step(config, work, plan, dev)
        train = step.train
        assert train is not None
        groups = {n: dict(host_parts[n]) for n in LAYERS}
        # the case drains the device after itself: the next round's host-model parts, timed with
        # AdamW's kernels still queued, ran 0.69-0.90x their idle-queue time (part 4, H100)
        groups[0] = {"fwd": train.forward, "bwd": train.backward, "opt": train.optimizer_step,
                     "drain": lambda: synchronize(dev)}
        times = time_host_parts(groups, list(PHASES), dev, warmup=3, repeats=15)
        line = {}
        for p in PHASES:
            fit = fit_line(times[LAYERS[0]][p], times[LAYERS[1]][p])
            line[p] = fit["fixed_s"] + fit["per_layer_s"] * config.n_layer
        synchronize(dev)
        timing = time_phases(step.phases, warmup=3, repeats=15, device=dev)
        spans = {p: timing.phases[p].median for p in timing.phases}
        opt_alone = _opt_alone_s(train, dev)
        pred = None
        if cal is not None:
            speed, phase_speeds = host_speeds(cal, dev, probe=probe_for(cal, "train"))
            e = expected(config, work, step.plan, cal, host_speed=speed, phase_speeds=phase_speeds)
            host = {p: sum(o.host_s for o in e.ops if o.phase == p) for p in PHASES}
            device = {p: sum(o.device_s for o in e.ops if o.phase == p) for p in PHASES}
            pred = (e.step_time_s, host, device, speed, phase_speeds)
        label = f"{model} B={batch} T={seq}"
        rows.append((label, config.n_layer, times[0], line, timing.total.median, spans, opt_alone, pred))
        print(label, f"step {timing.total.median * 1e3:.2f} ms", flush=True)
        del step, train, groups
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    print(f"\n1. host: each phase's call time beside the host line at the step's depth "
          f"(same rounds), {name}, {dtype}, eager")
    print(f"{'case':24} {'blocks':>6} {'phase':>5} {'call ms':>8} {'line ms':>8} {'call/line':>9}")
    for label, n, calls, line, *_ in rows:
        for p in PHASES:
            print(f"{label:24} {n:6d} {p:>5} {calls[p] * 1e3:8.2f} {line[p] * 1e3:8.2f} {calls[p] / line[p]:9.3f}")
    print("\n2-3. the step as bench times it, and the calibrated prediction (host at the speed probed now)")
    print(f"{'case':24} {'step ms':>8} {'pred ms':>8} {'m/p':>6} {'phase':>5} {'span ms':>8} "
          f"{'host pred':>9} {'dev pred':>9} {'opt alone':>9}")
    for label, _, _, _, total, spans, opt_alone, pred in rows:
        for i, p in enumerate(PHASES):
            head = f"{label:24} {total * 1e3:8.2f} " if i == 0 else f"{'':24} {'':8} "
            if pred is not None:
                step_s, host, device, *_ = pred
                head += f"{step_s * 1e3:8.2f} {total / step_s:6.3f} " if i == 0 else f"{'':8} {'':6} "
                cols = f"{host[p] * 1e3:9.2f} {device[p] * 1e3:9.2f}"
            else:
                head += f"{'-':>8} {'-':>6} " if i == 0 else f"{'':8} {'':6} "
                cols = f"{'-':>9} {'-':>9}"
            extra = f" {opt_alone * 1e3:9.2f}" if p == names.OPTIMIZER_PHASE else ""
            print(f"{head}{p:>5} {spans.get(p, float('nan')) * 1e3:8.2f} {cols}{extra}")
        if pred is not None:
            print(f"{'':24} host speed charged: step {pred[3]}, phases {pred[4]}")
    busy = _busy_over_idle(host_parts, dev)
    if busy:
        print("\n4. host-model parts behind a busy queue over the same with the device idle (call time)")
        for n, ratios in busy.items():
            print(f"{n} block(s): " + ", ".join(f"{p} {r:.3f}" for p, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
