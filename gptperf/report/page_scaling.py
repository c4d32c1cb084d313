"""The report's parallel-scaling section: each study's measured and predicted time, throughput,
speedup and efficiency per process count, its all-reduce, and its pictures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptperf.report.doc import Doc, th
from gptperf.report.html import (
    TRAFFIC,
    Html,
    cell,
    esc,
    fmt,
    kv_table,
    note,
    section,
    table,
    tag,
    value,
)

if TYPE_CHECKING:
    from gptperf.scaling.results import ScalingStudy


def _pair(measured: Any, predicted: Any, unit: str) -> list[Html]:
    return [cell(measured, unit), cell(predicted, unit)]


def _scaling_study(d: Doc, mode: str, study: ScalingStudy, command: str | None) -> list[Any]:
    """One study: the per-process-count table, the all-reduce table, the α–β fits, the pictures."""
    spec = study.spec
    strong = mode == "strong"
    src = f"{d.measured} (torchrun, {study.backend or 'one process'})"
    model = "model (calibrated prediction)"
    eff = "efficiency S(p)/p" if strong else "weak efficiency T(1)/T(p)"
    rows = []
    for p in study.points:
        pr = p.predicted
        rows.append([cell(p.procs), cell(p.per_process_batch), cell(p.global_batch),
                     *_pair(p.step_s, pr.step_s, "s"), cell(p.step_s / pr.step_s, "x"),
                     *_pair(p.tokens_per_s, p.tokens_per_step / pr.step_s, "tokens/s"),
                     *_pair(p.tokens_per_s_per_process, p.tokens_per_step / pr.step_s / p.procs,
                            "tokens/s"),
                     *_pair(p.speedup, p.predicted_speedup, "x"),
                     *_pair(100 * p.efficiency, 100 * p.predicted_efficiency, "%")])
    header = ["processes p", "batch per process", "global batch", th("time per step", src),
              th("time per step", model), "measured / predicted", th("tokens/s", src),
              th("tokens/s", model), th("tokens/s per process", src),
              th("tokens/s per process", model),
              th("speedup" + (" T(1)/T(p)" if strong else " p·T(1)/T(p)"), src),
              th("speedup", model), th(eff, src), th(eff, model)]
    what = ("global batch fixed, split over the processes" if strong
            else "batch per process fixed: p processes do p times the work")
    body: list[Any] = [
        tag("h3", f"{mode.capitalize()} scaling — {what}"),
        table(header, rows, sortable=True, id_=f"scaling-{mode}", numeric=[True] * len(header),
              caption=f"{spec.config.name}, T = {spec.seq}, {spec.dtype}; time per step = the "
                      f"slowest rank's, median of {spec.steps} steps after {spec.warmup} "
                      "warm-up; T(1) measured on one process."),
    ]
    comm_rows = []
    for p in study.points[1:]:
        m, pr = p.measured, p.predicted
        comm_rows.append([cell(p.procs), cell(pr.gradient_bytes, TRAFFIC), cell(len(m.bucket_bytes)),
                          *_pair(m.comm_total_s, pr.comm_total_s, "s"),
                          *_pair(m.comm_exposed_s, pr.comm_exposed_s, "s"),
                          *_pair(p.busbw, pr.busbw, "B/s"), *_pair(m.skew_s, 0.0, "s")])
    if comm_rows:
        header = ["processes p", th("gradient bytes", "model"), th("DDP buckets", src),
                  th("all-reduce in flight", src), th("all-reduce in flight", model),
                  th("exposed (not hidden by backward)", src),
                  th("exposed (not hidden by backward)", model), th("bus bandwidth", src),
                  th("bus bandwidth", model), th("skew between ranks", src),
                  th("skew", "model: ranks step together")]
        body += [tag("h3", f"Gradient all-reduce per step ({mode})"),
                 table(header, comm_rows, sortable=True, id_=f"scaling-comm-{mode}",
                       numeric=[True] * len(header),
                       caption="busbw = gradient bytes / time in flight · 2(p−1)/p (nccl-tests); "
                               "exposed = all-reduce time after the last gradient was ready.")]
    facts: list[tuple[Any, Any]] = []
    for procs, sweep in sorted(study.collectives.items()):
        if sweep.fit is not None and sweep.points:
            f, big = sweep.fit, sweep.points[-1]
            facts.append((f"all-reduce α–β fit, {sweep.backend}, {procs} ranks",
                          Html(f"α = {esc(fmt(f.alpha_s, 's'))}, β = {esc(fmt(f.beta, 'B/s'))} "
                               f"(RMS residual {esc(fmt(100 * (f.residual or 0), '%'))}, "
                               f"{f.points} sizes {esc(fmt(sweep.points[0].bytes, TRAFFIC))}–"
                               f"{esc(fmt(big.bytes, TRAFFIC))}); busbw at {esc(fmt(big.bytes, TRAFFIC))}: ")
                          + value(big.busbw, "B/s", src)))
    for p in study.points[1:]:
        if p.predicted_from_one is not None:
            facts.append((f"sharing the machine, p = {p.procs}",
                          f"each process computes {p.sharing:.2f}× as long as one alone "
                          f"({fmt(p.predicted.compute_s, 's')} against "
                          f"{fmt(p.predicted_from_one.compute_s, 's')}, measured without DDP)"))
    if study.points and study.points[0].roofline_s is not None:
        first = study.points[0]
        facts.append(("roofline bound of one process's step",
                      Html(value(first.roofline_s, "s", "model") + esc(
                           f" at batch {first.per_process_batch} ({study.hardware})"))))
    if study.max_abs_error is not None:
        facts.append(("largest |measured/predicted − 1| (p > 1)",
                      value(100 * study.max_abs_error, "%")))
    if study.points:
        facts.append(("prediction", study.points[-1].predicted.label))
    body.append(kv_table(facts))
    body.append(tag("div", [d.picture(f"scaling_{mode}_{name}", f"{mode} scaling {name}")
                            for name in ("speedup", "efficiency", "space")], class_="grid2"))
    if command:
        body.append(tag("pre", command, class_="cmd"))
    for n in study.notes:
        body.append(note(n, "info"))
    return body


def scaling_section(d: Doc) -> Html:
    stage = d.report.scaling
    if stage is None:
        return d.missing("scaling", "scaling", "Parallel scaling: data-parallel training")
    body: list[Any] = []
    for mode, study in stage.studies.items():
        body += _scaling_study(d, mode, study, stage.commands.get(mode))
    for mode, why in stage.skipped.items():
        body.append(note(f"{mode} scaling: {why}", "info"))
    for text in stage.notes:
        body.append(note(text, "warn"))
    return section("scaling", "Parallel scaling: data-parallel training", body,
                   lead="The train step under DistributedDataParallel, one torchrun launch per "
                        "process count, shared by the studies (gloo on a CPU, NCCL with one process "
                        "per GPU): time per step, throughput, speedup and efficiency, and the "
                        "gradients' all-reduce, each beside its prediction (compute measured in the "
                        "same launch without DDP, all-reduce from DDP's buckets on the α–β fit of "
                        "that launch's sweep).")
