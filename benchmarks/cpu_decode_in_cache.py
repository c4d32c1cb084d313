"""(CPU) Where a small eager decode step's time goes when its tensors fit in the cache: each
step timed whole and again with sdpa replaced by a copy of q, their difference the one-query
attention's time in the step, beside the same call timed alone right after, the calibration's
one-query grid (its KV cycled through 256 MiB) and its twin timed from the cache; then a linear
layer row by row against the grid's rows. Needs a cached CPU calibration (`gptperf calibrate`).

    python benchmarks/cpu_decode_in_cache.py
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptperf.hostmem import keep_freed_memory
from gptperf.measure.calibrate import calibration_for
from gptperf.measure.timer import time_fn
from gptperf.model.config import preset
from gptperf.model.gpt import GPT
from gptperf.perfmodel.calibration import attention_key
from gptperf.plan import ExecutionPlan
from gptperf.steps.inference import inference_step

# (n_embd, n_head, n_layer, vocab, batch, context): drawn-like decode steps of 10-17 MB
STEPS = ((128, 4, 4, 1000, 9, 253), (112, 7, 3, 256, 10, 298), (160, 5, 4, 65, 9, 244), (160, 5, 4, 256, 6, 200),
         (160, 5, 2, 8000, 7, 303), (128, 2, 3, 256, 6, 221))
ROWS = tuple(range(1, 17)) + (24, 32, 33, 48, 64)


def median_us(fn: Callable[[], object], repeats: int = 400) -> float:
    """Median µs of `repeats` calls after 30 (gptperf's own timer)."""
    return 1e6 * time_fn(fn, warmup=30, repeats=repeats, device=torch.device("cpu")).median


def attention_in_step(cal, c: int, h: int, layers: int, vocab: int, batch: int, ctx: int) -> str:
    cfg = preset("tiny", n_layer=layers, n_head=h, n_embd=c, vocab_size=vocab, block_size=512)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    step = inference_step(model, "decode", batch, ctx, ExecutionPlan(), torch.randint(0, vocab, (batch, ctx)))
    sdpa = F.scaled_dot_product_attention
    whole = median_us(step)
    try:
        F.scaled_dot_product_attention = lambda q, k, v, *a, **kw: q.clone()  # the rest of the step
        rest = median_us(step)
    finally:
        F.scaled_dot_product_attention = sdpa
    # the same call alone, now (the machine drifts between minutes): the step's K, V and q shapes
    q = torch.randn(batch, h, 1, c // h)
    kv = torch.randn(2, layers, batch, h, ctx, c // h)
    alone = median_us(lambda: sdpa(q, kv[0, 0], kv[1, 0]))
    point = (batch * h, ctx, c // h)
    cold = 1e6 * cal.attention[attention_key("fp32", "one_query")].at(*point)
    twin = cal.attention.get(attention_key("fp32", "one_query_warm"))
    warm = f"{1e6 * twin.at(*point):8.1f}" if twin is not None else "       —"
    return (f"c{c}h{h}-{layers}L-v{vocab} B={batch} L={ctx}  step {whole:8.1f}  without sdpa {rest:8.1f}  "
            f"sdpa a layer {(whole - rest) / layers:7.1f}  alone {alone:7.1f}  grid {cold:7.1f}  "
            f"from the cache {warm}")


def main() -> None:
    keep_freed_memory()  # as gptperf's own measurements run
    torch.set_num_threads(2)
    cal = calibration_for("cpu", required=True)
    print("one-query attention in eager decode steps (µs, medians, this CPU):")
    for shape in STEPS:
        print(" ", attention_in_step(cal, *shape))
    print("a 768 × 768 linear layer by rows (µs): measured, the warm grid's reading, its row ratio")
    weight, bias = torch.randn(768, 768), torch.randn(768)
    for m in ROWS:
        x = torch.randn(m, 768)
        t = median_us(lambda x=x: F.linear(x, weight, bias), 200)
        print(f"  {m:3d} rows {t:8.1f}  grid {1e6 * cal.matmul_seconds('fp32', m, 768, 768, warm=1.0):8.1f}"
              f"  ratio {cal.row_ratio('fp32', m):.2f}")


if __name__ == "__main__":
    main()
