"""AutoDrop inside a real Lightning Trainer, as an epoch-interval scheduler (CPU)."""

from __future__ import annotations

import pytest
import torch
from autodrop_torch import AutoDrop
from torch_testkit import EAGER, data, mlp, train_epoch

lightning = pytest.importorskip("lightning")


class _Module(lightning.LightningModule):  # type: ignore[misc, name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> dict[str, object]:
        opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        self.autodrop = AutoDrop(opt, model=self, **EAGER)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.autodrop, "interval": "epoch"}}


@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")  # depends on the CPU count
@pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec.*is deprecated:FutureWarning")
def test_a_lightning_trainer_steps_it_once_per_epoch_exactly_like_a_plain_loop() -> None:
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=False)
    module = _Module()
    trainer = lightning.Trainer(
        max_epochs=12, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, loader)
    sched = module.autodrop
    assert sched.epoch == 12 and any(d.dropped for d in sched.history)

    twin = mlp()
    opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    twin_sched = AutoDrop(opt, **EAGER)
    for _ in range(12):
        train_epoch(twin, opt, x, y)
        twin_sched.step()
    assert sched.history == twin_sched.history
    assert trainer.optimizers[0].param_groups[0]["lr"] == twin_sched.get_last_lr()[0]
