"""Communication model of data-parallel training — pure Python, no torch: the α–β fit of an
all-reduce sweep, ring all-reduce time, bus bandwidth (nccl-tests), DDP's gradient buckets in the
order backward makes them ready, the predicted DDP step (compute + the communication backward does
not hide), and a what-if for N nodes × G GPUs on datasheet interconnects.

    ring all-reduce of n bytes on p ranks:  t = 2(p−1)·α + 2(p−1)/p · n/β
    algbw = n / t          busbw = algbw · 2(p−1)/p      (nccl-tests' definitions)

α is the latency of one ring step, β the bandwidth of one link (what busbw tends to on large
messages). DDP (torch.nn.parallel.DistributedDataParallel) packs gradients into buckets of
25 MiB — the first one 1 MiB — in the order autograd produces them, and starts each bucket's
all-reduce as soon as its last gradient is ready, so it overlaps with the rest of backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gptperf import names
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig
from gptperf.perfmodel import Workload, predict
from gptperf.units import MIB

DDP_BUCKET_BYTES = 25 * MIB  # DistributedDataParallel's bucket_cap_mb=25 (MiB)
DDP_FIRST_BUCKET_BYTES = 1 * MIB  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES


def _check_world(p: Any) -> int:
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise UserError(f"world size must be a positive integer, got {p!r}")
    return p


def ring_allreduce_time(nbytes: float, p: int, alpha_s: float, beta: float) -> float:
    """Seconds for a ring all-reduce of `nbytes` on `p` ranks: 2(p−1)·α + 2(p−1)/p · n/β."""
    _check_world(p)
    if p == 1:
        return 0.0
    return 2 * (p - 1) * alpha_s + 2 * (p - 1) / p * nbytes / beta


def bus_factor(p: int) -> float:
    """nccl-tests' all-reduce bus factor 2(p−1)/p: the bytes each link carries per byte reduced."""
    return 2 * (_check_world(p) - 1) / p


def algbw(nbytes: float, time_s: float) -> float:
    """Algorithm bandwidth, bytes/s: the message size over the time of the all-reduce."""
    return nbytes / time_s if time_s > 0 else math.nan


def busbw(nbytes: float, time_s: float, p: int) -> float:
    """Bus bandwidth, bytes/s: algbw · 2(p−1)/p, comparable with a link's bandwidth (0 for p = 1)."""
    return algbw(nbytes, time_s) * bus_factor(p)


@dataclass(frozen=True)
class AlphaBeta:
    """The α–β model of an all-reduce on `world_size` ranks: latency per ring step `alpha_s`,
    link bandwidth `beta` (bytes/s). `residual`: RMS relative error of the fit over its `points`
    sizes (None for datasheet figures); `source` says where the figures come from."""

    alpha_s: float
    beta: float
    world_size: int
    source: str
    residual: float | None = None
    points: int = 0

    def allreduce_time(self, nbytes: float, p: int | None = None) -> float:
        """Predicted seconds for an all-reduce of `nbytes` on `p` ranks (default: the fit's)."""
        return ring_allreduce_time(nbytes, self.world_size if p is None else p, self.alpha_s, self.beta)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha_s": self.alpha_s, "beta_bytes_per_s": self.beta, "world_size": self.world_size,
                "source": self.source, "residual": self.residual, "points": self.points,
                "formula": "t = 2(p-1)*alpha + 2(p-1)/p * bytes/beta"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlphaBeta:
        return cls(d["alpha_s"], d["beta_bytes_per_s"], d["world_size"], d["source"],
                   d.get("residual"), d.get("points", 0))


