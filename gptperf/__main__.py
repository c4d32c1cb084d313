"""`python -m gptperf` runs the `gptperf` command."""

import sys

from gptperf.cli import main

sys.exit(main())
