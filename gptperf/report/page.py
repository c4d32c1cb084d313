"""The report page from report.json: one section per question, every number with unit and source."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gptperf.report.html import (
    Html,
    cell,
    esc,
    fmt,
    kpi,
    kv_table,
    note,
    page,
    picture,
    pre,
    section,
    source_chip,
    table,
    tag,
    value,
)

# (section id, navigation label): the page's order. Tests and the browser check rely on the ids.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("device", "Device & ceilings"),
    ("model", "Model"),
    ("roofline", "Roofline"),
    ("operations", "Operations"),
    ("metrics", "Metrics"),
    ("inference", "KV cache & batch"),
    ("training", "Training"),
    ("samples", "Samples & scores"),
    ("reproduce", "Reproduce"),
    ("stages", "Stages"),
)


class Doc:
    """report.json with helpers: a stage's data, its failure, where numbers were measured."""

    def __init__(self, doc: dict[str, Any], folder: Path) -> None:
        self.doc = doc
        self.folder = folder
        self.settings = doc.get("settings", {})
        self.env = doc.get("environment", {})
        self.measured = f"measured on {self.settings.get('device_name', '?')}"

    def stage(self, name: str) -> dict[str, Any] | None:
        st = self.doc.get("stages", {}).get(name)
        return st.get("data") if st and st.get("status") == "ok" else None

    def failure(self, *names: str) -> str | None:
        """One line for the first of `names` that did not give its numbers, else None."""
        for name in names:
            st = self.doc.get("stages", {}).get(name)
            if st is None:
                return f"stage '{name}' did not run in this report"
            if st.get("status") == "failed":
                return f"stage '{name}' failed: {st.get('error')}"
            if st.get("status") != "ok":
                return f"stage '{name}' did not finish ({st.get('status')})"
        return None

    def picture(self, name: str, alt: str, caption: Any = None) -> Html:
        rel = self.doc.get("pictures", {}).get(name)
        if not rel or not (self.folder / rel).is_file():
            return Html("")
        return picture(self.folder / rel, alt, caption=caption, id_=f"pic-{name}")


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


# --- sections -------------------------------------------------------------------------------


def device_section(d: Doc) -> Html:
    data = d.stage("device")
    env = d.env
    s = d.settings
    rows = [
        ("device", tag("span", s.get("device_name"), class_="num")),
        ("torch", f"{env.get('torch')} (CUDA {env.get('cuda')})" if env.get("cuda") else env.get("torch")),
        ("CPU", f"{env.get('cpu')} · {env.get('cpu_threads')} torch threads"),
        ("gptperf", f"{env.get('gptperf')} (commit {env.get('commit') or 'unknown'})"),
        ("host · time", f"{env.get('hostname')} · {env.get('time_utc')}"),
        ("precision", f"{s.get('dtype')}" + (" · torch.compile" if s.get("compile") else " · eager")),
    ]
    load = _get(d.doc, "machine_load", "start") or {}
    if load.get("threading_env"):
        rows.append(("threading", " ".join(f"{k}={v}" for k, v in load["threading_env"].items())))
    busy = None
    if load.get("load_average") and load.get("cores"):
        one, cores = load["load_average"][0], load["cores"]
        rows.append(("load average at start", f"{one:.2f} (1 min) on {cores} cores"))
        if s.get("device_type") == "cpu" and one > 0.5 * cores:
            busy = note(f"The machine was busy when this report started (load average {one:.1f} "
                        f"on {cores} cores): other processes competed for the cores torch uses, "
                        "so CPU times on this page are slower, and noisier, than on an idle "
                        "machine (OpenMP threads that wait for a descheduled peer can make a "
                        "step many times slower; OMP_WAIT_POLICY=PASSIVE softens that).", "warn")
    failed = d.failure("device")
    if not data:
        return section("device", "Device and ceilings", kv_table(rows),
                       note(failed or "no ceilings", "error"))
    measured_at = _get(data, "ceilings", "measured_at")
    rows.append(("ceilings measured", f"{measured_at} by gptperf ceilings"
                 + (", cached" if data.get("ceilings_cached") else "")
                 + (", quick sweep" if _get(data, "ceilings", "quick") else "")))
    sheet = _get(data, "datasheet", "name")
    rows.append(("datasheet", f"{sheet}: {_get(data, 'datasheet', 'notes')}" if sheet
                 else "no datasheet entry for this device"))
    body: list[Any] = [
        busy,
        tag("div", kv_table(rows), ceilings_table(data, d), class_="grid2"),
        d.picture("ceilings", "measured ceilings beside the datasheet",
                  "Matmul rate against size per dtype, and bandwidth: measured (solid) beside "
                  "the datasheet (dashed)."),
    ]
    return section("device", "Device and ceilings", body,
                   lead="Where every number below was measured, and what this machine can do at "
                        "best: ceilings measured here beside the datasheet's.")


