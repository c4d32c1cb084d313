"""`gptperf train`: train a GPT on the embedded corpus, a text file or nanoGPT token files."""

from __future__ import annotations

import argparse
from typing import Any

from gptperf.commands.common import (
    add_device_argument,
    add_flag_pair,
    add_model_arguments,
    model_overrides,
    non_negative_int,
    output_path,
    positive_int,
    positive_step_count,
    seed_number,
)
from gptperf.errors import UserError
from gptperf.output import emit_json, print_note, seconds, si
from gptperf.train import PRESET_DEFAULTS, TrainConfig, train

HELP = "train a GPT (AdamW, warm-up + cosine LR, autocast, compile, atomic checkpoints, --resume)"

# --vocab-size and --attention are TrainConfig's own fields (the data can decide the vocabulary)
_MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size")


def _per_preset(key: str) -> str:
    return "default: " + ", ".join(f"{name} {d[key]:g}" for name, d in PRESET_DEFAULTS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser.add_argument_group("model"), "tiny", vocab_size=False,
                        preset_help="model shape and training defaults (default: tiny)")

    d = parser.add_argument_group("data")
    d.add_argument("--data", metavar="FILE|DIR",
                   help="UTF-8 text file, or folder with nanoGPT train.bin/val.bin "
                        "(default: the embedded pydoc topics corpus)")
    d.add_argument("--vocab-size", type=positive_int, metavar="N",
                   help="vocabulary of a train.bin/val.bin folder (default: largest token + 1)")

    t = parser.add_argument_group("optimisation")
    t.add_argument("--batch", type=positive_int, metavar="N",
                   help=f"sequences per micro-batch ({_per_preset('batch')})")
    t.add_argument("--seq", type=positive_int, metavar="N",
                   help=f"tokens per sequence ({_per_preset('seq')})")
    t.add_argument("--max-iters", type=positive_int, metavar="N",
                   help=f"optimizer steps in total ({_per_preset('max_iters')})")
    t.add_argument("--lr", type=float, metavar="X",
                   help=f"peak learning rate ({_per_preset('lr')})")
    t.add_argument("--min-lr", type=float, metavar="X",
                   help="learning rate at the end of the cosine decay (default: lr/10)")
    t.add_argument("--warmup-iters", type=non_negative_int, metavar="N",
                   help=f"steps of linear warm-up ({_per_preset('warmup_iters')})")
    t.add_argument("--weight-decay", type=float, metavar="X",
                   help="AdamW weight decay on 2-D weights (default: 0.1)")
    t.add_argument("--grad-accum", type=positive_step_count, metavar="N",
                   help="micro-batches per optimizer step (default: 1)")
    t.add_argument("--grad-clip", type=float, metavar="X",
                   help="clip the gradient norm to this, 0 = off (default: 1.0)")
    t.add_argument("--dtype", choices=("fp32", "tf32", "bf16", "fp16"),
                   help="fp32, tf32 matmuls, or bf16/fp16 autocast (default: fp32)")
    add_flag_pair(t, "compile", "torch.compile the model (the default on a GPU)",
                  "run eagerly (the default on a CPU)")
    add_device_argument(t, default=None)
    t.add_argument("--seed", type=seed_number, metavar="N", help="random seed (default: 1337)")

    e = parser.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-interval", type=int, metavar="N",
                   help=f"steps between validation losses, 0: only after the last step ({_per_preset('eval_interval')})")
    e.add_argument("--eval-iters", type=positive_step_count, metavar="N",
                   help="batches per validation loss (default: 20)")
    e.add_argument("--log-interval", type=positive_int, metavar="N",
                   help="steps between progress updates (default: 1)")
    e.add_argument("--out", type=output_path, metavar="DIR", default=None,
                   help="folder for ckpt.pt (default: out)")
    e.add_argument("--no-checkpoint", action="store_true", help="write no checkpoint")
    e.add_argument("--resume", action="store_true",
                   help="continue from <out>/ckpt.pt with its optimizer state and data position")
    e.add_argument("--force", action="store_true",
                   help="start afresh even when <out>/ckpt.pt exists, replacing it (without "
                        "--force or --resume an existing checkpoint is refused)")


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig the command line asks for: preset defaults, then the flags given."""
    model = model_overrides(args, _MODEL_FIELDS)
    overrides: dict[str, Any] = {
        "data": args.data, "vocab_size": args.vocab_size, "attention": args.attention,
        "batch": args.batch, "seq": args.seq, "max_iters": args.max_iters, "lr": args.lr,
        "min_lr": args.min_lr, "warmup_iters": args.warmup_iters,
        "weight_decay": args.weight_decay, "grad_accum": args.grad_accum,
        "grad_clip": args.grad_clip, "dtype": args.dtype, "device": args.device,
        "seed": args.seed, "eval_interval": args.eval_interval, "eval_iters": args.eval_iters,
        "log_interval": args.log_interval, "out_dir": args.out,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.compile is not None:
        overrides["compile"] = args.compile
    if args.resume:
        overrides["resume"] = True
    if args.no_checkpoint:
        if args.resume:
            raise UserError("--resume needs a checkpoint; drop --no-checkpoint")
        if args.out is not None:
            raise UserError(f"--out {args.out!r} with --no-checkpoint: nothing would be written "
                            "there; drop one of them")
        overrides["out_dir"] = None  # for_preset reads out_dir=None as no checkpoint
    return TrainConfig.for_preset(args.preset, model=model, **overrides)


def run(args: argparse.Namespace) -> int | None:
    from gptperf.output import console, err_console  # deferred: loads rich
    from gptperf.scaling.ddp import is_main_process  # deferred: loads torch

    cfg = train_config_from_args(args)
    if args.json:
        result = train(cfg, force=args.force)
        if is_main_process():  # under torchrun, rank 0 alone reports
            emit_json(result.to_dict())
        return 0
    with ProgressBar(cfg, err_console) as bar:
        result = train(cfg, on_step=bar.update, force=args.force)
    if not is_main_process():
        return 0
    env = result.environment
    console.print(
        f"trained {result.model_name} ({result.num_parameters / 1e6:.2f}M parameters) for "
        f"{result.steps} steps on {result.data_name} ({env.get('device', env.get('device_type'))}, "
        f"{cfg.dtype})"
    )
    if result.val_losses:
        step, loss = result.val_losses[-1]
        console.print(f"validation loss {loss:.4f} nats/token at step {step}")
    console.print(
        f"median time per step {seconds(result.median_step_time_s)}, "
        f"{si(result.tokens_per_s, 'tokens/s')} (measured, after warm-up), "
        f"wall time {seconds(result.wall_time_s)}"
    )
    if result.checkpoint:
        console.print(f"checkpoint: {result.checkpoint}")
    return 0


class ProgressBar:
    """A rich progress bar on stderr: step, loss, tokens/s, time per step; validation lines."""

    def __init__(self, cfg: TrainConfig, console: Any) -> None:
        from rich.progress import (  # deferred: loads rich
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task("train", total=cfg.max_iters, stats="")

        self.started = False

    def __enter__(self) -> ProgressBar:
        return self  # the bar appears with the first step, so early errors print alone

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def update(self, event: Any) -> None:
        """Called with each gptperf.train.StepEvent."""
        if event.note is not None:
            print_note(self.progress.console, event.note)
            return
        if not self.started:
            self.progress.start()
            self.started = True
        stats = (f"loss {event.loss:.4f}  {si(event.tokens_per_s, 'tokens/s')}  "
                 f"{seconds(event.step_time_s)}/step  lr {event.lr:.2e}")
        self.progress.update(self.task, completed=event.step, stats=stats)
        if event.val_loss is not None:
            self.progress.console.print(
                f"step {event.step:>5}  train {event.loss:.4f}  val {event.val_loss:.4f} "
                f"nats/token  {seconds(event.step_time_s)}/step  at {seconds(event.elapsed_s)}"
            )
