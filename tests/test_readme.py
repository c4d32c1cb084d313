"""The README's commands are what CI runs: the test command in `.ci/run` is the README's, word for
word, and the README's first command installs gptperf and runs its main job, `gptperf report`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_block_after(lead: str) -> str:
    """The ```bash block that follows the README paragraph starting with `lead`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(lead)}.*?\n```bash\n(.*?)\n```", readme, flags=re.S | re.M)
    assert match, f"README has no bash block after {lead!r}"
    return match.group(1)


def _ci_commands() -> list[str]:
    """The commands of .ci/run, without comments, the shebang and its shell setup."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")
            and not ln.startswith(("set ", "cd "))]


def test_ci_runs_the_readme_test_command() -> None:
    assert _ci_commands() == [_readme_block_after("Install and run the tests")]


def test_readme_test_command_is_what_ci_runs() -> None:  # moved from test_foundation.py
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = [ln for ln in ci.splitlines() if ln.startswith("python3 -m pip")][0]
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert ci_command in blocks, "README's test command and .ci/run differ"
    assert any("gptperf report" in b for b in blocks)


def test_readme_installs_and_runs_the_main_job() -> None:
    command = _readme_block_after("Install and run the main job")
    assert "pip install" in command and "-e ." in command
    assert re.search(r"(^|&&\s*)gptperf report\s*$", command), command
    tests = _readme_block_after("Install and run the tests")
    assert "pytest" in tests and '-e ".[test]"' in tests


def test_ci_names_this_test() -> None:
    """`.ci/run` says the identity is kept by this file: it must exist (it does: here)."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    named = re.findall(r"tests/\S+\.py", ci)
    assert named == ["tests/test_readme.py"]
    assert all((ROOT / n).is_file() for n in named)
