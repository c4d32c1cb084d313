"""The performance model by hand: a one-layer GPT, every operation, every workload, memory, conventions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gptperf import names
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig, preset
from gptperf.perfmodel import (
    CONVENTIONS,
    WORKLOADS,
    Workload,
    adhoc_hardware,
    count_parameters,
    get_hardware,
    max_batch,
    memory_breakdown,
    predict,
)

# One layer, C=8, H=2 (D=4), V=16; B=2, T=4 -> N = 8 rows. fp32: a = w = 4 bytes.
ONE = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8)
HW = adhoc_hardware(1.0, 1.0)  # 1 TFLOP/s, 1 GB/s, no launch latency
FWD, BWD, OPT = names.FORWARD, names.BACKWARD, names.OPTIMIZER_PHASE


def row(pred, name, phase=FWD):
    o = pred.op(name, phase)
    return (o.count, o.flops, o.bytes_read, o.bytes_written)


def test_import_does_not_pull_torch() -> None:
    code = "import sys, gptperf.perfmodel, gptperf.commands.model, gptperf.commands.roofline; " \
           "assert 'torch' not in sys.modules, 'torch imported'; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parameters_one_layer_by_hand() -> None:
    # wte 16·8 + wpe 8·8 + block (12·64 + 13·8) + ln_f 2·8
    assert count_parameters(ONE) == 128 + 64 + 872 + 16 == 1080
    assert count_parameters(ONE, include_embeddings=False) == 888


def test_attention_is_causal_exactly_where_the_model_masks_it() -> None:
    """The shape's causal flag follows the model (`model.attention`): causal wherever the step
    has no past (a one-token forward and a decode at context 1 too), not for a new token after
    a cache's past."""
    from gptperf.perfmodel.workload import shape

    assert shape(ONE, Workload("forward", 2, 4, "fp32")).causal
    assert shape(ONE, Workload("forward", 2, 1, "fp32")).causal
    assert shape(ONE, Workload("decode", 2, 1, "fp32")).causal
    assert not shape(ONE, Workload("decode", 2, 5, "fp32")).causal
    assert shape(ONE, Workload("decode_nocache", 2, 5, "fp32")).causal


