"""`gptperf calibrate` and `gptperf.measure.calibrate` on the CPU: the calibration round-trips (dict,
JSON, cache file), a stale, foreign-device or other-torch one is refused in one line, host costs
are measured and grow with the blocks, the command's table and JSON, `ceilings`' end. The kernel
curves come from a fake `measure_kernels` (their own module is tested apart); one slow test runs
the real quick calibration end to end."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import io
import json
import statistics
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hardening import one_line_user_error

from gptperf import names
from gptperf.cli import main
from gptperf.envinfo import device_name
from gptperf.errors import UserError
from gptperf.measure import calibrate as cal_mod
from gptperf.measure import calibrate_compiled as rec_mod
from gptperf.measure import calibrate_host as host_mod
from gptperf.perfmodel.calibration import (
    Calibration,
    calibration_path,
    host_model_config,
    load_calibration,
    save_calibration,
)
from gptperf.perfmodel.curves import Curve, Grid

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
KERNELS_MODULE = "gptperf.measure.calibrate_kernels"


KERNEL_BUDGETS: list[float | None] = []  # each fake call's budget_s


def fake_kernels(device: Any, dtypes: Any = None, quick: bool = False, progress: Any = None,
                 lock: Any = None, budget_s: float | None = None) -> dict[str, Any]:
    """What measure_kernels returns, tiny and made up (times grow with the work)."""
    KERNEL_BUDGETS.append(budget_s)
    dtypes = tuple(dtypes or ("fp32",))
    if progress:
        progress("kernels", 1, 1)
    ms, ns, ks = (1.0, 64.0), (128.0, 256.0, 512.0), (128.0, 256.0)
    mm = tuple(1e-6 + m * n * k / 1e11 for m in ms for n in ns for k in ks)
    bh, t, d = (4.0, 16.0), (32.0, 128.0, 512.0), (32.0,)
    att = tuple(2e-6 + b * tt * tt * dd / 1e10 for b in bh for tt in t for dd in d)
    return {
        "matmul": {dt_: Grid(("M", "N", "K"), (ms, ns, ks), mm, (1, 1, 1), "y = x·Wᵀ") for dt_ in dtypes},
        "attention": {f"{dt_}:causal_fwd": Grid(("BH", "T", "D"), (bh, t, d), att, (1, 2, 1))
                      for dt_ in dtypes},
        "vector": {f"add:{dt_}": Curve((4096.0, 65536.0, 2**20), (2e-6, 5e-6, 6e-5), "bytes")
                   for dt_ in dtypes},
        "optimizer": {"adamw_foreach": Curve((1e4, 1e5, 1e6), (1e-4, 4e-4, 3e-3), "parameters")},
        "gemv": {},
        "shapes": {"matmul": [[m, n, k] for m in ms for n in ns for k in ks],
                   "attention": [["causal_fwd", b, tt, dd] for b in bh for tt in t for dd in d],
                   "vector": [["add", x] for x in (4096, 65536, 2**20)]},
        "seconds": 0.01,
    }


DEFAULT_THREADS = torch.get_num_threads()  # before the one_thread fixture changes it


def _patch_kernels(mp: pytest.MonkeyPatch) -> None:
    """measure_kernels -> fake_kernels (the real calibration is tested in test_ceilings.py)."""
    module = importlib.import_module(KERNELS_MODULE)
    mp.setattr(module, "measure_kernels", fake_kernels)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private cache folder and the fake kernel curves, for the whole module."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTPERF_CACHE_DIR", str(folder))
        _patch_kernels(mp)
        # one thread, as one_thread gives each test: module fixtures run before it, and two
        # threads on a busy 2-core machine stall every tiny op on the other thread
        torch.set_num_threads(1)
        yield folder
        torch.set_num_threads(DEFAULT_THREADS)


@pytest.fixture(scope="module")
def calibration(env: Path) -> Calibration:
    """One quick CPU calibration (real host costs, fake kernel curves)."""
    return cal_mod.calibrate(CPU, quick=True)


def _record_calibrate(monkeypatch: pytest.MonkeyPatch, base: Calibration) -> list[bool]:
    """From now on `calibrate` returns `base` stamped now and records each call (quick): for
    tests of when a calibration is measured again, not of the measurement."""
    calls: list[bool] = []

    def fresh(device: object, *, quick: bool = False, **_: object) -> Calibration:
        calls.append(quick)
        return replace(base, created_at=dt.datetime.now(dt.timezone.utc).isoformat())

    monkeypatch.setattr(cal_mod, "calibrate", fresh)
    return calls


@pytest.fixture
def measured_again(calibration: Calibration, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """`calibrate` recorded for the whole test (`_record_calibrate`), the module's calibration."""
    return _record_calibrate(monkeypatch, calibration)


@pytest.fixture
def clean_cache(env: Path) -> Iterator[Path]:
    """No calibration of this CPU cached before or after the test."""
    path = Path(calibration_path(device_name(CPU)))
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


# --- the calibration ------------------------------------------------------------------------


def test_calibration_describes_this_device(calibration: Calibration) -> None:
    assert calibration.device_name == device_name(CPU) and calibration.device_type == "cpu"
    assert calibration.torch_version == torch.__version__
    assert 0 <= calibration.age_days() < 0.01  # created now, in UTC
    assert calibration.created.tzinfo is not None
    assert calibration.seconds > 0
    assert set(calibration.matmul) == {"fp32"} and "fp32:causal_fwd" in calibration.attention
    # its kernel passes were given the CPU's 60 s less what follows them and the probes before
    first_budget = KERNEL_BUDGETS[0]
    assert first_budget is not None and 50.0 < first_budget <= cal_mod.BUDGET_S["cpu"] - cal_mod.AFTER_KERNEL_PASSES_S
    assert calibration.shapes["matmul"] == fake_kernels(CPU)["shapes"]["matmul"]
    configs = calibration.shapes["configs"]
    assert configs == [host_mod.host_config(1).name, host_mod.host_config(4).name]
    assert configs[0] != configs[1] and "n_embd=64" in configs[0]
    assert calibration.compiled == {} and calibration.optimizer_overlap == {}  # CUDA only
    assert cal_mod.is_quick(calibration)
    assert any(n.startswith("time: kernels") for n in calibration.notes)
    from gptperf.measure.probe import SpeedProbe

    start, end = (SpeedProbe.from_dict(calibration.probes[k]) for k in ("start", "end"))
    assert 0 < start.host_s < 1e-3 and 0 < end.matmul_s < 1  # seconds per op, per matmul


