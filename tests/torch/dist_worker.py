"""Subprocess worker for the distributed tests (run as a script, not collected).

``--mode single`` trains the small MLP in one process. ``--mode ddp`` and ``--mode fsdp``
train the same model under DistributedDataParallel or FSDP2 ``fully_shard`` on the
gloo backend, every rank on the same full batch, so the averaged gradient equals the
single-process one exactly and the trajectories coincide. Each rank writes its
scheduler history and the full final parameters to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from autodrop_torch import AutoDrop
from torch_testkit import EAGER, data, mlp


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["single", "ddp", "fsdp"], required=True)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--init", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=14)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model: torch.nn.Module = mlp()
    if args.mode != "single":
        dist.init_process_group("gloo", init_method=f"file://{args.init}", rank=args.rank, world_size=args.world)
    if args.mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    elif args.mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        fully_shard(model, mesh=init_device_mesh("cpu", (args.world,)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    for _ in range(args.epochs):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
        sched.step()
    params = [p.full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in model.parameters()]
    torch.save({"history": [d.to_dict() for d in sched.history], "params": params}, args.out)
    if args.mode != "single":
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
