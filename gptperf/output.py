"""Printing: numbers with units, rich tables on stdout, progress on stderr, JSON documents.

rich is imported only when `console` or `err_console` is first used, so commands that print
plain text or JSON (`gptperf model` must answer in well under 0.2 s) don't pay for it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from gptperf.units import GIB, KIB, MIB, TIB

_consoles: dict[str, Any] = {}


def _console(name: str) -> Any:
    if name not in _consoles:
        from rich.console import Console

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
    from rich.console import Console

    out = _console("console")
    return Console(width=max(out.width, min_width), file=out.file)


_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float | None, unit: str = "", digits: int = 3) -> str:
    """`si(3.1e12, "FLOP/s")` -> '3.10 TFLOP/s'; None or NaN -> '—'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}".rstrip()
    return f"{value:.{digits}g} {unit}".rstrip()


def binary_bytes(n: float | None) -> str:
    """Bytes in KiB/MiB/GiB/TiB."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "—"
    if math.isinf(n):
        return "unbounded"
    for scale, unit in ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def seconds(t: float | None) -> str:
    """A duration in s, ms, µs or ns."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "—"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(t) >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as a percentage with `digits` decimals, e.g. 0.049 -> '4.9%' ('—' for none or NaN)."""
    if fraction is None or not math.isfinite(fraction):
        return "—"
    return f"{100 * fraction:.{digits}f}%"


def apart_digits(value: float, target: float) -> int:
    """The decimals (1 to 3) at which two fractions read apart as percentages, so that a value a
    hair over its target does not print as the target itself (8.01% against 8%: '8.01%'); closer
    than 0.001 points they read alike at 3."""
    for digits in (1, 2):
        if value == target or f"{100 * value:.{digits}f}" != f"{100 * target:.{digits}f}":
            return digits
    return 3


def print_note(console: Any, note: str, style: str = "dim", indent: str = "") -> None:
    """`note: <note>` on `console` in `style`; the note's own text is printed as written (it may
    quote an error message, whose brackets rich would take for markup)."""
    from rich.markup import escape

    console.print(f"{indent}[{style}]note: {escape(note)}[/{style}]")


def ratio_range(span: tuple[float, float] | None) -> str:
    """A range of ratios, e.g. a case's steps at p10 and p90 over their median: '0.88–1.38×'."""
    return "—" if span is None else f"{span[0]:.2f}–{span[1]:.2f}×"


def _plain(x: Any) -> Any:
    """`x` as JSON-ready values: objects with to_dict() expanded, NaN and inf as None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int)):
        return x
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_plain(v) for v in x]
    if hasattr(x, "to_dict"):
        return _plain(x.to_dict())
    if hasattr(x, "item"):  # numpy / torch scalars
        return _plain(x.item())
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def to_json(doc: Any) -> str:
    """Compact JSON text; NaN and inf become null so any JSON reader accepts it.

    No indent: json's C encoder serves only compact output, 5-10x faster on a large model's
    document (pipe through `python -m json.tool` or `jq` to read it).
    """
    return json.dumps(_plain(doc), allow_nan=False)


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
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

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
