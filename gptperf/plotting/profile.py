"""The roofline with measurements: each component's predicted and measured point (achieved FLOP/s at its AI)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.plotting import pyplot, save_figure

if TYPE_CHECKING:
    from gptperf.perfmodel.hardware import Hardware


def component_points(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Predicted and measured (AI, FLOP/s) of each comparison row with FLOPs and bytes.

    Predicted FLOP/s = predicted FLOPs / predicted time; measured = predicted FLOPs / measured time
    (the FLOPs are the model's count, so both points sit at the same arithmetic intensity).
    """
    points = []
    for r in rows:
        ai = r.arithmetic_intensity
        if not (ai > 0 and math.isfinite(ai)) or not r.flops > 0:
            continue
        label = f"{r.name} {r.phase}"
        if r.predicted_s > 0:
            points.append({"label": label, "ai": ai, "flops": r.flops / r.predicted_s, "kind": "predicted"})
        if r.measured_s > 0:
            points.append({"label": label, "ai": ai, "flops": r.flops / r.measured_s, "kind": "measured"})
    return points


def plot_profile_roofline(path: str | os.PathLike[str], rows: Iterable[Any], hardware: Hardware, dtype: str,
                          title: str = "") -> Path:
    """Write the roofline of `hardware` for `dtype` with a predicted and a measured point per row."""
    points = component_points(rows)
    peak = hardware.peak(dtype)
    title = f"{title}\nceilings: {hardware.label}"
    try:
        from gptperf.plotting.roofline import RooflinePoint, plot_roofline
    except ImportError:
        return _plot(Path(path), points, peak, hardware.bandwidth, dtype, title)
    return plot_roofline(
        path,
        {f"{dtype} peak": peak},
        {"memory bandwidth": hardware.bandwidth},
        [RooflinePoint(p["label"], p["ai"], p["flops"], kind=p["kind"]) for p in points],
        title=title,
    )


def _plot(path: Path, points: list[dict[str, Any]], peak: float, bandwidth: float, dtype: str,
          title: str) -> Path:
    plt = pyplot()
    ais = [p["ai"] for p in points] or [1.0]
    lo, hi = min(ais + [peak / bandwidth]) / 4, max(ais + [peak / bandwidth]) * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.loglog(xs, [min(peak, bandwidth * x) for x in xs], color="black",
              label=f"roofline: {peak / 1e12:.3g} TFLOP/s ({dtype}), {bandwidth / 1e9:.3g} GB/s")
    labels = sorted({p["label"] for p in points})
    cmap = plt.get_cmap("tab20")
    for i, label in enumerate(labels):
        color = cmap(i % 20)
        pts = {p["kind"]: p for p in points if p["label"] == label}
        if "predicted" in pts and "measured" in pts:
            ax.plot([pts["predicted"]["ai"]] * 2, [pts["predicted"]["flops"], pts["measured"]["flops"]],
                    color=color, lw=0.8)
        for kind, marker in (("predicted", "o"), ("measured", "x")):
            if kind in pts:
                ax.scatter(pts[kind]["ai"], pts[kind]["flops"], color=color, marker=marker,
                           label=label if kind == "measured" else None)
    ax.scatter([], [], color="gray", marker="o", label="○ predicted")
    ax.scatter([], [], color="gray", marker="x", label="× measured")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("FLOP/s")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    return save_figure(fig, path, fmt="png", dpi=120)
