"""gptperf's own speed on one CUDA card, each figure beside its anchor measured in the same call.

    python benchmarks/prepare_anchors.py     # here, once: nanoGPT and gpt-fast into anchors/
    python benchmarks/gpu_speed.py           # on the card, with `carry: ["anchors"]`
    python benchmarks/gpu_speed.py --no-anchors --only train,decode-gpt2

1. copy: 2 GiB device-to-device copy, read + written bytes counted, median of 20.
2. train: the step `gptperf train` runs on a GPU by default (gpt2, B=12, T=1024, bf16 autocast,
   compiled, fused AdamW, clipping at 1.0), built by `gptperf.steps.build_step`: the training
   loop's `run()` (forward, backward, update, the loss read back) timed by CUDA events, median of
   30 after 8 warm-up steps. Anchor: nanoGPT's bench.py (B=12, T=1024, its own timing).
3. decode-gpt2: `FastDecoder` (the default plan of `gptperf generate` on a GPU), batch 1, greedy,
   at context 1024. The figure is a token of generation as `FastDecoder.run` makes them (graphs
   of GRAPH_STEPS steps): the 64 steps ending at context 1024 (positions 960-1023) timed by CUDA
   events, median of 30, over 64. Beside it one step alone (one graph a step, the step written at
   position 1023), median of 200 replays. Anchor: gpt-fast's stories110M (12 layers, C = 768).
4. decode-7b: the 7B shape (32 layers, C = 4096, 32 heads, vocab 50304) at batch 1, context 128,
   timed as in 3: the bytes a decode step must read (every weight once, the tied embedding as the
   LM head, one position embedding row, K and V of the context; `gptperf.perfmodel`'s count,
   averaged over the contexts run) over its time, against the copy bandwidth. Anchor: gpt-fast's
   7B (its own "bandwidth achieved").

With `--processes N` each decode figure is measured in N fresh Python processes, one after the
other, and the median process's figures are reported, every process's token time beside them: on
one H200 the same decoder read 197.4 µs a token in one process and 200.3 in another a minute
apart (BENCHMARKS.md, "Run 12"), as much as the gpt2 goal's margin.

Writes $OUT/gpu_speed.json when OUT is set; prints a table last.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gptperf.envinfo import device_name
from gptperf.measure.fresh_process import run_json_child
from gptperf.measure.timer import time_fn
from gptperf.model import GPTConfig, preset
from gptperf.perfmodel import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps import build_step
from gptperf.steps.fast_decode import FastDecoder, build_model

DEV = torch.device("cuda")
CFG_7B = GPTConfig(n_layer=32, n_head=32, n_embd=4096, vocab_size=50304, block_size=2048, name="7B-shaped")


def copy_bandwidth() -> float:
    n = 2**30
    src = torch.randn(n // 4, device=DEV)  # 1 GiB read, 1 GiB written
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), warmup=3, repeats=20, device=DEV).median
    return 2 * src.numel() * 4 / t


def train_step() -> dict[str, Any]:
    plan = ExecutionPlan.default("train", "cuda", compile=True, dtype="bf16")
    t0 = time.time()
    step = build_step(preset("gpt2"), Workload("train", 12, 1024, "bf16"), plan, DEV)
    step.train.compile_now(12, 1024)
    setup = time.time() - t0
    t = time_fn(step.train.run, warmup=8, repeats=30, device=DEV).median
    out = {"step_s": t, "plan": plan.label, "setup_s": setup,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    del step
    torch.cuda.empty_cache()
    return out


RUN = 64  # decode steps a generation figure times: four graphs of GRAPH_STEPS


def decode_step(config: GPTConfig, context: int) -> dict[str, Any]:
    from gptperf.perfmodel import get_hardware, predict

    model = build_model(config, DEV, torch.bfloat16)
    t0 = time.time()
    dec = FastDecoder(model, 1, context)
    dec.warmup()
    setup = time.time() - t0

    def one() -> None:
        dec.set_length(context - 1)
        dec.step()

    def generation() -> None:  # the last RUN steps up to the context, as generate runs them
        dec.set_length(context - RUN)
        dec.run(RUN)

    step = time_fn(one, warmup=20, repeats=200, device=DEV).median
    token = time_fn(generation, warmup=3, repeats=30, device=DEV).median / RUN
    hw = get_hardware("h200")
    nbytes = sum(predict(config, Workload("decode", 1, c, "bf16"), hw, plan=dec.plan).bytes
                 for c in range(context - RUN + 1, context + 1)) / RUN
    return {"token_s": token, "step_s": step, "graph_steps": dec.graph_steps, "plan": dec.plan.label,
            "setup_s": setup, "bytes": nbytes}


DECODE_PARTS = {"decode-gpt2": lambda: decode_step(preset("gpt2"), 1024),
                "decode-7b": lambda: decode_step(CFG_7B, 128)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median token time (the lower middle of an even count), with every run's token
    time in order (`token_s_runs`)."""
    if not runs:
        raise ValueError("no runs to take the median of")
    ordered = sorted(runs, key=lambda r: r["token_s"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["token_s_runs"] = [r["token_s"] for r in runs]
    return out


def decode_in_processes(part: str, processes: int) -> dict[str, Any]:
    """`part`'s decode figures measured in `processes` fresh Python processes, one after the
    other (each builds its own model): `median_run` of them."""
    return median_run([run_json_child([__file__, "--one", part]) for _ in range(processes)])


def load_anchors() -> Any:
    path = Path(__file__).with_name("anchors.py")
    spec = importlib.util.spec_from_file_location("gptperf_anchors", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="train,decode-gpt2,decode-7b")
    p.add_argument("--no-anchors", action="store_true")
    p.add_argument("--processes", type=int, default=1,
                   help="fresh processes each decode figure is measured in (the median reported)")
    p.add_argument("--one", choices=sorted(DECODE_PARTS), help=argparse.SUPPRESS)  # a child's part
    args = p.parse_args()
    if args.processes < 1:
        p.error(f"--processes must be a positive integer, got {args.processes}")
    if args.one:  # a child of `decode_in_processes`: one figure, one JSON line
        print(json.dumps(DECODE_PARTS[args.one]()))
        return
    parts = set(args.only.split(","))
    res: dict[str, Any] = {"device": device_name(DEV), "torch": torch.__version__,
                           "date": time.strftime("%Y-%m-%d")}
    res["copy_Bps"] = copy_bandwidth()
    print(f"copy {res['copy_Bps'] / 1e12:.3f} TB/s", flush=True)
    anchors = None if args.no_anchors else load_anchors()

    out = os.environ.get("OUT")

    def attempt(key: str, fn: Any) -> None:
        try:
            res[key] = fn()
            print(f"{key}: {res[key]}", flush=True)
        except Exception as err:  # noqa: BLE001 - one part failing must not hide the others
            res[key] = {"error": f"{type(err).__name__}: {str(err)[:400]}"}
            print(f"{key}: FAILED {res[key]['error']}", flush=True)
        if out:  # after every part: a run cut short keeps what it measured
            Path(out, "gpu_speed.json").write_text(json.dumps(res, indent=1, default=str))

    def decode_figure(part: str) -> dict[str, Any]:
        if args.processes > 1:
            return decode_in_processes(part, args.processes)
        return DECODE_PARTS[part]()

    if "train" in parts:
        attempt("train", train_step)
        if anchors:
            attempt("nanogpt", lambda: anchors.nanogpt_train_ms(12, 1024, True).to_dict())
    if "decode-gpt2" in parts:
        attempt("decode_gpt2", lambda: decode_figure("decode-gpt2"))
        torch.cuda.empty_cache()
        if anchors:
            attempt("gpt_fast_110m", lambda: anchors.gpt_fast_decode("stories110M").to_dict())
    if "decode-7b" in parts:
        attempt("decode_7b", lambda: decode_figure("decode-7b"))
        if anchors:
            attempt("gpt_fast_7b", lambda: anchors.gpt_fast_decode("7B").to_dict())

    copy = res["copy_Bps"]
    print(f"\n{res['device']}, torch {res['torch']}, {res['date']}; copy {copy / 1e12:.2f} TB/s (measured)")
    print(f"{'figure':34s} {'gptperf':>14s} {'anchor':>26s}  goal")

    def ok(key: str) -> bool:
        return key in res and "error" not in res[key]

    if ok("train"):
        anchor = f"{res['nanogpt']['ms_per_iter']:.1f} ms nanoGPT" if ok("nanogpt") else "-"
        print(f"{'gpt2 train step B=12 T=1024 bf16':34s} {res['train']['step_s'] * 1e3:11.2f} ms "
              f"{anchor:>26s}  <= 22 ms")
    if ok("decode_gpt2"):
        anchor = (f"{1e6 / res['gpt_fast_110m']['tokens_per_s']:.0f} us/token 110M" if ok("gpt_fast_110m") else "-")
        print(f"{'gpt2 decode B=1 L=1024':34s} {res['decode_gpt2']['token_s'] * 1e6:8.1f} us/tok "
              f"{anchor:>26s}  <= 200 us")
        print(f"{'':34s} one step alone {res['decode_gpt2']['step_s'] * 1e6:.1f} us")
        print_runs(res["decode_gpt2"])
    if ok("decode_7b"):
        d = res["decode_7b"]
        share = d["bytes"] / d["token_s"] / copy
        anchor = "-"
        if ok("gpt_fast_7b"):
            anchor = f"{res['gpt_fast_7b']['bandwidth_tbs'] * 1e12 / copy:.1%} of copy gpt-fast"
        print(f"{'7B decode B=1 L=128 (share of copy)':34s} {share:13.1%} {anchor:>26s}  >= 90%")
        print(f"{'':34s} {1 / d['token_s']:8.1f} tok/s, {d['bytes'] / d['token_s'] / 1e12:.2f} TB/s; "
              f"one step alone {d['step_s'] * 1e6:.1f} us")
        print_runs(d)


def print_runs(figure: dict[str, Any]) -> None:
    """Every process's token time, where the figure is the median of several."""
    runs = figure.get("token_s_runs")
    if runs:
        print(f"{'':34s} median of {len(runs)} processes: "
              f"{', '.join(f'{t * 1e6:.1f}' for t in runs)} us/tok")


if __name__ == "__main__":
    main()
