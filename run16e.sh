export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 150 python benchmarks/gpu_fused_attention_grid.py > $OUT/grid.txt 2>&1; echo rc $?
tail -22 $OUT/grid.txt
timeout 100 python -m pytest -q -m gpu tests/test_calibrate_kernels.py > $OUT/tests.txt 2>&1
tail -2 $OUT/tests.txt