def ceilings_table(data: dict[str, Any], d: Doc) -> Html:
    """Measured ceilings beside datasheet ones, whatever keys both documents share."""
    measured = data.get("ceilings") or {}
    sheet = data.get("datasheet") or {}
    rows = []
    for key, label, unit in _CEILING_ROWS:
        m, ds = _ceiling_value(measured, key), _ceiling_value(sheet, key)
        if m is None and ds is None:
            continue
        ratio = m / ds if (m is not None and ds) else None
        rows.append([label, cell(m, unit), cell(ds, unit),
                     cell(None if ratio is None else 100 * ratio, "%")])
    if not rows:
        return note("no ceilings to show", "warn")
    name = _get(data, "datasheet", "name", default="")
    return table(["ceiling", th("measured", d.measured), th("datasheet", f"datasheet {name}"),
                  th("ratio")], rows, numeric=[False, True, True, True],
                 caption="ratio = measured / datasheet")


_CEILING_ROWS: tuple[tuple[str, str, str], ...] = (
    ("bandwidth", "memory bandwidth", "B/s"),
    ("fp32", "fp32 matmul", "FLOP/s"),
    ("tf32", "tf32 matmul", "FLOP/s"),
    ("bf16", "bf16 matmul", "FLOP/s"),
    ("fp16", "fp16 matmul", "FLOP/s"),
    ("fp64", "fp64 matmul", "FLOP/s"),
    ("launch", "launch floor", "s"),
)


