#!/bin/bash
# The GPU checks of issues 12 and 15 in one go, each step's log under $OUT (default ./gpu-checks-out):
#
#     bash benchmarks/gpu_checks.sh STEP...
#
#   validate  gpu_validate.py: a fresh calibration, the fixed sweep, the benches, drawn cases (--random 8)
#   drawn     the drawn cases alone, on the cached calibration
#   kernels   gpu_op_kernels.py: one layer's kernels beside the model's (eager bf16 gpt2 train step)
#   report    gpu_report.py: `gptperf report` from an empty cache (index.html and report.json kept)
#   tests     the GPU tests of the kernel calls and the calibration's curves (pytest -m gpu)
#   speed     gpu_speed.py (SPEED_ARGS, e.g. "--only decode-gpt2,decode-7b"; the anchors need anchors/,
#             which benchmarks/prepare_anchors.py exports)
#
# SEED picks the drawn cases (default 6868). The tree is put on PYTHONPATH, so no install is needed.
# One device call runs 10 minutes at most: `validate` alone (up to 9), then `kernels drawn report`
# (about 8) in the next while the machine is warm, then `speed`; each call brings back its 8 files.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-checks-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1
export GPTPERF_CACHE_DIR=${GPTPERF_CACHE_DIR:-$PWD/.gpucache}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
for step in "$@"; do
  echo "=== $step $(date -u +%T)"
  case $step in
    validate) OUT=$OUT/validate timeout 560 python benchmarks/gpu_validate.py --random 8 --seed "${SEED:-6868}" \
                > "$OUT/validate.txt" 2>&1; tail -40 "$OUT/validate.txt";;
    drawn) OUT=$OUT/drawn timeout 300 python benchmarks/gpu_validate.py --skip-calibrate --no-validate --no-bench \
             --random 8 --seed "${SEED:-6868}" > "$OUT/drawn.txt" 2>&1; tail -20 "$OUT/drawn.txt"
           rm -f "$OUT/drawn/calibration.json";;  # the cached one: `validate` brought it back
    kernels) OUT=$OUT timeout 150 python benchmarks/gpu_op_kernels.py > "$OUT/kernels.txt" 2>&1
             tail -60 "$OUT/kernels.txt" | cut -c1-150;;
    report) OUT=$OUT/report timeout 420 python benchmarks/gpu_report.py > "$OUT/report.txt" 2>&1
            tail -40 "$OUT/report.txt"
            find "$OUT/report" -type f ! -name index.html ! -name report.json -delete;;
    tests) timeout 400 python -m pytest -q -m gpu tests/test_gpu_op_kernels.py tests/test_calibrate_kernels.py \
             tests/test_steps.py > "$OUT/tests.txt" 2>&1; tail -15 "$OUT/tests.txt";;
    speed) OUT=$OUT timeout 200 python benchmarks/gpu_speed.py ${SPEED_ARGS:-} > "$OUT/speed.txt" 2>&1
           tail -40 "$OUT/speed.txt";;
    *) echo "unknown step '$step'; valid: validate, drawn, kernels, report, tests, speed" >&2; exit 2;;
  esac
done
