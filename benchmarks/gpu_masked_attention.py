"""The static KV cache's prefill attention: sdpa under the cache's (T, T) boolean mask against the
causal kernel (`is_causal`), with the kernel the masked call ran. What the calibration's
`masked_fwd` grid measures, at shapes off that grid (BENCHMARKS.md, "The optimizer's own
overlap, the static cache's masked attention, ...").

    python benchmarks/gpu_masked_attention.py      # CUDA; one line a shape
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from gptperf.measure.device_kernels import kernels_of
from gptperf.measure.kernel_timer import KernelTimer

SHAPES = ((48, 768, 64), (32, 512, 64), (128, 1024, 64), (8, 256, 64), (512, 128, 64),
          (16, 1000, 64), (100, 1000, 64), (24, 448, 64))  # (BH, T, D)


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    timer = KernelTimer(dev, quick=False)
    for dt in (torch.bfloat16, torch.float32):
        for bh, t, d in SHAPES:
            q, k, v = (torch.randn(1, bh, t, d, device=dev, dtype=dt) for _ in range(3))
            slots = torch.arange(t, device=dev)
            mask = slots[None, :] <= slots[:, None]  # as StaticKVCache.update builds it
            causal = timer(lambda j, q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            masked = timer(lambda j, q=q, k=k, v=v, m=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m))
            kernels = [kernel.name for kernel in kernels_of(
                lambda q=q, k=k, v=v, m=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m))]
            print(f"{str(dt)[6:]:9} BH {bh:4} T {t:5} causal {causal * 1e6:8.1f} µs masked "
                  f"{masked * 1e6:8.1f} µs  masked/(2 causal) {masked / (2 * causal):.3f}  "
                  f"{kernels[-1][:60] if kernels else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
