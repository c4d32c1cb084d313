"""The report's stages: each calls one part of the library and returns its typed result.

A stage is `run(ctx, progress) -> result` (a `gptperf.report.results` type, which the build
loop keeps in `ctx.report`, where later stages find it: the trained model rides on the training
run's result). It may leave pictures and traces in the folder being built, and the exact
command that reproduces its numbers with `ctx.command`.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptperf import __version__
from gptperf.atomic import write_text
from gptperf.data.tokenizer import ByteTokenizer
from gptperf.envinfo import environment
from gptperf.errors import UserError
from gptperf.format import to_json
from gptperf.inference.sweep import run_inference_study
from gptperf.measure import bench as measure_bench
from gptperf.measure.bench import calibrated_expected
from gptperf.memguard import release_memory
from gptperf.perfmodel import Workload, resolve_hardware
from gptperf.perfmodel.calibration import calibration_path
from gptperf.perfmodel.devices import datasheet_hardware_for
from gptperf.perfmodel.transformer import count_parameters, matmul_parameters, predict
from gptperf.plan import ExecutionPlan
from gptperf.plotting.ceilings import plot_ceilings
from gptperf.plotting.inference import plot_all
from gptperf.plotting.roofline import RooflinePoint, plot_roofline
from gptperf.plotting.scaling import plot_scaling
from gptperf.plotting.training import plot_loss_curve
from gptperf.plotting.validation import plot_validation
from gptperf.profiling.hooks import profiler_hooks
from gptperf.profiling.run import profile_workload
from gptperf.report.context import (
    Context,
    ReportData,
    Settings,
    Stage,
    StageProgress,
    machine_load,
    one_line,
)
from gptperf.report.page import render_page
from gptperf.report.results import (
    BenchStage,
    CalibrationStage,
    DeviceStage,
    ExpectedStep,
    ModelStage,
    ProfileStage,
    RooflineRow,
    RooflineStage,
    Sample,
    SamplesStage,
    ScalingStage,
    TrainStage,
    ValidationStage,
)
from gptperf.report.validation import run_validation, validation_budget
from gptperf.scaling import study as scaling_study
from gptperf.scaling.launch import LaunchError
from gptperf.scaling.results import ScaleSpec
from gptperf.train import TrainConfig, run_plan, train

if TYPE_CHECKING:
    from gptperf.perfmodel.calibration import Calibration
    from gptperf.perfmodel.hardware import Hardware

# The lecture's example of the chain rule, and two corruptions of it that a model should find
# less likely.
SENTENCES: tuple[str, ...] = (
    "There's no place like home",
    "There's is a place like home",
    "There's no home place like",
)
SAMPLE_PROMPT = "\n"
SEED = 1337


# --- helpers --------------------------------------------------------------------------------


def quote(arg: str) -> str:
    """A shell word for `arg`, in double quotes when that reads better than shlex's (an
    apostrophe inside, nothing the shell would expand)."""
    plain = shlex.quote(arg)
    if plain == arg or any(c in arg for c in '"$`\\!'):
        return plain
    return f'"{arg}"'


def model_flags(settings: Settings) -> str:
    """`--preset tiny --attention math ...`: the model of this report as command-line flags."""
    parts = ["--preset", settings.preset]
    for key, value in settings.model_overrides.items():
        parts += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _device_flags(settings: Settings) -> str:
    return f"--device {shlex.quote(settings.device)}"


# --- stage: device ----------------------------------------------------------------------------


def stage_device(ctx: Context, progress: StageProgress) -> DeviceStage:
    """The environment, and this device's ceilings: measured (cached per device) and datasheet."""
    from gptperf.measure.ceilings import ceilings_for  # deferred: loads torch

    s = ctx.settings
    env = environment(s.device)
    hw = datasheet_hardware_for(s.device_name, s.device_type)  # None for an unknown GPU
    progress("ceilings: cached per device, measured on the first run")
    measured, cached = ceilings_for(s.device, quick=s.quick, progress=progress)
    ctx.add_picture("ceilings", plot_ceilings(measured.to_dict(), hw,
                                              ctx.path("pictures", "ceilings.png")))
    flags = " --quick" if s.quick else ""
    ctx.command("ceilings (measured, cached per device)",
                f"gptperf ceilings {_device_flags(s)}{flags}  # --force measures again")
    return DeviceStage(env, measured, cached, hw)


# --- stage: calibration -----------------------------------------------------------------------


