"""The scheduler's contract as a torch LRScheduler: construction, step(), lrs, history."""

from __future__ import annotations

import pytest
import torch
from autodrop_torch import AutoDrop, AutoDropUsageWarning
from torch_testkit import EAGER, data, mlp, train_epoch

from autodrop_core import ConfigError


def _sgd(lr: float = 0.05) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = mlp()
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def test_it_is_a_torch_lr_scheduler_whose_last_lr_is_valid_from_construction() -> None:
    _, opt = _sgd(0.05)
    sched = AutoDrop(opt)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert sched.get_last_lr() == [0.05]
    assert sched.last_decision is None and sched.history == [] and sched.epoch == 0


def test_defaults_are_the_spec_defaults() -> None:
    _, opt = _sgd()
    config = AutoDrop(opt).config
    assert (config.floors, config.drop_factor, config.threshold, config.max_threshold) == ((1e-4,), 0.1, 0.01, 1.0)
    assert (config.drop_delay, config.angle_window, config.reset_on_drop) == (20, 1, False)


@pytest.mark.parametrize(
    ("field", "value"),
    [("drop_factor", 1.5), ("threshold", 0.0), ("drop_delay", 0), ("angle_window", 2.5), ("min_lr", -1.0)],
)
def test_a_bad_setting_is_rejected_at_construction_naming_field_and_value(field: str, value: object) -> None:
    _, opt = _sgd()
    with pytest.raises(ConfigError, match=field) as info:
        AutoDrop(opt, **{field: value})
    assert repr(value) in str(info.value)


def test_min_lr_takes_one_value_per_parameter_group() -> None:
    model = mlp()
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}], lr=0.1)
    assert AutoDrop(opt, min_lr=[1e-3, 1e-5]).config.floors == (1e-3, 1e-5)
    with pytest.raises(ConfigError, match="min_lr"):
        AutoDrop(opt, min_lr=[1e-3])


def test_a_complex_parameter_is_refused_with_its_position() -> None:
    opt = torch.optim.SGD([torch.zeros(3, dtype=torch.complex64, requires_grad=True)], lr=0.1)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\].*complex64"):
        AutoDrop(opt)


def test_each_step_is_one_epoch_with_its_decision_in_history_and_lrs_in_the_optimizer() -> None:
    model, opt = _sgd()
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    for epoch in range(1, 16):
        train_epoch(model, opt, x, y)
        sched.step()
        decision = sched.last_decision
        assert decision is not None and decision.epoch == epoch == sched.epoch == sched.last_epoch
        assert sched.history[-1] is decision
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr() == list(decision.lrs)
    assert any(d.dropped for d in sched.history)
    assert sched.history[0].angle is None


def test_step_with_an_epoch_argument_is_refused() -> None:
    _, opt = _sgd()
    sched = AutoDrop(opt)
    with pytest.raises(ValueError, match="epoch=3"):
        sched.step(3)
    assert sched.epoch == 0


def test_a_second_step_in_the_same_epoch_observes_a_zero_step_whose_angle_is_undefined() -> None:
    model, opt = _sgd()
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    for _ in range(3):
        train_epoch(model, opt, x, y)
        sched.step()
    assert sched.last_decision is not None and sched.last_decision.angle is not None
    with pytest.warns(AutoDropUsageWarning, match=r"epoch 4: the optimizer has not stepped since the last"):
        sched.step()  # no training since the last call
    assert sched.last_decision.epoch == 4
    assert sched.last_decision.angle is None and sched.last_reductions == (0.0, 0.0)
    train_epoch(model, opt, x, y)
    sched.step()
    assert sched.last_decision.angle is None, "the step after a zero step has no previous direction"


def test_a_tensor_learning_rate_is_updated_in_place() -> None:
    model = mlp()
    lr = torch.tensor(0.05)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    while not (sched.history and sched.history[-1].dropped):
        train_epoch(model, opt, x, y)
        sched.step()
        assert sched.epoch < 30
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.005)


def test_float16_and_bfloat16_parameters_are_reduced_in_float64() -> None:
    for dtype in (torch.float16, torch.bfloat16):
        p = torch.nn.Parameter(torch.zeros(1000, dtype=dtype))
        opt = torch.optim.SGD([p], lr=0.1)
        sched = AutoDrop(opt)
        for _ in range(2):
            with torch.no_grad():
                p.add_(torch.full((1000,), 2.0**-9, dtype=dtype))
            opt.step()  # no gradients: changes nothing, counts as the epoch's training for AutoDrop
            sched.step()
        dot, sq_norm = sched.last_reductions or (None, None)
        assert sq_norm == 1000 * 2.0**-18 and dot == 1000 * 2.0**-18
        assert sched.last_decision is not None and sched.last_decision.angle == 0.0
