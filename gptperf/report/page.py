"""The report page from the report's typed results (`ReportData`, live or read back from
report.json): one section per question, every number with unit and source."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.checks import is_finite_number
from gptperf.inference.sweep import DEFINITIONS, plan_labels
from gptperf.measure.bench import host_charge_note
from gptperf.perfmodel.conventions import CONVENTIONS
from gptperf.perfmodel.hardware import SHIPPED
from gptperf.report.context import one_line
from gptperf.report.doc import (
    CALIBRATED,
    CALIBRATED_SOURCE,
    LEGEND,
    ROOFLINE,
    ROOFLINE_SOURCE,
    Doc,
    pct,
    th,
)
from gptperf.report.html import (
    TRAFFIC,
    Html,
    cell,
    esc,
    fmt,
    kpi,
    kv_table,
    note,
    page,
    pre,
    section,
    source_chip,
    table,
    tag,
    value,
)
from gptperf.report.page_prediction import prediction_section
from gptperf.report.page_scaling import scaling_section

if TYPE_CHECKING:
    from gptperf.measure.bench import BenchResult
    from gptperf.measure.ceilings import Ceilings
    from gptperf.perfmodel.hardware import Hardware
    from gptperf.profiling.compare import Row
    from gptperf.report.context import ReportData
    from gptperf.report.results import DeviceStage

# (section id, navigation label): the page's order. Tests and the browser check rely on the ids.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("device", "Device & ceilings"),
    ("model", "Model"),
    ("prediction", "Prediction error"),
    ("roofline", "Roofline"),
    ("operations", "Operations"),
    ("metrics", "Metrics"),
    ("inference", "KV cache & batch"),
    ("scaling", "Parallel scaling"),
    ("training", "Training"),
    ("samples", "Samples & scores"),
    ("reproduce", "Reproduce"),
    ("stages", "Stages"),
)


# --- sections (the prediction and scaling sections have modules of their own) -----------------


def device_section(d: Doc) -> Html:
    dev = d.report.device
    env = d.env
    s = d.settings
    rows = [
        ("device", tag("span", s.device_name, class_="num")),
        ("torch", f"{env.get('torch')} (CUDA {env.get('cuda')})" if env.get("cuda") else env.get("torch")),
        ("CPU", f"{env.get('cpu')} · {env.get('cpu_threads')} torch threads"),
        ("gptperf", f"{env.get('gptperf')} (commit {env.get('commit') or 'unknown'})"),
        ("host · time", f"{env.get('hostname')} · {env.get('time_utc')}"),
        ("precision", f"{s.dtype}" + (" · torch.compile" if s.compile else " · eager")),
    ]
    load = d.report.machine_load.get("start") or {}
    if load.get("threading_env"):
        rows.append(("threading", " ".join(f"{k}={v}" for k, v in load["threading_env"].items())))
    busy = None
    if load.get("load_average") and load.get("cores"):
        one, cores = load["load_average"][0], load["cores"]
        rows.append(("load average at start", f"{one:.2f} (1 min) on {cores} cores"))
        if s.device_type == "cpu" and one > 0.5 * cores:
            busy = note(f"The machine was busy when this report started (load average {one:.1f} "
                        f"on {cores} cores): other processes competed for the cores torch uses, "
                        "so CPU times on this page are slower, and noisier, than on an idle "
                        "machine (OpenMP threads that wait for a descheduled peer can make a "
                        "step many times slower; OMP_WAIT_POLICY=PASSIVE softens that).", "warn")
    failed = d.failure("device")
    if dev is None:
        return section("device", "Device and ceilings", kv_table(rows),
                       note(failed or "no ceilings", "error"))
    c = dev.ceilings
    rows.append(("ceilings measured", f"{c.measured_at} by gptperf ceilings"
                 + (", cached" if dev.ceilings_cached else "")
                 + (", quick sweep" if c.quick else "")))
    sheet = dev.datasheet
    word = _sheet_word(sheet)
    rows.append((word, f"{sheet.name}: {sheet.notes}" if sheet is not None
                 else "no datasheet entry for this device"))
    body: list[Any] = [
        busy,
        tag("div", kv_table(rows), ceilings_table(dev, d), class_="grid2"),
        d.picture("ceilings", f"measured ceilings beside the {word} figures",
                  "Matmul rate against size per dtype, and bandwidth: measured (solid) beside "
                  f"the {word} figures (dashed)."),
    ]
    return section("device", "Device and ceilings", body,
                   lead="Where every number below was measured, and what this machine can do at "
                        "best: ceilings measured here beside the datasheet's.")


def ceilings_table(dev: DeviceStage, d: Doc) -> Html:
    """Measured ceilings beside datasheet ones, whichever both list."""
    rows = []
    for key, label, unit in _CEILING_ROWS:
        m, ds = _measured_ceiling(dev.ceilings, key), _datasheet_ceiling(dev.datasheet, key)
        if m is None and ds is None:
            continue
        ratio = m / ds if (m is not None and ds) else None
        rows.append([label, cell(m, unit), cell(ds, unit),
                     cell(None if ratio is None else 100 * ratio, "%")])
    if not rows:
        return note("no ceilings to show", "warn")
    name = dev.datasheet.name if dev.datasheet is not None else ""
    word = _sheet_word(dev.datasheet)
    return table(["ceiling", th("measured", d.measured), th(word, f"{word} {name}"),
                  th("ratio")], rows, numeric=[False, True, True, True],
                 caption=f"ratio = measured / {word}")


def _sheet_word(sheet: Hardware | None) -> str:
    """What the shipped entry's figures are: a vendor's "datasheet", or "nominal" ones (the
    generic CPU entry, a made-up machine)."""
    return sheet.source if sheet is not None and sheet.source in SHIPPED else "datasheet"


_CEILING_ROWS: tuple[tuple[str, str, str], ...] = (
    ("bandwidth", "memory bandwidth", "B/s"),
    ("fp32", "fp32 matmul", "FLOP/s"),
    ("tf32", "tf32 matmul", "FLOP/s"),
    ("bf16", "bf16 matmul", "FLOP/s"),
    ("fp16", "fp16 matmul", "FLOP/s"),
    ("fp64", "fp64 matmul", "FLOP/s"),
    ("launch", "launch floor", "s"),
)


def _finite(v: Any) -> float | None:
    return float(v) if is_finite_number(v) else None


def _measured_ceiling(c: Ceilings, key: str) -> float | None:
    if key == "bandwidth":
        return _finite(c.bandwidth_bytes_per_s)
    if key == "launch":
        return _finite(c.launch_latency_s)
    return _finite(c.peak_flops.get(key))


def _datasheet_ceiling(hw: Hardware | None, key: str) -> float | None:
    if hw is None:
        return None
    if key == "bandwidth":
        return _finite(hw.bandwidth)
    if key == "launch":
        return _finite(hw.launch_latency_s)
    return _finite(hw.peak_flops.get(key))


def model_section(d: Doc) -> Html:
    config = d.settings.config
    rows = [(k, str(getattr(config, k))) for k in
            ("name", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "attention")]
    failed = d.failure("model")
    m = d.report.model
    if m is None:
        return section("model", "Model summary", kv_table(rows), note(failed or "no data", "error"))
    rows += [
        ("parameters", value(m.total_parameters, "", "model")),
        ("without embeddings", value(m.parameters_without_embeddings, "", "model")),
        ("in matmuls (12·L·C² + V·C)", value(m.matmul_parameters, "", "model")),
    ]
    train = m.predictions.get("train")
    body: list[Any] = []
    if train is not None:
        conv_rows = [[tag("code", name), cell(train.model_flops_per_token(name), "FLOP"), formula]
                     for name, formula in CONVENTIONS.items()]
        body.append(tag("div", kv_table(rows), tag("div",
            tag("h3", f"Model FLOPs per trained token, T = {train.workload.seq} (forward + backward)"),
            table(["convention", th("FLOPs / token", "model"), "formula"], conv_rows,
                  numeric=[False, True, False]),
            tag("p", "MFU is only comparable under one convention; gptperf's own counts every "
                     "predicted operation (causal attention at the causal count).", class_="lead")),
            class_="grid2"))
    else:
        body.append(kv_table(rows))
    pred_rows = []
    for kind, p in m.predictions.items():
        w = p.workload
        e = m.expected.get(kind)
        pred_rows.append([tag("code", kind), _shape(kind, w.batch, w.seq),
                          cell(p.flops, "FLOP"), cell(p.bytes, TRAFFIC),
                          cell(p.arithmetic_intensity, "FLOP/B"), cell(p.time_s, "s"),
                          cell(e.step_time_s if e is not None else None, "s"),
                          cell(p.tokens_per_s, "tokens/s"), cell(p.memory.total, "B")])
    body += [tag("h3", "Predicted cost of each measured step"),
             table(["workload", "shape", "FLOPs", "bytes moved", "intensity",
                    th(f"time: {ROOFLINE}", ROOFLINE_SOURCE), th(f"time: {CALIBRATED}", d.calibrated),
                    th("throughput", ROOFLINE_SOURCE), "peak memory"], pred_rows, sortable=True,
                   id_="predictions", numeric=[False, False, True, True, True, True, True, True, True],
                   caption=Html(f"Performance model on {esc(m.hardware.label)} ")
                   + source_chip("model (predicted)"))]
    body += [note(n, "info") for n in m.expected_notes]
    return section("model", "Model summary", body,
                   lead="The shape of the GPT, its parameters and FLOPs per token in each "
                        "convention, and the predicted cost of the steps measured below (exact "
                        "arithmetic over the config, placed on this machine's roofline).")


def training_section(d: Doc) -> Html:
    stage = d.report.train
    if stage is None:
        return d.missing("train", "training", "Training run", "no training data")
    t = stage.result
    final_val = t.val_losses[-1][1] if t.val_losses else None
    rows = [
        ("data", t.data_name),
        ("steps", f"{t.steps:,} optimizer steps of {t.tokens_per_step:,} tokens "
                  f"(batch {t.config.batch} × seq {t.config.seq}), "
                  f"time budget {fmt(stage.time_budget_s, 's')}"),
        ("final validation loss", value(final_val, "nats", d.measured)),
        ("first → last training loss",
         f"{_first(t.losses):.3f} → {_last(t.losses):.3f} nats/token" if t.losses else "—"),
        ("median time per step", value(t.median_step_time_s, "s", d.measured)),
        ("throughput", value(t.tokens_per_s, "tokens/s", d.measured)),
        ("wall time", value(t.wall_time_s, "s", d.measured)),
    ]
    if t.compile_time_s:
        rows.append(("compilation", value(t.compile_time_s, "s", d.measured)))
    if t.checkpoint:
        rows.append(("checkpoint", tag("code", t.checkpoint)))
    body = [tag("div", d.picture("loss", "loss curve",
                                 "Training loss per step and validation loss, nats per token "
                                 "(a byte-level model: ln 256 = 5.55 at the start)."),
                kv_table(rows), class_="grid2")]
    for text in t.notes:
        body.append(note(text))
    return section("training", "Training run", body,
                   lead="A short run on the embedded corpus (Python's own documentation topics, "
                        "one token per byte), as many steps as fit the time budget.")


def _first(xs: list[float]) -> float:
    return xs[0] if xs else math.nan


def _last(xs: list[float]) -> float:
    return xs[-1] if xs else math.nan


def samples_section(d: Doc) -> Html:
    stage = d.report.samples
    if stage is None:
        return d.missing("samples", "samples", "Samples and scores", "no samples")
    sample, score = stage.sample, stage.score
    body: list[Any] = [
        tag("h3", "A sample"),
        tag("p", f"{sample.tokens} new tokens after the prompt {sample.prompt!r}, temperature "
                 f"{sample.temperature}, seed {sample.seed}, KV cache on "
                 f"({fmt(sample.wall_s, 's')} on {d.settings.device_name}, "
                 "first run, not a benchmark).", class_="lead"),
        pre(sample.text, "sample"),
    ]
    if sample.tokens_outside_bytes:
        body.append(note(f"{sample.tokens_outside_bytes} sampled tokens lie outside the byte "
                         "range of the corpus and are shown as '?'", "warn"))
    rows = []
    for rank, i in enumerate(score.ranking(), 1):
        sc = score.sentences[i]
        n = len(sc.tokens) or 1
        rows.append([cell(rank), tag("code", sc.text), cell(len(sc.tokens)),
                     cell(sc.logprob, "nats"), cell(sc.log10prob), cell(-sc.logprob / n, "nats")])
    body += [
        tag("h3", "The lecture's sentences, by the chain rule"),
        tag("p", "P(x₁:ₙ) = P(x₁ | start) · P(x₂ | start, x₁) ··· P(xₙ | start, x₍<ₙ₎), the start "
                 f"context being {score.start_text!r}; log-probabilities in nats "
                 f"(natural log), {d.measured.replace('measured', 'computed')}.", class_="lead"),
        table(["rank", "sentence", "tokens", "log P", "log₁₀ P", "nats per token"], rows,
              sortable=True, id_="scores", numeric=[True, False, True, True, True, True]),
    ]
    return section("samples", "Samples and scores", body)


_WORKLOAD_TEXT = {
    "train": "forward + backward + AdamW",
    "prefill": "prompt fills the KV cache",
    "decode": "one new token, KV cache",
    "decode_nocache": "one new token, recompute",
}


def _shape(kind: str, batch: int, seq: int) -> str:
    return f"B={batch}, {'L' if kind.startswith('decode') else 'T'}={seq}"


def _mfu(result: BenchResult, against: str) -> float | None:
    for m in result.mfu:
        if m.against == against:
            return 100 * m.mfu
    return None


def _sm_clock(result: BenchResult) -> Html:
    """The mean SM clock over the timed steps and its share of the card's maximum ('—' where
    NVML gave none: a CPU, or no clock reading)."""
    u = result.utilization
    mean, share = (u.sm_clock_mean_mhz, u.clock_share) if u is not None else (None, None)
    if mean is None:
        return cell(None)
    text = f"{mean:.0f} MHz" + (f" ({100 * share:.0f} %)" if share is not None else "")
    return tag("td", text, data_v=repr(float(mean)), class_="n")


def _peak_memory(result: BenchResult) -> tuple[float | None, str]:
    m = result.memory
    if m is not None and m.allocated_bytes is not None:
        return m.allocated_bytes, "torch.cuda.max_memory_allocated"
    return (m.peak_rss_bytes if m is not None else None), "peak RSS of the whole process"


def metrics_section(d: Doc) -> Html:
    stage = d.report.bench
    if stage is None:
        return d.missing("bench", "metrics", "Time, throughput, FLOP/s, MFU, memory")
    results = stage.results
    src = d.measured
    # the MFU "against" the shipped entry, named for what it is (nominal on the generic CPU)
    sheet = _sheet_word(d.report.device.datasheet if d.report.device is not None else None)
    rows = []
    for kind, r in results.items():
        t = r.timing.total
        roof, cal = next(iter(r.roofline), None), r.calibrated
        peak, _ = _peak_memory(r)
        util = r.utilization.mean_percent if r.utilization is not None else None
        clock = _sm_clock(r)
        rows.append([
            tag("code", kind), _shape(kind, r.batch, r.seq),
            cell(r.step_time_s, "s"),
            f"{fmt(t.min, 's')} – {fmt(t.max, 's')} ({t.repeats}×)",
            cell(r.tokens_per_s, "tokens/s"),
            cell(r.achieved_flops_per_s, "FLOP/s"),
            cell(_mfu(r, "measured"), "%"), cell(_mfu(r, "datasheet"), "%"),
            cell(util, "%"), clock, cell(peak, "B"),
            cell(roof.step_time_s if roof else None, "s"),
            cell(roof.measured_over_predicted if roof else None, "x"),
            cell(cal.step_time_s if cal else None, "s"),
            cell(cal.measured_over_predicted if cal else None, "x"),
        ])
    body: list[Any] = [
        table([th("step"), th("shape"), th("time per batch", src), th("min – max (repeats)"),
               th("throughput", src), th("achieved FLOP/s, model FLOPs", src),
               th("MFU vs measured peak"),
               th(f"MFU vs {sheet}"), th("utilization", src), th("SM clock", src),
               th("peak memory", src),
               th(ROOFLINE, ROOFLINE_SOURCE), th(f"measured / {ROOFLINE}"),
               th(CALIBRATED, d.calibrated), th(f"measured / {CALIBRATED}")],
              rows, sortable=True, id_="metrics-table",
              numeric=[False, False, True, False] + [True] * 11,
              caption="Median of the timed steps after warm-up (synchronised). Achieved FLOP/s = "
                      "the performance model's model FLOPs of the step / measured time; MFU in "
                      "gptperf's convention. SM clock: its mean over the timed steps (NVML) and "
                      "its share of the card's maximum; below the maximum a power or thermal cap "
                      "held the card back. " + LEGEND),
    ]
    train = results.get("train")
    if train is not None:
        total = train.step_time_s or 1
        phase_rows = [[tag("code", ph), cell(t.median, "s"), _bar(t.median / total)]
                      for ph, t in train.timing.phases.items()]
        mem_pred = train.predicted_memory or {}
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
                      cell(100 * c.get("mfu", {}).get("measured", math.nan), "%"),
                      cell(100 * c.get("mfu", {}).get("datasheet", math.nan), "%")]
                     for name, c in train.mfu_conventions.items()]
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
                           "MFU vs measured peak", f"MFU vs {sheet}"], conv_rows, sortable=True,
                          numeric=[False, True, True, True, True]))
        if train.mfu:
            body.append(tag("ul", [tag("li", m.label) for m in train.mfu], class_="lead"))
    seen: set[str] = set()
    for kind, r in results.items():
        for n in r.notes:
            if n in seen:
                continue
            seen.add(n)
            body.append(note(f"{kind}: {n}" if "spread" in n else n, "info"))
    return section("metrics", "Time, throughput, FLOP/s, MFU, memory", body,
                   lead="The lecture's metrics for each step this report measured: time per batch, "
                        "throughput, FLOP/s, MFU, utilization and peak memory, beside the two "
                        "predictions (roofline bound and calibrated).")


def _bar(fraction: float) -> Html:
    pct = max(0.0, min(1.0, fraction if math.isfinite(fraction) else 0.0)) * 100
    return Html(tag("span", "", class_="bar", style=f"width:{pct * 1.6:.0f}px")
                + tag("span", f"{pct:.1f} %", class_="num"))


def roofline_section(d: Doc) -> Html:
    stage = d.report.roofline
    if stage is None:
        return d.missing("roofline", "roofline", "Roofline: predicted and measured")
    src = d.measured
    rows = []
    for p in stage.rows:
        label = p.kind + (f" B={p.batch}" if p.batch else "")
        rows.append([label, cell(p.arithmetic_intensity, "FLOP/B"),
                     cell(p.predicted_flops_per_s, "FLOP/s"),
                     cell(p.measured_flops_per_s, "FLOP/s"), cell(p.ratio, "x"),
                     cell(p.expected_s, "s"), cell(p.expected_ratio, "x")])
    ceil = [f"{label}: {fmt(v, 'FLOP/s')}" for label, v in stage.ceilings]
    bw = [f"{label}: {fmt(v, 'B/s')}" for label, v in stage.bandwidths]
    body = [
        d.picture("roofline", "roofline of the measured steps",
                  "attainable(AI) = min(π, β·AI) for the measured and datasheet ceilings; circles "
                  "are predicted, triangles measured (same FLOPs / measured time); red compute-, "
                  "blue memory-bound."),
        tag("p", "Ceilings: " + "; ".join(ceil + bw) + ".", class_="lead"),
        table(["step", th("arithmetic intensity", "model"),
               th(f"FLOP/s at the {ROOFLINE}", ROOFLINE_SOURCE),
               # every FLOP of the step (a train step's optimizer too): the FLOPs its roofline
               # point is placed by, where the metrics' achieved FLOP/s count the model's alone
               th("achieved FLOP/s, all FLOPs", src),
               f"measured time / {ROOFLINE}", th(f"time: {CALIBRATED}", d.calibrated),
               f"measured / {CALIBRATED}"], rows, sortable=True,
              id_="roofline-table", numeric=[False, True, True, True, True, True, True]),
    ]
    return section("roofline", "Roofline: predicted and measured", body,
                   lead="Each step at its arithmetic intensity (FLOPs / bytes moved, from the "
                        "performance model), at the FLOP/s the model predicts and the FLOP/s "
                        "measured here. FLOPs here are all of a step's, the optimizer's "
                        "included; the achieved FLOP/s and MFU above count the model's "
                        "(forward and backward) alone.")


_OP_HEADER = ("operation", "phase", "measured time", "share", "calls", "FLOPs", "bytes",
              "intensity", "achieved FLOP/s", ROOFLINE, f"measured / {ROOFLINE}", CALIBRATED,
              f"measured / {CALIBRATED}", "% of roofline (no launch latency)", "bound")
_OP_NUMERIC = [False, False] + [True] * 12 + [False]


def _op_rows(rows: list[Row]) -> list[list[Any]]:
    return [[tag("code", r.name), r.phase, cell(r.measured_s, "s"), cell(100 * r.share, "%"),
             cell(r.calls), cell(r.flops, "FLOP"), cell(r.bytes, TRAFFIC),
             cell(r.arithmetic_intensity, "FLOP/B"), cell(r.achieved_flops, "FLOP/s"),
             cell(r.predicted_s, "s"), cell(r.ratio, "x"),
             cell(r.expected_s, "s"), cell(r.expected_ratio, "x"),
             cell(r.pct_of_roofline, "%"), r.bound or ""]
            for r in rows]


def _op_headers(src: str, calibrated: str) -> list[Html]:
    sources = {"measured time": src, "FLOPs": "model", "bytes": "model",
               ROOFLINE: ROOFLINE_SOURCE, CALIBRATED: calibrated, "achieved FLOP/s": src}
    return [th(h, sources.get(h)) for h in _OP_HEADER]


def operations_section(d: Doc) -> Html:
    stage = d.report.profile
    if stage is None:
        return d.missing("profile", "operations", "Per-operation: predicted vs measured")
    src = d.measured
    body: list[Any] = []
    for kind, p in stage.profiles.items():
        w = p.workload
        over = p.overhead or {}
        facts = [
            ("workload", f"{kind} ({_WORKLOAD_TEXT.get(kind, '')}), "
                         f"{_shape(kind, w['batch'], w['seq'])}, {w['dtype']}"
                         + (", compiled" if w.get("compile") else ", eager")),
            ("attributed to an operation", value(100 * p.coverage, "%", src)),
            ("attributed exactly", value(100 * p.exact_coverage, "%", src)),
            ("profiler overhead on the step", value(100 * over["overhead"], "%", src)
             if over.get("overhead") is not None else "not measured"),
            (f"median |measured / {ROOFLINE} − 1| (components ≥ 2 % of the step)",
             value(100 * p.median_abs_error, "%")),
            (f"median |measured / {CALIBRATED} − 1| (components ≥ 2 % of the step)",
             value(100 * p.median_abs_error_expected, "%")
             if p.expected is not None else "no calibration"),
            (f"whole step: {CALIBRATED}", _expected_step(p.expected, d.calibrated)),
            (f"{ROOFLINE} on", p.hardware),
        ]
        ops, components = p.comparison.ops, p.comparison.components
        title = {"train": "Train step", "decode": "Decode step (KV cache)"}.get(kind, kind)
        body += [tag("h3", title, f" — per {p.unit}, joined on (operation, phase)"),
                 kv_table(facts),
                 d.picture(f"profile_{kind}", f"{kind} components on the roofline",
                           "Each component at its predicted intensity: predicted (o) and "
                           "measured (^) FLOP/s."),
                 table(_op_headers(src, d.calibrated), _op_rows(components), sortable=True,
                       id_=f"components-{kind}", numeric=_OP_NUMERIC,
                       caption="Per component, summed over layers (click a header to sort)."),
                 tag("details", tag("summary", f"every operation of the {kind} step "
                                                f"({len(ops)} rows)"),
                     table(_op_headers(src, d.calibrated), _op_rows(ops), sortable=True,
                           id_=f"ops-{kind}", numeric=_OP_NUMERIC))]
        body += [note(n, "info") for n in p.notes]
    return section("operations", "Per-operation: predicted vs measured", body,
                   lead="torch.profiler traces with every kernel (operator on CPU) attributed to an "
                        "operation name, joined with the performance model's FLOPs, bytes and time. "
                        "The traces open in Perfetto and TensorBoard (see Reproduce).")


def _expected_step(e: dict[str, Any] | None, source: str) -> Any:
    """A profile's calibrated whole step beside its measured one (or why there is none)."""
    if not e:
        return "no calibration of this device"
    charge = host_charge_note(e)
    return Html(value(e.get("step_time_s"), "s", source)
                + esc(f" ({e.get('composition', '')}); measured "
                      f"{fmt(e.get('measured_step_time_s'), 's')} "
                      f"({e.get('measured_step_source', '')}), measured / {CALIBRATED} ")
                + value(e.get("measured_over_expected"), "x")
                + (esc(f"; {charge}") if charge else ""))


