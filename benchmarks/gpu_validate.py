"""The calibrated prediction on a GPU (or, with --device cpu, on this CPU): calibrate, validate,
and bench configurations outside the sweep.

    python benchmarks/gpu_validate.py [--device cuda|cpu] [--quick] [--skip-calibrate] [--no-validate]
                                      [--random N [--seed S]]

1. `gptperf calibrate --force` from the cache in $GPTPERF_CACHE_DIR (default ./.gpucache), its wall
   time against the budget (120 s on a GPU, 60 s on a CPU); the calibration document is copied to
   $OUT/calibration.json.
2. `gptperf validate` (the full sweep, or the quick one; always the quick one on a CPU, as the
   issue asks) -> $OUT/validate.json and its picture.
3. `gptperf bench --json` of configurations the sweep does not contain (the issue's independent
   check: the model must be general, not tuned to the sweep), each measured/calibrated.
4. With --random N: `gptperf validate --random N` (configurations drawn off the sweep and the
   calibration's shapes, from --seed or a new seed) -> $OUT/random.json.
Prints one table last. Everything runs as a user would, through `python -m gptperf`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gptperf.measure.compile_warmup import NOTE_HEAD

CALIBRATE_BUDGET_S = {"cuda": 120.0, "cpu": 60.0}
# (label, bench argv): shapes and plans outside the validation sweep
BENCH_CHECKS: dict[str, tuple[tuple[str, list[str]], ...]] = {"cuda": (
    ("train gpt2 bf16 B=12 T=1024 compiled",
     ["train", "--preset", "gpt2", "--batch", "12", "--seq", "1024", "--dtype", "bf16", "--compile"]),
    ("train gpt2-medium bf16 B=4 T=1024 eager",
     ["train", "--preset", "gpt2-medium", "--batch", "4", "--seq", "1024", "--dtype", "bf16"]),
    ("forward gpt2-xl bf16 B=4 T=1024 eager",
     ["forward", "--preset", "gpt2-xl", "--batch", "4", "--seq", "1024", "--dtype", "bf16"]),
    ("decode gpt2 bf16 B=1 L=1024 fast",
     ["decode", "--preset", "gpt2", "--batch", "1", "--seq", "1024", "--dtype", "bf16", "--fast"]),
    ("decode gpt2-xl bf16 B=16 L=512 fast",
     ["decode", "--preset", "gpt2-xl", "--batch", "16", "--seq", "512", "--dtype", "bf16", "--fast"]),
    ("prefill gpt2-medium bf16 B=2 T=1024 eager",
     ["prefill", "--preset", "gpt2-medium", "--batch", "2", "--seq", "1024", "--dtype", "bf16"]),
    # a GPT-2 checkpoint's own 50257 tokens: the eager head runs padded to 50304 rows
    ("train gpt2 50257 tokens bf16 B=8 T=512 eager",
     ["train", "--preset", "gpt2", "--vocab-size", "50257", "--batch", "8", "--seq", "512", "--dtype", "bf16"]),
    # heads of 32 (17 of them): a fast fp32 decode's one-query attention at head size 32, which
    # the grid measured only from session 66 on (0.847 and 0.862 of its prediction before)
    ("decode c544h17 4 layers fp32 B=32 L=579 fast",
     ["decode", "--preset", "gpt2", "--n-embd", "544", "--n-head", "17", "--n-layer", "4", "--vocab-size",
      "65", "--batch", "32", "--seq", "579", "--dtype", "fp32", "--fast"]),
    # a width whose rows are not 16-byte aligned in bf16: every linear layer on the slower kernels
    ("train gpt2 C=1001 H=7 4 layers bf16 B=4 T=256 eager",
     ["train", "--preset", "gpt2", "--n-embd", "1001", "--n-head", "7", "--n-layer", "4", "--batch", "4",
      "--seq", "256", "--dtype", "bf16"]),
), "cpu": tuple((label, argv + ["--dtype", "fp32"]) for label, argv in (
    ("train tiny B=8 T=64", ["train", "--batch", "8", "--seq", "64"]),
    ("train tiny 2 layers B=4 T=128", ["train", "--n-layer", "2", "--batch", "4", "--seq", "128"]),
    ("forward tiny B=16 T=128", ["forward", "--batch", "16", "--seq", "128"]),
    ("decode tiny B=4 L=128", ["decode", "--batch", "4", "--seq", "128"]),
    ("prefill tiny B=2 T=200", ["prefill", "--batch", "2", "--seq", "200"]),
    ("decode_nocache tiny B=2 L=100", ["decode_nocache", "--batch", "2", "--seq", "100"]),
    # gpt2's own embedding (38.6M parameters): AdamW's loop from memory, blocks above 32 MiB
    ("train gpt2 B=1 T=64", ["train", "--preset", "gpt2", "--batch", "1", "--seq", "64"]),
))}


def gptperf(*argv: str, log: Path | None = None, timeout: float = 560) -> tuple[int, str, float]:
    """Run `python -m gptperf argv`; (exit status, stdout, wall seconds); stderr to `log`."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gptperf", *argv], capture_output=True, text=True,
                          timeout=timeout)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ gptperf {' '.join(argv)}  (exit {proc.returncode})\n{proc.stderr[-4000:]}\n")
    return proc.returncode, proc.stdout, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="the quick sweeps")
    parser.add_argument("--skip-calibrate", action="store_true", help="use the cached calibration")
    parser.add_argument("--no-validate", action="store_true")
    parser.add_argument("--no-bench", action="store_true")
    parser.add_argument("--random", type=int, metavar="N", help="also N cases drawn at random")
    parser.add_argument("--seed", type=int, metavar="S", help="the random cases' seed")
    args = parser.parse_args()
    dev = args.device
    out = Path(os.environ.get("OUT", f"{'gpu' if dev == 'cuda' else 'cpu'}-validate-out"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GPTPERF_CACHE_DIR", str(Path(".gpucache").resolve()))
    log = out / "stderr.log"
    rows: list[tuple[str, str]] = []

    if not args.skip_calibrate:
        argv = ["calibrate", "--device", dev, "--force"] + (["--quick"] if args.quick else [])
        code, text, wall = gptperf(*argv, log=log)
        print(text)
        budget = CALIBRATE_BUDGET_S[dev]
        rows.append(("calibrate wall time", f"{wall:.0f} s (budget {budget:.0f} s) "
                     f"{'PASS' if code == 0 and wall <= budget else 'MISS'} exit {code}"))
    cal = next(Path(os.environ["GPTPERF_CACHE_DIR"], "calibration").glob("*.json"), None)
    if cal is not None:
        shutil.copyfile(cal, out / "calibration.json")
        if not args.skip_calibrate:
            # where its time went (`calibrate.time_note`), and the side processes' parts on the GPU
            notes = json.loads(cal.read_text()).get("notes", [])
            split = next((n for n in notes if n.startswith("time: ")), None)
            if split:
                rows.append(("calibrate time", split.removeprefix("time: ")))
            side = next((n for n in notes if n.startswith(NOTE_HEAD)), None)
            if side:
                rows.append(("calibrate side processes", side.removeprefix("compiled jobs ")))

    if not args.no_validate:
        argv = ["validate", "--device", dev, "--out", str(out / "validate.json"),
                "--plot-dir", str(out)] + (["--quick"] if args.quick or dev == "cpu" else [])
        code, text, wall = gptperf(*argv, log=log)
        print(text)
        rows.append(("validate wall time", f"{wall:.0f} s, exit {code}"))
        if code == 0:
            doc = json.loads((out / "validate.json").read_text())
            stats = doc.get("stats", {})
            rows.append(("validate end to end", json.dumps(stats)[:200]))

    if not args.no_bench:
        results = {}
        for label, argv in BENCH_CHECKS[dev]:
            code, text, wall = gptperf("bench", *argv, "--device", dev, "--json", log=log)
            if code != 0:
                rows.append((label, f"exit {code} ({wall:.0f} s)"))
                continue
            doc = json.loads(text)
            results[label] = doc
            cal_entry = next((p for p in doc["predictions"] if p.get("source") == "calibrated"), None)
            roof = doc["predictions"][0] if doc["predictions"] else None
            measured = doc["step_time_s"]
            calibrated = (f"{cal_entry['measured_over_predicted']:.3f}" if cal_entry
                          else f"— (no calibration in {os.environ['GPTPERF_CACHE_DIR']})")
            rows.append((label, f"measured {measured * 1e3:.3f} ms; calibrated m/p {calibrated}; "
                         f"roofline m/p {roof['measured_over_predicted'] if roof else float('nan'):.2f}"))
            print(*rows[-1], flush=True)
        (out / "bench_checks.json").write_text(json.dumps(results, indent=1))

    if args.random:
        argv = ["validate", "--device", dev, "--random", str(args.random), "--out", str(out / "random.json")]
        argv += ["--seed", str(args.seed)] if args.seed is not None else []
        code, text, wall = gptperf(*argv, log=log)
        print(text)
        rows.append(("random validate wall time", f"{wall:.0f} s, exit {code}"))
        if code == 0:
            doc = json.loads((out / "random.json").read_text())
            rows.append((f"random end to end (seed {doc['seed']})", json.dumps(doc["stats"])[:200]))

    print(f"\n== gpu_validate summary ({dev}) ==")
    width = max(len(k) for k, _ in rows) if rows else 0
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
