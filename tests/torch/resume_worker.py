"""Subprocess worker for the kill-and-resume tests (run as a script, not collected).

Trains the small BatchNorm MLP with SGD momentum and AutoDrop for ``--epochs`` epochs,
saving model, optimizer and scheduler with ``torch.save`` after every epoch (atomically).
With ``--pause-after E`` it stops half-way through epoch E+1, prints PAUSED and waits to
be killed. With ``--resume`` it starts from the last checkpoint in ``--dir``. At the end
it writes the scheduler history, the lrs and the final model state to ``result.pt``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from autodrop_torch import AutoDrop
from torch_testkit import EAGER, data, mlp


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--pause-after", type=int, default=-1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = data()
    model = mlp(batchnorm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, **EAGER)
    start = 0
    checkpoint = args.dir / "checkpoint.pt"
    if args.resume:
        saved = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        start = saved["epoch"]
    for epoch in range(start + 1, args.epochs + 1):
        model.train()
        for n, i in enumerate(range(0, len(x), 32)):
            if epoch == args.pause_after + 1 and n == 4:
                print("PAUSED", flush=True)
                time.sleep(600)  # the test kills us here, mid-epoch
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
        sched.step()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "epoch": epoch}
        torch.save(state, args.dir / "checkpoint.tmp")
        os.replace(args.dir / "checkpoint.tmp", checkpoint)
    result = {"history": [d.to_dict() for d in sched.history], "lrs": sched.get_last_lr(),
              "model": model.state_dict()}
    torch.save(result, args.dir / "result.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
