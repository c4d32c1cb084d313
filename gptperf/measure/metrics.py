"""Run metrics beside the timer: utilization (and a GPU's SM clock) sampled in a background
thread, and peak memory.

GPU utilization comes from NVML (nvidia-ml-py's `pynvml`), falling back to
`torch.cuda.utilization()`; a missing library or driver becomes a note in the result, never a
crash. The SM clock comes from NVML alone: a power-capped card lowers it under sustained load
(an H200 went from 1980 to 1455 MHz in 2 s of back-to-back bf16 matmuls, BENCHMARKS.md), while
the calibration times its kernels in bursts at the boost clock. CPU utilization comes from
psutil. Peak memory is the caching allocator's high-water mark on GPU
(`torch.cuda.max_memory_allocated` / `max_memory_reserved` after a reset) and the process's peak
resident set on CPU.
"""

from __future__ import annotations

import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

NVML_MEANING = (
    "NVML GPU utilization: share of each sample window (1/6 s to 1 s) in which at least one "
    "kernel was running; one busy kernel on a single SM reads ~100%, so it is not SM occupancy"
)
# mean clock below this share of the card's maximum: the run was throttled, and a note says so
THROTTLED_SHARE = 0.95
# what such a note says it means (bench's and validate's notes)
THROTTLED_WHY = ("a power or thermal cap lowers the SM clock under sustained load, so compute-bound "
                 "kernels run slower than in the calibration's short bursts at the boost clock (the "
                 "calibrated prediction charges the slowdown its sustained matmul measured, where "
                 "it has one)")
CPU_MEANING = (
    "process CPU time / wall time / cores available to it: 100% means every available core "
    "was busy running this process"
)


def _cores_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class Utilization:
    """Utilization over a window, in percent, with where it came from and what it means."""

    device_type: str
    source: str  # "nvml", "torch.cuda.utilization", "psutil" or "none"
    mean_percent: float | None
    max_percent: float | None
    samples: int
    window_s: float
    interval_s: float
    meaning: str
    note: str | None = None
    per_core_percent: list[float] | None = None  # CPU: every core of the machine, all processes
    cores_available: int | None = None
    # GPU with NVML: the SM clock over the window (MHz) and the card's maximum SM clock
    sm_clock_mean_mhz: float | None = None
    sm_clock_min_mhz: float | None = None
    sm_clock_max_mhz: float | None = None

    @property
    def clock_share(self) -> float | None:
        """The mean SM clock over the card's maximum (None without both)."""
        if self.sm_clock_mean_mhz is None or not self.sm_clock_max_mhz:
            return None
        return self.sm_clock_mean_mhz / self.sm_clock_max_mhz

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Utilization:
        """The inverse of `to_dict`."""
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


def _nvml_index(index: int) -> int:
    """The NVML index of torch's CUDA device `index` (they differ under CUDA_VISIBLE_DEVICES)."""
    try:
        import torch  # deferred: loads torch

        return int(torch.cuda._get_nvml_device_index(index))
    except Exception:  # a private torch helper: fall back to the same index
        return index


def _nvml_handle(index: int) -> tuple[Any, Any]:
    """(the pynvml module, NVML's handle of torch's CUDA device `index`), NVML initialised; raises
    ImportError without the library, its NVMLError where the driver refuses."""
    import pynvml  # deferred: tests swap this module in sys.modules

    pynvml.nvmlInit()
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(index))


def gpu_clock_reader(index: int = 0) -> tuple[Callable[[], float] | None, float | None]:
    """(read, maximum): a function returning the GPU's SM clock now (MHz) and the card's maximum
    SM clock (MHz), from NVML; (None, None) where NVML cannot say."""
    try:
        pynvml, handle = _nvml_handle(index)
        maximum = float(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM))
        pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)  # fails here if refused
    except Exception:  # noqa: BLE001 - no library, no driver, an old one: no clock, no crash
        return None, None

    def read() -> float:
        return float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))

    return read, maximum


