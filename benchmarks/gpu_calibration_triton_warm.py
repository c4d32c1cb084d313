"""What compiling the decode families' Triton kernels ahead saves a GPU calibration from cold caches.

    python benchmarks/gpu_calibration_triton_warm.py [--rounds 1] [--variants ahead,"not ahead"]

Each round runs `gptperf calibrate --force --json` once a variant, each time with empty Triton,
inductor and gptperf caches (fresh temporary folders): "ahead" as it ships (the side process
compiles the decode kernels without running them before inductor's steps), "not ahead" with the
side process given no dtypes (it compiles inductor's steps alone, as before), and "ahead
niced" with the side process at CPU priority 10. Prints per run: wall seconds, the calibration's
own seconds, the gemv family's seconds (the decode families), its time note (each family's
seconds and what it waited for the side process's GPU work) and the side process's note.

Rounds alternate the order (ABBA). The first calibration on a fresh machine is slower whatever its
variant: cuDNN's first use, kept across processes, cost its attention family about 12 s on an
H200 (BENCHMARKS.md, "The first calibration on a machine"). Compare runs after the first, or
rounds in both orders.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# gptperf with the side process's command edited before it starts (`CompileWarmup` takes it
# whole): `{edit}` maps that command, `argv`, to the one run
_EDIT = """
from gptperf.measure import compile_warmup
init = compile_warmup.CompileWarmup.__init__
compile_warmup.CompileWarmup.__init__ = lambda self, argv, *a, **k: init(self, {edit}, *a, **k)
"""
_RUN = """
import sys
from gptperf.cli import main
sys.exit(main(sys.argv[1:]))
"""
EDITS = {
    # the side process given no dtypes: no Triton kernel compiled ahead
    "not ahead": "[a for a in argv if not a.startswith(compile_warmup.DTYPES_ARG)]",
    # the side process at a lower CPU priority (nice 10): the calibration's own host work first
    "ahead niced": '["nice", "-n", "10", *argv]',
}
VARIANTS = {"ahead": [sys.executable, "-m", "gptperf"],
            **{name: [sys.executable, "-c", _EDIT.format(edit=edit) + _RUN] for name, edit in EDITS.items()}}


def calibrate_cold(variant: str) -> dict[str, object]:
    """One `gptperf calibrate --force --json` from empty caches; its figures."""
    caches = Path(tempfile.mkdtemp(prefix="gptperf-cold-"))
    env = dict(os.environ, TRITON_CACHE_DIR=str(caches / "triton"),
               TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"), GPTPERF_CACHE_DIR=str(caches / "gptperf"))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*VARIANTS[variant], "calibrate", "--force", "--json"], env=env,
                              capture_output=True, text=True, timeout=400)
    finally:
        shutil.rmtree(caches, ignore_errors=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"variant": variant, "wall_s": wall, "error": proc.stderr.strip().splitlines()[-1:]}
    doc = json.loads(proc.stdout)
    notes = doc.get("notes", [])
    timing = next((n for n in notes if n.startswith("time: kernels")), "")
    gemv = re.search(r"gemv ([0-9.]+)", timing)
    side = next((n for n in notes if n.startswith("compiled jobs compiled ahead")), "")
    return {"variant": variant, "wall_s": wall, "calibration_s": doc.get("seconds"),
            "gemv_family_s": float(gemv.group(1)) if gemv else None, "timing": timing, "side": side}


def run_order(variants: list[str], rounds: int) -> list[str]:
    """The variants of each round, every other round reversed (ABBA): the machine's first
    calibration also pays cuDNN's first use, so no variant may always go first."""
    return [v for i in range(rounds) for v in (variants if i % 2 == 0 else variants[::-1])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"which, comma-separated, in order (of {', '.join(VARIANTS)})")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be a positive integer, got {args.rounds}")
    root = Path(os.environ.get("OUT", "."))
    root.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(VARIANTS)}")
    runs = [calibrate_cold(variant) for variant in run_order(variants, args.rounds)]
    (root / "triton_warm.json").write_text(json.dumps(runs, indent=1))
    for run in runs:
        print(f"{run['variant']:>10}: {run.get('timing') or run.get('error')}; {run.get('side', '')}")
    print(f"{'variant':>10} {'wall s':>8} {'calibration s':>14} {'gemv family s':>14}")
    for run in runs:
        print(f"{run['variant']:>10} {run['wall_s']:8.1f} {run.get('calibration_s') or float('nan'):14.1f} "
              f"{run.get('gemv_family_s') or float('nan'):14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
