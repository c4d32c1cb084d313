"""GPU check of `gptperf profile`: GPT-2 (124M) training step, bf16, math and sdpa attention, eager
and torch.compile. For each run: coverage (>= 95% expected), profiler overhead, and the median
|measured/predicted - 1| over components taking >= 2% of the step.

    python benchmarks/gpu_profile.py            # writes under $OUT if set, else ./gpu_profile_out
    python benchmarks/gpu_profile.py --smoke    # the script's own check: tiny model, CPU, eager

Each run is a separate `gptperf profile` process (fresh compile caches and GPU memory). Full
traces stay in a temporary folder; $OUT gets summary.json (all tables), components.csv (all
runs), one roofline PNG per run and the log.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEQ = 8, 1024
RUNS = [("sdpa", False), ("math", False), ("sdpa", True), ("math", True)]
TIMEOUT_S = {False: 100, True: 150}
BUDGET_S = 290  # no new run starts after this (the whole script should stay under 5 minutes)


def main() -> int:
    smoke = "--smoke" in sys.argv[1:]
    runs = [r for r in RUNS if not r[1]] if smoke else RUNS
    model = ["--preset", "tiny", "--n-layer", "2", "--batch", "2", "--seq", "32", "--device", "cpu",
             "--dtype", "fp32"] if smoke else \
        ["--preset", "gpt2", "--batch", str(BATCH), "--seq", str(SEQ), "--device", "cuda",
         "--dtype", "bf16"]
    out = Path(os.environ.get("OUT") or "gpu_profile_out")
    out.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    work = Path(tempfile.mkdtemp(prefix="gptperf-gpu-profile-"))
    summary: dict[str, dict] = {}
    all_components: list[dict] = []
    t_all = time.perf_counter()
    for attention, compiled in runs:
        name = f"{attention}-{'compile' if compiled else 'eager'}"
        if time.perf_counter() - t_all > BUDGET_S:
            log(f"{name}: skipped, the {BUDGET_S} s budget is spent")
            summary[name] = {"error": "skipped (time budget)"}
            continue
        run_dir = work / name
        cmd = [sys.executable, "-m", "gptperf", "profile", "--workload", "train", *model,
               "--attention", attention, "--wait", "1", "--warmup", "2", "--active", "3",
               "--out", str(run_dir), "--json"]
        if compiled:
            cmd.append("--compile")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S[compiled])
        except subprocess.TimeoutExpired:
            log(f"{name}: timed out after {TIMEOUT_S[compiled]} s")
            summary[name] = {"error": "timeout"}
            continue
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            log(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
            summary[name] = {"error": proc.stderr[-3000:]}
            continue
        doc = json.loads(proc.stdout)
        doc["wall_s"] = wall
        summary[name] = doc
        for r in doc["components"]:
            all_components.append({"run": name, **{k: r.get(k) for k in (
                "name", "phase", "measured_s", "predicted_s", "measured_over_predicted", "share",
                "calls", "pct_of_roofline", "achieved_flops", "occupancy_pct")}})
        png = run_dir / "roofline.png"
        if png.is_file():
            shutil.copyfile(png, out / f"roofline_{name}.png")
        ov = doc.get("overhead") or {}
        log(f"{name}: coverage {100 * doc['coverage']:.1f}% (exact {100 * doc['exact_coverage']:.1f}%), "
            f"kernels fill {100 * doc['busy']:.0f}% of the step, "
            f"overhead {100 * ov.get('overhead', float('nan')):+.1f}% "
            f"(step {1e3 * ov.get('step_s_without', float('nan')):.1f} ms -> "
            f"{1e3 * ov.get('step_s_with', float('nan')):.1f} ms), "
            f"median |m/p-1| {doc['median_abs_error_components']}, wall {wall:.0f} s")
        log(f"  methods (s over 3 steps): {doc['by_method_s']}")
        log(f"  largest unattributed: {doc['unattributed_top'][:3]}")
        shutil.rmtree(run_dir, ignore_errors=True)  # traces are large; keep only the summary
    shutil.rmtree(work, ignore_errors=True)

    log("")
    log(f"{'run':<14} {'coverage':>9} {'exact':>7} {'overhead':>9} {'median|m/p-1|':>14}   "
        f"(device: {next((d.get('device') for d in summary.values() if 'device' in d), '?')})")
    for name, doc in summary.items():
        if "error" in doc:
            log(f"{name:<14} error")
            continue
        mae = doc["median_abs_error_components"]
        log(f"{name:<14} {100 * doc['coverage']:>8.1f}% {100 * doc['exact_coverage']:>6.1f}% "
            f"{100 * (doc.get('overhead') or {}).get('overhead', float('nan')):>+8.1f}% "
            f"{mae if mae is None else format(mae, '.3f'):>14}")
    log(f"total {time.perf_counter() - t_all:.0f} s")

    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    buf = io.StringIO()
    if all_components:
        w = csv.DictWriter(buf, fieldnames=list(all_components[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(all_components)
    (out / "components.csv").write_text(buf.getvalue())
    (out / "gpu_profile.log").write_text("\n".join(log_lines) + "\n")
    return 0 if all("error" not in d for d in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