def fit_alpha_beta(sizes: Sequence[float], times: Sequence[float], p: int, *,
                   source: str = "measured") -> AlphaBeta:
    """Fit t = a + b·n to an all-reduce sweep (`sizes` in bytes, `times` in s) on `p` ≥ 2 ranks,
    least squares in relative error (each size counts alike, small ones included), and read the
    ring model off it: α = a / 2(p−1), β = 2(p−1) / (p·b). A negative intercept (noise on a
    bandwidth-bound sweep) is clamped to α = 0 and the slope refitted."""
    _check_world(p)
    if p < 2:
        raise UserError("an α–β fit needs an all-reduce on at least 2 ranks")
    pts = [(float(n), float(t)) for n, t in zip(sizes, times, strict=True) if t > 0 and n > 0]
    if len({n for n, _ in pts}) < 2:
        raise UserError(f"an α–β fit needs at least 2 distinct message sizes with positive times, got {len(pts)}")
    w = [1.0 / (t * t) for _, t in pts]
    s = sum(w)
    sx = sum(wi * n for wi, (n, _) in zip(w, pts, strict=True))
    sy = sum(wi * t for wi, (_, t) in zip(w, pts, strict=True))
    sxx = sum(wi * n * n for wi, (n, _) in zip(w, pts, strict=True))
    sxy = sum(wi * n * t for wi, (n, t) in zip(w, pts, strict=True))
    det = s * sxx - sx * sx
    a = (sxx * sy - sx * sxy) / det
    b = (s * sxy - sx * sy) / det
    if a < 0:
        a, b = 0.0, sxy / sxx
    if b <= 0:
        raise UserError("all-reduce times do not grow with message size; the sweep cannot give a bandwidth")
    rel = [(a + b * n) / t - 1 for n, t in pts]
    residual = math.sqrt(sum(r * r for r in rel) / len(rel))
    return AlphaBeta(a / (2 * (p - 1)), 2 * (p - 1) / (p * b), p, source, residual, len(pts))


# -- DDP's gradient buckets ------------------------------------------------------------------

@dataclass(frozen=True)
class GradTensor:
    """One parameter's gradient: its name in `GPT.named_parameters()`, its size, and the
    operation (a name of gptperf.names) whose backward produces it."""

    name: str
    numel: int
    op: str


def gradient_tensors(config: GPTConfig) -> list[GradTensor]:
    """The GPT's parameters in `GPT.parameters()` order (the tied LM head is the token embedding,
    counted once), each with the operation whose backward makes its gradient."""
    C, V = config.n_embd, config.vocab_size
    out = [GradTensor("transformer.wte.weight", V * C, names.EMBED),
           GradTensor("transformer.wpe.weight", config.block_size * C, names.EMBED)]

    def linear(module: str, op: str) -> tuple[tuple[str, int, str], ...]:  # nn.Linear: weight, then bias
        rows, cols = config.weight_shape(op)
        return (f"{module}.weight", rows * cols, op), (f"{module}.bias", rows, op)

    layer = (("ln_1.weight", C, names.LN_1), ("ln_1.bias", C, names.LN_1),
             *linear("attn.c_attn", names.ATTN_QKV), *linear("attn.c_proj", names.ATTN_PROJ),
             ("ln_2.weight", C, names.LN_2), ("ln_2.bias", C, names.LN_2),
             *linear("mlp.c_fc", names.MLP_FC), *linear("mlp.c_proj", names.MLP_PROJ))
    for i in range(config.n_layer):
        out += [GradTensor(f"transformer.h.{i}.{n}", k, names.layer_name(i, op)) for n, k, op in layer]
    out += [GradTensor("transformer.ln_f.weight", C, names.LN_F), GradTensor("transformer.ln_f.bias", C, names.LN_F)]
    return out


@dataclass(frozen=True)
class Bucket:
    """One DDP bucket: `index` in all-reduce order, `bytes`, its parameters' names, and when its
    last gradient is ready as a fraction of backward time (`ready_fraction`, 1.0 if not placed)."""

    index: int
    bytes: int
    params: tuple[str, ...]
    ready_fraction: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "bytes": self.bytes, "params": len(self.params),
                "first": self.params[0], "last": self.params[-1], "ready_fraction": self.ready_fraction}


