"""Export the anchors' own scripts (nanoGPT, gpt-fast) from their git mirrors into `anchors/`.

    python benchmarks/prepare_anchors.py [--out anchors] [--mirrors /work/.mirror]

Their code is never committed to gptperf: `anchors/` is git-ignored and carried to the GPU
machine, where `benchmarks/anchors.py` runs it. Only the files the benchmark needs are exported,
byte for byte at the mirror's HEAD, and `anchors/VERSIONS.json` records the commits. Running it
again gives the same tree (each anchor's folder is replaced whole). A missing mirror is refused
before anything is written: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MIRRORS = Path("/work/.mirror")

# anchor -> (GitHub repository, files at HEAD). nanoGPT's bench.py execs configurator.py and
# imports model; gpt-fast's generate.py imports model and tokenizer at module level (tp and
# quantize only inside main(), which the driver does not call).
ANCHORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nanoGPT": ("karpathy/nanoGPT", ("bench.py", "model.py", "configurator.py", "LICENSE")),
    "gpt-fast": ("pytorch-labs/gpt-fast", ("generate.py", "model.py", "tokenizer.py", "LICENSE")),
}


class MirrorMissing(Exception):
    """A mirror (or a file the export needs from it) is not there."""


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True,
                          capture_output=True).stdout


def mirror_dir(mirrors: Path, repo: str) -> Path:
    """Where the fetch tool keeps a bare mirror of `owner/name`."""
    return mirrors / repo.replace("/", "+") / "repo"


def _head(git_dir: Path, repo: str, files: tuple[str, ...]) -> dict[str, Any]:
    if not (git_dir / "HEAD").is_file():
        raise MirrorMissing(f"no mirror of {repo} at {git_dir}; fetch github:{repo} first")
    try:
        commit = _git(git_dir, "rev-parse", "HEAD^{commit}").decode().strip()
        date = _git(git_dir, "log", "-1", "--format=%cI", commit).decode().strip()
        present = set(_git(git_dir, "ls-tree", "--name-only", commit).decode().split("\n"))
    except subprocess.CalledProcessError as err:
        raise MirrorMissing(f"mirror of {repo} at {git_dir} is unreadable: "
                            f"{err.stderr.decode().strip()[-200:]}") from err
    missing = [f for f in files if f not in present]
    if missing:
        raise MirrorMissing(f"mirror of {repo} at {git_dir} has no {', '.join(missing)} at {commit}")
    return {"repo": repo, "commit": commit, "date": date, "files": list(files)}


def prepare(out: Path = REPO / "anchors", mirrors: Path = MIRRORS) -> dict[str, dict[str, Any]]:
    """Export every anchor into `out/<anchor>/` and write `out/VERSIONS.json`; return its content.
    Raises MirrorMissing (having written nothing) when a mirror or one of its files is absent."""
    versions = {name: _head(mirror_dir(mirrors, repo), repo, files)
                for name, (repo, files) in ANCHORS.items()}
    out.mkdir(parents=True, exist_ok=True)
    for name, info in versions.items():
        git_dir = mirror_dir(mirrors, info["repo"])
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)  # also drops __pycache__ and files of an older export
        dest.mkdir()
        for f in info["files"]:
            (dest / f).write_bytes(_git(git_dir, "show", f"{info['commit']}:{f}"))
    (out / "VERSIONS.json").write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n")
    return versions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "anchors", help="default: <repo>/anchors")
    ap.add_argument("--mirrors", type=Path, default=MIRRORS, help="default: /work/.mirror")
    args = ap.parse_args(argv)
    try:
        versions = prepare(args.out, args.mirrors)
    except MirrorMissing as err:
        print(f"prepare_anchors: {err}", file=sys.stderr)
        return 2
    for name, info in versions.items():
        print(f"{name:9s} {info['repo']}@{info['commit'][:12]} ({info['date'][:10]}) -> "
              f"{args.out / name}: {', '.join(info['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
