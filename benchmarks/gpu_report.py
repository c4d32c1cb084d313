"""GPU check of `gptperf report`: the README's first command on one GPU, from a cold cache, in < 6 min.

    python benchmarks/gpu_report.py            # writes $OUT/gptperf-report (or ./gptperf-report)

Runs `gptperf report` exactly as a user would (gpt2, bf16, sdpa, compiled training step) with an
empty ceilings cache, so the ceilings are measured too. Reads report.json back through the typed
results (`ReportData.from_dict`) and prints the stage table, the headline numbers beside the H100
anchors (nanoGPT bench.py gpt2 B=12 T=1024 bf16 compiled: 29.1 ms/iter) and the parallel-scaling
points, and PASS/FAIL for: every stage ok, total wall time < 360 s, page and traces written, a quick
calibration measured and validated on at least 3 cases, the scaling section over NCCL on every
GPU of the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gptperf.report.context import ReportData

BUDGET_S = 360.0


def gpu_count() -> int | None:
    """GPUs this machine has (the scaling section should use every one), None without torch CUDA."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.device_count() if torch.cuda.is_available() else None


def redesign_checks(report: ReportData) -> list[tuple[str, bool]]:
    """The redesign's acceptance on a GPU: the KV-cache section, the decode headline and every decode
    prediction come from the fast plan, and the compiled train profile is attributed exactly."""
    checks: list[tuple[str, bool]] = []
    inference = report.inference
    speedups = inference.speedups() if inference else []
    if speedups:
        x = max(speedups, key=lambda s: s.context)
        measured = x.measured or 0.0
        calibrated = f"{x.expected:.1f}x" if x.expected else "none"
        print(f"KV cache vs recompute at {x.context} tokens: measured {measured:.1f}x, calibrated "
              f"{calibrated} (each path as it ran), roofline {x.predicted:.1f}x (the work)")
        checks.append((f"KV cache >= 10x recompute at {x.context} tokens", measured >= 10))
    decode_points = (inference.cache + inference.batches) if inference else []
    modes = {p.plan.mode if p.plan is not None else None for p in decode_points}
    for p in decode_points:
        calibrated = (f"calibrated {1e6 * p.expected_s:.0f} us (m/e {p.expected_ratio:.2f})"
                      if p.expected_s and p.expected_ratio else "no calibrated time")
        print(f"decode B={p.batch} L={p.seq}: {1e6 * (p.time_s or float('nan')):.0f} us "
              f"measured; {calibrated}; roofline bound {1e6 * p.predicted_s:.0f} us "
              f"(m/p {p.ratio or float('nan'):.2f}); plan {p.plan.label if p.plan is not None else None}")
    checks.append(("every decode point measured and predicted on the CUDA-graph plan",
                   bool(decode_points) and modes == {"cuda_graph"}))
    decode = report.bench.results.get("decode") if report.bench else None
    plan = decode.plan if decode is not None else None
    print(f"decode headline: {decode.tokens_per_s if decode else float('nan'):.0f} "
          f"tokens/s, plan {plan.label if plan else None}")
    checks.append(("decode headline from the CUDA-graph plan",
                   plan is not None and plan.mode == "cuda_graph"))
    train = report.profile.profiles.get("train") if report.profile else None
    if train is not None:
        print(f"compiled train profile: coverage {100 * train.coverage:.1f}%, "
              f"exact {100 * train.exact_coverage:.1f}%")
    checks.append(("compiled train profile exact attribution >= 90%",
                   train is not None and train.exact_coverage >= 0.90))
    return checks


def prediction_checks(report: ReportData) -> list[tuple[str, bool]]:
    """The calibrated prediction on a fresh machine: the report measures a quick calibration (the
    cache is empty) and validates it with `validate`'s quick sweep, as far as its budget allows."""
    cal = report.calibration
    if cal is not None:
        print(f"calibration: {'reused' if cal.cached else 'measured'} in {cal.measured_s:.0f} s, "
              f"{cal.curves} curves, {cal.host_costs} host costs, {cal.compiled} compiled; "
              f"{'; '.join(cal.notes)}")
    stage = report.validation
    result = stage.result if stage is not None else None
    if result is not None:
        st = result.stats
        per_op = (f"{100 * result.per_op_error:.1f}% over {result.per_op_count}" if result.per_op_count
                  else "not profiled (the section's time ran out)")
        print(f"validation: {st.n} of {stage.sweep_cases} cases within its {stage.budget_s:.0f} s budget: "
              f"median {100 * st.median:.1f}%, p90 {100 * st.p90:.1f}%, max {100 * st.max:.1f}%, per "
              f"operation {per_op}; left out: {', '.join(stage.left_out) or 'none'}; profiles skipped: "
              f"{', '.join(stage.profiles_skipped) or 'none'}")
        for p in result.points:
            print(f"  {p.case}: m/p {p.ratio:.3f}")
    return [("a calibration measured by the report", cal is not None and cal.info is not None
             and not cal.cached),
            ("the prediction validated on at least 3 cases", result is not None
             and result.stats.n >= 3)]


