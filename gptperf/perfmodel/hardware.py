"""Machines for the roofline: peak FLOP/s per dtype (dense), memory bandwidth, memory size, launch latency.

Four kinds of source, one type: entries shipped with gptperf (``perfmodel/hardware/*.toml``:
vendor datasheets, and nominal figures where no datasheet applies, e.g. the generic CPU), a TOML
file the user wrote, ceilings measured by ``gptperf ceilings`` (saved per device under
``$GPTPERF_CACHE_DIR`` or ``~/.cache/gptperf``), and ad-hoc figures from the command line.
Peaks are dense tensor-core figures where a dtype uses them, never the 2:4-sparsity figure.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptperf.atomic import write_text
from gptperf.dtypes import DTYPES, check_dtype
from gptperf.errors import UserError
from gptperf.writable import check_output_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SOURCES: tuple[str, ...] = ("datasheet", "nominal", "measured", "file", "ad-hoc")
MEASURED = "measured"
# The sources of the entries shipped with gptperf: a vendor's datasheet, or nominal figures of a
# made-up machine (the generic 'cpu'). Neither is measured; code that means "not measured" tests
# `source != MEASURED` (or `in SHIPPED`), never `== "datasheet"`, so the nominal entry counts too.
SHIPPED: tuple[str, ...] = ("datasheet", "nominal")
_DATA_DIR = Path(__file__).with_name("hardware")
KERNEL_MODEL = "kernel_model"  # the table of `Hardware.extra` that holds a measured KernelModel


class UnusableCacheError(UserError):
    """A cached measurement that cannot be read; the message is `problem` (the file and what is
    wrong with it, one line) and then the fix. A command that measures again anyway (`gptperf
    ceilings`) shows `problem` alone, not a fix telling the user to run it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