def inference_section(d: Doc) -> Html:
    r = d.report.inference
    if r is None:
        return d.missing("inference", "inference", "KV cache vs recompute, and batch size")
    src = d.measured
    rows = []
    for c, rc, x in zip(r.cache, r.recompute, r.speedups(), strict=False):
        rows.append([cell(c.seq), cell(c.time_s, "s"), cell(rc.time_s, "s"),
                     cell(x.measured, "x"), cell(c.predicted_s, "s"),
                     cell(rc.predicted_s, "s"), cell(x.predicted, "x"),
                     cell(c.expected_s, "s"), cell(rc.expected_s, "s"), cell(x.expected, "x"),
                     cell(c.tokens_per_s, "tokens/s")])
    brows = [[cell(p.batch), cell(p.time_s, "s"), cell(p.tokens_per_s, "tokens/s"),
              cell(p.arithmetic_intensity, "FLOP/B"), cell(p.achieved_bandwidth, "B/s"),
              cell(p.achieved_flops, "FLOP/s"), cell(p.predicted_s, "s"),
              cell(p.ratio, "x"), cell(p.expected_s, "s"), cell(p.expected_ratio, "x")]
             for p in r.batches]
    pics = [d.picture(name, name.replace("_", " "))
            for name in d.report.pictures if name.startswith("inference_")]
    facts = [
        ("decode path (with the cache)", plan_labels(r.cache + r.batches)),
        ("recompute path", plan_labels(r.recompute)),
        ("weights", DEFINITIONS["weights"]),
        ("context of the batch sweep", f"L = {r.batch_context}"),
        ("ridge batch (predicted)", value(r.ridge_batch_predicted, "", "model")),
        ("knee batch (predicted)", value(r.knee_batch_predicted, "", "model")),
        ("knee batch (measured)", value(r.knee_batch_measured, "", src)),
        (f"{ROOFLINE} on", r.hardware_label),
        (f"{CALIBRATED} expected time", r.expected_label or "no calibration of this device"),
    ]
    body: list[Any] = [
        tag("h3", "One new token: KV cache against recomputing the context (batch 1)"),
        table(["context L", th("with cache", src), th("recompute", src), th("speedup", src),
               th(f"with cache: {ROOFLINE}", ROOFLINE_SOURCE),
               th(f"recompute: {ROOFLINE}", ROOFLINE_SOURCE), th("speedup", ROOFLINE_SOURCE),
               th(f"with cache: {CALIBRATED}", d.calibrated),
               th(f"recompute: {CALIBRATED}", d.calibrated), th("speedup", d.calibrated),
               th("tokens/s with cache", src)], rows, sortable=True, id_="kv-table",
              numeric=[True] * 11),
        tag("h3", "Decode step against batch size"),
        tag("div", kv_table(facts), tag("div", pics[1] if len(pics) > 1 else ""), class_="grid2"),
        table(["batch", th("time per step", src), th("tokens/s", src),
               th("intensity", "model"), th("achieved bandwidth", src),
               th("achieved FLOP/s", src), th(ROOFLINE, ROOFLINE_SOURCE),
               f"measured / {ROOFLINE}", th(CALIBRATED, d.calibrated), f"measured / {CALIBRATED}"],
              brows, sortable=True, id_="batch-table", numeric=[True] * 10),
        tag("div", [p for i, p in enumerate(pics) if i != 1], class_="grid2"),
    ]
    for n in r.notes:
        body.append(note(n))
    return section("inference", "KV cache vs recompute, and batch size", body,
                   lead="Without a cache every new token recomputes the whole context; with it, one "
                        "token's work plus reading the cached keys and values. Decoding reads every "
                        "weight once per step, so it stays memory-bound until the batch is large.")


