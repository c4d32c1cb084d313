"""The report's prediction section: the calibration it used and validate's quick sweep against
gptperf's accuracy targets, per case and per operation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptperf.format import apart_digits, ratio_range
from gptperf.report.doc import CALIBRATED, LEGEND, ROOFLINE, ROOFLINE_SOURCE, Doc, pct, th
from gptperf.report.html import (
    Html,
    cell,
    fmt,
    kv_table,
    note,
    section,
    table,
    tag,
)
from gptperf.validate.results import HOST_BOUND_SHARE

if TYPE_CHECKING:
    from gptperf.report.results import CalibrationStage, ValidationStage


def _curves_fact(cal: CalibrationStage) -> str:
    """How many curves, and how well each point is read from its neighbours: the median and the
    largest leave-one-out residual, with the curve it is of (a quick calibration's few points
    leave wide gaps, and a curve's bend between them reads as a large residual)."""
    if cal.median_residual is None:
        return (f"{cal.curves} (largest leave-one-out residual "
                f"{fmt(pct(cal.worst_residual), '%')})")
    return (f"{cal.curves}; leave-one-out residual: median {fmt(pct(cal.median_residual), '%')}, "
            f"largest {fmt(pct(cal.worst_residual), '%')} ({cal.worst_curve})")


def _calibration_facts(cal: CalibrationStage) -> list[Any]:
    """What the calibration is: device, date, age, torch, how it got here, what it holds."""
    info = cal.info
    assert info is not None
    how = ("reused from the cache" if cal.cached
           else f"measured by this report in {fmt(cal.measured_s, 's')}")
    rows: list[tuple[Any, Any]] = [
        ("calibration", tag("b", info.label)),
        ("device", info.device_name),
        ("made", f"{info.created_at} ({info.age_days:.1f} days old when this report ran)"),
        ("torch", info.torch_version),
        ("how", f"{how}; {'quick' if cal.quick else 'full'} calibration"),
        ("kernel time curves", _curves_fact(cal)),
        ("host costs · compiled recordings", f"{cal.host_costs} · {cal.compiled}"),
    ]
    if cal.path:
        rows.append(("cached at", tag("code", cal.path)))
    out: list[Any] = [kv_table(rows)]
    out += [note(n, "info") for n in cal.notes]
    if cal.calibration_notes:
        out.append(tag("details", tag("summary", f"the calibration's notes "
                                                 f"({len(cal.calibration_notes)})"),
                       tag("ul", [tag("li", n) for n in cal.calibration_notes])))
    return out


def _reached_and_target(value: float, target: float) -> tuple[Html, str]:
    """A target's reached value (a sortable cell) and the target, both as percentages with the
    decimals that keep them apart (`apart_digits`)."""
    digits = apart_digits(value, target)
    return cell(pct(value), "%", digits=digits), f"≤ {fmt(100 * target, '%', digits=digits)}"


def _verdict(word: str) -> Html:
    klass = {"PASS": "verdict-pass", "MISS": "verdict-miss"}.get(word, "verdict-none")
    return tag("span", word, class_=klass)


def _validation_body(d: Doc, stage: ValidationStage) -> list[Any]:
    """Targets, statistics, the picture and every case of validate's quick sweep."""
    r = stage.result
    assert r is not None
    src = d.measured
    n, total = len(r.points), stage.sweep_cases
    over = f"{n} of the quick sweep's {total} cases" if total and total != n else f"{n} cases"
    device = "GPU" if r.device_type == "cuda" else "CPU"
    # the targets hold over the whole sweep: a part of it gets its figures, not a verdict
    verdict_rows = [[v.label, *_reached_and_target(v.value, v.target),
                     _verdict("PARTIAL" if stage.partial else v.word)] for v in r.verdicts()]
    st, rs = r.stats, r.roofline_stats
    stat_rows = [[f"{CALIBRATED}: what this machine will take", cell(st.n),
                  cell(pct(st.median), "%"), cell(pct(st.p90), "%"), cell(pct(st.max), "%")],
                 [f"{ROOFLINE}: what the hardware allows", cell(rs.n), cell(pct(rs.median), "%"),
                  cell(pct(rs.p90), "%"), cell(pct(rs.max), "%")]]

    split = r.bound_stats()
    if split and split["host"].n and split["device"].n:  # where the error comes from
        stat_rows[1:1] = [[f"{CALIBRATED}, the {s.n} steps {what}", cell(s.n), cell(pct(s.median), "%"),
                           cell(pct(s.p90), "%"), cell(pct(s.max), "%")]
                          for s, what in ((split["host"], "the host holds up (predicted host time "
                                           f"≥ {HOST_BOUND_SHARE:g}× device time)"),
                                          (split["device"], "the device holds up"))]
    if r.spell_count:  # beside the verdict, which stays on every case
        ss = r.steady_stats
        stat_rows.insert(1, [f"{CALIBRATED}, without the {r.spell_count} case(s) run in a spell "
                             "of the machine's fork and join", cell(ss.n), cell(pct(ss.median), "%"),
                             cell(pct(ss.p90), "%"), cell(pct(ss.max), "%")])
    case_rows = []
    for p in r.points:
        roof = p.measured_s / p.roofline_s if p.roofline_s else None
        case_rows.append([tag("code", p.case), p.plan_label, cell(p.measured_s, "s"),
                          ratio_range(p.step_spread),
                          cell(p.expected_s, "s"), cell(p.ratio, "x"), cell(p.roofline_s, "s"),
                          cell(roof, "x")])
    body: list[Any] = [
        tag("h3", f"Against gptperf's accuracy targets ({device}), over {over}"),
        tag("div",
            table(["what", "reached", "target", "verdict"], verdict_rows,
                  numeric=[False, True, True, False], id_="prediction-targets",
                  caption="|measured / calibrated − 1|; p90 by nearest rank; per-operation "
                          "error = Σ|m − p| / Σm over the profiled operations ≥ 20 µs."
                          + (" PARTIAL: cases were left out for time; `gptperf validate --quick` "
                             "measures the whole sweep and gives the verdict." if stage.partial
                             else "")),
            table(["prediction", "cases", "median |m/p − 1|", "p90", "max"], stat_rows,
                  numeric=[False, True, True, True, True], id_="prediction-stats",
                  caption="The same cases against each prediction: the calibration's gain over "
                          "the roofline bound."),
            class_="grid2"),
        d.picture("validation", "predicted against measured step time",
                  "Measured against calibrated step time per case (log-log; the line is "
                  "measured = predicted, bands ±3 % and ±8 %); faint markers: the roofline "
                  "bound of the same case. A marker is the median step against the prediction "
                  "at the host samples' median; the table's measured / calibrated pairs each "
                  "step with its own host sample."),
        table(["case", "plan", th("measured", src), "steps p10–p90",
               th(f"{CALIBRATED} expected", d.calibrated), "measured / calibrated",
               th(ROOFLINE, ROOFLINE_SOURCE), f"measured / {ROOFLINE}"],
              case_rows, sortable=True, id_="prediction-cases",
              numeric=[False, False, True, True, True, True, True, True],
              caption="Each case of the sweep: median of its timed steps (the step `gptperf "
                      "bench` times) and their 10th and 90th percentiles over it (how far the "
                      "measurement moved while it ran), its calibrated expected time and its "
                      "roofline bound, for the plan it ran under; none of its shapes is one the "
                      "calibration measured. Where the host was sampled among the steps, measured "
                      "/ calibrated pairs each step with the prediction at the host sampled "
                      "nearest it, the median over the steps (the host can change speed within a "
                      "case); the calibrated column is charged at the samples' median."),
    ]
    if r.per_op:
        op_rows = []
        for e in r.per_op:
            worst = e.worst(1)
            miss = (f"{worst[0].name} {worst[0].phase}: {fmt(worst[0].measured_s, 's')} measured, "
                    f"{fmt(worst[0].expected_s, 's')} calibrated") if worst else "—"
            op_rows.append([tag("code", e.case), cell(len(e.ops)), cell(e.measured_s, "s"),
                            cell(pct(e.error), "%"), miss])
        body += [tag("h3", "Per operation (profiled cases)"),
                 table(["case", "operations ≥ 20 µs", th("device time per step", src),
                        "time-weighted error", "largest miss"], op_rows,
                       numeric=[False, True, True, True, False], id_="prediction-ops",
                       caption=f"Over all {r.per_op_count} operations: "
                               f"{fmt(pct(r.per_op_error), '%')} (Σ|m − p| / Σm).")]
    for sk in r.skipped:
        body.append(note(f"skipped {sk.case}: {sk.reason}", "warn"))
    body += [note(n, "warn") for n in stage.notes]
    body += [note(n, "info") for n in r.notes]
    body.append(tag("p", f"The sweep took {fmt(r.wall_time_s, 's')} of the "
                         f"{fmt(stage.budget_s, 's')} the report's time budget left it; "
                         "`gptperf validate` runs the full sweep (see Reproduce), and `gptperf "
                         "validate --random N` N configurations drawn off both sweeps and the "
                         "calibration's shapes: the model's error where nobody has looked.",
                    class_="lead"))
    return body


def prediction_section(d: Doc) -> Html:
    title = "How good is the prediction"
    cal, val = d.report.calibration, d.report.validation
    body: list[Any] = [note(LEGEND, "info")]
    if cal is None:
        body.append(note(d.failure("calibration") or "no calibration stage", "error"))
    elif cal.info is None:
        body += [note(n, "warn") for n in cal.notes] or [note("no calibration", "warn")]
    else:
        body += [tag("h3", "The calibration"), *_calibration_facts(cal)]
    if val is None:
        body.append(note(d.failure("validation") or "no validation stage", "error"))
    elif val.result is None:
        body += [note(n, "warn") for n in val.notes] or [note("no validation", "warn")]
    else:
        body += _validation_body(d, val)
    return section("prediction", title, body,
                   lead="gptperf validate's quick sweep on this device: configurations whose "
                        "shapes the calibration never measured, each measured and predicted, "
                        "scored against gptperf's accuracy targets.")
