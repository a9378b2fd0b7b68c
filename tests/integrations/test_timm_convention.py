"""TimmAutoDrop driven exactly as timm's train.py drives its lr_scheduler, against a plain loop.

timm itself is not installed (it needs torchvision): the loop below makes timm's calls
in timm's order: ``step_update(num_updates=..., metric=...)`` after every optimizer
step, ``step(epoch + 1, metric)`` after every epoch, ``step(start_epoch)`` on resume,
with layer-wise decay's ``lr_scale`` in the parameter groups.
"""

from __future__ import annotations

import io

import pytest
import torch
from autodrop_torch import AutoDrop, TimmAutoDrop
from torch_testkit import EAGER, data, mlp, train_epoch

EPOCHS = 12
SCALES = (0.25, 1.0)  # layer decay: the first layer learns 4x slower


def _groups(model: torch.nn.Module, lrs: tuple[float, float] | None = None) -> list[dict[str, object]]:
    first, last = list(model[0].parameters()), list(model[2].parameters())
    if lrs is None:  # what timm's param_groups_layer_decay builds: the base lr plus a scale
        return [{"params": first, "lr_scale": SCALES[0]}, {"params": last, "lr_scale": SCALES[1]}]
    return [{"params": first, "lr": lrs[0]}, {"params": last, "lr": lrs[1]}]


def _timm_epochs(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: TimmAutoDrop, start: int,
                 end: int) -> None:
    x, y = data()
    num_updates = start * (len(x) // 32)
    for epoch in range(start, end):
        losses = []
        for i in range(0, len(x), 32):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[i : i + 32]), y[i : i + 32])
            loss.backward()
            opt.step()
            num_updates += 1
            losses.append(loss.item())
            sched.step_update(num_updates=num_updates, metric=sum(losses) / len(losses))
        sched.step(epoch + 1, sum(losses) / len(losses))  # timm passes the eval metric; AutoDrop ignores it


def _plain_loop() -> AutoDrop:
    twin = mlp()
    opt = torch.optim.SGD(_groups(twin, (0.05 * SCALES[0], 0.05 * SCALES[1])), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, **{**EAGER, "min_lr": [EAGER["min_lr"] * s for s in SCALES]})
    x, y = data()
    for _ in range(EPOCHS):
        train_epoch(twin, opt, x, y)
        sched.step()
    return sched


def test_timms_calling_convention_gives_the_plain_loops_decisions_and_keeps_the_layer_decay_ratio() -> None:
    model = mlp()
    opt = torch.optim.SGD(_groups(model), lr=0.05, momentum=0.9)
    sched = TimmAutoDrop(opt, **EAGER)
    assert [g["lr"] for g in opt.param_groups] == [0.05 * s for s in SCALES]
    _timm_epochs(model, opt, sched, 0, EPOCHS)
    twin = _plain_loop()
    assert sched.scheduler.history == twin.history and any(d.dropped for d in twin.history)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == list(twin.get_last_lr()) and lrs[0] / lrs[1] == pytest.approx(SCALES[0] / SCALES[1])
    assert sched.epoch == EPOCHS and sched.num_updates == EPOCHS * 8


def test_a_timm_resume_from_a_saved_state_inside_an_averaging_window_is_exact() -> None:
    model = mlp()
    opt = torch.optim.SGD(_groups(model), lr=0.05, momentum=0.9)
    sched = TimmAutoDrop(opt, **EAGER)
    inside = next(d.epoch for d in _plain_loop().history if d.average_weight is not None and not d.apply_average)
    _timm_epochs(model, opt, sched, 0, inside)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    _timm_epochs(model, opt, sched, inside, EPOCHS)

    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert saved["sched"]["autodrop"]["core"]["state"]["pending"] > 0
    again = mlp(seed=5)
    again.load_state_dict(saved["model"])
    again_opt = torch.optim.SGD(_groups(again), lr=0.05, momentum=0.9)
    again_sched = TimmAutoDrop(again_opt, **EAGER)
    again_opt.load_state_dict(saved["optimizer"])
    again_sched.load_state_dict(saved["sched"])
    again_sched.step(inside)  # what timm's train.py does on resume: a no-op here
    _timm_epochs(again, again_opt, again_sched, inside, EPOCHS)
    assert again_sched.scheduler.history == sched.scheduler.history
    for p, q in zip(again.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_resume_without_the_saved_state_and_a_skipped_epoch_are_refused() -> None:
    model = mlp()
    opt = torch.optim.SGD(_groups(model), lr=0.05)
    sched = TimmAutoDrop(opt, **EAGER)
    with pytest.raises(ValueError, match=r"step\(epoch=5\) after epoch 0.*load the state_dict\(\)"):
        sched.step(5)
    _timm_epochs(model, opt, sched, 0, 2)
    with pytest.raises(ValueError, match=r"step\(epoch=4\) after epoch 2: .*expected epoch=3"):
        sched.step(4)
    sched.step(2)  # the epoch already closed: a no-op
    assert sched.scheduler.epoch == 2
