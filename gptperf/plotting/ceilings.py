"""Measured ceilings beside the datasheet's: matmul rate against size per dtype, bandwidth bars."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.plotting import check_plot_path, pyplot, save_figure

if TYPE_CHECKING:
    from gptperf.perfmodel.hardware import Hardware

_COLORS = {"fp64": "#6b4c9a", "fp32": "#2f6fdb", "tf32": "#12a0a0", "bf16": "#d9480f",
           "fp16": "#e8a33d"}


def _peak(datasheet: Hardware | None, dtype: str) -> float | None:
    if datasheet is None:
        return None
    value = getattr(datasheet, "peak_flops", {}).get(dtype)
    return float(value) if value else None


def plot_ceilings(ceilings: dict[str, Any], datasheet: Hardware | None, path: str | os.PathLike[str]) -> Path:
    """Draw `ceilings` (a `Ceilings.to_dict()`) beside a datasheet `Hardware` (or None).

    Left: the measured matmul rate against n for each dtype (solid) and the datasheet's peak
    for the same dtype (dashed). Right: measured copy and saxpy bandwidth beside the datasheet's.
    Written atomically; the format follows the suffix (.png, .svg or .pdf).
    """
    path = check_plot_path(path)
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110,
                                 gridspec_kw={"width_ratios": [2.2, 1]})
    ds_name = getattr(datasheet, "name", None)
    sheet = getattr(datasheet, "source", "datasheet")  # "nominal" for the generic CPU entry
    for dtype, m in ceilings.get("matmul", {}).items():
        points = m.get("points") or []
        if not points:
            continue
        color = _COLORS.get(dtype, "#444444")
        ns = [p["n"] for p in points]
        rates = [p["flops_per_s"] / 1e12 for p in points]
        ax.plot(ns, rates, "o-", color=color, linewidth=1.6, markersize=4,
                label=f"{dtype} measured (best {max(rates):.3g} TFLOP/s)")
        ds = _peak(datasheet, dtype)
        if ds:
            ax.axhline(ds / 1e12, color=color, linestyle="--", linewidth=1.0, alpha=0.8,
                       label=f"{dtype} {sheet} {ds / 1e12:.3g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("matrix size n (n×n×n, FLOPs = 2n³)")
    ax.set_ylabel("TFLOP/s")
    where = ceilings.get("device", "?")
    ax.set_title(f"Matmul rate: measured on {where} vs {sheet} {ds_name or '(none)'}",
                 fontsize=10, loc="left")
    ax.grid(True, which="both", color="#e6e9ef", linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=7.5, ncol=2)

    labels, values, colors = [], [], []
    for name, b in ceilings.get("bandwidth", {}).items():
        labels.append(f"{name}\nmeasured")
        values.append(b["best_bytes_per_s"] / 1e9)
        colors.append("#2f6fdb")
    ds_bw = getattr(datasheet, "bandwidth", None)
    if ds_bw:
        labels.append(f"{sheet}\n{ds_name}")
        values.append(ds_bw / 1e9)
        colors.append("#9aa4b2")
    bars = bx.bar(labels, values, color=colors)
    for bar, value in zip(bars, values, strict=True):
        bx.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{value:,.0f}",
                ha="center", va="bottom", fontsize=8)
    bx.set_ylabel("GB/s (bytes read + written)")
    bx.set_title("Memory bandwidth", fontsize=10, loc="left")
    bx.spines[["top", "right"]].set_visible(False)
    note = f"measured {ceilings.get('measured_at', '')}"
    if ceilings.get("device_type") == "cpu":
        note += f", {ceilings.get('threads')} threads"
    if ceilings.get("quick"):
        note += ", quick sweep"
    return save_figure(fig, path, note=note)
