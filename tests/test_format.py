"""gptperf.format: the pure formatters library code imports, free of rich and torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gptperf"
# The command layer: the only code that may import gptperf.output.
COMMAND_LAYER = ("commands", "output.py", "cli.py", "__main__.py")


def test_importing_format_loads_neither_rich_nor_torch() -> None:
    code = ("import sys, gptperf.format; "
            "assert 'rich' not in sys.modules and 'torch' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_output_re_exports_the_formatters() -> None:
    from gptperf import format as fmt
    from gptperf import output

    for name in ("si", "binary_bytes", "seconds", "percent", "apart_digits", "ratio_range",
                 "to_json"):
        assert getattr(output, name) is getattr(fmt, name), name


def test_the_formatters() -> None:
    from gptperf.format import (
        apart_digits,
        binary_bytes,
        percent,
        ratio_range,
        seconds,
        si,
        to_json,
    )

    assert si(3.1e12, "FLOP/s") == "3.1 TFLOP/s" and si(float("nan")) == "—"
    assert binary_bytes(3 * 2**30) == "3.00 GiB" and binary_bytes(float("inf")) == "unbounded"
    assert seconds(2.5e-3) == "2.5 ms" and seconds(None) == "—"
    assert percent(0.049) == "4.9%" and percent(float("inf")) == "—"
    assert apart_digits(0.0801, 0.08) == 2
    assert ratio_range((0.88, 1.38)) == "0.88–1.38×" and ratio_range(None) == "—"
    assert to_json({"a": float("nan"), "b": (1, 2), 3: Path("x")}) == '{"a": null, "b": [1, 2], "3": "x"}'


def test_library_code_does_not_import_the_command_layers_output() -> None:
    """Library modules take formatters from gptperf.format; gptperf.output is the command layer's."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in COMMAND_LAYER:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "gptperf.output":
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and node.module == "gptperf":
                if any(a.name == "output" for a in node.names):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name == "gptperf.output" for a in node.names):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == [], f"import gptperf.format instead of gptperf.output: {found}"
