"""The roofline picture: log-log FLOP/s against arithmetic intensity, with compute ceilings per
dtype, bandwidth slopes, ridge points, and labelled points (predicted and measured) coloured by bound.

    plot_roofline("roofline.png",
                  ceilings=[("bf16 (datasheet)", 989e12), ("fp32", 67e12)],
                  bandwidths=[("HBM 3.35 TB/s", 3.35e12)],
                  points=[RooflinePoint("h.0.mlp.fc", 300.0, 700e12, kind="predicted")],
                  title="gpt2 train on h100-sxm")

matplotlib is imported only when a picture is drawn. PNG or SVG (or PDF) by the path's suffix;
the file is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gptperf.errors import UserError
from gptperf.plotting import check_plot_path, pyplot, save_figure

if TYPE_CHECKING:
    from gptperf.perfmodel.transformer import Prediction

BOUND_COLORS = {"compute": "#c92a2a", "memory": "#1c7ed6", None: "#495057"}
KIND_MARKERS = {"predicted": "o", "measured": "^"}
_OFFSETS = ((4, 3), (4, -9), (-9, 4), (4, 11), (-9, -9))
_CEILING_COLORS = ("#2b2b2b", "#6b4c9a", "#d9480f", "#12a0a0", "#2f6fdb", "#e8a33d")


@dataclass(frozen=True)
class RooflinePoint:
    """One kernel or operation on the roofline. `bound` None: derived from the first ceiling and
    bandwidth (compute if AI >= their ridge)."""

    label: str
    arithmetic_intensity: float
    flops_per_s: float
    kind: str = "predicted"
    bound: str | None = None


def _pairs(items: Mapping[str, float] | Iterable[tuple[str, float]], what: str) -> list[tuple[str, float]]:
    pairs = list(items.items()) if isinstance(items, Mapping) else [tuple(p) for p in items]
    out = []
    for label, value in pairs:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise UserError(f"{what} {label!r} must be a positive number, got {value!r}")
        out.append((str(label), float(value)))
    if not out:
        raise UserError(f"the roofline needs at least one {what}")
    return out


def plot_roofline(
    path: str | os.PathLike[str],
    ceilings: Mapping[str, float] | Sequence[tuple[str, float]],
    bandwidths: Mapping[str, float] | Sequence[tuple[str, float]],
    points: Sequence[RooflinePoint] = (),
    title: str = "",
    *,
    arrows: bool = True,
    max_labels: int = 40,
) -> Path:
    """Draw the roofline and write it to `path` (.png, .svg or .pdf). Returns the path.

    `ceilings`: (label, peak FLOP/s) per compute ceiling, e.g. one per dtype. `bandwidths`:
    (label, bytes/s) per memory slope. `points`: operations placed at (AI, FLOP/s); predicted
    points are circles, measured triangles; with `arrows`, a predicted point is joined to the
    measured point of the same label. Only the `max_labels` heaviest points get a text label.
    """
    path = check_plot_path(path)
    ceilings = _pairs(ceilings, "compute ceiling")
    bandwidths = _pairs(bandwidths, "bandwidth")
    plt = pyplot()

    pts = [p for p in points if p.arithmetic_intensity > 0 and p.flops_per_s > 0
           and math.isfinite(p.arithmetic_intensity) and math.isfinite(p.flops_per_s)]
    ridges = [(c / b, c) for _, c in ceilings for _, b in bandwidths]
    xs = [p.arithmetic_intensity for p in pts] + [r for r, _ in ridges]
    x_lo = min(xs) / 4 if xs else 0.01
    x_hi = max(xs) * 4 if xs else 1e4
    x_lo, x_hi = min(x_lo, 0.05), max(x_hi, 10.0)
    top = max(c for _, c in ceilings)
    ys = [p.flops_per_s for p in pts] + [b * x_lo for _, b in bandwidths]
    y_lo = min(min(ys) / 3, top / 1e4)
    labels = list(dict.fromkeys(p.label for p in pts))
    numbered = len(labels) > 12  # crowded: number the points and list the labels beside the plot
    key_cols = 1 + (len(labels) - 1) // 45 if numbered else 0
    fig, ax = plt.subplots(figsize=(9 + 3.2 * key_cols, 6), dpi=120)
    ax.set_xscale("log")
    ax.set_yscale("log")
    grid = [x_lo * (x_hi / x_lo) ** (i / 200) for i in range(201)]
    for i, (label, peak) in enumerate(ceilings):
        color = _CEILING_COLORS[i % len(_CEILING_COLORS)]
        for j, (_, bw) in enumerate(bandwidths):
            ax.plot(grid, [min(peak, bw * x) for x in grid], color=color, lw=2 - 0.5 * (j > 0),
                    ls="-" if j == 0 else "--",
                    label=f"{label}: {peak / 1e12:.4g} TFLOP/s" if j == 0 else None)
            ridge = peak / bw
            ax.plot([ridge], [peak], marker="D", color=color, ms=6, zorder=4)
            ax.annotate(f"ridge {ridge:.3g} FLOP/B", (ridge, peak), textcoords="offset points",
                        xytext=(-4, 8), ha="right", fontsize=7, color=color)
    for blabel, bw in bandwidths:
        x0 = x_lo * 1.5
        ax.annotate(f"{blabel}: {bw / 1e9:.4g} GB/s", (x0, bw * x0), textcoords="offset points",
                    xytext=(0, 6), fontsize=8, rotation=0, color="#333333")
    first_ridge = ceilings[0][1] / bandwidths[0][1]
    by_label: dict[str, dict[str, RooflinePoint]] = {}
    ranked = sorted(pts, key=lambda p: p.flops_per_s, reverse=True)
    labelled = {id(p) for p in ranked[:max_labels]} if not numbered else {id(p) for p in pts}
    # neighbours along the x axis get staggered label offsets so that crowded clusters stay legible
    offsets = {id(p): _OFFSETS[i % len(_OFFSETS)]
               for i, p in enumerate(sorted(pts, key=lambda p: p.arithmetic_intensity))}
    number = {label: i + 1 for i, label in enumerate(labels)}
    for p in pts:
        b = p.bound or ("compute" if p.arithmetic_intensity >= first_ridge else "memory")
        ax.scatter([p.arithmetic_intensity], [p.flops_per_s], c=BOUND_COLORS.get(b, BOUND_COLORS[None]),
                   marker=KIND_MARKERS.get(p.kind, "s"), s=36, zorder=5, edgecolors="white", linewidths=0.5)
        if id(p) in labelled:
            text = str(number[p.label]) if numbered else p.label
            ax.annotate(text, (p.arithmetic_intensity, p.flops_per_s), textcoords="offset points",
                        xytext=offsets[id(p)], fontsize=6.5)
        by_label.setdefault(p.label, {})[p.kind] = p
    if numbered:
        rows = [f"{number[label]:>3}  {label}" for label in labels]
        per_col = -(-len(rows) // key_cols)
        for c in range(key_cols):
            fig.text(1 - (key_cols - c) * 3.1 / (9 + 3.2 * key_cols), 0.95,
                     "\n".join(rows[c * per_col:(c + 1) * per_col]), va="top", ha="left",
                     fontsize=6.5, family="monospace")
    if arrows:
        for pair in by_label.values():
            if "predicted" in pair and "measured" in pair:
                a, m = pair["predicted"], pair["measured"]
                ax.annotate("", (m.arithmetic_intensity, m.flops_per_s),
                            (a.arithmetic_intensity, a.flops_per_s),
                            arrowprops=dict(arrowstyle="->", color="#868e96", lw=0.8))
    # legend entries for the encodings
    for b in ("compute", "memory"):
        ax.scatter([], [], c=BOUND_COLORS[b], marker="o", label=f"{b}-bound")
    kinds = sorted({p.kind for p in pts})
    for k in kinds:
        ax.scatter([], [], c="#adb5bd", marker=KIND_MARKERS.get(k, "s"), label=k)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, top * 3)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attainable / achieved FLOP/s")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path, layout={"rect": (0, 0, 9 / (9 + 3.2 * key_cols), 1)})


def plot_prediction(path: str | os.PathLike[str], prediction: Prediction, *, view: str = "op",
                    phase: str | None = None, title: str | None = None) -> Path:
    """The roofline of a perfmodel Prediction: one point per op (view 'op', layer 0 and the
    model-level ops) or per component ('component'), at its roofline-attainable FLOP/s."""
    hw, dtype = prediction.hardware, prediction.workload.dtype
    ceilings = [(f"{dtype} ({hw.source})", hw.peak(dtype))]
    if "fp32" in hw.peak_flops and dtype != "fp32" and dtype != "fp64":
        ceilings.append((f"fp32 vector ({hw.source})", hw.peak("fp32")))
    points = []
    if view == "component":
        for (comp, ph), g in prediction.by_component().items():
            if phase and ph != phase:
                continue
            t = g.time_s
            points.append(RooflinePoint(f"{comp} {ph}", g.arithmetic_intensity, g.flops / t if t else 0,
                                        bound=g.bound))
    else:
        for o in prediction.ops:
            if (phase and o.phase != phase) or (o.layer not in (None, 0)):
                continue
            points.append(RooflinePoint(f"{o.name} {o.phase}", o.arithmetic_intensity,
                                        o.attainable_flops, bound=o.bound))
    w = prediction.workload
    title = title or (f"{prediction.config.name} {w.kind} B={w.batch} seq={w.seq} {dtype} — "
                      f"predicted on {hw.label}")
    return plot_roofline(path, ceilings, [(f"memory ({hw.source})", hw.bandwidth)], points, title)
