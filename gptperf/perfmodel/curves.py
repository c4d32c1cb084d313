"""Measured time curves and their reading: a `Curve` is seconds against one size (bytes,
parameters), a `Grid` seconds against several (M, N, K of a matmul; batch·heads, length, head
size of attention). Both read linearly in log-log space between measured points and, beyond the
largest, grow as the work does (the kernel is saturated there). Below its smallest point a
`Curve` follows the straight line through its first two points, a fixed cost plus a cost per
unit of size, the kernel model of the roofline's launch latency and bandwidth (a fused decode
kernel of a 128-wide model streams a sixteenth of the bytes of the smallest one the calibration
times); where that line has no positive fixed cost or slope, and below a `Grid`'s edge, the
time is the smallest point's (fixed costs dominate there). `residual` is each one's
leave-one-out error: every inner point predicted from its neighbours alone, the median
|predicted/measured − 1|. Pure Python; `perfmodel.calibration` keeps a device's curves.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from gptperf.checks import is_finite_number
from gptperf.errors import UserError


def is_positive_number(x: Any) -> bool:
    return is_finite_number(x) and x > 0


def _positive_floats(values: Any, what: str) -> tuple[float, ...]:
    out = []
    for v in values:
        if not is_positive_number(v):
            raise UserError(f"{what} must hold positive finite numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


def held_log_linear(xs: tuple[float, ...], ys: Sequence[float], x: float) -> float:
    """ys read at x linearly in log x between the points xs (increasing), held beyond them."""
    if x <= xs[0] or x >= xs[-1]:
        return float(ys[0] if x <= xs[0] else ys[-1])
    i, f = _segment(xs, x)
    return ys[i] + f * (ys[i + 1] - ys[i])


def _segment(xs: tuple[float, ...], x: float) -> tuple[int, float]:
    """(i, f): x lies between xs[i] and xs[i+1] at log-fraction f (xs increasing, x inside)."""
    if len(xs) == 1:
        return 0, 0.0
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(xs) - 2)
    lo, hi = math.log(xs[i]), math.log(xs[i + 1])
    return i, (math.log(x) - lo) / (hi - lo)


@dataclass(frozen=True)
class Curve:
    """Seconds per call against one size `x`; `what` says what x counts."""

    x: tuple[float, ...]
    seconds: tuple[float, ...]
    what: str = ""

    def __post_init__(self) -> None:
        x = _positive_floats(self.x, "curve sizes")
        s = _positive_floats(self.seconds, "curve times")
        if not x or len(x) != len(s):
            raise UserError(f"a curve needs as many times as sizes (at least one), got {len(x)} and {len(s)}")
        if list(x) != sorted(set(x)):
            raise UserError(f"curve sizes must increase, got {list(x)}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "seconds", s)

    def at(self, x: float) -> float:
        """Seconds at size x (see the module docstring for outside the measured range)."""
        if x <= self.x[0]:
            return self._below(x)
        if x >= self.x[-1]:
            return self.seconds[-1] * x / self.x[-1]
        i, f = _segment(self.x, x)
        return math.exp((1 - f) * math.log(self.seconds[i]) + f * math.log(self.seconds[i + 1]))

    def _below(self, x: float) -> float:
        """Seconds at x below the smallest point: on the line through the first two points where
        it has a positive fixed cost and slope, else the smallest point's time."""
        t0 = self.seconds[0]
        if len(self.x) < 2:
            return t0
        per_unit = (self.seconds[1] - t0) / (self.x[1] - self.x[0])
        fixed = t0 - per_unit * self.x[0]
        return fixed + per_unit * x if per_unit > 0 and fixed > 0 else t0

    @property
    def residual(self) -> float | None:
        """Median leave-one-out |predicted/measured − 1| over the inner points (None if < 3)."""
        errs = []
        for i in range(1, len(self.x) - 1):
            pred = Curve(self.x[:i] + self.x[i + 1:], self.seconds[:i] + self.seconds[i + 1:]).at(self.x[i])
            errs.append(abs(pred / self.seconds[i] - 1))
        return statistics.median(errs) if errs else None

    def to_dict(self) -> dict[str, Any]:
        return {"x": list(self.x), "seconds": list(self.seconds), "what": self.what,
                "residual": self.residual}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Curve:
        return cls(tuple(d["x"]), tuple(d["seconds"]), str(d.get("what", "")))


