"""Output paths checked before any long work: a one-line UserError at once, not a traceback
after minutes of training or profiling.

A file (a picture) needs a known suffix and a folder to land in; a folder (checkpoints,
pictures, a profile or a report) must be a folder if it exists; one that gptperf replaces whole
(a profile, a report) must be empty or recognisably one gptperf wrote. Either way the nearest existing
folder on the way must be writable, since what is missing gets created there: the check creates
and removes an empty file there (permission bits do not say it for root, nor for a filesystem
such as /proc that takes no files). Nothing else is created by the check.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gptperf.atomic import remove_stale_temporaries, temporary_prefix
from gptperf.errors import UserError

NAME_MAX = 255  # bytes in one path component on Linux, macOS and Windows filesystems
PROBE = "gptperf-probe"  # the name whose temporaries test a folder for writing


def usable_path(path: str | os.PathLike[str], flag: str) -> Path:
    """`path` as a Path (~ expanded), or a one-line UserError naming `flag`: empty or blank (Path("")
    is ".", the current folder), a NUL in it, or a name too long for any filesystem."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise UserError(f"{flag} {text!r} is not a usable path; give a file or folder name")
    p = Path(text).expanduser()
    for part in p.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UserError(f"{flag} {text[:60]!r}…: a name in it is longer than {NAME_MAX} bytes")
    return p


def _nearest_existing(p: Path, flag: str, shown: Path) -> Path:
    """`p` or its closest ancestor that exists; a file on the way is an error."""
    current = p
    while True:
        try:
            exists = current.exists()
        except OSError as err:  # e.g. a component is a file (ENOTDIR), or ELOOP
            raise UserError(f"{flag} {str(shown)!r} cannot be reached: {err.strerror}") from None
        if exists:
            break
        if current.parent == current:
            break
        current = current.parent
    if not current.is_dir():
        raise UserError(f"{flag} {str(shown)!r} cannot be created: {str(current)!r} is a file, "
                        "not a folder")
    return current


def _writable(folder: Path, flag: str, shown: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {str(shown)!r} cannot be written: folder {str(folder)!r} is not "
                        "writable (read-only or not yours); pick another location")
    # named as atomic.py names a temporary, so that one a killed check left is removed by the next
    probe_of = folder / PROBE
    remove_stale_temporaries(probe_of)
    try:
        fd, probe = tempfile.mkstemp(prefix=temporary_prefix(probe_of), suffix=".tmp", dir=folder)
    except OSError as err:
        raise UserError(f"{flag} {str(shown)!r} cannot be written: no file can be created in "
                        f"folder {str(folder)!r} ({err.strerror}); pick another location") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike[str], flag: str,
                      formats: Sequence[str] | None = None) -> Path:
    """`path` as a Path when a file can be written there (suffix among `formats`, e.g.
    ("png", "svg")); else a one-line UserError naming `flag` and the value."""
    p = usable_path(path, flag)
    if formats is not None:
        fmt = p.suffix.lstrip(".").lower()
        if fmt not in formats:
            raise UserError(f"{flag} {str(p)!r} must end in one of: "
                            + ", ".join(f".{f}" for f in formats))
    if p.is_dir():
        raise UserError(f"{flag} {str(p)!r} is a folder; give a file name, e.g. "
                        f"{str(p / ('picture.' + (formats[0] if formats else 'out')))!r}")
    _writable(_nearest_existing(p.parent, flag, p), flag, p)
    return p


