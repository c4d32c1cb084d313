"""Predicted against measured step time of a validation sweep (`gptperf validate`): log-log, the
y = x line with ±3% and ±8% bands, one colour per workload kind, one marker per plan; the
roofline bound of each case drawn faintly beside it, for what the calibration improves on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gptperf.format import percent
from gptperf.plotting import pyplot, save_figure

KIND_COLORS = {"train": "#d9480f", "forward": "#2f6fdb", "prefill": "#12a0a0",
               "decode": "#6b4c9a", "decode_nocache": "#e8a33d"}
MODE_MARKERS = {"eager": "o", "compiled": "s", "cuda_graph": "^"}
BANDS = ((0.08, "#ced4da", "±8%"), (0.03, "#868e96", "±3%"))
LABEL_ABOVE = 0.08  # cases further off than this carry their name


def plot_validation(result: Any, path: str | os.PathLike[str]) -> Path:
    """Draw `result` (a `gptperf.validate.ValidationResult`) to `path`, atomically; the format
    follows the suffix (.png, .svg or .pdf). Returns the path."""
    from matplotlib.lines import Line2D  # deferred: loads matplotlib

    path = Path(path)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=120)
    points = list(result.points)
    # the calibrated points set the view; a roofline bound far off it is left out of it
    values = [v * 1e3 for p in points for v in (p.measured_s, p.expected_s)]
    lo, hi = (min(values) / 2, max(values) * 2) if values else (0.1, 100.0)

    xs = [lo, hi]
    for band, color, label in BANDS:  # y = x·(1 ± band): the targets' corridors
        ax.fill_between(xs, [x * (1 - band) for x in xs], [x * (1 + band) for x in xs],
                        color=color, alpha=0.5, lw=0, label=f"{label} of the prediction")
    ax.plot(xs, xs, color="#212529", lw=1, label="measured = predicted")

    for p in points:
        color = KIND_COLORS.get(p.kind, "#495057")
        marker = MODE_MARKERS.get(p.plan.mode, "o")
        if p.roofline_s:
            ax.scatter(p.roofline_s * 1e3, p.measured_s * 1e3, s=14, marker=marker,
                       facecolors="none", edgecolors=color, alpha=0.35, lw=0.8)
        ax.scatter(p.expected_s * 1e3, p.measured_s * 1e3, s=36, marker=marker, color=color,
                   edgecolors="white", lw=0.5, zorder=3)
        if p.error > LABEL_ABOVE:
            ax.annotate(p.case, (p.expected_s * 1e3, p.measured_s * 1e3), fontsize=5.5,
                        xytext=(4, -3), textcoords="offset points", color="#343a40")

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("predicted step time (ms)")
    ax.set_ylabel("measured step time (ms, median)")
    st = result.stats
    ax.set_title(f"gptperf validate on {result.device_name} ({'quick' if result.quick else 'full'} "
                 f"sweep, {st.n} cases): |measured/predicted − 1| median {percent(st.median)}, "
                 f"p90 {percent(st.p90)}, max {percent(st.max)}\n{result.calibration.label}",
                 fontsize=8)
    ax.grid(True, which="both", alpha=0.25)

    kinds = [k for k in KIND_COLORS if any(p.kind == k for p in points)]
    modes = [m for m in MODE_MARKERS if any(p.plan.mode == m for p in points)]
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="", marker="o", color=KIND_COLORS[k], label=k) for k in kinds]
    handles += [Line2D([], [], ls="", marker=MODE_MARKERS[m], color="#495057",
                       label=m.replace("_", " ")) for m in modes]
    if any(p.roofline_s for p in points):
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none",
                              color="#495057", alpha=0.5, label="roofline bound (x) instead, where in view"))
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    return save_figure(fig, path)
