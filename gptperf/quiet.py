"""Known torch noise kept off stderr, exactly where gptperf causes it, and nothing else.

* Kineto writes `USDT: ... profiler_start` / `profiler_stop` lines straight to file descriptor 2
  whenever a profiler starts or stops (its most severe log level, so KINETO_LOG_LEVEL cannot drop
  them without dropping its errors too): `kineto_lines_dropped()` catches fd 2 around profiler
  start and stop and passes every other line on.
* dynamo logs "Profiler record function ... will be ignored" (and "Profiler function ... will
  be ignored") when it compiles through a profiler range, which it drops as intended:
  `drop_dynamo_profiler_warnings()` filters those two records and no others.
* torch.profiler warns once a process that "Profiler clears events at the end of each cycle" when
  a profiler is prepared (gptperf records one cycle at a time): `profiler_quiet()` drops that
  warning and Kineto's lines around a profiler's whole life.
* inductor advises "setting torch.set_float32_matmul_precision('high')" when it compiles with
  TF32 off, which gptperf does on purpose for every dtype but tf32 (`runtime.set_matmul_precision`;
  `--dtype tf32` is the user's way to it): `drop_tf32_advice()` filters that warning alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

_DYNAMO_LOGGERS = ("torch._dynamo.variables.ctx_manager", "torch._dynamo.variables.torch")


class _ProfilerIgnored(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Profiler ") and msg.endswith("will be ignored"))


_FILTER = _ProfilerIgnored()
_CYCLE_WARNING = r".*Profiler clears events at the end of each cycle"
_TF32_ADVICE = "TensorFloat32 tensor cores for float32 matrix multiplication available but not enabled"


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


@contextlib.contextmanager
def profiler_quiet() -> Iterator[None]:
    """Around a torch profiler's whole life (enter, steps, exit): its cycle warning dropped and
    Kineto's `USDT:` lines too (`kineto_lines_dropped`: other stderr output is delayed to the
    block's end)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CYCLE_WARNING)
        with kineto_lines_dropped():
            yield


def drop_tf32_advice() -> None:
    """Filter inductor's advice to turn TF32 on (the module docstring says why); installing the
    filter again replaces it, so calling this often adds nothing."""
    warnings.filterwarnings("ignore", message=_TF32_ADVICE, category=UserWarning)
