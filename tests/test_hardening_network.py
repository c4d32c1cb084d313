"""Nothing gptperf runs opens a network connection: the main commands, run in this process with
every socket connect, send and name lookup refused, succeed and never try.

`gptperf scale` is left out: it launches torchrun, whose processes rendezvous over loopback TCP
by design (gloo and c10d), in processes of their own. The ceilings come from a cache seeded
here (measuring is seconds of local matmuls, and tests/test_ceilings.py runs it); bench, profile and
inference predict with them.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import hardening
import pytest
from hardening import MODEL, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

CLS = "main commands with sockets disabled"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection attempt is refused and remembered."""
    attempts: list[Any] = []

    def refuse(*args: Any, **_kwargs: Any) -> Any:
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network access disabled by tests/test_hardening_network.py")

    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        monkeypatch.setattr(socket.socket, name, refuse)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    return attempts


def test_main_commands_open_no_connection(tmp_path: Path, capsys: Any, no_network: list[Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from gptperf.envinfo import device_name
    from gptperf.measure.ceilings import SCHEMA, Ceilings, save_ceilings
    from gptperf.report import Stage
    from gptperf.report import stages as report_stages

    monkeypatch.setenv("GPTPERF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(report_stages, "STAGES", [Stage("a", "A", lambda ctx, p: {"v": 1}, 1.0)])
    save_ceilings(Ceilings.from_dict({
        "schema": SCHEMA, "device": device_name(torch.device("cpu")), "device_type": "cpu",
        "measured_at": "seeded by the test", "memory_bytes": 2**34, "launch_latency_s": 1e-6,
        "matmul": {dt: {"points": [{"n": 64, "flops_per_s": 1e11}], "best_flops_per_s": 1e11,
                        "best_shape": "64"} for dt in ("fp32", "fp64", "bf16")},
        "bandwidth": {"copy": {"best_bytes_per_s": 1e10, "best_buffer_bytes": 2**20}}}))
    ckpt = str(tmp_path / "ckpt")
    runs = [
        ["train", *MODEL, "--batch", "2", "--seq", "16", "--max-iters", "2", "--eval-iters", "1",
         "--device", "cpu", "--out", ckpt],
        ["generate", "--checkpoint", ckpt, "--prompt", "a", "--tokens", "2", "--device", "cpu"],
        ["score", "ab", "ba", "--checkpoint", ckpt, "--device", "cpu"],
        ["model", *MODEL, "--batch", "1", "--seq", "8", "--dtype", "fp32", "--hardware", "cpu"],
        ["roofline", "matmul", "--m", "8", "--n", "8", "--k", "8"],
        ["ceilings", "--device", "cpu", "--no-calibrate"],
        ["bench", "train", *MODEL, "--batch", "1", "--seq", "8", "--warmup", "1", "--repeats", "1",
         "--device", "cpu"],
        ["profile", *MODEL, "--workload", "forward", "--batch", "1", "--seq", "8", "--wait", "0",
         "--warmup", "1", "--active", "1", "--no-overhead", "--device", "cpu",
         "--out", str(tmp_path / "profile")],
        ["inference", *MODEL, "--device", "cpu", "--contexts", "8", "--batches", "1"],
        ["report", "--device", "cpu", "--out", str(tmp_path / "report")],
    ]
    for argv in runs:
        before = len(no_network)
        o = run_cli(capsys, [*argv, "--json"])
        tried = no_network[before:]
        hardening.record(CLS, hardening.shown(argv, tmp_path),
                         "success, no connection attempted" if o.code == 0 and not tried
                         else f"FAILED: exit {o.code}, {len(tried)} connection attempt(s)")
        assert o.code == 0, (argv, o.err[-2000:])
        assert json.loads(o.out)["schema"].startswith("gptperf.")
        assert not tried, (argv, tried)
    hardening.finish(CLS)
