"""The kernels of one fast-path decode step, listed in order, per batch size (one CUDA card).

    python benchmarks/gpu_decode_kernels.py gpt2 1,2,16,64      # model, batches
    python benchmarks/gpu_decode_kernels.py 7b 1 --tuning wide  # wider coordinate-descent search

For each batch: the step time (median of graph replays), then one replay under torch.profiler:
every kernel's name and duration in launch order, and inductor's tuned Triton configurations
(`*.best_config` in its cache directory). Writes $OUT/decode_kernels_<model>_<tag>.json when OUT
is set. This is what the compiled-step kernel counts of `gptperf.perfmodel` were read from.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import time
from typing import Any

import torch

from gptperf.measure.calibrate_decode import replay_kernels
from gptperf.measure.timer import time_fn
from gptperf.model import GPTConfig, preset
from gptperf.steps.fast_decode import FastDecoder, build_model

CONFIGS = {
    "gpt2": preset("gpt2"),
    "7b": GPTConfig(n_layer=32, n_head=32, n_embd=4096, vocab_size=50304, block_size=2048, name="7B-shaped"),
}


def clocks() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as err:  # noqa: BLE001 - a diagnostic only
        return repr(err)


def best_configs() -> dict[str, Any]:
    root = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or f"/tmp/torchinductor_{os.environ.get('USER', 'root')}"
    out = {}
    for path in glob.glob(os.path.join(root, "**", "*.best_config"), recursive=True):
        with open(path) as f:
            out[os.path.basename(path)] = json.load(f)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", choices=sorted(CONFIGS))
    p.add_argument("batches")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--tuning", choices=("default", "wide"), default="default")
    p.add_argument("--tag", default="")
    p.add_argument("--inductor", action="append", default=[], metavar="KEY=INT",
                   help="set torch._inductor.config.KEY (an integer or 0/1) before compiling")
    p.add_argument("--no-gemv", action="store_true", help="leave one-row matmuls to inductor")
    p.add_argument("--attention-grid", action="store_true", help="also time decode SDPA on a finer grid")
    args = p.parse_args()
    if args.tuning == "wide":
        import torch._inductor.config as ic

        ic.coordinate_descent_check_all_directions = True
        ic.coordinate_descent_search_radius = 2
    for item in args.inductor:
        import torch._inductor.config as ic

        key, _, value = item.partition("=")
        setattr(ic, key, type(getattr(ic, key))(int(value)))
    cfg = CONFIGS[args.model]
    model = build_model(cfg, "cuda", torch.bfloat16)
    result: dict[str, Any] = {"model": args.model, "tuning": args.tuning, "inductor": args.inductor, "no_gemv": args.no_gemv, "clocks_start": clocks(), "batches": []}
    for b in (int(x) for x in args.batches.split(",")):
        t0 = time.time()
        dec = FastDecoder(model, b, args.context, one_row_kernel=False if args.no_gemv else None)
        dec.warmup()
        setup = time.time() - t0

        def step(dec: FastDecoder = dec) -> None:
            dec.set_length(args.context - 1)
            dec.step()

        t = time_fn(step, warmup=5, repeats=50, device=torch.device("cuda")).median
        kernels = replay_kernels(dec, args.context - 1)
        busy = sum(d for _, _, d in kernels)
        result["batches"].append({"batch": b, "step_s": t, "setup_s": setup, "kernels": kernels,
                                  "clocks": clocks()})
        print(f"{args.model} {args.tuning} B={b}: step {t * 1e6:.1f} µs, {len(kernels)} kernels busy "
              f"{busy:.1f} µs, setup {setup:.0f} s, clocks {result['batches'][-1]['clocks']}", flush=True)
        if b in (1, 16) or len(kernels) < 200:
            per_layer = len(kernels) // cfg.n_layer
            for name, _, d in kernels[: per_layer + 4]:
                print(f"    {d:7.2f} µs  {name[:110]}")
            print("    ...")
            for name, _, d in kernels[-6:]:
                print(f"    {d:7.2f} µs  {name[:110]}")
        del dec
        torch.cuda.empty_cache()
    result["best_configs"] = best_configs()
    if args.attention_grid:
        from gptperf.measure import kernel_model as c

        c.KM_ATTENTION_BATCHES = (1, 2, 4, 8, 16, 32, 64)
        c.KM_ATTENTION_CONTEXTS = (128, 256, 512, 1024)
        grid = c.attention_curve(torch.device("cuda"), torch.bfloat16, c.KM_CUDA_POOL, c.KM_MAX_KERNELS, 5)
        result["attention_grid"] = grid
        for i in range(len(grid["time_s"])):
            print(f"  sdpa B={grid['batch'][i]} H={grid['heads'][i]} D={grid['head_dim'][i]} "
                  f"L={grid['context'][i]}: {grid['time_s'][i] * 1e6:.2f} µs")
    out = os.environ.get("OUT")
    if out:
        path = os.path.join(out, f"decode_kernels_{args.model}_{args.tuning}{args.tag}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
