set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 GPTPERF_CACHE_DIR=$PWD/.gpucache
FINAL=$OUT; export OUT=$FINAL/d; mkdir -p $OUT
timeout 60 python -m pytest -q -m gpu tests/test_calibrate_kernels.py -k "sweep_measures" -p no:cacheprovider 2>&1 | tail -2 > $OUT/gputest.txt
timeout 450 python benchmarks/gpu_validate.py 2>&1 | tail -45 > $OUT/summary.txt
timeout 80 python benchmarks/gpu_matmul_offgrid.py > $OUT/offgrid.txt 2>&1
tar czf $FINAL/all.tgz -C $FINAL d
cat $OUT/gputest.txt; tail -16 $OUT/summary.txt; cat $OUT/offgrid.txt
python -c "import json;c=json.load(open('$OUT/calibration.json'));print(c['seconds']);[print(n[:230]) for n in c['notes'] if 'off the grid' in n or 'time:' in n]"