def scaling_checks(report: ReportData, gpus: int | None) -> list[tuple[str, bool]]:
    """The parallel-scaling section: every GPU of the machine (NCCL), each point predicted."""
    checks: list[tuple[str, bool]] = []
    stage = report.scaling
    if stage is None:
        return [("parallel scaling section", False)]
    for mode, study in stage.studies.items():
        for p in study.points:
            print(f"scale {mode} p={p.procs} batch/proc {p.per_process_batch}: "
                  f"{1e3 * p.step_s:.2f} ms/step measured, {1e3 * p.predicted.step_s:.2f} ms "
                  f"predicted; speedup {p.speedup:.2f} ({p.predicted_speedup:.2f}), efficiency "
                  f"{100 * p.efficiency:.0f}% ({100 * p.predicted_efficiency:.0f}%); all-reduce "
                  f"{1e3 * p.measured.comm_total_s:.2f} ms, exposed "
                  f"{1e3 * p.measured.comm_exposed_s:.2f} ms, busbw {p.busbw / 1e9:.1f} GB/s")
        print(f"  {stage.commands.get(mode)}")
    strong = stage.studies.get("strong")
    checks.append(("parallel scaling over NCCL", strong is not None and strong.backend == "nccl"))
    if gpus is not None and strong is not None:
        checks.append((f"scaling up to every GPU ({gpus})",
                       max(p.procs for p in strong.points) == gpus))
    return checks


def main() -> int:
    out_root = Path(os.environ.get("OUT", "."))
    report = out_root / "gptperf-report"
    cache = Path(tempfile.mkdtemp(prefix="gptperf-cache-"))
    env = dict(os.environ, GPTPERF_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gptperf", "report", "--out", str(report)],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    (out_root / "gpu_report.stdout.txt").write_text(proc.stdout)
    (out_root / "gpu_report.stderr.txt").write_text(proc.stderr)
    print(proc.stdout[-4000:])
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
    checks: list[tuple[str, bool]] = [("exit code 0", proc.returncode == 0),
                                      (f"wall time {wall:.0f} s < {BUDGET_S:.0f} s", wall < BUDGET_S)]
    doc_path = report / "report.json"
    if doc_path.is_file():
        data = ReportData.from_dict(json.loads(doc_path.read_text()))  # the typed results
        print(f"{'stage':<12} {'status':<8} {'seconds':>8}  note")
        for name, rec in data.records.items():
            print(f"{name:<12} {rec.status:<8} {rec.seconds:>8.1f}  {rec.error or ''}")
        checks.append(("every stage ok", all(rec.status == "ok" for rec in data.records.values())))
        for kind, r in (data.bench.results if data.bench else {}).items():
            mfu = {m.against: m.mfu for m in r.mfu}
            print(f"bench {kind:<8} {r.batch}x{r.seq} compile={r.compile}: "
                  f"{1e3 * r.step_time_s:.2f} ms/step, {r.tokens_per_s:.0f} tokens/s, MFU measured "
                  f"{100 * mfu.get('measured', float('nan')):.1f}% datasheet "
                  f"{100 * mfu.get('datasheet', float('nan')):.1f}%")
        print("anchor: nanoGPT bench.py gpt2 B=12 T=1024 bf16 compiled on this H100: 29.1 ms/iter")
        if data.train is not None:
            t = data.train.result
            print(f"train: {t.steps} steps, val loss {t.val_losses[-1][1] if t.val_losses else None}, "
                  f"compile {t.compile_time_s} s, wall {t.wall_time_s:.1f} s")
        checks += redesign_checks(data)
        checks += prediction_checks(data)
        checks += scaling_checks(data, gpu_count())
        page = report / "index.html"
        checks.append(("index.html written", page.is_file() and page.stat().st_size > 10_000))
        checks.append(("traces written", any((report / p).exists() for p in data.traces.values())))
    else:
        checks.append(("report.json written", False))
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {what}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
