"""GPU training figures: `gptperf train --preset gpt2 --dtype bf16 --attention sdpa --compile`.

    python benchmarks/gpu_train.py            # one CUDA GPU; writes $OUT/gpu_train.json if OUT is set
    python benchmarks/gpu_train.py --dry-run  # the same code paths on CPU, tiny shapes, no compile

1. The command itself (a subprocess, `--json`): gpt2 (124M), batch 16 x 1024 byte tokens of the
   embedded corpus, 300 steps, bf16 autocast, SDPA attention, torch.compile (compiled before
   the timed steps). Time per step and tokens/s are the median over steps 4..300, each step
   synchronised; validation loss at steps 250 and 300; two atomic checkpoints.
2. `--resume` from that checkpoint, eager (no compile), for 60 more steps: the checkpoint
   loads and training continues where it stopped; its median step time against the compiled
   one is the compile speed-up.
Aim: under 4 minutes on an H100.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T0 = time.time()
DRY = "--dry-run" in sys.argv
OUT = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
WORK = Path(tempfile.mkdtemp(prefix="gpu_train."))
CKPT = WORK / "gpt2_train"  # 1.5 GB of weights and AdamW state: kept off $OUT


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f} s] {msg}", flush=True)


def gptperf_train(*extra: str, name: str) -> dict[str, Any]:
    if DRY:
        base = ["--preset", "tiny", "--n-layer", "2", "--batch", "4", "--seq", "64",
                "--device", "cpu", "--eval-interval", "25", "--eval-iters", "2"]
        extra = tuple(a for a in extra if a != "--compile")
    else:
        base = ["--preset", "gpt2", "--dtype", "bf16", "--attention", "sdpa", "--device", "cuda"]
    cmd = [sys.executable, "-m", "gptperf", "train", "--json", *base, *extra]
    log("$ gptperf " + " ".join(cmd[3:]))
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    if OUT is not None:
        (OUT / f"{name}.stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        log(f"FAILED ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        raise SystemExit(1)
    doc = json.loads(proc.stdout)
    doc["process_wall_s"] = wall
    for note in doc.get("notes", []):
        log(f"note: {note}")
    return doc


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    times = doc["step_times_s"][3:] or doc["step_times_s"]
    own = doc["losses"][doc["start_step"]:]
    n_params = doc["parameters"]
    cfg = doc["model_config"]
    seq = doc["config"]["seq"]
    # nanoGPT's estimate of training FLOPs per token: 6N for the matmuls with the weights,
    # 12·L·T·C for attention scores and context (forward + backward).
    flops_per_token = 6 * n_params + 12 * cfg["n_layer"] * seq * cfg["n_embd"]
    return {
        "steps": doc["steps"] - doc["start_step"],
        "median_step_time_s": statistics.median(times),
        "p10_step_time_s": statistics.quantiles(times, n=10)[0] if len(times) > 10 else min(times),
        "p90_step_time_s": statistics.quantiles(times, n=10)[-1] if len(times) > 10 else max(times),
        "tokens_per_step": doc["tokens_per_step"],
        "tokens_per_s": doc["tokens_per_step"] / statistics.median(times),
        "model_tflops_per_s": doc["tokens_per_step"] / statistics.median(times)
        * flops_per_token / 1e12,
        "compile_time_s": doc["compile_time_s"],
        "first_loss": own[0] if own else None,  # this run's steps (a resumed run's
        "last_loss": own[-1] if own else None,  # losses also hold the history)
        "val_losses": doc["val_losses"],
        "process_wall_s": doc["process_wall_s"],
    }


def main() -> int:
    iters = 60 if DRY else 300
    more = 20 if DRY else 60
    checks: list[tuple[str, bool]] = []
    compiled = gptperf_train("--compile", "--max-iters", str(iters), "--out", str(CKPT),
                             name="compiled")
    resumed = gptperf_train("--max-iters", str(iters + more), "--out", str(CKPT), "--resume",
                            name="resumed_eager")
    runs = {"compiled": summary(compiled), "resumed eager": summary(resumed)}

    c, r = runs["compiled"], runs["resumed eager"]
    checks.append(("all losses finite", all(math.isfinite(v) for d in (compiled, resumed)
                                            for v in d["losses"])))
    checks.append(("loss fell (last < first - 1 nat)", c["last_loss"] < c["first_loss"] - 1.0))
    checks.append(("validation loss measured", bool(c["val_losses"])))
    checks.append(("resume continued from the checkpoint",
                   resumed["start_step"] == iters and resumed["steps"] == iters + more
                   and resumed["losses"][:iters] == compiled["losses"]))
    checks.append(("resumed loss close to where it stopped",
                   abs(r["first_loss"] - c["last_loss"]) < 0.5 if r["first_loss"] else False))

    env = compiled["environment"]
    print()
    print(f"device: {env.get('device')}  torch {env.get('torch')}  cuda {env.get('cuda')}  "
          f"commit {env.get('commit')}")
    print(f"{'run':<14}{'steps':>7}{'ms/step':>10}{'p10':>8}{'p90':>8}{'tokens/s':>12}"
          f"{'TFLOP/s*':>10}{'compile s':>11}{'last loss':>11}")
    for name, s in runs.items():
        comp = f"{s['compile_time_s']:.1f}" if s["compile_time_s"] else "—"
        print(f"{name:<14}{s['steps']:>7}{s['median_step_time_s'] * 1e3:>10.1f}"
              f"{s['p10_step_time_s'] * 1e3:>8.1f}{s['p90_step_time_s'] * 1e3:>8.1f}"
              f"{s['tokens_per_s']:>12,.0f}{s['model_tflops_per_s']:>10.1f}{comp:>11}"
              f"{s['last_loss']:>11.4f}")
    print("ms/step, tokens/s: measured medians (each step synchronised, compile excluded); "
          "* model FLOPs by nanoGPT's 6N + 12LTC estimate")
    print(f"validation loss (nats/byte): {c['val_losses']}")
    print(f"compile speed-up (eager / compiled median step): "
          f"{r['median_step_time_s'] / c['median_step_time_s']:.2f}x")
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    print(f"total {time.time() - T0:.0f} s")
    if OUT is not None:
        doc = {"environment": env, "runs": runs, "checks": dict(checks), "dry_run": DRY,
               "command": "gptperf train --preset gpt2 --dtype bf16 --attention sdpa --compile "
                          f"--device cuda --max-iters {iters}"}
        (OUT / "gpu_train.json").write_text(json.dumps(doc, indent=2))
    shutil.rmtree(WORK, ignore_errors=True)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
