"""The anchors' drivers (benchmarks/prepare_anchors.py, benchmarks/anchors.py) on the CPU: export,
refusal, nanoGPT's output parser and subprocess plumbing, and gpt-fast's decode on a tiny shape;
and how benchmarks/gpu_speed.py makes one figure of several processes."""

from __future__ import annotations

import json
import statistics
import sys
import textwrap
from pathlib import Path

import pytest
from benchmark_scripts import BENCHMARKS
from benchmark_scripts import load as _load

anchors = _load("anchors")
prepare_anchors = _load("prepare_anchors")

MIRRORS = prepare_anchors.MIRRORS
needs_mirrors = pytest.mark.skipif(
    not all((prepare_anchors.mirror_dir(MIRRORS, repo) / "HEAD").is_file()
            for repo, _ in prepare_anchors.ANCHORS.values()),
    reason="needs the git mirrors of nanoGPT and gpt-fast under /work/.mirror")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("anchors")
    prepare_anchors.prepare(out, MIRRORS)
    return out


@needs_mirrors
def test_prepare_exports_the_files_at_head_and_is_idempotent(exported: Path) -> None:
    versions = json.loads((exported / "VERSIONS.json").read_text())
    assert set(versions) == set(prepare_anchors.ANCHORS)
    for name, (repo, files) in prepare_anchors.ANCHORS.items():
        info = versions[name]
        assert info["repo"] == repo and len(info["commit"]) == 40
        assert sorted(p.name for p in (exported / name).iterdir()) == sorted(files)
        head = prepare_anchors._git(prepare_anchors.mirror_dir(MIRRORS, repo), "rev-parse", "HEAD")
        assert info["commit"] == head.decode().strip()
    before = {p: p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    (exported / "nanoGPT" / "stale.py").write_text("x = 1\n")  # an older export's leftover
    prepare_anchors.prepare(exported, MIRRORS)
    assert {p: p.read_bytes() for p in exported.rglob("*") if p.is_file()} == before
    assert sum(len(b) for b in before.values()) < 2**20  # carried to the GPU machine


def test_prepare_refuses_a_missing_mirror_and_writes_nothing(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "anchors"
    with pytest.raises(prepare_anchors.MirrorMissing, match="karpathy/nanoGPT"):
        prepare_anchors.prepare(out, tmp_path / "no-mirrors")
    assert not out.exists()
    code = prepare_anchors.main(["--out", str(out), "--mirrors", str(tmp_path / "no-mirrors")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no mirror" in err
    assert not out.exists()


def test_parse_nanogpt_line() -> None:
    out = "Compiling model...\n19/20 loss: 10.9\ntime per iteration: 26.6123ms, MFU: 45.07%\n"
    assert anchors.parse_nanogpt(out) == (26.6123, "MFU: 45.07%")
    assert anchors.parse_nanogpt("time per iteration: 3.5 ms, MFU: -1.00%\n") == (3.5, "MFU: -1.00%")
    with pytest.raises(ValueError, match="time per iteration"):
        anchors.parse_nanogpt("0/20 loss: 10.9\n")


def _fake_bench(root: Path, body: str) -> None:
    (root / "nanoGPT").mkdir(parents=True)
    (root / "nanoGPT" / "bench.py").write_text(textwrap.dedent(body))


def test_nanogpt_runs_bench_in_its_folder_with_a_clean_env(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_bench(tmp_path, """\
        import json, os, sys
        with open("seen.json", "w") as f:
            json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": sorted(os.environ)}, f)
        print("0/20 loss: 10.9")
        print("time per iteration: 12.5000ms, MFU: 7.25%")
        """)
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    r = anchors.nanogpt_train_ms(4, 256, False, device="cpu", root=tmp_path)
    assert (r.ms_per_iter, r.mfu, r.batch, r.seq, r.compile) == (12.5, "MFU: 7.25%", 4, 256, False)
    assert r.tokens_per_s == pytest.approx(4 * 256 / 0.0125)
    child = json.loads((tmp_path / "nanoGPT" / "seen.json").read_text())
    assert child["argv"] == ["--real_data=False", "--batch_size=4", "--block_size=256",
                             "--compile=False", "--device=cpu"]
    assert Path(child["cwd"]) == tmp_path / "nanoGPT"
    assert "PYTHONPATH" in child["env"] and "TORCHINDUCTOR_MAX_AUTOTUNE" not in child["env"]


def test_nanogpt_failure_raises_with_the_end_of_stderr(tmp_path: Path) -> None:
    _fake_bench(tmp_path, """\
        import sys
        print("\\n".join(f"noise {i}" for i in range(100)), file=sys.stderr)
        sys.exit("AssertionError: Torch not compiled with CUDA enabled")
        """)
    with pytest.raises(RuntimeError, match="exited 1") as err:
        anchors.nanogpt_train_ms(root=tmp_path)
    assert "Torch not compiled with CUDA enabled" in str(err.value)
    assert "noise 99" in str(err.value) and "noise 10\n" not in str(err.value)


@needs_mirrors
@pytest.mark.slow
def test_gpt_fast_decode_tiny_shape_on_cpu(exported: Path) -> None:
    """gpt-fast's own generate() on its smallest shape, eager, through the --child subprocess."""
    r = anchors.gpt_fast_decode("stories15M", new_tokens=3, prompt_len=5, compile=False,
                                warmup=1, runs=2, device="cpu", root=exported)
    assert (r.shape, r.new_tokens, r.prompt_len, len(r.run_s)) == ("stories15M", 3, 5, 2)
    assert r.max_seq_length == 8  # prompt + new tokens, rounded up to a multiple of 8 by gpt-fast
    # stories15M: 6 layers of C=288 (FFN 768) and a 32000-token head, in bf16; gpt-fast leaves the
    # embedding table out of the bytes a token reads.
    layer = 288 * 3 * 288 + 288 * 288 + 3 * 288 * 768 + 2 * 288
    assert r.weight_bytes == 2 * (6 * layer + 288 + 32000 * 288)
    assert r.param_bytes == r.weight_bytes + 2 * 32000 * 288
    assert r.kv_bytes_static == 2 * 6 * 288 * 2 * 8
    assert 0 < r.kv_bytes_mean < r.kv_bytes_static
    assert r.tokens_per_s == pytest.approx(3 / statistics.median(r.run_s))
    assert r.ms_per_token == pytest.approx(1e3 / r.tokens_per_s)
    assert r.bandwidth_tbs == pytest.approx(r.weight_bytes * r.tokens_per_s / 1e12)


@pytest.mark.gpu
@pytest.mark.skipif(not (anchors.ANCHORS / "VERSIONS.json").is_file(), reason="needs anchors/")
def test_gpt_fast_compiled_decode_on_cuda() -> None:
    """gpt-fast's compiled, CUDA-graphed decode runs from anchors/ and is faster than its eager one."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    kw = {"new_tokens": 32, "prompt_len": 8, "warmup": 1, "runs": 3}
    fast = anchors.gpt_fast_decode("stories15M", compile=True, **kw)
    eager = anchors.gpt_fast_decode("stories15M", compile=False, **kw)
    assert fast.device == eager.device != "cpu"
    assert fast.decode_ms_per_token < eager.decode_ms_per_token


# --- benchmarks/gpu_speed.py: a figure measured in several processes -----------------------------


def test_the_speed_figure_of_several_processes_is_the_median_process_with_every_time_beside_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    speed = _load("gpu_speed")
    runs = [{"token_s": 2.03e-4, "step_s": 2.1e-4}, {"token_s": 1.97e-4, "step_s": 2.0e-4},
            {"token_s": 2.00e-4, "step_s": 2.2e-4}]
    out = speed.median_run(runs)
    assert (out["token_s"], out["step_s"]) == (2.00e-4, 2.2e-4)  # the middle run's own figures
    assert out["token_s_runs"] == [2.03e-4, 1.97e-4, 2.00e-4]
    assert speed.median_run(runs[:2])["token_s"] == 1.97e-4  # even: the lower middle
    with pytest.raises(ValueError):
        speed.median_run([])

    calls = []
    times = iter([3.0, 1.0, 2.0])
    monkeypatch.setattr(speed, "run_json_child",  # each process's figures, as its last JSON line
                        lambda args: calls.append(args) or {"token_s": next(times), "step_s": 1.0})
    assert speed.decode_in_processes("decode-gpt2", 3)["token_s_runs"] == [3.0, 1.0, 2.0]
    assert len(calls) == 3 and all(a[-2:] == ["--one", "decode-gpt2"] for a in calls)


def test_the_speed_benchmark_refuses_no_processes_in_one_line() -> None:
    import subprocess

    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_speed.py"), "--processes", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("--processes must be a positive integer, got 0")
