"""The suite's split over xdist workers (tests/conftest.py): a session-wide fixture or record is
built in one worker only where every file that uses it is in one group."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import WORKER_GROUPS, worker_group

TESTS = Path(__file__).resolve().parent


def _files_matching(pattern: str) -> set[str]:
    return {p.stem for p in TESTS.glob("test_*.py")
            if re.search(pattern, p.read_text(encoding="utf-8"), flags=re.M)}


def test_every_grouped_name_is_a_test_file() -> None:
    assert all((TESTS / f"{stem}.py").is_file() for stem in WORKER_GROUPS)


def test_files_sharing_a_session_record_run_in_one_worker() -> None:
    hardening = _files_matching(r"^\s*(import hardening|from hardening import)")
    quick_cache = _files_matching(r"\bquick_cpu_cache\b")
    assert "test_hardening" in hardening and "test_report" in quick_cache
    for users in (hardening, quick_cache):
        groups = {worker_group(f"tests/{stem}.py::test_x") for stem in users}
        assert len(groups) == 1, sorted(users)


def test_an_ungrouped_file_is_its_own_unit() -> None:
    assert worker_group("tests/test_model.py::test_x[sdpa]") == "test_model"
    assert worker_group("tests/test_report.py::test_y") == worker_group("tests/test_ceilings.py::t")