def test_train_sdpa_fp32_every_op_by_hand() -> None:
    p = predict(ONE, Workload("train", 2, 4, "fp32"), HW)
    # forward: (kernels, FLOPs, bytes read, bytes written)
    assert row(p, "embed") == (3, 64, 8 * 8 + 256 + 128, 256)
    assert row(p, "h.0.ln_1") == (1, 7 * 64, 256 + 64, 256)
    assert row(p, "h.0.attn.qkv") == (1, 2 * 8 * 8 * 24 + 8 * 24, 256 + 768 + 96, 768)
    # causal: 2·2·(4·5/2) = 40 scores; QK^T and PV 2·40·4 each; scale+softmax 6 per score
    assert row(p, "h.0.attn.sdpa") == (1, 640 + 240, (64 + 2 * 64) * 4, 256 + 2 * 2 * 4 * 4)
    assert p.op("h.0.attn.sdpa").full_flops == 4 * 64 * 4 + 6 * 64
    assert p.op("h.0.attn.sdpa").matmul_flops == 640
    assert row(p, "h.0.attn.proj") == (1, 1024 + 64, 256 + 256 + 32, 256)
    assert row(p, "h.0.ln_2") == (1, 448, 320, 256)
    assert row(p, "h.0.mlp.fc") == (1, 4096 + 256, 256 + 1024 + 128, 1024)
    assert row(p, "h.0.mlp.act") == (1, 9 * 256, 1024, 1024)
    assert row(p, "h.0.mlp.proj") == (1, 4096 + 64, 1024 + 1024 + 32, 256)
    assert row(p, "h.0.residual") == (2, 128, 1024, 512)
    assert row(p, "ln_f") == (1, 448, 320, 256)
    assert row(p, "lm_head") == (1, 2048, 256 + 512, 512)
    assert row(p, "loss") == (2, 5 * 128 + 8, 512 + 64, 512)
    # backward
    assert row(p, "loss", BWD) == (2, 4 * 128, 512 + 64, 512)
    assert row(p, "lm_head", BWD) == (2, 4096, 512 + 256 + 512, 256 + 512)
    assert row(p, "ln_f", BWD) == (1, 13 * 64, 2 * 256 + 32, 256 + 64)
    assert row(p, "h.0.residual", BWD) == (2, 128, 1024, 512)
    assert row(p, "h.0.mlp.proj", BWD) == (3, 8192 + 64, 256 + 1024 + 1024, 1024 + 1024 + 32)
    assert row(p, "h.0.mlp.act", BWD) == (1, 18 * 256, 2048, 1024)
    assert row(p, "h.0.mlp.fc", BWD) == (3, 8192 + 256, 1024 + 256 + 1024, 256 + 1024 + 128)
    assert row(p, "h.0.ln_2", BWD) == (1, 832, 544, 320)
    assert row(p, "h.0.attn.proj", BWD) == (3, 2048 + 64, 768, 544)
    # five matmuls (S recomputed), 5 per score, D = rowsum(dO·O): 2 per output element
    assert row(p, "h.0.attn.sdpa", BWD) == (1, 1600 + 200 + 128, (3 * 64 + 2 * 64) * 4 + 64, (64 + 128) * 4)
    assert row(p, "h.0.attn.qkv", BWD) == (3, 6144 + 192, 768 + 256 + 768, 256 + 768 + 96)
    assert row(p, "h.0.ln_1", BWD) == (1, 832, 544, 320)
    assert row(p, "embed", BWD) == (2, 128, 256 + 64 + 256, 256 + 128)
    assert row(p, "optimizer", OPT) == (1, 16 * 1080, 16 * 1080, 12 * 1080)
    assert len(p.ops) == 13 + 13 + 1
    assert p.flops == sum(o.flops for o in p.ops)
    assert p.tokens == 8


def test_train_math_attention_by_hand() -> None:
    p = predict(ONE.replace(attention="math"), Workload("train", 2, 4, "fp32"), HW)
    # 64 materialised scores, 40 of them causal; QK^T counted 2·40·4, scale 1 per materialised score
    assert row(p, "h.0.attn.scores") == (3, 320 + 64, 512, 256)
    assert row(p, "h.0.attn.softmax") == (1, 5 * 64, 256, 256)
    assert row(p, "h.0.attn.context") == (1, 320, 512, 256)
    assert row(p, "h.0.attn.proj")[0] == 2  # the head-merge copy
    assert row(p, "h.0.attn.context", BWD) == (2, 640, 768, 512)
    assert row(p, "h.0.attn.softmax", BWD) == (1, 4 * 64, 512, 256)
    assert row(p, "h.0.attn.scores", BWD) == (4, 640 + 64, 768, 512)
    with pytest.raises(KeyError):
        p.op("h.0.attn.sdpa")


def test_bf16_bytes_follow_autocast_storage() -> None:
    p = predict(ONE.replace(attention="math"), Workload("train", 2, 4, "bf16"), HW)
    # LayerNorm output (fp32) read once, weights read from the fp32 master, output in bf16
    assert row(p, "h.0.attn.qkv") == (1, 3264, 256 + 768 + 96, 384)
    assert row(p, "h.0.attn.softmax") == (1, 320, 128, 256)  # bf16 scores in, fp32 probabilities out
    assert row(p, "h.0.residual") == (2, 128, 2 * 64 * (4 + 2), 512)
    assert p.op("h.0.attn.qkv").dtype == "bf16" and p.op("h.0.ln_1").dtype == "fp32"


