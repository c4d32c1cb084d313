"""A device's calibration: measured time curves of the kernels a GPT step runs, with their fit
residuals, the host cost of its Python, and the kernels inductor makes of it — what the
calibrated prediction (`perfmodel.expected`) charges. Pure Python; `gptperf calibrate` measures
it (`gptperf.measure.calibrate`) and this module keeps and checks it; its curves and grids, and
how they are read between and beyond their points, are `perfmodel.curves`'.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.atomic import write_text
from gptperf.dtypes import dtype_bytes
from gptperf.errors import UserError
from gptperf.model.config import preset
from gptperf.perfmodel.curves import Curve, Grid, held_log_linear, is_positive_number
from gptperf.perfmodel.hardware import cache_dir, slug

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gptperf.model.config import GPTConfig

SCHEMA = "gptperf.calibration/1"
MAX_AGE_DAYS = 30  # clocks, drivers and libraries change: an older calibration is refused
# The tiny GPT whose steps measure the host cost (Python, dispatch, launches): its kernels are
# so small that the host is all there is to time; n_layer 1 and 4 give cost per block and fixed.
# Its compiled steps run the compiled recordings' tokens instead (`calibrate_host.host_tokens`).
HOST_MODEL: dict[str, Any] = {"n_embd": 64, "n_head": 2, "vocab_size": 256, "block_size": 64,
                              "batch": 1, "seq": 8, "layers": (1, 4)}
# A compiled forward's host time a block grows past a few blocks (the compiled host model at 16
# blocks 1.27x its 1-4 line's charge and at 22 1.95x on an H200, at 16 1.02-1.06x on H100s; drawn
# compiled bf16 forwards of 14-21 blocks bound by the host read 1.16-1.27x their prediction): its
# forward-only job is timed at this many blocks too, and its line goes on from the last of
# `HOST_MODEL["layers"]` on the slope to this point.
HOST_DEEP_LAYERS = 16
HOST_KNEE = ("beyond_layers", "beyond_per_layer_s")  # a host line's knee: both or neither

# The `chain` of `gemv_key` for the gemv curves measured as a dependent chain of the fused decode
# step's kernels: its LayerNorm + gemv (qkv, fc), its gemv + bias + residual (the two
# projections, which stream their weights without a LayerNorm's statistics) and its LM head
# (LayerNorm, gemv and argmax over a vocabulary-wide weight, whose programs each end in a
# reduction and atomics).
GEMV_CHAIN = "chain:"
GEMV_RESIDUAL_CHAIN = "chain_residual:"
GEMV_ARGMAX_CHAIN = "chain_argmax:"
# The prefix of `fused_step_key`: the fused decode step's layer kernels timed inside a captured
# step (a Curve over the component's weight bytes): what each takes after the step's kernel
# before it.
FUSED_STEP = "in_step:"
# The attention pass (`attention_key`) of the fused decode step's own kernel.
FUSED_ATTENTION_PASS = "fused_decode"
# The attention pass of a CPU's one-query grid timed again from the cache, read for a decode step
# as far as `Calibration.warm_share` says, as the matmuls' `WARM` grid is.
ONE_QUERY_WARM = "one_query_warm"
# A CPU's matmul grid of few rows timed again from the cache (`matmul_warm_key`), read for a
# step as far as `Calibration.warm_share` says its tensors stay in the cache (`perfmodel.expected`)
WARM = ":warm"
# The cache reach's slowest (plain-grid) point over its fastest below which no saving is read
# (its shares would be noise; the VM's read 2.8-3.8x)
CACHE_SAVING_MIN = 1.25
# A linear layer's three matmuls, y = x·Wᵀ, dX = dY·W and dW = dYᵀ·X: the rates
# `Calibration.matmul_unaligned` keeps for a layer whose rows are not 16-byte aligned.
UNALIGNED_ORIENTATIONS = ("fwd", "dgrad", "wgrad")


def unaligned_rates_text(rates: dict[str, float]) -> str:
    """An entry of `Calibration.matmul_unaligned` as its notes and tables say it: "fwd 93,
    dgrad 144, wgrad 157 TFLOP/s"."""
    return ", ".join(f"{o} {rates[o] / 1e12:.0f}" for o in UNALIGNED_ORIENTATIONS) + " TFLOP/s"


# A CPU's AdamW (torch's per-tensor loop): seconds a tensor over its parameters, summed over the
# step's tensors (`perfmodel.expected.call_time`)
ADAMW_LOOP = "adamw_loop"
ADAMW_LOOP_COLD = "adamw_loop_cold"  # the same with each call's tensors in memory


# The tables' keys. Each family of `Calibration` keys its curves in its own format; build and
# split them only through these functions (the stored format is that of calibrations on disk).

def matmul_warm_key(dtype: str) -> str:
    """`matmul`'s key of a CPU's grid of few rows timed from the cache: "<dtype>:warm" (`WARM`)."""
    return dtype + WARM


def attention_key(dtype: str, pass_: str) -> str:
    """`attention`'s key of one pass in one dtype: "<dtype>:<pass>" (e.g. "bf16:causal_fwd")."""
    return f"{dtype}:{pass_}"