def stage_calibration(ctx: Context, progress: StageProgress) -> CalibrationStage:
    """This device's calibration, before anything is measured, so that every later measurement
    carries its calibrated expected time beside the roofline bound: a usable cached one is
    reused; else a quick one is measured and cached (`ensure_calibration`) when the settings
    allow (on a CPU by default). Without one the stage says why, and the report goes on."""
    from gptperf.measure import calibrate as cal  # deferred: loads torch

    s = ctx.settings
    ctx.command("calibration (measured, cached per device)",
                f"gptperf calibrate --quick {_device_flags(s)}  # --force measures again")
    why = None
    try:
        cached = cal.calibration_for(s.device)  # checked: this device, this torch, not stale
    except UserError as err:  # stale, foreign or broken: measured again (or named)
        cached, why = None, str(err)
    if cached is not None:
        notes = []
        age = cached.age_days()
        if age >= cal.REUSE_DAYS:
            notes.append(f"the cached calibration is {age:.1f} days old; `gptperf calibrate "
                         "--force` measures it again")
        return CalibrationStage.of(cached, cached=True, path=calibration_path(cached.device_name),
                                   notes=notes)
    missing = why or f"no calibration of {s.device_name} is cached"
    if not s.calibrate:
        return CalibrationStage(None, notes=[
            f"{missing}, and this report measures none (--no-calibrate): run `gptperf "
            "calibrate` (or `gptperf ceilings`) and make the report again, or leave out "
            "--no-calibrate, for the calibrated expected time and the prediction's validation"])
    progress("measuring a quick calibration (kernel curves, host costs)")
    t0 = time.perf_counter()
    try:
        hooks = profiler_hooks() if s.device_type == "cuda" else None
        calibration, was_cached, path = cal.ensure_calibration(s.device, quick=True,
                                                               progress=progress, hooks=hooks)
    except Exception as err:  # noqa: BLE001 - the report stands without it, and says why
        return CalibrationStage(None, notes=[
            f"{missing}, and measuring one failed ({one_line(err)}): no calibrated expected "
            "time in this report; `gptperf calibrate` shows the whole error"])
    measured_s = 0.0 if was_cached else time.perf_counter() - t0
    note = (f"{missing}: a quick calibration was measured by this report in {measured_s:.0f} s "
            "and cached for later runs" if not was_cached else "reused from the cache")
    return CalibrationStage.of(calibration, cached=was_cached, path=path, measured_s=measured_s,
                               notes=[note])


def live_calibration(report: ReportData) -> Any:
    """The calibration the calibration stage found (None: it found none, or did not run)."""
    stage = report.calibration
    return stage.calibration if stage is not None else None


# --- stage: train -----------------------------------------------------------------------------


EVALS = 6  # validation losses on the curve
EVAL_ITERS = 8
EVAL_ITERS_QUICK = 2


