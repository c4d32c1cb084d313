"""The `schema` of a typed result's JSON ("gptperf.bench/1"): what every `from_dict` checks first,
so a document of another kind or version is refused in one line instead of half-loaded."""

from __future__ import annotations

import math
from typing import Any

from gptperf.errors import UserError


def check_schema(doc: Any, expected: str) -> dict[str, Any]:
    """`doc` itself when it is a table whose "schema" is `expected`; else a one-line UserError
    naming what it found and what would be valid."""
    if not isinstance(doc, dict):
        raise UserError(f"expected a {expected} document (a JSON object), got {type(doc).__name__}")
    found = doc.get("schema")
    if found != expected:
        name = expected.rsplit("/", 1)[0]
        what = (f"schema {found!r}" if found is not None else "no schema")
        raise UserError(f"a {name} document has {what}; this gptperf reads {expected!r}")
    return doc


def number(value: Any) -> float:
    """A float read back from JSON, where NaN and inf were written as null: None -> NaN."""
    return math.nan if value is None else float(value)
