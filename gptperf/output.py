"""Printing: rich tables on stdout, progress on stderr, JSON documents.

The pure formatters (numbers with units, percentages, JSON text) live in gptperf.format, which
library code imports; they are re-exported here for the commands.

rich is imported only when `console` or `err_console` is first used, so commands that print
plain text or JSON (`gptperf model` must answer in well under 0.2 s) don't pay for it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

# Re-exported for the commands; library code imports them from gptperf.format.
from gptperf.format import (  # noqa: F401
    apart_digits,
    binary_bytes,
    percent,
    ratio_range,
    seconds,
    si,
    to_json,
)

_consoles: dict[str, Any] = {}


def _console(name: str) -> Any:
    if name not in _consoles:
        from rich.console import Console  # deferred: loads rich

        _consoles[name] = Console(stderr=name == "err_console")
    return _consoles[name]


def __getattr__(name: str) -> Any:
    # `console`: tables and results on stdout; `err_console`: progress and notes on stderr,
    # so stdout stays clean for --json.
    if name in ("console", "err_console"):
        return _console(name)
    raise AttributeError(name)

def wide_console(min_width: int = 132) -> Any:
    """The stdout console at least `min_width` columns wide: a table squeezed into an 80-column
    terminal hides its numbers behind ellipses."""
    from rich.console import Console  # deferred: loads rich

    out = _console("console")
    return Console(width=max(out.width, min_width), file=out.file)


def print_note(console: Any, note: str, style: str = "dim", indent: str = "") -> None:
    """`note: <note>` on `console` in `style`; the note's own text is printed as written (it may
    quote an error message, whose brackets rich would take for markup)."""
    from rich.markup import escape  # deferred: loads rich

    console.print(f"{indent}[{style}]note: {escape(note)}[/{style}]")


ERROR_SCHEMA = "gptperf.error/1"


def error_document(message: str, command: str | None = None, status: int = 2) -> dict[str, Any]:
    """What `--json` prints instead of a result when a command fails: the one-line message, the
    command and its exit status."""
    return {"schema": ERROR_SCHEMA, "error": message, "command": command, "exit_status": status}


def emit_json(doc: Any) -> None:
    """Print one JSON document to stdout."""
    sys.stdout.write(to_json(doc) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def rich_progress(enabled: bool = True,
                  description: str = "") -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress callback `(stage, done, total)` (gptperf.measure.timer's `Progress`) drawing
    rich bars on stderr; yields None (silent) when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import (  # deferred: loads rich
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress  # deferred: loads rich

    console = _console("err_console")
    bars = RichProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
        disable=not console.is_terminal,  # bars are for a terminal: piped, they left a blank line
    )
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        label = f"{description} {stage}".strip()
        if label not in tasks:
            tasks[label] = bars.add_task(label, total=total)
        bars.update(tasks[label], completed=done, total=total)

    with bars:
        yield update