def _ceiling_value(doc: dict[str, Any], key: str) -> float | None:
    """A ceiling from `Ceilings.to_dict()` (measured) or `Hardware.to_dict()` (datasheet)."""
    if key == "bandwidth":
        v = doc.get("bandwidth_bytes_per_s", doc.get("bandwidth"))
    elif key == "launch":
        v = doc.get("launch_latency_s")
    else:
        v = (doc.get("peak_flops") or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def model_section(d: Doc) -> Html:
    s = d.settings
    config = s.get("config", {})
    rows = [(k, str(config.get(k))) for k in
            ("name", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "attention")]
    failed = d.failure("model")
    data = d.stage("model")
    if not data:
        return section("model", "Model summary", kv_table(rows), note(failed or "no data", "error"))
    params = data["parameters"]
    rows += [
        ("parameters", value(params["total"], "", "model")),
        ("without embeddings", value(params["without_embeddings"], "", "model")),
        ("in matmuls (12·L·C² + V·C)", value(params["matmul"], "", "model")),
    ]
    preds = data["predictions"]
    train = preds.get("train")
    body: list[Any] = []
    if train:
        conv_rows = [[tag("code", name), cell(c["flops_per_token"], "FLOP"),
                      c.get("formula", "")]
                     for name, c in train["flops_per_token"].items()]
        w = train["workload"]
        body.append(tag("div", kv_table(rows), tag("div",
            tag("h3", f"Model FLOPs per trained token, T = {w['seq']} (forward + backward)"),
            table(["convention", th("FLOPs / token", "model"), "formula"], conv_rows,
                  numeric=[False, True, False]),
            tag("p", "MFU is only comparable under one convention; gptperf's own counts every "
                     "predicted operation (causal attention at the causal count).", class_="lead")),
            class_="grid2"))
    else:
        body.append(kv_table(rows))
    hw = data.get("hardware_label", "")
    pred_rows = []
    for kind, p in preds.items():
        t, w = p["totals"], p["workload"]
        mem = p.get("memory", {})
        pred_rows.append([tag("code", kind), f"B={w['batch']}, {'L' if 'decode' in kind else 'T'}={w['seq']}",
                          cell(t["flops"], "FLOP"), cell(t["bytes"], "B"),
                          cell(t["arithmetic_intensity"], "FLOP/B"), cell(t["time_s"], "s"),
                          cell(t["tokens_per_s"], "tokens/s"), cell(mem.get("total"), "B")])
    body += [tag("h3", "Predicted cost of each measured step"),
             table(["workload", "shape", "FLOPs", "bytes moved", "intensity", "time",
                    "throughput", "peak memory"], pred_rows, sortable=True, id_="predictions",
                   numeric=[False, False, True, True, True, True, True, True],
                   caption=Html(f"Performance model on {esc(hw)} ") + source_chip("model (predicted)"))]
    return section("model", "Model summary", body,
                   lead="The shape of the GPT, its parameters and FLOPs per token in each "
                        "convention, and the predicted cost of the steps measured below (exact "
                        "arithmetic over the config, placed on this machine's roofline).")


def training_section(d: Doc) -> Html:
    failed = d.failure("train")
    data = d.stage("train")
    if not data:
        return section("training", "Training run", failed=failed or "no training data")
    final_val = data.get("final_val_loss")
    rows = [
        ("data", data.get("data")),
        ("steps", f"{data.get('steps'):,} optimizer steps of {data.get('tokens_per_step'):,} tokens "
                  f"(batch {_get(data, 'config', 'batch')} × seq {_get(data, 'config', 'seq')}), "
                  f"time budget {fmt(data.get('time_budget_s'), 's')}"),
        ("final validation loss", value(final_val, "nats", d.measured)),
        ("first → last training loss",
         f"{_first(data.get('losses')):.3f} → {_last(data.get('losses')):.3f} nats/token"
         if data.get("losses") else "—"),
        ("median time per step", value(data.get("median_step_time_s"), "s", d.measured)),
        ("throughput", value(data.get("tokens_per_s"), "tokens/s", d.measured)),
        ("wall time", value(data.get("wall_time_s"), "s", d.measured)),
    ]
    if data.get("compile_time_s"):
        rows.append(("compilation", value(data.get("compile_time_s"), "s", d.measured)))
    if data.get("checkpoint"):
        rows.append(("checkpoint", tag("code", data["checkpoint"])))
    body = [tag("div", d.picture("loss", "loss curve",
                                 "Training loss per step and validation loss, nats per token "
                                 "(a byte-level model: ln 256 = 5.55 at the start)."),
                kv_table(rows), class_="grid2")]
    for text in data.get("notes") or []:
        body.append(note(text))
    return section("training", "Training run", body,
                   lead="A short run on the embedded corpus (Python's own documentation topics, "
                        "one token per byte), as many steps as fit the time budget.")


def _first(xs: list[float]) -> float:
    return xs[0] if xs else math.nan


def _last(xs: list[float]) -> float:
    return xs[-1] if xs else math.nan


def samples_section(d: Doc) -> Html:
    failed = d.failure("train", "samples")
    data = d.stage("samples")
    if not data:
        return section("samples", "Samples and scores", failed=failed or "no samples")
    sample = data["sample"]
    body: list[Any] = [
        tag("h3", "A sample"),
        tag("p", f"{sample['tokens']} new tokens after the prompt {sample['prompt']!r}, temperature "
                 f"{sample['temperature']}, seed {sample['seed']}, KV cache on "
                 f"({fmt(sample.get('wall_s'), 's')} on {d.settings.get('device_name')}, "
                 "first run, not a benchmark).", class_="lead"),
        pre(sample["text"], "sample"),
    ]
    if sample.get("tokens_outside_bytes"):
        body.append(note(f"{sample['tokens_outside_bytes']} sampled tokens lie outside the byte "
                         "range of the corpus and are shown as '?'", "warn"))
    ranking = data.get("ranking", [])
    scores = sorted(data.get("scores", []),
                    key=lambda sc: ranking.index(sc["text"]) if sc["text"] in ranking else 99)
    rows = []
    for rank, sc in enumerate(scores, 1):
        n = sc.get("num_tokens") or 1
        rows.append([cell(rank), tag("code", sc["text"]), cell(sc["num_tokens"]),
                     cell(sc["logprob"], "nats"), cell(sc["log10prob"]),
                     cell(-sc["logprob"] / n, "nats")])
    body += [
        tag("h3", "The lecture's sentences, by the chain rule"),
        tag("p", "P(x₁:ₙ) = P(x₁ | start) · P(x₂ | start, x₁) ··· P(xₙ | start, x₍<ₙ₎), the start "
                 f"context being {data['start']['text']!r}; log-probabilities in nats "
                 f"(natural log), {d.measured.replace('measured', 'computed')}.", class_="lead"),
        table(["rank", "sentence", "tokens", "log P", "log₁₀ P", "nats per token"], rows,
              sortable=True, id_="scores", numeric=[True, False, True, True, True, True]),
    ]
    return section("samples", "Samples and scores", body)


def th(label: str, source: str | None = None) -> Html:
    """A column header with the source of its numbers under it."""
    return Html(esc(label) + (tag("br") + source_chip(source, short=True) if source else ""))


_WORKLOAD_TEXT = {
    "train": "forward + backward + AdamW",
    "prefill": "prompt fills the KV cache",
    "decode": "one new token, KV cache",
    "decode_nocache": "one new token, recompute",
}


def _shape(kind: str, w: dict[str, Any]) -> str:
    return f"B={w['batch']}, {'L' if kind.startswith('decode') else 'T'}={w['seq']}"


def _mfu(result: dict[str, Any], against: str) -> float | None:
    for m in result.get("mfu", []):
        if m.get("against") == against:
            return 100 * m["mfu"]
    return None


def _peak_memory(result: dict[str, Any]) -> tuple[float | None, str]:
    m = _get(result, "memory", "measured") or {}
    if m.get("allocated_bytes") is not None:
        return m["allocated_bytes"], "torch.cuda.max_memory_allocated"
    return m.get("peak_rss_bytes"), "peak RSS of the whole process"


def metrics_section(d: Doc) -> Html:
    failed = d.failure("bench")
    data = d.stage("bench")
    if not data:
        return section("metrics", "Time, throughput, FLOP/s, MFU, memory", failed=failed or "no data")
    results = data["results"]
    src = d.measured
    rows = []
    for kind, r in results.items():
        t = r["time_per_step"]["total"]
        pred = (r.get("predictions") or [{}])[0]
        peak, _ = _peak_memory(r)
        util = _get(r, "utilization", "mean_percent")
        rows.append([
            tag("code", kind), _shape(kind, r["workload"]),
            cell(r["step_time_s"], "s"),
            f"{fmt(t['min_s'], 's')} – {fmt(t['max_s'], 's')} ({t['repeats']}×)",
            cell(r["throughput"]["tokens_per_s"], "tokens/s"),
            cell(r["flops"]["achieved_flops_per_s"], "FLOP/s"),
            cell(_mfu(r, "measured"), "%"), cell(_mfu(r, "datasheet"), "%"),
            cell(util, "%"), cell(peak, "B"),
            cell(pred.get("step_time_s"), "s"), cell(pred.get("measured_over_predicted"), "x"),
        ])
    body: list[Any] = [
        table([th("step"), th("shape"), th("time per batch", src), th("min – max (repeats)"),
               th("throughput", src), th("achieved FLOP/s", src), th("MFU vs measured peak"),
               th("MFU vs datasheet"), th("utilization", src), th("peak memory", src),
               th("predicted time", "model"), th("measured / predicted")],
              rows, sortable=True, id_="metrics-table",
              numeric=[False, False, True, False, True, True, True, True, True, True, True, True],
              caption="Median of the timed steps after warm-up (synchronised). Achieved FLOP/s = "
                      "the performance model's model FLOPs of the step / measured time; MFU in "
                      "gptperf's convention."),
    ]
    train = results.get("train")
    if train:
        phases = train["time_per_step"].get("phases", {})
        total = train["step_time_s"] or 1
        phase_rows = [[tag("code", ph), cell(v["median_s"], "s"), _bar(v["median_s"] / total)]
                      for ph, v in phases.items()]
        mem_pred = _get(train, "memory", "predicted") or {}
        peak, how = _peak_memory(train)
        parts = ("weights", "weight_copies", "gradients", "optimizer_state", "activations",
                 "kv_cache", "logits")
        ptotal = mem_pred.get("total") or 1
        mem_rows = [[part.replace("_", " "), cell(mem_pred.get(part), "B"),
                     _bar((mem_pred.get(part) or 0) / ptotal)] for part in parts
                    if mem_pred.get(part)]
        mem_rows.append([tag("b", f"predicted peak (at {mem_pred.get('peak_at', '?')})"),
                         cell(mem_pred.get("total"), "B"), ""])
        mem_rows.append([tag("b", f"measured: {how}"), cell(peak, "B"), ""])
        conv_rows = [[tag("code", name), cell(c["flops_per_token"], "FLOP"),
                      cell(c["achieved_flops_per_s"], "FLOP/s"),
                      cell(100 * _get(c, "mfu", "measured", default=math.nan), "%"),
                      cell(100 * _get(c, "mfu", "datasheet", default=math.nan), "%")]
                     for name, c in (train.get("mfu_conventions") or {}).items()]
        body.append(tag("div",
            tag("div", tag("h3", "Train step by phase"),
                table(["phase", th("median time", src), "share of the step"], phase_rows,
                      numeric=[False, True, False])),
            tag("div", tag("h3", "Peak memory of the train step"),
                table(["part", th("bytes", "model"), "share of the predicted peak"], mem_rows,
                      numeric=[False, True, False])),
            class_="grid2"))
        body.append(tag("h3", "MFU under each FLOPs convention (train step)"))
        body.append(table(["convention", th("FLOPs / token", "model"), th("achieved FLOP/s", src),
                           "MFU vs measured peak", "MFU vs datasheet"], conv_rows, sortable=True,
                          numeric=[False, True, True, True, True]))
        peaks = [m for m in train.get("mfu", [])]
        if peaks:
            body.append(tag("ul", [tag("li", m["label"]) for m in peaks], class_="lead"))
    seen: set[str] = set()
    for kind, r in results.items():
        for n in r.get("notes", []):
            if n in seen:
                continue
            seen.add(n)
            body.append(note(f"{kind}: {n}" if "spread" in n else n, "info"))
    return section("metrics", "Time, throughput, FLOP/s, MFU, memory", body,
                   lead="The lecture's metrics for each step this report measured: time per batch, "
                        "throughput, FLOP/s, MFU, utilization and peak memory, beside the prediction.")


def _bar(fraction: float) -> Html:
    pct = max(0.0, min(1.0, fraction if math.isfinite(fraction) else 0.0)) * 100
    return Html(tag("span", "", class_="bar", style=f"width:{pct * 1.6:.0f}px")
                + tag("span", f"{pct:.1f} %", class_="num"))


def roofline_section(d: Doc) -> Html:
    failed = d.failure("roofline")
    data = d.stage("roofline")
    if not data:
        return section("roofline", "Roofline: predicted and measured", failed=failed or "no data")
    src = d.measured
    rows = []
    for p in data["points"]:
        label = p["kind"] + (f" B={p['batch']}" if p.get("batch") else "")
        ratio = (p["measured_s"] / p["predicted_s"]) if p.get("measured_s") and p.get("predicted_s") else None
        rows.append([label, cell(p["arithmetic_intensity"], "FLOP/B"),
                     cell(p.get("predicted_flops_per_s"), "FLOP/s"),
                     cell(p.get("measured_flops_per_s"), "FLOP/s"), cell(ratio, "x")])
    ceil = [f"{c['label']}: {fmt(c['flops_per_s'], 'FLOP/s')}" for c in data["ceilings"]]
    bw = [f"{b['label']}: {fmt(b['bytes_per_s'], 'B/s')}" for b in data["bandwidths"]]
    body = [
        d.picture("roofline", "roofline of the measured steps",
                  "attainable(AI) = min(π, β·AI) for the measured and datasheet ceilings; circles "
                  "are predicted, triangles measured (same FLOPs / measured time); red compute-, "
                  "blue memory-bound."),
        tag("p", "Ceilings: " + "; ".join(ceil + bw) + ".", class_="lead"),
        table(["step", th("arithmetic intensity", "model"), th("predicted FLOP/s", "model"),
               th("achieved FLOP/s", src), "measured / predicted time"], rows, sortable=True,
              id_="roofline-table", numeric=[False, True, True, True, True]),
    ]
    return section("roofline", "Roofline: predicted and measured", body,
                   lead="Each step at its arithmetic intensity (FLOPs / bytes moved, from the "
                        "performance model), at the FLOP/s the model predicts and the FLOP/s "
                        "measured here.")


_OP_HEADER = ("operation", "phase", "measured time", "share", "calls", "FLOPs", "bytes",
              "intensity", "achieved FLOP/s", "predicted time", "measured / predicted",
              "% of roofline", "bound")
_OP_NUMERIC = [False, False, True, True, True, True, True, True, True, True, True, True, False]


def _op_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[tag("code", r["name"]), r["phase"], cell(r["measured_s"], "s"),
             cell(100 * r["share"] if r.get("share") is not None else None, "%"), cell(r["calls"]),
             cell(r.get("flops"), "FLOP"), cell(r.get("bytes"), "B"),
             cell(r.get("arithmetic_intensity"), "FLOP/B"), cell(r.get("achieved_flops"), "FLOP/s"),
             cell(r.get("predicted_s"), "s"), cell(r.get("measured_over_predicted"), "x"),
             cell(r.get("pct_of_roofline"), "%"), r.get("bound") or ""]
            for r in rows]


