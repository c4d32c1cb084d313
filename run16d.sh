export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 GPTPERF_CACHE_DIR=$PWD/.gpucache
mkdir -p $OUT/v
OUT=$OUT/v timeout 420 python benchmarks/gpu_validate.py > $OUT/validate_log.txt 2>&1
echo rc $?
grep -A12 "gpu_validate summary" $OUT/validate_log.txt
grep -B2 -A8 "Targets (GPU" $OUT/validate_log.txt | tail -8
timeout 60 python benchmarks/gpu_decode_kernels.py gpt2 1 --context 1024 > $OUT/k_gpt2.txt 2>&1
timeout 60 python benchmarks/gpu_decode_kernels.py 7b 1 --context 1000 > $OUT/k_7b.txt 2>&1
grep step $OUT/k_*.txt | cut -c1-100
mv $OUT/*.json $OUT/v/ 2>/dev/null
timeout 100 python -m pytest -q -m gpu tests/test_calibrate_kernels.py tests/test_decode_kernels.py > $OUT/tests.txt 2>&1
tail -2 $OUT/tests.txt
cd $OUT && tar czf v.tgz v && rm -rf v
