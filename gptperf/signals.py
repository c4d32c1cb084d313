"""SIGTERM and SIGHUP as exceptions: a command told to stop (a scheduler, `timeout`, `kill`)
unwinds as it does on Ctrl-C, so that what it was writing is removed (`atomic.py`) and what it
started is stopped, and the CLI exits 128 + the signal's number."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from gptperf.errors import Terminated


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Terminated` inside the block (only the main thread can take
    signals)."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    with _handlers(handler):
        yield


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGTERM and SIGHUP ignored inside the block (while started work is being stopped)."""
    with _handlers(signal.SIG_IGN):
        yield


@contextlib.contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    """`handler` for SIGTERM and SIGHUP inside the block, the previous ones after it. A signal
    set to be ignored (SIGHUP under nohup) stays ignored, a handler installed outside Python
    (signal.signal reports None) is left alone, and off the main thread nothing changes (only
    it can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for s in (signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(s)
        if current is not signal.SIG_IGN and current is not None:
            old[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
