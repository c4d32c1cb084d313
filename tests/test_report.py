"""`gptperf report`: the whole pipeline end to end (--quick, CPU), report.json read back into the
typed results, the parallel-scaling section, escaping, atomicity, CLI errors."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console

from gptperf.cli import build_parser, main
from gptperf.commands.report import print_failure
from gptperf.errors import UserError
from gptperf.report import ReportOptions, Stage, build_report
from gptperf.report import stages as report_stages
from gptperf.report.context import ReportData
from gptperf.report.page import SECTIONS, render_page

ROOT = Path(__file__).resolve().parent.parent


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory,
                 quick_cpu_cache: tuple[Path, dict]) -> tuple[Path, object]:
    """One real `--quick` report on this CPU, shared by the tests that read it. Its cache starts
    as a copy of the session's quick ceilings and calibration (tests/conftest.py), which
    test_ceilings measures: the device and calibration stages find them cached rather than
    measure the same again (their measuring paths: test_ceilings, test_calibrate and
    test_report_prediction)."""
    base = tmp_path_factory.mktemp("report")
    shutil.copytree(quick_cpu_cache[0], base / "cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("GPTPERF_CACHE_DIR", str(base / "cache"))  # ceilings are cached here, not in ~
    try:
        result = build_report(ReportOptions(out=base / "rep", device="cpu", quick=True,
                                            train_seconds=2))
    finally:
        mp.undo()
    return base / "rep", result


def test_quick_report_end_to_end(quick_report: tuple[Path, object]) -> None:
    out, result = quick_report
    assert result.ok, result.summary()
    assert result.written and not result.failed
    page = (out / "index.html").read_text(encoding="utf-8")
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))

    for sid, _ in SECTIONS:
        assert re.search(rf'<section[^>]*id="{sid}"', page), sid
    assert page.startswith("<!DOCTYPE html>\n<html")
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "index.html").stat().st_mode & 0o777 == 0o666 & ~umask  # not private tmp files
    assert "could not be drawn" not in page and "Failed stage" not in page
    from gptperf.perfmodel.ops import ROOFLINE_DEFINITION
    from gptperf.report.html import esc

    assert esc(ROOFLINE_DEFINITION) in page  # the legend says what the roofline bound's figures hold
    assert doc["format"] == "gptperf-report"
    for key in ("settings", "environment", "stages", "pictures", "traces", "commands", "wall_s"):
        assert key in doc
    assert [n for n, st in doc["stages"].items() if st["status"] != "ok"] == []
    assert set(doc["stages"]) == {s.name for s in report_stages.STAGES}

    # Every picture is a file beside the page and embedded in it; the page needs no other file.
    assert {"loss", "roofline", "ceilings"} <= set(doc["pictures"])
    for rel in doc["pictures"].values():
        assert (out / rel).is_file()
    assert page.count('src="data:image/png;base64,') >= len(doc["pictures"])
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<link rel=\"stylesheet\"" not in page and "<script src" not in page

    # Traces for Perfetto and TensorBoard beside it.
    traces = doc["traces"]
    assert any(p.endswith("trace.json") for p in traces.values())
    assert any((out / p).is_dir() and list((out / p).glob("*.pt.trace.json*"))
               for p in traces.values())
    json.loads((out / next(p for p in traces.values() if p.endswith("/trace.json"))).read_text())

    # The numbers the page shows are in report.json.
    train = doc["stages"]["train"]["data"]["result"]
    assert train["steps"] >= 10 and len(train["losses"]) == train["steps"]
    bench = doc["stages"]["bench"]["data"]["results"]
    assert set(bench) == {"train", "prefill", "decode"}
    assert bench["train"]["step_time_s"] > 0
    scores = doc["stages"]["samples"]["data"]["score"]["sentences"]
    assert [s["text"] for s in scores] == list(report_stages.SENTENCES)
    assert all(s["logprob"] < 0 for s in scores)


def _loaded(out: Path) -> tuple[dict, ReportData]:
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return doc, ReportData.from_dict(doc)


def test_report_json_round_trips_through_the_typed_results(quick_report: tuple[Path, object]) -> None:
    from gptperf.inference.sweep import InferenceResult
    from gptperf.measure.bench import BenchResult
    from gptperf.measure.ceilings import Ceilings
    from gptperf.measure.timer import PhaseTiming
    from gptperf.output import to_json
    from gptperf.perfmodel.transformer import Prediction
    from gptperf.plan import ExecutionPlan
    from gptperf.profiling.compare import Row
    from gptperf.profiling.run import ProfileResult
    from gptperf.report import results
    from gptperf.scaling.results import ScalingStudy
    from gptperf.score import ScoreResult
    from gptperf.train import TrainResult

    out, _ = quick_report
    doc, report = _loaded(out)
    # Every stage's result is its type again, the producers' own inside.
    assert isinstance(report.device, results.DeviceStage)
    assert isinstance(report.device.ceilings, Ceilings)
    assert isinstance(report.train, results.TrainStage)
    assert isinstance(report.train.result, TrainResult)
    assert isinstance(report.train.result.plan, ExecutionPlan)
    assert isinstance(report.samples.score, ScoreResult)
    assert [s.text for s in report.samples.score.sentences] == list(report_stages.SENTENCES)
    assert all(isinstance(p, Prediction) for p in report.model.predictions.values())
    assert set(report.model.predictions) == {"train", "prefill", "decode", "decode_nocache"}
    assert all(isinstance(r, BenchResult) and isinstance(r.timing, PhaseTiming)
               for r in report.bench.results.values())
    assert report.bench.results["train"].step_time_s == doc["stages"]["bench"]["data"][
        "results"]["train"]["step_time_s"]
    assert all(isinstance(p, ProfileResult) for p in report.profile.profiles.values())
    assert all(isinstance(r, Row) for r in report.profile.profiles["train"].comparison.components)
    assert isinstance(report.inference, InferenceResult)
    assert isinstance(report.roofline, results.RooflineStage)
    assert isinstance(report.scaling, results.ScalingStage)
    assert all(isinstance(s, ScalingStudy) for s in report.scaling.studies.values())
    assert set(report.records) == {s.name for s in report_stages.STAGES}
    assert report.settings.config.name == doc["settings"]["config"]["name"]

    # to_dict() of what was read is the document itself (NaN and inf are null in both).
    assert json.loads(to_json(report.to_dict())) == doc
    # The page drawn from what was read is the page the report wrote (from the live results).
    with open(out / "index.html", encoding="utf-8", newline="") as f:
        page = f.read()  # the sample may hold a lone \r: no newline translation
    assert render_page(report, out) == page



def test_the_kv_table_gives_the_calibrated_speedup_of_the_paths_as_they_ran(quick_report: tuple[Path, object]) -> None:
    """Beside the measured speedup and the roofline's (the work), the calibrated one: the recompute
    point's expected time over the cached point's, each for the plan it ran; '—' without them."""
    import dataclasses

    out, _ = quick_report
    _, report = _loaded(out)
    r = report.inference
    r.cache[-1] = dataclasses.replace(r.cache[-1], expected_s=2.5e-4)
    r.recompute[-1] = dataclasses.replace(r.recompute[-1], expected_s=7.5e-3)
    page = render_page(report, out)
    table = page[page.index('id="kv-table"'):]
    table = table[:table.index("</table>")]
    assert table.count("</th>") == 11
    last = table[table.rindex("<tr"):]
    assert '<td data-v="30.0" class="n">' in last  # 7.5 ms / 250 µs


def test_the_metrics_table_shows_the_sm_clock_where_nvml_read_one(quick_report: tuple[Path, object]) -> None:
    """A GPU bench's mean SM clock and its share of the card's maximum; '—' on this CPU."""
    import dataclasses

    out, _ = quick_report
    _, report = _loaded(out)
    page = render_page(report, out)
    table = page[page.index('id="metrics-table"'):]
    table = table[:table.index("</table>")]
    assert "SM clock" in table and "MHz" not in table  # a CPU: no clock
    train = report.bench.results["train"]
    held = dataclasses.replace(train.utilization, sm_clock_mean_mhz=1874.0, sm_clock_min_mhz=1410.0,
                               sm_clock_max_mhz=1980.0)
    report.bench.results["train"] = dataclasses.replace(train, utilization=held)
    page = render_page(report, out)
    table = page[page.index('id="metrics-table"'):]
    assert '<td data-v="1874.0" class="n">1874 MHz (95 %)</td>' in table[:table.index("</table>")]

def test_a_report_names_every_entry_of_its_folder_and_a_foreign_one_stops_the_next(
        quick_report: tuple[Path, object], tmp_path: Path) -> None:
    """The next report replaces the folder whole: it may, as long as the folder holds only what
    the earlier one wrote (its page, pictures, traces, checkpoint); a file a user put there
    stops it."""
    from gptperf.report.build import check_report_dir, report_files

    out, _ = quick_report
    doc = json.loads((out / "report.json").read_text())
    assert {e.name for e in out.iterdir()} <= report_files(doc)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    check_report_dir(copy)
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds 'notes.txt', which no gptperf report wrote"):
        check_report_dir(copy)


def test_report_json_of_another_schema_is_refused_in_one_line(
        quick_report: tuple[Path, object]) -> None:
    out, _ = quick_report
    doc, _ = _loaded(out)
    bad_version = {**doc, "version": 1}
    bad_format = {**doc, "format": "something-else"}
    bad_stage = json.loads(json.dumps(doc))
    bad_stage["stages"]["bench"]["data"]["results"]["train"]["schema"] = "gptperf.bench/99"
    bad_scaling = json.loads(json.dumps(doc))
    bad_scaling["stages"]["scaling"]["data"]["schema"] = "gptperf.report.scaling/0"
    missing = json.loads(json.dumps(doc))
    del missing["stages"]["train"]["data"]["result"]["losses"]
    for broken, words in ((bad_version, ["version 1", "reads version"]),
                          (bad_format, ["not a gptperf report"]),
                          (bad_stage, ["stage 'bench'", "'gptperf.bench/99'", "'gptperf.bench/1'"]),
                          (bad_scaling, ["stage 'scaling'", "gptperf.report.scaling/1"]),
                          (missing, ["stage 'train'", "malformed", "losses"])):
        with pytest.raises(UserError) as err:
            ReportData.from_dict(broken)
        text = str(err.value)
        assert "\n" not in text and all(w in text for w in words), text


def test_quick_report_has_the_parallel_scaling_section(quick_report: tuple[Path, object]) -> None:
    out, _ = quick_report
    doc, report = _loaded(out)
    stage = report.scaling
    assert set(stage.studies) == {"strong", "weak"} and not stage.skipped
    study = stage.studies["strong"]
    assert study.backend == "gloo" and [p.procs for p in study.points] == [1, 2]
    one, two = study.points
    assert one.global_batch == two.global_batch == two.per_process_batch * 2  # strong: fixed
    assert one.speedup == pytest.approx(1.0) and two.speedup == pytest.approx(
        one.step_s / two.step_s)
    assert two.measured.comm_total_s > 0 and two.busbw > 0 and two.predicted.busbw > 0
    assert two.predicted.step_s > 0 and study.collectives[2].fit is not None
    # the studies shared their launches: one per process count, the p = 2 point measured once
    weak = stage.studies["weak"]
    assert [launch["procs"] for launch in study.launches] == [1, 2] == [p.procs for p in weak.points]
    assert weak.points[1].measured == two.measured and weak.points[1].per_process_batch == 2
    assert weak.points[1].efficiency == pytest.approx(weak.points[0].step_s / two.step_s)
    for mode in ("strong", "weak"):
        for name in ("speedup", "efficiency", "space"):
            assert (out / doc["pictures"][f"scaling_{mode}_{name}"]).is_file()
        assert any(c.command.startswith(f"gptperf scale --mode {mode} --procs 1,2")
                   for c in report.commands)
    page = (out / "index.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="scaling"'):]
    section = section[:section.index("</section>")]
    for words in ("speedup", "efficiency S(p)/p", "bus bandwidth", "skew", "exposed",
                  "tokens/s per process", "gptperf scale --mode strong", "α–β fit",
                  'id="pic-scaling_strong_speedup"', 'id="pic-scaling_weak_speedup"'):
        assert words in section, words


def test_scaling_runs_every_gpu_and_both_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Process counts and batches of the scaling stage: 1, 2 on a CPU; every GPU there is."""
    import dataclasses

    import torch

    from gptperf.report import resolve_settings

    cpu = resolve_settings(ReportOptions(device="cpu"))
    specs = report_stages.scaling_specs(cpu)
    assert set(specs) == {"strong", "weak"}
    assert specs["strong"].procs == specs["weak"].procs == (1, 2)
    assert specs["strong"].per_process_batch(2) == specs["weak"].per_process_batch(2)
    assert set(report_stages.scaling_specs(dataclasses.replace(cpu, quick=True))) == {"strong", "weak"}
    gpu = dataclasses.replace(cpu, device="cuda", device_type="cuda")
    for count, procs in ((1, (1,)), (6, (1, 2, 4, 6)), (8, (1, 2, 4, 8))):
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        specs = report_stages.scaling_specs(gpu)
        assert specs["strong"].procs == procs
        assert all(specs["strong"].batch % p == 0 for p in procs)
        assert set(specs) == ({"strong"} if count == 1 else {"strong", "weak"})