def _op_headers(src: str) -> list[Html]:
    sources = {"measured time": src, "FLOPs": "model", "bytes": "model", "predicted time": "model",
               "achieved FLOP/s": src}
    return [th(h, sources.get(h)) for h in _OP_HEADER]


def operations_section(d: Doc) -> Html:
    failed = d.failure("profile")
    data = d.stage("profile")
    if not data:
        return section("operations", "Per-operation: predicted vs measured",
                       failed=failed or "no data")
    src = d.measured
    body: list[Any] = []
    for kind, p in data.items():
        w = p["workload"]
        over = p.get("overhead") or {}
        facts = [
            ("workload", f"{kind} ({_WORKLOAD_TEXT.get(kind, '')}), {_shape(kind, w)}, {w['dtype']}"
                         + (", compiled" if w.get("compile") else ", eager")),
            ("attributed to an operation", value(100 * p["coverage"], "%", src)),
            ("attributed exactly", value(100 * p["exact_coverage"], "%", src)),
            ("profiler overhead on the step", value(100 * over["overhead"], "%", src)
             if over.get("overhead") is not None else "not measured"),
            ("median |measured/predicted − 1| (components ≥ 2 % of the step)",
             value(100 * p["median_abs_error_components"], "%")),
            ("predictions on", p.get("hardware")),
        ]
        title = {"train": "Train step", "decode": "Decode step (KV cache)"}.get(kind, kind)
        body += [tag("h3", title, f" — per {p['unit']}, joined on (operation, phase)"),
                 kv_table(facts),
                 d.picture(f"profile_{kind}", f"{kind} components on the roofline",
                           "Each component at its predicted intensity: predicted (o) and "
                           "measured (^) FLOP/s."),
                 table(_op_headers(src), _op_rows(p["components"]), sortable=True,
                       id_=f"components-{kind}", numeric=_OP_NUMERIC,
                       caption="Per component, summed over layers (click a header to sort)."),
                 tag("details", tag("summary", f"every operation of the {kind} step "
                                                f"({len(p['ops'])} rows)"),
                     table(_op_headers(src), _op_rows(p["ops"]), sortable=True,
                           id_=f"ops-{kind}", numeric=_OP_NUMERIC))]
    return section("operations", "Per-operation: predicted vs measured", body,
                   lead="torch.profiler traces with every kernel (operator on CPU) attributed to an "
                        "operation name, joined with the performance model's FLOPs, bytes and time. "
                        "The traces open in Perfetto and TensorBoard (see Reproduce).")


