"""Which parameters the angle covers: frozen, unfrozen, and groups added mid-training.

Policy (docs/torch.md): a parameter is watched from the first step() at whose start it
requires grad; it joins the reductions from the epoch after (its snapshot is taken at
that step). A watched parameter stays watched when frozen: its step is zero, which
adds nothing to either reduction. A param group added with ``add_param_group`` joins
the core at the next step() with its own lr and the shared floor (or its own
``"min_lr"`` key), and is dropped with the others from then on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from autodrop_torch import AutoDrop
from torch_testkit import data, mlp, train_epoch

QUIET = {"threshold": 1e-12, "max_threshold": 1e-12}  # never triggers: x̂(t) is x(t)


class Expected:
    """Float64 reductions over a chosen set of parameters, computed independently."""

    def __init__(self) -> None:
        self.snap: dict[int, np.ndarray] = {}
        self.prev: dict[int, np.ndarray] = {}

    def watch(self, p: torch.Tensor) -> None:
        self.snap[id(p)] = p.detach().numpy().astype(np.float64)
        self.prev[id(p)] = np.zeros(p.shape)

    def epoch(self, params: list[torch.Tensor]) -> tuple[float, float]:
        dot = sq = 0.0
        for p in params:
            if id(p) not in self.snap:
                continue
            step = p.detach().numpy().astype(np.float64) - self.snap[id(p)]
            dot += float(np.dot(step.ravel(), self.prev[id(p)].ravel()))
            sq += float(np.dot(step.ravel(), step.ravel()))
            self.snap[id(p)] = p.detach().numpy().astype(np.float64)
            self.prev[id(p)] = step
        return dot, sq


def _check(sched: AutoDrop, expected: Expected, params: list[torch.Tensor]) -> None:
    dot, sq = expected.epoch(params)
    assert sched.last_reductions is not None
    assert sched.last_reductions == pytest.approx((dot, sq), rel=1e-12, abs=1e-300)


def test_a_parameter_frozen_at_construction_joins_the_epoch_after_the_step_that_finds_it_unfrozen() -> None:
    model = mlp()
    x, y = data()
    first = model[0].weight
    first.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = AutoDrop(opt, **QUIET)
    expected = Expected()
    params = list(model.parameters())
    for p in params[1:]:
        expected.watch(p)
    train_epoch(model, opt, x, y)
    sched.step()
    _check(sched, expected, params)
    first.requires_grad_(True)
    train_epoch(model, opt, x, y)  # first moves, but has no snapshot yet
    sched.step()
    _check(sched, expected, params)
    expected.watch(first)
    for _ in range(3):
        train_epoch(model, opt, x, y)
        sched.step()
        _check(sched, expected, params)


def test_a_watched_parameter_frozen_later_stays_watched_with_a_zero_step() -> None:
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = AutoDrop(opt, **QUIET)
    expected = Expected()
    params = list(model.parameters())
    for p in params:
        expected.watch(p)
    for epoch in range(5):
        if epoch == 2:
            model[0].weight.requires_grad_(False)
        train_epoch(model, opt, x, y)
        sched.step()
        _check(sched, expected, params)
    assert len(sched.state_dict()["watched"]) == len(params)


def test_an_added_param_group_keeps_its_own_lr_gets_the_floor_and_joins_the_angle_an_epoch_later() -> None:
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model[0].parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, threshold=5.0, max_threshold=60.0, drop_delay=2, min_lr=0.004)
    expected = Expected()
    params = list(model.parameters())
    for p in model[0].parameters():
        expected.watch(p)
    train_epoch(model, opt, x, y)
    sched.step()
    _check(sched, expected, params)
    opt.add_param_group({"params": list(model[2].parameters()), "lr": 0.02})
    train_epoch(model, opt, x, y)
    sched.step()
    _check(sched, expected, params)
    assert sched.config.lrs == (0.05, 0.02) and sched.config.floors == (0.004, 0.004)
    assert sched.get_last_lr() == [0.05, 0.02]
    for p in model[2].parameters():
        expected.watch(p)
    while not sched.history[-1].dropped:
        train_epoch(model, opt, x, y)
        sched.step()
        if not sched.history[-1].apply_average:
            _check(sched, expected, params)
        else:
            break
        assert sched.epoch < 40
    assert sched.get_last_lr() == pytest.approx([0.005, 0.004])


@pytest.mark.filterwarnings("ignore::autodrop_torch.AutoDropUsageWarning")  # steps with no training on purpose
def test_a_group_added_under_per_group_floors_needs_its_own_min_lr_key() -> None:
    model = mlp()
    opt = torch.optim.SGD(model[0].parameters(), lr=0.05)
    sched = AutoDrop(opt, min_lr=[1e-3])
    opt.add_param_group({"params": list(model[2].parameters()), "lr": 0.02})
    with pytest.raises(ValueError, match=r"param_groups\[1\].*'min_lr' key"):
        sched.step()
    assert sched.epoch == 0 and sched.config.num_groups == 1
    opt.param_groups[1]["min_lr"] = 1e-4
    sched.step()
    assert sched.config.floors == (1e-3, 1e-4) and sched.epoch == 1
