"""Known torch noise kept off stderr, exactly where gptperf causes it, and nothing else.

* Kineto writes `USDT: ... profiler_start` / `profiler_stop` lines straight to file descriptor 2
  whenever a profiler starts or stops (its most severe log level, so KINETO_LOG_LEVEL cannot drop
  them without dropping its errors too): `kineto_lines_dropped()` catches fd 2 around profiler
  start and stop and passes every other line on.
* dynamo logs "Profiler record function ... will be ignored" (and "Profiler function ... will
  be ignored") when it compiles through a profiler range, which it drops as intended:
  `drop_dynamo_profiler_warnings()` filters those two records and no others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

_DYNAMO_LOGGERS = ("torch._dynamo.variables.ctx_manager", "torch._dynamo.variables.torch")


class _ProfilerIgnored(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Profiler ") and msg.endswith("will be ignored"))


_FILTER = _ProfilerIgnored()


def drop_dynamo_profiler_warnings() -> None:
    """Install the filter (once) on the loggers that emit the two records."""
    for name in _DYNAMO_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _kept(data: bytes) -> bytes:
    return b"".join(line for line in data.splitlines(keepends=True)
                    if not line.startswith(b"USDT:"))


@contextlib.contextmanager
def kineto_lines_dropped() -> Iterator[None]:
    """Run the block with fd 2 going to a buffer; afterwards write back every line but Kineto's
    `USDT:` ones. Anything else written meanwhile (warnings, errors) still appears, after the
    block. Wrap only profiler start/stop: output inside is delayed until the block ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (embedded interpreter): leave stderr alone
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            rest = _kept(buf.read())
            if rest:
                os.write(2, rest)
