"""GPU check of gptperf's measurement: ceilings against plain torch references, and `gptperf bench`.

Run on one CUDA GPU (about 3 minutes on an H100):

    OUT=/tmp/out python benchmarks/gpu_measure.py

(a) `gptperf ceilings --force --json --plot` in this process, with a plain 8192³ bf16 torch matmul
    and a 2 GiB device-to-device copy timed the straightforward way (perf_counter around a
    synchronised loop) before and after it; goal: gptperf's bf16 matmul peak and copy bandwidth
    >= 90% of the better reference.
(b) `gptperf bench train --preset gpt2 --batch 12 --seq 1024 --dtype bf16 --attention sdpa
    --compile --json`; checks: its peak allocated memory equals torch.cuda.max_memory_allocated()
    read right after, and its utilization is a number read from NVML. Then the same command's
    tables, and the eager run, if time allows.

Writes under $OUT (default ./gpu_measure_out): ceilings.json, ceilings.png, bench_train_gpt2.json,
the cached hardware file (cache/ceilings/*.toml), logs, and summary.json; the table comes last.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("OUT") or "gpu_measure_out")
OUT.mkdir(parents=True, exist_ok=True)
os.environ["GPTPERF_CACHE_DIR"] = str(OUT / "cache")  # a fresh cache: ceilings measured here
os.environ.setdefault("COLUMNS", "150")  # rich tables in the logs at a readable width

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
import torch  # noqa: E402

from gptperf.cli import main as gptperf  # noqa: E402

T0 = time.perf_counter()
BUDGET_S = 210  # optional extras are skipped past this
BENCH = ["bench", "train", "--preset", "gpt2", "--batch", "12", "--seq", "1024", "--dtype", "bf16",
         "--attention", "sdpa", "--compile"]


def run_cli(argv: list[str], log: str) -> tuple[int, str]:
    """`gptperf <argv>` in this process; stdout captured, echoed and written to OUT/<log>."""
    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = gptperf(argv)
    text = buf.getvalue()
    (OUT / log).write_text(text)
    print(f"$ gptperf {' '.join(argv)}  -> exit {code} in {time.perf_counter() - t:.1f} s", flush=True)
    return code, text


def reference_matmul(n: int = 8192, iters: int = 20) -> float:
    """FLOP/s of a plain bf16 `a @ b`, mean over a synchronised loop."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        c = a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        c = a @ b
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / iters
    del a, b, c
    return 2 * n**3 / dt