def inference_section(d: Doc) -> Html:
    failed = d.failure("inference")
    data = d.stage("inference")
    if not data:
        return section("inference", "KV cache vs recompute, and batch size",
                       failed=failed or "no data")
    src = d.measured
    cvr = data["cache_vs_recompute"]
    rows = []
    for c, r, sp in zip(cvr["cache"], cvr["recompute"], cvr["speedup"], strict=False):
        rows.append([cell(c["seq"]), cell(c["time_s"], "s"), cell(r["time_s"], "s"),
                     cell(sp["measured"], "x"), cell(c["predicted_s"], "s"),
                     cell(r["predicted_s"], "s"), cell(sp["predicted"], "x"),
                     cell(c["tokens_per_s"], "tokens/s")])
    sweep = data["batch_sweep"]
    brows = [[cell(p["batch"]), cell(p["time_s"], "s"), cell(p["tokens_per_s"], "tokens/s"),
              cell(p["arithmetic_intensity"], "FLOP/B"), cell(p["achieved_bandwidth"], "B/s"),
              cell(p["achieved_flops_per_s"], "FLOP/s"), cell(p["predicted_s"], "s"),
              cell(p["ratio_measured_to_predicted"], "x")] for p in sweep["points"]]
    pics = [d.picture(name, name.replace("_", " "))
            for name in d.doc.get("pictures", {}) if name.startswith("inference_")]
    facts = [
        ("decode path", "compiled static cache + CUDA graph" if data.get("fast_decode")
         else "eager, the model's own KV cache"),
        ("weights", _get(data, "definitions", "weights")),
        ("context of the batch sweep", f"L = {sweep['context']}"),
        ("ridge batch (predicted)", value(sweep.get("ridge_batch_predicted"), "", "model")),
        ("knee batch (predicted)", value(sweep.get("knee_batch_predicted"), "", "model")),
        ("knee batch (measured)", value(sweep.get("knee_batch_measured"), "", src)),
        ("predictions on", data.get("hardware_label")),
    ]
    body: list[Any] = [
        tag("h3", "One new token: KV cache against recomputing the context (batch 1)"),
        table(["context L", th("with cache", src), th("recompute", src), th("speedup", src),
               th("with cache", "model"), th("recompute", "model"), th("speedup", "model"),
               th("tokens/s with cache", src)], rows, sortable=True, id_="kv-table",
              numeric=[True] * 8),
        tag("h3", "Decode step against batch size"),
        tag("div", kv_table(facts), tag("div", pics[1] if len(pics) > 1 else ""), class_="grid2"),
        table(["batch", th("time per step", src), th("tokens/s", src),
               th("intensity", "model"), th("achieved bandwidth", src),
               th("achieved FLOP/s", src), th("predicted time", "model"), "measured / predicted"],
              brows, sortable=True, id_="batch-table", numeric=[True] * 8),
        tag("div", [p for i, p in enumerate(pics) if i != 1], class_="grid2"),
    ]
    for n in data.get("notes", []):
        body.append(note(n))
    return section("inference", "KV cache vs recompute, and batch size", body,
                   lead="Without a cache every new token recomputes the whole context; with it, one "
                        "token's work plus reading the cached keys and values. Decoding reads every "
                        "weight once per step, so it stays memory-bound until the batch is large.")


