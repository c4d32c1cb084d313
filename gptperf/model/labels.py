"""Labels on the model's operations: profiler ranges in eager mode, FX node annotations when compiling.

`torch.profiler.record_function` costs a dispatcher call on entry and exit (about 6 µs on a
2-core CPU), whether or not a profiler runs: about 1 ms per GPT-2 forward, enough to slow eager
decoding. This `record_function` opens the real range only while a profiler is active.

Under torch.compile a profiler range would be dropped by dynamo; instead the label annotates the
FX nodes traced inside it (`torch.fx.traceback.annotate`: node.meta["custom"][ANNOTATION] = the
name). AOT autograd copies a forward node's annotation onto the backward nodes made from it, and
inductor keeps the nodes each generated kernel computes, so a compiled kernel can be named too.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.fx.traceback as _fx_traceback
from torch.profiler import record_function as _profiler_range

from gptperf.quiet import drop_dynamo_profiler_warnings

ANNOTATION = "gptperf_op"  # key under an FX node's meta["custom"]: the operation name of its label
_NO_RANGE = contextlib.nullcontext()
# Older torch has no annotate: compiled nodes then stay unnamed (the profiler says so).
_annotate = getattr(_fx_traceback, "annotate", None)
# dynamo drops a profiler range it compiles through (below, and torch.optim's own), as intended;
# its warning that it does is noise
drop_dynamo_profiler_warnings()


def record_function(name: str) -> Any:
    """A profiler range `name` while a profiler is active, an FX annotation while compiling, else
    a no-op context."""
    if torch.compiler.is_compiling():
        if _annotate is not None:
            return _annotate({ANNOTATION: name})
        return _profiler_range(name)  # dynamo drops the range itself: no graph break
    if torch.autograd._profiler_enabled():
        return _profiler_range(name)
    return _NO_RANGE
