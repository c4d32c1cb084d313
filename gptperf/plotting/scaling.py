"""Pictures of a scaling study: speedup against ideal, efficiency, and the lecture's performance
space — throughput over processes × per-process batch as a heatmap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.plotting import pyplot, save_figure

if TYPE_CHECKING:
    from gptperf.scaling.results import ScalingStudy

MEASURED_COLOR = "#2f6fdb"
PREDICTED_COLOR = "#d9480f"


def _style(ax: Any) -> None:
    ax.grid(True, color="#e6e9ef", linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)


def plot_speedup(study: ScalingStudy, path: str | os.PathLike[str]) -> Path:
    """Speedup S(p) (strong: T(1)/T(p); weak: p·T(1)/T(p)) measured and predicted, with the
    ideal S = p."""
    plt = pyplot()
    pts = study.points
    procs = [p.procs for p in pts]
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    ax.plot(procs, procs, "--", color="#98a2b3", linewidth=1.2, label="ideal S = p")
    ax.plot(procs, [p.speedup for p in pts], "o-", color=MEASURED_COLOR, label="measured")
    ax.plot(procs, [p.predicted_speedup for p in pts], "s--", color=PREDICTED_COLOR, markersize=5,
            label="predicted (calibrated)")
    kind = "strong: T(1)/T(p)" if study.spec.mode == "strong" else "weak: p·T(1)/T(p)"
    ax.set_xlabel("processes p")
    ax.set_ylabel(f"speedup ({kind})")
    ax.set_xticks(procs)
    ax.set_title(f"{study.spec.mode.capitalize()} scaling — {study.spec.config.name}", fontsize=11, loc="left")
    _style(ax)
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, Path(path), note=f"{study.device}, {study.backend or 'one process'}")


def plot_efficiency(study: ScalingStudy, path: str | os.PathLike[str]) -> Path:
    """Parallel efficiency S(p)/p (weak: T(1)/T(p)), measured and predicted, ideal 1."""
    plt = pyplot()
    pts = study.points
    procs = [p.procs for p in pts]
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    ax.axhline(1.0, linestyle="--", color="#98a2b3", linewidth=1.2, label="ideal")
    ax.plot(procs, [p.efficiency for p in pts], "o-", color=MEASURED_COLOR, label="measured")
    ax.plot(procs, [p.predicted_efficiency for p in pts], "s--", color=PREDICTED_COLOR, markersize=5,
            label="predicted (calibrated)")
    ax.set_xlabel("processes p")
    ax.set_ylabel("efficiency S(p)/p" if study.spec.mode == "strong" else "weak efficiency T(1)/T(p)")
    ax.set_xticks(procs)
    ax.set_ylim(0, max(1.1, *(p.efficiency * 1.1 for p in pts)))
    ax.set_title(f"{study.spec.mode.capitalize()}-scaling efficiency", fontsize=11, loc="left")
    _style(ax)
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, Path(path), note=f"{study.device}, {study.backend or 'one process'}")


def plot_space(study: ScalingStudy, path: str | os.PathLike[str]) -> Path:
    """The performance space: measured throughput (tokens/s) over processes × per-process batch."""
    plt = pyplot()
    procs = sorted({c.procs for c in study.space})
    batches = sorted({c.per_process_batch for c in study.space})
    value = {(c.procs, c.per_process_batch): c.tokens_per_s for c in study.space}
    grid = [[value.get((p, b), float("nan")) for p in procs] for b in batches]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(procs), 1.4 + 0.6 * len(batches)), dpi=110)
    im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
    finite = [v for row in grid for v in row if v == v]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v == v:  # dark text on viridis' light end, light text on its dark end
                light = (v - lo) / (hi - lo) > 0.6 if hi > lo else False
                ax.text(j, i, f"{v:,.0f}", ha="center", va="center", fontsize=8,
                        color="black" if light else "white")
    ax.set_xticks(range(len(procs)), [str(p) for p in procs])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("processes")
    ax.set_ylabel("per-process batch")
    ax.set_title("Performance space: tokens/s (measured)", fontsize=10, loc="left")
    fig.colorbar(im, ax=ax, label="tokens/s")
    return save_figure(fig, Path(path))


PICTURES = ("speedup.png", "efficiency.png", "space.png")  # plot_scaling's files, in its order


def plot_scaling(study: ScalingStudy, out_dir: str | os.PathLike[str], prefix: str = "") -> list[Path]:
    """All three pictures into `out_dir` (`PICTURES`, each name after `prefix`)."""
    out = Path(out_dir)
    return [plot(study, out / f"{prefix}{name}")
            for plot, name in zip((plot_speedup, plot_efficiency, plot_space), PICTURES, strict=True)]
