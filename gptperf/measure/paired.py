"""Measured over predicted step by step: each timed step against the prediction for the host it
ran on, read from the host sample taken nearest it (`probe.HostSampler` samples the host model's
step between a measurement's steps).

A host can change speed within one measurement (a virtual machine's slow spells last tens to
hundreds of milliseconds). The median of a case's steps and the median of its host samples can
then come from different spells, and a host-bound step's ratio moves with the mismatch. Pairing
each step with the sample beside it keeps both sides of every ratio on one host; the median of
the paired ratios is the case's measured/predicted (BENCHMARKS.md, "Session 67": on the stored
H100 sweeps of sessions 64–67, the same as before in calm runs and a p90 of 6.8% against 14.0% in
the one with the most host spells).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from gptperf.measure.probe import phase_speeds_over, speed_over

if TYPE_CHECKING:
    from gptperf.perfmodel.calibration import Calibration


def nearest_sample(after_step: Sequence[int], step: int) -> int:
    """Index of the sample nearest timed step `step` (0-based), where sample j was taken after
    step `after_step[j]` (1-based), so between steps after_step[j] − 1 and after_step[j] (0-based);
    of two equally near, the earlier."""
    if not after_step:
        raise ValueError("no host samples to pair a step with")
    return min(range(len(after_step)), key=lambda j: abs(after_step[j] - 0.5 - step))


def paired_ratio(steps_s: Sequence[float], after_step: Sequence[int],
                 predict: Callable[[int], float]) -> float | None:
    """The median over the timed steps `steps_s` of each step over `predict(j)`, the predicted
    step at the host of sample j, j the sample nearest it (`nearest_sample`); each sample is
    predicted once. None without steps or samples."""
    if not steps_s or not after_step:
        return None
    predicted: dict[int, float] = {}
    ratios = []
    for i, seconds in enumerate(steps_s):
        j = nearest_sample(after_step, i)
        if j not in predicted:
            predicted[j] = predict(j)
        ratios.append(seconds / predicted[j])
    return statistics.median(ratios)


def host_paired_ratio(steps_s: Sequence[float], samples_s: Sequence[float],
                      after_step: Sequence[int], phase_samples_s: Mapping[str, Sequence[float]],
                      calibration: Calibration | None, probe: str,
                      predict: Callable[[float | None, dict[str, float] | None], float]
                      ) -> float | None:
    """`paired_ratio` of a measurement's steps and the host samples taken among them: sample j
    read as a host speed over the calibration's unit of `probe` (`probe.speed_over`), each phase
    of it where the probe's step has several (`phase_samples_s[name][j]`,
    `probe.phase_speeds_over`), and `predict(speed, phase_speeds)` the step predicted at them.
    None without samples, or without the calibration's unit."""
    if not samples_s or speed_over(calibration, statistics.median(samples_s), probe) is None:
        return None

    def at(j: int) -> float:
        phases = {name: s[j] for name, s in phase_samples_s.items() if j < len(s)}
        return predict(speed_over(calibration, samples_s[j], probe),
                       phase_speeds_over(calibration, phases, probe))

    return paired_ratio(steps_s, after_step, at)
