"""Command-line flags several sub-commands share: the model shape (a preset plus overrides), the device."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gptperf.errors import UserError
from gptperf.model.config import ATTENTION_IMPLEMENTATIONS, PRESETS, preset
from gptperf.perfmodel import adhoc_hardware, resolve_hardware
from gptperf.perfmodel.workload import Workload
from gptperf.plan import ExecutionPlan
from gptperf.plotting import PLOT_FORMATS, is_gptperf_picture
from gptperf.train import SEED_MAX
from gptperf.writable import check_output_dir, check_output_file, refuse_foreign_file

if TYPE_CHECKING:
    import torch

    from gptperf.model.config import GPTConfig
    from gptperf.perfmodel.hardware import Hardware

# GPTConfig fields with a flag of the same name (--n-layer, ...) that overrides the preset's value
MODEL_FIELDS: tuple[str, ...] = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "attention")


# More blocks than any GPT has; the performance model's per-block tables would take minutes.
MAX_LAYERS = 4096


def _at_least(low: int, text: str, most: int | None = None) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if n < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {n}")
    if most is not None and n > most:
        raise argparse.ArgumentTypeError(f"must be an integer from {low} to {most}, got {n}")
    return n


def positive_int(text: str) -> int:
    """A count flag's value (--batch, --seq, --steps …): an integer ≥ 1; else argparse's one-line
    error, which names the flag."""
    return _at_least(1, text)


def non_negative_int(text: str) -> int:
    """A flag whose 0 means none (--warmup …): an integer ≥ 0, else argparse's one-line error."""
    return _at_least(0, text)


def step_count(text: str) -> int:
    """A count of steps whose 0 means none (--warmup, --wait …): 0 to `MAX_STEPS`."""
    from gptperf.measure.timer import MAX_STEPS  # deferred: keeps --help fast

    return _at_least(0, text, MAX_STEPS)


def positive_step_count(text: str) -> int:
    """A count of steps to run (--active, --steps, --eval-iters …): 1 to `MAX_STEPS`."""
    from gptperf.measure.timer import MAX_STEPS  # deferred: keeps --help fast

    return _at_least(1, text, MAX_STEPS)


def output_path(text: str) -> str:
    """An output flag's path with a leading ~ expanded (as quoted on a command line), so that the
    checks before the work (`writable.usable_path` expands it) and the writing agree on the file."""
    return os.path.expanduser(text)


def _layers(text: str) -> int:
    n = positive_int(text)
    if n > MAX_LAYERS:
        raise argparse.ArgumentTypeError(f"{n} blocks is more than gptperf models (at most "
                                         f"{MAX_LAYERS})")
    return n


def seed_number(text: str) -> int:
    """--seed: an integer from 0 to `train.SEED_MAX` (argparse makes the error one line, exit 2)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is an integer from 0 to 2**64 - 1")
    return n


def int_list(text: str) -> tuple[int, ...]:
    """A comma-separated list of integers ("16,64,256"); an empty item or list is an error, not
    quietly dropped. Whether the values make sense is the command's to check."""
    items = [item.strip() for item in text.split(",")]
    try:
        if not all(items):
            raise ValueError
        return tuple(int(item) for item in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, such as "
                                         f"16,64,256; got {text!r}") from None


def add_model_arguments(parser: argparse._ActionsContainer, default_preset: str, *, preset_help: str | None = None,
                        vocab_size: bool = True) -> None:
    """--preset and the flags that override its fields; `vocab_size=False` leaves --vocab-size to
    the caller (it means something else where the data decides the vocabulary)."""
    parser.add_argument("--preset", default=default_preset, choices=list(PRESETS),
                        help=preset_help or f"model shape (default: {default_preset})")
    parser.add_argument("--n-layer", type=_layers, metavar="N",
                        help=f"override the preset's number of blocks (at most {MAX_LAYERS})")
    parser.add_argument("--n-head", type=positive_int, metavar="N", help="override the preset's number of heads")
    parser.add_argument("--n-embd", type=positive_int, metavar="N", help="override the preset's width C")
    parser.add_argument("--block-size", type=positive_int, metavar="N", help="override the preset's longest sequence")
    if vocab_size:
        parser.add_argument("--vocab-size", type=positive_int, metavar="N", help="override the preset's vocabulary size")
    parser.add_argument("--attention", choices=ATTENTION_IMPLEMENTATIONS,
                        help="attention implementation (default: the preset's)")


def model_overrides(args: argparse.Namespace, fields: Sequence[str] = MODEL_FIELDS) -> dict[str, Any]:
    """The model fields among `fields` given on the command line (flags left out are absent)."""
    return {k: getattr(args, k) for k in fields if getattr(args, k, None) is not None}


