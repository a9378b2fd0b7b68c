"""NaN or infinity in the parameters: a clear error, and nothing lost."""

from __future__ import annotations

import math

import pytest
import torch
from autodrop_torch import AutoDrop
from torch_testkit import data, train_epoch, trained

from autodrop_core import InvalidReductionError

# These tests write NaN into parameters by hand and step with no optimizer step in between.
pytestmark = pytest.mark.filterwarnings("ignore::autodrop_torch.AutoDropUsageWarning")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_parameter_raises_naming_the_epoch_and_the_parameter(bad: float, reduction_path: str) -> None:
    model, _, sched = trained(3)
    with torch.no_grad():
        model[2].weight[0, 3] = bad
    with pytest.raises(InvalidReductionError, match=r"epoch 4.*parameter 2\.weight holds NaN or infinity") as info:
        sched.step()
    assert info.value.epoch == 4


def test_without_a_model_the_parameter_is_named_by_its_optimizer_position() -> None:
    p = torch.nn.Parameter(torch.ones(4))
    q = torch.nn.Parameter(torch.ones(3))
    sched = AutoDrop(torch.optim.SGD([{"params": [p]}, {"params": [q]}], lr=0.1))
    with torch.no_grad():
        q[1] = math.nan
    with pytest.raises(InvalidReductionError, match=r"epoch 1.*param_groups\[1\]\['params'\]\[0\]"):
        sched.step()


def test_the_failed_epoch_changes_nothing_so_the_run_continues_as_if_it_never_happened() -> None:
    x, y = data()
    model, opt, sched = trained(5)
    twin, twin_opt, twin_sched = trained(5)
    before = sched.state_dict()
    kept = model[2].weight[0, 3].item()
    with torch.no_grad():
        model[2].weight[0, 3] = math.nan
    with pytest.raises(InvalidReductionError):
        sched.step()
    after = sched.state_dict()
    assert after["core"] == before["core"] and after["history"] == before["history"]
    for key in ("snapshots", "step_heads", "step_bases"):
        for a, b in zip(after[key], before[key], strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sched.get_last_lr() == twin_sched.get_last_lr() and sched.last_epoch == 5
    with torch.no_grad():
        model[2].weight[0, 3] = kept
    for _ in range(10):
        for m, o, s in ((model, opt, sched), (twin, twin_opt, twin_sched)):
            train_epoch(m, o, x, y)
            s.step()
        assert sched.last_decision == twin_sched.last_decision
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
