"""The `gptperf` command: parses arguments, calls the library, prints. One module per sub-command.

Each module in `gptperf.commands` defines `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int | None`; its top level imports no torch, so `gptperf model` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gptperf import __version__
from gptperf.errors import UserError

DESCRIPTION = (
    "gptperf: train, sample and score a GPT; model its cost exactly (FLOPs, bytes, roofline); "
    "measure, profile and compare prediction with measurement."
)

# Sub-command name -> module in gptperf.commands, in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "report": "report",
    "train": "train",
    "generate": "generate",
    "score": "score",
    "model": "model",
    "roofline": "roofline",
    "ceilings": "ceilings",
    "bench": "bench",
    "profile": "profile",
    "inference": "inference",
    "scale": "scale",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other bad input
        self.exit(2, f"gptperf: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with `only` the parser of that one sub-command (faster to build)."""
    parser = _Parser(prog="gptperf", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"gptperf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"gptperf.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Importing every command module costs ~60 ms; a known sub-command needs only its own.
    parser = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"gptperf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gptperf {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as err:
        if type(err).__name__ != "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            raise
        print(
            f"gptperf {args.command}: error: out of GPU memory ({str(err).splitlines()[0]}); "
            "use a smaller --batch, --seq or preset",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
