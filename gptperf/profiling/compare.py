"""Prediction beside measurement: per operation, per component and per layer, joined on (name, phase).

Measured time is the median over the active profiler steps (with min and max); achieved FLOP/s
and bytes/s divide the performance model's counts by it; "% of roofline" is the roofline time
of those counts (max(FLOPs / peak, bytes / bandwidth), no launch latency) over the measured time,
i.e. achieved rate / attainable rate at the operation's arithmetic intensity.

Beside the roofline time ("what the hardware allows") a row carries, when a calibration of the
device exists, the calibrated expected device time of its kernels (`perfmodel.expected`, "what
this machine will take") and measured / expected.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from gptperf import names
from gptperf.profiling.trace import Attribution, Key
from gptperf.schema import number

PHASE_ORDER = {p: i for i, p in enumerate(names.PHASES)}


@dataclass
class Predicted:
    """The performance model's figures for one (name, phase) per step (summed over its OpCosts)."""

    flops: float = 0.0
    bytes: float = 0.0
    time_s: float = 0.0
    roofline_s: float = 0.0  # max(compute, memory) time, without launch latency
    count: int = 0
    bound: str = ""


def predicted_by_key(ops: Iterable[Any]) -> dict[Key, Predicted]:
    """Sum the perfmodel's OpCosts per (name, phase)."""
    out: dict[Key, Predicted] = {}
    for op in ops:
        p = out.setdefault((op.name, op.phase), Predicted())
        p.flops += float(op.flops)
        p.bytes += float(op.bytes)
        p.time_s += float(op.time_s)
        compute = float(op.flops) / float(op.peak_flops) if getattr(op, "peak_flops", 0) else 0.0
        memory = float(op.bytes) / float(op.bandwidth) if getattr(op, "bandwidth", 0) else 0.0
        p.roofline_s += max(compute, memory)
        p.count += int(getattr(op, "count", 1))
        p.bound = str(getattr(op, "bound", ""))
    return out


@dataclass
class Row:
    """One line of a comparison table: an operation, a component or a layer, in one phase."""

    name: str  # operation name, component, or 'h.<i>' / 'model' for layers
    phase: str
    measured_s: float  # median over active steps
    measured_min_s: float
    measured_max_s: float
    calls: int  # kernels (operators) per step
    share: float  # measured / attributed time of the step
    flops: float = math.nan  # predicted, per step
    bytes: float = math.nan
    predicted_s: float = math.nan
    roofline_s: float = math.nan
    bound: str = ""
    occupancy_pct: float | None = None
    blocks_per_sm: float | None = None
    expected_s: float = math.nan  # calibrated expected device time per step (NaN: none)

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes if self.bytes and self.bytes > 0 else math.nan

    @property
    def achieved_flops(self) -> float:
        return self.flops / self.measured_s if self.measured_s > 0 else math.nan

    @property
    def achieved_bytes_per_s(self) -> float:
        return self.bytes / self.measured_s if self.measured_s > 0 else math.nan

    @property
    def pct_of_roofline(self) -> float:
        return 100.0 * self.roofline_s / self.measured_s if self.measured_s > 0 else math.nan

    @property
    def ratio(self) -> float:
        """Measured / predicted."""
        if self.predicted_s > 0 and not math.isnan(self.measured_s):
            return self.measured_s / self.predicted_s
        return math.nan

    @property
    def expected_ratio(self) -> float:
        """Measured / calibrated expected."""
        if self.expected_s > 0 and not math.isnan(self.measured_s):
            return self.measured_s / self.expected_s
        return math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(arithmetic_intensity=self.arithmetic_intensity, achieved_flops=self.achieved_flops,
                 achieved_bytes_per_s=self.achieved_bytes_per_s,
                 pct_of_roofline=self.pct_of_roofline, measured_over_predicted=self.ratio,
                 measured_over_expected=self.expected_ratio)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        """The inverse of `to_dict` (numbers written as null, NaN, are NaN again)."""
        optional = ("occupancy_pct", "blocks_per_sm")
        later = ("expected_s",)  # absent from documents written before the calibrated prediction
        return cls(**{f.name: (d.get(f.name) if f.name in optional
                               else number(d.get(f.name)) if f.name in later
                               else number(d[f.name]) if f.type == "float" else d[f.name])
                      for f in fields(cls)})


CSV_FIELDS = ("name", "phase", "measured_s", "measured_min_s", "measured_max_s", "calls", "share",
              "flops", "bytes", "arithmetic_intensity", "achieved_flops", "achieved_bytes_per_s",
              "roofline_s", "pct_of_roofline", "predicted_s", "measured_over_predicted", "bound",
              "occupancy_pct", "blocks_per_sm", "expected_s", "measured_over_expected")


