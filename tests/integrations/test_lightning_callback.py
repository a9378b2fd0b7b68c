"""AutoDropLightningCallback in a real Lightning Trainer (CPU): decisions, logging, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch_testkit import EAGER, data, mlp, train_epoch

lightning = pytest.importorskip("lightning")

from autodrop_torch import AutoDrop, AutoDropLightningCallback  # noqa: E402

EPOCHS = 12

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),  # depends on the CPU count
    pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec.*is deprecated:FutureWarning"),
]


class _Module(lightning.LightningModule):  # type: ignore[misc, name-defined]
    def __init__(self, scheduler: bool = False) -> None:
        super().__init__()
        self.net = mlp()
        self.with_scheduler = scheduler

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        if self.with_scheduler:
            self.autodrop = AutoDrop(opt, model=self, **EAGER)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": self.autodrop, "interval": "epoch"}}
        return opt


def _loader() -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    x, y = data()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=False)


def _trainer(epochs: int, callbacks: list[Any], root: Path | None = None) -> Any:
    return lightning.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, enable_checkpointing=root is not None,
        default_root_dir=None if root is None else str(root),
    )


def _plain_loop(epochs: int = EPOCHS) -> tuple[torch.nn.Module, AutoDrop]:
    twin = mlp()
    opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    sched = AutoDrop(opt, **EAGER)
    x, y = data()
    for _ in range(epochs):
        train_epoch(twin, opt, x, y)
        sched.step()
    return twin, sched


def test_the_callback_steps_once_per_epoch_like_a_plain_loop_and_logs_with_log_dict() -> None:
    callback = AutoDropLightningCallback(**EAGER)
    module = _Module()
    trainer = _trainer(EPOCHS, [callback])
    trainer.fit(module, _loader())
    twin, twin_sched = _plain_loop()
    assert callback.scheduler is not None and callback.scheduler.history == twin_sched.history
    assert any(d.dropped for d in twin_sched.history)
    for p, q in zip(module.net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("autodrop/")}
    assert logged == pytest.approx(callback.last_decision_log(), rel=1e-6)  # Lightning keeps them as float32
    assert logged["autodrop/epoch"] == EPOCHS and "autodrop/angle" in logged


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")  # a real resume
@pytest.mark.parametrize("path", ["callback", "scheduler"])
def test_resuming_from_a_lightning_checkpoint_inside_an_averaging_window_is_exact(tmp_path: Path, path: str) -> None:
    _, probe = _plain_loop()
    inside = [d.epoch for d in probe.history if d.average_weight is not None and not d.apply_average]
    assert inside
    epoch = inside[0]

    def run(root: Path | None, ckpt: str | None = None) -> tuple[_Module, AutoDrop]:
        module = _Module(scheduler=path == "scheduler")
        callbacks: list[Any] = []
        if root is not None:
            callbacks.append(lightning.pytorch.callbacks.ModelCheckpoint(
                dirpath=str(root), every_n_epochs=1, save_top_k=-1, filename="{epoch}"
            ))
        callback = None
        if path == "callback":
            callback = AutoDropLightningCallback(**EAGER)
            callbacks.insert(0, callback)
        _trainer(EPOCHS, callbacks, root).fit(module, _loader(), ckpt_path=ckpt)
        sched = callback.scheduler if callback is not None else module.autodrop
        assert sched is not None
        return module, sched

    full_module, full = run(tmp_path / "full")
    assert full.history == probe.history
    checkpoint = tmp_path / "full" / f"epoch={epoch - 1}.ckpt"  # Lightning counts epochs from 0
    saved = torch.load(checkpoint, weights_only=False)
    states = (
        [v["autodrop"] for k, v in saved["callbacks"].items() if "AutoDropLightningCallback" in k]
        if path == "callback" else saved["lr_schedulers"]
    )
    assert states[0]["core"]["state"]["pending"] > 0, "the checkpoint is not inside an averaging window"
    module, again = run(tmp_path / "full", str(checkpoint))  # same dirpath, as a real resume
    assert again.history == full.history
    for p, q in zip(module.parameters(), full_module.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_the_callback_beside_an_autodrop_returned_by_configure_optimizers_is_refused() -> None:
    trainer = _trainer(2, [AutoDropLightningCallback(**EAGER)])
    with pytest.raises(RuntimeError, match="stepped twice per epoch"):
        trainer.fit(_Module(scheduler=True), _loader())