def gpu_utilization_reader(index: int = 0) -> tuple[Callable[[], float] | None, str, str | None]:
    """(read, source, note): a function returning the GPU's utilization in percent, or None.

    Tries NVML directly, then `torch.cuda.utilization`; whatever fails is explained in `note`.
    """
    problems: list[str] = []
    try:
        pynvml, handle = _nvml_handle(index)
        pynvml.nvmlDeviceGetUtilizationRates(handle)  # fails here if the driver refuses

        def read_nvml() -> float:
            return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        return read_nvml, "nvml", None
    except ImportError as err:
        problems.append(f"nvidia-ml-py (pynvml) cannot be imported ({err})")
    except Exception as err:  # noqa: BLE001 - pynvml.NVMLError, or whatever an old binding raises
        problems.append(f"NVML failed ({err})")
    try:
        import torch  # deferred: loads torch

        torch.cuda.utilization(index)

        def read_torch() -> float:
            return float(torch.cuda.utilization(index))

        return read_torch, "torch.cuda.utilization", "; ".join(problems) or None
    except Exception as err:
        problems.append(f"torch.cuda.utilization failed ({type(err).__name__}: {err})")
    return None, "none", "GPU utilization not measured: " + "; ".join(problems)


# A CPU window shorter than this has no utilization: threads' CPU time is accounted in jumps of a
# scheduler tick (1-10 ms), which over a window of a few ms read as up to 190 % of two cores.
MIN_CPU_WINDOW_S = 0.1


def _process_busy_reader(cores: int) -> Callable[[], float]:
    """A reader of this process's CPU use since its last reading, in % of `cores`, from the
    process's CPU clock (`time.process_time`, all threads; psutil's tick counts step by 10 ms)."""
    last = [time.process_time(), time.perf_counter()]

    def read() -> float:
        cpu, now = time.process_time(), time.perf_counter()
        busy = 100.0 * (cpu - last[0]) / max(now - last[1], 1e-9) / cores
        last[:] = [cpu, now]
        return min(busy, 100.0)  # above 100 % is the tick accounting's jump, not more cores

    return read


class UtilizationSampler:
    """Samples utilization every `interval_s` in a daemon thread between `start()` and `stop()`.

    GPU: NVML's utilization rate per sample. CPU: the exact mean over the window from the
    process's CPU clock, samples of the same clock for the maximum, and psutil's per-core picture.
    """

    def __init__(self, device: Any = "cpu", interval_s: float = 0.1) -> None:
        device_type = getattr(device, "type", str(device).split(":")[0])
        self.device_type = device_type
        self.index = getattr(device, "index", None) or 0
        self.interval_s = interval_s
        self._samples: list[float] = []
        self._clocks: list[float] = []
        self._read_clock: Callable[[], float] | None = None
        self._max_clock: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._note: str | None = None
        self._read: Callable[[], float] | None = None
        self._source = "none"
        self._t0 = 0.0
        self._cpu0 = 0.0
        self.result: Utilization | None = None  # set on leaving a `with` block

    def start(self) -> UtilizationSampler:
        if self.device_type == "cuda":
            self._read, self._source, self._note = gpu_utilization_reader(self.index)
            self._read_clock, self._max_clock = gpu_clock_reader(self.index)
        else:
            try:
                import psutil
            except ImportError as err:
                self._note = f"CPU utilization not measured: psutil cannot be imported ({err})"
            else:
                psutil.cpu_percent(None, percpu=True)  # the first call only sets the baseline
                self._cpu0 = time.process_time()
                self._read = _process_busy_reader(_cores_available())
                self._source = "psutil"
        self._t0 = time.perf_counter()
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, name="gptperf-utilization", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            self._samples.append(self._read())  # type: ignore[misc]
            if self._read_clock is not None:
                self._clocks.append(self._read_clock())
        except Exception as err:  # the driver went away mid-run: keep what we have, say why
            self._note = f"utilization sampling stopped: {type(err).__name__}: {err}"
            self._stop.set()

    def stop(self) -> Utilization:
        window = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self._read is not None and (self.device_type == "cuda" or not self._samples):
                self._sample()  # at least one reading, taken while the window is fresh
        samples = self._samples
        mean = statistics.fmean(samples) if samples else None
        peak = max(samples) if samples else None
        per_core = None
        cores = None
        if self._source == "psutil":
            import psutil

            cores = _cores_available()
            busy = time.process_time() - self._cpu0
            per_core = [float(x) for x in psutil.cpu_percent(None, percpu=True)]
            if window < MIN_CPU_WINDOW_S:
                mean = peak = None
                extra = (f"CPU utilization not measured: the timed window ({window * 1e3:.1f} ms) is "
                         f"shorter than {MIN_CPU_WINDOW_S * 1e3:.0f} ms, and the system accounts "
                         "other threads' CPU time only at scheduler ticks (read over a few ms, "
                         "their time reads as more than every core could give); time more steps "
                         "(--repeats)")
                self._note = f"{self._note}; {extra}" if self._note else extra
            else:
                mean = min(100.0 * busy / window / cores, 100.0)  # above: a tick's jump
                peak = max(peak or 0.0, mean)
        meaning = NVML_MEANING if self.device_type == "cuda" else CPU_MEANING
        if self.device_type == "cuda" and window < 1.0 and samples:
            extra = (f"the timed window ({window:.2f} s) is shorter than NVML's sample period, "
                     "so readings also cover the moments just before it")
            self._note = f"{self._note}; {extra}" if self._note else extra
        clocks = self._clocks
        util = Utilization(
            device_type=self.device_type, source=self._source, mean_percent=mean,
            max_percent=peak, samples=len(samples), window_s=window, interval_s=self.interval_s,
            meaning=meaning, note=self._note, per_core_percent=per_core, cores_available=cores,
            sm_clock_mean_mhz=statistics.fmean(clocks) if clocks else None,
            sm_clock_min_mhz=min(clocks) if clocks else None,
            sm_clock_max_mhz=self._max_clock if clocks else None,
        )
        share = util.clock_share
        if share is not None and share < THROTTLED_SHARE:
            extra = (f"the SM clock averaged {util.sm_clock_mean_mhz:.0f} MHz, {share:.1%} of the "
                     f"card's {util.sm_clock_max_mhz:.0f} MHz: the card held back under this "
                     f"load; {THROTTLED_WHY}")
            util.note = f"{util.note}; {extra}" if util.note else extra
        return util

    def __enter__(self) -> UtilizationSampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if not self._stop.is_set():
            self.result = self.stop()


