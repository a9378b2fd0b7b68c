"""No silent failure: another lr writer, a step() with no training, per-batch stepping, a metric."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from autodrop_torch import AutoDrop, AutoDropUsageWarning, LRConflictError
from autodrop_torch._scheduler import PER_BATCH_PERIODS
from torch_testkit import EAGER, data, mlp, train_epoch

from autodrop_core import log_scalars


def _run(epochs: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, AutoDrop]:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    for _ in range(epochs):
        train_epoch(model, opt, x, y)
        sched.step()
    return model, opt, sched


def test_an_lr_written_by_hand_is_refused_naming_the_group_both_lrs_and_the_fix_and_nothing_changes() -> None:
    model, opt, sched = _run(3)
    before = sched.state_dict()
    opt.param_groups[0]["lr"] = 0.2
    train_epoch(model, opt, *data())
    with pytest.raises(LRConflictError, match=r"param_groups\[0\]\['lr'\] is 0\.2, but AutoDrop wrote 0\.05") as info:
        sched.step()
    assert (info.value.group, info.value.written, info.value.found) == (0, 0.05, 0.2)
    assert "SequentialLR" in str(info.value) and "AutoDropTrainerCallback" in str(info.value)
    after = sched.state_dict()
    assert after["core"] == before["core"] and after["history"] == before["history"] and sched.epoch == 3
    opt.param_groups[0]["lr"] = 0.05  # put it back: the run goes on
    sched.step()
    assert sched.epoch == 4


@pytest.mark.parametrize("order", ["before", "after"])
def test_a_step_lr_on_the_same_optimizer_is_refused_at_the_first_epoch_it_moves_the_lr(order: str) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    other = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if order == "before" else None
    sched = AutoDrop(opt, **EAGER)
    if other is None:
        other = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = data()
    with pytest.raises(LRConflictError, match=r"is 0\.025, but AutoDrop wrote 0\.05"):
        for _ in range(4):
            train_epoch(model, opt, x, y)
            other.step()
            sched.step()
    assert sched.epoch == 1


def test_chained_scheduler_with_another_scheduler_is_refused() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = AutoDrop(opt, **EAGER)
    chained = torch.optim.lr_scheduler.ChainedScheduler([torch.optim.lr_scheduler.ExponentialLR(opt, 0.9), sched])
    train_epoch(model, opt, *data())
    with pytest.raises(LRConflictError, match=r"param_groups\[0\]\['lr'\] is 0\.045"):
        chained.step()


def test_a_tensor_lr_is_compared_as_written_and_never_refused_by_its_own_rounding() -> None:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01))
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    for _ in range(12):
        train_epoch(model, opt, x, y)
        sched.step()
    assert any(d.dropped for d in sched.history)


def test_per_batch_stepping_warns_once_after_a_run_of_single_optimizer_steps() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):
            for i in range(0, len(x), 32):  # 8 batches an epoch, step() after each: the common mistake
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32]).backward()
                opt.step()
                sched.step()
                if epoch * 8 + i // 32 + 1 == PER_BATCH_PERIODS - 1:
                    assert caught == []
    assert [w.category for w in caught] == [AutoDropUsageWarning]
    assert "once per batch" in str(caught[0].message) and "once per epoch" in str(caught[0].message)


def test_once_per_epoch_stepping_of_a_real_loop_never_warns() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(15)


def test_a_metric_passed_to_step_is_refused_with_a_type_error_that_says_none_is_needed() -> None:
    _, _, sched = _run(2)
    for metric in (0.53, torch.tensor(0.53), math.nan):
        with pytest.raises(TypeError, match=r"takes no metric.*not a loss.*ReduceLROnPlateau"):
            sched.step(metric)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot jump"):
        sched.step(3)
    assert sched.epoch == 2


def test_the_last_decision_log_is_a_flat_dict_of_finite_floats_with_undefined_values_left_out() -> None:
    _, _, sched = _run(0)
    assert sched.last_decision_log() == {}
    model, opt, sched = _run(1)
    first = sched.last_decision_log()
    assert "autodrop/angle" not in first and "autodrop/delta" not in first  # undefined at epoch 1
    assert first["autodrop/epoch"] == 1.0 and first["autodrop/lr_0"] == 0.05 and first["autodrop/triggered"] == 0.0
    x, y = data()
    seen_pending = False
    for _ in range(15):
        train_epoch(model, opt, x, y)
        sched.step()
        log = sched.last_decision_log()
        assert all(isinstance(v, float) and math.isfinite(v) for v in log.values())
        assert log == log_scalars(sched.last_decision, pending=sched._controller.state.pending)
        assert log["autodrop/angle"] == sched.last_decision.angle
        seen_pending |= log["autodrop/pending"] > 0
    assert seen_pending and any(d.dropped for d in sched.history)
