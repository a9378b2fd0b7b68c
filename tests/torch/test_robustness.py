"""Layouts, replaced or removed parameters, meta tensors and refused checkpoints: clear errors, nothing half done."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from autodrop_torch import AutoDrop
from autodrop_torch._reduce import reduce_steps
from torch_testkit import EAGER, trained


def _quadratic_run(param: torch.Tensor, epochs: int = 12) -> tuple[list[Any], torch.Tensor]:
    """Gradient descent towards a fixed target: steps line up, so AutoDrop triggers, averages and drops."""
    target = torch.linspace(-1.0, 1.0, param.numel()).reshape(param.shape)
    opt = torch.optim.SGD([param], lr=0.05)
    sched = AutoDrop(opt, **EAGER)
    for epoch in range(epochs):
        for k in range(4):
            with torch.no_grad():
                param.grad = (param - target) + 0.01 * torch.cos(param * (epoch + k + 1))
            opt.step()
        sched.step()
    return sched.history, param.detach().contiguous().clone()


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced-view"])
def test_non_contiguous_parameters_train_exactly_like_contiguous_ones(layout: str, reduction_path: str) -> None:
    torch.manual_seed(0)
    if layout == "channels_last":
        base = torch.randn(2, 3, 4, 5)
        odd = base.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        base = torch.randn(7, 5).t().contiguous()
        odd = base.t().contiguous().t()
    else:
        base = torch.randn(6, 4)
        odd = torch.randn(6, 8)[:, ::2]
        odd.copy_(base)
    assert not odd.is_contiguous() and torch.equal(odd, base)
    history, final = _quadratic_run(torch.nn.Parameter(odd))
    twin_history, twin_final = _quadratic_run(torch.nn.Parameter(base.clone()))
    assert any(d.apply_average for d in history)  # the average and the drop were exercised too
    if reduction_path == "torch":  # the same ops in the same order: bit for bit
        assert history == twin_history
        assert torch.equal(final, twin_final)
    else:  # the contiguous twin takes the numba kernel, whose float64 sums are blocked differently
        assert [(d.triggered, d.apply_average, d.lrs) for d in history] == [
            (d.triggered, d.apply_average, d.lrs) for d in twin_history
        ]
        torch.testing.assert_close(final, twin_final, rtol=1e-6, atol=1e-7)


def test_reduction_of_a_channels_last_tensor_equals_the_contiguous_one() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)
    snap = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)
    base = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)
    odd = reduce_steps([x], [snap], [None], [base], torch.float64)
    plain = reduce_steps([x.contiguous()], [snap.contiguous()], [None], [base.contiguous()], torch.float64)
    assert odd[:2] == plain[:2]
    assert odd[2][0].is_contiguous() and torch.equal(odd[2][0], x)


def test_a_reduction_failure_names_the_parameter() -> None:
    x = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"step of parameter fc\.weight \(shape \(3,\)"):
        reduce_steps([x], [torch.ones(4)], [None], [torch.zeros(3)], torch.float64, names=["parameter fc.weight"])


@pytest.mark.filterwarnings("ignore::autodrop_torch.AutoDropUsageWarning")  # step() without training, on purpose
def test_a_parameter_that_changed_shape_is_refused_by_its_model_name_and_nothing_changes() -> None:
    model, _, sched = trained(2)
    first_name, first = next(iter(model.named_parameters()))
    before = sched.state_dict()
    old = first.data
    first.data = torch.zeros(old.shape[0] + 1, *old.shape[1:])
    with pytest.raises(ValueError, match=re.escape(f"parameter {first_name} changed shape from {tuple(old.shape)}")):
        sched.step()
    assert sched.state_dict()["core"] == before["core"]
    first.data = old
    sched.step()
    assert sched.epoch == 3


def test_names_for_errors_are_formed_only_when_an_error_needs_one() -> None:
    from autodrop_torch._scheduler import _Names

    asked: list[int] = []

    def name_of(i: int) -> str:
        asked.append(i)
        return f"parameter p{i}"

    names = _Names(name_of, 3)
    assert len(names) == 3 and asked == []
    assert names[1] == "parameter p1" and names[-1] == "parameter p2" and names[0:2] == ["parameter p0", "parameter p1"]
    with pytest.raises(IndexError, match="name index 3 out of range for 3 tensors"):
        names[3]


@pytest.mark.filterwarnings("ignore::autodrop_torch.AutoDropUsageWarning")  # step() without training, on purpose
def test_a_parameter_replaced_in_the_optimizer_is_refused_naming_group_and_index() -> None:
    _, opt, sched = trained(2)
    before = sched.state_dict()
    old = opt.param_groups[0]["params"][1]
    opt.param_groups[0]["params"][1] = torch.nn.Parameter(old.detach().clone())
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\] is no longer the tensor AutoDrop"):
        sched.step()
    assert sched.state_dict()["core"] == before["core"]
    opt.param_groups[0]["params"][1] = old  # putting it back resumes
    sched.step()
    assert sched.epoch == 3


@pytest.mark.filterwarnings("ignore::autodrop_torch.AutoDropUsageWarning")  # step() without training, on purpose
def test_removing_a_param_group_gives_a_clear_error() -> None:
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    sched = AutoDrop(opt)
    sched.step()
    opt.param_groups.pop()
    with pytest.raises(ValueError, match="removing a param group is not supported"):
        sched.step()
    assert sched.epoch == 1


def test_meta_device_parameters_give_a_clear_error() -> None:
    p = torch.nn.Parameter(torch.empty(3, device="meta"))
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] is on the meta device"):
        AutoDrop(torch.optim.SGD([p], lr=0.1))


@pytest.mark.filterwarnings("ignore::autodrop_torch.AutoDropUsageWarning")  # step() without training, on purpose
def test_a_meta_parameter_added_later_gives_a_clear_error() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    sched = AutoDrop(opt, min_lr=0.0)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.empty(2, device="meta"))]})
    with pytest.raises(ValueError, match="meta device"):
        sched.step()
    assert sched.epoch == 0


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("last_epoch", "twelve", "last_epoch='twelve'"),
        ("step_count", -1, "step_count=-1"),
        ("base_lrs", [0.1, 0.2], "base_lrs=[0.1, 0.2]"),
        ("last_reductions", [math.nan, 1.0], "last_reductions="),
        ("history", [{"epoch": 1}], "malformed"),
    ],
)
def test_a_refused_checkpoint_changes_nothing(key: str, value: object, needle: str) -> None:
    _, _, sched = trained(12)
    _, _, other = trained(5)
    checkpoint = other.state_dict()
    checkpoint[key] = value
    before = sched.state_dict()
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        sched.load_state_dict(checkpoint)
    after = sched.state_dict()
    assert after["core"] == before["core"] and after["history"] == before["history"]
    assert after["last_epoch"] == before["last_epoch"] == 12 and sched.epoch == 12
    for a, b in zip(after["snapshots"], before["snapshots"], strict=True):
        assert torch.equal(a, b)


def test_a_nan_snapshot_in_a_checkpoint_is_refused_naming_the_parameter() -> None:
    _, _, sched = trained(3)
    checkpoint = sched.state_dict()
    checkpoint["snapshots"][2].view(-1)[0] = math.nan
    with pytest.raises(ValueError, match=r"snapshots\[2\] \(of parameter 2\.weight\) holds NaN"):
        sched.load_state_dict(checkpoint)


def test_the_torch_path_gives_the_same_steps_and_average_in_any_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    from autodrop_torch import _reduce

    gen = torch.Generator().manual_seed(3)
    x, snap, base = (torch.randn(5, 13, generator=gen) for _ in range(3))
    average = torch.randn(5, 13, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(_reduce, "USE_FUSED_CPU", False)
    results = []
    for chunk in (7, 64, 1 << 20):
        monkeypatch.setattr(_reduce, "CHUNK", {"cpu": chunk})
        results.append(reduce_steps([x], [snap], [None], [base], torch.float64, absorb=([average], 0.4)))
    expected_dot = float(((x.double() - snap.double()) * (snap.double() - base.double())).sum())
    for dot, sq, copies, averages in results:
        assert dot == pytest.approx(expected_dot, rel=1e-13)
        assert sq == pytest.approx(float(((x.double() - snap.double()) ** 2).sum()), rel=1e-13)
        assert torch.equal(copies[0], x)
        assert torch.equal(averages[0], average + (x.double() - average) * 0.4)  # elementwise: the same bits
