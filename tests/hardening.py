"""Shared pieces of the hardening tests: the CLI run in-process, its outcome judged, and what
was tried recorded as the tests run, with docs/RELIABILITY.md written from it.

Each hardening test calls `record(cls, case, outcome)` for every input it feeds and
`finish(cls)` once its assertions have passed. At the end of the session (tests/conftest.py's
`pytest_sessionfinish`) `write_document()` renders the table and writes docs/RELIABILITY.md, but
only when every class in CLASSES finished in this run (a `-k` selection or a failed test leaves
the file as it was) and only when the text changed (a second run leaves git clean).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md"
WRONG_KIND = ("input of the wrong kind or place (a folder for a file, an empty name, a bad trace "
              "event, a folder torch.profiler cannot name, an unwritable cache, a step the "
              "workers cannot run)")

BAD_INPUT = "Bad input, each class the hardening issue found (tests/test_hardening.py)"
GENERATED = "Generated arguments, hypothesis (tests/test_hardening_properties.py)"
CRASH = "Killed writes, SIGKILL (tests/test_hardening_crash.py)"
NETWORK = "Network (tests/test_hardening_network.py)"
COMMAND_NAMES = ("report", "train", "generate", "score", "model", "roofline", "ceilings", "calibrate",
                 "bench", "profile", "inference", "scale", "validate")
# Every class the hardening tests record, in the order the document lists them: class -> section.
# A class that did not finish in a run (a -k selection, a failure) leaves the document as it was.
CLASSES: dict[str, str] = {
    **{c: BAD_INPUT for c in (
        "output path that cannot be written", "batch too large for memory",
        "out-of-memory error that still happens", "token id at or above --vocab-size",
        "train --no-checkpoint beside an existing checkpoint", "malicious or garbage checkpoint",
        "contradictory flags", "temporary files left by killed writes",
        "stderr noise (Kineto USDT lines, dynamo profiler warning)", "errors under --json",
        "malformed --device", WRONG_KIND)},
    **{f"gptperf {c} …": GENERATED for c in COMMAND_NAMES},
    **{c: CRASH for c in ("checkpoint (gptperf.checkpoint.save_checkpoint)",
                          "report folder (gptperf report, atomic folder swap)",
                          "ceilings cache (hardware TOML + curves JSON)")},
    "main commands with sockets disabled": NETWORK,
}


@dataclass
class _Class:
    cases: list[tuple[str, str]] = field(default_factory=list)  # (case, outcome)
    outcomes: Counter[str] = field(default_factory=Counter)
    done: bool = False


_classes: dict[str, _Class] = {}


def record(cls: str, case: str, outcome: str) -> None:
    """One case of `cls` (a key of CLASSES) and what happened."""
    assert cls in CLASSES, cls
    entry = _classes.setdefault(cls, _Class())
    entry.cases.append((case, outcome))
    entry.outcomes[outcome] += 1


def finish(cls: str) -> None:
    """`cls` ran whole and its assertions held."""
    _classes[cls].done = True


def cases(cls: str) -> int:
    return len(_classes[cls].cases) if cls in _classes else 0


def complete() -> bool:
    return all(c in _classes and _classes[c].done for c in CLASSES)


def _cell(text: str, width: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= width else text[: width - 1] + "…"


def _example(c: _Class, outcome: str) -> str:
    """The fullest case with this outcome that still reads on one line (deterministic)."""
    mine = [case for case, o in c.cases if o == outcome]
    short = [case for case in mine if len(case) <= 120] or mine
    return max(short, key=lambda case: (len(case.split()), -mine.index(case)))


def render() -> str:
    sections: dict[str, list[str]] = defaultdict(list)
    for cls, section in CLASSES.items():
        sections[section].append(cls)
    total = sum(len(_classes[c].cases) for c in CLASSES)
    failed = sum(n for c in CLASSES for o, n in _classes[c].outcomes.items() if o.startswith("FAILED"))
    lines = [
        "# Reliability: what was tried, and what happened",
        "",
        "Written by the test suite's own run (`python3 -m pytest -q`; `tests/hardening.py` writes it",
        "when every hardening test has run and passed, and only if a number changed). Do not edit",
        "by hand. The CLI runs in the test process on the CPU; generated cases come from hypothesis",
        "with `derandomize=True`, so every run tries the same cases.",
        "",
        f"**{total} cases; {failed} with an unwanted outcome.** Wanted: success, or a one-line error",
        "naming the bad value with exit status 2 (under `--json` also a JSON document",
        "`{\"error\": …, \"schema\": \"gptperf.error/1\"}` on stdout); after a kill, the previous",
        "file whole and loadable and the next write's leftovers gone; no network connection.",
        "\"accepted (validated)\": the arguments passed every check and the command reached the",
        "start of its long work (building the model, measuring, launching), where the test stops it.",
        "",
    ]
    for section, classes in sections.items():
        lines += [f"## {section}", ""]
        if section == GENERATED:
            lines += ["| command | cases | outcomes | an example of each |", "| --- | ---: | --- | --- |"]
            for cls in classes:
                c = _classes[cls]
                outcomes = ", ".join(f"{o}: {n}" for o, n in sorted(c.outcomes.items()))
                examples = "<br>".join(f"{o}: `{_cell(_example(c, o))}`" for o in sorted(c.outcomes))
                lines.append(f"| {cls} | {len(c.cases)} | {outcomes} | {examples} |")
        else:
            lines += ["| class | case | outcome |", "| --- | --- | --- |"]
            for cls in classes:
                for i, (case, outcome) in enumerate(_classes[cls].cases):
                    lines.append(f"| {cls if i == 0 else ''} | `{_cell(case)}` | {outcome} |")
        lines.append("")
    return "\n".join(lines)


def write_document() -> bool:
    """Write docs/RELIABILITY.md when every class finished in this run and the text changed."""
    if not complete():
        return False
    text = render()
    if DOCUMENT.exists() and DOCUMENT.read_text(encoding="utf-8") == text:
        return False
    DOCUMENT.write_text(text, encoding="utf-8")
    return True


# --- running the CLI ------------------------------------------------------------------------------


class Validated(BaseException):
    """Raised by a patched heavy entry point: the arguments passed every check before it."""


@dataclass
class Outcome:
    code: int | None  # exit status; None: the arguments were validated (Validated raised)
    out: str
    err: str

    @property
    def kind(self) -> str:
        if self.code is None:
            return "accepted (validated)"
        if self.code == 0:
            return "success"
        if self.code == 2 and self.one_line_error:
            return "one-line error, exit 2"
        return f"FAILED: exit {self.code}"

    @property
    def one_line_error(self) -> bool:
        lines = self.err.strip().splitlines()
        return (len(lines) == 1 and "error" in lines[0] and "Traceback" not in self.err)

    def json_error(self) -> dict[str, Any]:
        doc = json.loads(self.out)
        assert doc["schema"] == "gptperf.error/1" and doc["error"], doc
        return doc


def one_line_user_error(call: Any, *needles: str) -> str:
    """The message of the UserError `call()` raises, asserted to be one line holding every one of
    `needles` (a library call refused in-process, as the CLI would print it)."""
    import pytest

    from gptperf.errors import UserError

    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def run_cli(capsys: Any, argv: list[str]) -> Outcome:
    """`gptperf <argv>` in this process: its exit status (argparse's SystemExit included) and
    what it printed."""
    from gptperf.cli import main

    capsys.readouterr()
    try:
        code: int | None = main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except Validated:
        code = None
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


# The tiny model and short training run most cases use, and how the table shows them.
MODEL = ["--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32"]
TRAIN = [*MODEL, "--batch", "2", "--seq", "16", "--max-iters", "2", "--eval-iters", "1",
         "--device", "cpu"]
_SHORT = ((" ".join(TRAIN), "<tiny model, 2 steps on cpu>"), (" ".join(MODEL), "<tiny model>"))


def shown(argv: list[str], tmp: Path) -> str:
    """The command line as the table shows it: temporary folders as <tmp>, the tiny model and
    its short run abbreviated."""
    text = "gptperf " + " ".join(a.replace(str(tmp), "<tmp>") if a else "''" for a in argv)
    for long, short in _SHORT:
        text = text.replace(long, short)
    return text