def split_attention_key(key: str) -> tuple[str, str]:
    """(dtype, pass) of an `attention_key`."""
    dtype, _, pass_ = key.rpartition(":")
    return dtype, pass_


def vector_key(op: str, dtype: str) -> str:
    """`vector`'s key of one op in one dtype: "<op>:<dtype>" (e.g. "add:fp32")."""
    return f"{op}:{dtype}"


def split_vector_key(key: str) -> tuple[str, str]:
    """(op, dtype) of a `vector_key`."""
    op, _, dtype = key.partition(":")
    return op, dtype


def gemv_key(dtype: str, chain: str = "") -> str:
    """`gemv`'s key of the one-row kernel in `dtype` ("<dtype>"), or with `chain` (GEMV_CHAIN,
    GEMV_RESIDUAL_CHAIN, GEMV_ARGMAX_CHAIN, each ending in ":") of that chained kernel
    ("<chain><dtype>", e.g. "chain:bf16")."""
    return chain + dtype


def split_gemv_key(key: str) -> tuple[str, str]:
    """(chain, dtype) of a `gemv_key`: chain "" for the one-row kernel."""
    chain = next((c for c in (GEMV_CHAIN, GEMV_RESIDUAL_CHAIN, GEMV_ARGMAX_CHAIN) if key.startswith(c)), "")
    return chain, key.removeprefix(chain)


def curve_key(family: str, key: str) -> str:
    """A curve's name across the tables ("<family>:<key>", e.g. "vector:add:fp32"), as
    `Calibration.residuals` keys them."""
    return f"{family}:{key}"


def fused_step_key(component: str, dtype: str) -> str:
    """`gemv`'s key of a fused decode step's layer kernel timed inside the step:
    "in_step:<component>:<dtype>" (`FUSED_STEP`)."""
    return f"{FUSED_STEP}{component}:{dtype}"


def split_fused_step_key(key: str) -> tuple[str, str]:
    """(component, dtype) of a `fused_step_key`."""
    component, _, dtype = key.removeprefix(FUSED_STEP).rpartition(":")
    return component, dtype


def host_key(mode: str, part: str, dtype: str) -> str:
    """`host`'s key of one part of a step: "<mode>:<part>:<dtype>" (e.g. "eager:fwd:bf16"); the
    same format keys a host job's unit by its job (train | inference) in `probes["host_jobs"]`."""
    return f"{mode}:{part}:{dtype}"


def host_line_s(line: Mapping[str, float], n_layer: int) -> float:
    """Host seconds of a step of `n_layer` blocks on a calibrated host line (`Calibration.host`):
    `fixed_s` plus `per_layer_s` a block, and past `beyond_layers` blocks, where the line has
    them (`HOST_DEEP_LAYERS`), `beyond_per_layer_s` a further block."""
    knee = line.get("beyond_layers")
    if knee is None or n_layer <= knee:
        return max(line["fixed_s"] + line["per_layer_s"] * n_layer, 0.0)
    return max(line["fixed_s"] + line["per_layer_s"] * knee
               + line["beyond_per_layer_s"] * (n_layer - knee), 0.0)


def _host_line(line: dict[str, Any]) -> dict[str, float]:
    """A host line read back (`Calibration.host`): every number of it, the knee's two together
    or neither (KeyError: a broken line)."""
    out = {k: float(v) for k, v in line.items()}
    knee = set(HOST_KNEE)
    needed = {"fixed_s", "per_layer_s"} | (knee if knee & out.keys() else set())
    missing = sorted(needed - out.keys())
    if missing:
        raise KeyError(f"host line {line!r} lacks {', '.join(missing)}")
    return out


def split_host_key(key: str) -> tuple[str, str, str]:
    """(mode, part, dtype) of a `host_key`."""
    mode, part, dtype = key.split(":")
    return mode, part, dtype


def compiled_key(kind: str, dtype: str) -> str:
    """`compiled`'s key of a recorded compiled step: "<kind>:<dtype>" (e.g. "train:bf16")."""
    return f"{kind}:{dtype}"


def split_compiled_key(key: str) -> tuple[str, str]:
    """(kind, dtype) of a `compiled_key`."""
    kind, _, dtype = key.partition(":")
    return kind, dtype


def compiled_op_key(component: str, phase: str) -> str:
    """The key of one operation's kernels in a recorded compiled step's "ops":
    "<component>:<phase>" (e.g. "mlp.fc:fwd")."""
    return f"{component}:{phase}"


def split_compiled_op_key(key: str) -> tuple[str, str]:
    """(component, phase) of a `compiled_op_key`."""
    component, _, phase = key.partition(":")
    return component, phase


def toward_cache(from_memory: float, from_cache: float, warm: float) -> float:
    """A CPU kernel's seconds `warm` (0 to 1, `Calibration.warm_share`) of the way from its timing
    with its tensors in memory to its timing from the cache: the one rule of both CPU timings."""
    return from_memory + warm * (from_cache - from_memory)


def _over(grid: Grid, base: Grid) -> Grid:
    """`grid`'s times over `base`'s at `grid`'s points, held constant beyond its edges."""
    ratios = tuple(t / base.at(*p) for p, t in zip(product(*grid.points), grid.seconds, strict=True))
    return Grid(grid.axes, grid.points, ratios, (0.0,) * len(grid.points), what=f"{grid.what} / causal")


