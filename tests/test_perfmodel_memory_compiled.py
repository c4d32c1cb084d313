"""The compiled-step memory model against what AOTAutograd's min-cut partitioner saves for backward,
measured on the CPU: the model goes through AOTAutograd (as torch.compile's inductor backend
calls it, without Dynamo in front: the same joint graph, faster) with inductor's decompositions
and partition function (its joint-graph passes, then `min_cut_rematerialization_partition`), and
the forward graph's saved tensors are recorded."""

from __future__ import annotations

import functools
import operator

import pytest

torch = pytest.importorskip("torch")

from functorch.compile import make_boxed_func  # noqa: E402
from torch._functorch.aot_autograd import aot_module_simplified  # noqa: E402
from torch._inductor.decomposition import select_decomp_table  # noqa: E402

from gptperf.errors import UserError  # noqa: E402
from gptperf.model import GPT, GPTConfig, preset  # noqa: E402
from gptperf.perfmodel import Workload, adhoc_hardware, matmul_parameters, predict  # noqa: E402
from gptperf.perfmodel.memory import max_batch, memory_breakdown, saved_for_backward_compiled  # noqa: E402
from gptperf.plan import ExecutionPlan  # noqa: E402
from gptperf.steps.master_weights import MasterWeights  # noqa: E402

try:  # inductor's partition function: its joint-graph passes, then the min-cut partitioner
    from torch._inductor.compile_fx import partition_fn as INDUCTOR_PARTITION
except ImportError:  # older torch: the partitioner alone, as inductor calls it
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    INDUCTOR_PARTITION = functools.partial(min_cut_rematerialization_partition, compiler="inductor")

HW = adhoc_hardware(100, 1000)
COMPILED = ExecutionPlan("compiled")
CONFIGS = [  # small and fast to trace; every term is linear in n_layer
    GPTConfig(block_size=64, vocab_size=200, n_layer=2, n_head=4, n_embd=64),
    GPTConfig(block_size=32, vocab_size=96, n_layer=1, n_head=2, n_embd=32),
    GPTConfig(block_size=48, vocab_size=130, n_layer=1, n_head=3, n_embd=48),
]


def _storage_base(node: torch.fx.Node) -> torch.fx.Node:
    """The node whose output owns `node`'s storage (through views and the pieces of a split)."""
    while node.op == "call_function":
        target = node.target
        if getattr(target, "is_view", False):
            node = node.args[0]
        elif target is operator.getitem and getattr(node.args[0].target, "is_view", False):
            node = node.args[0].args[0]
        else:
            break
    return node


class SavedRecorder:
    """AOTAutograd partitioned as inductor does; keeps the bytes of the distinct storages the
    forward graph saves for backward (not weights or inputs: placeholders) and the tangents the
    backward is called with."""

    def __init__(self) -> None:
        self.saved_bytes = 0
        self.tangents: list[torch.Tensor | None] = []

    def compile(self, model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]):
        # AOTAutograd lifts parameters and buffers to the first inputs; Dynamo tells inductor's
        # partitioner they live for the whole program (free to save), as we do here
        self._static = (len(list(model.named_parameters(remove_duplicate=False)))
                        + len(list(model.named_buffers(remove_duplicate=False))))
        return aot_module_simplified(model, example_inputs, fw_compiler=self._forward,
                                     bw_compiler=self._backward, partition_fn=self._partition,
                                     decompositions=select_decomp_table())

    def _partition(self, joint, joint_inputs, **kwargs):
        kwargs["static_lifetime_input_indices"] = list(range(self._static))
        fw, bw = INDUCTOR_PARTITION(joint, joint_inputs, **kwargs)
        (outputs,) = [n.args[0] for n in fw.graph.nodes if n.op == "output"]
        bases = {}
        for node in outputs[kwargs["num_fwd_outputs"]:]:
            if not isinstance(node, torch.fx.Node):
                continue
            base = _storage_base(node)
            value = base.meta.get("val")
            if base.op != "placeholder" and isinstance(value, torch.Tensor):
                bases[base.name] = value.numel() * value.element_size()
        self.saved_bytes = sum(bases.values())
        self._n_tangents = sum(1 for n in bw.graph.nodes
                               if n.op == "placeholder" and n.name.startswith("tangents"))
        return fw, bw

    def _forward(self, gm, example_inputs):
        return make_boxed_func(gm)

    def _backward(self, gm, example_inputs):
        def run(args):
            self.tangents = list(args[-self._n_tangents:])
            return gm(*args)

        run._boxed_call = True
        return run


