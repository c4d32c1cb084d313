"""How much slower compute-heavy work runs when a GPU keeps it up: a power or thermal cap lowers
the SM clock under sustained load, while the calibration times its kernels in bursts of about a
millisecond at the boost clock.

`measure_sustained` runs a bf16 matmul for about a second at each of `DUTIES` (the share of each
period the matmul runs; a copy, memory-bound as a step's other kernels are, fills the rest) and
returns per duty the period's FLOP rate in a burst and the matmul's slowdown once the clock has
settled. `Calibration.sustained_slowdown` reads the slowdown at a step's own FLOP rate, and
`perfmodel.expected` charges the step's matmul and attention kernels that much more (measured:
BENCHMARKS.md, "Figures moved here from the code's docstrings", "The clock under sustained load").
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from gptperf.measure.kernel_timer import random_tensor, replay_seconds
from gptperf.runtime import cuda_graph

MATMUL = 4096  # M = N = K of the matmul: 137 GFLOP, about 0.2 ms in bf16 on an H200
COPY_BYTES = 64 * 2**20  # one copy's source (and destination): beyond L2, from HBM
DUTIES = (1.0, 0.5)  # the matmul's share of each period
PERIOD_REPLAY_S = 2e-3  # periods a replay holds: about this long, so the host's relaunch is <1%
HOLD_S = 1.2  # each duty is kept up this long; the clock settles well within it (BENCHMARKS.md)
SETTLED = 0.5  # the replays of the hold's last half count
IDLE_S = 0.3  # the card idles this long before each burst is timed
BURST_REPLAYS = 5


def _graph(calls: list[Callable[[], Any]], device: torch.device) -> torch.cuda.CUDAGraph:
    def run() -> None:
        for call in calls:
            call()

    return cuda_graph(run, device)


def _burst_s(graph: torch.cuda.CUDAGraph) -> float:
    """Median seconds of a replay of `graph` after the card idled IDLE_S (one replay untimed)."""
    torch.cuda.synchronize()
    time.sleep(IDLE_S)
    graph.replay()
    return statistics.median(replay_seconds(graph) for _ in range(BURST_REPLAYS))


def _held_s(graph: torch.cuda.CUDAGraph, seconds: float) -> float:
    """Median seconds of a replay of `graph` over the last half of `seconds` of replays."""
    times: list[tuple[float, float]] = []
    start = time.perf_counter()
    while (now := time.perf_counter() - start) < seconds:
        times.append((now, replay_seconds(graph)))
    settled = [t for at, t in times if at >= SETTLED * seconds] or [times[-1][1]]
    return statistics.median(settled)


def slowdown(period_burst_s: float, period_held_s: float, filler_s: float) -> float:
    """The matmul's slowdown from a period's burst and held times, the filler (copies) taken as
    unslowed: memory-bound kernels run at the memory's clock, which the cap does not lower."""
    return (period_held_s - filler_s) / (period_burst_s - filler_s)


def measure_sustained(device: torch.device, clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """{"dtype": "bf16", "rates": FLOP/s of each duty's period in a burst, "slowdowns": the
    matmul's time held over its time in a burst, "duties", "hold_s", and with `clock` (MHz now)
    "clock_mhz": the SM clock at the end of each hold}."""
    a, b = (random_tensor((MATMUL, MATMUL), torch.bfloat16, device) for _ in range(2))
    c = torch.empty_like(a)
    src = random_tensor((COPY_BYTES // 2,), torch.bfloat16, device)
    dst = torch.empty_like(src)
    flops = 2.0 * MATMUL**3

    def mm() -> None:
        torch.mm(a, b, out=c)

    def cp() -> None:
        dst.copy_(src)

    mm_s = _burst_s(_graph([mm] * 8, device)) / 8
    cp_s = _burst_s(_graph([cp] * 8, device)) / 8
    out: dict[str, Any] = {"dtype": "bf16", "rates": [], "slowdowns": [], "duties": [],
                           "hold_s": HOLD_S, "matmul": [MATMUL] * 3, "clock_mhz": []}
    for duty in DUTIES:
        copies = round(mm_s * (1 - duty) / duty / cp_s)
        period = [mm] + [cp] * copies
        repeat = max(1, round(PERIOD_REPLAY_S / (mm_s + copies * cp_s)))
        graph = _graph(period * repeat, device)
        burst = _burst_s(graph) / repeat
        held = _held_s(graph, HOLD_S) / repeat
        clock_mhz = clock() if clock is not None else None
        del graph
        slow = slowdown(burst, held, copies * cp_s) if burst > copies * cp_s else math.nan
        if not (math.isfinite(slow) and slow > 0):  # the copies outlasted the period: no reading
            continue
        out["rates"].append(flops / burst)
        out["slowdowns"].append(slow)
        out["duties"].append(mm_s / burst)
        if clock_mhz is not None:
            out["clock_mhz"].append(clock_mhz)
    return out


def sustained_note(sustained: dict[str, Any]) -> str:
    """One line: the matmul's slowdown at each measured rate."""
    if not sustained["rates"]:
        return "sustained load: no duty gave a reading (the copies outlasted the periods)"
    parts = [f"×{s:.3f} at {r / 1e12:.0f} TFLOP/s ({d:.0%} of the time)"
             for r, s, d in zip(sustained["rates"], sustained["slowdowns"], sustained["duties"],
                                strict=True)]
    clocks = sustained.get("clock_mhz") or []
    held = f"; SM clock at the end of each hold {', '.join(f'{c:.0f}' for c in clocks)} MHz" if clocks else ""
    return (f"sustained load: a {sustained['dtype']} matmul kept up {sustained['hold_s']:g} s "
            f"takes {', '.join(parts)} of its burst time{held}")
