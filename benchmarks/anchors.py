"""The anchors' own speed on this CUDA card: nanoGPT's training step and gpt-fast's batch-1 decode.

    python benchmarks/prepare_anchors.py          # once, where the mirrors are: fills anchors/
    python benchmarks/anchors.py [--quick] [--only nanogpt|7B|stories110M ...]

Runs the anchors' unmodified code from the git-ignored `anchors/` folder (versions in
anchors/VERSIONS.json), each in a subprocess with a clean environment, so that gptperf's figures
can be printed beside them from the same machine. Prints a table; writes $OUT/anchors.json when
OUT is set.

nanoGPT: `bench.py --real_data=False --batch_size=B --block_size=T --compile=C` (GPT-2 124M,
bf16 autocast, fused AdamW, flash attention), parsed from its own line "time per iteration: X ms,
MFU: Y%": 10 burn-in steps, then the wall time of 20 steps / 20 (each step ends with
`loss.item()`, a host sync). Its MFU is against an A100's 312 TFLOP/s, whatever the card.

gpt-fast: generate.py's own `generate()` as its main() calls it, batch 1, temperature 0.8,
top_k 200 (main's defaults), on `Transformer.from_name(shape)` with random bf16 weights built
directly on the card, a synthetic prompt of `prompt_len` tokens (main's `--prompt N`), and
`decode_one_token` compiled as main compiles it (mode="reduce-overhead", fullgraph=True; the
inductor flags generate.py sets at import apply). Warm-up generations first, then the median wall
time t of timed ones, each between device syncs: tokens/s = new_tokens / t, including the eager
prefill, as gpt-fast prints it. Bandwidth is gpt-fast's "Bandwidth achieved": the bytes of the
parameters other than the embedding table (`_get_model_size`) × tokens/s. Also reported: the
prefill alone (gpt-fast's `prefill()`), the decode step without it, (t - prefill)/(new_tokens - 1),
and the KV-cache bytes at the mean context (the static cache holds max_seq_length positions; the
compiled attention may read all of them, reported as kv_bytes_static).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ANCHORS = Path(__file__).resolve().parent.parent / "anchors"
SHAPES = ("7B", "stories110M")
RESULT_TAG = "ANCHOR_RESULT "
# What a subprocess keeps of this environment: where python, CUDA and the compilers' caches are.
# Tuning knobs (TORCH_*, PYTORCH_*, TORCHINDUCTOR_* flags) that gptperf's runs may set are dropped.
ENV_KEEP = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH",
            "VIRTUAL_ENV", "TORCHINDUCTOR_CACHE_DIR")
ENV_KEEP_PREFIXES = ("CUDA_", "NVIDIA_", "TRITON_")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}


def _run(cmd: list[str], cwd: Path, timeout: float) -> str:
    """Run a subprocess; its stdout, or a RuntimeError with the last lines of its stderr."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        tail = (err.stderr or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(f"{' '.join(cmd)} ran past {timeout:.0f} s:\n{tail}") from err
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} (in {cwd}) exited {proc.returncode}:\n{tail}")
    return proc.stdout


