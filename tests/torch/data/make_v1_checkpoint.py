"""How ``v1_checkpoint.pt`` was made: run once with autodrop at commit e06a85e (checkpoint version 1).

``git worktree add /tmp/v1 e06a85e && PYTHONPATH=/tmp/v1:/tmp/v1/adapters python
tests/torch/data/make_v1_checkpoint.py tests/torch/data/v1_checkpoint.pt``. It trains a
small model with AutoDrop for 5 epochs (a drop pending from epoch 3), saves model,
optimizer and scheduler state, trains 9 more epochs (an average is applied at the
first of them) and stores what those epochs gave (decisions, final parameters), so
that a newer version can load the version-1 checkpoint and must continue exactly as
the old code did. It also stores the model's state after each of those 9 epochs'
training, before the scheduler's step (``trained``): the test replays them instead of
training again, because training bits depend on the CPU (torch's kernels differ between
instruction sets: an AMD EPYC trained other bits than the Intel Xeon that made the first
file). Kept for the record; the tests only read the .pt file.
"""

from __future__ import annotations

import copy
import sys

import torch
from autodrop_torch import AutoDrop


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, AutoDrop]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 32), torch.nn.BatchNorm1d(32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, threshold=180.0, max_threshold=180.0, drop_delay=4)
    return model, opt, sched


def epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, t: int) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    x = torch.randn(64, 6, generator=gen)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(64, 1, generator=gen)
    for i in range(0, 64, 16):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[i : i + 16]), y[i : i + 16]).backward()
        opt.step()


def main(path: str) -> None:
    model, opt, sched = build()
    for t in range(5):
        epoch(model, opt, t)
        sched.step()
    saved = {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(opt.state_dict()),  # its tensors go on changing in place
        "scheduler": sched.state_dict(),
    }
    decisions, trained = [], []
    for t in range(5, 14):
        epoch(model, opt, t)
        trained.append({k: v.clone() for k, v in model.state_dict().items()})
        sched.step()
        decisions.append(sched.last_decision.to_dict())
    saved["expected_decisions"] = decisions
    saved["trained"] = trained
    saved["expected_model"] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(saved, path)


if __name__ == "__main__":
    main(sys.argv[1])