def reproduce_section(d: Doc) -> Html:
    cmds = d.doc.get("commands", [])
    rows = [[c["what"], tag("pre", c["command"], class_="cmd")] for c in cmds]
    body: list[Any] = [
        tag("p", "Each number on this page comes from one of these commands (same settings, "
                 "same device); the whole page from the first.", class_="lead"),
        tag("pre", _report_command(d), class_="cmd"),
        table(["what", "command"], rows) if rows else note("no commands recorded", "warn"),
    ]
    traces = d.doc.get("traces", {})
    if traces:
        body.append(tag("h3", "Trace files"))
        body.append(tag("p", "Beside this page; open them in ",
                        tag("code", "https://ui.perfetto.dev"), " or TensorBoard (",
                        tag("code", "tensorboard --logdir <folder>"), ").", class_="lead"))
        body.append(table(["what", "file"], [[k, tag("code", v)] for k, v in traces.items()]))
    return section("reproduce", "Reproduce every number", body)


def _report_command(d: Doc) -> str:
    s = d.settings
    parts = ["gptperf report", f"--preset {s.get('preset')}", f"--device {s.get('device')}",
             f"--dtype {s.get('dtype')}", "--compile" if s.get("compile") else "--no-compile",
             f"--train-seconds {s.get('train_seconds'):g}"]
    if s.get("quick"):
        parts.append("--quick")
    return " ".join(parts)