def test_decode_by_hand() -> None:
    p = predict(ONE, Workload("decode", 2, 4, "fp32"), HW)  # one new token, L = 4 positions
    assert row(p, "embed") == (3, 16, 16 + 64 + 32, 64)
    # + copy of the new K and V into the cache (read 2·N·C·a, write 2·N·C·a)
    assert row(p, "h.0.attn.qkv") == (3, 768 + 48, 64 + 768 + 96 + 128, 192 + 128)
    assert row(p, "h.0.attn.sdpa") == (1, 4 * 16 * 4 + 6 * 16, (16 + 128) * 4, 64)
    assert row(p, "lm_head") == (1, 2 * 2 * 8 * 16, 64 + 512, 128)
    assert {o.phase for o in p.ops} == {FWD}
    assert not any(o.component == names.LOSS for o in p.ops)
    assert p.tokens == 2


def test_prefill_and_decode_nocache_by_hand() -> None:
    pre = predict(ONE, Workload("prefill", 2, 4, "fp32"), HW)
    assert row(pre, "h.0.attn.qkv") == (3, 3264, 1120 + 512, 768 + 512)
    assert row(pre, "h.0.attn.sdpa") == (1, 880, 768, 256)
    assert row(pre, "lm_head") == (1, 512, 64 + 512, 128)  # last position only
    assert pre.tokens == 8
    nc = predict(ONE, Workload("decode_nocache", 2, 4, "fp32"), HW)
    assert row(nc, "h.0.attn.qkv") == (1, 3264, 1120, 768)  # the whole context again, no cache
    assert row(nc, "h.0.attn.sdpa") == (1, 880, 768, 256)
    assert row(nc, "lm_head") == (1, 512, 64 + 512, 128)
    assert nc.tokens == 2
    fw = predict(ONE, Workload("forward", 2, 4, "fp32"), HW)
    assert row(fw, "h.0.attn.sdpa") == (1, 880, 768, 256)  # no logsumexp kept without backward
    assert row(fw, "loss") == (2, 648, 576, 512)


def test_every_workload_and_roofline_time() -> None:
    for kind in WORKLOADS:
        for attention in ("math", "sdpa"):
            p = predict(ONE.replace(attention=attention), Workload(kind, 2, 4, "bf16"), HW)
            for o in p.ops:
                assert o.bytes == o.bytes_read + o.bytes_written > 0
                assert o.time_s == pytest.approx(max(o.flops / 1e12, o.bytes / 1e9))
                assert o.bound == ("compute" if o.arithmetic_intensity >= 1000 else "memory")
                assert o.attainable_flops == min(1e12, 1e9 * o.arithmetic_intensity)
                assert names.is_operation_name(o.name)
            assert p.time_s == pytest.approx(sum(o.time_s for o in p.ops))
            assert p.tokens_per_s == pytest.approx(p.tokens / p.time_s)


def test_launch_latency_counts_kernels() -> None:
    hw = get_hardware("h100-sxm")
    p = predict(ONE, Workload("forward", 2, 4, "fp32"), hw)
    o = p.op("h.0.residual")
    assert o.time_s == pytest.approx(max(o.flops / hw.peak("fp32"), o.bytes / hw.bandwidth) + 2 * 4e-6)


def test_memory_one_layer_by_hand() -> None:
    m = predict(ONE, Workload("train", 2, 4, "fp32"), HW).memory
    weights = 1080 * 4 + 8 * 8  # fp32 parameters + the bool causal mask buffer
    acts = 64 * (8 + 56) + 4 * 8 * 4 + 4 * 2 * 2 * 4 + (256 + 64 + 256)  # blocks + ln_f
    assert (m.weights, m.optimizer_state, m.gradients, m.activations) == (weights, 8640, 4320, acts)
    assert m.peak_at == "loss backward"
    ids = (2 * 8 + 4) * 8  # token ids, targets and positions, int64
    # at the loss's backward: the saved log-probs, their gradient and the logits' (the step
    # keeps the loss alone: the logits are gone); at the optimizer step no logits either
    assert m.total == weights + 8640 + ids + acts + 128 * 12
    assert m.phases["forward"] == weights + 8640 + ids + acts + 128 * (4 + 4)
    assert m.phases["optimizer step"] == weights + 8640 + ids + 4320