def test_reproduce_commands_parse(quick_report: tuple[Path, object]) -> None:
    out, _ = quick_report
    doc = json.loads((out / "report.json").read_text())
    parser = build_parser()
    whats = {c["what"] for c in doc["commands"]}
    assert any("bench" in w for w in whats) and any("profile" in w for w in whats)
    for c in doc["commands"]:
        argv = shlex.split(c["command"], comments=True)
        assert argv[0] == "gptperf"
        parser.parse_args(argv[1:])  # argparse exits (SystemExit) on a bad flag


def test_the_model_commands_reproduce_the_pages_predictions(
        quick_report: tuple[Path, object], monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Pure Python, so run: each `gptperf model` command the page lists gives the roofline bound
    and the calibrated time the page shows for that step."""
    from gptperf.cli import main

    out, _ = quick_report
    doc = json.loads((out / "report.json").read_text())
    model = doc["stages"]["model"]["data"]
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(out.parent / "cache"))  # the report's calibration
    commands = [c for c in doc["commands"] if c["what"].startswith("performance model: ")]
    assert {c["what"].split(": ")[1] for c in commands} == set(model["expected"]) - {"decode_nocache"}
    for c in commands:
        kind = c["what"].split(": ")[1]
        assert main(shlex.split(c["command"])[1:] + ["--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["totals"] == pytest.approx(model["predictions"][kind]["totals"]), kind
        assert got["expected"]["step_time_s"] == pytest.approx(model["expected"][kind]["step_time_s"]), kind


def test_the_page_prints_bytes_moved_as_the_terminal_does(quick_report: tuple[Path, object]) -> None:
    """A step's traffic reads the same on the page as in `gptperf model` (decimal, like the
    bandwidths it is divided by); memory stays in binary units on both."""
    from gptperf.output import binary_bytes, si
    from gptperf.report.html import TRAFFIC, fmt

    assert fmt(1.24e9, TRAFFIC) == si(1.24e9, "B") == "1.24 GB"
    assert fmt(2**30, "B") == binary_bytes(2**30) == "1.00 GiB"
    out, _ = quick_report
    page = (out / "index.html").read_text(encoding="utf-8")
    model = json.loads((out / "report.json").read_text(encoding="utf-8"))["stages"]["model"]["data"]
    table = page[page.index('id="predictions"'):]
    table = table[:table.index("</table>")]
    for kind, p in model["predictions"].items():
        row = table[table.index(f"<code>{kind}</code>"):]
        row = row[:row.index("</tr>")]
        assert f">{si(p['totals']['bytes'], 'B')}<" in row, (kind, row)


# --- fake stages: the framework without the cost ----------------------------------------------


def _ok_stage(ctx, progress) -> dict:
    progress(1, 2, "halfway")
    return {"value": 42}


def _sample_stage(text: str):
    from gptperf.report.results import Sample, SamplesStage
    from gptperf.score import ScoreResult, SentenceScore, TokenScore

    def run(ctx, progress) -> SamplesStage:
        score = ScoreResult([10], "\n", [SentenceScore("<img src=x onerror=alert(1)>",
                                                       [TokenScore(60, "<", -1.0),
                                                        TokenScore(105, "i", -2.0)])])
        return SamplesStage(Sample("<b>", text, 3, 0.8, None, 1, True, 0, 0.1), score)
    return run


def _failing_stage(ctx, progress) -> dict:
    raise RuntimeError("the disk is on fire\nsecond line")


def _interrupted_stage(ctx, progress) -> dict:
    (ctx.dir / "partial.txt").write_text("half")
    raise KeyboardInterrupt


def _opts(out: Path, **kw) -> ReportOptions:
    return ReportOptions(out=out, device="cpu", **kw)


def test_sample_text_is_escaped(tmp_path: Path) -> None:
    evil = "</pre><script>alert('x')</script> & done"
    stages = [Stage("a", "t", _ok_stage, 1.0),
              Stage("samples", "Samples and scores", _sample_stage(evil), 1.0)]
    result = build_report(_opts(tmp_path / "rep"), stages)
    assert result.written
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; done" in page
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script>") == 1  # the page's own sorting script, nothing else
    assert json.loads((tmp_path / "rep" / "report.json").read_text())[
        "stages"]["samples"]["data"]["sample"]["text"] == evil


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_failed_stage_keeps_previous_report_and_names_it(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    first = build_report(_opts(out), [Stage("a", "A", _ok_stage, 1.0)])
    assert first.ok and first.written
    before = _tree(out)

    result = build_report(_opts(out), [Stage("a", "A", _ok_stage, 1.0),
                                       Stage("boom", "Boom", _failing_stage, 1.0),
                                       Stage("never", "N", _ok_stage, 1.0)])
    assert not result.ok and not result.written
    assert result.failed == ["boom"]
    assert [r.status for r in result.records] == ["ok", "failed", "pending"]
    assert result.records[1].error == "RuntimeError: the disk is on fire"
    assert _tree(out) == before  # the previous complete report, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temporary folder left
    assert result.error == "RuntimeError: the disk is on fire" and result.kept_previous
    console = _quiet()
    print_failure(result, console)  # what the command says
    said = console.file.getvalue()
    assert "stage 'boom' failed" in said and "previous report is kept" in said
    assert result.log and "the disk is on fire" in Path(result.log).read_text()


def test_report_stage_of_the_wrong_type_fails_naming_it(tmp_path: Path) -> None:
    result = build_report(_opts(tmp_path / "rep"), [Stage("bench", "B", _ok_stage, 1.0)])
    assert not result.ok and result.failed == ["bench"]
    assert result.error == "TypeError: stage 'bench' returned a dict, not a BenchStage"


def test_a_section_without_its_stage_says_why(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    build_report(_opts(out, keep_going=True), [Stage("train", "Train", _failing_stage, 1.0),
                                              Stage("a", "A", _ok_stage, 1.0)])
    page = (out / "index.html").read_text()

    def body(section_id: str) -> str:
        return page.split(f'id="{section_id}"', 1)[1].split("</section>", 1)[0]

    assert "stage &#x27;train&#x27; failed: RuntimeError: the disk is on fire" in body("training")
    assert "stage &#x27;samples&#x27; did not run in this report" in body("samples")
    assert "stage &#x27;scaling&#x27; did not run in this report" in body("scaling")


def test_failed_stage_without_previous_report_leaves_none(tmp_path: Path) -> None:
    result = build_report(_opts(tmp_path / "rep"), [Stage("boom", "B", _failing_stage, 1.0)])
    assert not result.ok and result.failed == ["boom"]
    assert list(tmp_path.iterdir()) == []


def test_keep_going_writes_page_with_the_failed_section_marked(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = build_report(_opts(out, keep_going=True),
                          [Stage("device", "Device", _failing_stage, 1.0),
                           Stage("a", "A", _ok_stage, 1.0)])
    assert result.written and not result.ok and result.failed == ["device"]
    page = (out / "index.html").read_text()
    assert "Failed stage(s): device" in page
    assert "stage &#x27;device&#x27; failed: RuntimeError: the disk is on fire" in page
    doc = json.loads((out / "report.json").read_text())
    assert doc["stages"]["a"]["status"] == "ok" and doc["stages"]["a"]["data"] == {"value": 42}


def test_ctrl_c_keeps_previous_report_and_names_the_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    monkeypatch.setattr(report_stages, "STAGES", [Stage("a", "A", _ok_stage, 1.0)])
    assert main(["report", "--device", "cpu", "--out", str(out)]) == 0
    before = _tree(out)
    monkeypatch.setattr(report_stages, "STAGES", [Stage("a", "A", _ok_stage, 1.0),
                                                  Stage("train", "T", _interrupted_stage, 1.0)])
    capsys.readouterr()
    assert main(["report", "--device", "cpu", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted during stage 'train'" in err
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_cli_failed_stage_exits_2_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(report_stages, "STAGES", [Stage("profile", "P", _failing_stage, 1.0)])
    assert main(["report", "--device", "cpu", "--out", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert "stage 'profile' failed: RuntimeError: the disk is on fire" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_a_report_told_to_stop_exits_as_the_signal_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM during a stage: the stage and what was kept are named, nothing is written, and the
    exit status is 128 + 15 (not Ctrl-C's 130)."""
    import signal

    def killed(ctx, progress) -> dict:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal did not stop the stage")

    def outside(signum: int, frame: object) -> None:  # the command did not take it: fail, not die
        raise AssertionError("SIGTERM reached the test")

    monkeypatch.setattr(report_stages, "STAGES", [Stage("profile", "P", killed, 1.0)])
    previous = signal.signal(signal.SIGTERM, outside)
    try:
        code = main(["report", "--device", "cpu", "--out", str(tmp_path / "r")])
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM, err
    assert "gptperf report: stopped by signal 15 during stage 'profile'" in " ".join(err.split())
    assert err.strip().splitlines()[-1] == "gptperf report: stopped by signal 15"
    assert not (tmp_path / "r").exists()