def reproduce_section(d: Doc) -> Html:
    rows = [[c.what, tag("pre", c.command, class_="cmd")] for c in d.report.commands]
    body: list[Any] = [
        tag("p", "Each number on this page comes from one of these commands (same settings, "
                 "same device); the whole page from the first.", class_="lead"),
        tag("pre", _report_command(d), class_="cmd"),
        table(["what", "command"], rows) if rows else note("no commands recorded", "warn"),
    ]
    traces = d.report.traces
    if traces:
        body.append(tag("h3", "Trace files"))
        body.append(tag("p", "Beside this page; open them in ",
                        tag("code", "https://ui.perfetto.dev"), " or TensorBoard (",
                        tag("code", "tensorboard --logdir <folder>"), ").", class_="lead"))
        body.append(table(["what", "file"], [[k, tag("code", v)] for k, v in traces.items()]))
    return section("reproduce", "Reproduce every number", body)


def _report_command(d: Doc) -> str:
    s = d.settings
    parts = ["gptperf report", f"--preset {s.preset}", f"--device {s.device}",
             f"--dtype {s.dtype}", "--compile" if s.compile else "--no-compile"]
    if s.train_seconds_asked:  # else the run fits what the stages before it leave, as here
        parts.append(f"--train-seconds {s.train_seconds:g}")
    if s.quick:
        parts.append("--quick")
    if s.calibrate != (s.device_type != "cuda"):  # not the device's default
        parts.append("--calibrate" if s.calibrate else "--no-calibrate")
    return " ".join(parts)