def ddp_buckets(tensors: Sequence[GradTensor], bytes_per_element: int = 4, *,
                bucket_bytes: int = DDP_BUCKET_BYTES,
                first_bucket_bytes: int = DDP_FIRST_BUCKET_BYTES,
                ready: dict[str, float] | None = None) -> list[Bucket]:
    """DDP's buckets after its first iteration (when it rebuilds them in the order gradients
    became ready): the gradients in reverse parameter order (the order backward produces them),
    each bucket closed once it holds at least its cap (the first `first_bucket_bytes`, the rest
    `bucket_bytes`), as `torch.distributed._compute_bucket_assignment_by_size` does. `ready` maps
    an operation name to the fraction of backward after which its gradients exist."""
    buckets: list[Bucket] = []
    params: list[str] = []
    size = 0
    last_ready = 0.0

    def close() -> None:
        nonlocal params, size, last_ready
        buckets.append(Bucket(len(buckets), size, tuple(params), last_ready if ready else 1.0))
        params, size, last_ready = [], 0, 0.0

    for t in reversed(tensors):
        params.append(t.name)
        size += t.numel * bytes_per_element
        if ready:
            last_ready = max(last_ready, ready.get(t.op, 1.0))
        if size >= (first_bucket_bytes if not buckets else bucket_bytes):
            close()
    if params:
        close()
    return buckets


def backward_ready_fractions(ops: Sequence[Any]) -> dict[str, float]:
    """Fraction of backward time done when each operation's backward ends, from a prediction's
    ops (`perfmodel.predict(...).ops`, backward in the order autograd runs it)."""
    bwd = [op for op in ops if op.phase == names.BACKWARD]
    total = sum(op.time_s for op in bwd)
    out: dict[str, float] = {}
    done = 0.0
    for op in bwd:
        done += op.time_s
        out[op.name] = done / total if total > 0 else 1.0
    return out


# -- the predicted DDP step -------------------------------------------------------------------

@dataclass(frozen=True)
class BucketTiming:
    """One bucket's all-reduce in a predicted step, in seconds from the step's start."""

    index: int
    bytes: int
    ready_s: float
    start_s: float
    end_s: float

    @property
    def comm_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "bytes": self.bytes, "ready_s": self.ready_s,
                "start_s": self.start_s, "end_s": self.end_s, "comm_s": self.comm_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BucketTiming:
        return cls(d["index"], d["bytes"], d["ready_s"], d["start_s"], d["end_s"])


@dataclass(frozen=True)
class DdpStepPrediction:
    """A predicted data-parallel step: compute (forward, backward, optimizer) plus the all-reduce
    time that backward does not hide. `label` says what the compute and the link came from."""

    world_size: int
    forward_s: float
    backward_s: float
    optimizer_s: float
    comm_total_s: float
    comm_exposed_s: float
    gradient_bytes: int
    buckets: list[BucketTiming]
    link: AlphaBeta | None
    label: str

    @property
    def compute_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s

    @property
    def step_s(self) -> float:
        return self.compute_s + self.comm_exposed_s

    @property
    def busbw(self) -> float:
        """Bus bandwidth the gradients' all-reduces reach (bytes/s), 0 on one rank."""
        if self.world_size == 1 or self.comm_total_s <= 0:
            return 0.0
        return busbw(self.gradient_bytes, self.comm_total_s, self.world_size)

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "step_s": self.step_s, "compute_s": self.compute_s,
                "forward_s": self.forward_s, "backward_s": self.backward_s,
                "optimizer_s": self.optimizer_s, "comm_total_s": self.comm_total_s,
                "comm_exposed_s": self.comm_exposed_s, "gradient_bytes": self.gradient_bytes,
                "busbw_bytes_per_s": self.busbw, "buckets": [b.to_dict() for b in self.buckets],
                "link": self.link.to_dict() if self.link is not None else None, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DdpStepPrediction:
        """The inverse of `to_dict`."""
        return cls(d["world_size"], d["forward_s"], d["backward_s"], d["optimizer_s"],
                   d["comm_total_s"], d["comm_exposed_s"], d["gradient_bytes"],
                   [BucketTiming.from_dict(b) for b in d["buckets"]],
                   AlphaBeta.from_dict(d["link"]) if d["link"] is not None else None, d["label"])


