"""Which datasheet entry of the performance model's hardware registry describes a torch device."""

from __future__ import annotations

import re
from typing import Any

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
    """The registry name for a torch device name, e.g. 'NVIDIA H100 80GB HBM3' -> 'h100-sxm'.

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


def datasheet_hardware_for(device_name: str, device_type: str | None = None) -> Any | None:
    """The perfmodel `Hardware` datasheet entry for a torch device name, or None if unknown."""
    from gptperf.perfmodel.hardware import HARDWARE

    registry_name = datasheet_name_for(device_name, device_type)
    if registry_name is None:
        return None
    return HARDWARE.get(registry_name)