def stages_section(d: Doc) -> Html:
    rows = []
    for name, rec in d.report.records.items():
        rows.append([tag("code", name), rec.title,
                     tag("span", rec.status, class_=f"status-{rec.status}"),
                     cell(rec.seconds, "s"), cell(rec.budget_s, "s"), rec.error or ""])
    body = [table(["stage", "what", "status", th("wall time", d.measured), "budget (2-core CPU)",
                   "note"], rows,
                  numeric=[False, False, False, True, True, False]),
            tag("p", f"Total wall time {fmt(d.report.wall_s, 's')} on {d.settings.device_name}.",
                class_="lead")]
    return section("stages", "How this page was made", body)


# --- page -----------------------------------------------------------------------------------


def header(d: Doc) -> Html:
    s = d.settings
    config = s.config
    title = tag("h1", tag("span", "gptperf", class_="brand"), " report · ",
                f"{config.name} on {s.device_name}")
    sub = tag("div",
              "model ", tag("b", f"{config.name}"),
              f" ({config.n_layer} layers, {config.n_head} heads, "
              f"C={config.n_embd}, {config.attention} attention) · ",
              "precision ", tag("b", s.dtype),
              " · ", tag("b", "compiled" if s.compile else "eager"),
              f" · torch {d.env.get('torch')} · {d.report.generated_utc}",
              class_="sub")
    cards = headline(d)
    failed = [n for n, rec in d.report.records.items() if rec.status == "failed"]
    banner = (tag("div", "Failed stage(s): ", ", ".join(failed),
                  " — their sections say why.", class_="banner") if failed else None)
    return Html(title + sub + (tag("div", cards, class_="kpis") if cards else "") + (banner or ""))


