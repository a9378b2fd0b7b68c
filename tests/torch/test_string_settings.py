"""``min_lr`` given as text is refused whole (it used to be read character by character)."""

from __future__ import annotations

import pytest
import torch
from autodrop_torch import AutoDrop

from autodrop_core import ConfigError


@pytest.mark.parametrize("min_lr", ["1e-4", b"1e-4"])
def test_text_min_lr_is_refused_whole(min_lr: object) -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ConfigError) as caught:
        AutoDrop(optimizer, min_lr=min_lr)  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"min_lr={min_lr!r} is invalid: expected a finite number >= 0")
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_per_group_and_shared_floors_still_work() -> None:
    model = torch.nn.Linear(2, 1)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.01}]
    assert AutoDrop(torch.optim.SGD(groups, lr=0.1), min_lr=[1e-3, 1e-5]).config.floors == (1e-3, 1e-5)
    assert AutoDrop(torch.optim.SGD(model.parameters(), lr=0.1), min_lr=1e-3).config.floors == (1e-3,)
