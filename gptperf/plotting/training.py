"""The loss curve of a training run: training loss per step (raw and smoothed) and validation loss."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from gptperf.plotting import pyplot, save_figure


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` steps (the first steps average what there is)."""
    out: list[float] = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss_curve(
    losses: Sequence[float],
    val_losses: Sequence[tuple[int, float]],
    path: str | os.PathLike[str],
    *,
    title: str = "Training loss",
    unit: str = "nats/token",
    note: str | None = None,
) -> Path:
    """Write the loss curve (PNG or SVG by the suffix of `path`) atomically and return the path.

    `losses[i]` is the training loss of step i + 1; `val_losses` are (step, loss) pairs.
    """
    plt = pyplot()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.2, 3.6), dpi=110)
    steps = list(range(1, len(losses) + 1))
    finite = [v for v in losses if math.isfinite(v)]
    if losses:
        ax.plot(steps, losses, color="#9db8e8", linewidth=0.8, label="train (per step)")
        window = max(1, len(losses) // 40)
        if window > 1:
            ax.plot(steps, smooth(losses, window), color="#2f6fdb", linewidth=1.8,
                    label=f"train (mean of {window} steps)")
    if val_losses:
        vs, vl = zip(*val_losses, strict=True)
        ax.plot(vs, vl, "o-", color="#d9480f", linewidth=1.6, markersize=4, label="validation")
        finite += [v for v in vl if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(max(0.0, lo - 0.05 * (hi - lo)), hi + 0.05 * (hi - lo) + 1e-9)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"loss ({unit})")
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(True, color="#e6e9ef", linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)
    if losses or val_losses:
        ax.legend(frameon=False, fontsize=9)
    return save_figure(fig, path, note=note)
