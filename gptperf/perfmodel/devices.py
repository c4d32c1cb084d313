"""Which machine a prediction uses: `resolve_hardware`, the one resolver every command calls, and
the datasheet entry that describes a device by its name.

The one default (`spec=None`), for the device a measurement runs on:

1. this device's ceilings measured by `gptperf ceilings` (cached per device name), when they
   list a peak for the dtype asked about (and for the fp32 units that run its vector work); a
   cached file that cannot be read is a one-line UserError naming it and the fix
   (`hardware.load_measured_hardware`), not a quiet fall-back to the datasheet;
2. else the datasheet entry whose name pattern matches the device name (e.g. 'NVIDIA H100
   80GB HBM3' -> h100-sxm), or the generic 'cpu' entry (nominal figures, source 'nominal') on a
   CPU;
3. else (a GPU gptperf has no datasheet for) a UserError naming the device and what to pass.

Pure Python, like the rest of the performance model: a device is named by strings.
"""

from __future__ import annotations

import re

from gptperf.errors import UserError
from gptperf.perfmodel.hardware import (
    HARDWARE,
    Hardware,
    get_hardware,
    known_hardware,
    load_measured_hardware,
)

# (pattern on the lower-cased torch device name, registry name), first match wins, so the more
# specific patterns come first (H100 PCIe before any H100, A100 80GB before A100).
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"h100.*pcie", "h100-pcie"),
    (r"h100.*nvl", "h100-pcie"),  # no NVL entry: its closest datasheet by per-card peak
    (r"h100", "h100-sxm"),  # 'NVIDIA H100 80GB HBM3' is the SXM card
    (r"h200", "h200"),
    (r"a100.*80\s*gb", "a100-80gb"),
    (r"a100", "a100-40gb"),  # 'A100-SXM4-40GB', 'A100-PCIE-40GB'
    (r"l40s", "l40s"),
)
_GPU_WORDS = ("nvidia", "tesla", "geforce", "quadro", "rtx", "radeon", "instinct")
CPU_ENTRY = "cpu"


def _is_gpu_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _GPU_WORDS) or any(
        re.search(pattern, lowered) for pattern, _ in _GPU_PATTERNS
    )


def datasheet_name_for(device_name: str, device_type: str | None = None) -> str | None:
    """The registry name for a torch device name, e.g. 'NVIDIA H100 80GB HBM3' -> 'h100-sxm'
    (the shipped entry for it: a datasheet, or the nominal 'cpu').

    `device_type` ('cpu' or 'cuda') decides CPU versus GPU; without it, a name that looks like a
    GPU is matched against the GPU table and anything else is the generic 'cpu' entry. An
    unknown GPU gives None.
    """
    if device_type == "cpu" or (device_type is None and not _is_gpu_name(device_name)):
        return CPU_ENTRY
    lowered = device_name.lower()
    for pattern, registry_name in _GPU_PATTERNS:
        if re.search(pattern, lowered):
            return registry_name
    return None


def device_type_of(hw: Hardware) -> str:
    """'cpu' for the shipped CPU entry (nominal figures) or a CPU's measured ceilings, else 'cuda'
    (a datasheet, an ad-hoc or a GPU's measured machine): the device a prediction on `hw` is of."""
    if hw.name == CPU_ENTRY or (hw.device_name and datasheet_name_for(hw.device_name) == CPU_ENTRY):
        return "cpu"
    return "cuda"


def datasheet_hardware_for(device_name: str, device_type: str | None = None) -> Hardware | None:
    """The shipped `Hardware` entry for a torch device name, or None if unknown: a vendor
    datasheet, or on a CPU the nominal 'cpu' entry (its `source` says which)."""
    registry_name = datasheet_name_for(device_name, device_type)
    if registry_name is None:
        return None
    return HARDWARE.get(registry_name)


def _covers(hw: Hardware, dtype: str | None) -> bool:
    if dtype is None:
        return True
    return dtype in hw.peak_flops and ("fp64" if dtype == "fp64" else "fp32") in hw.peak_flops


def resolve_hardware(spec: str | Hardware | None = None, device_name: str | None = None,
                     device_type: str | None = None, *, dtype: str | None = None) -> Hardware:
    """The machine a prediction for `device_name` (of `device_type` 'cpu' or 'cuda') uses.

    `spec`: a Hardware (ad hoc peaks included) is used as it is; a registry name, a TOML file or
    'measured' is looked up (`get_hardware`); None is the one default of the module docstring,
    where `dtype` (when given) is the dtype the measured ceilings must cover. Without a device
    name, the default can only be the 'cpu' entry on a CPU.
    """
    if isinstance(spec, Hardware):
        return spec
    if spec is not None:
        return get_hardware(str(spec), device_name=device_name)
    measured = load_measured_hardware(device_name) if device_name else None
    if measured is not None and _covers(measured, dtype):
        return measured
    if device_name:
        sheet = datasheet_hardware_for(device_name, device_type)
        if sheet is not None:
            return get_hardware(sheet.name)  # a copy: callers may not change the registry's
    elif device_type == "cpu":
        return get_hardware(CPU_ENTRY)
    raise UserError(
        f"no measured ceilings and no datasheet entry for {device_name or 'this device'!r}; "
        "run `gptperf ceilings` on it, or pass --hardware with one of: "
        + ", ".join(known_hardware()) + ", a .toml file"
    )