def stages_section(d: Doc) -> Html:
    rows = []
    for name, st in d.doc.get("stages", {}).items():
        status = st.get("status")
        rows.append([tag("code", name), st.get("title"),
                     tag("span", status, class_=f"status-{status}"),
                     cell(st.get("seconds"), "s"), cell(st.get("budget_s"), "s"),
                     st.get("error") or ""])
    body = [table(["stage", "what", "status", th("wall time", d.measured), "budget (2-core CPU)",
                   "note"], rows,
                  numeric=[False, False, False, True, True, False]),
            tag("p", f"Total wall time {fmt(d.doc.get('wall_s'), 's')} on {d.settings.get('device_name')}.",
                class_="lead")]
    return section("stages", "How this page was made", body)


# --- page -----------------------------------------------------------------------------------


def header(d: Doc) -> Html:
    s = d.settings
    config = s.get("config", {})
    title = tag("h1", tag("span", "gptperf", class_="brand"), " report · ",
                f"{config.get('name')} on {s.get('device_name')}")
    sub = tag("div",
              "model ", tag("b", f"{config.get('name')}"),
              f" ({config.get('n_layer')} layers, {config.get('n_head')} heads, "
              f"C={config.get('n_embd')}, {config.get('attention')} attention) · ",
              "precision ", tag("b", s.get("dtype")),
              " · ", tag("b", "compiled" if s.get("compile") else "eager"),
              f" · torch {d.env.get('torch')} · {d.doc.get('generated_utc')}",
              class_="sub")
    cards = headline(d)
    failed = [n for n, st in d.doc.get("stages", {}).items() if st.get("status") == "failed"]
    banner = (tag("div", "Failed stage(s): ", ", ".join(failed),
                  " — their sections say why.", class_="banner") if failed else None)
    return Html(title + sub + (tag("div", cards, class_="kpis") if cards else "") + (banner or ""))


