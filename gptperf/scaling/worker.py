"""The per-rank program that torchrun runs for `gptperf scale`:
`python -m gptperf.scaling.worker SPEC.json` (a `WorkerSpec`, which `gptperf scale` writes).

Every rank trains the same GPT (same seed) on its slice of the same global batch, for each
per-process batch asked for, and stamps each step's phases and each DDP bucket's all-reduce
(`ddp.AllReduceTimer`); with `collectives` it first sweeps all-reduce sizes. At the end the
ranks' records are gathered and the first process of every node writes them as one JSON file
(`result.json` in the spec's `out`). A rank that fails writes `error-rank<R>.txt` (one line)
before it exits, for the launcher's message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf.atomic import atomic_path
from gptperf.envinfo import environment
from gptperf.hostmem import keep_freed_memory
from gptperf.measure.collectives import allreduce_sweep
from gptperf.model.config import GPTConfig
from gptperf.plan import ExecutionPlan

if TYPE_CHECKING:
    from gptperf.scaling.ddp import DistContext

RESULT = "result.json"
SPEC = "spec.json"
SCHEMA = "gptperf.scale.ranks/1"


def error_file(out: str | os.PathLike[str], rank: int) -> Path:
    return Path(out) / f"error-rank{rank}.txt"


@dataclass(frozen=True)
class WorkerSpec:
    """What every rank runs: the model (`config`, a GPTConfig's dict), the per-process
    `batches` to train data-parallel, and where to write (`out`). `solo_batches`: those of
    `batches` whose every DDP step is paired with a step of a second model on every rank at once,
    without DDP — the compute of p processes sharing the machine, with no communication.
    `fault` (tests only): raise|kill|hang:RANK:STEP."""

    config: dict[str, Any]
    batches: tuple[int, ...]
    seq: int
    out: str
    solo_batches: tuple[int, ...] = ()
    dtype: str = "fp32"
    compile: bool = False
    device: str = "auto"
    warmup: int = 3
    steps: int = 10
    threads: int | None = None  # intra-op threads per process (CPU)
    seed: int = 0
    collectives: bool = False  # sweep all-reduce sizes first
    collective_sizes: tuple[int, ...] | None = None
    timeout_s: float = 120.0  # how long any collective may wait
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown worker spec key(s) {unknown}; valid: {', '.join(sorted(known))}")
        d = dict(d)
        d["batches"] = tuple(d["batches"])
        d["solo_batches"] = tuple(d.get("solo_batches", ()))
        if d.get("collective_sizes") is not None:
            d["collective_sizes"] = tuple(d["collective_sizes"])
        return cls(**d)

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> WorkerSpec:
        return cls.from_dict(json.loads(Path(path).read_text()))


def make_train_step(model: Any, plan: ExecutionPlan, device: Any, dtype: str, next_batch: Any) -> Any:
    """The train step the scaling study runs: gptperf's one train step (`gptperf.steps.train`,
    what `gptperf train` runs: AdamW with weight-decay groups, clipping, autocast, compile as the
    plan says) around the module to train — DDP-wrapped on more than one process. This is the
    only place the worker gets its step from."""
    from gptperf.steps.train import TrainStep  # deferred: loads torch

    return TrainStep(model, plan, device, dtype, next_batch)


def _fault(spec: str | None, rank: int, step: int) -> None:
    if not spec:
        return
    kind, r, s = spec.split(":")
    if int(r) != rank or int(s) != step:
        return
    if kind == "raise":
        raise RuntimeError(f"injected failure on rank {rank} at step {step}")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        while True:
            time.sleep(1)


class _Trainer:
    """One model's train step on this rank's rows of the global batch, with its stamps."""

    def __init__(self, ctx: DistContext, config: GPTConfig, batch: int, args: WorkerSpec, ddp: bool) -> None:
        import torch  # deferred: loads torch

        from gptperf.model import GPT  # deferred: loads torch
        from gptperf.runtime import model_dtype  # deferred: loads torch
        from gptperf.scaling.ddp import (  # deferred: loads torch
            AllReduceTimer,
            StepClock,
            parallelize,
            rank_rows,
        )

        dev = ctx.device
        torch.manual_seed(args.seed)
        model = GPT(config).to(device=dev, dtype=model_dtype(args.dtype))
        module = parallelize(model, ctx) if ddp else model
        self.ddp = module is not model
        self.clock = AllReduceTimer(module, dev) if self.ddp else StepClock(dev)
        self.plan = ExecutionPlan.default("train", dev.type, compile=args.compile,
                                          attention=config.attention, ddp=True)
        self.device = dev
        # One global batch, drawn alike on every rank; this rank takes its rows, so p processes
        # together train on exactly what one process of batch p·b does. The same batch every
        # step: the time does not depend on the tokens, and the loss falls, so training shows.
        g = torch.Generator().manual_seed(args.seed)
        tokens = torch.randint(0, config.vocab_size, (ctx.world_size * batch, args.seq + 1), generator=g)
        rows = rank_rows(tokens, ctx).to(dev)
        x, y = rows[:, :-1], rows[:, 1:]
        self.step = make_train_step(module, self.plan, dev, args.dtype, lambda: (x, y))
        self.losses: list[Any] = []
        self.step.run_model.register_forward_hook(lambda _m, _i, out: self.losses.append(out[1].detach()))
        self.records: list[dict[str, Any]] = []

    def run(self, warmup: bool) -> None:
        from gptperf.runtime import synchronize  # deferred: loads torch

        synchronize(self.device)
        self.clock.begin()
        for name, run_phase in self.step.phases:
            run_phase()
            self.clock.mark(name)
        synchronize(self.device)
        rec = self.clock.end()
        rec["loss"] = float(self.losses[-1].float().item())
        rec["warmup"] = warmup
        self.records.append(rec)


def run_batch(ctx: DistContext, config: GPTConfig, batch: int, args: WorkerSpec, *, paired: bool = False) -> dict[str, Any]:
    """Train a fresh model (seed `args.seed`) for warmup + steps on per-process `batch`,
    DDP-wrapped on more than one rank; return this rank's record: losses, phase stamps and
    buckets of every step. `paired`: after every DDP step, all ranks also step a second model
    of their own, without DDP, at the same time (`solo_steps`) — the compute of p processes
    sharing the machine with no communication, measured under the same background as the
    DDP step beside it."""
    from gptperf.runtime import set_matmul_precision  # deferred: loads torch

    set_matmul_precision(args.dtype)
    main = _Trainer(ctx, config, batch, args, ddp=True)
    solo = _Trainer(ctx, config, batch, args, ddp=False) if paired and ctx.distributed else None

    def barrier() -> None:  # ranks start each step together, as after a DDP step's all-reduce
        if solo is not None:
            import torch.distributed as dist  # deferred: loads torch

            dist.barrier()

    for i in range(args.warmup + args.steps):
        _fault(args.fault, ctx.rank, i)
        barrier()
        main.run(i < args.warmup)
        if solo is not None:
            barrier()
            solo.run(i < args.warmup)
    out = {"per_process_batch": batch, "ddp": main.ddp, "warmup": args.warmup, "steps": main.records,
           "plan": main.plan.to_dict()}
    if solo is not None:
        out["solo_steps"] = solo.records
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        sys.stderr.write("usage: python -m gptperf.scaling.worker SPEC.json  (a WorkerSpec)\n")
        return 2
    keep_freed_memory()  # as the `gptperf` command does
    spec = WorkerSpec.read(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    try:
        code = _main(spec)
    except BaseException as err:  # one line for the launcher; torchrun shows the traceback in its log
        if not isinstance(err, SystemExit):
            text = str(err).strip()
            line = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
            try:
                error_file(spec.out, rank).write_text(line + "\n")
            except OSError:
                pass
        raise
    # The results are written: leave now. Tearing down DDP, gloo and the process group at
    # interpreter exit costs seconds and has aborted a rank ("terminate called without an
    # active exception"), which torchrun reports as a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(spec: WorkerSpec) -> int:
    import torch  # deferred: loads torch

    from gptperf.scaling.ddp import init_distributed  # deferred: loads torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    ctx = init_distributed(spec.device, timeout_s=spec.timeout_s)
    config = GPTConfig.from_dict(spec.config)
    sweep = None
    if spec.collectives and ctx.world_size > 1:
        sweep = allreduce_sweep(spec.collective_sizes, device=ctx.device).to_dict()
    runs = [run_batch(ctx, config, b, spec, paired=b in spec.solo_batches) for b in spec.batches]
    mine = {"rank": ctx.rank, "local_rank": ctx.local_rank, "threads": torch.get_num_threads(),
            "host": os.uname().nodename, "runs": runs}
    if ctx.distributed:
        import torch.distributed as dist  # deferred: loads torch

        ranks: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(ranks, mine)
    else:
        ranks = [mine]
    if ctx.local_rank == 0:
        doc = {"schema": SCHEMA, "world_size": ctx.world_size, "backend": ctx.backend,
               "device": str(ctx.device), "spec": spec.to_dict(), "collectives": sweep,
               "ranks": ranks, "environment": environment(ctx.device)}
        with atomic_path(Path(spec.out) / RESULT) as tmp:
            tmp.write_text(json.dumps(doc))
    if ctx.distributed:
        import torch.distributed as dist  # deferred: loads torch

        dist.barrier()  # no rank leaves while another may still need the group
    return 0


if __name__ == "__main__":
    sys.exit(main())
