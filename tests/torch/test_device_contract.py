"""Where the work happens: one host transfer per epoch, snapshots optionally on the host."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from autodrop_torch import AutoDrop, _reduce
from torch.overrides import TorchFunctionMode
from torch_testkit import EAGER, data, mlp, train_epoch

_TO_HOST = {"tolist", "item", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "__array__"}


class _HostCalls(TorchFunctionMode):
    """Records every tensor operation that copies a value to Python or to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        if name in _TO_HOST:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_one_epoch_copies_exactly_one_value_to_the_host_whatever_the_number_of_tensors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_reduce, "USE_FUSED_CPU", False)  # the device path, as on a GPU
    model = mlp(batchnorm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, model=model, **EAGER)
    x, y = data()
    counts = []
    for _ in range(12):
        train_epoch(model, opt, x, y)
        with _HostCalls() as mode:
            sched.step()
        counts.append(mode.calls)
    assert any(d.apply_average for d in sched.history), "averaging epochs must be covered too"
    assert counts == [["tolist"]] * 12


def test_snapshots_kept_on_the_host_give_the_same_run() -> None:
    x, y = data()
    runs = []
    for device in (None, "cpu"):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = AutoDrop(opt, snapshot_device=device, **EAGER)
        for _ in range(12):
            train_epoch(model, opt, x, y)
            sched.step()
        assert all(t.device.type == "cpu" for t in sched.state_dict()["snapshots"])
        runs.append((sched.history, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for p, q in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