def _compiled_step(config: GPTConfig, B: int, T: int, dtype: str,
                   master: bool = False) -> tuple[SavedRecorder, torch.Tensor]:
    """Forward (with the loss) and backward of `config` through the recorder; the logits.
    `master`: the blocks' Linear weights in bf16 (the plan's master weights)."""
    torch.manual_seed(0)
    recorder = SavedRecorder()
    idx = torch.randint(0, config.vocab_size, (B, T))
    targets = torch.randint(0, config.vocab_size, (B, T))
    model = GPT(config).train()
    if master:
        MasterWeights(model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        logits, loss = recorder.compile(model, (idx, targets))(idx, targets)
    loss.backward()
    return recorder, logits


def _cuda_autocast_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA autocast runs softmax in fp32 (a bf16 input gives an fp32 output); CPU autocast runs
    it in bf16. The model is of CUDA; the CPU follows CUDA's policy for the test."""
    softmax = torch.nn.functional.softmax

    def fp32_softmax(x, dim=None, _stacklevel=3, dtype=None):
        if dtype is None and x.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu"):
            dtype = torch.float32
        return softmax(x, dim=dim, dtype=dtype)

    monkeypatch.setattr(torch.nn.functional, "softmax", fp32_softmax)


CASES = [(0, "sdpa", "bf16"), (1, "sdpa", "fp32"), (2, "math", "fp32"), (1, "math", "bf16")]
_recorded: dict[tuple[int, str, str], tuple[SavedRecorder, torch.Tensor]] = {}


B = 4  # at batch <= 2 the partitioner may keep the first ln_1's x̂ instead of the embeddings


def _recorded_step(which: int, attention: str, dtype: str) -> tuple[SavedRecorder, torch.Tensor]:
    """The case's compiled step, traced once per test session (batch B, T=block_size/2)."""
    key = (which, attention, dtype)
    if key not in _recorded:
        config = CONFIGS[which].replace(attention=attention)
        _recorded[key] = _compiled_step(config, B, config.block_size // 2, dtype)
    return _recorded[key]


@pytest.mark.parametrize("which, attention, dtype", CASES,
                         ids=[f"{CONFIGS[c].n_layer}L{CONFIGS[c].n_embd}-{a}-{d}" for c, a, d in CASES])
def test_compiled_saved_for_backward_matches_the_partitioner(
        which: int, attention: str, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Activations + weight copies + logits + positions of the compiled model = the storages the
    min-cut partitioner saves, to the byte (but a 4-byte scalar: the loss's count of targets)."""
    config = CONFIGS[which].replace(attention=attention)
    if attention == "math" and dtype == "bf16":
        _cuda_autocast_softmax(monkeypatch)
    T = config.block_size // 2
    w = Workload("train", B, T, dtype)
    m = memory_breakdown(config, w, COMPILED)
    logits = B * T * config.vocab_size * (2 if dtype == "bf16" else 4)
    predicted = m.activations + m.weight_copies + logits + T * 8
    measured = _recorded_step(which, attention, dtype)[0].saved_bytes
    assert measured == pytest.approx(predicted, abs=8)
    # and the eager model's activations differ from it: the compiled model is not the eager one
    eager = memory_breakdown(config, w)
    assert eager.activations != m.activations


@pytest.mark.parametrize("which, attention", [(0, "sdpa"), (2, "math")])
def test_compiled_saved_for_backward_under_master_weights(
        which: int, attention: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocks' Linear weights in bf16 under autocast (the plan's master weights): the same
    activations, and the head's weight the only autocast copy — to the byte."""
    config = CONFIGS[which].replace(attention=attention)
    if attention == "math":
        _cuda_autocast_softmax(monkeypatch)
    T = config.block_size // 2
    w = Workload("train", B, T, "bf16")
    m = memory_breakdown(config, w, COMPILED.replace(master_weights=True))
    assert m.weight_copies == config.vocab_size * config.n_embd * 2
    predicted = m.activations + m.weight_copies + B * T * config.vocab_size * 2 + T * 8
    measured = _compiled_step(config, B, T, "bf16", master=True)[0].saved_bytes
    assert measured == pytest.approx(predicted, abs=8)
    assert m.activations == memory_breakdown(config, w, COMPILED).activations


def test_backward_gets_a_materialised_zero_gradient_for_the_logits() -> None:
    """The loss does not use the logits output, yet autograd hands the compiled backward a dense
    zero tensor of the logits' size for it: the third N·V·a of the compiled peak."""
    recorder, logits = _recorded_step(*CASES[0])
    big = [t for t in recorder.tangents if isinstance(t, torch.Tensor) and t.numel() == logits.numel()]
    assert len(big) == 1
    (zero,) = big
    assert zero.dtype == logits.dtype and 0 not in zero.stride() and not zero.any()


def test_compiled_train_peak_holds_one_logit_buffer_or_two_with_the_fused_loss() -> None:
    """The compiled graph returns the loss alone: inductor writes the logits' gradient over the
    logits (one N·V·a at the peak); the fused loss writes it beside them (two, in its backward)."""
    config, w = preset("gpt2"), Workload("train", 12, 1024, "bf16")
    N, V = 12 * 1024, config.vocab_size
    per_layer, rest = saved_for_backward_compiled(config, w)
    eager = memory_breakdown(config, w)
    plain = memory_breakdown(config, w, COMPILED.replace(fused_optimizer=True))
    fused = memory_breakdown(config, w, COMPILED.replace(fused_optimizer=True, fused_loss=True))
    assert plain.logits == N * V * 2 and fused.logits == 2 * N * V * 2
    assert fused.peak_at == "loss backward" and fused.total - plain.total == N * V * 2
    for m in (plain, fused):
        assert m.compiled and m.weight_copies == matmul_parameters(config) * 2
        assert m.activations == config.n_layer * per_layer + rest
        assert m.total == sum(m.live.values())
        assert m.total < eager.total and m.to_dict()["execution"] == "compiled"


@pytest.mark.parametrize("kind", ["prefill", "decode", "decode_nocache"])
def test_inference_under_a_compiled_plan_is_predicted_as_eager(kind: str) -> None:
    config, w = preset("gpt2"), Workload(kind, 4, 256, "bf16")
    assert memory_breakdown(config, w, COMPILED).total == memory_breakdown(config, w).total


def test_compiled_forward_keeps_no_weight_copies_or_fp32_logits() -> None:
    config, w = preset("gpt2"), Workload("forward", 8, 1024, "bf16")
    m, eager = memory_breakdown(config, w, COMPILED), memory_breakdown(config, w)
    N, V, C = 8 * 1024, config.vocab_size, config.n_embd
    assert m.peak_at == "head" and m.logits == N * V * 2
    assert m.weight_copies == V * C * 2  # only the head weight's cast, while the head runs
    assert m.total < eager.total


def test_prediction_and_max_batch_follow_the_plan() -> None:
    config, w = preset("gpt2"), Workload("train", 12, 1024, "bf16")
    pred = predict(config, w, HW, COMPILED)
    assert pred.memory.total == memory_breakdown(config, w, COMPILED).total
    assert predict(config, w, HW).memory.total == memory_breakdown(config, w).total
    capacity = 20 * 2**30
    b = max_batch(config, w, capacity, plan=COMPILED)
    assert b > max_batch(config, w, capacity)
    assert memory_breakdown(config, Workload("train", b, 1024, "bf16"), COMPILED).total <= capacity
    assert memory_breakdown(config, Workload("train", b + 1, 1024, "bf16"), COMPILED).total > capacity
    assert pred.memory.max_batch(adhoc_hardware(100, 1000, memory_gib=20)) == b
    with pytest.raises(UserError, match="ExecutionPlan"):
        memory_breakdown(config, w, "compiled")  # type: ignore[arg-type]