@dataclass(frozen=True)
class Grid:
    """Seconds per call over a grid of sizes: `axes` names them, `points[i]` are the measured
    values of axis i (increasing), `seconds` the times in row-major order (last axis fastest).
    `growth[i]` is how time grows with axis i beyond its largest point (1: linearly)."""

    axes: tuple[str, ...]
    points: tuple[tuple[float, ...], ...]
    seconds: tuple[float, ...]
    growth: tuple[float, ...] = ()
    what: str = ""

    def __post_init__(self) -> None:
        points = tuple(_positive_floats(p, f"grid axis {a!r}") for a, p in zip(self.axes, self.points, strict=False))
        if len(points) != len(self.axes) or not points:
            raise UserError(f"a grid needs one list of points per axis {list(self.axes)}")
        for a, p in zip(self.axes, points, strict=True):
            if not p or list(p) != sorted(set(p)):
                raise UserError(f"grid axis {a!r} must increase, got {list(p)}")
        seconds = _positive_floats(self.seconds, "grid times")
        if len(seconds) != math.prod(len(p) for p in points):
            raise UserError(f"grid of {[len(p) for p in points]} points needs "
                            f"{math.prod(len(p) for p in points)} times, got {len(seconds)}")
        growth = tuple(float(g) for g in self.growth) or (1.0,) * len(points)
        if len(growth) != len(points):
            raise UserError(f"grid growth needs one exponent per axis, got {list(growth)}")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "seconds", seconds)
        object.__setattr__(self, "growth", growth)

    def _value(self, index: tuple[int, ...]) -> float:
        flat = 0
        for i, p in zip(index, self.points, strict=True):
            flat = flat * len(p) + i
        return self.seconds[flat]

    def at(self, *point: float) -> float:
        """Seconds at `point` (one size per axis): multilinear in log space inside the grid,
        the nearest edge below it, and grown by `growth` beyond it."""
        if len(point) != len(self.axes):
            raise UserError(f"grid over {list(self.axes)} needs {len(self.axes)} sizes, got {len(point)}")
        scale, segments = 1.0, []
        for x, p, g in zip(point, self.points, self.growth, strict=True):
            if x > p[-1]:
                scale *= (x / p[-1]) ** g
            x = min(max(x, p[0]), p[-1])
            segments.append(_segment(p, x))
        log_t = 0.0
        for corner in product((0, 1), repeat=len(segments)):
            weight, index = 1.0, []
            for (i, f), c, p in zip(segments, corner, self.points, strict=True):
                if len(p) == 1:
                    if c:
                        weight = 0.0
                    index.append(0)
                    continue
                weight *= f if c else 1 - f
                index.append(i + c)
            if weight:
                log_t += weight * math.log(self._value(tuple(index)))
        return scale * math.exp(log_t)

    @property
    def residual(self) -> float | None:
        """Median leave-one-out error: each inner point along each axis predicted from its two
        neighbours on that axis (log-linear), against what was measured (None if none)."""
        errs = []
        for index in product(*(range(len(p)) for p in self.points)):
            for axis, p in enumerate(self.points):
                i = index[axis]
                if 0 < i < len(p) - 1:
                    lo = index[:axis] + (i - 1,) + index[axis + 1:]
                    hi = index[:axis] + (i + 1,) + index[axis + 1:]
                    f = (math.log(p[i]) - math.log(p[i - 1])) / (math.log(p[i + 1]) - math.log(p[i - 1]))
                    pred = math.exp((1 - f) * math.log(self._value(lo)) + f * math.log(self._value(hi)))
                    errs.append(abs(pred / self._value(index) - 1))
        return statistics.median(errs) if errs else None

    def to_dict(self) -> dict[str, Any]:
        return {"axes": list(self.axes), "points": [list(p) for p in self.points],
                "seconds": list(self.seconds), "growth": list(self.growth), "what": self.what,
                "residual": self.residual}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        return cls(tuple(d["axes"]), tuple(tuple(p) for p in d["points"]), tuple(d["seconds"]),
                   tuple(d.get("growth", ())), str(d.get("what", "")))
