"""GPU check of the data-parallel path on whatever GPUs the machine has (NCCL):

1. `gptperf scale --mode strong --procs 1[,2,...]` on gpt2 bf16 (every GPU the machine has);
2. DDP's all-reduce stamps on CUDA events (`AllReduceTimer`) on one rank, where `gptperf scale`
   does not wrap the model: bucket sizes against the model's, ready/done inside the step;
3. `torchrun --nproc-per-node N -m gptperf train` (world size N over NCCL), rank 0 checkpoints.

    python benchmarks/gpu_scaling.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def hook_check() -> dict:
    """One NCCL rank, DDP around gpt2, the timing hook's stamps over a few steps."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from gptperf.model import GPT, preset
    from gptperf.perfmodel.comm import ddp_buckets, gradient_tensors
    from gptperf.scaling.ddp import AllReduceTimer
    from gptperf.scaling.launch import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl", device_id=dev)
    config = preset("gpt2")
    model = GPT(config).to(dev)
    ddp = DDP(model, device_ids=[0])
    timer = AllReduceTimer(ddp, dev)
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    x = torch.randint(0, config.vocab_size, (8, 1025), device=dev)
    steps = []
    for _ in range(5):
        timer.begin()
        with torch.autocast("cuda", torch.bfloat16):
            _, loss = ddp(x[:, :-1], x[:, 1:])
        timer.mark("fwd")
        loss.backward()
        timer.mark("bwd")
        opt.step()
        opt.zero_grad(set_to_none=True)
        timer.mark("opt")
        torch.cuda.synchronize()
        steps.append(timer.end())
    dist.destroy_process_group()
    last = steps[-1]
    return {"model_buckets": [b.bytes for b in ddp_buckets(gradient_tensors(config))],
            "ddp_buckets": [b["bytes"] for b in sorted(last["buckets"], key=lambda b: b["index"])],
            "steps": steps}


def main(out: Path) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    procs = ",".join(str(p) for p in (1, 2, 4, 8) if p <= gpus)
    report: dict = {"gpus": gpus, "device": torch.cuda.get_device_name(0)}
    t0 = time.time()
    scale = subprocess.run([sys.executable, "-m", "gptperf", "scale", "--mode", "strong", "--procs", procs,
                            "--preset", "gpt2", "--batch", "8", "--seq", "1024", "--dtype", "bf16",
                            "--warmup", "3", "--steps", "10", "--json"], capture_output=True, text=True)
    report["scale"] = {"rc": scale.returncode, "wall_s": time.time() - t0, "stderr": scale.stderr[-3000:]}
    if scale.returncode == 0:
        (out / "scale.json").write_text(scale.stdout)
        d = json.loads(scale.stdout)
        report["scale"]["points"] = [
            {"procs": p["procs"], "step_s": p["measured"]["step_s"], "predicted_s": p["predicted"]["step_s"],
             "speedup": p["measured"]["speedup"], "comm_total_s": p["measured"]["comm_total_s"],
             "comm_exposed_s": p["measured"]["comm_exposed_s"], "busbw": p["measured"]["busbw_bytes_per_s"],
             "error": p["error"]} for p in d["points"]]
    hook = subprocess.run([sys.executable, __file__, "--hook"], capture_output=True, text=True)
    report["hook"] = json.loads(hook.stdout) if hook.returncode == 0 else {"stderr": hook.stderr[-3000:]}
    t0 = time.time()
    train = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}",
                            "-m", "gptperf", "train", "--preset", "tiny", "--max-iters", "30",
                            "--eval-interval", "30", "--out", str(out / "ckpt"), "--force", "--json"],
                           capture_output=True, text=True)
    report["train"] = {"rc": train.returncode, "wall_s": time.time() - t0, "stderr": train.stderr[-2000:],
                       "json_docs": sum(1 for line in train.stdout.splitlines() if line.startswith("{")),
                       "files": sorted(p.name for p in (out / "ckpt").glob("*"))}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "hook"}, indent=1))
    if isinstance(report["hook"], dict) and "steps" in report["hook"]:
        h = report["hook"]
        print("hook: model buckets", h["model_buckets"], "DDP buckets", h["ddp_buckets"])
        for s in h["steps"]:
            print({k: round(v * 1e3, 3) for k, v in s["marks"].items()},
                  [(b["index"], round(b["ready_s"] * 1e3, 3), round(b["done_s"] * 1e3, 3)) for b in s["buckets"]])
    else:
        print("hook:", report["hook"])


if __name__ == "__main__":
    if sys.argv[1:] == ["--hook"]:
        print(json.dumps(hook_check()))
    else:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-scaling-out"))
