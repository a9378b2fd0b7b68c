"""AutoDrop under a real Hugging Face ``transformers.Trainer`` (CPU), against a plain loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch_testkit import EAGER, data, mlp, train_epoch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from autodrop_torch import AutoDrop, AutoDropTrainerCallback, AutoDropUsageWarning  # noqa: E402

EPOCHS = 12
BATCH = 32
STEPS_PER_EPOCH = 256 // BATCH


class _Regressor(torch.nn.Module):
    """A plain nn.Module that returns Trainer's loss dict."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.net(x)
        result = {"logits": out}
        if labels is not None:
            result["loss"] = torch.nn.functional.mse_loss(out, labels)
        return result


class _Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self.x, self.y = data()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def _trainer(out: Path, epochs: int = EPOCHS, **args: Any) -> tuple[Any, AutoDropTrainerCallback, _Regressor]:
    model = _Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    autodrop = AutoDropTrainerCallback(opt, **EAGER)
    settings: dict[str, Any] = {
        "output_dir": str(out), "per_device_train_batch_size": BATCH, "num_train_epochs": epochs,
        "train_sampling_strategy": "sequential", "max_grad_norm": 0.0, "report_to": "none", "disable_tqdm": True,
        "use_cpu": True, "dataloader_num_workers": 0, "save_strategy": "no", "logging_strategy": "no",
    }
    settings.update(args)
    trainer = transformers.Trainer(
        model=model, args=transformers.TrainingArguments(**settings), train_dataset=_Rows(),
        optimizers=(opt, autodrop.lr_scheduler),
    )
    autodrop.attach(trainer)
    return trainer, autodrop, model


def _plain_loop(epochs: int = EPOCHS) -> tuple[torch.nn.Module, AutoDrop]:
    twin = mlp()
    opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    for _ in range(epochs):
        train_epoch(twin, opt, x, y, batch=BATCH)
        sched.step()
    return twin, sched


def test_trainer_steps_autodrop_once_per_epoch_like_a_plain_loop_and_logs_each_decision(tmp_path: Path) -> None:
    trainer, autodrop, model = _trainer(tmp_path)
    trainer.train()
    sched = autodrop.scheduler
    assert sched is not None and sched.epoch == EPOCHS and any(d.dropped for d in sched.history)
    twin, twin_sched = _plain_loop()
    assert sched.history == twin_sched.history
    assert trainer.optimizer.param_groups[0]["lr"] == twin_sched.get_last_lr()[0] < 0.05
    for p, q in zip(model.net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    logged = [entry for entry in trainer.state.log_history if "autodrop/epoch" in entry]
    assert [entry["autodrop/epoch"] for entry in logged] == [float(e) for e in range(1, EPOCHS + 1)]
    assert [entry["autodrop/lr_0"] for entry in logged] == [d.lrs[0] for d in twin_sched.history]
    assert all("autodrop/angle" in entry for entry in logged[1:]) and "autodrop/angle" not in logged[0]


def _first_epoch_inside_a_window(sched: AutoDrop) -> int:
    """The first epoch after which a drop was pending (the run is inside an averaging window)."""
    inside = [
        d.epoch for d in sched.history if d.average_weight is not None and not d.apply_average and d.epoch < EPOCHS - 1
    ]
    assert inside, "the run never averaged: make the test's settings more eager"
    return inside[0]


@pytest.mark.parametrize("where", ["epoch strategy", "last step of an epoch", "mid-epoch"])
def test_resuming_from_a_trainer_checkpoint_inside_an_averaging_window_is_exact(tmp_path: Path, where: str) -> None:
    _, probe = _plain_loop()
    epoch = _first_epoch_inside_a_window(probe)
    if where == "epoch strategy":  # saved after on_epoch_end: AutoDrop has closed the epoch
        step, save = epoch * STEPS_PER_EPOCH, {"save_strategy": "epoch"}
    elif where == "last step of an epoch":  # saved before on_epoch_end: the resumed callback closes it
        step = (epoch + 1) * STEPS_PER_EPOCH
        save = {"save_strategy": "steps", "save_steps": step}
    else:
        step = epoch * STEPS_PER_EPOCH + 3
        save = {"save_strategy": "steps", "save_steps": step}
    trainer, autodrop, model = _trainer(tmp_path / "full", **save)
    trainer.train()
    full = autodrop.scheduler
    assert full is not None and full.history == probe.history
    checkpoint = tmp_path / "full" / f"checkpoint-{step}"
    assert (checkpoint / "scheduler.pt").is_file()
    saved = torch.load(checkpoint / "scheduler.pt", weights_only=True)
    assert saved["autodrop"]["core"]["state"]["pending"] > 0 and saved["autodrop"]["average"] is not None

    resumed, resumed_cb, resumed_model = _trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    again = resumed_cb.scheduler
    assert again is not None and again.epoch == EPOCHS
    assert again.history == full.history
    for p, q in zip(resumed_model.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert resumed.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]


def test_a_trainer_with_its_own_scheduler_is_refused_before_training(tmp_path: Path) -> None:
    model = _Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    autodrop = AutoDropTrainerCallback(opt, **EAGER)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), lr_scheduler_type="constant", report_to="none", use_cpu=True, disable_tqdm=True
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Rows(), optimizers=(opt, None))
    trainer.create_scheduler(num_training_steps=10, optimizer=opt)
    with pytest.raises(ValueError, match=r"its own lr scheduler \(LambdaLR\).*optimizers=\(optimizer, autodrop"):
        autodrop.attach(trainer)


def test_a_callback_that_is_not_attached_stops_training_at_once(tmp_path: Path) -> None:
    model = _Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    autodrop = AutoDropTrainerCallback(opt, **EAGER)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True, num_train_epochs=1
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_Rows(), optimizers=(opt, autodrop.lr_scheduler), callbacks=[autodrop]
    )
    with pytest.raises(RuntimeError, match=r"not attached.*autodrop\.attach\(trainer\)"):
        trainer.train()


def test_autodrop_passed_as_trainers_own_scheduler_warns_that_it_is_stepped_per_batch(tmp_path: Path) -> None:
    model = _Regressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True, num_train_epochs=2,
        per_device_train_batch_size=BATCH, save_strategy="no",
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_Rows(), optimizers=(opt, AutoDrop(opt, **EAGER))
    )
    with pytest.warns(AutoDropUsageWarning, match="once per batch"):
        trainer.train()


def test_importing_autodrop_torch_does_not_import_transformers() -> None:
    import subprocess
    import sys

    code = "import sys, autodrop_torch; assert 'transformers' not in sys.modules and 'lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