def headline(d: Doc) -> list[Html]:
    """The numbers a reader wants first, each from the stage that measured it."""
    cards: list[Html] = []
    src = d.measured
    bench = d.report.bench.results if d.report.bench is not None else {}
    train = bench.get("train")
    if train is not None:
        cards.append(kpi("time per batch", train.step_time_s, "s", f"train step, {src}"))
        roof = next(iter(train.roofline), None)
        cards.append(kpi(ROOFLINE, roof.step_time_s if roof else None, "s",
                         "train step: what the hardware allows"))
        cal = train.calibrated
        charge = host_charge_note(cal)
        cards.append(kpi(f"{CALIBRATED} time", cal.step_time_s if cal else None, "s",
                         ("train step: what this machine will take"
                          + (f" ({charge})" if charge else "")) if cal
                         else "no calibration of this device"))
        cards.append(kpi("throughput", train.tokens_per_s, "tokens/s", f"training, {src}"))
        cards.append(kpi("achieved", train.achieved_flops_per_s, "FLOP/s",
                         f"model FLOPs / time, {src}"))
        cards.append(kpi("MFU", _mfu(train, "measured"), "%",
                         "vs the measured peak, gptperf convention"))
        peak, how = _peak_memory(train)
        cards.append(kpi("peak memory", peak, "B", f"train step: {how}"))
    decode = bench.get("decode")
    if decode is not None:
        cards.append(kpi("decode", decode.tokens_per_s, "tokens/s", f"batch 1, KV cache, {src}"))
    val = d.report.validation
    if val is not None and val.result is not None and val.result.points:
        st = val.result.stats
        cases = f"{st.n} case{'s' if st.n != 1 else ''}"
        if val.partial:
            cases += f" of the sweep's {val.sweep_cases} (the rest left out for time)"
        cards.append(kpi("prediction error", pct(st.median), "%",
                         f"median |measured / calibrated − 1|, {cases}"))
    trained = d.report.train
    if trained is not None:
        t = trained.result
        cards.append(kpi("validation loss", t.val_losses[-1][1] if t.val_losses else None, "nats",
                         f"after {t.steps} training steps"))
    return cards


def render_page(report: ReportData, folder: str | Path) -> str:
    """The whole page for the typed results of a report; pictures are read from `folder` (the
    report's) and embedded."""
    d = Doc(report, Path(folder))
    renderers = (device_section, model_section, prediction_section, roofline_section,
                 operations_section, metrics_section, inference_section, scaling_section,
                 training_section, samples_section, reproduce_section, stages_section)
    sections = []
    for (sid, label), render in zip(SECTIONS, renderers, strict=True):
        try:
            sections.append(render(d))
        except Exception as err:  # noqa: BLE001 - one bad section must not lose the page
            sections.append(section(sid, label, failed=f"this section could not be drawn from "
                                                       f"the report's results: {one_line(err)}"))
    s = d.settings
    footer = Html(
        tag("span", "gptperf ", report.gptperf, " · ")
        + tag("span", "sources: ") + source_chip("measured on this device") + " "
        + source_chip("datasheet") + " " + source_chip("model (predicted)") + " "
        + source_chip(ROOFLINE_SOURCE) + " " + source_chip(CALIBRATED_SOURCE)
    )
    title = f"gptperf report · {s.config.name} on {s.device_name}"
    return page(title, header(d), SECTIONS, sections, footer)
