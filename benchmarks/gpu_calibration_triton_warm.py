"""What a GPU calibration from cold caches pays, with and without the work done ahead of it.

    python benchmarks/gpu_calibration_triton_warm.py [--rounds 1] [--variants ahead,"not ahead"]
        [--warm-jit]

Each round runs `gptperf calibrate --force --json` once a variant, each time with empty Triton,
inductor and gptperf caches and an empty CUDA driver JIT cache (fresh temporary folders; with
`--warm-jit` the machine's JIT cache is kept). The variants (one may be named twice:
`--variants "ahead,one process,ahead"`):

  ahead            as it ships: two side processes started before the calibration's speed probes
                   (`compile_warmup.SIDE_PROCESSES`), one compiling the
                   decode kernels without running them and then the recordings' steps, the other
                   the host jobs' steps
  one process      the three parts in one side process
  not ahead        the side processes given no dtypes (they compile inductor's steps alone)
  ahead niced      the side processes at CPU priority 10
  no cudnn         the calibration's attention timed without cuDNN's backend
  holds as before  the side processes importing inductor's compile stack, making Triton's driver,
                   and their host jobs and recordings compiling Triton's JIT kernels inside the GPU
                   lock (as before 2026-12-06)
  cuda first       the calibration's CUDA context and cuBLAS made before the side processes start
  ahead profiled   as shipped, each side process sampled every 20 ms that it holds the GPU (what
                   the calibration waits for), the calibration's own process all the time; the
                   seconds by place are printed

Prints per run: wall seconds, the calibration's own seconds, the wall time outside them (before
the calibration: Python's start and the imports; after it: the save; the interpreter's exit), the
attention and gemv families' seconds, its time note (each family's seconds and what it waited for
the side processes' GPU work) and the side processes' note; then how far each later run's matmul
and attention grids lie from the first run's (a variant should change the time, not the figures).

An empty JIT cache makes every run pay what the first calibration on a fresh machine pays: cuDNN's
run-time compiled attention kernels, kept across processes in that cache, cost the attention family
about 11 s on an H200 (BENCHMARKS.md, "The first calibration on a machine"). With `--warm-jit` the
first run pays it alone; rounds alternate their order (ABBA) either way.
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

from gptperf.measure.compile_warmup import NOTE_HEAD

# gptperf with `compile_warmup` patched before the calibration starts: _PATCH, then the variant's
_PATCH = "from gptperf.measure import compile_warmup\n"
# each side process's command edited before it starts (`CompileWarmup` takes them whole): `{edit}`
# maps a command, `argv`, to the one run
_EDIT = """
init = compile_warmup.CompileWarmup.__init__
compile_warmup.CompileWarmup.__init__ = lambda self, argvs, *a, **k: init(self, [{edit} for argv in argvs], *a, **k)
"""
_RUN = """
import sys
from gptperf.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Every run marks on stderr (epoch seconds) the calibration's start and end and the start of the
# interpreter's exit, so its wall time outside the calibration's own clock splits into before it
# (Python's start, the imports), after it (the save, the JSON) and the process's end
CLOCK_MARK = "[clock]"
_CLOCK = f"""
import atexit, sys, time
from gptperf.measure import calibrate as _cal
_calibrate = _cal.calibrate
def _timed(*a, **k):
    sys.stderr.write(f"{CLOCK_MARK} start {{time.time()}}\\n")
    try:
        return _calibrate(*a, **k)
    finally:
        sys.stderr.write(f"{CLOCK_MARK} end {{time.time()}}\\n")
_cal.calibrate = _timed
atexit.register(lambda: sys.stderr.write(f"{CLOCK_MARK} exit {{time.time()}}\\n"))
"""
# A sampler for a process of the run ("ahead profiled"): each 20 ms that `when()` holds, the seconds
# since the last sample go to the main thread's place, `key(frame)`; at the process's exit the
# places, most first, go to a file in $HOLD_PROFILE_DIR, which the benchmark prints
HOLD_PROFILE_ENV = "HOLD_PROFILE_DIR"
_SAMPLER = """
import atexit as _atexit, collections as _collections, os as _os, sys as _sys
import threading as _threading, time as _time
import gptperf as _gptperf
_OURS = _os.path.dirname(_gptperf.__file__)  # not inductor's generated code in a gptperf-named folder
def _sampled(key, when, name, title, top, group=None):
    spent = _collections.Counter()
    def sample():
        main, last = _threading.main_thread().ident, _time.monotonic()
        while True:
            _time.sleep(0.02)
            now = _time.monotonic()
            if when():
                spent[key(_sys._current_frames().get(main))] += now - last
            last = now
    def dump():
        with open(_os.path.join(_os.environ["ENV"], name), "w") as out:
            out.write(f"{title}: {sum(spent.values()):.1f} s sampled\\n")
            groups = _collections.Counter()
            for where, s in spent.items():
                groups[group(where) if group else where] += s
            if group:
                for where, s in groups.most_common():
                    out.write(f"{s:6.2f} s  in all: {where}\\n")
            for where, s in spent.most_common(top):
                out.write(f"{s:6.2f} s  {where}\\n")
    _threading.Thread(target=sample, daemon=True).start()
    _atexit.register(dump)
""".replace("ENV", HOLD_PROFILE_ENV)
# A side process sampled while it holds the GPU lock, by where its main thread is (the innermost
# frames and the deepest gptperf frame)
_HOLD_PROFILE = _SAMPLER + """
from gptperf.measure import gpu_lock
locks = []
init = gpu_lock.GpuLock.__init__
def _init(self, *a, **k):
    init(self, *a, **k)
    locks.append(self)
gpu_lock.GpuLock.__init__ = _init
def _where(frame):
    inner, ours = [], None
    while frame is not None:
        code = frame.f_code
        if len(inner) < 2:
            inner.append(f"{_os.path.basename(code.co_filename)}:{code.co_name}")
        if ours is None and code.co_filename.startswith(_OURS):
            ours = f"{_os.path.basename(code.co_filename)}:{code.co_name}:{frame.f_lineno}"
        frame = frame.f_back
    return " < ".join(inner) + f" | {ours}"
_sampled(_where, lambda: any(lock._depth and lock._fd is not None for lock in locks),  # held, not waited for
         f"holds-{_os.getpid()}.txt", f"a side process, {' '.join(_sys.argv[1:])}, holding the GPU", 30)
from gptperf.measure.compile_warmup_child import main
_sys.exit(main())
"""
# The calibration itself, all the time: its main thread's gptperf frames (the four outermost below
# `calibrate`, the two innermost) and its innermost frame; totals first by stage and family (every
# pass of a family together)
_MAIN_PROFILE = _SAMPLER + """
def _chain(frame):
    ours, inner = [], None
    while frame is not None:
        code = frame.f_code
        if inner is None:
            inner = f"{_os.path.basename(code.co_filename)}:{code.co_name}"
        if code.co_filename.startswith(_OURS):
            ours.append(code.co_name)
        frame = frame.f_back
    ours.reverse()
    if "calibrate" in ours:
        ours = ours[ours.index("calibrate") + 1:]
    kept = ours if len(ours) <= 6 else ours[:4] + ["…"] + ours[-2:]
    return " > ".join(kept) + f" | {inner}"
def _family(where):
    chain = [name for name in where.split(" | ")[0].split(" > ") if name]
    for name in chain[1:]:
        if name.startswith(("measure_", "_measure_")) and name != "_measure_pass":
            return f"{chain[0]} > {name}"  # a pass's family, whichever pass
    return " > ".join(chain[:3]) or "(outside gptperf)"
_sampled(_chain, lambda: True, f"main-{_os.getpid()}.txt", "the calibration's process", 40,
         group=_family)
"""
# each side process run under _HOLD_PROFILE
_PROFILED_SIDE = _EDIT.format(edit=f"[argv[0], '-c', {_HOLD_PROFILE!r}, *argv[3:]]")
# A side process as it was before 2026-12-06: inductor's compile stack imported, Triton's driver
# made, and the host jobs' and recordings' Triton JIT compiles run, inside the GPU lock ("holds as
# before")
_OLD_HOLDS = """
import contextlib, sys
from gptperf.measure import compile_warmup_child as child
released, only, held = child.released_triton_compiles, child.compile_only, lambda lock: contextlib.nullcontext()
@contextlib.contextmanager
def compile_only(lock):  # the decode kernels' compiles gave the lock up then too
    child.released_triton_compiles = released
    try:
        with only(lock):
            yield
    finally:
        child.released_triton_compiles = held
child.import_compile_stack = child.start_triton_driver = lambda: None
child.released_triton_compiles, child.compile_only = held, compile_only
sys.exit(child.main())
"""
# The calibration's CUDA context and cuBLAS made before the side processes start ("cuda first"):
# on a fresh machine the probes' first CUDA work took 5.7-9.5 s (H100, 2026-12-06) while the side
# processes imported torch and made their own contexts beside it
_CUDA_FIRST = """
_start = compile_warmup.CompileWarmup.start.__func__
def _cuda_first(cls, *a, **k):
    import torch
    x = torch.randn(256, 256, device="cuda")
    (x @ x).sum().item()
    return _start(cls, *a, **k)
compile_warmup.CompileWarmup.start = classmethod(_cuda_first)
"""
ONE_PROCESS = "compile_warmup.SIDE_PROCESSES = (compile_warmup.PARTS,)\n"
PATCHES = {
    # the three parts in turn in one side process, which ended 11 s after the kernels' timing
    "one process": ONE_PROCESS,
    # the side processes given no dtypes: no Triton kernel compiled ahead
    "not ahead": _EDIT.format(edit="[a for a in argv if not a.startswith(compile_warmup.DTYPES_ARG)]"),
    # the side processes at a lower CPU priority (nice 10): the calibration's own host work first
    "ahead niced": _EDIT.format(edit='["nice", "-n", "10", *argv]'),
    # the calibration's attention without cuDNN's backend (flash, memory-efficient or math, as
    # sdpa picks): no plan built per shape
    "no cudnn": "import torch\ntorch.backends.cuda.enable_cudnn_sdp(False)\n",
    # the side processes holding the GPU as they did before 2026-12-06 (_OLD_HOLDS)
    "holds as before": _EDIT.format(edit=f"[argv[0], '-c', {_OLD_HOLDS!r}, *argv[3:]]"),
    # the calibration's CUDA context and cuBLAS made before the side processes start (_CUDA_FIRST)
    "cuda first": _CUDA_FIRST,
    # as shipped, each side process sampled where it holds the GPU (_HOLD_PROFILE), the calibration
    # all the time (_MAIN_PROFILE)
    "ahead profiled": _MAIN_PROFILE + _PROFILED_SIDE,
}
VARIANTS = {"ahead": [sys.executable, "-c", _CLOCK + _RUN],
            **{name: [sys.executable, "-c", _CLOCK + _PATCH + patch + _RUN] for name, patch in PATCHES.items()}}