def reference_copy(nbytes: int = 2 * 2**30, iters: int = 20) -> float:
    """Bytes read + written per second of a plain 2 GiB device-to-device `y.copy_(x)`."""
    x = torch.randn(nbytes // 4, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        y.copy_(x)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / iters
    del x, y
    return 2 * nbytes / dt


def gib(n: float | None) -> str:
    return "—" if n is None else f"{n / 2**30:.2f} GiB"


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: this script needs a GPU")
        return 1
    card = torch.cuda.get_device_name(0)
    print(f"device: {card}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    summary: dict = {"device": card, "torch": torch.__version__, "cuda": torch.version.cuda}

    # (a) ceilings between two rounds of references
    refs_mm = [reference_matmul()]
    refs_cp = [reference_copy()]
    code, text = run_cli(["ceilings", "--force", "--json", "--plot", str(OUT / "ceilings.png")],
                         "ceilings.json")
    assert code == 0, "gptperf ceilings failed"
    ceil = json.loads(text)
    torch.cuda.empty_cache()
    refs_mm.append(reference_matmul())
    refs_cp.append(reference_copy())
    ref_mm, ref_cp = max(refs_mm), max(refs_cp)
    bf16 = ceil["peak_flops"]["bf16"]
    copy = ceil["bandwidth"]["copy"]["best_bytes_per_s"]
    summary["ceilings"] = {
        "bf16_matmul_flops_per_s": bf16, "bf16_best_shape": ceil["matmul"]["bf16"]["best_shape"],
        "reference_matmul_flops_per_s": refs_mm, "matmul_ratio": bf16 / ref_mm,
        "copy_bytes_per_s": copy, "saxpy_bytes_per_s": ceil["bandwidth"]["saxpy"]["best_bytes_per_s"],
        "reference_copy_bytes_per_s": refs_cp, "copy_ratio": copy / ref_cp,
        "peak_flops": ceil["peak_flops"], "launch_latency_s": ceil["launch_latency_s"],
        "curves": {dt: [(p["m"], p["n"], p["k"], p["flops_per_s"])
                        for p in m["points"] + m.get("shapes", [])]
                   for dt, m in ceil["matmul"].items()},
    }
    run_cli(["ceilings"], "ceilings_table.txt")  # the cached result, as tables
    print((OUT / "ceilings_table.txt").read_text(), flush=True)

    # (b) bench: the JSON, then the checks against torch's own counters in this process
    code, text = run_cli([*BENCH, "--json"], "bench_train_gpt2.json")
    allocated_now = torch.cuda.max_memory_allocated()
    assert code == 0, "gptperf bench failed"
    bench = json.loads(text)
    mem = bench["memory"]["measured"]
    util = bench["utilization"]
    mfu = {m["against"]: m for m in bench["mfu"]}
    summary["bench"] = {
        "step_time_s": bench["step_time_s"], "phases_s": {
            k: v["median_s"] for k, v in bench["time_per_step"]["phases"].items()},
        "rel_spread": bench["time_per_step"]["total"]["rel_spread"],
        "tokens_per_s": bench["throughput"]["tokens_per_s"],
        "achieved_flops_per_s": bench["flops"]["achieved_flops_per_s"],
        "mfu": {k: (m["mfu"], m["label"]) for k, m in mfu.items()},
        "peak_allocated_bytes": mem["allocated_bytes"], "peak_reserved_bytes": mem["reserved_bytes"],
        "torch_max_memory_allocated": allocated_now,
        "peak_equals_torch": mem["allocated_bytes"] == allocated_now,
        "predicted_peak_bytes": bench["memory"]["predicted"]["total"],
        "utilization": util, "utilization_from_nvml": util["source"] == "nvml"
        and isinstance(util["mean_percent"], (int, float)),
        "predictions": bench["predictions"], "wall_time_s": bench["wall_time_s"],
    }

    extras = []
    if time.perf_counter() - T0 < BUDGET_S:
        run_cli(BENCH, "bench_train_gpt2.txt")  # the same run as tables (compile cache is warm)
        extras.append("bench_train_gpt2.txt")
    if time.perf_counter() - T0 < BUDGET_S:
        eager = [a for a in BENCH if a != "--compile"]
        code, text = run_cli([*eager, "--json"], "bench_train_gpt2_eager.json")
        if code == 0:
            summary["bench_eager_step_time_s"] = json.loads(text)["step_time_s"]
    for name in extras:
        print((OUT / name).read_text(), flush=True)
    summary["total_s"] = time.perf_counter() - T0
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    c, b = summary["ceilings"], summary["bench"]
    rows = [
        ("bf16 matmul peak (gptperf ceilings)", f"{bf16 / 1e12:.0f} TFLOP/s at {c['bf16_best_shape']}"),
        ("bf16 8192³ plain torch (best of 2)", f"{ref_mm / 1e12:.0f} TFLOP/s"),
        ("  ratio (goal >= 90%)", f"{100 * c['matmul_ratio']:.1f}%  "
                                  f"{'PASS' if c['matmul_ratio'] >= 0.9 else 'FAIL'}"),
        ("copy bandwidth (gptperf ceilings)", f"{copy / 1e12:.2f} TB/s (read + write)"),
        ("2 GiB copy plain torch (best of 2)", f"{ref_cp / 1e12:.2f} TB/s"),
        ("  ratio (goal >= 90%)", f"{100 * c['copy_ratio']:.1f}%  "
                                  f"{'PASS' if c['copy_ratio'] >= 0.9 else 'FAIL'}"),
        ("saxpy bandwidth", f"{c['saxpy_bytes_per_s'] / 1e12:.2f} TB/s"),
        ("launch floor", f"{c['launch_latency_s'] * 1e6:.2f} µs per tiny op"),
        ("other peaks", ", ".join(f"{k} {v / 1e12:.0f}" for k, v in c["peak_flops"].items())
         + " TFLOP/s"),
        ("bench gpt2 train B=12 T=1024 bf16 compiled", f"{b['step_time_s'] * 1e3:.1f} ms/step "
         f"(spread {100 * b['rel_spread']:.1f}%), {b['tokens_per_s'] / 1e3:.0f} k tokens/s"),
        ("  phases", ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in b["phases_s"].items())),
        ("  eager step", f"{summary.get('bench_eager_step_time_s', float('nan')) * 1e3:.1f} ms"),
        ("  achieved", f"{b['achieved_flops_per_s'] / 1e12:.0f} TFLOP/s (perfmodel model FLOPs)"),
        *[(f"  MFU vs {k}", f"{100 * v[0]:.1f}%  ({v[1]})") for k, v in b["mfu"].items()],
        ("  peak allocated == torch.cuda.max_memory_allocated",
         f"{gib(b['peak_allocated_bytes'])} vs {gib(allocated_now)}: "
         f"{'PASS' if b['peak_equals_torch'] else 'FAIL'}"),
        ("  predicted peak (perfmodel)", gib(b["predicted_peak_bytes"])),
        ("  utilization from NVML", f"{util['mean_percent'] or 0:.0f}% mean ({util['source']}, "
         f"{util['samples']} samples): {'PASS' if b['utilization_from_nvml'] else 'FAIL'}"),
        *[(f"  predicted step on {p['hardware']}",
           f"{p['step_time_s'] * 1e3:.1f} ms; measured/predicted {p['measured_over_predicted']:.2f}")
          for p in b["predictions"]],
        ("total script time", f"{summary['total_s']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * 100)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    ok = c["matmul_ratio"] >= 0.9 and c["copy_ratio"] >= 0.9 and b["peak_equals_torch"] \
        and b["utilization_from_nvml"]
    print("ALL CHECKS PASS" if ok else "SOME CHECKS FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
