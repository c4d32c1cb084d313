export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 GPTPERF_CACHE_DIR=$PWD/.gpucache
mkdir -p $OUT/v
OUT=$OUT/v timeout 570 python benchmarks/gpu_validate.py > $OUT/validate_log.txt 2>&1
echo rc $?
tail -45 $OUT/validate_log.txt
cd $OUT && tar czf v.tgz v && rm -rf v
