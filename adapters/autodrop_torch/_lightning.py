"""AutoDrop as an optional Lightning ``Callback``: steps, logs with ``log_dict``, checkpoints.

The plain scheduler path (AutoDrop returned from ``configure_optimizers`` as an
epoch-interval scheduler) stays supported. This callback is the alternative when the
decisions should reach Lightning's loggers: it builds AutoDrop at ``on_train_start``
over the module's single optimizer, steps it in ``on_train_epoch_end`` (Lightning runs
callbacks before ``ModelCheckpoint``, so an epoch-end checkpoint already holds the
epoch's decision), logs it through ``pl_module.log_dict`` and keeps AutoDrop's state,
tensors included, in the Lightning checkpoint through ``state_dict``/``load_state_dict``.
Imported only through ``autodrop_torch.AutoDropLightningCallback`` (lazily). It applies
no AutoDrop rule; the scheduler does the work.
"""

from __future__ import annotations

from typing import Any

import lightning
import torch

from autodrop_torch._scheduler import AutoDrop

__all__ = ["AutoDropLightningCallback"]

_FORMAT = "autodrop_torch.AutoDropLightningCallback"


class AutoDropLightningCallback(lightning.Callback):  # type: ignore[misc]
    """AutoDrop for a Lightning module whose ``configure_optimizers`` returns one optimizer.

    Args:
        average_buffers: average the module's floating-point buffers (BatchNorm
            statistics) with the parameters.
        **autodrop: keyword arguments of :class:`autodrop_torch.AutoDrop` (``threshold``,
            ``drop_delay``, ``min_lr``, ...), checked at once.

    Attributes:
        scheduler: the :class:`AutoDrop` of the current fit, None before ``on_train_start``.
    """

    def __init__(self, *, average_buffers: bool = True, **autodrop: Any) -> None:
        if "model" in autodrop:
            raise TypeError("AutoDropLightningCallback takes the LightningModule itself: drop model=")
        AutoDrop(torch.optim.SGD([torch.zeros(1)], lr=1.0), **autodrop)  # validate the settings now
        self._settings = dict(autodrop)
        self._average_buffers = average_buffers
        self._pending_state: dict[str, Any] | None = None
        self.scheduler: AutoDrop | None = None

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, AutoDrop):
                raise RuntimeError(
                    "configure_optimizers returns an AutoDrop scheduler and AutoDropLightningCallback is in use: "
                    "AutoDrop would be stepped twice per epoch. Return only the optimizer (the callback builds "
                    "and steps AutoDrop), or drop the callback"
                )
        if len(trainer.optimizers) != 1:
            raise RuntimeError(
                f"AutoDropLightningCallback needs exactly one optimizer, configure_optimizers gave "
                f"{len(trainer.optimizers)}"
            )
        model = pl_module if self._average_buffers else None
        scheduler = AutoDrop(trainer.optimizers[0], model=model, **self._settings)
        if self._pending_state is not None:
            scheduler.load_state_dict(self._pending_state)
            self._pending_state = None
        self.scheduler = scheduler

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if self.scheduler is None:
            raise RuntimeError("AutoDropLightningCallback.on_train_epoch_end before on_train_start")
        self.scheduler.step()
        pl_module.log_dict(self.scheduler.last_decision_log(), on_step=False, on_epoch=True)

    def last_decision_log(self) -> dict[str, float]:
        """The last decision as a flat dict of finite floats ({} before the first epoch)."""
        return {} if self.scheduler is None else self.scheduler.last_decision_log()

    def state_dict(self) -> dict[str, Any]:
        """AutoDrop's checkpoint (plain values and tensors), saved in every Lightning checkpoint."""
        return {"format": _FORMAT, "autodrop": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint until ``on_train_start`` rebuilds AutoDrop over the restored optimizer."""
        if state_dict.get("format") != _FORMAT:
            raise ValueError(
                f"not an AutoDropLightningCallback checkpoint: format={state_dict.get('format')!r}, expected "
                f"{_FORMAT!r}"
            )
        self._pending_state = state_dict["autodrop"]
