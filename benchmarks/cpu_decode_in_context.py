"""(CPU) Why small eager decode steps run slower than the calibration says: (1) few-row linear
layers timed back to back, as the calibration times them, and with a step's small ops (LayerNorm,
GELU, an add) run between calls, beside the calibration's reading from the cache, and from memory
beside its plain grid; (2) decode
steps of growing depth with each block's own weights and with every block sharing block 0's (the
same Python modules and KV cache, one set of weights), beside the calibrated prediction. Needs a
cached CPU calibration (`gptperf calibrate`).

    python benchmarks/cpu_decode_in_context.py
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptperf.hostmem import keep_freed_memory
from gptperf.measure.calibrate import calibration_for
from gptperf.measure.calibration_plan import IN_STEP_MEMORY_BYTES
from gptperf.measure.matmul_in_step import between_ops
from gptperf.measure.timer import time_fn
from gptperf.model.config import preset
from gptperf.model.gpt import GPT
from gptperf.perfmodel.calibration import Calibration
from gptperf.perfmodel.expected import expected
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.steps.inference import inference_step

ROWS = (1, 2, 4, 8)
LAYERS = ((384, 128), (512, 128), (128, 512), (768, 256), (1024, 256), (256, 1024), (1536, 512), (512, 2048))
# (n_embd, n_head, batch, context) of the decode steps, each at DEPTHS blocks
STEPS = ((128, 4, 4, 128), (256, 8, 2, 128))
DEPTHS = (1, 4, 16, 48)


def median_us(fn: Callable[[], object], repeats: int = 600) -> float:
    """Median µs of `repeats` calls after 30 (gptperf's own timer)."""
    return 1e6 * time_fn(fn, warmup=30, repeats=repeats, device=torch.device("cpu")).median


def linear_in_context(cal: Calibration) -> None:
    between = between_ops(torch.randn(2, 1, 256))  # on two rows 256 wide
    print("few-row linear layers (µs): back to back, with a step's small ops between calls "
          "(their own time taken off), the calibration's reading from the cache")
    for m in ROWS:
        for n, k in LAYERS:
            x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
            alone = median_us(lambda x=x, w=w, b=b: F.linear(x, w, b))
            ops = median_us(between)
            inside = median_us(lambda x=x, w=w, b=b: (F.linear(x, w, b), between())) - ops
            warm = 1e6 * cal.matmul_seconds("fp32", m, n, k, warm=1.0)
            print(f"  M={m} {n:5d}x{k:<5d} ({4 * n * k / 2**20:5.2f} MiB)  back to back {alone:6.1f}  "
                  f"between ops {inside:6.1f}  calibration {warm:6.1f}  between/calibration {inside / warm:5.2f}")


def cycled_linear(copies: list[torch.Tensor], x: torch.Tensor, b: torch.Tensor) -> Callable[[], torch.Tensor]:
    """F.linear of x over the next of `copies` each call (its weight read from memory)."""
    weights = itertools.cycle(copies)
    return lambda: F.linear(x, next(weights), b)


def linear_from_memory(cal: Calibration) -> None:
    between = between_ops(torch.randn(2, 1, 256))  # on two rows 256 wide
    print("the same layers from memory, each call on another of its weight's copies (128 MiB of them), µs: "
          "back to back, between the ops (their own time taken off), the calibration's plain grid")
    for m in ROWS[1:]:
        for n, k in LAYERS[:6]:
            copies = [torch.randn(n, k) for _ in range(max(8, IN_STEP_MEMORY_BYTES // (4 * n * k)))]
            cycled = cycled_linear(copies, torch.randn(m, k), torch.randn(n))
            alone = median_us(cycled, 400)
            ops = median_us(between, 400)
            inside = median_us(lambda cycled=cycled: (cycled(), between()), 400) - ops
            grid = 1e6 * cal.matmul_seconds("fp32", m, n, k)
            print(f"  M={m} {n:5d}x{k:<5d}  back to back {alone:6.1f}  between ops {inside:6.1f}  plain grid {grid:6.1f}"
                  f"  between/back to back {inside / alone:5.2f}")


def share_weights(model: GPT) -> None:
    """Every block's parameters replaced by block 0's: the same modules, one set of weights."""
    first = dict(model.transformer.h[0].named_parameters())
    for block in model.transformer.h[1:]:
        for name in list(dict(block.named_parameters())):
            owner = block
            *path, leaf = name.split(".")
            for attr in path:
                owner = getattr(owner, attr)
            setattr(owner, leaf, first[name])


def decode_by_depth(cal: Calibration) -> None:
    print("eager decode steps by depth (µs a block): own weights, shared weights, calibrated")
    for c, h, batch, ctx in STEPS:
        for layers in DEPTHS:
            cfg = preset("tiny", n_layer=layers, n_head=h, n_embd=c)
            predicted = expected(cfg, Workload("decode", batch, ctx), ExecutionPlan(), cal).step_time_s
            times = []
            for shared in (False, True):
                torch.manual_seed(0)
                model = GPT(cfg).eval()
                if shared:
                    share_weights(model)
                step = inference_step(model, "decode", batch, ctx, ExecutionPlan(),
                                      torch.randint(0, cfg.vocab_size, (batch, ctx)))
                times.append(min(median_us(step, 200) for _ in range(3)))
            own, one_set = times
            print(f"  C={c} B={batch} L={ctx} {layers:3d} blocks  own {own / layers:7.1f}  shared {one_set / layers:7.1f}"
                  f"  calibrated {1e6 * predicted / layers:7.1f}  own/calibrated {own / (1e6 * predicted):5.2f}")


def main() -> None:
    keep_freed_memory()  # as gptperf's own measurements run
    torch.set_num_threads(2)
    cal = calibration_for("cpu", required=True)
    linear_in_context(cal)
    linear_from_memory(cal)
    decode_by_depth(cal)


if __name__ == "__main__":
    main()