def _train_config(s: Settings, out_dir: Path | None, max_iters: int) -> Any:
    model = {k: v for k, v in s.model_overrides.items() if k != "attention"}
    base = TrainConfig.for_preset(s.preset)
    batch, seq = base.batch, min(base.seq, s.config.block_size)
    if s.quick:
        batch, seq = 4, 32
    eval_interval = max(1, max_iters // EVALS)
    return TrainConfig.for_preset(
        s.preset, model=model, attention=s.config.attention, batch=batch, seq=seq,
        max_iters=max_iters, warmup_iters=min(base.warmup_iters, max(1, max_iters // 10)),
        eval_interval=eval_interval, eval_iters=EVAL_ITERS_QUICK if s.quick else EVAL_ITERS,
        dtype=s.dtype,
        compile=s.compile, device=s.device, out_dir=str(out_dir) if out_dir else None,
        seed=SEED, log_interval=1,
    )


def _calibrate_step_time(s: Settings, cfg: TrainConfig) -> float:
    """Median time of an eager step of `cfg`'s training (the step `gptperf train` runs, on a
    fixed batch), to fit the run into its time budget."""
    import torch  # deferred: loads torch

    from gptperf.runtime import synchronize  # deferred: loads torch
    from gptperf.steps.build import build_step  # deferred: loads torch

    plan = ExecutionPlan.default("train", s.device_type, attention=s.config.attention, dtype=s.dtype)
    runner = build_step(s.config, Workload("train", cfg.batch, cfg.seq, s.dtype), plan, s.device,
                        seed=SEED, train_settings=cfg.step_settings())
    device = torch.device(s.device)
    runner.step()
    times = []
    for _ in range(3):
        synchronize(device)
        t0 = time.perf_counter()
        runner.step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    del runner
    release_memory(s.device_type)
    return sorted(times)[1]


def _expected_step_time(s: Settings, cfg: TrainConfig, calibration: Calibration | None) -> float | None:
    """The calibrated expected time of the compiled step a compiled run takes (None where the run
    is eager, or the calibration cannot cost that step): timing it would compile it once more, and
    the eager step `_calibrate_step_time` times took 1.4× as long (gpt2 bf16 B=16 T=1024 on an
    H100: 52 ms against 36; BENCHMARKS.md, "Session 69")."""
    plan = run_plan(cfg, s.config.attention, s.device_type)
    if not plan.compiled or calibration is None:
        return None
    e, _ = calibrated_expected(s.config, Workload("train", cfg.batch, cfg.seq, s.dtype), plan, calibration)
    step = e.step_time_s if e is not None else math.nan
    return step if math.isfinite(step) and step > 0 else None


# What the stages before the training run should take on a GPU: the ceilings measured from an
# empty cache (about 30 s on an H100) and a cached calibration. The stages' guides are the CPU's.
GPU_BEFORE_TRAIN_S = 35.0


def training_seconds(s: Settings, elapsed_s: float) -> float:
    """The training run's time budget when the report has run for `elapsed_s`: as asked
    (--train-seconds), else the default less what the stages before it took beyond their guides
    (down to half the default), so that a calibration measured by the report leaves the later
    stages their time and the report its budget."""
    if s.train_seconds_asked or s.quick:
        return s.train_seconds
    if s.device_type == "cuda":
        planned = GPU_BEFORE_TRAIN_S
    else:
        order = [stage.name for stage in STAGES]
        planned = sum(stage.budget_s for stage in STAGES[:order.index("train")])
    return max(s.train_seconds / 2, s.train_seconds - max(0.0, elapsed_s - planned))


def stage_train(ctx: Context, progress: StageProgress) -> TrainStage:
    """A short training run on the embedded corpus, as many steps as fit the time budget."""
    s = ctx.settings
    budget_s = training_seconds(s, ctx.elapsed())
    probe = _train_config(s, None, 100)
    step_s = _expected_step_time(s, probe, live_calibration(ctx.report))
    if step_s is None:
        progress("timing a step to fit the budget")
        step_s = _calibrate_step_time(s, probe)
    # Each of the EVALS validation losses costs eval_iters forward passes, ~1/3 of a step each.
    eval_cost = (EVALS + 1) * (EVAL_ITERS_QUICK if s.quick else EVAL_ITERS) / 3
    max_iters = max(10, int(budget_s * 0.9 / step_s - eval_cost))
    # --quick tests the pipeline, not the model: a few steps whatever the machine.
    max_iters = min(max_iters, 24 if s.quick else 20_000)
    params = s.config.n_layer * 12 * s.config.n_embd**2 + s.config.vocab_size * s.config.n_embd
    # A checkpoint of a small model is part of the report (generate/score can reuse it); a
    # GPT-2-sized one (1.5 GB with AdamW state) is not.
    out_dir = ctx.dir / "checkpoint" if params < 30_000_000 else None
    cfg = _train_config(s, out_dir, max_iters)

    def on_step(event: Any) -> None:
        if event.note is not None:
            progress(event.note)
        else:
            progress.update(event.step, event.max_iters, f"loss {event.loss:.3f}")

    result = train(cfg, on_step=on_step)  # result.model: the trained GPT, for the samples
    picture = plot_loss_curve(
        result.losses, result.val_losses, ctx.path("pictures", "loss.png"),
        title=f"{result.model_name} on {result.data_name}: loss per step ({s.dtype}, {s.device_name})",
    )
    ctx.add_picture("loss", picture)
    if result.checkpoint:
        result.checkpoint = ctx.relative(result.checkpoint)  # the folder moves into place
    train_flags = (f"{model_flags(s)} --batch {cfg.batch} --seq {cfg.seq} --max-iters {cfg.max_iters} "
                   f"--warmup-iters {cfg.warmup_iters} --eval-interval {cfg.eval_interval} "
                   f"--eval-iters {cfg.eval_iters} --dtype {cfg.dtype} --seed {cfg.seed} "
                   f"{'--compile ' if cfg.compile else ''}{_device_flags(s)}")
    where = (f"--out {shlex.quote(str(ctx.out / 'checkpoint'))} --force" if out_dir is not None
             else "--no-checkpoint")  # the report keeps a checkpoint of a small model only
    ctx.command("training run and loss curve", f"gptperf train {train_flags} {where}")
    return TrainStage(result, step_s, budget_s)


# --- stage: samples and scores ----------------------------------------------------------------


def _decode(tokens: list[int]) -> tuple[str, int]:
    """Text of byte tokens; tokens outside the byte range (a GPT-2-sized vocabulary trained on
    bytes) become "?" and are counted."""
    outside = sum(1 for t in tokens if not 0 <= t < 256)
    text = ByteTokenizer().decode([t if 0 <= t < 256 else 63 for t in tokens])
    return text, outside


def stage_samples(ctx: Context, progress: StageProgress) -> SamplesStage:
    """A sample from the trained model, and the lecture's sentences scored by the chain rule."""
    import torch  # deferred: loads torch

    from gptperf.generate import generate  # deferred: loads torch
    from gptperf.score import score  # deferred: loads torch

    trained = ctx.report.train
    model = trained.result.model if trained is not None else None
    if model is None:
        raise UserError("needs the trained model, and the training stage did not finish")
    s = ctx.settings
    model.eval()
    tokenizer = ByteTokenizer()
    n_tokens = 80 if s.quick else 300
    temperature, top_k = 0.8, None
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(SEED)
    prompt = tokenizer.encode(SAMPLE_PROMPT)
    tokens: list[int] = []
    t0 = time.perf_counter()
    for token in generate(model, prompt, n_tokens, temperature=temperature, top_k=top_k,
                          use_kv_cache=True, generator=generator):
        tokens.append(token)
        if len(tokens) % 20 == 0:
            progress.update(len(tokens), n_tokens, "sampling")
    sample_s = time.perf_counter() - t0
    text, outside = _decode(tokens)
    progress("scoring the lecture's sentences")
    ckpt_rel = trained.result.checkpoint
    scores = score(model, tokenizer, list(SENTENCES), checkpoint=ckpt_rel)
    # The trained model has done its part; the measurements below build their own, and on a
    # GPU its memory is better given back.
    del model
    trained.result.model = None
    release_memory(s.device_type)
    ckpt = shlex.quote(str(ctx.out / "checkpoint"))
    ctx.command("sample", f"gptperf generate --checkpoint {ckpt} --tokens {n_tokens} "
                          f"--temperature {temperature} --seed {SEED} {_device_flags(s)}")
    ctx.command("sentence scores", "gptperf score " + " ".join(quote(x) for x in SENTENCES)
                + f" --checkpoint {ckpt} {_device_flags(s)}")
    sample = Sample(SAMPLE_PROMPT, text, len(tokens), temperature, top_k, SEED, True, outside,
                    sample_s)
    return SamplesStage(sample, scores)


# --- stage: performance model -----------------------------------------------------------------


def prediction_hardware(ctx: Context, dtype: str) -> Any:
    """The machine the predictions use: `perfmodel.resolve_hardware`'s one default (the ceilings
    the device stage measured and cached here when they cover `dtype`, else the datasheet)."""
    return resolve_hardware(None, ctx.settings.device_name, ctx.settings.device_type, dtype=dtype)


def step_plan(s: Settings, kind: str) -> Any:
    """The ExecutionPlan each benchmarked step runs under, and is predicted for: the train step
    compiled on a GPU (with fused AdamW), the decode step on the fast path on a GPU (static KV
    cache, compiled, CUDA graph), everything else eager; on a CPU all eager (compiling there
    would not fit the report's budget)."""
    return ExecutionPlan.default(kind, s.device_type, compile=_compiled(s, kind),
                                 fast=kind == "decode" and s.device_type == "cuda",
                                 attention=s.config.attention, dtype=s.dtype)


def stage_model(ctx: Context, progress: StageProgress) -> ModelStage:
    """The performance model of the train, prefill and decode steps this report measures."""
    s = ctx.settings
    hardware = prediction_hardware(ctx, s.dtype)
    predictions: dict[str, Any] = {}
    for kind, w in s.workloads.items():  # each for the plan its benchmark runs under
        predictions[kind] = predict(s.config, Workload(kind, w.batch, w.seq, s.dtype), hardware,
                                    step_plan(s, kind))
    # The KV-cache question in one line: a decode step without the cache recomputes everything.
    nocache = s.workloads["decode"]
    predictions["decode_nocache"] = predict(
        s.config, Workload("decode_nocache", nocache.batch, nocache.seq, s.dtype), hardware,
        step_plan(s, "decode_nocache"))
    calibration = live_calibration(ctx.report)
    for kind, w in s.workloads.items():  # the calibrated times too, where the page shows them
        calibrated = f" --calibrated {_device_flags(s)}" if calibration is not None else ""
        ctx.command(f"performance model: {kind}",
                    f"gptperf model {model_flags(s)} --workload {kind} --batch {w.batch} "
                    f"--seq {w.seq} --dtype {s.dtype} --plan {step_plan(s, kind).mode} --hardware "
                    f"{'measured' if hardware.source == 'measured' else hardware.name}{calibrated}")
    stage = ModelStage(hardware, predictions, count_parameters(s.config),
                       count_parameters(s.config, include_embeddings=False),
                       matmul_parameters(s.config))
    _add_expected(stage, calibration, s)
    return stage


def _add_expected(stage: ModelStage, calibration: Calibration | None, s: Settings) -> None:
    """The calibrated expected time of each predicted step (for the same plan), beside its
    roofline bound; a note for each step the calibration cannot cost."""
    if calibration is None:
        stage.expected_notes.append("no calibration of this device: the roofline bound only")
        return

    for kind, pred in stage.predictions.items():
        e, why = calibrated_expected(s.config, pred.workload, step_plan(s, kind), calibration)
        if e is None:
            stage.expected_notes.append(f"no calibrated expected time for {kind}: {why}")
        else:
            stage.expected[kind] = ExpectedStep.of(e)


# --- stage: bench ----------------------------------------------------------------------------


def _compiled(s: Settings, kind: str) -> bool:
    """torch.compile (as `--compile`) for the training step only: prefill stays eager, and the
    decode step on a GPU takes the fast path instead (`step_plan`)."""
    return s.compile and kind == "train"


def _prediction_hardware(report: ReportData) -> Any:
    """The machine the model stage predicted on (None when it did not run)."""
    return report.model.hardware if report.model is not None else None


def _hardware_name(hw: Hardware | None) -> str | None:
    """How `--hardware` names `hw` on a command line."""
    return None if hw is None else ("measured" if hw.source == "measured" else hw.name)


def _hardware_flag(ctx: Context) -> str:
    name = _hardware_name(_prediction_hardware(ctx.report))
    return f" --hardware {name}" if name else ""


def stage_bench(ctx: Context, progress: StageProgress) -> BenchStage:
    """Time per batch, throughput, FLOP/s, MFU, peak memory and utilization of each step."""
    s = ctx.settings
    hardware = _prediction_hardware(ctx.report)
    results: dict[str, Any] = {}
    for kind, w in s.workloads.items():
        warmup, repeats = (1, 3) if s.quick else (None, None)
        if _compiled(s, kind):
            warmup = max(warmup or 3, 2)

        def report(label: str, done: int, total: int, kind: str = kind) -> None:
            progress.update(done, total, f"{kind}: {label}")

        progress(f"{kind}: building")
        plan = step_plan(s, kind)
        r = measure_bench.run_bench(s.config, kind, w.batch, w.seq, s.dtype, s.device,
                                    plan.compiled, warmup, repeats, hardware=hardware,
                                    progress=report, plan=plan)
        results[kind] = r
        counts = f" --warmup {warmup} --repeats {repeats}" if repeats else ""
        ctx.command(f"bench: {kind} step",
                    f"gptperf bench {kind} {model_flags(s)} --batch {w.batch} --seq {w.seq} "
                    f"--dtype {s.dtype}{' --compile' if _compiled(s, kind) else ''}"
                    f"{' --fast' if plan.fast else ''}{counts} "
                    f"{_device_flags(s)}{_hardware_flag(ctx)}")
        del r
        release_memory(s.device_type)
    return BenchStage(results)


# --- stage: profile ---------------------------------------------------------------------------


PROFILE_KINDS = ("train", "decode")


def stage_profile(ctx: Context, progress: StageProgress) -> ProfileStage:
    """torch.profiler traces of a train step and a decode step, every kernel attributed to an
    operation and joined with the prediction."""
    s = ctx.settings
    hardware = _hardware_name(_prediction_hardware(ctx.report))
    out: dict[str, Any] = {}
    for i, kind in enumerate(PROFILE_KINDS):
        w = s.workloads[kind]
        progress.update(i, len(PROFILE_KINDS), f"profiling a {kind} step")
        folder = ctx.dir / f"profile-{kind}"
        active = 2 if s.quick else 3
        r = profile_workload(
            s.config, kind, batch=w.batch, seq=w.seq, dtype=s.dtype, device=s.device,
            compile=_compiled(s, kind), hardware=hardware, out_dir=folder, wait=1,
            warmup=1, active=active, overhead=True, overhead_repeats=3 if s.quick else 5,
        )
        r.paths = {k: ctx.relative(v) if str(v).startswith(str(folder)) else v
                   for k, v in r.paths.items()}
        out[kind] = r
        if (folder / "roofline.png").is_file():
            ctx.add_picture(f"profile_{kind}", folder / "roofline.png")
        if (folder / "trace.json").is_file():
            ctx.add_trace(f"{kind} step: Chrome/Perfetto trace", folder / "trace.json")
        if (folder / "trace.gptperf.json").is_file():
            ctx.add_trace(f"{kind} step: trace with operation names and predictions",
                          folder / "trace.gptperf.json")
        if (folder / "tensorboard").is_dir():
            ctx.add_trace(f"{kind} step: TensorBoard log folder", folder / "tensorboard")
        ctx.command(f"profile: {kind} step",
                    f"gptperf profile {model_flags(s)} --workload {kind} --batch {w.batch} "
                    f"--seq {w.seq} --dtype {s.dtype}{' --compile' if _compiled(s, kind) else ''} "
                    f"--active {active} --warmup 1 --wait 1 {_device_flags(s)}"
                    f"{f' --hardware {hardware}' if hardware else ''} --out profile-{kind}")
        release_memory(s.device_type)
    return ProfileStage(out)


# --- stage: inference -------------------------------------------------------------------------


def inference_plan(s: Settings) -> tuple[list[int], list[int]]:
    """(contexts, batches): a short sweep that fits the report's budget."""
    block = s.config.block_size
    if s.quick:
        return sorted({min(16, block), block}), [1, 4]
    if s.device_type == "cuda":
        return sorted({min(128, block), min(512, block), block}), [1, 8, 32, 128]
    return sorted({min(32, block), min(128, block), block}), [1, 4, 16, 64]


def stage_inference(ctx: Context, progress: StageProgress) -> Any:  # -> InferenceResult
    """KV cache against recompute over the context, prefill, and a short batch-size sweep."""
    import torch  # deferred: loads torch

    s = ctx.settings
    contexts, batches = inference_plan(s)
    hw = _prediction_hardware(ctx.report)
    steps = 3 * len(contexts) + len(batches)
    seen = [0]

    def say(message: str) -> None:
        seen[0] += 1
        progress.update(min(seen[0], steps), steps, message)

    # The fast decode path on a GPU (what `gptperf inference` and `generate` run there), each
    # point predicted for its own plan; eager on a CPU, where compiling would not fit the budget.
    fast = s.device_type == "cuda"
    r = run_inference_study(s.config, torch.device(s.device), s.dtype, contexts=contexts,
                            batches=batches, fast=fast, progress=say, hardware=hw)
    r.plots = plot_all(r, ctx.dir / "pictures" / "inference")
    for name, path in r.plots.items():
        if str(path).endswith(".png"):
            ctx.add_picture(f"inference_{name}", path)
    r.plots = {k: ctx.relative(v) for k, v in r.plots.items()}
    flags = _hardware_flag(ctx)
    ctx.command("KV cache vs recompute, prefill, batch sweep",
                f"gptperf inference {model_flags(s)} --dtype {s.dtype} "
                f"--contexts {','.join(map(str, contexts))} --batches {','.join(map(str, batches))} "
                f"{'--fast' if fast else '--no-fast'} {_device_flags(s)}{flags}")
    release_memory(s.device_type)
    return r


# --- stage: roofline --------------------------------------------------------------------------


def stage_roofline(ctx: Context, progress: StageProgress) -> RooflineStage:
    """One roofline with this machine's ceilings (measured and datasheet) and each step's
    predicted and measured point, and the profiled components of the train step."""
    s, report = ctx.settings, ctx.report
    if report.model is None:
        raise UserError("needs the performance model, and that stage did not finish")
    predictions = report.model.predictions
    dtype = s.dtype
    ceilings: list[tuple[str, float]] = []
    bandwidths: list[tuple[str, float]] = []
    measured = report.device.measured_hardware if report.device is not None else None
    sheet = report.device.datasheet if report.device is not None else None
    for label, hw in (("measured", measured), (sheet.source if sheet is not None else "", sheet)):
        if hw is None:
            continue
        if dtype in hw.peak_flops:
            ceilings.append((f"{dtype} {label}", hw.peak_flops[dtype]))
        bandwidths.append((f"memory {label}", hw.bandwidth))
    if not ceilings:
        raise UserError(f"no ceiling for {dtype} measured or in a datasheet")
    points: list[Any] = []
    rows: list[RooflineRow] = []
    benches = report.bench.results if report.bench is not None else {}
    for kind, pred in predictions.items():
        label = f"{kind} B={pred.workload.batch}"
        ai = pred.arithmetic_intensity
        points.append(RooflinePoint(label, ai, pred.flops / pred.time_s, kind="predicted"))
        row = RooflineRow(kind, ai, pred.flops, pred.time_s)
        expected = report.model.expected.get(kind)
        row.expected_s = expected.step_time_s if expected is not None else None
        bench = benches.get(kind)
        if bench is not None:
            row.measured_s = bench.step_time_s
            # the calibrated time of the step that ran (its plan), where the bench has it
            cal = bench.calibrated
            row.expected_s = (cal.step_time_s if cal else None) or row.expected_s
            row.paired_ratio = cal.measured_over_predicted if cal else None  # as bench scored it
            points.append(RooflinePoint(label, ai, row.measured_flops_per_s, kind="measured"))
        rows.append(row)
    if report.inference is not None:
        for p in report.inference.batches:
            if p.time_s:
                points.append(RooflinePoint(f"decode B={p.batch}", p.arithmetic_intensity,
                                            p.flops / p.time_s, kind="measured"))
                rows.append(RooflineRow("decode (batch sweep)", p.arithmetic_intensity, p.flops,
                                        p.predicted_s, p.time_s, p.batch, p.expected_s))
    path = plot_roofline(
        ctx.path("pictures", "roofline.png"), ceilings, bandwidths, points,
        title=f"{s.config.name} {dtype} on {s.device_name}: whole steps, predicted (o) and "
              f"measured (^)",
    )
    ctx.add_picture("roofline", path)
    return RooflineStage(ceilings, bandwidths, rows)


# --- stage: parallel scaling -----------------------------------------------------------------


SCALING_WARMUP, SCALING_STEPS = 1, 5  # per point; each torchrun launch costs seconds of startup
SCALING_ATTEMPTS = 2


def scaling_procs(s: Settings) -> tuple[int, ...]:
    """Process counts: 1 and 2 on a CPU (gloo); on a GPU machine 1, 2, 4, ... and every GPU it
    has (NCCL, one process per GPU; one GPU gives a world-size-1 point)."""
    if s.device_type != "cuda":
        return (1, 2)
    import torch  # deferred: loads torch

    gpus = max(1, torch.cuda.device_count())
    return tuple(sorted({2**i for i in range(gpus.bit_length()) if 2**i <= gpus} | {gpus}))


def scaling_specs(s: Settings) -> dict[str, Any]:
    """The strong and weak studies this report runs (gptperf.scaling.results.ScaleSpec by mode):
    the report's model, eager, small per-process batches and a few steps. They share their
    launches (`run_scaling_studies`), so the weak study costs its own batches' runs in them, no
    launch; a machine with one process count only (one GPU) leaves it out (with one process it
    is the strong study's point again)."""
    procs = scaling_procs(s)
    per_process = 2
    seq = min(32 if s.device_type == "cpu" else 256, s.config.block_size)
    lcm = math.lcm(*procs)
    specs = {"strong": ScaleSpec(s.config, mode="strong", procs=procs, batch=per_process * lcm,
                                 seq=seq, dtype=s.dtype, device=s.device, warmup=SCALING_WARMUP,
                                 steps=SCALING_STEPS, seed=SEED)}
    if len(procs) > 1:
        specs["weak"] = ScaleSpec(s.config, mode="weak", procs=procs, batch=per_process, seq=seq,
                                  dtype=s.dtype, device=s.device, warmup=SCALING_WARMUP,
                                  steps=SCALING_STEPS, seed=SEED)
    return specs


def scale_command(s: Settings, spec: ScaleSpec, plot_dir: str) -> str:
    """The `gptperf scale` command that runs `spec` again."""
    return (f"gptperf scale --mode {spec.mode} --procs {','.join(map(str, spec.procs))} "
            f"--batch {spec.batch} --seq {spec.seq} {model_flags(s)} --dtype {spec.dtype} "
            f"--warmup {spec.warmup} --steps {spec.steps} --seed {spec.seed} {_device_flags(s)} "
            f"--plot-dir {shlex.quote(plot_dir)}")


def stage_scaling(ctx: Context, progress: StageProgress) -> ScalingStage:
    """Strong and weak scaling of data-parallel training through torchrun (gloo on a CPU, NCCL on
    GPUs), measured and predicted, with the pictures of `gptperf scale`."""
    s = ctx.settings
    specs = scaling_specs(s)
    launches = len(scaling_procs(s))  # one a process count, shared by the studies
    done = [0]

    def say(message: str) -> None:
        if message.startswith("launching"):
            done[0] += 1
        progress.update(min(done[0], launches), launches + 1, message)

    stage = ScalingStage({})
    if "weak" not in specs:
        stage.skipped["weak"] = "one process count only: the weak study's point is the strong one's"
    what = " and ".join(specs)
    for attempt in range(1, SCALING_ATTEMPTS + 1):
        try:  # the studies share their launches: one per process count
            studies = dict(zip(specs, scaling_study.run_scaling_studies(list(specs.values()), progress=say),
                               strict=True))
            break
        except LaunchError as err:  # one line naming the rank and its log
            # A busy machine can spoil one launch (gloo's all-reduce sweep on shared cores
            # once gave no bandwidth to fit): one more try before the stage fails with it.
            if attempt == SCALING_ATTEMPTS:
                raise UserError(f"{what} scaling: {err}") from None
            again = "the study ran again" if len(specs) == 1 else "the studies ran again"
            stage.notes.append(f"{what} scaling: a launch failed ({err}); {again}")
            done[0] = 0
    for mode, spec in specs.items():
        study = studies[mode]
        folder = ctx.dir / "pictures" / f"scaling-{mode}"
        folder.mkdir(parents=True, exist_ok=True)
        for path in plot_scaling(study, folder):
            ctx.add_picture(f"scaling_{mode}_{path.stem}", path)
        stage.studies[mode] = study
        stage.commands[mode] = scale_command(s, spec, f"scaling-{mode}")
        ctx.command(f"parallel scaling: {mode}", stage.commands[mode])
    return stage


# --- stage: how good is the prediction ---------------------------------------------------------


def stage_validation(ctx: Context, progress: StageProgress) -> ValidationStage:
    """`gptperf validate`'s quick sweep against this device's calibration, within what is left of
    the report's time budget (the last measuring stage, so it knows), with its picture."""
    s = ctx.settings
    calibration = live_calibration(ctx.report)
    if calibration is None:
        found = ctx.report.calibration
        why = "; ".join(found.notes) if found is not None and found.notes else (
            "the calibration stage did not run or failed")
        return ValidationStage(None, notes=[f"no validation: it needs a calibration ({why})"])
    budget = validation_budget(s.device_type, s.quick, ctx.elapsed())
    stage = run_validation(s.device, calibration, budget, progress)
    ctx.command("how good is the prediction (validate's quick sweep)",
                f"gptperf validate --quick {_device_flags(s)} --plot-dir validation")
    if stage.result is not None and stage.result.points:
        ctx.add_picture("validation", plot_validation(stage.result,
                                                      ctx.path("pictures", "validation.png")))
    release_memory(s.device_type)
    return stage


# --- the stage list ---------------------------------------------------------------------------


# The calibration comes before anything is measured (bench, profile, inference each add its
# calibrated expected time from it); the validation last, to take what is left of the budget.
STAGES: list[Stage] = [
    Stage("device", "Device and ceilings", stage_device, 15.0),
    Stage("calibration", "Calibration", stage_calibration, 25.0),
    Stage("train", "Training run", stage_train, 60.0),
    Stage("samples", "Samples and scores", stage_samples, 5.0),
    Stage("model", "Performance model", stage_model, 2.0),
    Stage("bench", "Benchmarks", stage_bench, 15.0),
    Stage("profile", "Profiles", stage_profile, 20.0),
    Stage("inference", "KV cache and batch sweep", stage_inference, 15.0),
    Stage("roofline", "Roofline", stage_roofline, 5.0),
    Stage("scaling", "Parallel scaling", stage_scaling, 30.0),
    Stage("validation", "How good is the prediction", stage_validation, 40.0),
]


# --- outputs ----------------------------------------------------------------------------------


def finish(report: ReportData, wall_s: float) -> ReportData:
    """Fill in what is known only at the end: the environment (the device stage's, else read
    now), when, how long, the version, and the machine's load now."""
    env = report.device.environment if report.device is not None else None
    if env is None:
        env = environment(report.settings.device)
    report.environment = env
    report.generated_utc = env.get("time_utc")
    report.wall_s = wall_s
    report.gptperf = __version__
    report.machine_load["end"] = machine_load()
    return report


def write_outputs(ctx: Context, wall_s: float) -> None:
    """report.json (`ReportData.to_dict()`) and index.html (rendered from the same typed results)
    into the folder being built."""
    report = finish(ctx.report, wall_s)
    write_text(ctx.dir / "report.json", to_json(report.to_dict()))
    write_text(ctx.dir / "index.html", render_page(report, ctx.dir))
    _ordinary_permissions(ctx.dir)


def _ordinary_permissions(folder: Path) -> None:
    """Temporary files and folders are created private (0600/0700); the report is an ordinary
    folder, readable as the umask allows, like any file the user writes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