@dataclass
class MemoryPeak:
    """High-water marks over a window, in bytes."""

    device_type: str
    allocated_bytes: int | None = None  # GPU: torch.cuda.max_memory_allocated
    reserved_bytes: int | None = None  # GPU: torch.cuda.max_memory_reserved
    peak_rss_bytes: int | None = None  # the process's peak resident set (host memory)
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryPeak:
        """The inverse of `to_dict`."""
        return cls(d["device_type"], d.get("allocated_bytes"), d.get("reserved_bytes"),
                   d.get("peak_rss_bytes"), d.get("source", ""), list(d.get("notes", [])))


def _vm_hwm_bytes() -> int | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", open("/proc/self/status").read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int | None:
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return None


class PeakMemoryMeter:
    """`reset()` before the window, `read()` after it."""

    def __init__(self, device: Any = "cpu") -> None:
        self.device = device
        self.device_type = getattr(device, "type", str(device).split(":")[0])
        self._rss_reset = False

    def reset(self) -> None:
        if self.device_type == "cuda":
            import torch  # deferred: loads torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._rss_reset = _reset_rss_peak()

    def read(self) -> MemoryPeak:
        peak = MemoryPeak(self.device_type)
        hwm = _vm_hwm_bytes() if self._rss_reset else None
        if hwm is not None:
            peak.peak_rss_bytes = hwm
            rss_source = "VmHWM of /proc/self/status since reset"
        else:
            peak.peak_rss_bytes = _ru_maxrss_bytes()
            rss_source = "getrusage ru_maxrss"
            peak.notes.append("peak RSS is since process start (the kernel refused a reset)")
        if self.device_type == "cuda":
            import torch  # deferred: loads torch

            torch.cuda.synchronize(self.device)
            peak.allocated_bytes = int(torch.cuda.max_memory_allocated(self.device))
            peak.reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
            peak.source = ("torch.cuda.max_memory_allocated / max_memory_reserved since "
                           f"reset_peak_memory_stats (caching allocator only); host: {rss_source}")
        else:
            peak.source = rss_source
        return peak
