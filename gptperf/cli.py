"""The `gptperf` command: parses arguments, calls the library, prints. One module per sub-command.

Each module in `gptperf.commands` defines `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int | None`; its top level imports no torch, so `gptperf model` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from gptperf import __version__
from gptperf.errors import Terminated, UserError
from gptperf.hostmem import keep_freed_memory
from gptperf.output import emit_json, error_document
from gptperf.signals import signals_raise

DESCRIPTION = (
    "gptperf: train, sample and score a GPT; model its cost exactly (FLOPs, bytes, roofline); "
    "measure, profile and compare prediction with measurement."
)

# What the system says when it refuses a file for reasons outside gptperf (a one-line error).
OS_REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
               errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EIO}

# Sub-command name -> module in gptperf.commands, in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "report": "report",
    "train": "train",
    "generate": "generate",
    "score": "score",
    "model": "model",
    "roofline": "roofline",
    "ceilings": "ceilings",
    "calibrate": "calibrate",
    "bench": "bench",
    "profile": "profile",
    "inference": "inference",
    "scale": "scale",
    "validate": "validate",
}


class ArgumentError(SystemExit):
    """A bad command line: argparse's one-line message, exit status 2 (a SystemExit)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other bad input
        message = " ".join(message.split())
        self._print_message(f"{self.prog}: error: {message}\n", sys.stderr)  # "gptperf bench: …"
        raise ArgumentError(message)


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


def _fail(command: str | None, message: str, as_json: bool, status: int = 2,
          kind: str = "error") -> int:
    """One line on stderr; under --json also the error as a JSON document on stdout."""
    print(f"gptperf {command}: {kind}: {message}" if kind else f"gptperf {command}: {message}",
          file=sys.stderr)
    if as_json:
        emit_json(error_document(message, command, status))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    keep_freed_memory()  # before any tensor: a CPU step re-faulted its freed gradients each step
    guard = sys.modules.get("gptperf.memguard")
    if guard is not None:  # an earlier command in this process (tests, notebooks)
        guard.forget()
    # Importing every command module costs ~60 ms; a known sub-command needs only its own.
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only=command)
    if command is not None:  # its own errors (unrecognized arguments) name the sub-command too
        parser.prog = f"gptperf {command}"
    try:
        args = parser.parse_args(argv)
    except ArgumentError as err:
        if as_json:
            emit_json(error_document(err.message, command, 2))
        raise
    if args.command is None:
        print(f"gptperf: error: give a command, one of {', '.join(COMMANDS)}; `gptperf --help` says "
              "what each does", file=sys.stderr)
        return 2
    try:
        # a kill unwinds as Ctrl-C does: no half-written file left behind; not in a torchrun
        # rank, which torchrun stops itself and which may be held in a collective, out of Python
        with contextlib.nullcontext() if "TORCHELASTIC_RUN_ID" in os.environ else signals_raise():
            return int(args._run(args) or 0)
    except UserError as err:
        return _fail(args.command, " ".join(str(err).split()), as_json)
    except Terminated as err:  # before KeyboardInterrupt, whose kind it is
        return _fail(args.command, f"stopped by signal {err.signum}", as_json, 128 + err.signum,
                     kind="")
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", as_json, 130, kind="")
    except OSError as err:
        # the system refused a file (a full disk, a folder gone or made read-only mid-run): one
        # line naming it, not a traceback; what was being written was left as before (atomic.py)
        if err.errno not in OS_REFUSALS:
            raise
        where = f": {err.filename!r}" if err.filename else ""
        return _fail(args.command, f"{err.strerror or err}{where}", as_json)
    except (RuntimeError, MemoryError) as err:
        # torch.OutOfMemoryError, the CPU allocator's failure, MemoryError: the memory guard's
        # advice (the largest batch that fits), without importing torch here
        from gptperf.memguard import (  # deferred: keeps --help fast
            is_out_of_memory,
            out_of_memory_message,
        )

        if not is_out_of_memory(err):
            raise
        return _fail(args.command, out_of_memory_message(err), as_json)


if __name__ == "__main__":
    sys.exit(main())