def test_memory_bf16_autocast_has_weight_copies() -> None:
    m = predict(ONE, Workload("forward", 2, 4, "bf16"), HW).memory
    assert m.weights == 1080 * 4 + 8 * 8  # fp32 master weights + the bool causal mask
    assert m.weight_copies == (12 * 64 + 16 * 8) * 2  # matmul weights and the tied head, bf16
    assert m.gradients == m.optimizer_state == 0


def test_memory_of_an_autocast_loss_follows_the_device() -> None:
    """torch's cross-entropy under autocast: on CUDA log_softmax stays bf16 and nll_loss's fp32
    copy of it is kept beside it (2a + w a logit after forward, the logits' own a included; a + 2w
    at backward's peak, with nll_loss's fp32 gradient, the logits gone); on a CPU the logits are
    copied to fp32 first (a + 2w, then 3w); fp32 is the same on both (a + w, then 3w). ONE: N·V
    = 8·16 logits."""
    logits = 8 * 16
    train, forward = Workload("train", 2, 4, "bf16"), Workload("forward", 2, 4, "bf16")
    on = {d: (memory_breakdown(ONE, train, device_type=d), memory_breakdown(ONE, forward, device_type=d))
          for d in ("cuda", "cpu")}
    for device, per_logit in (("cuda", 2 + 2 * 4), ("cpu", 3 * 4)):
        m, _ = on[device]
        assert m.peak_at == "loss backward" and m.logits == logits * per_logit
    assert on["cpu"][0].total - on["cuda"][0].total == logits * 2
    # a forward step with its loss: the logits, then the log-probabilities and their fp32 copy
    # (CUDA) or the fp32 copy of the logits and the log-probabilities (CPU)
    assert on["cuda"][1].phases["head"] - on["cpu"][1].phases["head"] == logits * (2 + 4 - 8)
    fp32 = Workload("train", 2, 4, "fp32")
    assert memory_breakdown(ONE, fp32, device_type="cpu").total == memory_breakdown(ONE, fp32).total
    # a prediction follows its machine's device; a bad device type is one line
    assert predict(ONE, train, get_hardware("cpu")).memory.total == on["cpu"][0].total
    assert predict(ONE, train, get_hardware("h100-sxm")).memory.total == on["cuda"][0].total
    with pytest.raises(UserError, match="device_type must be one of cuda, cpu, got 'tpu'"):
        memory_breakdown(ONE, train, device_type="tpu")


def test_the_memory_guard_predicts_for_its_devices_autocast(monkeypatch) -> None:
    """The guard charges a step as its device runs it: a CPU's bf16 loss holds more than a GPU's,
    so less fits the same free memory."""
    import gptperf.memguard as memguard

    train = Workload("train", 2, 4, "bf16")
    monkeypatch.setattr(memguard, "available_memory", lambda device: (1e6, "test"))
    checks = {d: memguard.check_memory(ONE, train, d) for d in ("cpu", "cuda:0")}
    for device, kind in (("cpu", "cpu"), ("cuda:0", "cuda")):
        assert checks[device].predicted_bytes == memory_breakdown(ONE, train, device_type=kind).total
        assert checks[device].largest_batch() == max_batch(ONE, train, 1e6, device_type=kind)
    assert checks["cpu"].predicted_bytes > checks["cuda:0"].predicted_bytes
    assert checks["cpu"].largest_batch() < checks["cuda:0"].largest_batch()


def test_memory_bf16_inference_keeps_bf16_weights_and_kv_cache() -> None:
    m = predict(ONE, Workload("decode", 2, 4, "bf16"), HW).memory
    assert m.weights == 1080 * 2 + 8 * 8  # the weights themselves in bf16, no autocast copies
    assert m.weight_copies == 0
    assert m.kv_cache == 2 * 1 * 2 * 4 * 8 * 2
    assert m.gradients == m.optimizer_state == 0


