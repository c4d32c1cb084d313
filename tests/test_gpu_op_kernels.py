"""benchmarks/gpu_op_kernels.py on a CPU profile: each operation's operators, named by their input
sizes and counted per step, beside the kernel calls the model charges."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from benchmark_scripts import load

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = ["--preset", "tiny", "--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--block-size", "32"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_a_bf16_layer_casts_each_linears_bias_both_ways_as_the_model_charges(
        device: str, tmp_path: Path, cli_json) -> None:
    """Under bf16 autocast each linear of a block casts its bias in the forward and the bias's
    gradient in the backward: one copy of the bias's size each (on a GPU, one kernel that copy
    launched), in the linear's own operation, once a step; the model charges one cast of that
    size in each (6 bytes an element)."""
    from gptperf.model.config import preset
    from gptperf.perfmodel.kernel_calls import step_ops
    from gptperf.perfmodel.workload import Workload
    from gptperf.plan import ExecutionPlan

    hardware = ["--hardware", "cpu"] if device == "cpu" else []
    cli_json("profile", *SMALL, "--workload", "train", "--batch", "2", "--seq", "16", "--dtype", "bf16",
             "--device", device, *hardware, "--out", str(tmp_path / "p"))
    measured = load("gpu_op_kernels").measured_kernels(tmp_path / "p" / "trace.json", layer=1)
    config = preset("tiny", n_layer=2, n_embd=32, n_head=2, block_size=32)
    charged = {(op, phase): calls for op, phase, layer, calls in
               step_ops(config, Workload("train", 2, 16, "bf16"), ExecutionPlan.eager(config.attention), device)
               if layer == 1}
    for op, width in (("attn.qkv", 96), ("attn.proj", 32), ("mlp.fc", 128), ("mlp.proj", 32)):
        for phase in ("fwd", "bwd"):
            # a CPU's work is the operator itself; a GPU's kernel is named "... <- aten::copy_ ..."
            copies = [calls for name, (_, calls) in measured[(op, phase)].items()
                      if f"aten::copy_ [[{width}], [{width}]" in name]
            assert copies == [pytest.approx(1.0)], (op, phase, sorted(measured[(op, phase)]))
            bias_casts = [c for c in charged[(op, phase)] if c.key.startswith("cast_") and c.point == (6.0 * width,)]
            assert len(bias_casts) == 1, (op, phase)
