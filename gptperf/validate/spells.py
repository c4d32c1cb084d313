"""A CPU validation case measured in a slow spell of the machine's fork and join (`probe.in_spell`),
measured again once a parallel add reads out of the spell, within the seconds a sweep may spend
on it: the 2-core VM runs in such spells about half the time, 1-3 minutes each, and a case
measured in one misses by the spell (its steps 1.02-1.45x slower), not by the model. The
measurement whose adds read nearer the calibration's is kept; a note names each case."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gptperf.measure.calibration_passes import wait_out_of_spell
from gptperf.measure.probe import FORK_SPELL, fork_speed, fork_unit

# Seconds a sweep may spend waiting out spells and measuring cases again, by `quick`: the quick
# CPU sweep takes 15-20 s on the 2-core VM against its 2 minutes.
SPELL_BUDGET_S = {True: 60.0, False: 120.0}


class _Timed(Protocol):
    @property
    def fork_s(self) -> float | None: ...


T = TypeVar("T", bound=_Timed)


@dataclass
class SpellRetry:
    """Measures a case again (`again`) when its first measurement ran in a slow spell, while
    `budget_s` lasts; `notes` says what it did for each such case. `wait(limit_s)`: whether the
    machine read out of the spell within `limit_s` (default: a parallel add polled against the
    calibration's, `calibration_passes.wait_out_of_spell`)."""

    calibration: Any
    budget_s: float
    wait: Callable[[float], bool] | None = None
    clock: Callable[[], float] = time.perf_counter
    notes: list[str] = field(default_factory=list)

    def _speed(self, timing: _Timed) -> float | None:
        return fork_speed(self.calibration, timing.fork_s)

    def again(self, name: str, first: T, measure: Callable[[], T]) -> T:
        """`first`, or `measure()` once the spell has passed when `first` ran in one and the
        budget allows, whichever read its parallel adds nearer their calibration time."""
        speed = self._speed(first)
        # a fast reading means the calibration ran in a spell: waiting would not change it
        if speed is None or speed < FORK_SPELL or self.budget_s <= 0:
            return first
        start = self.clock()
        settled = self._wait_for(self.budget_s)
        if not settled:
            self.budget_s -= self.clock() - start
            self.notes.append(f"{name}: ran in a spell (parallel adds ×{speed:.2f}) that outlasted "
                              "the sweep's time for waiting; kept as measured")
            return first
        try:
            second = measure()
        except Exception as err:  # the first measurement stands: it was made, only in a spell
            first_line = (str(err).strip().splitlines() or [""])[0]  # an OOM's text runs on for lines
            self.notes.append(f"{name}: ran in a spell (parallel adds ×{speed:.2f}); measuring it "
                              f"again failed ({type(err).__name__}: {first_line}); kept as measured")
            return first
        finally:
            self.budget_s -= self.clock() - start
        later = self._speed(second)
        nearer = later is not None and abs(math.log(later)) < abs(math.log(speed))
        self.notes.append(
            f"{name}: ran in a spell (parallel adds ×{speed:.2f}); measured again after it, "
            f"{'adds ×' + format(later, '.2f') if later is not None else 'adds not read'}: kept "
            f"the {'second' if nearer else 'first'}")
        return second if nearer else first

    def _wait_for(self, limit_s: float) -> bool:
        if self.wait is not None:
            return self.wait(limit_s)
        unit = fork_unit(self.calibration)
        return unit is not None and wait_out_of_spell(unit, limit_s)
