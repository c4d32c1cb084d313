"""Whether a validation case shares a shape with the calibration: a validation is only a test of
the model if none of its matmuls, attention calls or models is one the calibration measured.

`overlaps(case_calls, planned)` compares a case's kernel calls (`perfmodel.kernel_calls.kernel_calls`:
family, key, point) with the calibration's shapes (`measure.calibration_plan.planned_shapes`, or
a calibration's `shapes`). It reads the shapes in the forms they are written: per family a list
of entries, each a list of names and sizes (e.g. ``[M, N, K]``, ``["causal_fwd", BH, T, D]``,
``["add:fp32", x]``), a table ``{"key"/"point"}`` or an object with ``key``/``point``; or per
family a table of key -> list of points. Grid families (matmul, attention) overlap on the sizes
alone, whatever the dtype or pass: a shape measured once was measured. Models overlap on their
shape (layers, heads, width, vocabulary).

Curves (vector, optimizer, gemv) are left out unless asked for: their one size is bytes or
parameters, which different shapes share (the embedding curve is measured at the width of gpt2,
so every gpt2 decode reads one of its points), and a shared point there is no shared kernel.
Asked for, they overlap on the size and the operation (dtypes aside: ``add:fp32`` against ``add``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gptperf.dtypes import DTYPES
from gptperf.model.config import GPTConfig, config_from_name

GRID_FAMILIES: tuple[str, ...] = ("matmul", "attention")
CONFIG_FAMILY = "configs"
_ARCHITECTURE = ("n_layer", "n_head", "n_embd", "vocab_size")

Entry = tuple[frozenset[str], tuple[float, ...]]


def _tags(text: Any) -> frozenset[str]:
    """The names in a key ('bf16:causal_fwd' -> {'causal_fwd'}), dtypes left out."""
    return frozenset(t for t in str(text).split(":") if t and t not in DTYPES)


def _flatten(values: Iterable[Any]) -> Iterable[Any]:
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        else:
            yield v


def _entry(raw: Any, key: Any = None) -> Entry:
    """(names, sizes) of one planned shape or kernel call, in any of the module's forms."""
    tags = _tags(key) if key is not None else frozenset()
    if isinstance(raw, Mapping):
        return _entry(raw.get("point", ()), raw.get("key", key))
    if hasattr(raw, "point") and not isinstance(raw, (str, bytes)):
        return _entry(tuple(raw.point), getattr(raw, "key", key))
    if isinstance(raw, (str, bytes)):
        return tags | _tags(raw), ()
    values = list(_flatten(raw)) if isinstance(raw, (list, tuple)) else [raw]
    sizes = []
    for v in values:
        if isinstance(v, str):
            tags = tags | _tags(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            sizes.append(float(v))
    return tags, tuple(sizes)


def _sizes_key(sizes: tuple[float, ...]) -> tuple[float, ...]:
    """Sizes as a lookup key: counts are whole numbers, written as ints or floats alike."""
    return tuple(round(x, 6) for x in sizes)


def _as_mapping(planned: Any) -> Mapping[str, Any]:
    if isinstance(planned, Mapping):
        return planned
    if hasattr(planned, "to_dict"):
        return planned.to_dict()
    if isinstance(planned, (list, tuple)):  # KernelCall-like objects
        out: dict[str, list[Any]] = {}
        for item in planned:
            out.setdefault(str(item.family), []).append(item)
        return out
    raise TypeError(f"planned shapes must be a table by family, got {type(planned).__name__}")


def planned_entries(planned: Any) -> dict[str, list[Entry]]:
    """The planned shapes as (names, sizes) per family (models left out: see `planned_configs`)."""
    out: dict[str, list[Entry]] = {}
    for family, items in _as_mapping(planned).items():
        if family == CONFIG_FAMILY:
            continue
        entries = out.setdefault(str(family), [])
        if isinstance(items, Mapping):  # key -> list of points
            for key, points in items.items():
                entries.extend(_entry(p, key) for p in points)
        else:
            entries.extend(_entry(item) for item in items)
    return out


def planned_configs(planned: Any) -> list[Any]:
    """The models the calibration runs: GPTConfigs where their names or tables say enough,
    else the names themselves."""
    out: list[Any] = []
    for item in _as_mapping(planned).get(CONFIG_FAMILY, []) or []:
        if isinstance(item, GPTConfig):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(item)
        else:
            out.append(config_from_name(str(item)) or str(item))
    return out


def _same_model(config: GPTConfig, other: Any) -> bool:
    if isinstance(other, str):
        return other == config.name
    get = other.get if isinstance(other, Mapping) else lambda k, d=None: getattr(other, k, d)
    return all(get(k) == getattr(config, k) for k in _ARCHITECTURE)


def overlaps(case_calls: Iterable[Any], planned: Any, config: GPTConfig | None = None, *,
             families: Iterable[str] = GRID_FAMILIES) -> list[str]:
    """Every kernel call of a case (objects with family, key, point) of `families` whose shape
    the calibration measures, and the case's model if the calibration runs it; [] when disjoint.
    Each overlap is one line, e.g. "matmul bf16 (4096, 768, 768)"."""
    families = set(families)
    index: dict[tuple[str, tuple[float, ...]], list[frozenset[str]]] = {}
    for family, entries in planned_entries(planned).items():
        for p_tags, p_sizes in entries:
            index.setdefault((family, _sizes_key(p_sizes)), []).append(p_tags)
    found: list[str] = []
    seen: set[tuple[str, str, tuple[float, ...]]] = set()
    for call in case_calls:
        family = str(call.family)
        if family not in families:
            continue
        tags, sizes = _entry(tuple(call.point), call.key)
        key = (family, str(call.key), _sizes_key(sizes))
        if key in seen:
            continue
        seen.add(key)
        shared = index.get((family, _sizes_key(sizes)), [])
        if family not in GRID_FAMILIES and tags:
            shared = [t for t in shared if not t or t == tags]
        if shared:
            point = tuple(int(x) if float(x).is_integer() else x for x in sizes)
            found.append(f"{family} {call.key} {point}")
    if config is not None:
        for other in planned_configs(planned):
            if _same_model(config, other):
                found.append(f"model {config.name} (the calibration runs it)")
                break
    return found