def test_a_failed_stages_message_is_printed_as_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The reason is an error's text: brackets in it are not rich markup (a `[/…]` crashed it)."""
    def failing(ctx, progress) -> dict:
        raise RuntimeError("no space left on [/dev/shm] for [bold] tensors")

    monkeypatch.setattr(report_stages, "STAGES", [Stage("profile", "P", failing, 1.0)])
    assert main(["report", "--device", "cpu", "--out", str(tmp_path / "r")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "stage 'profile' failed: RuntimeError: no space left on [/dev/shm] for [bold] tensors" in err


@pytest.mark.parametrize("argv, message", [
    (["--train-seconds", "0"], "--train-seconds must be a number of seconds above 0 and at most 86400"),
    (["--train-seconds", "nan"], "--train-seconds must be a number of seconds above 0 and at most 86400"),
    (["--train-seconds", "1e8"], "a day: the report's run is a demonstration"),
    (["--dtype", "fp16", "--device", "cpu"], "fp16' needs a CUDA GPU"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_cli_bad_values_are_one_line_errors(
        argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("gptperf report: error:")
    assert not (tmp_path / "r").exists()


def test_a_report_that_would_not_fit_is_refused_before_any_stage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU out of memory is killed without a word: the report checks its steps first, the
    scaling study's two processes side by side included (gpt2's train step alone fits 3 GiB,
    two of them do not)."""
    import gptperf.memguard
    from gptperf.perfmodel.memory import memory_breakdown
    from gptperf.perfmodel.workload import Workload as Work
    from gptperf.report import stages
    from gptperf.report.build import check_memory_fits, resolve_settings

    def free(gib: float) -> None:
        monkeypatch.setattr(gptperf.memguard, "available_memory", lambda device: (gib * 2**30, "(test)"))

    monkeypatch.setattr(stages, "STAGES", [Stage("device", "Device", lambda ctx, p: pytest.fail("a stage ran"), 1.0)])
    free(1.0)
    assert main(["report", "--device", "cpu", "--preset", "gpt2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("gptperf report: error: out of memory before starting: "
                                              "train of gpt2 at batch 12")
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())  # no staging folder left
    # the scaling study: each process's train step fits, the two together do not
    settings = resolve_settings(_opts(tmp_path / "r", preset="gpt2"))
    spec = stages.scaling_specs(settings)["strong"]
    one = memory_breakdown(settings.config, Work("train", spec.batch // 2, spec.seq, "fp32")).total
    train = settings.workloads["train"]
    assert memory_breakdown(settings.config, Work("train", train.batch, train.seq, "fp32")).total < 1.5 * one
    free(1.5 * one / 2**30)
    with pytest.raises(UserError, match=r"at batch 2, seq 32, fp32 needs about .* each × 2 processes"):
        check_memory_fits(settings)


@pytest.mark.parametrize("argv", [["--preset", "nope"], ["--dtype", "int8"], ["--bogus"],
                                  ["--train-seconds", "soon"]])
def test_cli_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gptperf report: error:")  # the sub-command named, as for a UserError


def test_out_folder_that_is_not_a_report_is_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["report", "--device", "cpu", "--out", str(precious)]) == 2
    assert "holds no gptperf report" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        build_report(_opts(file), [])
    # its profile stage records traces there: a path torch.profiler would write unescaped
    with pytest.raises(UserError, match="torch.profiler writes into the trace unescaped"):
        build_report(_opts(tmp_path / 'r"q'), [])
    assert not (tmp_path / 'r"q').exists()


def test_command_module_imports_no_torch() -> None:
    import subprocess

    code = ("import sys, gptperf.commands.report as r, argparse; p = argparse.ArgumentParser(); "
            "r.add_arguments(p); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="needs Debian's chromium (apt-get install chromium)")
def test_page_in_headless_chromium(quick_report: tuple[Path, object]) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from check_report_browser import check_page
    finally:
        sys.path.pop(0)
    out, _ = quick_report
    assert check_page(out) == []


def test_defaults_on_cpu() -> None:
    from gptperf.report import resolve_settings

    s = resolve_settings(ReportOptions(device="cpu"))
    assert (s.preset, s.dtype, s.compile, s.config.attention) == ("tiny", "fp32", False, "math")
    assert s.train_seconds == 50.0
    assert (s.workloads["train"].batch, s.workloads["train"].seq) == (12, 64)
    assert s.workloads["decode"].seq == s.config.block_size == 256
    q = resolve_settings(ReportOptions(device="cpu", quick=True, preset="tiny", compile=True))
    assert (q.config.n_layer, q.config.n_embd, q.compile) == (2, 64, True)
    assert q.model_overrides == {"attention": "math", "n_layer": 2, "n_head": 2, "n_embd": 64,
                                 "block_size": 64}
    assert report_stages.model_flags(q) == ("--preset tiny --attention math --n-layer 2 "
                                            "--n-head 2 --n-embd 64 --block-size 64")


def test_the_training_run_gives_back_what_the_stages_before_it_ran_over() -> None:
    from gptperf.report import resolve_settings

    s = resolve_settings(ReportOptions(device="cpu"))  # default 50 s; device + calibration: 40 s
    assert report_stages.training_seconds(s, 30.0) == 50.0
    assert report_stages.training_seconds(s, 48.0) == pytest.approx(42.0)
    assert report_stages.training_seconds(s, 200.0) == 25.0  # never below half
    asked = resolve_settings(ReportOptions(device="cpu", train_seconds=50))
    assert asked.train_seconds_asked and report_stages.training_seconds(asked, 200.0) == 50.0
    quick = resolve_settings(ReportOptions(device="cpu", quick=True))
    assert report_stages.training_seconds(quick, 200.0) == quick.train_seconds
    gpu = dataclasses.replace(s, device="cuda", device_type="cuda", train_seconds=45.0)
    assert report_stages.GPU_BEFORE_TRAIN_S == 35.0  # its own guide: the CPU stages' are 40 s
    assert report_stages.training_seconds(gpu, 30.0) == 45.0
    assert report_stages.training_seconds(gpu, 55.0) == pytest.approx(25.0)  # a quick calibration
    assert report_stages.training_seconds(gpu, 200.0) == 22.5


def test_a_compiled_training_run_is_fitted_to_its_budget_by_the_calibrated_step() -> None:
    """A compiled run's step is not timed (that would compile it once more, and the eager step
    timed instead is slower): its calibrated expected time fits the run, where the calibration
    can cost it; an eager run, or no usable calibration, times an eager step as before (None)."""
    from test_expected import flat_calibration

    from gptperf.perfmodel import Workload
    from gptperf.perfmodel.expected import expected
    from gptperf.plan import ExecutionPlan
    from gptperf.report import resolve_settings

    s = resolve_settings(ReportOptions(device="cpu"))
    gpu = dataclasses.replace(s, device="cuda", device_type="cuda", compile=True)
    cfg, gpu_cfg = (report_stages._train_config(x, None, 100) for x in (s, gpu))
    cal = flat_calibration("cuda")
    plan = ExecutionPlan.default("train", "cuda", compile=True, attention=s.config.attention, dtype=s.dtype)
    want = expected(s.config, Workload("train", cfg.batch, cfg.seq, s.dtype), plan, cal).step_time_s
    assert plan.compiled and report_stages._expected_step_time(gpu, gpu_cfg, cal) == pytest.approx(want)
    assert report_stages._expected_step_time(s, cfg, flat_calibration("cpu")) is None  # eager
    assert report_stages._expected_step_time(gpu, gpu_cfg, None) is None
    bf16_only = flat_calibration("cuda", matmul={"bf16": cal.matmul["bf16"]})  # no fp32 matmul
    assert report_stages._expected_step_time(gpu, gpu_cfg, bf16_only) is None


def test_progress_accepts_the_library_hook_shapes() -> None:
    from gptperf.report.build import StageProgress

    seen: list[tuple] = []
    p = StageProgress(lambda done, total, note: seen.append((done, total, note)))
    p("compiling")  # inference: (message)
    p("matmul fp32", 3, 8)  # measure.timer: (label, done, total)
    p(5, 10, "loss 2.1")
    p.update(7, 10)
    assert seen == [(None, None, "compiling"), (3, 8, "matmul fp32"), (5, 10, "loss 2.1"),
                    (7, 10, None)]


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="needs Debian's chromium (apt-get install chromium)")
def test_clicking_a_header_sorts_by_number_in_chromium(tmp_path: Path) -> None:
    from gptperf.report.html import cell, page, section, table, tag

    rows = [[tag("code", name), cell(t, "s")] for name, t in
            (("mlp.fc", 2e-3), ("attn.qkv", 3e-5), ("lm_head", 0.25), ("ln_1", None))]
    doc = page("t", "h", [("s", "S")],
               [section("s", "S", table(["operation", "time"], rows, sortable=True, id_="ops"))])
    # Click "time" once (ascending) and again (descending); record the first column each time.
    probe = """<script>
      function order() { return Array.from(document.querySelectorAll('#ops tbody tr'))
                           .map(r => r.cells[0].textContent).join(','); }
      var th = document.querySelectorAll('#ops th')[1];
      th.click(); document.body.setAttribute('data-asc', order());
      th.click(); document.body.setAttribute('data-desc', order());
    </script></body>"""
    (tmp_path / "index.html").write_text(doc.replace("</body>", probe))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from check_report_browser import FLAGS, find_chromium
    finally:
        sys.path.pop(0)
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([find_chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                              (tmp_path / "index.html").as_uri()],
                             capture_output=True, text=True, timeout=90, check=True).stdout
    assert 'data-asc="attn.qkv,mlp.fc,lm_head,ln_1"' in out  # numbers first, then "—"
    assert 'data-desc="lm_head,mlp.fc,attn.qkv,ln_1"' in out  # "—" stays last


def _study_by_hand(mode: str = "weak"):
    """A ScalingStudy with every part the report's run leaves out (threads, what-if), built
    without a launch."""
    from gptperf.measure.collectives import CollectivePoint, CollectiveSweep
    from gptperf.model.config import preset
    from gptperf.perfmodel import get_hardware
    from gptperf.perfmodel.comm import (
        AlphaBeta,
        ddp_buckets,
        gradient_tensors,
        predict_ddp_step,
        what_if,
    )
    from gptperf.scaling.results import (
        Measured,
        ScalePoint,
        ScaleSpec,
        ScalingStudy,
        SpaceCell,
        ThreadPoint,
        WhatIfRow,
    )

    config = preset("tiny")
    spec = ScaleSpec(config, mode=mode, procs=(1, 2), threads=(1, 2),
                     batch=16 if mode == "strong" else 4, seq=32, what_if=((1, 8), (2, 8)))
    link = AlphaBeta(1e-4, 1e9, 2, "measured: by hand", 0.1, 6)
    buckets = ddp_buckets(gradient_tensors(config))
    b = spec.per_process_batch

    def measured(p: int, step: float) -> Measured:
        return Measured(p, 1, b(p), step, 0.3 * step, 0.5 * step, 0.2 * step, 0.01, 0.004, 1e-4,
                        tuple(bk.bytes for bk in buckets), (step, 1.1 * step), (5.5, 5.4))

    def predicted(p: int, label: str):
        return predict_ddp_step(buckets, forward_s=0.003, backward_s=0.005, optimizer_s=0.002,
                                link=link, world_size=p, label=label)

    points = [ScalePoint(1, b(1), 32, measured(1, 0.01), predicted(1, "one"), 0.01, mode, 0.005),
              ScalePoint(2, b(2), 32, measured(2, 0.013), predicted(2, "two"), 0.01, mode, 0.005,
                         predicted(2, "from one"))]
    threads = [ThreadPoint(1, 4, 32, 0.01, 0.01, mode, 2), ThreadPoint(2, 8, 32, 0.013, 0.01, mode, 2)]
    space = [SpaceCell(1, 4, 0.01, 12800.0), SpaceCell(2, 4, 0.013, 19692.3)]
    sweep = CollectiveSweep("gloo", 2, "cpu", "fp32", [CollectivePoint(4096, 1e-4, 4.1e7, 4.1e7)],
                            link, 10)
    hw = get_hardware("h100-sxm")
    rows = [WhatIfRow(what_if(config, nodes=n, gpus_per_node=g, per_gpu_batch=4, seq=32,
                              dtype="bf16", hardware=hw), 1.5 * n * g, 0.9)
            for n, g in spec.what_if]
    return ScalingStudy(spec, points, threads, space, {2: sweep}, rows, "gloo", "cpu",
                        "datasheet: cpu", [{"procs": 1, "threads": 1, "wall_s": 3.0}],
                        {"torch": "x"}, ["a note"])


def test_scaling_study_round_trips_with_threads_and_what_if() -> None:
    import dataclasses

    from gptperf.output import to_json
    from gptperf.scaling.results import ScalingStudy

    study = _study_by_hand("weak")
    doc = json.loads(to_json(study.to_dict()))
    back = ScalingStudy.from_dict(doc)
    assert json.loads(to_json(back.to_dict())) == doc
    assert back.thread_points[1].speedup == study.thread_points[1].speedup
    assert back.points[1].sharing == study.points[1].sharing
    assert back.points[1].busbw == study.points[1].busbw
    assert back.what_if[1].point.tokens_per_s == study.what_if[1].point.tokens_per_s
    # the space's batches come back as the explicit list the study ran
    assert back.spec.grid_batches == study.spec.grid_batches
    assert dataclasses.replace(back.spec, space_batches=None) == study.spec
    with pytest.raises(UserError, match="'gptperf.scale/1'"):
        ScalingStudy.from_dict({**doc, "schema": "gptperf.scale/2"})


@pytest.mark.parametrize("failures", [1, 2])
def test_a_failed_scaling_launch_runs_once_more_then_fails_the_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
    from gptperf.scaling import study as scaling_study
    from gptperf.scaling.launch import LaunchError

    calls: list[int] = []

    def run(specs, progress=None):
        calls.append(len(calls))
        if len(calls) <= failures:
            raise LaunchError("rank 1 failed: UserError: no bandwidth to fit (log: /tmp/x.log)")
        return [_study_by_hand(spec.mode) for spec in specs]

    monkeypatch.setattr(scaling_study, "run_scaling_studies", run)
    out = tmp_path / "rep"
    result = build_report(_opts(out, quick=True),
                          [Stage("scaling", "Parallel scaling", report_stages.stage_scaling, 1.0)])
    assert len(calls) == 2  # both studies' shared launches, tried twice at most
    if failures == 1:
        assert result.ok, result.error
        report = ReportData.from_dict(json.loads((out / "report.json").read_text()))
        assert set(report.scaling.studies) == {"strong", "weak"}
        assert report.scaling.notes == ["strong and weak scaling: a launch failed (rank 1 failed: "
                                        "UserError: no bandwidth to fit (log: /tmp/x.log)); the "
                                        "studies ran again"]
        assert "the studies ran again" in (out / "index.html").read_text()
    else:
        assert not result.ok and result.failed == ["scaling"]
        assert result.error == ("strong and weak scaling: rank 1 failed: UserError: no bandwidth "
                                "to fit (log: /tmp/x.log)")


def test_one_study_retried_says_the_study_ran_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with one process count (one GPU) runs the strong study alone: its retry note
    names that study and says it, not "the studies", ran again."""
    from gptperf.scaling import study as scaling_study
    from gptperf.scaling.launch import LaunchError

    calls: list[int] = []

    def run(specs, progress=None):
        calls.append(len(specs))
        if len(calls) == 1:
            raise LaunchError("rank 0 failed: UserError: no bandwidth to fit (log: /tmp/x.log)")
        return [_study_by_hand(spec.mode) for spec in specs]

    only_strong = report_stages.scaling_specs
    monkeypatch.setattr(report_stages, "scaling_specs", lambda s: {"strong": only_strong(s)["strong"]})
    monkeypatch.setattr(scaling_study, "run_scaling_studies", run)
    out = tmp_path / "rep"
    result = build_report(_opts(out, quick=True),
                          [Stage("scaling", "Parallel scaling", report_stages.stage_scaling, 1.0)])
    assert result.ok, result.error
    assert calls == [1, 1]  # one study, launched twice
    report = ReportData.from_dict(json.loads((out / "report.json").read_text()))
    assert set(report.scaling.studies) == {"strong"}
    assert report.scaling.notes == ["strong scaling: a launch failed (rank 0 failed: UserError: no "
                                    "bandwidth to fit (log: /tmp/x.log)); the study ran again"]


@pytest.mark.parametrize("device_type, flagged", [("cpu", True), ("cuda", False)])
def test_the_summary_flags_a_slow_stage_against_its_budget_on_a_cpu_only(device_type: str,
                                                                          flagged: bool) -> None:
    """A stage's budget is a guide on the 2-core CPU: a stage 1.5× over it is flagged there; on a
    GPU (compiles, larger sweeps) the summary says nothing of it. A stage within it never."""
    from types import SimpleNamespace

    from gptperf.commands.report import print_summary
    from gptperf.report.build import ReportResult
    from gptperf.report.context import StageRecord

    records = [StageRecord("bench", "Benchmarks", "ok", 37.2, 15.0), StageRecord("model", "Model", "ok", 1.0, 15.0)]
    result = ReportResult(True, Path("rep"), SimpleNamespace(device_type=device_type), records, 40.0)
    console = Console(file=io.StringIO(), width=200)
    print_summary(result, console)
    out = console.file.getvalue()
    assert ("over its budget of 15 s" in out) == flagged
    assert out.count("over its budget") == (1 if flagged else 0)