def _check_ratio_table(table: str, entries: Mapping[str, Any], axis: str, what: str, *,
                       increasing: bool) -> None:
    """Each entry of `table` is {axis: positive numbers (`increasing`: strictly), "ratios": as
    many numbers between 0 and 10}; else a one-line UserError naming the entry (`what`: the
    axis's values in words)."""
    for key, entry in entries.items():
        xs = entry.get(axis) if isinstance(entry, dict) else None
        ratios = entry.get("ratios") if isinstance(entry, dict) else None
        if not (isinstance(xs, list) and isinstance(ratios, list) and xs and len(xs) == len(ratios)
                and all(is_positive_number(x) for x in xs) and (not increasing or xs == sorted(set(xs)))
                and all(is_positive_number(r) and r < 10 for r in ratios)):
            raise UserError(f"{table}[{key!r}] needs as many {what} as ratios (each between 0 and 10), "
                            f"got {entry!r}")


def cache_shares(curve: Curve) -> tuple[float, ...] | None:
    """The cache's saving at each point of a `cache_reach` curve, 0 to 1: (t_cold − t) /
    (t_cold − t_warm), with t_cold the last point's time (the plain grid's pool) and t_warm the
    fastest point's; each point's share is at least any larger point's (more bytes never find
    more in the cache, so a point read slower than a larger one was noise). None where the last
    point is not CACHE_SAVING_MIN× the fastest: no saving measured, whose shares would be noise."""
    warm, cold = min(curve.seconds), curve.seconds[-1]
    if not cold >= CACHE_SAVING_MIN * warm:
        return None
    shares, highest = [], 0.0
    for t in reversed(curve.seconds):
        highest = max(highest, min(1.0, max(0.0, (cold - t) / (cold - warm))))
        shares.append(highest)
    return tuple(reversed(shares))


def host_model_config(n_layer: int, attention: str = "sdpa", block_size: int | None = None) -> GPTConfig:
    """The GPTConfig of `HOST_MODEL` with `n_layer` blocks (measured by `gptperf calibrate`,
    costed by `perfmodel.expected` to take its kernels out of its host time), its block
    `block_size` long where given (the compiled host model's)."""
    sizes = {k: HOST_MODEL[k] for k in ("n_embd", "n_head", "vocab_size", "block_size")}
    if block_size is not None:
        sizes["block_size"] = block_size
    return preset("tiny", n_layer=n_layer, attention=attention, **sizes)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _optimizer_grid(table: Grid | Curve) -> Grid:
    """An optimizer table as a grid over (parameter tensors, parameters): a Curve over parameters
    alone becomes one tensor count whose time does not grow with the tensors (growth 0)."""
    if isinstance(table, Grid):
        return table
    return Grid(("tensors", "parameters"), ((12.0,), table.x), table.seconds, (0.0, 1.0),
                what=f"{table.what} (over parameters alone: an older calibration)")