def test_a_machine_that_changed_speed_during_calibration_is_noted(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gptperf.measure.probe import SpeedProbe

    probes = iter([SpeedProbe(1e-6, 1e-3, 1e-3), SpeedProbe(2.5e-6, 1e-3, 1e-3)])  # start, end
    monkeypatch.setattr(cal_mod, "take_probe", lambda device: next(probes))
    monkeypatch.setattr(cal_mod, "measure_host", lambda *a, **k: host_mod.HostCosts(
        {}, {"decode": 4e-4, "train": 3e-3}, []))
    cal = cal_mod.calibrate(CPU, quick=True)
    assert cal.probes["end"]["host_s"] == 2.5e-6
    # the host costs' units, one a probe
    assert cal.probes["host"] == pytest.approx({"step_s": 4e-4, "train_step_s": 3e-3})
    assert any("host ops 2.50× slower than at the calibration's start" in n for n in cal.notes)


class _SideProcesses:
    """A stand-in for `CompileWarmup`: its lock says when it is held; `events` what happened."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.held = False
        outer = self

        class Lock:
            def __enter__(self) -> None:
                outer.held = True

            def __exit__(self, *exc: object) -> None:
                outer.held = False

        self.lock = Lock()

    def finish(self, timeout_s: float = 180.0) -> str:
        self.events.append(f"side processes finished (timeout {timeout_s:.0f} s)")
        return "compiled jobs compiled ahead in a side process: (stand-in)"


def test_the_side_processes_start_before_the_speed_probes(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compile side processes start before the first speed probe, which then holds their GPU
    lock; they are finished once, and if the probe fails they are ended at once. The CUDA-only
    stages are stood in for (no GPU here)."""
    from gptperf.measure.probe import SpeedProbe

    events: list[str] = []
    side: list[_SideProcesses] = []

    def start(*args: object, **kwargs: object) -> _SideProcesses:
        events.append("side processes started")
        side.append(_SideProcesses(events))
        return side[-1]

    def probe(device: object) -> SpeedProbe:
        events.append("probe" + (" under the lock" if side and side[-1].held else ""))
        return SpeedProbe(1e-6, 1e-3, 1e-3)

    monkeypatch.setattr(cal_mod.CompileWarmup, "start", start)
    monkeypatch.setattr(cal_mod, "take_probe", probe)
    monkeypatch.setattr(cal_mod, "host_step_s", lambda device, budget_s=None: 1e-4)
    monkeypatch.setattr(cal_mod, "_launch_and_sustained", lambda *a: ({"gap_s": 1e-6}, {}))
    monkeypatch.setattr(cal_mod, "_optimizer_overlap", lambda device: ({}, []))
    monkeypatch.setattr(cal_mod, "record_compiled_steps", lambda *a, **k: ({}, []))
    monkeypatch.setattr(cal_mod, "device_name", lambda device: "Stand-in GPU")
    monkeypatch.setattr(cal_mod, "measure_host", lambda *a, **k: host_mod.HostCosts(
        {}, {"decode": 1e-4, "train": 1e-3}, []))
    gpu = torch.device("cuda", 0)
    cal = cal_mod.calibrate(gpu, quick=True, dtypes=("bf16", "fp32"))
    assert events == ["side processes started", "probe under the lock",
                      "side processes finished (timeout 180 s)", "probe"]
    assert "compiled jobs compiled ahead in a side process: (stand-in)" in cal.notes

    def failing(device: object) -> SpeedProbe:
        raise RuntimeError("the probe failed")

    events.clear()
    monkeypatch.setattr(cal_mod, "take_probe", failing)
    with pytest.raises(RuntimeError, match="the probe failed"):
        cal_mod.calibrate(gpu, quick=True, dtypes=("bf16", "fp32"))
    # side processes started before the probe are ended at once; none start after a failed one
    assert events == ["side processes started", "side processes finished (timeout 0 s)"]


def test_a_calibration_measures_host_jobs_in_a_slow_spell_again(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calibrate` keeps the faster of two host-job measurements when the first read the decode
    step far over the reference probed before the kernels and before the jobs (the faster)."""
    references = iter([2e-4, 1e-4])  # before the kernels, before the jobs; then the wait's probes
    monkeypatch.setattr(cal_mod, "host_step_s", lambda device, budget_s=None: next(references, 1.05e-4))
    units = iter([5e-4, 1.1e-4])
    monkeypatch.setattr(cal_mod, "measure_host", lambda *a, **k: host_mod.HostCosts(
        {}, {"decode": next(units), "train": 3e-3}, []))
    cal = cal_mod.calibrate(CPU, quick=True)
    assert cal.probes["host_reference"] == {"step_s": 1e-4}
    assert cal.probes["host"]["step_s"] == pytest.approx(1.1e-4)
    assert any("5.00× the 100 µs probed before them" in n and "kept the second" in n for n in cal.notes)


def test_the_compiled_host_models_are_among_the_calibrated_configs(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where compiled host costs were measured, their host models (a longer block) are named in
    `shapes["configs"]` beside the eager ones, so that no validation case runs them."""
    from gptperf.plan import COMPILED

    line = {"per_layer_s": 1e-4, "fixed_s": 1e-4}
    for host, compiled in (({"eager:fwd:fp32": line}, False),
                           ({"eager:fwd:fp32": line, "compiled:fwd:bf16": line}, True)):
        monkeypatch.setattr(cal_mod, "measure_host", lambda *a, h=host, **k: host_mod.HostCosts(
            h, {"decode": 4e-4, "train": 3e-3}, []))
        configs = cal_mod.calibrate(CPU, quick=True).shapes["configs"]
        eager = [host_mod.host_config(n).name for n in host_mod.HOST_LAYERS]
        # the compiled forward's deeper host model too
        extra = [host_mod.host_config(n, COMPILED).name
                 for n in (*host_mod.HOST_LAYERS, host_mod.HOST_DEEP_LAYERS)]
        assert configs == eager + (extra if compiled else [])
        assert not set(eager) & set(extra)


def test_calibration_round_trips_through_dict_json_and_cache(calibration: Calibration,
                                                             clean_cache: Path) -> None:
    doc = calibration.to_dict()
    assert doc["schema"] == "gptperf.calibration/1"
    again = Calibration.from_dict(json.loads(json.dumps(doc)))
    assert again == calibration
    assert again.to_dict() == doc
    path = Path(save_calibration(calibration))
    assert path == clean_cache and path.is_file()
    loaded = load_calibration(calibration.device_name, torch.__version__)
    assert loaded == calibration
    assert cal_mod.calibration_for(CPU) == calibration
    assert cal_mod.calibration_for("cpu", required=True) == calibration


def test_no_calibration_is_none_or_a_one_line_error(clean_cache: Path) -> None:
    assert cal_mod.calibration_for(CPU) is None
    with pytest.raises(UserError) as err:
        cal_mod.calibration_for(CPU, required=True)
    message = str(err.value)
    assert "\n" not in message and "gptperf calibrate" in message and str(clean_cache) in message


def _write_as_this_devices(cal: Calibration, path: Path) -> None:
    """A calibration document in this device's cache file (copied from elsewhere, or old)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cal.to_dict()))


@pytest.mark.parametrize("change, expected", [
    ("stale", ["40 days old", "gptperf calibrate"]),
    ("foreign", ["NVIDIA H200", "this device is"]),
    ("torch", ["torch 1.0.0", f"this is torch {torch.__version__}"]),
])
def test_stale_foreign_or_other_torch_calibration_is_refused_in_one_line(
        calibration: Calibration, clean_cache: Path, measured_again: list[bool], change: str,
        expected: list[str]) -> None:
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)).isoformat()
    bad = {"stale": replace(calibration, created_at=old),
           "foreign": replace(calibration, device_name="NVIDIA H200"),
           "torch": replace(calibration, torch_version="1.0.0")}[change]
    _write_as_this_devices(bad, clean_cache)
    for load in (lambda: cal_mod.calibration_for(CPU),
                 lambda: load_calibration(device_name(CPU), torch.__version__)):
        one_line_user_error(load, *expected)
    # the command measures a new one instead of failing (and says nothing of a cache)
    out = _run_cli(["calibrate", "--device", "cpu", "--quick", "--json"])
    assert measured_again == [True]
    assert out["cached"] is False and out["device_name"] == device_name(CPU)
    assert cal_mod.calibration_for(CPU) is not None  # replaced by a usable one


# --- host costs -----------------------------------------------------------------------------


def test_fit_line_through_one_and_four_blocks() -> None:
    assert host_mod.fit_line(3e-6, 9e-6) == pytest.approx({"per_layer_s": 2e-6, "fixed_s": 1e-6})
    # noise tilting the line below zero is clamped, never a negative cost
    assert host_mod.fit_line(5e-6, 4e-6) == {"per_layer_s": 0.0, "fixed_s": 5e-6}
    assert host_mod.fit_line(1e-6, 10e-6)["fixed_s"] == 0.0  # steeper than proportional


def test_a_host_line_timed_deeper_goes_on_at_the_slope_to_its_deep_point() -> None:
    """Timed at 1, 4 and 16 blocks (3, 9, 45 µs): the line through 1 and 4 (2 µs a block, 1 fixed),
    then past 4 blocks (45 − 9) / 12 = 3 µs a block; a deep point below the line's own charge is
    clamped to no cost a further block; without a deep point, the plain line."""
    lo, hi = host_mod.HOST_LAYERS
    deep = host_mod.HOST_DEEP_LAYERS
    assert (lo, hi, deep) == (1, 4, 16)  # the hand-computed numbers below assume these
    fit = host_mod.fit_host_line({lo: {"nograd": 3e-6}, hi: {"nograd": 9e-6}, deep: {"nograd": 45e-6}}, "nograd")
    assert fit == pytest.approx({"per_layer_s": 2e-6, "fixed_s": 1e-6, "beyond_layers": 4.0,
                                 "beyond_per_layer_s": 3e-6})
    flat = host_mod.fit_host_line({lo: {"nograd": 3e-6}, hi: {"nograd": 9e-6}, deep: {"nograd": 8e-6}}, "nograd")
    assert flat["beyond_per_layer_s"] == 0.0
    assert host_mod.fit_host_line({lo: {"fwd": 3e-6}, hi: {"fwd": 9e-6}}, "fwd") == pytest.approx(
        {"per_layer_s": 2e-6, "fixed_s": 1e-6})
    # brought to the probe's speed: the seconds scaled, the knee's block count not
    host, *_ = host_mod.fit_host_jobs([("decode", "compiled", "bf16", {lo: {"nograd": 3e-6}, hi: {"nograd": 9e-6},
                                                                        deep: {"nograd": 45e-6}}, 2e-3, {}),
                                       ("decode", "eager", "bf16", {lo: {"infer": 1e-6}, hi: {"infer": 2e-6}},
                                        0.5e-3, {})])
    assert host["compiled:nograd:bf16"] == pytest.approx({"per_layer_s": 1e-6, "fixed_s": 0.5e-6, "beyond_layers": 4.0,
                                                          "beyond_per_layer_s": 1.5e-6})


class SteadySampler:
    """`probe.HostSampler` on a host whose model step always takes 1 ms (no phases)."""

    def __init__(self, *a: Any, **k: Any) -> None:
        self.samples: list[float] = []  # none kept: the parts are read by their rounds' medians
        self.phase_samples: dict[str, list[float]] = {}

    def __call__(self) -> None:
        pass

    def step_s(self) -> float:
        return 1e-3

    def phase_s(self) -> dict[str, float]:
        return {}


def test_time_host_parts_interleaves_groups_and_takes_the_median() -> None:
    calls: list[str] = []
    now = [0.0]

    def part(tag: str, cost: float) -> Any:
        def run() -> None:
            calls.append(tag)
            now[0] += cost + (1.0 if len(calls) == 3 else 0.0)  # one outlier in the warm-up
        return run

    groups = {1: {"fwd": part("1f", 2e-3), "opt": part("1o", 5e-3)},
              4: {"fwd": part("4f", 8e-3), "opt": part("4o", 11e-3)}}
    times = host_mod.time_host_parts(groups, ["fwd"], CPU, warmup=1, repeats=5,
                                    clock=lambda: now[0])
    assert calls[:4] == ["1f", "1o", "4f", "4o"] and len(calls) == 4 * 6
    assert set(times[1]) == {"fwd"}  # opt ran (the step needs it) but was not asked for
    assert times[1]["fwd"] == pytest.approx(2e-3) and times[4]["fwd"] == pytest.approx(8e-3)


def test_time_host_parts_runs_the_rounds_back_to_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device is synchronised after the warm-up and at the end, never between calls: a step
    called after a synchronisation measured up to 2× the host time of one in a run of steps."""
    events: list[str] = []
    monkeypatch.setattr(host_mod, "synchronize", lambda device: events.append("sync"))
    groups = {1: {"fwd": lambda: events.append("1f")}, 4: {"fwd": lambda: events.append("4f")}}
    host_mod.time_host_parts(groups, ["fwd"], CPU, warmup=1, repeats=3,
                            between_rounds=lambda: events.append("between"))
    # the host sampled after each timed round, not after the warm-up
    assert events == ["1f", "4f", "sync"] + ["1f", "4f", "between"] * 3 + ["sync"]


def test_time_host_parts_times_the_last_call_of_a_run_of_each_part_or_of_each_step() -> None:
    events: list[str] = []
    now = [0.0]

    def part(tag: str) -> Any:
        def run() -> None:
            events.append(tag)
            now[0] += 1e-3 if tag.endswith("b") else 1e-4
        return run

    groups = {1: {"a": part("1a"), "b": part("1b")}}
    times = host_mod.time_host_parts(groups, ["a", "b"], CPU, warmup=0, repeats=2, run_of=3,
                                    clock=lambda: now[0])
    # apart: each part thrice in a row, the third timed
    assert events == ["1a"] * 3 + ["1b"] * 3 + ["1a"] * 3 + ["1b"] * 3
    assert times[1] == pytest.approx({"a": 1e-4, "b": 1e-3})
    events.clear()
    host_mod.time_host_parts(groups, ["a", "b"], CPU, warmup=0, repeats=1, run_of=3, chained=True)
    assert events == ["1a", "1b"] * 3  # the phases of one step: the whole step thrice, in order
    events.clear()
    host_mod.time_host_parts(groups, ["a", "b"], CPU, warmup=0, repeats=1)
    assert events == ["1a", "1b"]  # run_of 1: each call timed alone


def test_a_cpu_calibration_times_host_steps_in_runs_and_a_gpus_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int, bool]] = []

    def fake_groups(dtype: str, mode: str, device: Any, what: str) -> Any:
        parts = ("fwd", "bwd", "opt") if what == "train" else ("nograd", "decode")
        return {n: dict.fromkeys(parts, lambda: None) for n in host_mod.HOST_LAYERS}

    def fake_time(groups: Any, timed: list[str], device: Any, **kw: Any) -> Any:
        if timed:
            asked.append((next(iter(groups[1])), kw.get("run_of", 1), kw.get("chained", False)))
        return {n: {p: 1e-6 * n for p in parts if p in timed} for n, parts in groups.items()}

    monkeypatch.setattr(host_mod, "host_groups", fake_groups)
    monkeypatch.setattr(host_mod, "time_host_parts", fake_time)
    monkeypatch.setattr(host_mod, "HostSampler", SteadySampler)
    host_mod.measure_host(CPU, ["fp32"])
    run = host_mod.CPU_HOST_RUN
    assert run > 1 and asked == [("fwd", run, True), ("nograd", run, False)]
    asked.clear()
    host_mod.measure_host(torch.device("cuda"), ["fp32"], compiled=False)
    assert asked == [("fwd", 1, True), ("nograd", 1, False)]


@pytest.mark.parametrize("flat_calls", [1, 2])
def test_a_host_line_with_no_cost_a_block_is_measured_again_and_named(
        monkeypatch: pytest.MonkeyPatch, flat_calls: int) -> None:
    """A busy host can time the 4-block step no longer than the 1-block one: that job is measured
    once more, the better reading kept, and a note names the parts (and any still flat)."""
    calls: dict[str, int] = {}

    def fake_groups(dtype: str, mode: str, device: Any, what: str) -> Any:
        parts = ("fwd", "bwd", "opt") if what == "train" else ("nograd", "decode")
        return {n: dict.fromkeys(parts, lambda: None) for n in host_mod.HOST_LAYERS}

    def fake_time(groups: Any, timed: list[str], device: Any, **kw: Any) -> Any:
        if not timed:  # the warm-up
            return {}
        lo = min(groups)
        what = "train" if "fwd" in groups[lo] else "inference"
        calls[what] = calls.get(what, 0) + 1
        flat = what == "train" and calls[what] <= flat_calls
        return {n: {p: 1e-4 * (n if not (flat and p == "fwd") else lo) for p in groups[n] if p in timed}
                for n in groups}

    monkeypatch.setattr(host_mod, "host_groups", fake_groups)
    monkeypatch.setattr(host_mod, "time_host_parts", fake_time)
    monkeypatch.setattr(host_mod, "HostSampler", SteadySampler)
    result = host_mod.measure_host(CPU, ["fp32"])
    assert calls == {"train": 2, "inference": 1}  # only the flat job again, and once
    said = [n for n in result.notes if "took no longer" in n]
    assert len(said) == 1 and "eager train step in fp32: fwd took no longer with 4 blocks" in said[0]
    per_layer = result.costs["eager:fwd:fp32"]["per_layer_s"]
    if flat_calls == 1:
        assert per_layer > 0 and said[0].endswith("each part now takes longer with more blocks")
    else:
        assert per_layer == 0 and "fwd still not, charged no cost a block" in said[0]
    assert result.costs["eager:bwd:fp32"]["per_layer_s"] > 0


def test_time_host_parts_stops_early_on_a_busy_machine() -> None:
    now = [0.0]
    calls = []

    def slow() -> None:
        calls.append(now[0])
        now[0] += 1.0

    times = host_mod.time_host_parts({1: {"fwd": slow}}, ["fwd"], CPU, warmup=1, repeats=10,
                                    budget_s=2.5, min_repeats=3, clock=lambda: now[0])
    assert len(calls) == 1 + 3 and times[1]["fwd"] == 1.0
    host_mod.time_host_parts({1: {"fwd": slow}}, ["fwd"], CPU, warmup=0, repeats=4, budget_s=0.5,
                            min_repeats=4, clock=lambda: now[0])
    assert len(calls) == 4 + 4  # never fewer than min_repeats


def test_fit_host_jobs_brings_every_job_to_one_host_speed_and_says_how_far_it_moved() -> None:
    """The second job ran on a host twice as slow (its unit 2 ms against 1 ms): its costs are
    halved against the first's, and all are stated at the units' geometric mean, √2 ms."""
    lo, hi = host_mod.HOST_LAYERS
    fast = {lo: {"fwd": 3e-6, "bwd": 5e-6}, hi: {"fwd": 9e-6, "bwd": 11e-6}}
    slow = {lo: {"infer": 4e-6}, hi: {"infer": 10e-6}}
    host, units, notes, phases = host_mod.fit_host_jobs([("decode", "eager", "fp32", fast, 1e-3, {}),
                                                        ("decode", "eager", "bf16", slow, 2e-3, {})])
    assert units == pytest.approx({"decode": 2 ** 0.5 * 1e-3}) and phases == {}
    # fwd: 2 µs a layer, 1 µs fixed at 1 ms -> ×√2; infer: 2 µs a layer, 2 µs fixed at 2 ms -> ×1/√2
    assert host["eager:fwd:fp32"] == pytest.approx({"per_layer_s": 2e-6 * 2 ** 0.5, "fixed_s": 1e-6 * 2 ** 0.5})
    assert host["eager:infer:bf16"] == pytest.approx({"per_layer_s": 2e-6 / 2 ** 0.5, "fixed_s": 2e-6 / 2 ** 0.5})
    assert set(host) == {"eager:fwd:fp32", "eager:bwd:fp32", "eager:infer:bf16"}
    (note,) = notes
    assert "decode step" in note and "×2.00" in note and "1000–2000 µs" in note and "1414 µs" in note
    host, units, notes, _ = host_mod.fit_host_jobs([("decode", "eager", "fp32", fast, 1e-3, {}),
                                                   ("decode", "eager", "bf16", slow, 1.02e-3, {})])
    assert notes == [] and units["decode"] == pytest.approx((1.02e-6) ** 0.5)  # a steady host says nothing
    assert host_mod.fit_host_jobs([]) == ({}, {}, [], {})


def test_fit_host_jobs_scales_each_job_to_its_own_probes_unit() -> None:
    """A train job is in the train probe's unit, an inference job in the decode probe's: neither
    unit moves the other's costs, however far apart the two probes' step times are."""
    lo, hi = host_mod.HOST_LAYERS
    train = {lo: {"fwd": 3e-6}, hi: {"fwd": 9e-6}}  # 2 µs a layer, 1 fixed
    infer = {lo: {"infer": 4e-6}, hi: {"infer": 10e-6}}  # 2 µs a layer, 2 fixed
    host, units, notes, _ = host_mod.fit_host_jobs([
        ("train", "eager", "fp32", train, 8e-3, {}), ("train", "eager", "bf16", train, 2e-3, {}),
        ("decode", "eager", "fp32", infer, 5e-4, {})])
    assert units == pytest.approx({"train": 4e-3, "decode": 5e-4})
    # the train jobs at 8 and 2 ms are brought to 4 ms (×1/2 and ×2); the inference job is alone
    assert host["eager:fwd:fp32"] == pytest.approx({"per_layer_s": 1e-6, "fixed_s": 0.5e-6})
    assert host["eager:fwd:bf16"] == pytest.approx({"per_layer_s": 4e-6, "fixed_s": 2e-6})
    assert host["eager:infer:fp32"] == pytest.approx({"per_layer_s": 2e-6, "fixed_s": 2e-6})
    (note,) = notes  # the train probe moved ×4 between its jobs; the decode probe had one job
    assert "train step" in note and "×4.00" in note


def test_fit_host_jobs_scales_each_part_by_its_own_phase_of_the_probe() -> None:
    """Between two train jobs the probe's forward took 4x as long and its backward the same, its
    whole step 2x: each job's fwd is brought to the fwd phases' geometric mean, its bwd to the bwd
    phases', and a part the probe has no phase of (a compiled nograd, say) by the whole step."""
    lo, hi = host_mod.HOST_LAYERS
    times = {lo: {"fwd": 3e-6, "bwd": 3e-6, "nograd": 3e-6}, hi: {"fwd": 9e-6, "bwd": 9e-6,
                                                                   "nograd": 9e-6}}
    host, units, _, phases = host_mod.fit_host_jobs([
        ("train", "eager", "fp32", times, 1e-3, {"fwd": 2e-4, "bwd": 5e-4}),
        ("train", "eager", "bf16", times, 2e-3, {"fwd": 8e-4, "bwd": 5e-4})])
    assert units == pytest.approx({"train": 2 ** 0.5 * 1e-3})
    assert phases == {"train": pytest.approx({"fwd": 4e-4, "bwd": 5e-4})}
    line = {"per_layer_s": 2e-6, "fixed_s": 1e-6}  # through (1, 3 µs) and (4, 9 µs)
    assert host["eager:fwd:fp32"] == pytest.approx({k: v * 2 for k, v in line.items()})  # 2e-4 -> 4e-4
    assert host["eager:fwd:bf16"] == pytest.approx({k: v / 2 for k, v in line.items()})  # 8e-4 -> 4e-4
    assert host["eager:bwd:fp32"] == pytest.approx(line)  # the backward did not move
    assert host["eager:nograd:bf16"] == pytest.approx({k: v / 2 ** 0.5 for k, v in line.items()})


@pytest.mark.parametrize(("first_s", "ran"), [(25.0, ["train", "inference"]), (31.0, ["train"])])
def test_a_later_compiled_host_job_runs_while_compiling_is_under_budget(
        monkeypatch: pytest.MonkeyPatch, first_s: float, ran: list[str]) -> None:
    """The compiled train job always runs; the forward-only job after it runs while compiling so
    far is under the budget (30 s), not judged by the train job's own time (25 s + 25 s > 30)."""
    lo, hi = host_mod.HOST_LAYERS
    now = [0.0]
    compiled_jobs: list[str] = []

    def fake_groups(dtype: str, mode: str, device: Any, what: str) -> Any:
        if mode == host_mod.COMPILED:
            compiled_jobs.append(what)
            now[0] += first_s if what == "train" else 7.0  # the job's compile and rounds
        parts = ("fwd", "bwd", "opt") if what == "train" else ("nograd", "infer")
        return {n: dict.fromkeys(parts, lambda: None) for n in host_mod.host_layers(mode, what)}

    def fake_time(groups: Any, timed: list[str], device: Any, **kw: Any) -> Any:
        at = {1: 3e-6, 4: 9e-6, 16: 45e-6}  # a call's seconds at each block count
        return {n: {p: at[n] for p in parts if p in timed} for n, parts in groups.items()}

    monkeypatch.setattr(host_mod, "host_groups", fake_groups)
    monkeypatch.setattr(host_mod, "time_host_parts", fake_time)
    monkeypatch.setattr(host_mod, "HostSampler", SteadySampler)
    monkeypatch.setattr(host_mod, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    result = host_mod.measure_host(CPU, ["bf16"], compiled=True, budget_s=30.0)
    assert compiled_jobs == ran
    assert ("compiled:nograd:bf16" in result.costs) == ("inference" in ran)
    # the forward-only job timed deeper too ((45 − 9) / 12 = 3 µs a block past 4); the train
    # job's parts and the eager ones on their straight line
    if "inference" in ran:
        assert result.costs["compiled:nograd:bf16"]["beyond_per_layer_s"] == pytest.approx(3e-6)
    assert [k for k, fit in result.costs.items() if "beyond_layers" in fit] == (
        ["compiled:nograd:bf16"] if "inference" in ran else [])
    assert "compiled:fwd:bf16" in result.costs
    assert "compiled:opt:bf16" in result.costs  # the compiled plan's own optimizer, timed too
    left_out = [n for n in result.notes if "left out" in n]
    assert len(left_out) == (2 - len(ran))
    assert f"compiled host cost of the train step: {first_s:.0f} s" in " ".join(result.notes)


def test_compiled_host_steps_run_the_compiled_recordings_token_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled host model runs as many tokens as the compiled recordings (where inductor
    splits reductions over tokens into extra kernels, as in real training steps), its block as
    long as their sequence; the eager one stays at B 1, T 8 on the host probe's own model."""
    import gptperf.steps.build as build_mod
    from gptperf.plan import COMPILED, EAGER

    built: list[tuple[bool, str, int, int, int]] = []

    def fake_build(config: Any, workload: Any, plan: Any, device: Any) -> Any:
        built.append((plan.compiled, workload.kind, workload.batch, workload.seq, config))
        train = SimpleNamespace(forward=lambda: None, backward=lambda: None, optimizer_step=lambda: None)
        return SimpleNamespace(train=train, phases=[("step", lambda: None)])

    monkeypatch.setattr(build_mod, "build_step", fake_build)
    for mode in (COMPILED, EAGER):
        for what in host_mod.HOST_JOBS:
            host_mod.host_groups("fp32", mode, CPU, what)
    compiled = {(b, t) for c, _, b, t, _ in built if c}
    eager = {(b, t) for c, _, b, t, _ in built if not c}
    assert compiled == {(rec_mod.RECORD_BATCH, rec_mod.RECORD_SEQ)}
    assert eager == {(1, 8)}
    assert {k for c, k, *_ in built if c} == {"train", "forward"}
    probe_models = {host_model_config(n).name for n in host_mod.HOST_LAYERS}
    assert {config.name for c, *_, config in built if not c} == probe_models
    assert all(config.block_size == rec_mod.RECORD_SEQ for c, *_, config in built if c)
    assert {config.n_layer for c, *_, config in built if not c} == set(host_mod.HOST_LAYERS)
    # the compiled forward-only job also at the deeper block count, the train job not
    deep = host_mod.HOST_DEEP_LAYERS
    assert {(k, config.n_layer) for c, k, *_, config in built if c and config.n_layer == deep} == {("forward", deep)}
    assert {config.n_layer for c, *_, config in built if c} == {*host_mod.HOST_LAYERS, deep}


def test_measure_host_samples_the_unit_among_every_jobs_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job's unit is the host model's step of its kind (train, decode) sampled among its own
    rounds; a job that took no sample falls back to a probe of that kind after its rounds."""
    lo, hi = host_mod.HOST_LAYERS
    events: list[str] = []
    jobs = [0]

    class FakeSampler:
        def __init__(self, device: Any, every_s: float | None = None, probe: str = "decode") -> None:
            assert every_s == 0.0  # a sample after every round
            events.append(f"{probe} sampler")
            self.samples: list[float] = []
            self.phase_samples: dict[str, list[float]] = {}

        def __call__(self) -> None:
            events.append("sample")
            self.samples.append(1e-3 * jobs[0])  # the host slows with each job

        def step_s(self) -> float | None:
            return statistics.median(self.samples) if self.samples else None

        def phase_s(self) -> dict[str, float]:  # the forward a fifth of the step sampled
            return {"fwd": self.step_s() / 5} if self.samples else {}

    def fake_time(groups: Any, timed: list[str], device: Any, between_rounds: Any = None,
                  **kw: Any) -> Any:
        if not timed:  # the warm-up call
            events.append("warm")
            return {n: {} for n in groups}
        jobs[0] += 1
        events.append("timed")
        for _ in range(3 if jobs[0] == 1 else 0):  # the second job: no round sampled
            between_rounds()
        k = jobs[0]  # job k measured 1 and 4 blocks at k and 4k µs: k µs a layer
        return {lo: {p: 1e-6 * k for p in groups[lo]}, hi: {p: 4e-6 * k for p in groups[hi]}}

    def fake_probe(device: Any, probe: str = "decode") -> float:
        events.append(f"{probe} probe after")
        return 1e-3 * jobs[0]

    monkeypatch.setattr(host_mod, "time_host_parts", fake_time)
    monkeypatch.setattr(host_mod, "HostSampler", FakeSampler)
    monkeypatch.setattr(host_mod, "host_step_s", fake_probe)
    result = host_mod.measure_host(CPU, ["fp32"], quick=True)
    assert events == ["warm", "train sampler", "timed", "sample", "sample", "sample",
                      "warm", "decode sampler", "timed", "decode probe after"]
    assert result.job_units == {"eager:train:fp32": 1e-3, "eager:inference:fp32": 2e-3}
    # each probe's unit is its one job's; job k measured k µs a layer at its own k ms
    assert result.units == pytest.approx({"train": 1e-3, "decode": 2e-3})
    assert result.phase_units == {"train": pytest.approx({"fwd": 2e-4})}  # the samples' phases kept
    assert result.costs["eager:fwd:fp32"]["per_layer_s"] == pytest.approx(1e-6)
    assert result.costs["eager:infer:fp32"]["per_layer_s"] == pytest.approx(2e-6)
    assert not any("×" in n for n in result.notes)  # one job a probe: nothing moved between jobs


def test_host_costs_are_measured_for_every_part(calibration: Calibration) -> None:
    assert set(calibration.host) == {f"eager:{p}:fp32" for p in host_mod.HOST_PARTS}
    for key, fit in calibration.host.items():
        assert set(fit) == {"per_layer_s", "fixed_s"}
        one, four = fit["fixed_s"] + fit["per_layer_s"], fit["fixed_s"] + 4 * fit["per_layer_s"]
        assert 1e-6 < one < 0.05, (key, fit)  # a tiny model: microseconds to milliseconds
        # every block adds modules to run, gradients to compute, parameters to update: 4 blocks
        # cost more than 1 (by at least a few dispatches: ~1 µs each even on a fast CPU)
        assert fit["per_layer_s"] > 1e-6 and four > one, (key, fit)


# --- compiled recordings (the summary of an attribution; the recording itself needs CUDA) -----


@pytest.mark.parametrize("kernel, cls", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "matmul"),
    ("cutlass3x_sm90_tensorop_gemm_bf16", "matmul"),
    ("_gemv_kernel", "matmul"),
    ("triton_tem_fused_addmm_0", "matmul"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
    ("fmha_cutlassB_bf16_aligned_64x64_k64_sm80", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "attention"),
    ("triton_poi_fused__scaled_dot_product_flash_attention_transpose_0", "other"),
    ("triton_red_fused_native_layer_norm_0", "other"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "other"),
])
def test_kernel_classes_by_name(kernel: str, cls: str) -> None:
    assert rec_mod.kernel_class(kernel) == cls


def test_summarize_attribution_per_layer_and_step() -> None:
    def w(kernel: str, step: int, us: float, *parts: tuple[str, str, float]) -> Any:
        return SimpleNamespace(kernel=kernel, step=step, dur_us=us, parts=list(parts))

    work = []
    for step in (0, 1):
        for layer in (0, 1):
            qkv = names.layer_name(layer, names.ATTN_QKV)
            ln = names.layer_name(layer, names.LN_1)
            work += [w("nvjet_gemm", step, 10.0, (qkv, "fwd", 1.0)),
                     w("triton_per_fused_ln", step, 4.0, (ln, "fwd", 0.75), (qkv, "fwd", 0.25)),
                     w("flash_fwd", step, 6.0, (names.layer_name(layer, names.ATTN_SDPA), "fwd", 1.0))]
        work += [w("multi_tensor_apply_adam", step, 30.0, (names.OPTIMIZER, "opt", 1.0)),
                 w("mystery", step, 2.0)]
    attribution = SimpleNamespace(steps=["ProfilerStep#2", "ProfilerStep#3"], work=work,
                                  step_wall_s=[1e-3, 3e-3], exact_coverage=0.9)
    s = rec_mod.summarize_attribution(attribution, n_layer=2)
    assert s["ops"]["attn.qkv:fwd"] == {"kernels": 1, "seconds": pytest.approx(
        {"matmul": 10e-6, "attention": 0.0, "other": 1e-6})}
    assert s["ops"]["ln_1:fwd"] == {"kernels": 1, "seconds": pytest.approx(
        {"matmul": 0.0, "attention": 0.0, "other": 3e-6})}
    assert s["ops"]["attn.sdpa:fwd"]["seconds"]["attention"] == pytest.approx(6e-6)
    assert s["ops"]["optimizer:opt"] == {"kernels": 1, "seconds": pytest.approx(
        {"matmul": 0.0, "attention": 0.0, "other": 30e-6})}  # per step: not divided by layers
    assert s["kernels_per_step"] == 8 and s["steps"] == 2
    assert s["kernel_seconds_per_step"] == pytest.approx((2 * 20 + 32) * 1e-6)
    assert s["unattributed"] == {"kernels": 1, "seconds": pytest.approx(
        {"matmul": 0.0, "attention": 0.0, "other": 2e-6})}
    assert s["step_wall_s"] == pytest.approx(2e-3) and s["exact_coverage"] == 0.9
    json.dumps(s)  # JSON-ready


def test_without_profiler_hooks_recordings_are_left_out_with_a_note() -> None:
    out, notes = rec_mod.record_compiled_steps(CPU, None)
    assert out == {} and len(notes) == 1 and "profiler hooks" in notes[0]


@pytest.mark.parametrize(("train_s", "recorded"), [(15.0, ["train:bf16", "forward:bf16"]),
                                                   (21.0, ["train:bf16"])])
def test_the_forward_recording_runs_while_the_recordings_are_within_budget(
        monkeypatch: pytest.MonkeyPatch, train_s: float, recorded: list[str]) -> None:
    # a train recording of 15 s leaves the forward one in (the budget is not spent, even though
    # twice 15 s would pass it); one of 21 s has spent the budget: the forward is left out
    clock = {"now": 0.0}
    cost = {"train": train_s, "forward": 4.0}

    def fake_record(config: Any, workload: Any, device: Any, hooks: Any) -> dict[str, Any]:
        clock["now"] += cost[workload.kind]
        return {"kind": workload.kind}

    monkeypatch.setattr(rec_mod, "record_compiled", fake_record)
    monkeypatch.setattr(rec_mod.time, "perf_counter", lambda: clock["now"])
    out, notes = rec_mod.record_compiled_steps(CPU, object(), budget_s=20.0)
    assert list(out) == recorded
    assert len(notes) == 2 - len(recorded)
    if notes:
        assert "forward left out" in notes[0] and "21 s of the 20 s" in notes[0]


def test_bad_dtypes_are_one_line_errors(env: Path) -> None:
    for dtypes, word in ((["fp8"], "unknown dtype 'fp8'; valid: fp64, fp32, tf32, bf16, fp16"),
                         (["fp16"], "dtype 'fp16' needs a GPU; valid on cpu: fp64, fp32, tf32, bf16"),
                         ([], "no dtypes to calibrate; valid on cpu: fp64, fp32, tf32, bf16")):
        with pytest.raises(UserError) as err:
            cal_mod.calibrate(CPU, quick=True, dtypes=dtypes)
        assert str(err.value).endswith(word) and "\n" not in str(err.value)


# --- the command ----------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())


def test_calibrate_json_then_cached_then_forced(env: Path, clean_cache: Path, calibration: Calibration,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    first = _run_cli(["calibrate", "--device", "cpu", "--quick", "--json"])
    assert first["schema"] == "gptperf.calibration/1"
    assert first["cached"] is False and first["path"] == str(clean_cache) and clean_cache.is_file()
    families = ("matmul", "attention", "vector", "optimizer", "gemv")
    assert Calibration.from_dict(first).residuals() == {
        f"{f}:{k}": v["residual"] for f in families for k, v in first[f].items()}
    assert first["environment"]["device_type"] == "cpu"
    second = _run_cli(["calibrate", "--device", "cpu", "--quick", "--json"])
    assert second["cached"] is True and second["created_at"] == first["created_at"]
    # a quick calibration is not reused when a full one is asked for
    with monkeypatch.context() as mp:
        full = replace(calibration, notes=[])
        mp.setattr(cal_mod, "calibrate", lambda *a, **k: full)
        assert cal_mod.ensure_calibration(CPU, quick=False)[:2] == (full, False)
        assert cal_mod.ensure_calibration(CPU, quick=True)[:2] == (full, True)  # full serves quick
    # --force measures again (`calibrate` recorded: the measurement itself was `first`)
    calls = _record_calibrate(monkeypatch, full)
    forced = _run_cli(["calibrate", "--device", "cpu", "--quick", "--force", "--json"])
    assert forced["cached"] is False and calls == [True]


def test_calibrate_reuses_only_a_calibration_younger_than_a_day(calibration: Calibration,
                                                                clean_cache: Path,
                                                                measured_again: list[bool]) -> None:
    for hours, cached_expected in ((20, True), (30, False)):
        made_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)
        save_calibration(replace(calibration, created_at=made_at.isoformat()))
        assert cal_mod.calibration_for(CPU) is not None  # usable for predictions (< 30 days) ...
        made, cached, _ = cal_mod.ensure_calibration(CPU, quick=True)
        assert cached is cached_expected  # ... but measured again by calibrate after a day
        assert made.age_days() < 0.01 if not cached else made.age_days() > 0.8
    assert measured_again == [True]


def test_calibrate_table(env: Path, clean_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--device", "cpu", "--quick"]) == 0
    out = capsys.readouterr().out
    cal = cal_mod.calibration_for(CPU, required=True)
    assert cal is not None
    assert "Kernel time curves" in out and "Host cost" in out and str(clean_cache) in out
    for key, residual in cal.residuals().items():
        family, curve = key.split(":", 1)
        assert curve in out
        if residual is not None:
            assert f"{100 * residual:.1f}%" in out
    for key, fit in cal.host.items():
        assert key in out and f"{fit['per_layer_s'] * 1e6:.1f}" in out
    from gptperf.output import seconds

    assert (f"host costs' units: the 1-block host model's eager train step "
            f"{seconds(cal.probes['host']['train_step_s'])} and decode step "
            f"{seconds(cal.probes['host']['step_s'])}") in " ".join(out.split())
    assert "launch gap" not in out  # a CPU has none
    assert "per block deeper" not in out  # no line with a knee (a CPU times no compiled job)
    assert main(["calibrate", "--device", "cpu", "--quick"]) == 0
    captured = capsys.readouterr()
    assert "cached calibration" in captured.err and "--force" in captured.err
    # a line with a knee (a GPU's compiled forward): its slope past the knee in its own column
    knee = {"fixed_s": 1e-6, "per_layer_s": 2e-6, "beyond_layers": 4.0, "beyond_per_layer_s": 3e-6}
    save_calibration(replace(cal, host={**cal.host, "compiled:nograd:bf16": knee}))
    assert main(["calibrate", "--device", "cpu", "--quick"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "per block deeper (µs)" in out and "3.0 past 4 blocks" in out
    assert f"a compiled forward {host_mod.HOST_DEEP_LAYERS} too" in out


def test_bad_device_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--device", "tpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tpu" in err


# --- ceilings ends with the calibration -----------------------------------------------------


@pytest.fixture
def seeded_ceilings(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ceilings measures nothing: a made-up measurement of this CPU."""
    import gptperf.measure.ceilings as ceilings
    from gptperf.measure.ceilings import SCHEMA, Ceilings

    made = Ceilings.from_dict({
        "schema": SCHEMA, "device": device_name(CPU), "device_type": "cpu",
        "measured_at": "seeded by the test", "memory_bytes": 2**34, "launch_latency_s": 1e-6,
        "matmul": {"fp32": {"points": [{"n": 64, "flops_per_s": 1e11}], "best_flops_per_s": 1e11,
                            "best_shape": "64"}},
        "bandwidth": {"copy": {"best_bytes_per_s": 1e10, "best_buffer_bytes": 2**20}}})
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda *a, **k: made)


def test_ceilings_ends_with_the_calibration_unless_told_not_to(
        seeded_ceilings: None, clean_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _run_cli(["ceilings", "--quick", "--device", "cpu", "--force", "--no-calibrate", "--json"])
    assert "calibration" not in doc and not clean_cache.exists()
    doc = _run_cli(["ceilings", "--quick", "--device", "cpu", "--json"])
    assert doc["schema"] == "gptperf.ceilings/1"
    assert doc["calibration"]["path"] == str(clean_cache) and clean_cache.is_file()
    assert doc["calibration"]["cached"] is False
    assert set(doc["calibration"]["host"]) == {f"eager:{p}:fp32" for p in host_mod.HOST_PARTS}
    capsys.readouterr()
    assert main(["ceilings", "--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Calibration" in out and "cached calibration" in out and str(clean_cache) in out


@pytest.mark.parametrize("command", [["calibrate", "--quick"], ["ceilings", "--quick", "--no-calibrate"]])
def test_a_cache_folder_that_cannot_be_written_is_refused_before_measuring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    import gptperf.measure.ceilings as ceilings_module

    def measured(*args, **kwargs):
        raise AssertionError("measured before checking where to save")

    monkeypatch.setattr(cal_mod, "calibrate", measured)
    monkeypatch.setattr(ceilings_module, "measure_ceilings", measured)
    taken = tmp_path / "file"
    taken.write_text("x")
    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(taken))
    from gptperf.cli import main

    assert main([*command, "--device", "cpu", "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the cache folder (GPTPERF_CACHE_DIR, else ~/.cache/gptperf)" in err
    assert f"{str(taken)!r} is a file, not a folder" in err


# --- the real thing -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_train_recording_on_cuda() -> None:
    from gptperf.perfmodel.workload import Workload
    from gptperf.profiling.hooks import profiler_hooks

    config = rec_mod.record_config()
    rec = rec_mod.record_compiled(config, Workload("train", 2, 128, "bf16"), torch.device("cuda"),
                                  profiler_hooks(), steps=2)
    ops = rec["ops"]
    assert rec["plan"]["mode"] == "compiled" and rec["config"]["n_layer"] == config.n_layer
    assert ops["attn.qkv:fwd"]["seconds"]["matmul"] > 0 and ops["mlp.fc:bwd"]["seconds"]["matmul"] > 0
    assert ops["attn.sdpa:fwd"]["seconds"]["attention"] > 0
    assert ops["optimizer:opt"]["kernels"] >= 1
    assert sum(o["kernels"] for o in ops.values()) <= rec["kernels_per_step"] + len(ops)
    assert rec["exact_coverage"] is not None and rec["exact_coverage"] > 0.8


def test_time_note_says_what_each_family_waited_for_the_side_processes() -> None:
    kernels = {"family_seconds": {"matmul": 23.34, "attention": 38.1},
               "family_lock_wait_seconds": {"matmul": 0.01, "attention": 11.26}}
    assert cal_mod.time_note(kernels, 82.4, 12.6, 12.8) == (
        "time: kernels 82.4 s (matmul 23.3, attention 38.1; waiting for the side processes' "
        "GPU work: attention 11.3), host 12.6 s, compiled 12.8 s")
    kernels["family_lock_wait_seconds"] = {}  # no side process: nothing waited for
    assert cal_mod.time_note(kernels, 82.4, 12.6, 12.8) == (
        "time: kernels 82.4 s (matmul 23.3, attention 38.1), host 12.6 s, compiled 12.8 s")
    besides = {"probes": 1.04, "the side processes' end": 10.27, "launch gap": 0.6}
    assert cal_mod.time_note(kernels, 82.4, 12.6, 12.8, besides) == (
        "time: kernels 82.4 s (matmul 23.3, attention 38.1; besides them: probes 1.0, the side "
        "processes' end 10.3, launch gap 0.6), host 12.6 s, compiled 12.8 s")


def test_the_launch_gap_and_the_sustained_load_run_on_cuda_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    gap = {"gap_s": 1.5e-6, "kernels": {"add 4 KiB": {"stream_s": 2e-6, "graph_s": 1e-6}}}
    monkeypatch.setattr(cal_mod, "measure_launch_gap", lambda device: ran.append("gap") or gap)
    monkeypatch.setattr(cal_mod, "_sustained",
                        lambda device: (ran.append("sustained") or {"slowdown": 1.1}, ["held"]))
    notes: list[str] = []
    besides: dict[str, float] = {}
    launch, sustained = cal_mod._launch_and_sustained(torch.device("cuda"), ["bf16"], notes, besides)
    assert ran == ["gap", "sustained"] and launch is gap and sustained == {"slowdown": 1.1}
    assert notes == ["launch gap: add 4 KiB 2.00 µs from a stream, 1.00 in a graph", "held"]
    assert set(besides) == {"launch gap", "sustained load"}
    ran.clear()
    launch, sustained = cal_mod._launch_and_sustained(torch.device("cuda"), ["fp32"], [], {})
    assert ran == ["gap"] and sustained == {}  # the sustained load is a bf16 matmul's
    launch, sustained = cal_mod._launch_and_sustained(torch.device("cpu"), ["fp32"], notes, besides)
    assert ran == ["gap"] and launch == {"gap_s": 0.0} and sustained == {}  # a CPU has neither


class _Clock:
    """A clock that each call to a fake measurement or probe moves on."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _costs(decode_s: float, tag: str) -> host_mod.HostCosts:
    return host_mod.HostCosts({"eager:infer:fp32": {"per_layer_s": decode_s, "fixed_s": 0.0}},
                              {"decode": decode_s, "train": 8 * decode_s}, [tag])


def test_host_jobs_in_a_slow_spell_are_measured_again_once_the_host_settles() -> None:
    clock = _Clock()
    units = iter([1.0e-3, 0.4e-3])  # the first jobs' unit 2.5x the reference, then the host's own
    probes = iter([0.9e-3, 0.6e-3, 0.42e-3])  # the host slow, slow, then within SETTLED

    def measure() -> host_mod.HostCosts:
        clock.t += 10.0
        unit = next(units)
        return _costs(unit, f"jobs at {unit}")

    def probe() -> float:
        clock.t += 0.3
        return next(probes)

    result = host_mod.measure_host_settled(measure, 0.4e-3, 60.0, probe, clock=clock)
    assert result.units["decode"] == 0.4e-3 and result.notes[0] == "jobs at 0.0004"
    assert "2.50× the 400 µs probed before them" in result.notes[-1]
    assert "measured again after 1 s, when a probe read 420 µs: 400 µs; kept the second" in result.notes[-1]
    assert next(probes, None) is None  # it waited for the probe to settle, no longer


def test_host_jobs_are_kept_when_within_the_spell_limit_or_no_time_is_left() -> None:
    calls = [0]

    def measure(unit: float) -> Any:
        def run() -> host_mod.HostCosts:
            calls[0] += 1
            return _costs(unit, "first")
        return run

    def no_probe() -> float:
        raise AssertionError("no wait when nothing is measured again")

    reference = 0.4e-3
    steady = host_mod.measure_host_settled(measure(host_mod.HOST_SPELL * reference * 0.99), reference,
                                           60.0, no_probe)
    assert calls[0] == 1 and steady.notes == ["first"]
    # the jobs take 10 s: with 29 s left at their start, 19 after them, a second 10 s fits and the
    # whole wait would not (it is cut to 9 s); with 19 s left, 9 after them, a second does not fit
    clock = _Clock()

    def timed(unit: float) -> Any:
        def run() -> host_mod.HostCosts:
            calls[0] += 1
            clock.t += 10.0
            return _costs(unit, "jobs")
        return run

    slow = host_mod.measure_host_settled(timed(3 * reference), reference, 19.0, no_probe, clock=clock)
    assert calls[0] == 2 and slow.units["decode"] == 3 * reference
    assert "3.00× the 400 µs" in slow.notes[-1]
    assert "not measured again: 9 s left of the calibration's budget, the jobs take 10 s" in slow.notes[-1]

    def still_slow() -> float:
        clock.t += 1.0
        return 3 * reference

    start = clock.t
    again = host_mod.measure_host_settled(timed(3 * reference), reference, 29.0, still_slow, clock=clock)
    assert calls[0] == 4 and "measured again after 9 s" in again.notes[-1]
    assert clock.t - start == 29.0  # the first, the wait cut to fit, the second: the budget, no more


def test_a_second_measurement_slower_than_the_first_is_not_kept() -> None:
    clock = _Clock()
    units = iter([1.0e-3, 1.2e-3])

    def measure() -> host_mod.HostCosts:
        unit = next(units)
        return _costs(unit, f"jobs at {unit}")

    def probe() -> float:  # the spell lasts: it gives up waiting after SETTLE_WAIT_S
        clock.t += 1.0
        return 1e-3

    result = host_mod.measure_host_settled(measure, 0.4e-3, 60.0, probe, clock=clock)
    assert result.units["decode"] == 1.0e-3 and result.notes[0] == "jobs at 0.001"
    assert f"measured again after {host_mod.SETTLE_WAIT_S:.0f} s" in result.notes[-1]
    assert result.notes[-1].endswith("1200 µs; kept the first")


def test_paired_medians_read_each_round_against_the_sample_after_it() -> None:
    # three rounds: the host slow (x2) in the second, parts and samples alike
    rounds = {1: {"fwd": [1.0, 2.0, 1.2], "nograd": [3.0, 6.0, 3.0]},
              4: {"fwd": [4.0, 8.0, 4.4], "nograd": [9.0, 18.0, 9.9]}}
    samples = [10.0, 20.0, 10.0]
    phases = {"fwd": [2.0, 4.0, 2.0]}
    got = host_mod.paired_medians(rounds, samples, phases)
    # fwd at 1 block: median(0.5, 0.5, 0.6) x median(2, 4, 2) = 1.0; nograd: 0.3 x 10 = 3.0
    assert got == {1: pytest.approx({"fwd": 1.0, "nograd": 3.0}), 4: pytest.approx({"fwd": 4.0, "nograd": 9.0})}
    # (read apart, fwd's rounds' median 1.2 takes the third round's noise)
    assert host_mod.paired_medians({1: {"fwd": [1.0, 2.0]}}, samples, {}) is None  # 2 rounds, 3 samples
    assert host_mod.paired_medians({1: {"fwd": [1.0]}}, [0.0], {}) is None


def test_measure_host_reads_parts_against_their_rounds_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lo, hi = host_mod.HOST_LAYERS
    slow = [1.0, 3.0, 3.0, 1.0, 1.0]  # the host's speed round by round: 3x in two of five rounds

    class FakeSampler:
        def __init__(self, device: Any, every_s: float | None = None, probe: str = "decode") -> None:
            self.samples: list[float] = []
            self.phase_samples: dict[str, list[float]] = {}

        def __call__(self) -> None:
            # the sample after round i reads the host of round i; one in a slow round read fast
            i = len(self.samples)
            self.samples.append(1e-3 * (1.0 if i == 2 else slow[i]))

        def step_s(self) -> float | None:
            return statistics.median(self.samples)

        def phase_s(self) -> dict[str, float]:
            return {}

    def fake_time(groups: Any, timed: list[str], device: Any, between_rounds: Any = None,
                  rounds: Any = None, **kw: Any) -> Any:
        if not timed:
            return {n: {} for n in groups}
        per = {lo: 1e-6, hi: 4e-6}  # seconds of a part at the unit's speed
        for n in groups:
            rounds[n] = {p: [] for p in groups[n] if p in timed}
        for speed in slow:
            for n in groups:
                for p in rounds[n]:
                    rounds[n][p].append(per[n] * speed)
            between_rounds()
        return {n: {p: statistics.median(ts) for p, ts in by.items()} for n, by in rounds.items()}

    monkeypatch.setattr(host_mod, "time_host_parts", fake_time)
    monkeypatch.setattr(host_mod, "HostSampler", FakeSampler)
    result = host_mod.measure_host(CPU, ["fp32"], quick=True)
    assert result.units["decode"] == pytest.approx(1e-3)  # the samples' median
    # the rounds' parts over their samples 1, 1, 3, 1, 1 -> median 1 unit a layer
    assert result.costs["eager:nograd:fp32"]["per_layer_s"] == pytest.approx(1e-6)
    slow[:] = [3.0, 3.0, 3.0, 1.0, 1.0]  # three slow rounds of five, one sample read fast
    paired = host_mod.measure_host(CPU, ["fp32"], quick=True).costs["eager:nograd:fp32"]["per_layer_s"]
    # rounds 3/3, 3/3, 3/1, 1/1, 1/1 -> median 1, at the samples' median 1 ms (the parts' median
    # against the samples' median would read the slow 3 units: 3x over)
    assert paired == pytest.approx(1e-6)
