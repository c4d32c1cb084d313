"""Tiles of the batch-1 matrix-vector kernel (`gptperf.steps.gemv`) on one CUDA card.

    python benchmarks/gpu_gemv.py      # writes $OUT/gpu_gemv.json when OUT is set

For the weight shapes of gpt2 and the 7B-shaped config: every candidate tile timed inside a CUDA
graph of back-to-back calls over distinct weights (512 MiB or more, so none sits in L2), against
cuBLAS (torch.mm) and against `gemv_config`'s choice; parity with a float64 product first.
"""

from __future__ import annotations

import json
import os
import time

import torch

from gptperf.measure.kernel_model import per_kernel_time
from gptperf.steps import gemv as G

SHAPES = {  # (n, k) of y = W·x
    "7B attn.qkv": (12288, 4096), "7B attn.proj": (4096, 4096), "7B mlp.fc": (16384, 4096),
    "7B mlp.proj": (4096, 16384), "7B lm_head": (50304, 4096),
    "gpt2 attn.qkv": (2304, 768), "gpt2 attn.proj": (768, 768), "gpt2 mlp.fc": (3072, 768),
    "gpt2 mlp.proj": (768, 3072), "gpt2 lm_head": (50304, 768),
}
TILES = [(bn, bk, w) for bn, bk, w in [
    (1, 1024, 4), (1, 1024, 8), (1, 2048, 4), (1, 2048, 8), (1, 2048, 16), (1, 4096, 8), (1, 4096, 16),
    (2, 512, 4), (2, 1024, 4), (2, 1024, 8), (2, 2048, 8), (2, 2048, 16), (2, 4096, 16),
    (4, 256, 4), (4, 512, 4), (4, 1024, 4), (4, 1024, 8), (4, 2048, 16),
    (8, 256, 4), (8, 512, 8), (8, 1024, 8), (16, 128, 4), (16, 256, 8), (32, 128, 8),
]]
POOL = 512 * 2**20
DEV = torch.device("cuda")


def graph_time(fn, calls: int) -> float:
    return per_kernel_time(fn, calls, DEV, repeats=15)


def bench_shape(label: str, n: int, k: int) -> dict:
    count = max(2, POOL // (n * k * 2))
    ws = [torch.randn(n, k, device=DEV, dtype=torch.bfloat16) * 0.02 for _ in range(count)]
    x = torch.randn(k, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(n, device=DEV, dtype=torch.bfloat16)
    out = torch.empty(n, device=DEV, dtype=torch.bfloat16)
    ref = (ws[0].double() @ x.double() + b.double())
    G.launch(x, ws[0], b, out)
    err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    op = G.gemv(x[None, None], ws[0], b).reshape(n)
    same = torch.equal(op, out)
    nbytes = n * k * 2
    res = {"shape": label, "n": n, "k": k, "max_rel_error_vs_fp64": err, "op_equals_launch": same,
           "weight_bytes": nbytes, "tiles": {}}
    xm = x[None]
    outm = out[None]
    res["cublas_s"] = graph_time(lambda: [torch.mm(xm, w.t(), out=outm) for w in ws], count)
    for tile in TILES:
        try:
            t = graph_time(lambda tile=tile: [G.launch(x, w, b, out, tile) for w in ws], count)
        except Exception as e:  # noqa: BLE001 - a tile that does not compile is skipped
            res["tiles"][str(tile)] = repr(e)[:100]
            continue
        res["tiles"][str(tile)] = t
    res["chosen"] = str(G.gemv_config(n, k))
    res["chosen_s"] = graph_time(lambda: [G.launch(x, w, b, out) for w in ws], count)
    timed = {t: v for t, v in res["tiles"].items() if isinstance(v, float)}
    best = min(timed, key=timed.get)
    res["best"], res["best_s"] = best, timed[best]
    top = sorted(timed.items(), key=lambda kv: kv[1])[:5]
    print(f"{label:15s} {nbytes / 2**20:7.1f} MiB  err {err:.1e} op==launch {same}  cuBLAS "
          f"{res['cublas_s'] * 1e6:6.1f} µs ({nbytes / res['cublas_s'] / 1e12:.2f} TB/s)  chosen {res['chosen']} "
          f"{res['chosen_s'] * 1e6:6.1f} µs ({nbytes / res['chosen_s'] / 1e12:.2f} TB/s)  best: "
          + ", ".join(f"{t} {v * 1e6:.1f}" for t, v in top), flush=True)
    return res


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for label, (n, k) in SHAPES.items():
        rows.append(bench_shape(label, n, k))
        torch.cuda.empty_cache()
    print("\nall tiles, TB/s:")
    print("tile".ljust(16) + "".join(r["shape"][:13].rjust(14) for r in rows))
    for tile in TILES:
        cells = []
        for r in rows:
            v = r["tiles"].get(str(tile))
            cells.append(f"{r['weight_bytes'] / v / 1e12:14.2f}" if isinstance(v, float) else "fail".rjust(14))
        print(str(tile).ljust(16) + "".join(cells))
    out = os.environ.get("OUT")
    if out:
        path = os.path.join(out, "gpu_gemv.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