def outside_clock(stderr: str, launched: float, ended: float) -> dict[str, float | None]:
    """Seconds of a run's wall time (epoch `launched` to `ended`) outside the calibration's own
    clock, from its marks (`_CLOCK`): before the calibration started, after it ended until the
    interpreter's exit began, and that exit; None where a mark is missing."""
    marks: dict[str, float] = {}
    for line in stderr.splitlines():
        if line.startswith(CLOCK_MARK):
            _, what, stamp = line.split()
            marks[what] = float(stamp)
    start, end, exit_ = (marks.get(k) for k in ("start", "end", "exit"))
    return {"before_s": None if start is None else start - launched,
            "after_s": None if end is None or exit_ is None else exit_ - end,
            "exit_s": None if exit_ is None else ended - exit_}


def calibrate_cold(variant: str, warm_jit: bool = False) -> dict[str, object]:
    """One `gptperf calibrate --force --json` from empty caches (the driver's JIT cache too,
    unless `warm_jit`); its figures."""
    caches = Path(tempfile.mkdtemp(prefix="gptperf-cold-"))
    env = dict(os.environ, TRITON_CACHE_DIR=str(caches / "triton"),
               TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"), GPTPERF_CACHE_DIR=str(caches / "gptperf"))
    if not warm_jit:
        env["CUDA_CACHE_PATH"] = str(caches / "nv")
    holds = caches / "holds"
    holds.mkdir()
    env[HOLD_PROFILE_ENV] = str(holds)
    t0, launched = time.perf_counter(), time.time()
    try:
        proc = subprocess.run([*VARIANTS[variant], "calibrate", "--force", "--json"], env=env,
                              capture_output=True, text=True, timeout=400)
    finally:
        ended = time.time()
        profiles = [p.read_text() for name in ("main-*.txt", "holds-*.txt") for p in sorted(holds.glob(name))]
        shutil.rmtree(caches, ignore_errors=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"variant": variant, "wall_s": wall, "error": proc.stderr.strip().splitlines()[-1:],
                "hold_profiles": profiles}
    doc = json.loads(proc.stdout)
    notes = doc.get("notes", [])
    timing = next((n for n in notes if n.startswith("time: kernels")), "")
    spent = {name: re.search(rf"{name} ([0-9.]+)", timing) for name in ("attention", "gemv")}
    side = next((n for n in notes if n.startswith(NOTE_HEAD)), "")
    return {"variant": variant, "wall_s": wall, "calibration_s": doc.get("seconds"),
            **outside_clock(proc.stderr, launched, ended),
            **{f"{name}_family_s": float(m.group(1)) if m else None for name, m in spent.items()},
            "timing": timing, "side": side, "hold_profiles": profiles, "eager": [n for n in notes if "timed eagerly" in n],
            "grids": {f"{family} {key}": grid["seconds"] for family in ("matmul", "attention")
                      for key, grid in doc.get(family, {}).items()}}


def grid_agreement(first: dict[str, list[float]], other: dict[str, list[float]]) -> dict[str, tuple]:
    """Per grid both runs measured: (median of other/first over its cells, the largest |ratio - 1|,
    cells)."""
    out = {}
    for key, seconds in first.items():
        again = other.get(key)
        if again is None or len(again) != len(seconds):
            continue
        ratios = sorted(b / a for a, b in zip(seconds, again, strict=True) if a > 0 and b > 0)
        if ratios:
            out[key] = (ratios[len(ratios) // 2], max(abs(r - 1) for r in ratios), len(ratios))
    return out


def run_order(variants: list[str], rounds: int) -> list[str]:
    """The variants of each round, every other round reversed (ABBA): the machine's first
    calibration also pays cuDNN's first use, so no variant may always go first."""
    return [v for i in range(rounds) for v in (variants if i % 2 == 0 else variants[::-1])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"which, comma-separated, in order (of {', '.join(VARIANTS)})")
    parser.add_argument("--warm-jit", action="store_true",
                        help="keep the machine's CUDA JIT cache (default: an empty one each run)")
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
    runs = [calibrate_cold(variant, args.warm_jit) for variant in run_order(variants, args.rounds)]
    (root / "triton_warm.json").write_text(json.dumps(runs, indent=1))
    for run in runs:
        for profile in run.get("hold_profiles", []):
            print(f"{run['variant']}, {profile}")
    for run in runs:
        print(f"{run['variant']:>15}: {run.get('timing') or run.get('error')}; {run.get('side', '')}; "
              f"timed eagerly: {len(run.get('eager', []))}")
    print(f"{'variant':>15} {'wall s':>8} {'calibration s':>14} {'before s':>9} {'after s':>8} "
          f"{'exit s':>7} {'attention s':>12} {'gemv s':>8}")
    nan = float("nan")
    for run in runs:
        outside = " ".join(f"{run.get(k) if run.get(k) is not None else nan:{w}.1f}"
                           for k, w in (("before_s", 9), ("after_s", 8), ("exit_s", 7)))
        print(f"{run['variant']:>15} {run['wall_s']:8.1f} {run.get('calibration_s') or nan:14.1f} "
              f"{outside} {run.get('attention_family_s') or nan:12.1f} {run.get('gemv_family_s') or nan:8.1f}")
    for run in runs[1:]:
        for key, (median, worst, cells) in grid_agreement(runs[0].get("grids", {}),
                                                          run.get("grids", {})).items():
            print(f"{run['variant']} / {runs[0]['variant']}, {key}: median {median:.3f}, "
                  f"largest |ratio - 1| {worst:.3f} over {cells} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
