"""Open a gptperf report in headless Chromium: every section and picture present, no console message.

    python benchmarks/check_report_browser.py gptperf-report [--screenshot docs/report-top.png]

Chromium runs with no network features and a fresh profile. The page's own script marks, once
loaded, that it ran (`data-ready`) and how many pictures decoded (`data-images-ok`) or did not
(`data-images-broken`); `--dump-dom` gives the DOM after that. Chromium writes every console
message (errors, warnings, CSP violations, logs) to stderr with `--enable-logging=stderr`; the
page logs nothing, so any console line is a failure. Exit 0 if the page passes, 1 if not.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--mute-audio",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(chromium: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="gptperf-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def console_messages(stderr: str) -> list[str]:
    """Console lines Chromium logged: `...:INFO:CONSOLE:12] "message", source: ... (12)`."""
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


def check_page(report_dir: str | Path, screenshot: str | Path | None = None,
               chromium: str | None = None, timeout: float = 90.0) -> list[str]:
    """Problems found with `report_dir/index.html` (empty list: the page passed)."""
    report_dir = Path(report_dir)
    page = report_dir / "index.html"
    chromium = chromium or find_chromium()
    if chromium is None:
        return ["no Chromium found (apt-get install chromium)"]
    if not page.is_file():
        return [f"{page} does not exist"]
    url = page.resolve().as_uri()
    problems: list[str] = []

    run = _run(chromium, ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                          "--dump-dom", url], timeout)
    dom = run.stdout
    if run.returncode != 0 or "<html" not in dom:
        return [f"chromium exited {run.returncode} without a DOM: {run.stderr.strip()[-300:]}"]
    for line in console_messages(run.stderr):
        problems.append(f"console: {line.split('] ', 1)[-1][:200]}")

    from gptperf.report.page import SECTIONS

    for sid, _ in SECTIONS:
        if not re.search(rf'<section[^>]*\bid="{re.escape(sid)}"', dom):
            problems.append(f"section #{sid} missing")
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1))) if body else {}
    if attrs.get("data-ready") != "1":
        problems.append("the page's script did not run to its end (no data-ready)")
    if "data-images-ok" not in attrs:
        problems.append("the page's load handler did not run (no data-images-ok)")
    ok = int(attrs.get("data-images-ok", "0") or 0)
    broken = int(attrs.get("data-images-broken", "0") or 0)
    if broken:
        problems.append(f"{broken} picture(s) did not decode")
    try:
        pictures = json.loads((report_dir / "report.json").read_text())["pictures"]
    except (OSError, ValueError, KeyError):
        pictures = {}
        problems.append("report.json missing or unreadable")
    for name in pictures:
        if f'id="pic-{name}"' not in dom:
            problems.append(f"picture {name!r} (in report.json) is not on the page")
    if ok < len(pictures):
        problems.append(f"only {ok} picture(s) decoded, report.json lists {len(pictures)}")
    if re.search(r'(src|href)="https?://', dom):
        problems.append("the page refers to the network")

    if screenshot:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        run = _run(chromium, ["--window-size=1280,1600", "--virtual-time-budget=5000",
                              f"--screenshot={shot}", url], timeout)
        if run.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
            problems.append(f"screenshot failed (exit {run.returncode})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", default="gptperf-report",
                        help="report folder (default: gptperf-report)")
    parser.add_argument("--screenshot", metavar="PNG", help="save the top of the page here")
    parser.add_argument("--chromium", help="browser binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    problems = check_page(args.report, args.screenshot, args.chromium)
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(f"OK {Path(args.report) / 'index.html'}: every section and picture present, "
              "no console message" + (f"; screenshot {args.screenshot}" if args.screenshot else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
