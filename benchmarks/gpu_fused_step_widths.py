"""The fused decode step's weight kernels at widths between the calibration's, against its in-step
curves: how far a kernel's time at one width strays from the curve over weight bytes that the
calibration draws through its own synthetic widths (`calibration_plan.FUSED_STEP_WIDTHS`).

    python benchmarks/gpu_fused_step_widths.py      (after `gptperf calibrate` on this GPU)

Each width is a synthetic bf16 model of head size 128 and vocabulary 512, built and captured by
`FastDecoder` as the calibration builds its own, its kernels timed as the calibration times them
(`calibrate_decode.replay_kernels`: a kernel's end minus the previous kernel's end in one profiled
replay, the median over the layers after the first); the last row is the 7B shape at context 1024.
Prints per width and kernel the time measured, the curve's reading, their ratio, the bandwidth and
the kernel's tile (`decode_kernels.fused_tile`); with $OUT, the rows to $OUT/fused_step_widths.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import torch

from gptperf.measure.calibrate import calibration_for
from gptperf.measure.calibrate_decode import replay_kernels, step_layer_times
from gptperf.model import GPTConfig
from gptperf.model.config import LAYER_WEIGHTS, NORM_FED_WEIGHTS
from gptperf.perfmodel.calibration import fused_step_key
from gptperf.steps import decode_kernels
from gptperf.steps.fast_decode import FastDecoder, build_model

# (width, layers, context): enough layers for a median, none of the calibration's widths
WIDTHS = ((2304, 12, 256), (3072, 12, 256), (3584, 10, 256), (4096, 8, 256), (4608, 8, 256),
          (4096, 32, 1024))


def measure(config: GPTConfig, context: int) -> dict[str, float]:
    """Seconds of each of the step's layer kernels (`calibrate_decode.step_layer_times`)."""
    decoder = FastDecoder(build_model(config, torch.device("cuda"), torch.bfloat16), 1, fused=True)
    decoder.warmup()
    times = step_layer_times(replay_kernels(decoder, context - 1), config.n_layer)
    del decoder
    torch.cuda.empty_cache()
    return times


def main() -> int:
    if not torch.cuda.is_available() or not decode_kernels.available():
        print("needs a CUDA GPU with Triton", file=sys.stderr)
        return 2
    cal = calibration_for("cuda", required=True)
    rows = []
    print(f"{'width':>5s} {'layers':>6s} {'ctx':>5s} {'kernel':10s} {'measured':>10s} {'curve':>10s} "
          f"{'m/curve':>7s} {'TB/s':>5s}  tile")
    for width, layers, context in WIDTHS:
        config = GPTConfig(n_layer=layers, n_head=width // 128, n_embd=width, vocab_size=512,
                           block_size=context, name=f"width-{width}")
        times = measure(config, context)
        for component in LAYER_WEIGHTS:
            seconds, (n, k) = times[component], config.weight_shape(component)
            nbytes = n * k * 2  # bf16
            curve = cal.gemv[fused_step_key(component, "bf16")].at(nbytes)
            tile = decode_kernels.fused_tile(n, k, component in NORM_FED_WEIGHTS)
            rows.append({"width": width, "layers": layers, "context": context, "kernel": component,
                         "measured_s": seconds, "curve_s": curve, "bytes": nbytes, "tile": tile})
            print(f"{width:5d} {layers:6d} {context:5d} {component:10s} {seconds * 1e6:8.2f} µs "
                  f"{curve * 1e6:8.2f} µs {seconds / curve:7.3f} {nbytes / seconds / 1e12:5.2f}  {tile}")
    ratios = [r["measured_s"] / r["curve_s"] for r in rows]
    print(f"measured/curve over {len(rows)} kernels: {min(ratios):.3f}–{max(ratios):.3f}, "
          f"median {statistics.median(ratios):.3f} ({cal.label()})")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "fused_step_widths.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