def _our_document(path: Path, is_ours: Callable[[Any], bool]) -> Any:
    """The JSON document at `path` when `is_ours` recognises it as one gptperf wrote; None when
    it is not, or is missing, unreadable, not JSON (or not UTF-8)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if is_ours(doc) else None


def refuse_foreign_file(p: Path, flag: str, *, what: str, is_ours: Callable[[Path], bool],
                        folder: str | None = None) -> None:
    """A one-line UserError when a file is at `p` that `is_ours` does not recognise as a gptperf
    `what` written before: a user's own file is never replaced. `folder`: the flag's value where
    `p` is a file gptperf writes inside that folder."""
    if not p.exists() or is_ours(p):
        return
    if folder is None:
        raise UserError(f"{flag} {str(p)!r} exists and holds no gptperf {what}: it is not "
                        "replaced; give a new file name, or remove it first")
    raise UserError(f"{flag} {folder!r}: {str(p)!r} exists and holds no gptperf {what}: it is not "
                    "replaced; give another folder, or remove it first")


def check_replaceable_file(path: str | os.PathLike[str], flag: str, *, what: str,
                           is_ours: Callable[[Any], bool]) -> Path:
    """`path` as a Path when gptperf may write its `what` (JSON) there: a new file, or one holding
    an earlier document `is_ours` recognises; else a one-line UserError (`refuse_foreign_file`).
    Checked as `check_output_file` too."""
    p = check_output_file(path, flag, ("json",))
    refuse_foreign_file(p, flag, what=what,
                        is_ours=lambda found: _our_document(found, is_ours) is not None)
    return p


def check_output_dir(path: str | os.PathLike[str], flag: str, *, replaced_whole: bool = False) -> Path:
    """`path` as a Path when a folder can be written (or created) there; else a one-line
    UserError. `replaced_whole`: the folder is swapped in beside the old one
    (gptperf.atomic.atomic_dir), so its parent must be writable too."""
    p = usable_path(path, flag)
    try:
        exists = p.exists()
    except OSError:
        exists = False
    if exists:
        if not p.is_dir():
            raise UserError(f"{flag} {str(p)!r} is a file; give a folder")
        _writable(p, flag, p)
        if replaced_whole:
            _writable(p.resolve().parent, flag, p)
        return p
    _writable(_nearest_existing(p, flag, p), flag, p)
    return p


def check_replaceable_dir(path: str | os.PathLike[str], flag: str, *, what: str, marker_file: str,
                          is_ours: Callable[[Any], bool],
                          written: Callable[[Any], Iterable[str] | None] | None = None) -> Path:
    """`path` as a Path when gptperf may replace the folder there whole with its `what` (e.g.
    "profile", "report"; gptperf.atomic.atomic_dir): it is absent, empty, or holds `marker_file`
    (JSON) that `is_ours` recognises as one gptperf wrote, and nothing beside what that one wrote
    (`written(document)`: the names it put in the folder; None where it cannot tell); and it (or
    where it would be made) and its parent are writable. Else a one-line UserError: `--out .`
    must not wipe a home folder, nor a replaced profile the notes a user put in it."""
    p = usable_path(path, flag)
    try:
        is_dir, exists = p.is_dir(), p.exists()
    except OSError:  # unreachable: check_output_dir below names why
        is_dir = exists = False
    if exists and not is_dir:
        raise UserError(f"{flag} {str(p)!r} is a file; give a folder for the {what}")
    if is_dir:
        try:
            empty = not any(p.iterdir())
        except OSError as err:
            raise UserError(f"{flag} {str(p)!r} cannot be read ({err.strerror}); give a new or "
                            "empty folder") from None
        if not empty:
            doc = _our_document(p / marker_file, is_ours)
            if doc is None:
                raise UserError(
                    f"{flag} {str(p)!r} is not a gptperf {what} folder: it holds no gptperf "
                    f"{what} ({marker_file} of one), and the {what} replaces its folder whole; "
                    "give a new or empty folder")
            names = written(doc) if written is not None else None
            if names is not None:
                foreign = sorted({e.name for e in p.iterdir()} - set(names) - {marker_file})
                if foreign:
                    raise UserError(
                        f"{flag} {str(p)!r} holds {foreign[0]!r}, which no gptperf {what} wrote, "
                        f"and the {what} replaces its folder whole; move it out, or give a new or "
                        "empty folder")
    return check_output_dir(p, flag, replaced_whole=True)
