"""Pictures of the inference study: tokens/s against context (KV cache vs recompute), the decode
step on the roofline across batch sizes, and the prefill/decode split of a request.

Each picture is written as PNG and SVG, atomically; matplotlib is imported only to draw.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# roofline.f(...): looked up at each call
from gptperf.plotting import pyplot, roofline, write_figure

if TYPE_CHECKING:
    from gptperf.inference.sweep import InferenceResult

FORMATS: tuple[str, ...] = ("png", "svg")
PICTURES = ("context", "roofline", "split")  # each file named inference-<model>-<picture>.<format>


def _stem(folder: Path, model: str, picture: str) -> Path:
    return folder / f"inference-{model}-{picture}"


def picture_files(model: str) -> list[str]:
    """The names of the files `plot_all` may write for a model named `model`."""
    return [_stem(Path(), model, p).with_suffix(f".{fmt}").name for p in PICTURES for fmt in FORMATS]


def _save(fig: Any, stem: Path) -> list[str]:
    paths = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        write_figure(fig, path, fmt)
        paths.append(str(path))
    pyplot().close(fig)
    return paths


def _subtitle(r: InferenceResult) -> str:
    return f"measured on {r.device_name} ({r.dtype}); predicted with {r.hardware_label}"


def plot_context(r: InferenceResult, stem: Path) -> list[str]:
    """Tokens/s against context length, batch 1: with the KV cache and recomputing, measured and
    predicted."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for points, label, color in ((r.cache, "KV cache", "#1c7ed6"), (r.recompute, "recompute", "#c92a2a")):
        xs = [p.seq for p in points]
        measured = [(p.seq, p.tokens_per_s) for p in points if p.tokens_per_s]
        if measured:
            ax.plot(*zip(*measured, strict=True), marker="o", color=color, label=f"{label}, measured")
        ax.plot(xs, [p.predicted_tokens_per_s for p in points], ls="--", color=color, alpha=0.8,
                label=f"{label}, predicted")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length L (tokens)")
    ax.set_ylabel("decode tokens/s (batch 1)")
    ax.set_title(f"{r.config.name}: one new token per step, cache O(L) vs recompute O(L²)\n{_subtitle(r)}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, stem)


def plot_batch_roofline(r: InferenceResult, stem: Path) -> list[str]:
    """Decode steps across batch sizes on the roofline (shared picture), predicted and measured."""
    hw = r.hardware
    peak = hw["peak_flops"][r.dtype]
    points = []
    for p in r.batches:
        label = f"B={p.batch}"
        points.append(roofline.RooflinePoint(label, p.arithmetic_intensity, p.flops / p.predicted_s, kind="predicted"))
        if p.achieved_flops:
            points.append(roofline.RooflinePoint(label, p.arithmetic_intensity, p.achieved_flops, kind="measured"))
    title = (f"{r.config.name} decode step at context {r.batch_context}, batch "
             f"{r.batches[0].batch if r.batches else '—'}…{r.batches[-1].batch if r.batches else '—'}\n"
             f"{_subtitle(r)}")
    paths = []
    for fmt in FORMATS:
        paths.append(str(roofline.plot_roofline(
            stem.with_suffix(f".{fmt}"), [(f"{r.dtype} ({hw['source']})", peak)],
            [(f"memory ({hw['source']})", hw["bandwidth"])], points, title,
        )))
    return paths


def plot_split(r: InferenceResult, stem: Path) -> list[str]:
    """Time of one request per prompt length: prefill, then decoding `new_tokens` tokens."""
    plt = pyplot()
    rows = r.split()
    fig, ax = plt.subplots(figsize=(8, 0.6 * max(2, 2 * len(rows)) + 1.5), dpi=120)
    labels, y = [], 0
    for row in rows:
        for kind, pre, dec in (("measured", row["prefill_s"], row["decode_s"]),
                               ("predicted", row["predicted_prefill_s"], row["predicted_decode_s"])):
            hatch = "//" if kind == "predicted" else None
            if pre is not None and dec is not None:
                ax.barh(y, pre * 1e3, color="#f59f00", hatch=hatch, edgecolor="white")
                ax.barh(y, dec * 1e3, left=pre * 1e3, color="#1c7ed6", hatch=hatch, edgecolor="white")
            labels.append(f"P={row['prompt']} {kind}")
            y += 1
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    from matplotlib.patches import Patch  # deferred: loads matplotlib

    handles = [Patch(color="#f59f00", label="prefill (P tokens)"),
               Patch(color="#1c7ed6", label=f"decode ({r.new_tokens} tokens)"),
               Patch(facecolor="white", edgecolor="#495057", hatch="//", label="predicted")]
    ax.set_xlabel("time (ms)")
    ax.set_title(f"{r.config.name}: prefill vs decode of one request (batch 1)\n{_subtitle(r)}", fontsize=9)
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.25)
    fig.tight_layout()
    return _save(fig, stem)


def plot_all(result: InferenceResult, folder: str | os.PathLike[str]) -> dict[str, str]:
    """Draw every picture of `result` into `folder`; returns {picture: path of the PNG}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    name = result.config.name
    if result.cache:
        out["tokens_per_s_vs_context"] = plot_context(result, _stem(folder, name, "context"))[0]
    if result.batches:
        out["decode_roofline_by_batch"] = plot_batch_roofline(result, _stem(folder, name, "roofline"))[0]
    if result.prefill:
        out["prefill_decode_split"] = plot_split(result, _stem(folder, name, "split"))[0]
    return out