def predict_ddp_step(buckets: Sequence[Bucket], *, forward_s: float, backward_s: float,
                     optimizer_s: float, link: AlphaBeta | None, world_size: int,
                     label: str, overlap: bool = True) -> DdpStepPrediction:
    """Compute + exposed communication: bucket k's all-reduce starts when its last gradient is
    ready (forward_s + ready_fraction·backward_s) and the previous one has finished (one at a
    time, in order, as DDP launches them); what runs past the end of backward is exposed.

    `overlap=False`: the all-reduce needs the processors backward computes on (gloo reduces on
    the CPU; with every core computing it takes their time), so none of it is hidden."""
    _check_world(world_size)
    grad_bytes = sum(b.bytes for b in buckets)
    if world_size == 1:
        return DdpStepPrediction(1, forward_s, backward_s, optimizer_s, 0.0, 0.0, grad_bytes, [],
                                 link, label)
    if link is None:
        raise UserError(f"a {world_size}-rank step needs an all-reduce model (α, β)")
    timings: list[BucketTiming] = []
    free = forward_s
    for b in buckets:
        ready = forward_s + b.ready_fraction * backward_s
        start = max(ready, free)
        free = start + link.allreduce_time(b.bytes, world_size)
        timings.append(BucketTiming(b.index, b.bytes, ready, start, free))
    total = sum(t.comm_s for t in timings)
    exposed = max(0.0, free - (forward_s + backward_s)) if overlap else total
    return DdpStepPrediction(world_size, forward_s, backward_s, optimizer_s, total, exposed,
                             grad_bytes, timings, link, label)


# -- what-if: machines we do not have ---------------------------------------------------------

@dataclass(frozen=True)
class Interconnect:
    """A link as its datasheet gives it: `bandwidth` per direction per GPU (bytes/s); `latency_s`
    is a nominal per-step latency (datasheets give none)."""

    name: str
    bandwidth: float
    latency_s: float
    notes: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bandwidth_bytes_per_s": self.bandwidth,
                "latency_s": self.latency_s, "notes": self.notes}


INTERCONNECTS: dict[str, Interconnect] = {i.name: i for i in (
    Interconnect("nvlink3", 300e9, 3e-6, "A100 NVLink 3: 600 GB/s bidirectional per GPU"),
    Interconnect("nvlink4", 450e9, 3e-6, "H100/H200 NVLink 4: 900 GB/s bidirectional per GPU"),
    Interconnect("nvlink5", 900e9, 3e-6, "B200 NVLink 5: 1.8 TB/s bidirectional per GPU"),
    Interconnect("pcie4", 32e9, 5e-6, "PCIe 4.0 x16: 32 GB/s per direction"),
    Interconnect("pcie5", 64e9, 5e-6, "PCIe 5.0 x16: 64 GB/s per direction"),
    Interconnect("ib-hdr", 25e9, 6e-6, "InfiniBand HDR 200 Gb/s, one NIC per GPU"),
    Interconnect("ib-ndr", 50e9, 6e-6, "InfiniBand NDR 400 Gb/s, one NIC per GPU"),
    Interconnect("ib-xdr", 100e9, 6e-6, "InfiniBand XDR 800 Gb/s, one NIC per GPU"),
    Interconnect("eth-100g", 12.5e9, 20e-6, "100 Gb/s Ethernet (RoCE), one NIC per GPU"),
)}


def get_interconnect(name: str) -> Interconnect:
    if name not in INTERCONNECTS:
        raise UserError(f"unknown interconnect {name!r}; valid: {', '.join(INTERCONNECTS)}")
    return INTERCONNECTS[name]


