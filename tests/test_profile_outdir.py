"""`gptperf profile --out`: a folder replaced whole must be new, empty or an earlier profile (the
rule `gptperf report` applies, one function: gptperf.writable.check_replaceable_dir), for a run
and for a `--trace` re-analysis alike; a user's files are never replaced nor written beside."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptperf.cli import main
from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.profiling.recorded import check_profile_dir, is_profile_document
from gptperf.writable import check_replaceable_dir

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = preset("tiny", n_layer=1, n_head=2, n_embd=32, block_size=32)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A profile folder of a small train step (what `--trace` re-analyses)."""
    from gptperf.profiling import profile_workload

    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("rec") / "p1"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTPERF_CACHE_DIR", str(cache))
        profile_workload(CONFIG, "train", batch=2, seq=16, device="cpu", out_dir=out, wait=0,
                         warmup=1, active=2, overhead=False, plot=False, hardware="cpu")
        yield out


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# --- the shared rule --------------------------------------------------------------------------


def _ours(doc: object) -> bool:
    return isinstance(doc, dict) and doc.get("format") == "mine"


def test_replaceable_dir_absent_empty_or_ours(tmp_path: Path) -> None:
    kw = {"what": "thing", "marker_file": "m.json", "is_ours": _ours}
    assert check_replaceable_dir(tmp_path / "new" / "deeper", "--out", **kw) == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    check_replaceable_dir(tmp_path / "empty", "--out", **kw)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "m.json").write_text(json.dumps({"format": "mine"}))
    (ours / "other.txt").write_text("x")
    check_replaceable_dir(ours, "--out", **kw)
    assert not (tmp_path / "new").exists()  # the check creates nothing


@pytest.mark.parametrize("marker", [None, '{"format": "yours"}', "not json", "[1, 2]"])
def test_replaceable_dir_refuses_a_folder_that_is_not_ours(tmp_path: Path, marker: str | None) -> None:
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    if marker is not None:
        (folder / "m.json").write_text(marker)
    with pytest.raises(UserError) as err:
        check_replaceable_dir(folder, "--out", what="thing", marker_file="m.json", is_ours=_ours)
    msg = str(err.value)
    assert "'" + str(folder) + "'" in msg and "not a gptperf thing folder" in msg
    assert "new or empty folder" in msg and "\n" not in msg
    assert (folder / "notes.txt").read_text() == "precious"


def test_replaceable_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_replaceable_dir(tmp_path / "f", "--out", what="thing", marker_file="m.json",
                              is_ours=_ours)


def test_report_uses_the_same_rule(tmp_path: Path) -> None:
    from gptperf.report.build import check_report_dir
    from gptperf.report.context import MARKER

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no gptperf report"):
        check_report_dir(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"format": MARKER}))
    check_report_dir(tmp_path)


def test_profile_document_recognised_by_schema_or_legacy_keys() -> None:
    legacy = {"workload": {"kind": "train"}, "coverage": 1.0, "by_method_s": {},
              "attribution_method": "x", "paths": {}}
    assert is_profile_document({"schema": "gptperf.profile/1", **legacy})
    assert is_profile_document({"schema": "gptperf.profile/7"})  # a newer gptperf's profile
    assert is_profile_document(legacy)  # written before profile.json carried a schema
    assert not is_profile_document({"my": "x"})
    assert not is_profile_document({"schema": "gptperf.bench/1", **legacy})
    assert not is_profile_document({k: v for k, v in legacy.items() if k != "paths"})
    assert not is_profile_document([legacy])


def test_profile_json_carries_its_schema(recorded: Path) -> None:
    doc = json.loads((recorded / "profile.json").read_text())
    assert doc["schema"] == "gptperf.profile/1" and is_profile_document(doc)
    check_profile_dir(recorded)  # an earlier profile may be replaced


# --- the command ------------------------------------------------------------------------------


def test_run_refuses_a_folder_with_a_foreign_profile_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        cache: None) -> None:
    import gptperf.steps.build

    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("built the step before checking --out")

    monkeypatch.setattr(gptperf.steps.build, "build_step", never)
    home = tmp_path / "myproj"
    home.mkdir()
    (home / "notes.txt").write_text("precious\n")
    (home / "profile.json").write_text('{"my":"x"}\n')
    before = _files(home)
    err = _refused(["profile", "--out", str(home), "--batch", "2", "--seq", "16",
                    "--device", "cpu"], capsys)
    assert f"--out '{home}'" in err and "not a gptperf profile folder" in err
    assert "replaces its folder whole" in err
    assert _files(home) == before


def test_reanalysis_refuses_a_users_folder(recorded: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], cache: None) -> None:
    home = tmp_path / "myproj2"
    home.mkdir()
    (home / "ops.csv").write_text("my,own\n1,2\n")
    before = _files(home)
    err = _refused(["profile", "--trace", str(recorded / "trace.json"), "--out", str(home)], capsys)
    assert f"--out '{home}'" in err and "not a gptperf profile folder" in err
    assert _files(home) == before  # nothing overwritten, nothing added
    assert {p.name for p in tmp_path.iterdir()} <= {"myproj2", "cache"}  # no temporary beside


def test_reanalysis_writes_a_new_folder(recorded: Path, tmp_path: Path, cache: None) -> None:
    from gptperf.profiling import analyse_trace_file

    out = tmp_path / "again"
    r = analyse_trace_file(recorded / "trace.json", out_dir=out, plot=False, hardware="cpu")
    names = {p.name for p in out.iterdir()}
    assert names == {"ops.csv", "components.csv", "layers.csv", "trace.gptperf.json", "profile.json"}
    assert is_profile_document(json.loads((out / "profile.json").read_text()))
    assert r.paths["trace"] == str(recorded / "trace.json")


def test_reanalysis_in_place_keeps_the_trace(recorded: Path, tmp_path: Path, cache: None) -> None:
    import shutil

    from gptperf.profiling import analyse_trace_file

    folder = tmp_path / "p"
    shutil.copytree(recorded, folder)
    trace = (folder / "trace.json").read_bytes()
    recorded_coverage = json.loads((folder / "profile.json").read_text())["coverage"]
    tensorboard = _files(folder / "tensorboard")
    (folder / "roofline.png").write_bytes(b"stale")  # an earlier analysis's, not rewritten now
    r = analyse_trace_file(folder / "trace.json", out_dir=folder, plot=False, hardware="cpu")
    assert (folder / "trace.json").read_bytes() == trace
    assert _files(folder / "tensorboard") == tensorboard
    assert not (folder / "roofline.png").exists()
    assert json.loads((folder / "profile.json").read_text())["workload"]["source"] == "trace record"
    # the same trace attributed the same way (a time-weighted share of this microsecond model's
    # operators is no fixed number on a busy machine: one preempted operator read 0.20 in CI)
    assert r.coverage == pytest.approx(recorded_coverage) and r.coverage > 0


def test_reanalysis_replaces_another_profile_folder_whole(recorded: Path, tmp_path: Path,
                                                          cache: None) -> None:
    import shutil

    from gptperf.profiling import analyse_trace_file

    other = tmp_path / "other"
    shutil.copytree(recorded, other)
    analyse_trace_file(recorded / "trace.json", out_dir=other, plot=False, hardware="cpu")
    # a profile folder is one profile: the other run's trace does not stay beside this analysis
    assert not (other / "trace.json").exists() and not (other / "tensorboard").exists()
    assert (other / "ops.csv").is_file()