def test_max_batch_is_the_largest_that_fits() -> None:
    cfg, w = preset("gpt2"), Workload("train", 8, 1024, "bf16")
    hw = get_hardware("a100-40gb")
    b = max_batch(cfg, w, hw.memory_bytes)
    assert b > 0
    fits = predict(cfg, Workload("train", b, 1024, "bf16"), hw).memory
    over = predict(cfg, Workload("train", b + 1, 1024, "bf16"), hw).memory
    assert fits.fits(hw) and not over.fits(hw)
    assert predict(cfg, w, hw).memory.max_batch(hw) == b


def test_conventions_gpt2() -> None:
    cfg = preset("gpt2")
    p = predict(cfg, Workload("train", 1, 1024, "bf16"), get_hardware("h100-sxm"))
    L, H, Q, C, T = 12, 12, 64, 768, 1024
    n_all = count_parameters(cfg)
    assert p.model_flops_per_token("nanogpt") == 6 * (n_all - 1024 * C) + 12 * L * H * Q * T
    assert p.model_flops_per_token("llm.c") == 6 * n_all + 6 * L * C * T
    assert p.model_flops_per_token("megatron") == 6 * (12 * L * C * C + cfg.vocab_size * C) + 6 * L * C * T
    exact = p.model_flops_per_token("gptperf")
    assert exact * p.tokens == sum(o.flops for o in p.ops if o.phase != OPT)
    assert p.model_flops_per_token("gptperf-full") > exact
    assert set(p.to_dict()["flops_per_token"]) == set(CONVENTIONS)
    with pytest.raises(UserError, match="valid"):
        p.model_flops_per_token("palm")


def test_conventions_of_a_forward_step_count_and_say_k_2() -> None:
    cfg = preset("gpt2")
    p = predict(cfg, Workload("decode", 1, 1024, "bf16"), get_hardware("h100-sxm"))
    L, H, Q, C, T = 12, 12, 64, 768, 1024
    n = count_parameters(cfg) - 1024 * C
    table = p.to_dict()["flops_per_token"]
    assert table["nanogpt"]["flops_per_token"] == 2 * n + 4 * L * H * Q * T
    assert table["nanogpt"]["formula"].startswith("2N + 4·L·H·Q·T")
    assert all("forward only" in row["formula"] for k, row in table.items() if k != "gptperf-full")
    train = predict(cfg, Workload("train", 1, 1024, "bf16"), get_hardware("h100-sxm"))
    assert train.to_dict()["flops_per_token"]["nanogpt"]["formula"] == CONVENTIONS["nanogpt"]


def test_to_dict_schema() -> None:
    d = predict(ONE, Workload("train", 2, 4, "bf16"), get_hardware("h100-sxm")).to_dict()
    assert {"schema", "config", "workload", "hardware", "parameters", "totals", "flops_per_token",
            "ops", "components", "layers", "memory", "phases"} <= set(d)
    assert {"name", "component", "layer", "phase", "count", "flops", "bytes_read", "bytes_written",
            "bytes", "arithmetic_intensity", "dtype", "attainable_flops", "bound", "time_s"} <= set(d["ops"][0])
    assert d["memory"]["fits"] is True


@pytest.mark.parametrize("bad", [
    dict(kind="pretrain", batch=1, seq=4), dict(kind="train", batch=0, seq=4),
    dict(kind="train", batch=-2, seq=4), dict(kind="train", batch=1, seq=-1),
    dict(kind="train", batch="8", seq=4), dict(kind="train", batch=1.5, seq=4),
    dict(kind="train", batch=1, seq=4, dtype="fp8"),
])
def test_bad_workloads(bad) -> None:
    with pytest.raises(UserError):
        Workload(**bad)


def test_sequence_longer_than_block_size() -> None:
    with pytest.raises(UserError, match="block_size"):
        predict(ONE, Workload("train", 1, 9), HW)


def test_dtype_missing_from_hardware() -> None:
    hw = adhoc_hardware(10, 100, dtype="bf16")
    with pytest.raises(UserError, match="no peak for dtype 'fp32'"):
        predict(ONE, Workload("train", 1, 4, "bf16"), hw)