def headline(d: Doc) -> list[Html]:
    """The numbers a reader wants first, each from the stage that measured it."""
    cards: list[Html] = []
    src = d.measured
    bench = (d.stage("bench") or {}).get("results", {})
    train = bench.get("train")
    if train:
        cards.append(kpi("time per batch", train["step_time_s"], "s", f"train step, {src}"))
        cards.append(kpi("throughput", train["throughput"]["tokens_per_s"], "tokens/s",
                         f"training, {src}"))
        cards.append(kpi("achieved", train["flops"]["achieved_flops_per_s"], "FLOP/s",
                         f"model FLOPs / time, {src}"))
        mfu = _mfu(train, "measured")
        cards.append(kpi("MFU", mfu, "%", "vs the measured peak, gptperf convention"))
        peak, how = _peak_memory(train)
        cards.append(kpi("peak memory", peak, "B", f"train step: {how}"))
    decode = bench.get("decode")
    if decode:
        cards.append(kpi("decode", decode["throughput"]["tokens_per_s"], "tokens/s",
                         f"batch 1, KV cache, {src}"))
    trained = d.stage("train")
    if trained:
        cards.append(kpi("validation loss", trained.get("final_val_loss"), "nats",
                         f"after {trained.get('steps')} training steps"))
    return cards


def render_page(doc: dict[str, Any], folder: str | Path) -> str:
    """The whole page for report.json `doc`; pictures are read from `folder` and embedded."""
    d = Doc(doc, Path(folder))
    renderers = (device_section, model_section, roofline_section, operations_section,
                 metrics_section, inference_section, training_section, samples_section,
                 reproduce_section, stages_section)
    sections = []
    for (sid, label), render in zip(SECTIONS, renderers, strict=True):
        try:
            sections.append(render(d))
        except Exception as err:  # noqa: BLE001 - one bad section must not lose the page
            from gptperf.report.context import one_line

            sections.append(section(sid, label, failed=f"this section could not be drawn from "
                                                       f"report.json: {one_line(err)}"))
    s = d.settings
    footer = Html(
        tag("span", "gptperf ", d.doc.get("gptperf"), " · ")
        + tag("span", "sources: ") + source_chip("measured on this device") + " "
        + source_chip("datasheet") + " " + source_chip("model (predicted)")
    )
    title = f"gptperf report · {s.get('config', {}).get('name')} on {s.get('device_name')}"
    return page(title, header(d), SECTIONS, sections, footer)
