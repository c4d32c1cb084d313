"""A measurement run in a fresh Python process, read back as the one JSON line it prints last.

A process that has already built and run other models measures a host-bound step differently
(on the H200 machine up to 1.5x longer than a fresh one), and a decode figure moved by 1.5% from
one process to the next: `validate`'s isolated cases and `benchmarks/gpu_speed.py --processes`
each measure in a process of their own, through this.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def run_json_child(args: Sequence[str], stdin: str | None = None, timeout_s: float = 600.0
                   ) -> dict[str, Any]:
    """Run `python ARGS` (this interpreter) with `stdin` and return the JSON object on the last
    line of its stdout; RuntimeError naming the exit status and the last line of its stderr when
    it fails or prints nothing."""
    proc = subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout_s)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the measuring process exited {proc.returncode}: {tail}")
    out = json.loads(lines[-1])
    if not isinstance(out, dict):
        raise RuntimeError(f"the measuring process printed {lines[-1][:80]!r}, not a JSON object")
    return out
