"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""

from __future__ import annotations


class Terminated(KeyboardInterrupt):
    """The process was told to stop (SIGTERM, SIGHUP; `gptperf.signals`): the command unwinds as on
    Ctrl-C, stopping what it started (a launch's ranks) and removing what it was writing, and the
    CLI exits 128 + `signum`, as the signal itself would have."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class UserError(ValueError):
    """Bad input from the user: a wrong config, a missing file, an unknown name, a NaN loss.

    The message names the bad value and what would be valid, on one line.
    """