@dataclass
class NanoGPTResult:
    batch: int
    seq: int
    compile: bool
    ms_per_iter: float
    mfu: str  # nanoGPT's own string, e.g. "MFU: 44.10%" (against an A100's 312 TFLOP/s)
    tokens_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens_per_s = self.batch * self.seq / (self.ms_per_iter / 1e3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NANOGPT_LINE = re.compile(r"time per iteration:\s*([0-9.]+)\s*ms,\s*(MFU:\s*-?[0-9.]+%)")


def parse_nanogpt(stdout: str) -> tuple[float, str]:
    """(ms per iteration, "MFU: X%") from bench.py's output; ValueError if the line is absent."""
    found = _NANOGPT_LINE.findall(stdout)
    if not found:
        raise ValueError(f"no 'time per iteration' line in nanoGPT's output: {stdout[-300:]!r}")
    ms, mfu = found[-1]
    return float(ms), mfu


def nanogpt_command(batch: int, seq: int, compile: bool, device: str = "cuda") -> list[str]:
    return [sys.executable, "bench.py", "--real_data=False", f"--batch_size={batch}",
            f"--block_size={seq}", f"--compile={compile}", f"--device={device}"]


def nanogpt_train_ms(batch: int = 12, seq: int = 1024, compile: bool = True, *,
                     device: str = "cuda", root: Path = ANCHORS,
                     timeout: float = 600) -> NanoGPTResult:
    """nanoGPT's bench.py (GPT-2 124M train step) in anchors/nanoGPT; its ms per iteration."""
    out = _run(nanogpt_command(batch, seq, compile, device), root / "nanoGPT", timeout)
    ms, mfu = parse_nanogpt(out)
    return NanoGPTResult(batch, seq, compile, ms, mfu)


@dataclass
class GptFastResult:
    shape: str
    compile: bool
    prompt_len: int
    new_tokens: int
    max_seq_length: int
    run_s: list[float]  # wall time of each timed generate()
    prefill_ms: float
    tokens_per_s: float  # new_tokens / median run, prefill included (gpt-fast's figure)
    ms_per_token: float
    decode_ms_per_token: float  # (median run - prefill) / (new_tokens - 1)
    weight_bytes: int  # parameters without the embedding table: gpt-fast's model_size
    param_bytes: int  # all parameters
    kv_bytes_mean: int  # K and V of every layer at the mean decode context
    kv_bytes_static: int  # the whole static cache (max_seq_length positions)
    bandwidth_tbs: float  # weight_bytes × tokens/s: gpt-fast's "Bandwidth achieved"
    decode_bandwidth_tbs: float  # (weight_bytes + kv_bytes_mean) / decode step
    device: str
    torch: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _import_gpt_fast(root: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """gpt-fast's model and generate modules. Their tokenizer module needs sentencepiece and
    tiktoken; the prompts here are synthetic, so a stub stands in for it."""
    import importlib

    stub = types.ModuleType("tokenizer")

    def get_tokenizer(*_: Any, **__: Any) -> None:
        raise RuntimeError("anchors.py uses synthetic prompts: gpt-fast's tokenizer is stubbed")

    stub.get_tokenizer = get_tokenizer  # type: ignore[attr-defined]
    sys.modules["tokenizer"] = stub
    sys.path.insert(0, str(root / "gpt-fast"))
    return importlib.import_module("model"), importlib.import_module("generate")


def gpt_fast_decode_here(shape: str, new_tokens: int = 200, prompt_len: int = 16,
                         compile: bool = True, warmup: int = 2, runs: int = 5,
                         device: str = "cuda", root: Path = ANCHORS) -> GptFastResult:
    """gpt-fast's batch-1 generation in this process (it sets inductor flags process-wide:
    call it through gpt_fast_decode, which gives it a process of its own)."""
    import time

    import torch

    gf_model, gen = _import_gpt_fast(root)
    if shape not in gf_model.transformer_configs:
        raise ValueError(f"shape {shape!r} is not one of gpt-fast's {sorted(gf_model.transformer_configs)}")
    torch.manual_seed(1234)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # bf16 weights made on the card: 7B never on the host
    try:
        with torch.device(device):
            model = gf_model.Transformer.from_name(shape).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    cfg = model.config
    weight_bytes, _ = gen._get_model_size(model)  # as main(): before the caches, which are buffers
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    max_seq = min(prompt_len + new_tokens, cfg.block_size)  # what generate() asks for
    with torch.device(device):
        model.setup_caches(max_batch_size=1, max_seq_length=max_seq)  # generate()'s call is then a no-op
    if compile:
        gen.decode_one_token = torch.compile(gen.decode_one_token, mode="reduce-overhead",
                                             fullgraph=True)
    prompt = torch.randint(0, 1024, (prompt_len,), device=device, dtype=torch.int64)
    sampling = {"temperature": 0.8, "top_k": 200}

    def timed(fn: Any) -> float:
        gen.device_sync(device=device)
        t0 = time.perf_counter()
        fn()
        gen.device_sync(device=device)
        return time.perf_counter() - t0

    def generation() -> None:
        y, _ = gen.generate(model, prompt, new_tokens, batch_size=1, draft_model=None,
                            speculate_k=5, interactive=False, callback=lambda x: x, **sampling)
        assert y.size(-1) - prompt_len == new_tokens

    @torch.no_grad()
    def prefill() -> None:
        gen.prefill(model, prompt.view(1, -1), torch.arange(0, prompt_len, device=device), **sampling)

    run_s = [timed(generation) for _ in range(warmup + runs)][warmup:]
    prefill_s = statistics.median([timed(prefill) for _ in range(max(runs, 3))])
    t = statistics.median(run_s)
    kv_per_pos = 2 * cfg.n_layer * cfg.n_local_heads * cfg.head_dim * model.output.weight.element_size()
    kv_mean = int(kv_per_pos * (prompt_len + new_tokens / 2))  # decode step k attends prompt_len+k+1
    decode_s = (t - prefill_s) / max(new_tokens - 1, 1)
    return GptFastResult(
        shape=shape, compile=compile, prompt_len=prompt_len, new_tokens=new_tokens,
        max_seq_length=model.max_seq_length, run_s=run_s, prefill_ms=prefill_s * 1e3,
        tokens_per_s=new_tokens / t, ms_per_token=t / new_tokens * 1e3,
        decode_ms_per_token=decode_s * 1e3, weight_bytes=weight_bytes, param_bytes=param_bytes,
        kv_bytes_mean=kv_mean, kv_bytes_static=kv_per_pos * model.max_seq_length,
        bandwidth_tbs=weight_bytes * new_tokens / t / 1e12,
        decode_bandwidth_tbs=(weight_bytes + kv_mean) / decode_s / 1e12,
        device=torch.cuda.get_device_name() if device.startswith("cuda") else device,
        torch=torch.__version__)


def gpt_fast_decode(shape: str, new_tokens: int = 200, prompt_len: int = 16,
                    compile: bool = True, *, warmup: int = 2, runs: int = 5,
                    device: str = "cuda", root: Path = ANCHORS,
                    timeout: float = 600) -> GptFastResult:
    """gpt_fast_decode_here in a subprocess of its own (this script's --child mode)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", shape,
           f"--new-tokens={new_tokens}", f"--prompt-len={prompt_len}", f"--compile={int(compile)}",
           f"--warmup={warmup}", f"--runs={runs}", f"--device={device}", f"--root={root}"]
    out = _run(cmd, root, timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_TAG)]
    if not lines:
        raise RuntimeError(f"gpt-fast child printed no result: {out[-300:]!r}")
    return GptFastResult(**json.loads(lines[-1][len(RESULT_TAG):]))


def _row(anchor: str, setting: str, figure: str) -> str:
    return f"{anchor:9s} {setting:44s} {figure}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="nanoGPT compiled only; gpt-fast 1 warm-up + 3 timed generations")
    ap.add_argument("--only", action="append", choices=["nanogpt", *SHAPES],
                    help="run only these anchors (repeatable; default: all)")
    ap.add_argument("--root", type=Path, default=ANCHORS)
    ap.add_argument("--child", metavar="SHAPE", help=argparse.SUPPRESS)
    for name, default in (("new-tokens", 200), ("prompt-len", 16), ("compile", 1),
                          ("warmup", 2), ("runs", 5)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)

    if args.child:
        res = gpt_fast_decode_here(args.child, args.new_tokens, args.prompt_len, bool(args.compile),
                                   args.warmup, args.runs, args.device, args.root)
        print(RESULT_TAG + json.dumps(res.to_dict()), flush=True)
        return 0

    if not (args.root / "VERSIONS.json").is_file():
        print(f"anchors.py: no {args.root}/VERSIONS.json; run benchmarks/prepare_anchors.py "
              "where the mirrors are and carry anchors/", file=sys.stderr)
        return 2
    only = set(args.only or ["nanogpt", *SHAPES])
    warmup, runs = (1, 3) if args.quick else (args.warmup, args.runs)
    report: dict[str, Any] = {"versions": json.loads((args.root / "VERSIONS.json").read_text()),
                              "nanogpt": [], "gpt_fast": [], "errors": []}
    rows = [_row("anchor", "setting", "figure")]
    jobs: list[tuple[str, Any]] = []
    if "nanogpt" in only:
        for comp in (True,) if args.quick else (True, False):
            jobs.append(("nanogpt", comp))
    jobs += [("gpt-fast", shape) for shape in SHAPES if shape in only]
    for kind, arg in jobs:
        try:
            if kind == "nanogpt":
                r = nanogpt_train_ms(12, 1024, arg, device=args.device, root=args.root)
                report["nanogpt"].append(r.to_dict())
                rows.append(_row("nanoGPT", f"bench.py gpt2 B=12 T=1024 bf16 {'compiled' if arg else 'eager'}",
                                 f"{r.ms_per_iter:.2f} ms/iter, {r.tokens_per_s / 1e3:.0f} k tok/s ({r.mfu} of A100)"))
            else:
                g = gpt_fast_decode(arg, args.new_tokens, args.prompt_len, bool(args.compile),
                                    warmup=warmup, runs=runs, device=args.device, root=args.root)
                report["gpt_fast"].append(g.to_dict())
                rows.append(_row("gpt-fast", f"{arg} bf16 B=1, prompt {g.prompt_len} + {g.new_tokens} new"
                                 f"{', compiled' if g.compile else ', eager'}",
                                 f"{g.tokens_per_s:.1f} tok/s ({g.ms_per_token:.3f} ms/tok; decode step "
                                 f"{g.decode_ms_per_token:.3f} ms), {g.bandwidth_tbs:.2f} TB/s of "
                                 f"{g.weight_bytes / 1e9:.2f} GB weights"))
        except (RuntimeError, ValueError) as err:
            report["errors"].append({"anchor": kind, "arg": str(arg), "error": str(err)})
            rows.append(_row("nanoGPT" if kind == "nanogpt" else "gpt-fast", str(arg),
                             f"FAILED: {str(err).splitlines()[-1][:120]}"))
        print(rows[-1], flush=True)
    versions = ", ".join(f"{n} {v['commit'][:12]}" for n, v in report["versions"].items())
    print(f"\nanchors ({versions}):\n" + "\n".join(rows))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "anchors.json").write_text(json.dumps(report, indent=2) + "\n")
    for e in report["errors"]:
        print(f"\n{e['anchor']} {e['arg']} failed:\n{e['error']}", file=sys.stderr)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
