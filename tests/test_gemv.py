"""The batch-1 matrix-vector kernel: its tile rule, and parity with a float64 product on CUDA."""

from __future__ import annotations

import pytest
import torch

from gptperf.model import preset
from gptperf.steps import gemv
from gptperf.steps.fast_decode import (
    _MatmulBiasLinear,
    _OneRowLinear,
    build_model,
    split_linear_bias,
)


@pytest.mark.parametrize(("n", "k", "tile"), [
    (12288, 4096, (2, 1024, 4)), (4096, 16384, (2, 2048, 8)), (50304, 768, (8, 256, 4)),
    (50304, 4096, (2, 1024, 4)), (768, 3072, (2, 1024, 4)),
])
def test_tile_rule(n: int, k: int, tile: tuple[int, int, int]) -> None:
    assert gemv.gemv_config(n, k) == tile


def test_one_row_kernel_is_switched_on_and_off_in_place() -> None:
    model = build_model(preset("tiny"), "cpu", torch.float32)
    x = torch.randint(0, 256, (2, 7))
    before = model(x)[0]
    split_linear_bias(model, one_row_kernel=True)
    assert all(type(m) is _OneRowLinear for m in model.modules() if isinstance(m, torch.nn.Linear))
    split_linear_bias(model, one_row_kernel=False)
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {_MatmulBiasLinear, torch.nn.Linear}  # the tied LM head has no bias
    assert torch.allclose(model(x)[0], before, atol=1e-6)  # many rows: never the kernel


@pytest.mark.skipif(not gemv.available(), reason="needs CUDA and Triton")
@pytest.mark.parametrize(("n", "k"), [(2304, 768), (768, 3072), (50304, 768), (1000, 300), (4096, 16384)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_float64_on_cuda(n: int, k: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    w = torch.randn(n, k, device="cuda", dtype=dtype)
    x = torch.randn(1, 1, k, device="cuda", dtype=dtype)
    b = torch.randn(n, device="cuda", dtype=dtype)
    ref = w.double() @ x.double().reshape(k) + b.double()
    out = gemv.gemv(x, w, b)
    assert out.shape == (1, 1, n) and out.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert ((out.double().reshape(n) - ref).abs().max() / ref.abs().max()).item() < tol
    no_bias = gemv.gemv(x, w)
    assert torch.allclose(no_bias.double().reshape(n), w.double() @ x.double().reshape(k),
                          rtol=tol, atol=tol * ref.abs().max().item())