def config_from_args(args: argparse.Namespace) -> GPTConfig:
    """The GPTConfig of --preset with the override flags applied (validated: UserError if bad)."""
    return preset(args.preset, **model_overrides(args))


def add_hardware_arguments(parser: argparse._ActionsContainer, default: str) -> None:
    """--hardware NAME|FILE|measured (`default` when left out), or --peak-tflops X
    --bandwidth-gbs Y; read back with `hardware_from_args`."""
    parser.add_argument("--hardware", default=default,
                        help=f"registry name, a .toml file, or 'measured' (gptperf ceilings) (default: {default})")
    parser.add_argument("--peak-tflops", type=float, default=None, metavar="X",
                        help="ad-hoc peak in TFLOP/s (with --bandwidth-gbs; overrides --hardware)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, metavar="Y",
                        help="ad-hoc memory bandwidth in GB/s (1e9 bytes/s)")


def hardware_from_args(args: argparse.Namespace, default: str | None = None, *,
                       device_name: str | None = None) -> Hardware | None:
    """The Hardware the flags of `add_hardware_arguments` name, through the one resolver
    (`perfmodel.resolve_hardware`): the ad-hoc --peak-tflops with --bandwidth-gbs (one without
    the other is a one-line UserError), else --hardware, else `default`; None when none names
    one, leaving the choice to the caller. 'measured' is the ceilings of `device_name` (default:
    this machine's device)."""
    peak, bw = args.peak_tflops, args.bandwidth_gbs
    if peak is not None or bw is not None:
        if peak is None or bw is None:
            raise UserError("ad-hoc hardware needs both --peak-tflops and --bandwidth-gbs")
        return resolve_hardware(adhoc_hardware(peak, bw))
    spec = args.hardware if args.hardware is not None else default
    return None if spec is None else resolve_hardware(spec, device_name)


def add_device_argument(parser: argparse._ActionsContainer, default: str | None = "auto") -> None:
    """--device; None leaves the choice to the library (whose own default is auto)."""
    parser.add_argument("--device", default=default, help="auto, cpu or cuda[:N] (default: auto)")


def add_flag_pair(parser: argparse._ActionsContainer, name: str, on_help: str, off_help: str,
                  default: bool | None = None) -> None:
    """--NAME and --no-NAME as one setting (dest NAME, `default` when neither is given); both
    at once is a one-line error (argparse: "not allowed with"), not the last one winning."""
    dest = name.replace("-", "_")
    pair = parser.add_mutually_exclusive_group()
    pair.add_argument(f"--{name}", dest=dest, action="store_true", default=default, help=on_help)
    pair.add_argument(f"--no-{name}", dest=dest, action="store_false", help=off_help)


def check_plot_file(path: str, flag: str = "--plot") -> None:
    """A picture path that can be written (known suffix, a folder to land in, no file there but
    an earlier gptperf picture), checked before any work; else a one-line UserError."""
    refuse_foreign_file(check_output_file(path, flag, PLOT_FORMATS), flag, what="picture",
                        is_ours=is_gptperf_picture)


def check_folder(path: str, flag: str, *, replaced_whole: bool = False,
                 pictures: Iterable[str] = ()) -> None:
    """An output folder that is (or can be made) a writable folder, where each of `pictures`
    (names the command will write there) can be written too: absent, or an earlier gptperf
    picture; else a one-line UserError."""
    folder = check_output_dir(path, flag, replaced_whole=replaced_whole)
    for name in pictures:  # a folder in a picture's place would fail only after the work
        if (folder / name).is_dir():
            raise UserError(f"{flag} {path!r}: {str(folder / name)!r} is a folder where a file "
                            f"{name!r} is written; move it or choose another folder")
        refuse_foreign_file(folder / name, flag, what="picture", is_ours=is_gptperf_picture,
                            folder=path)


def guard_memory(config: GPTConfig, kind: str, batch: int, seq: int, dtype: str, device: torch.device, *,
                 processes: int = 1, flag: str = "--batch", compile: bool = False) -> None:
    """Refuse (one-line UserError with the largest batch that fits) a step whose predicted peak
    exceeds the device's free memory — before anything is allocated (gptperf.memguard);
    `compile`: predicted for the compiled plan the step will run under."""
    from gptperf.memguard import check_memory  # deferred: keeps --help fast

    plan = (ExecutionPlan.default(kind, device.type, compile=True, attention=config.attention, dtype=dtype)
            if compile else None)
    check_memory(config, Workload(kind, batch, seq, dtype), device, processes=processes, flag=flag,
                 plan=plan)