@dataclass
class Comparison:
    ops: list[Row]
    components: list[Row]
    layers: list[Row]
    phases: list[Row]

    def to_dict(self) -> dict[str, Any]:
        return {k: [r.to_dict() for r in getattr(self, k)]
                for k in ("ops", "components", "layers", "phases")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        """The inverse of `to_dict`."""
        return cls(*([Row.from_dict(r) for r in d[k]] for k in ("ops", "components", "layers", "phases")))


def _row(name: str, phase: str, series: list[float], calls: int, step_total: float,
         pred: Predicted | None, occ: tuple[float | None, float | None] = (None, None),
         expected_s: float | None = None) -> Row:
    med = statistics.median(series) if series else math.nan
    r = Row(name, phase, med, min(series, default=math.nan), max(series, default=math.nan), calls,
            med / step_total if step_total > 0 else math.nan,
            occupancy_pct=occ[0], blocks_per_sm=occ[1])
    if pred is not None:
        r.flops, r.bytes, r.predicted_s = pred.flops, pred.bytes, pred.time_s
        r.roofline_s, r.bound = pred.roofline_s, pred.bound
    if expected_s is not None:
        r.expected_s = expected_s
    return r


def _group(key: Key, how: str) -> tuple[str, str]:
    name, phase = key
    layer, component = names.split_name(name)
    if how == "component":
        return component, phase
    return (f"h.{layer}" if layer is not None else "model"), phase


def compare(attribution: Attribution, predicted: Mapping[Key, Predicted],
            expected: Mapping[Key, float] | None = None) -> Comparison:
    """Join measured (attributed) and predicted time on (name, phase); aggregate by component
    (over layers), by layer and by phase. `expected`: the calibrated expected device seconds
    per (name, phase), when a calibration exists."""
    expected = expected or {}
    per_step = attribution.per_step()
    calls = attribution.calls()
    occ = attribution.occupancy()
    n = len(attribution.steps)
    step_total = statistics.median(
        [sum(v[k] for v in per_step.values()) for k in range(n)]) if per_step else 0.0
    keys = sorted(set(per_step) | set(predicted) | set(expected))  # sums that repeat to the digit

    def zeros() -> list[float]:
        return [0.0] * n

    ops = [_row(k[0], k[1], per_step.get(k, zeros()), calls.get(k, 0), step_total,
                predicted.get(k), occ.get(k, (None, None)), expected.get(k)) for k in keys]

    def aggregate(how: str) -> list[Row]:
        series: dict[tuple[str, str], list[float]] = defaultdict(zeros)
        ncalls: dict[tuple[str, str], int] = defaultdict(int)
        preds: dict[tuple[str, str], Predicted] = {}
        exps: dict[tuple[str, str], float] = {}
        for k in keys:
            g = _group(k, how) if how != "phase" else ("all", k[1])
            s = series[g]
            for i, v in enumerate(per_step.get(k, zeros())):
                s[i] += v
            ncalls[g] += calls.get(k, 0)
            if k in expected:
                exps[g] = exps.get(g, 0.0) + expected[k]
            if k in predicted:
                p, q = preds.setdefault(g, Predicted()), predicted[k]
                p.flops += q.flops
                p.bytes += q.bytes
                p.time_s += q.time_s
                p.roofline_s += q.roofline_s
                p.count += q.count
                p.bound = q.bound if not p.bound or p.bound == q.bound else "mixed"
        return [_row(g[0], g[1], s, ncalls[g], step_total, preds.get(g), expected_s=exps.get(g))
                for g, s in series.items()]

    def order(rows: list[Row]) -> list[Row]:
        return sorted(rows, key=lambda r: (-(r.measured_s if not math.isnan(r.measured_s) else 0.0),
                                           PHASE_ORDER.get(r.phase, 9), r.name))

    return Comparison(order(ops), order(aggregate("component")), order(aggregate("layer")),
                      order(aggregate("phase")))


def median_abs_error(rows: Iterable[Row], min_share: float = 0.02, *, expected: bool = False) -> float:
    """Median |measured / predicted - 1| (with `expected`: / calibrated expected) over rows that
    take at least `min_share` of the step."""
    ratios = [(r, r.expected_ratio if expected else r.ratio) for r in rows]
    errs = [abs(x - 1) for r, x in ratios if r.share >= min_share and not math.isnan(x)]
    return statistics.median(errs) if errs else math.nan


def rows_csv(rows: Iterable[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = r.to_dict()
        w.writerow({k: ("" if d.get(k) is None or (isinstance(d.get(k), float) and math.isnan(d[k]))
                        else d[k]) for k in CSV_FIELDS})
    return buf.getvalue()
