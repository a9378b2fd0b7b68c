"""AutoDrop after a warmup: inside SequentialLR, following a LinearLR warmup."""

from __future__ import annotations

import pytest
import torch
from autodrop_torch import AutoDrop
from torch_testkit import EAGER, data, mlp, train_epoch

WARMUP = 3


def test_inside_sequential_lr_autodrop_starts_watching_at_the_milestone_after_a_linear_warmup() -> None:
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=WARMUP)
    autodrop = AutoDrop(opt, **EAGER)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, autodrop], milestones=[WARMUP])
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(20):
        train_epoch(model, opt, x, y)
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:WARMUP + 1] == pytest.approx([0.005, 0.02, 0.035, 0.05])
    assert autodrop.epoch == 20 - WARMUP and any(d.dropped for d in autodrop.history)
    assert lrs[WARMUP + 1 :] == [d.lrs[0] for d in autodrop.history]

    # The same run with the warmup done by hand and AutoDrop built when it ends.
    twin = mlp()
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    for factor in (0.1, 0.4, 0.7):
        twin_opt.param_groups[0]["lr"] = 0.05 * factor
        train_epoch(twin, twin_opt, x, y)
    twin_opt.param_groups[0]["lr"] = 0.05
    twin_sched = AutoDrop(twin_opt, **EAGER)
    for _ in range(20 - WARMUP):
        train_epoch(twin, twin_opt, x, y)
        twin_sched.step()
    assert twin_sched.history == autodrop.history
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_sequential_lr_checkpoints_and_restores_the_autodrop_inside_it() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    autodrop = AutoDrop(opt, **EAGER)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=2), autodrop], milestones=[2]
    )
    x, y = data()
    for _ in range(6):
        train_epoch(model, opt, x, y)
        sched.step()
    saved = sched.state_dict()
    assert saved["_schedulers"][1]["core"]["state"]["epoch"] == 4
