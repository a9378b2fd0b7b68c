"""Subprocess worker of the torch SIGKILL loop (run as a script, never collected by pytest).

Trains a small BatchNorm MLP with SGD momentum and AutoDrop for ``--epochs`` epochs,
resuming from ``<dir>/checkpoint.pt`` when it exists and saving model, optimizer and
scheduler there atomically after every epoch. Prints READY once torch is imported and
the run is set up (the test times its kill from there) and writes ``result.pt`` at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from autodrop_torch import AutoDrop

EAGER = {"threshold": 5.0, "max_threshold": 60.0, "drop_delay": 3, "min_lr": 1e-5}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, **EAGER)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen) + 0.3 * torch.randn(256, 1, generator=gen)
    checkpoint = args.dir / "checkpoint.pt"
    start = 0
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        start = saved["epoch"]
    print(f"READY {start}", flush=True)
    for epoch in range(start + 1, args.epochs + 1):
        model.train()
        for i in [j for _ in range(4) for j in range(0, len(x), 32)]:  # four passes per epoch
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
        sched.step()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "epoch": epoch}
        torch.save(state, args.dir / "checkpoint.tmp")
        os.replace(args.dir / "checkpoint.tmp", checkpoint)
    torch.save({"history": [d.to_dict() for d in sched.history], "lrs": sched.get_last_lr(),
                "model": model.state_dict()}, args.dir / "result.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