@dataclass(frozen=True)
class Calibration:
    """Everything measured on one device for the calibrated prediction (docs/perfmodel.md,
    "Calibrated prediction"). Each table is keyed by its family's key builder (`attention_key`,
    `vector_key`, `gemv_key`, `fused_step_key`, `host_key`, `compiled_key`, above); the comment
    on each field says what it holds. A field an older calibration lacks reads as its default,
    which the prediction takes as "not measured"."""

    device_name: str
    device_type: str
    torch_version: str
    created_at: str  # ISO 8601, UTC
    seconds: float  # how long the calibration took
    # dtype -> Grid over (M, N, K) of y = x·Wᵀ (x: M×K, W: N×K). On a CPU also
    # `matmul_warm_key(dtype)`: its rows up to 16 with the operands cycled through 8 MiB, where
    # they stay in the last-level cache (cells whose operands do not fit there: the grid's).
    matmul: dict[str, Grid] = field(default_factory=dict)
    # `attention_key(dtype, pass)` -> Grid; pass "causal_fwd" and "causal_fwd_bwd" over (BH, T, D)
    # (query = key length T, causal), "masked_fwd" over (BH, T, D) (the same with the static KV
    # cache's explicit mask; CUDA only), "one_query" over (BH, L, D) (one query against L keys),
    # FUSED_ATTENTION_PASS over (H, L, D) (the fused batch-1 decode step's own attention kernel,
    # chained; CUDA with Triton, bf16 and fp16).
    attention: dict[str, Grid] = field(default_factory=dict)
    # `vector_key(op, dtype)` -> Curve over the bytes the op reads and writes (docs list each op).
    vector: dict[str, Curve] = field(default_factory=dict)
    # "adamw_fused" | "adamw_foreach" | "adamw_master" (the one-pass master update) -> Grid over
    # (parameter tensors, parameters); a Curve over parameters (a calibration from before the
    # tensor count was measured) is read as a grid with one tensor count that does not change the
    # time. ADAMW_LOOP (a CPU): Grid over (parameters,) of one tensor's seconds in torch's
    # per-tensor loop, in place of the grid there, its tensors stepped call after call;
    # ADAMW_LOOP_COLD: the same with each call stepping another copy (from memory), read by the
    # step's cache share.
    optimizer: dict[str, Grid] = field(default_factory=dict)
    # Curves over weight bytes, CUDA only: `gemv_key(dtype)` of the one-row Triton kernel;
    # `gemv_key(dtype, GEMV_CHAIN)` of the fused decode step's LayerNorm + gemv kernel, each call
    # waiting for the one before; `gemv_key(dtype, GEMV_RESIDUAL_CHAIN)` of its gemv + bias +
    # residual kernel, chained the same way; `gemv_key(dtype, GEMV_ARGMAX_CHAIN)` of its LM head
    # kernel (LayerNorm, gemv, argmax) over vocabulary-wide weights; `fused_step_key(component,
    # dtype)` of the fused step's qkv, attn.proj, mlp.fc and mlp.proj kernels, each timed inside a
    # captured step of synthetic models.
    gemv: dict[str, Curve] = field(default_factory=dict)
    # `host_key(mode, part, dtype)` -> {"per_layer_s", "fixed_s"} (and where a deeper host model
    # was timed, "beyond_layers", "beyond_per_layer_s": `host_line_s`): host seconds of the step's
    # Python and dispatch, per block and per step. Mode eager | compiled; part fwd, bwd, opt of a
    # train step, nograd for a forward without grad, infer for decode_nocache (and a compiled
    # prefill), prefill for an eager prefill into the KV cache (infer where a calibration has
    # none), decode for a KV-cache decode step.
    host: dict[str, dict[str, float]] = field(default_factory=dict)
    # `compiled_key(kind, dtype)` -> a recorded compiled step: its config and workload, and per
    # `compiled_op_key(component, phase)` (in "ops") the kernels inductor ran and their measured
    # seconds by class.
    compiled: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every size the calibration measured, by family (for the disjointness test).
    shapes: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # "start" | "end" -> a speed probe taken as the calibration began and ended
    # (`gptperf.measure.probe.SpeedProbe.to_dict`): what `validate` compares the machine with.
    # "host" -> {"step_s": the host model's decode step time, "train_step_s": its train step time
    # (`gptperf.measure.probe.host_step_s`)}, each at the host speed the host costs of its kind
    # of step (inference, train) are scaled to (each job's sampled among its rounds): the host
    # costs' units, against which a command that measures a step scales them (a calibration
    # without "train_step_s" has its train costs in the decode unit).
    # "host_jobs" -> {`host_key(mode, job, dtype)`, job train | inference: that job's own unit}
    # (diagnostic). "host_reference" -> {"step_s": the decode step probed outside the host jobs,
    # the faster of two readings}: what their unit is checked against
    # (`calibrate_host.measure_host_settled`).
    probes: dict[str, dict[str, float]] = field(default_factory=dict)
    # Seconds a GPU kernel launched from a stream takes beyond the same kernel in a CUDA graph
    # (`gptperf.measure.launch_gap`), charged per kernel of steps that are not graphs; 0 on a CPU.
    launch_gap_s: float = 0.0
    # dtype -> {"ratio", "low", "high", "probes"}: a linear layer's time with a bias over its time
    # without (the median over the off-grid probes, each timed both ways), what an eager layer
    # with a bias is charged beyond the grid (`bias_ratio`); 1 where absent.
    matmul_bias: dict[str, dict[str, float]] = field(default_factory=dict)
    # dtype -> {"ratio", "median", "low", "high", "probes"}: the off-grid probes' measured times
    # over the grid's reading of them (ratio: their mean), what a matmul off the grid's points is
    # charged beyond the grid (`offgrid_ratio`); 1 where absent. cuBLAS picks a kernel per shape,
    # and at the GPT widths between the grid's powers of two its picks can run slower than the
    # grid's (BENCHMARKS.md has the measured ratios). An older calibration's "matmul_waves" (a
    # wave quantization the grid was read with) is no longer read: docs/perfmodel.md says why.
    matmul_offgrid: dict[str, dict[str, float]] = field(default_factory=dict)
    # dtype -> [[M, N, K, ratio], ...]: each off-grid probe's measured time over the grid's
    # reading of it (on a CPU once per pass kept), whose mean `matmul_offgrid` keeps: a reading of
    # them by shape can be judged offline (not read by the prediction).
    matmul_probes: dict[str, list[list[float]]] = field(default_factory=dict)
    # dtype -> {"rows": [1, 2, ...], "ratios": [...]}: (a CPU) each row's time of few-row matmuls
    # timed from the cache over its reading between the grid's rows (`gptperf.measure.matmul_rows`:
    # the library's blocks of rows), what a step's matmul of that many rows is charged beyond the
    # warm grid's reading (`row_ratio`); 1 where absent.
    matmul_rows: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # grid key (a dtype, or its `WARM` twin) -> {"bytes": [...], "ratios": [...]}: (a CPU) few-row
    # matmuls on that grid's operands timed between a step's small ops over their time back to
    # back, by their weight's bytes (`gptperf.measure.matmul_in_step`), what a step's few-row
    # matmul read on that grid is charged beyond its reading (`in_step_ratio`); 1 where absent.
    matmul_in_step: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # dtype -> {"fwd", "dgrad", "wgrad": FLOP/s, "m", "n", "k": the probe's rows, output and
    # input widths}: a linear layer whose output width is not 16-byte aligned (gpt2's 50257
    # tokens in bf16), each of its three matmuls timed (`gptperf.measure.calibrate_kernels.
    # measure_unaligned`); an eager step's unaligned layer (`kernel_calls.unaligned_layer`) is
    # charged at least its FLOPs at these rates (`unaligned_floor_s`). Empty on a CPU.
    matmul_unaligned: dict[str, dict[str, float]] = field(default_factory=dict)
    # {"share", "host_s", "end_s", "device_s", ...}: the share of the fused AdamW phase's host time
    # that runs after its kernels have started (`gptperf.measure.optimizer_overlap`); empty on a
    # CPU (the kernels are then charged after all of the phase's host time).
    optimizer_overlap: dict[str, Any] = field(default_factory=dict)
    # {"rates", "slowdowns", ...}: a bf16 matmul kept up for about a second at a few duty cycles
    # (`gptperf.measure.sustained`): the FLOP rate of each load in a burst and the matmul's time
    # held over its time in a burst, what a power or thermal cap costs compute kernels kept busy
    # (`sustained_slowdown`); empty on a CPU.
    sustained: dict[str, Any] = field(default_factory=dict)
    # The CPU's last-level cache (0: unknown, or a GPU): in a calibration without `cache_reach`,
    # or where it measured no saving, a step whose tensors fit in it reads its matmuls of few rows
    # on the warm grid.
    cache_bytes: float = 0.0
    # (A CPU) Curve over bytes of weights: seconds of one decode-like layer of few-row matmuls
    # with that many bytes of layers' weights cycled through (`gptperf.measure.cache_reach`): how
    # much of a step's few-row matmul time, and of its AdamW loop's, the cache saves at its size
    # (`warm_share`; where it measured no saving, the rule of `cache_bytes`). The share of a
    # last-level cache a process gets can be far below its size (BENCHMARKS.md). None on a GPU.
    cache_reach: Curve | None = None
    _masked_ratio: dict[str, Grid] = field(init=False, repr=False, compare=False,
                                           default_factory=dict)
    _reach_shares: tuple[float, ...] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        grids = {k: _optimizer_grid(v) for k, v in self.optimizer.items()}
        object.__setattr__(self, "optimizer", grids)
        for table in ("matmul_bias", "matmul_offgrid"):
            for key, entry in getattr(self, table).items():
                ratio = entry.get("ratio") if isinstance(entry, dict) else None
                if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 10:
                    raise UserError(f"{table}[{key!r}] needs a ratio between 0 and 10, got {entry!r}")
        for key, entry in self.matmul_unaligned.items():
            rates = [entry.get(o) if isinstance(entry, dict) else None for o in UNALIGNED_ORIENTATIONS]
            if not all(is_positive_number(r) for r in rates):
                raise UserError(f"matmul_unaligned[{key!r}] needs positive FLOP rates "
                                f"{', '.join(UNALIGNED_ORIENTATIONS)}, got {entry!r}")
        _check_ratio_table("matmul_rows", self.matmul_rows, "rows", "rows", increasing=False)
        _check_ratio_table("matmul_in_step", self.matmul_in_step, "bytes", "increasing sizes",
                           increasing=True)
        for key, rows in self.matmul_probes.items():
            if not all(isinstance(row, list) and len(row) == 4 and all(map(is_positive_number, row))
                       for row in rows):
                raise UserError(f"matmul_probes[{key!r}] needs rows of four positive numbers "
                                f"(M, N, K, ratio), got {rows!r}")
        if self.sustained:
            rates, slows = self.sustained.get("rates"), self.sustained.get("slowdowns")
            if not (isinstance(rates, list) and isinstance(slows, list) and len(rates) == len(slows)
                    and all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0
                            for x in rates + slows)):
                raise UserError("sustained needs as many positive rates as slowdowns, got "
                                f"{self.sustained!r}")
        share = self.optimizer_overlap.get("share", 0.0)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise UserError(f"optimizer_overlap needs a share between 0 and 1, got {share!r}")
        masked_ratio: dict[str, Grid] = {}
        for key, grid in self.attention.items():
            dtype, pass_ = split_attention_key(key)
            causal = self.attention.get(attention_key(dtype, "causal_fwd"))
            if pass_ == "masked_fwd" and causal is not None:
                masked_ratio[dtype] = _over(grid, causal)
        object.__setattr__(self, "_masked_ratio", masked_ratio)
        if self.cache_reach is not None:
            object.__setattr__(self, "_reach_shares", cache_shares(self.cache_reach))

    def masked_ratio(self, dtype: str, bh: float, t: float, d: float) -> float:
        """The static-cache prefill's masked attention over the causal kernel at (BH, T, D): read
        on the grid of their ratios at the masked grid's points (a smooth function where each
        time is steep: on the H200 the masked grid itself, read off its points, missed shapes
        by up to 54%, the ratio by up to 26%); 2 (every score computed) without a masked grid."""
        grid = self._masked_ratio.get(dtype)
        return 2.0 if grid is None else grid.at(bh, t, d)

    def matmul_seconds(self, key: str, m: float, n: float, k: float, warm: float = 0.0) -> float:
        """Seconds of y = x·Wᵀ (M×K by N×K) on the grid `key`, × `offgrid_ratio` off its points;
        `warm` (0 to 1: the share of the cache's saving a CPU step of its size gets,
        `warm_share`): that share of the way from the grid to the grid timed from the cache
        (`WARM`), where that one has the rows, each row as `row_ratio` says; a matmul of those
        rows reads each grid inside a step as `in_step_ratio` says."""
        seconds = self.matmul[key].at(m, n, k)
        from_cache = self.warm_grid(key, m)
        if from_cache is not None:  # a few-row matmul (a CPU's): each grid's reading inside a step
            seconds *= self.in_step_ratio(key, n, k)
            if warm > 0:
                warm_key = matmul_warm_key(key)
                in_step = from_cache.at(m, n, k) * self.row_ratio(key, m) * self.in_step_ratio(warm_key, n, k)
                seconds = toward_cache(seconds, in_step, warm)
        return seconds * self.offgrid_ratio(key, m, n, k)

    def in_step_ratio(self, key: str, n: float, k: float) -> float:
        """What a few-row matmul of an N×K weight takes between a step's small ops over its time
        back to back, as grid `key` (a dtype's plain grid, or its `WARM` twin) was timed
        (`matmul_in_step`, a CPU's, read by the weight's bytes, linearly in log bytes between its
        sizes, held beyond them); 1 where not measured."""
        entry = self.matmul_in_step.get(key)
        if not entry:
            return 1.0
        return held_log_linear(tuple(entry["bytes"]), entry["ratios"], n * k * dtype_bytes(key.removesuffix(WARM)))

    def row_ratio(self, key: str, m: float) -> float:
        """What a matmul of `m` rows timed from the cache takes over the warm grid's reading
        between its rows (`matmul_rows`, a CPU's blocks of rows); 1 for rows not measured."""
        entry = self.matmul_rows.get(key)
        if not entry or m not in entry["rows"]:
            return 1.0
        return float(entry["ratios"][entry["rows"].index(m)])

    def attention_seconds(self, key: str, bh: float, length: float, d: float, warm: float = 0.0) -> float:
        """Seconds of one call on the attention grid `key`; `warm` (0 to 1, as `matmul_seconds`):
        a one-query call that share of the way to the grid timed from the cache (`ONE_QUERY_WARM`,
        a CPU's), where there is one."""
        seconds = self.attention[key].at(bh, length, d)
        from_cache = self.attention_warm_grid(key) if warm > 0 else None
        if from_cache is not None:
            seconds = toward_cache(seconds, from_cache.at(bh, length, d), warm)
        return seconds

    def attention_warm_grid(self, key: str) -> Grid | None:
        """Attention grid `key`'s twin timed from the cache (`ONE_QUERY_WARM`: a CPU's one-query
        pass) where it has one, else None."""
        dtype, pass_ = split_attention_key(key)
        return self.attention.get(attention_key(dtype, ONE_QUERY_WARM)) if pass_ == "one_query" else None

    @property
    def adamw_loop_both_ways(self) -> bool:
        """Whether torch's per-tensor AdamW loop (a CPU's) was timed from the cache and from memory."""
        return ADAMW_LOOP in self.optimizer and ADAMW_LOOP_COLD in self.optimizer

    def adamw_loop_seconds(self, size: float, warm: float = 0.0) -> float:
        """Seconds of one tensor of `size` parameters in torch's per-tensor AdamW loop
        (`ADAMW_LOOP`, which must be measured): `warm` of the way (`toward_cache`) from the loop
        with its tensors in memory (`ADAMW_LOOP_COLD`, where measured) to the loop on one set."""
        one_set = self.optimizer[ADAMW_LOOP].at(size)
        cold = self.optimizer.get(ADAMW_LOOP_COLD)
        if cold is None:
            return one_set
        # a cold reading under the warm one is the machine's noise: memory is never faster
        return toward_cache(max(cold.at(size), one_set), one_set, warm)

    def warm_grid(self, key: str, m: float) -> Grid | None:
        """Grid `key`'s twin timed from the cache (`WARM`, a CPU's) where it has `m` rows, else None."""
        grid = self.matmul.get(matmul_warm_key(key))
        return grid if grid is not None and m <= grid.points[0][-1] else None

    @property
    def reach_shares(self) -> tuple[float, ...] | None:
        """`cache_shares` of `cache_reach`; None without it or where it measured no saving (the
        rule of `cache_bytes` then)."""
        return self._reach_shares

    def warm_share(self, step_bytes: float) -> float:
        """How much of the cache's saving a CPU step whose tensors take `step_bytes` gets, 0 to 1:
        `cache_reach`'s shares (`cache_shares`) read linearly in log bytes between its points,
        the first point's up to it, 0 from the last. Without the curve, or where it measured no
        saving: 1 if the tensors fit in `cache_bytes`, else 0."""
        curve, shares = self.cache_reach, self._reach_shares
        if curve is None or shares is None:
            return 1.0 if 0 < step_bytes <= self.cache_bytes else 0.0
        if step_bytes <= curve.x[0]:
            return shares[0]
        if step_bytes >= curve.x[-1]:
            return 0.0
        return held_log_linear(curve.x, shares, step_bytes)

    def offgrid_ratio(self, key: str, m: float, n: float, k: float) -> float:
        """What a matmul off grid `key`'s points takes over the grid's reading of it: the off-grid
        probes' mean ratio (`matmul_offgrid`); 1 on the grid's points or without probes."""
        entry = self.matmul_offgrid.get(key)
        grid = self.matmul.get(key)
        if not entry or grid is None or all(x in p for x, p in zip((m, n, k), grid.points, strict=True)):
            return 1.0
        return float(entry["ratio"])

    def unaligned_floor_s(self, key: str, orientation: str, flops: float) -> float:
        """Seconds a matmul of `flops` of an unaligned linear layer (`orientation`: fwd | dgrad |
        wgrad) takes at least on grid `key`'s dtype: those FLOPs at the rate measured for such a
        layer; 0 without a measurement (a CPU's, or an older calibration's)."""
        entry = self.matmul_unaligned.get(key)
        return flops / float(entry[orientation]) if entry else 0.0

    def sustained_slowdown(self, flops_per_s: float) -> float:
        """How much longer compute kernels take in a step that keeps the GPU at `flops_per_s`
        (FLOP/s of its matmuls and attention over its time): the measured slowdowns read
        linearly in the rate from 1 at rate 0, made non-decreasing, flat beyond the densest
        load measured; 1 without a measurement."""
        if not self.sustained or not flops_per_s > 0:
            return 1.0
        points = [(0.0, 1.0)]
        for rate, slow in sorted(zip(self.sustained["rates"], self.sustained["slowdowns"], strict=True)):
            points.append((float(rate), max(float(slow), points[-1][1])))
        for (r0, s0), (r1, s1) in zip(points, points[1:], strict=False):
            if flops_per_s <= r1:
                return s0 + (s1 - s0) * (flops_per_s - r0) / (r1 - r0) if r1 > r0 else s1
        return points[-1][1]

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The dtypes its matmuls were timed in (its `matmul` grids, the cache's twins aside):
        those it can predict a step in."""
        return tuple(sorted(k for k in self.matmul if not k.endswith(WARM)))

    def bias_ratio(self, key: str) -> float:
        """A linear layer's time with a bias over the grid's time without one, on grid `key`."""
        entry = self.matmul_bias.get(key)
        return float(entry["ratio"]) if entry else 1.0

    @property
    def created(self) -> _dt.datetime:
        try:
            when = _dt.datetime.fromisoformat(self.created_at)
        except ValueError as err:
            raise UserError(f"calibration date {self.created_at!r} is not an ISO 8601 time") from err
        return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)

    def age_days(self, now: _dt.datetime | None = None) -> float:
        return ((now or _now()) - self.created).total_seconds() / 86400

    def check_usable(self, device_name: str, torch_version: str, *,
                     now: _dt.datetime | None = None, max_age_days: float = MAX_AGE_DAYS) -> None:
        """A one-line UserError when this calibration is of another device, another torch, or
        older than `max_age_days`: its curves would not be this machine's."""
        fix = "run `gptperf calibrate` on this device"
        if device_name != self.device_name:
            raise UserError(f"the calibration is of {self.device_name!r}, this device is "
                            f"{device_name!r}; {fix}")
        if torch_version != self.torch_version:
            raise UserError(f"the calibration of {self.device_name!r} was made with torch "
                            f"{self.torch_version}, this is torch {torch_version}; {fix}")
        age = self.age_days(now)
        if age > max_age_days or age < -1:
            raise UserError(f"the calibration of {self.device_name!r} is {age:.0f} days old "
                            f"(from {self.created_at}; at most {max_age_days:g} are used); {fix}")

    def label(self, now: _dt.datetime | None = None) -> str:
        """E.g. 'calibrated on NVIDIA H200, 2026-12-01 (0.2 days old, torch 2.11.0)'."""
        return (f"calibrated on {self.device_name}, {self.created_at[:10]} "
                f"({self.age_days(now):.1f} days old, torch {self.torch_version})")

    def residuals(self) -> dict[str, float | None]:
        """Every curve's and grid's leave-one-out residual, by "<family>:<key>"."""
        out: dict[str, float | None] = {}
        for family in ("matmul", "attention", "vector", "optimizer", "gemv"):
            for key, curve in getattr(self, family).items():
                out[curve_key(family, key)] = curve.residual
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "device_name": self.device_name, "device_type": self.device_type,
            "torch_version": self.torch_version, "created_at": self.created_at,
            "seconds": self.seconds,
            "matmul": {k: v.to_dict() for k, v in self.matmul.items()},
            "attention": {k: v.to_dict() for k, v in self.attention.items()},
            "vector": {k: v.to_dict() for k, v in self.vector.items()},
            "optimizer": {k: v.to_dict() for k, v in self.optimizer.items()},
            "gemv": {k: v.to_dict() for k, v in self.gemv.items()},
            "host": {k: dict(v) for k, v in self.host.items()},
            "compiled": self.compiled, "shapes": self.shapes, "notes": list(self.notes),
            "probes": {k: dict(v) for k, v in self.probes.items()},
            "launch_gap_s": self.launch_gap_s,
            "matmul_bias": {k: dict(v) for k, v in self.matmul_bias.items()},
            "matmul_offgrid": {k: dict(v) for k, v in self.matmul_offgrid.items()},
            "matmul_probes": {k: [list(row) for row in v] for k, v in self.matmul_probes.items()},
            "matmul_rows": {k: {kk: list(vv) for kk, vv in v.items()} for k, v in self.matmul_rows.items()},
            "matmul_in_step": {k: {kk: list(vv) for kk, vv in v.items()} for k, v in self.matmul_in_step.items()},
            "matmul_unaligned": {k: dict(v) for k, v in self.matmul_unaligned.items()},
            "optimizer_overlap": dict(self.optimizer_overlap),
            "sustained": dict(self.sustained), "cache_bytes": self.cache_bytes,
            "cache_reach": None if self.cache_reach is None else self.cache_reach.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """The inverse of `to_dict`; a one-line UserError for another schema or a broken table."""
        from gptperf.schema import check_schema  # deferred: keeps --help fast

        check_schema(d, SCHEMA)
        try:
            return cls(
                device_name=str(d["device_name"]), device_type=str(d["device_type"]),
                torch_version=str(d["torch_version"]), created_at=str(d["created_at"]),
                seconds=float(d["seconds"]),
                matmul={k: Grid.from_dict(v) for k, v in d.get("matmul", {}).items()},
                attention={k: Grid.from_dict(v) for k, v in d.get("attention", {}).items()},
                vector={k: Curve.from_dict(v) for k, v in d.get("vector", {}).items()},
                optimizer={k: Grid.from_dict(v) if "axes" in v else Curve.from_dict(v)
                           for k, v in d.get("optimizer", {}).items()},
                gemv={k: Curve.from_dict(v) for k, v in d.get("gemv", {}).items()},
                host={k: _host_line(v) for k, v in d.get("host", {}).items()},
                compiled=dict(d.get("compiled", {})), shapes=dict(d.get("shapes", {})),
                notes=list(d.get("notes", [])),
                probes={k: {kk: float(vv) for kk, vv in v.items()} for k, v in d.get("probes", {}).items()},
                launch_gap_s=float(d.get("launch_gap_s", 0.0)),
                matmul_bias={k: {kk: float(vv) for kk, vv in v.items()}
                             for k, v in d.get("matmul_bias", {}).items()},
                matmul_offgrid={k: {kk: float(vv) for kk, vv in v.items()}
                                for k, v in d.get("matmul_offgrid", {}).items()},
                matmul_probes={k: [[float(x) for x in row] if isinstance(row, list) else row for row in v]
                               for k, v in d.get("matmul_probes", {}).items()},
                matmul_rows={k: {kk: [float(x) for x in vv] for kk, vv in v.items()}
                             for k, v in d.get("matmul_rows", {}).items()},
                matmul_in_step={k: {kk: [float(x) for x in vv] for kk, vv in v.items()}
                                for k, v in d.get("matmul_in_step", {}).items()},
                matmul_unaligned={k: {kk: float(vv) for kk, vv in v.items()}
                                  for k, v in d.get("matmul_unaligned", {}).items()},
                optimizer_overlap=dict(d.get("optimizer_overlap", {})),
                sustained=dict(d.get("sustained", {})), cache_bytes=float(d.get("cache_bytes", 0.0)),
                cache_reach=Curve.from_dict(d["cache_reach"]) if d.get("cache_reach") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise UserError(f"the calibration document is broken ({type(err).__name__}: {err}); "
                            "run `gptperf calibrate` again") from err


def calibration_path(device_name: str) -> Path:
    """Where `gptperf calibrate` keeps the calibration of `device_name` (beside the ceilings)."""
    return cache_dir() / "calibration" / f"{slug(device_name)}.json"


def save_calibration(calibration: Calibration) -> Path:
    """Write it atomically to `calibration_path`; returns the path."""
    path = calibration_path(calibration.device_name)
    write_text(path, json.dumps(calibration.to_dict(), indent=1) + "\n")
    return path


def load_calibration(device_name: str, torch_version: str | None = None, *,
                     now: _dt.datetime | None = None, required: bool = False) -> Calibration | None:
    """The cached calibration of `device_name`, checked (`check_usable`) when `torch_version` is
    given; None when there is none (a UserError instead with `required`). A file that does not
    parse, or is stale or foreign, is a one-line UserError."""
    path = calibration_path(device_name)
    if not path.is_file():
        if required:
            raise UserError(f"no calibration for {device_name!r} (looked for {path}); "
                            "run `gptperf calibrate` on that device first")
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"calibration file {path} does not parse ({err}); run `gptperf calibrate` again") from err
    cal = Calibration.from_dict(doc)
    if torch_version is not None:
        cal.check_usable(device_name, torch_version, now=now)
    return cal
