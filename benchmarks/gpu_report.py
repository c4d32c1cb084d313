"""GPU check of `gptperf report`: the README's first command on one GPU, from a cold cache, in < 6 min.

    python benchmarks/gpu_report.py            # writes $OUT/gptperf-report (or ./gptperf-report)

Runs `gptperf report` exactly as a user would (gpt2, bf16, sdpa, compiled training step) with an
empty ceilings cache, so the ceilings are measured too. Prints the stage table, the headline
numbers from report.json beside the H100 anchors (nanoGPT bench.py gpt2 B=12 T=1024 bf16 compiled:
29.1 ms/iter), and PASS/FAIL for: every stage ok, total wall time < 360 s, page and traces written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 360.0


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
        doc = json.loads(doc_path.read_text())
        stages = doc["stages"]
        print(f"{'stage':<12} {'status':<8} {'seconds':>8}  note")
        for name, st in stages.items():
            print(f"{name:<12} {st['status']:<8} {st['seconds']:>8.1f}  {st.get('error') or ''}")
        checks.append(("every stage ok", all(st["status"] == "ok" for st in stages.values())))
        bench = (stages.get("bench", {}).get("data") or {}).get("results", {})
        for kind, r in bench.items():
            mfu = {m["against"]: m["mfu"] for m in r.get("mfu", [])}
            print(f"bench {kind:<8} {r['workload']['batch']}x{r['workload']['seq']} "
                  f"compile={r['workload']['compile']}: {1e3 * r['step_time_s']:.2f} ms/step, "
                  f"{r['throughput']['tokens_per_s']:.0f} tokens/s, MFU measured "
                  f"{100 * mfu.get('measured', float('nan')):.1f}% datasheet "
                  f"{100 * mfu.get('datasheet', float('nan')):.1f}%")
        print("anchor: nanoGPT bench.py gpt2 B=12 T=1024 bf16 compiled on this H100: 29.1 ms/iter")
        train = stages.get("train", {}).get("data") or {}
        if train:
            print(f"train: {train.get('steps')} steps, val loss {train.get('final_val_loss')}, "
                  f"compile {train.get('compile_time_s')} s, wall {train.get('wall_time_s'):.1f} s")
        page = report / "index.html"
        checks.append(("index.html written", page.is_file() and page.stat().st_size > 10_000))
        checks.append(("traces written", any((report / p).exists() for p in doc["traces"].values())))
    else:
        checks.append(("report.json written", False))
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {what}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