@dataclass(frozen=True)
class KernelModel:
    """Measured cost of one kernel inside a CUDA graph: t(S) = α + S/β for S bytes moved.

    Fitted per row class M of a weight-streaming matmul y = x·Wᵀ (x: M rows; S = bytes of x, W
    and y), once for a small elementwise kernel, and (optionally) for the one-query attention
    kernel of a decode step (S = bytes of q, K, V and the output) and for LayerNorm (α only).
    α is the fixed cost a kernel adds when kernels run back to back (launch, ramp-up, tail); β the
    rate at which it streams memory. A matmul of `rows` rows uses the smallest measured class
    M >= rows, else the largest class.
    """

    rows: tuple[int, ...]
    alpha_s: tuple[float, ...]
    beta: tuple[float, ...]  # bytes/s
    elementwise_alpha_s: float
    elementwise_beta: float  # bytes/s
    dtype: str = ""
    where: str = ""  # how it was measured, one line
    attention_alpha_s: float | None = None
    attention_beta: float | None = None  # bytes/s
    norm_alpha_s: float | None = None

    def __post_init__(self) -> None:
        # int() of a string or a table would be a ValueError/TypeError traceback, not a UserError
        if not all(isinstance(r, int) and not isinstance(r, bool)
                   or isinstance(r, float) and r.is_integer() for r in self.rows):
            raise UserError(f"kernel model: rows must be increasing positive integers, got {list(self.rows)}")
        rows = tuple(int(r) for r in self.rows)
        if not rows or len(rows) != len(self.alpha_s) or len(rows) != len(self.beta):
            raise UserError(f"kernel model: rows, alpha_s and beta must be lists of one length, got "
                            f"{len(self.rows)}, {len(self.alpha_s)}, {len(self.beta)}")
        if any(r <= 0 for r in rows) or sorted(set(rows)) != list(rows):
            raise UserError(f"kernel model: rows must be increasing positive integers, got {list(rows)}")
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "alpha_s", tuple(
            _positive(a, "kernel model alpha_s", allow_zero=True) for a in self.alpha_s))
        object.__setattr__(self, "beta", tuple(_positive(b, "kernel model beta") for b in self.beta))
        object.__setattr__(self, "elementwise_alpha_s", _positive(
            self.elementwise_alpha_s, "kernel model elementwise_alpha_s", allow_zero=True))
        object.__setattr__(self, "elementwise_beta", _positive(
            self.elementwise_beta, "kernel model elementwise_beta"))
        for key in ("attention_alpha_s", "attention_beta", "norm_alpha_s"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _positive(
                    getattr(self, key), f"kernel model {key}", allow_zero=key != "attention_beta"))

    def row_class(self, rows: int) -> int:
        """Index of the class used for a matmul of `rows` rows."""
        for i, m in enumerate(self.rows):
            if rows <= m:
                return i
        return len(self.rows) - 1

    def streaming_bandwidth(self, rows: int) -> float:
        """β (bytes/s) of a memory-bound matmul with `rows` rows."""
        return self.beta[self.row_class(rows)]

    def matmul_alpha_s(self, rows: int) -> float:
        """α (s) of a matmul kernel with `rows` rows."""
        return self.alpha_s[self.row_class(rows)]

    def to_dict(self) -> dict[str, Any]:
        d = {"rows": list(self.rows), "alpha_s": list(self.alpha_s), "beta": list(self.beta),
             "elementwise_alpha_s": self.elementwise_alpha_s,
             "elementwise_beta": self.elementwise_beta, "dtype": self.dtype, "where": self.where}
        for key in ("attention_alpha_s", "attention_beta", "norm_alpha_s"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelModel:
        """From `to_dict` (other keys, such as the raw curves, are ignored)."""
        if not isinstance(d, dict):
            raise UserError(f"kernel model must be a table, got {type(d).__name__}")
        missing = [k for k in ("rows", "alpha_s", "beta", "elementwise_alpha_s", "elementwise_beta")
                   if k not in d]
        if missing:
            raise UserError(f"kernel model lacks {', '.join(missing)}; needs rows, alpha_s, beta, "
                            "elementwise_alpha_s, elementwise_beta")
        for k in ("rows", "alpha_s", "beta"):
            if not isinstance(d[k], (list, tuple)):
                raise UserError(f"kernel model {k} must be a list, got {d[k]!r}")
        return cls(rows=tuple(d["rows"]), alpha_s=tuple(d["alpha_s"]), beta=tuple(d["beta"]),
                   elementwise_alpha_s=d["elementwise_alpha_s"],
                   elementwise_beta=d["elementwise_beta"], dtype=str(d.get("dtype", "")),
                   where=str(d.get("where", "")), attention_alpha_s=d.get("attention_alpha_s"),
                   attention_beta=d.get("attention_beta"), norm_alpha_s=d.get("norm_alpha_s"))


@dataclass
class Hardware:
    """A machine as the roofline sees it. Units: FLOP/s, bytes/s, bytes, seconds."""

    name: str
    peak_flops: dict[str, float]
    bandwidth: float
    memory_bytes: float
    launch_latency_s: float = 4e-6
    source: str = "datasheet"
    notes: str = ""
    device_name: str | None = None  # the device a measured file belongs to
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UserError(f"hardware name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.peak_flops, dict) or not self.peak_flops:
            raise UserError(f"hardware {self.name!r}: peak_flops must map dtypes to FLOP/s")
        peaks = {}
        for dtype, value in self.peak_flops.items():
            if dtype not in DTYPES:
                raise UserError(f"hardware {self.name!r}: unknown dtype {dtype!r} in peak_flops; valid: {', '.join(DTYPES)}")
            peaks[dtype] = _positive(value, f"hardware {self.name!r}: peak_flops.{dtype}")
        self.peak_flops = peaks
        self.bandwidth = _positive(self.bandwidth, f"hardware {self.name!r}: bandwidth (bytes/s)")
        # unknown capacity (None or 0: e.g. a CPU measurement) is unbounded: everything fits, and
        # inf says so (what to_toml writes); NaN is refused like any other non-finite figure
        if self.memory_bytes is None or (isinstance(self.memory_bytes, (int, float))
                                         and not isinstance(self.memory_bytes, bool)
                                         and self.memory_bytes == 0):
            self.memory_bytes = math.inf
        if self.memory_bytes != math.inf:
            self.memory_bytes = _positive(self.memory_bytes, f"hardware {self.name!r}: memory_bytes")
        # NaN is refused like any other non-finite figure (a TOML's `nan` used to become 0 here
        # silently); a measurement that has no launch floor says 0 itself (Ceilings.to_hardware)
        self.launch_latency_s = _positive(
            self.launch_latency_s, f"hardware {self.name!r}: launch_latency_s", allow_zero=True
        )
        if self.source not in SOURCES:
            raise UserError(f"hardware {self.name!r}: unknown source {self.source!r}; valid: {', '.join(SOURCES)}")
        if isinstance(self.extra.get(KERNEL_MODEL), KernelModel):
            self.extra = {**self.extra, KERNEL_MODEL: self.extra[KERNEL_MODEL].to_dict()}
        self.kernel_model  # noqa: B018 - a malformed table is a UserError now, not at predict time

    @property
    def kernel_model(self) -> KernelModel | None:
        """The measured per-kernel model (`extra['kernel_model']`), None when not measured."""
        table = self.extra.get(KERNEL_MODEL)
        return None if table is None else KernelModel.from_dict(table)

    def streaming_bandwidth(self, rows: int) -> float | None:
        """Measured β (bytes/s) of a memory-bound matmul of `rows` rows; None when not measured."""
        km = self.kernel_model
        return None if km is None else km.streaming_bandwidth(rows)

    def kernel_overhead_s(self, rows: int | None = None) -> float | None:
        """Measured α (s) per kernel inside a CUDA graph: of a matmul of `rows` rows, or of an
        elementwise kernel when `rows` is None; None when not measured."""
        km = self.kernel_model
        if km is None:
            return None
        return km.elementwise_alpha_s if rows is None else km.matmul_alpha_s(rows)

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for `dtype`; a UserError if this machine lists none for it."""
        check_dtype(dtype)
        if dtype not in self.peak_flops:
            raise UserError(
                f"hardware {self.name!r} ({self.source}) lists no peak for dtype {dtype!r}; "
                f"listed: {', '.join(self.peak_flops)}"
            )
        return self.peak_flops[dtype]

    def ridge_intensity(self, dtype: str) -> float:
        """π/β in FLOP/byte for `dtype`."""
        return self.peak(dtype) / self.bandwidth

    @property
    def label(self) -> str:
        """Where the figures come from, e.g. 'datasheet: h100-sxm'."""
        return f"{self.source}: {self.name}"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "source": self.source,
            "peak_flops": dict(self.peak_flops),
            "bandwidth": self.bandwidth,
            "memory_bytes": self.memory_bytes,
            "launch_latency_s": self.launch_latency_s,
            "notes": self.notes,
        }
        if self.device_name:
            d["device_name"] = self.device_name
        if KERNEL_MODEL in self.extra:
            d[KERNEL_MODEL] = self.kernel_model.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None) -> Hardware:
        """Build from a dict (as `to_dict` or a TOML file). Friendly units are accepted too:
        ``bandwidth_gbs`` (GB/s), ``memory_gib`` (GiB), a ``peak_tflops`` table (TFLOP/s).
        Unknown keys and tables (e.g. a measured file's ``[curves]``) are kept in `extra`."""
        if not isinstance(data, dict):
            raise UserError(f"hardware description must be a table, got {type(data).__name__}")
        known = {"name", "source", "peak_flops", "peak_tflops", "bandwidth", "bandwidth_gbs",
                 "memory_bytes", "memory_gib", "launch_latency_s", "launch_latency_us", "notes",
                 "device_name"}
        peaks: dict[str, Any] = {}
        if isinstance(data.get("peak_tflops"), dict):
            peaks.update({k: _positive(v, f"peak_tflops.{k}") * 1e12 for k, v in data["peak_tflops"].items()})
        if isinstance(data.get("peak_flops"), dict):
            peaks.update(data["peak_flops"])
        bandwidth = data.get("bandwidth")
        if bandwidth is None and "bandwidth_gbs" in data:
            bandwidth = _positive(data["bandwidth_gbs"], "bandwidth_gbs") * 1e9
        memory = data.get("memory_bytes")
        if memory is None and "memory_gib" in data:
            memory = _positive(data["memory_gib"], "memory_gib") * 2**30
        latency = data.get("launch_latency_s")
        if latency is None and "launch_latency_us" in data:
            latency = _positive(data["launch_latency_us"], "launch_latency_us", allow_zero=True) * 1e-6
        name = data.get("name")
        for what, value in (("name", name), ("bandwidth", bandwidth), ("memory_bytes", memory)):
            if value is None:
                raise UserError(f"hardware description lacks {what!r}; needs name, peak_flops, bandwidth, memory_bytes")
        return cls(
            name=str(name),
            peak_flops=peaks,
            bandwidth=bandwidth,
            memory_bytes=memory,
            launch_latency_s=4e-6 if latency is None else latency,
            source=source or data.get("source", "file"),
            notes=str(data.get("notes", "")),
            device_name=data.get("device_name"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_toml(self, extra: dict[str, Any] | None = None) -> str:
        """This machine as TOML (base units: FLOP/s, bytes/s, bytes, s); `extra` adds tables.
        A kernel model in `self.extra` is written too."""
        top: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "bandwidth": self.bandwidth,
            "memory_bytes": int(self.memory_bytes) if math.isfinite(self.memory_bytes) else self.memory_bytes,
            "launch_latency_s": self.launch_latency_s,
        }
        if self.device_name:
            top["device_name"] = self.device_name
        if self.notes:
            top["notes"] = self.notes
        header = "# gptperf hardware: peak_flops in FLOP/s (dense), bandwidth in bytes/s, memory in bytes\n"
        tables = {KERNEL_MODEL: self.extra[KERNEL_MODEL]} if KERNEL_MODEL in self.extra else {}
        tables.update(extra or {})
        return header + dumps_toml({**top, "peak_flops": dict(self.peak_flops), **tables})


def _positive(value: Any, what: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} finite number, got {value!r}")
    return value


# --- TOML (tomllib reads; this small writer covers what gptperf writes) ------------------------


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise UserError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def dumps_toml(data: dict[str, Any], _prefix: str = "") -> str:
    """A dict as TOML: scalars and lists first, then one [table] per nested dict."""
    lines = [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{_prefix}{_toml_key(str(k))}"
            lines.append(f"\n[{name}]")
            lines.append(dumps_toml(v, name + ".").rstrip("\n"))
    return "\n".join(line for line in lines if line != "") + "\n"


def hardware_from_toml(source: str | os.PathLike[str], *, origin: str | None = None) -> Hardware:
    """A Hardware from a TOML file path or TOML text. A file's `source` key is kept when it says
    'measured', 'datasheet' or 'nominal'; otherwise the machine is labelled 'file'. A file that
    is missing, unreadable, not UTF-8, not TOML, or holds a bad figure is a one-line UserError
    naming the file (and the field)."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and "=" not in source):
        path = Path(source)
        if path.is_dir():
            raise UserError(f"hardware file {str(path)!r} is a folder; give a TOML file (as "
                            "`gptperf ceilings` writes) or a registry name")
        if not path.is_file():
            raise UserError(f"hardware file {str(path)!r} does not exist")
        return _hardware_from_file(path, origin=origin)
    return _hardware_from_text(str(source), origin=origin, what="hardware file <text>")


def _hardware_from_file(path: Path, *, origin: str | None, what: str | None = None) -> Hardware:
    """A Hardware from the file `path`; each failure a one-line UserError that `what` (default:
    "hardware file <path>") begins."""
    what = what or f"hardware file {path}"
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{what}: cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        hint = " (it starts with a UTF-16 byte-order mark)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise UserError(f"{what}: not UTF-8 TOML: byte {raw[err.start]:#04x} at offset "
                        f"{err.start}{hint}; TOML files must be UTF-8") from None
    return _hardware_from_text(text, origin=origin, what=what)


def _hardware_from_text(text: str, *, origin: str | None, what: str) -> Hardware:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{what}: not valid TOML ({err})") from None
    src = data.get("source")
    if origin is None:
        origin = src if src in (MEASURED, *SHIPPED) else "file"
    try:
        return Hardware.from_dict(data, source=origin)
    except UserError as err:  # a bad figure: name the file it is in, not only the field
        raise UserError(f"{what}: {err}") from None


# --- The registry of shipped entries (datasheet and nominal) -----------------------------------


def _load_registry() -> dict[str, Hardware]:
    registry = {}
    for path in sorted(_DATA_DIR.glob("*.toml")):
        hw = hardware_from_toml(path)
        if hw.source not in SHIPPED:  # a shipped entry says which it is, never 'file' by default
            raise UserError(f"hardware file {path}: source must be one of {', '.join(SHIPPED)}, "
                            f"got {hw.source!r}")
        registry[hw.name] = hw
    return registry


HARDWARE: dict[str, Hardware] = _load_registry()


def known_hardware() -> list[str]:
    return sorted(HARDWARE)


def slug(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the measured file's name)."""
    s = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    if not s:
        raise UserError(f"device name {device_name!r} has no letters or digits to name a file by")
    return s


def cache_dir() -> Path:
    """`$GPTPERF_CACHE_DIR`, else ~/.cache/gptperf."""
    env = os.environ.get("GPTPERF_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gptperf"


CACHE_FLAG = "the cache folder (GPTPERF_CACHE_DIR, else ~/.cache/gptperf)"


def check_cache_dir(sub: str) -> Path:
    """`cache_dir() / sub` when a measurement can be saved there (the folder is, or can be made,
    writable); else a one-line UserError naming GPTPERF_CACHE_DIR, before the measurement."""
    return check_output_dir(cache_dir() / sub, CACHE_FLAG)


def measured_hardware_path(device_name: str) -> Path:
    """Where `gptperf ceilings` keeps the measured ceilings of `device_name`."""
    return cache_dir() / "ceilings" / f"{slug(device_name)}.toml"


def local_device_name() -> str:
    """This machine's first NVIDIA GPU's name (through NVML, without torch), else its CPU model."""
    try:
        import pynvml  # deferred: tests swap this module in sys.modules; nvidia-ml-py

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() > 0:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
                return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, no driver, no GPU: fall back to the CPU
        pass
    from gptperf.envinfo import cpu_model  # deferred: keeps --help fast

    return cpu_model()


def load_measured_hardware(device_name: str) -> Hardware | None:
    """The ceilings `gptperf ceilings` cached for `device_name` (source 'measured'); None when
    there are none.

    The one reader of the cache: `get_hardware('measured')`, the default of `resolve_hardware`
    and `gptperf ceilings` itself (`measure.ceilings.load_cached_ceilings`) all come here, so a
    cached file that cannot be used (not UTF-8, not TOML, a bad figure, another device's) is the
    same one-line UserError everywhere, naming the file and how to measure again — never "no
    measured ceilings", which would send the user to `gptperf ceilings`, which would find it."""
    path = measured_hardware_path(device_name)
    if not path.is_file():
        return None
    again = f"run `gptperf ceilings --force` on {device_name!r} to measure them again"
    try:
        hw = _hardware_from_file(path, origin=MEASURED, what=f"cached ceilings file {path}")
    except UserError as err:
        raise UnusableCacheError(str(err), again) from None
    if hw.device_name is not None and slug(hw.device_name) != slug(device_name):  # copied in
        raise UnusableCacheError(f"cached ceilings file {path} is of {hw.device_name!r}, this "
                                 f"device is {device_name!r}", again)
    return hw


def save_measured_hardware(hw: Hardware, device_name: str, extra: dict[str, Any] | None = None) -> Path:
    """Write `hw` (source 'measured') for `device_name`, atomically; `extra` adds TOML tables
    (e.g. the sweeps behind the ceilings). Returns the path."""
    path = measured_hardware_path(device_name)
    hw = Hardware(**{**hw.__dict__, "source": MEASURED, "device_name": device_name})
    write_text(path, hw.to_toml(extra={**hw.extra, **(extra or {})}))
    return path


def get_hardware(name: str, *, device_name: str | None = None) -> Hardware:
    """A registry name (e.g. 'h100-sxm'), a path to a TOML file, or 'measured' (the ceilings
    `gptperf ceilings` saved for `device_name`, default: this machine's device)."""
    if not isinstance(name, str) or not name:
        raise UserError(f"hardware must be a name, a .toml file or 'measured'; got {name!r}")
    key = name.lower()
    if key in HARDWARE:
        hw = HARDWARE[key]
        return Hardware(**{**hw.__dict__, "peak_flops": dict(hw.peak_flops)})
    if key == MEASURED:
        device = device_name or local_device_name()
        measured = load_measured_hardware(device)
        if measured is None:
            raise UserError(
                f"no measured ceilings for {device!r} (looked for {measured_hardware_path(device)}); "
                "run `gptperf ceilings` on that device first, or pick --hardware from: "
                + ", ".join(known_hardware())
            )
        return measured
    if name.endswith(".toml") or os.sep in name or Path(name).is_file():
        return hardware_from_toml(Path(name))
    raise UserError(
        f"unknown hardware {name!r}; valid: {', '.join(known_hardware())}, a .toml file, or measured"
    )


def adhoc_hardware(
    peak_tflops: float,
    bandwidth_gbs: float,
    dtype: str | None = None,
    *,
    memory_gib: float = math.inf,
    launch_latency_s: float = 0.0,
) -> Hardware:
    """A machine from two numbers: π in TFLOP/s (for `dtype`, or every dtype when None) and β in
    GB/s (1e9 bytes/s). Memory is unbounded and launch latency 0 unless given."""
    peak = _positive(peak_tflops, "--peak-tflops") * 1e12
    bw = _positive(bandwidth_gbs, "--bandwidth-gbs") * 1e9
    dtypes = [check_dtype(dtype)] if dtype else list(DTYPES)
    mem = math.inf if memory_gib == math.inf else _positive(memory_gib, "memory_gib") * 2**30
    return Hardware(
        name=f"{peak_tflops:g} TFLOP/s, {bandwidth_gbs:g} GB/s",
        peak_flops={d: peak for d in dtypes},
        bandwidth=bw,
        memory_bytes=mem,
        launch_latency_s=launch_latency_s,
        source="ad-hoc",
        notes="from the command line",
    )
