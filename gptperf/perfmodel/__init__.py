"""The performance model: exact FLOPs, bytes, arithmetic intensity, roofline time and memory of any
GPT workload on any machine — pure Python arithmetic, no torch (docs/perfmodel.md).

    from gptperf.model import preset
    from gptperf.perfmodel import Workload, get_hardware, predict

    p = predict(preset("gpt2"), Workload("train", batch=12, seq=1024, dtype="bf16"), get_hardware("h100-sxm"))
    p.time_s, p.tokens_per_s, p.mfu(), p.memory.total
"""

from __future__ import annotations

from gptperf.perfmodel.conventions import CONVENTIONS, conventions_table, flops_per_token
from gptperf.perfmodel.devices import datasheet_hardware_for, datasheet_name_for, resolve_hardware
from gptperf.perfmodel.hardware import (
    HARDWARE,
    SOURCES,
    Hardware,
    KernelModel,
    adhoc_hardware,
    cache_dir,
    get_hardware,
    hardware_from_toml,
    known_hardware,
    local_device_name,
    measured_hardware_path,
    save_measured_hardware,
    slug,
)
from gptperf.perfmodel.memory import MemoryBreakdown, max_batch, memory_breakdown
from gptperf.perfmodel.ops import OpCost
from gptperf.perfmodel.roofline import (
    COMPUTE,
    MEMORY,
    Kernel,
    KernelCost,
    arithmetic_intensity,
    attainable,
    bound,
    kernel_cost,
    kv_projection,
    matmul,
    ridge_n,
    ridge_point,
    roofline_time,
    saxpy,
)
from gptperf.perfmodel.transformer import OpGroup, Prediction, predict
from gptperf.perfmodel.workload import (
    WORKLOAD_HELP,
    WORKLOADS,
    Workload,
    count_parameters,
    matmul_parameters,
)

__all__ = [
    "COMPUTE", "CONVENTIONS", "HARDWARE", "MEMORY", "SOURCES", "WORKLOADS", "WORKLOAD_HELP",
    "Hardware", "Kernel", "KernelCost", "KernelModel", "MemoryBreakdown", "OpCost", "OpGroup", "Prediction", "Workload",
    "adhoc_hardware", "arithmetic_intensity", "attainable", "bound", "cache_dir", "conventions_table",
    "count_parameters", "flops_per_token", "get_hardware", "hardware_from_toml", "kernel_cost",
    "known_hardware", "kv_projection", "local_device_name", "matmul", "matmul_parameters", "max_batch",
    "measured_hardware_path", "memory_breakdown", "predict", "ridge_n", "ridge_point",
    "roofline_time", "save_measured_hardware", "saxpy", "slug",
    "datasheet_hardware_for", "datasheet_name_for", "resolve_hardware",
]
