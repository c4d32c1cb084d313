"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="session")
def short_host_probe() -> Iterator[None]:
    """Host-speed probes over 0.1 s instead of a second: the window is a measurement choice for
    noisy hosts (`measure.probe.HOST_WINDOW_S`), not what any test checks, and the suite runs
    dozens of them in-process (tests of the probe pass their own windows)."""
    from gptperf.measure import probe

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probe, "HOST_WINDOW_S", 0.1)
        yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and far faster than two on a busy 2-core machine.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli_json(capsys: pytest.CaptureFixture[str]) -> Callable[..., dict[str, Any]]:
    """Run `gptperf <argv> --json` in this process; exit status 0 and one JSON document on
    stdout, returned parsed."""
    import json

    from gptperf.cli import main

    def run(*argv: str) -> dict[str, Any]:
        capsys.readouterr()
        code = main([*argv, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err[-2000:]
        return json.loads(out)

    return run


@pytest.fixture(scope="session")
def quick_cpu_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One `gptperf ceilings --quick --device cpu --force --json` in a private cache folder: this
    CPU's quick ceilings and the quick calibration that ceilings ends with (13–35 s on a 2-core
    VM, more where its spells make passes measured again), measured once for the session.
    (folder, the JSON it printed): test_ceilings reads both; the quick report starts from a copy
    of the folder instead of measuring the same again."""
    import contextlib
    import io
    import json

    from gptperf.cli import main

    folder = tmp_path_factory.mktemp("quick-cpu-cache")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("GPTPERF_CACHE_DIR", str(folder))
        code = main(["ceilings", "--quick", "--device", "cpu", "--force", "--json"])
    assert code == 0
    return folder, json.loads(out.getvalue())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """docs/RELIABILITY.md from what the hardening tests recorded (tests/hardening.py); a
    partial or failed run leaves it as it was."""
    import sys

    hardening = sys.modules.get("hardening")
    if hardening is not None:
        hardening.write_document()


# Test files whose tests share a session fixture run on one xdist worker: the fixture is then
# built once (quick_cpu_cache), and the hardening record is whole in one process.
WORKER_GROUPS = {
    "test_ceilings": "quick_cpu_cache",
    "test_report": "quick_cpu_cache",
    **{name: "hardening" for name in ("test_calibrate", "test_data", "test_hardening",
                                      "test_hardening_crash", "test_hardening_network",
                                      "test_hardening_properties", "test_hf_checks")},
}


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker gets its share of the cores: two workers each running torch on every core
    of a 2-core machine spin against each other (OpenMP), and timing tests see the fight.
    OMP_NUM_THREADS carries the share to the processes a test starts."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `pytest -n N` each test file runs whole on one worker, so its module fixtures are
    built once, and the files of a group in WORKER_GROUPS run together. (Grouping by scheduler,
    not by xdist_group marks, keeps test ids, and so hypothesis's derandomized cases, unchanged.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFileGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return ByFileGroup(config, log)


def worker_group(nodeid: str) -> str:
    """The unit a test is sent to a worker in: its file's group, else its file."""
    stem = Path(nodeid.split("::", 1)[0]).stem
    return WORKER_GROUPS.get(stem, stem)
