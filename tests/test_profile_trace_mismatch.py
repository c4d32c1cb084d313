"""`gptperf profile --trace`: the trace records what was profiled; flags left out take the
recorded values, flags that contradict them are one-line errors naming flag, value and recorded
value; a trace without a record is analysed as the flags say, and the output says so."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptperf.cli import main
from gptperf.errors import UserError
from gptperf.model import preset
from gptperf.profiling.trace import load_trace, trace_record

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = preset("tiny", n_layer=1, n_head=2, n_embd=32, block_size=32)
B, T = 2, 16


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    """A profile folder of a 1-layer, 32-wide train step at batch 2, seq 16, and its result."""
    from gptperf.profiling import profile_workload

    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("rec") / "p1"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTPERF_CACHE_DIR", str(cache))
        r = profile_workload(CONFIG, "train", batch=B, seq=T, device="cpu", out_dir=out, wait=0,
                             warmup=1, active=2, overhead=False, plot=False, hardware="cpu")
        yield out, r


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def _strip_record(src: Path, dst: Path) -> Path:
    doc = json.loads(src.read_text())
    doc.pop("gptperf")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(doc))
    return dst


def test_trace_records_what_was_profiled(recorded: tuple[Path, object]) -> None:
    out, _ = recorded
    for name in ("trace.json", "trace.gptperf.json"):
        rec = trace_record(load_trace(out / name))
        assert rec["schema"] == "gptperf.profile.workload/1"
        w = rec["workload"]
        assert (w["kind"], w["batch"], w["seq"], w["dtype"], w["compile"]) == ("train", B, T, "fp32", False)
        assert (w["config"]["n_layer"], w["config"]["n_embd"]) == (1, 32)
        assert rec["device"].startswith("cpu: ") and w["plan"]["mode"] == "eager"


@pytest.mark.parametrize("argv, words", [
    (["--preset", "gpt2", "--workload", "decode"], ["--workload 'decode'", "workload 'train'"]),
    (["--preset", "gpt2"], ["--preset 'gpt2'", "n_layer 1 (not 12)", "n_embd 32 (not 768)"]),
    (["--batch", "8"], ["--batch 8", "batch 2"]),
    (["--seq", "32"], ["--seq 32", "seq 16"]),
    (["--dtype", "bf16"], ["--dtype 'bf16'", "dtype 'fp32'"]),
    (["--n-layer", "2"], ["--n-layer 2", "n_layer 1"]),
    (["--attention", "math"], ["--attention 'math'", "attention 'sdpa'"]),
    (["--device", "cuda"], ["--device 'cuda'", "recorded on cpu: "]),
])
def test_contradicting_flags_are_refused(recorded: tuple[Path, object], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], argv: list[str],
                                         words: list[str]) -> None:
    out, _ = recorded
    trace = out / "trace.json"
    capsys.readouterr()
    assert main(["profile", "--trace", str(trace), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"'{trace}'" in err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "o").exists()


def test_flags_left_out_take_the_record(recorded: tuple[Path, object], tmp_path: Path,
                                        cli_json) -> None:
    out, first = recorded
    doc = cli_json("profile", "--trace", str(out / "trace.json"), "--out", str(tmp_path / "o"),
                   "--hardware", "cpu")
    w = doc["workload"]
    assert (w["kind"], w["batch"], w["seq"], w["dtype"]) == ("train", B, T, "fp32")
    assert w["config"]["n_layer"] == 1 and w["config"]["n_embd"] == 32
    assert w["source"] == "trace record" and doc["device"] == first.device
    # the same prediction as the run: the rows line up with the recorded model's
    predicted = {(r["name"], r["phase"]): r["predicted_s"] for r in doc["ops"]}
    assert predicted == pytest.approx({(r.name, r.phase): r.predicted_s for r in first.comparison.ops})
    # matching flags are no contradiction; --device auto says nothing
    again = cli_json("profile", "--trace", str(out / "trace.json"), "--out", str(tmp_path / "o"),
                     "--workload", "train", "--batch", "2", "--seq", "16", "--dtype", "fp32",
                     "--n-layer", "1", "--n-embd", "32", "--device", "auto", "--hardware", "cpu")
    assert again["workload"]["batch"] == B
    # the re-analysis's augmented trace carries the record on
    rec = trace_record(load_trace(tmp_path / "o" / "trace.gptperf.json"))
    assert rec["workload"]["batch"] == B and rec["workload"]["config"]["n_layer"] == 1


def test_older_trace_takes_the_profile_json_beside_it(recorded: tuple[Path, object],
                                                      tmp_path: Path) -> None:
    from gptperf.profiling import analyse_trace_file

    out, _ = recorded
    folder = tmp_path / "old"
    shutil.copytree(out, folder)
    _strip_record(out / "trace.json", folder / "trace.json")  # as written before the record
    with pytest.raises(UserError) as err:
        analyse_trace_file(folder / "trace.json", kind="decode", out_dir=tmp_path / "o")
    assert "profile.json" in str(err.value) and "workload 'train'" in str(err.value)
    r = analyse_trace_file(folder / "trace.json", out_dir=tmp_path / "o", plot=False, hardware="cpu")
    assert r.workload["batch"] == B and r.workload["source"] == "trace record"


def test_foreign_trace_takes_the_flags_and_says_so(recorded: tuple[Path, object], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = recorded
    trace = _strip_record(out / "trace.json", tmp_path / "foreign" / "t.json")
    capsys.readouterr()
    assert main(["profile", "--trace", str(trace), "--out", str(tmp_path / "o"), "--n-layer", "1",
                 "--n-head", "2", "--n-embd", "32", "--batch", "2", "--seq", "16",
                 "--hardware", "cpu"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "workload taken from the flags" in text
    doc = json.loads((tmp_path / "o" / "profile.json").read_text())
    assert doc["workload"]["source"] == "flags" and doc["workload"]["batch"] == B
    # what the trace holds still decides the device: a CPU trace is not a CUDA one
    capsys.readouterr()
    assert main(["profile", "--trace", str(trace), "--out", str(tmp_path / "o2"),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device 'cuda'" in err and "no GPU kernels" in err
    # a re-analysis from flags is no record: its profile.json does not vouch for the trace
    from gptperf.profiling.recorded import recorded_workload

    copied = tmp_path / "o" / "t.json"  # the name its profile.json gives the analysed trace
    shutil.copy(trace, copied)
    assert recorded_workload(load_trace(copied), copied) is None


def test_unreadable_record_is_a_one_line_error(recorded: tuple[Path, object], tmp_path: Path) -> None:
    from gptperf.profiling import analyse_trace_file

    out, _ = recorded
    doc = json.loads((out / "trace.json").read_text())
    doc["gptperf"]["profiled"]["workload"]["batch"] = "two"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(UserError) as err:
        analyse_trace_file(bad, out_dir=tmp_path / "o")
    assert "bad.json" in str(err.value) and "cannot be read" in str(err.value)
    assert "\n" not in str(err.value)
