"""A benchmarks/ script loaded as a module for its tests, without putting benchmarks/ on sys.path."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> types.ModuleType:
    """benchmarks/`name`.py as the module "benchmarks_`name`" (kept in sys.modules, where
    dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