def whatif_link(nodes: int, gpus_per_node: int, intra: str = "nvlink4", inter: str = "ib-ndr") -> AlphaBeta:
    """The α–β of a flat ring over nodes × GPUs: inside one node the intra-node link; across
    nodes every step waits for the slower of the two (each GPU with its own NIC)."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise UserError(f"nodes must be a positive integer, got {nodes!r}")
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or gpus_per_node < 1:
        raise UserError(f"GPUs per node must be a positive integer, got {gpus_per_node!r}")
    a, b = get_interconnect(intra), get_interconnect(inter)
    if nodes == 1:
        return AlphaBeta(a.latency_s, a.bandwidth, gpus_per_node, f"datasheet: {a.name}")
    return AlphaBeta(max(a.latency_s, b.latency_s), min(a.bandwidth, b.bandwidth), nodes * gpus_per_node,
                     f"datasheet: {a.name} in a node, {b.name} across nodes")


@dataclass(frozen=True)
class WhatIfPoint:
    """A predicted data-parallel step on `nodes` × `gpus_per_node` GPUs — a prediction from
    datasheets (roofline compute, ring all-reduce on the links), nothing measured."""

    nodes: int
    gpus_per_node: int
    per_gpu_batch: int
    seq: int
    hardware: str
    step: DdpStepPrediction
    label: str = "prediction (datasheet): roofline compute + ring all-reduce on datasheet links"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def tokens_per_s(self) -> float:
        return self.world_size * self.per_gpu_batch * self.seq / self.step.step_s

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "gpus_per_node": self.gpus_per_node, "world_size": self.world_size,
                "per_gpu_batch": self.per_gpu_batch, "global_batch": self.per_gpu_batch * self.world_size,
                "hardware": self.hardware, "step": self.step.to_dict(), "step_s": self.step.step_s,
                "tokens_per_s": self.tokens_per_s,
                "tokens_per_s_per_gpu": self.tokens_per_s / self.world_size, "label": self.label,
                **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any], seq: int) -> WhatIfPoint:
        """The inverse of `to_dict`, given the sequence length (not in the document)."""
        derived = {"nodes", "gpus_per_node", "world_size", "per_gpu_batch", "global_batch",
                   "hardware", "step", "step_s", "tokens_per_s", "tokens_per_s_per_gpu", "label"}
        return cls(d["nodes"], d["gpus_per_node"], d["per_gpu_batch"], seq, d["hardware"],
                   DdpStepPrediction.from_dict(d["step"]), d["label"],
                   {k: v for k, v in d.items() if k not in derived})


def phase_times(ops: Sequence[Any]) -> tuple[float, float, float]:
    """(forward, backward, optimizer) seconds summed from a prediction's ops."""
    t = {names.FORWARD: 0.0, names.BACKWARD: 0.0, names.OPTIMIZER_PHASE: 0.0}
    for op in ops:
        t[op.phase] = t.get(op.phase, 0.0) + op.time_s
    return t[names.FORWARD], t[names.BACKWARD], t[names.OPTIMIZER_PHASE]


def what_if(config: GPTConfig, *, nodes: int, gpus_per_node: int, per_gpu_batch: int, seq: int,
            dtype: str, hardware: Any, intra: str = "nvlink4", inter: str = "ib-ndr") -> WhatIfPoint:
    """Predict a DDP train step of `config` on nodes × GPUs of datasheet `hardware` (a perfmodel
    Hardware): each GPU's forward, backward and optimizer at its roofline time, the gradients'
    buckets all-reduced over the ring of `whatif_link`, overlapped with backward."""
    link = whatif_link(nodes, gpus_per_node, intra, inter)
    prediction = predict(config, Workload("train", per_gpu_batch, seq, dtype), hardware)
    fwd, bwd, opt = phase_times(prediction.ops)
    buckets = ddp_buckets(gradient_tensors(config), gradient_bytes_per_element(dtype),
                          ready=backward_ready_fractions(prediction.ops))
    step = predict_ddp_step(buckets, forward_s=fwd, backward_s=bwd, optimizer_s=opt, link=link,
                            world_size=nodes * gpus_per_node,
                            label=f"prediction (datasheet): {hardware.name} roofline, {link.source}")
    return WhatIfPoint(nodes, gpus_per_node, per_gpu_batch, seq, hardware.name, step,
                       extra={"intra": get_interconnect(intra).to_dict(),
                              "inter": get_interconnect(inter).to_dict() if nodes > 1 else None})


def gradient_bytes_per_element(dtype: str) -> int:
    """Gradients are kept in the parameters' dtype: fp32 master weights under bf16/fp16 autocast."""
    return 8 if dtype == "fp64" else 4
