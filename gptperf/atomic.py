"""Write files and folders so that a reader sees the old version or the new one, never half of one.

A write goes to a temporary beside its target, named `.<target>.<host>.<pid>.<random>.tmp`, and
is renamed onto the target when complete. A writer killed mid-write (SIGKILL, power cut) leaves
that temporary behind; the next write of the same target removes it: one whose process is gone
(same host), one from another host older than an hour, or one of gptperf's earlier unmarked names
(`.<target>.<random>.tmp`) older than five minutes. A live writer's temporary is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Unmarked temporaries (written before they carried host and pid) and other hosts' ones: a live
# writer keeps its file's mtime fresh, so age is the only sign left.
LEGACY_STALE_S = 300.0
OTHER_HOST_STALE_S = 3600.0
_NAME_CHARS = 100  # of the target's name kept in a temporary's name: it must stay under NAME_MAX


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse to open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", os.uname().nodename)[:40] or "host"


def temporary_prefix(target: Path) -> str:
    """The start of every temporary name of `target` written by this process."""
    return f".{target.name[:_NAME_CHARS]}.{_host()}.{os.getpid()}."


def _pattern(target: Path) -> re.Pattern[str]:
    name = re.escape(target.name[:_NAME_CHARS])
    return re.compile(rf"\.{name}\.(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def is_stale(path: Path, target: Path, now: float | None = None) -> bool:
    """Whether `path` is a temporary of `target` that no live writer owns."""
    match = _pattern(target).fullmatch(path.name)
    if match is None:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    if match["pid"] is None:
        return age > LEGACY_STALE_S
    if match["host"] != _host():
        return age > OTHER_HOST_STALE_S
    pid = int(match["pid"])
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writes of `target` left beside it; returns what was removed."""
    target = Path(target)
    removed: list[Path] = []
    start = f".{target.name[:_NAME_CHARS]}."
    try:
        entries = [e for e in os.scandir(target.parent)
                   if e.name.startswith(start) and e.name.endswith(".tmp")]
    except OSError:  # no folder yet, or not readable: nothing to clean
        return removed
    now = time.time()
    for entry in entries:
        path = Path(entry.path)
        if is_stale(path, target, now):
            _remove(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success fsync it and rename it onto `target`.

    On any exception the temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target), suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file a normal mode
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace `target` with `data`."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Atomically replace `target` with `text` (UTF-8)."""
    write_bytes(target, text.encode("utf-8"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or filesystem cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target` whole.

    On any exception the temporary folder is removed and the previous `target` (if any) stays.
    The swap is one atomic exchange where Linux offers it (renameat2); elsewhere two renames,
    where a crash between them leaves the old copy under `<target>.old`, which the next write
    puts back first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(target.name + ".old")
    if old.exists() and not target.exists():
        os.replace(old, target)  # a crash between the two renames below: the old copy is whole
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(target), suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists() and _exchange(tmp, target):
        _fsync_dir(target.parent)
        _remove(tmp)  # now the previous version; if killed here, a stale temporary next time
        return
    _remove(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    _remove(old)
