"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a wrong config, a missing file, an unknown name, a NaN loss.

    The message names the bad value and what would be valid, on one line.
    """
