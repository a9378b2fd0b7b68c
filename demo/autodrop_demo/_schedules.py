"""The lr schedules the benchmark compares, behind one small interface.

Each method is a torch scheduler wrapped so that the training loop can close an epoch
the same way for all of them (``after_epoch(val_loss)``). AutoDrop is the torch adapter
``autodrop_torch.AutoDrop``, used as any user would use it; this module must not
re-implement any of its rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from autodrop_demo._train import Schedule

__all__ = ["DEMO_AUTODROP", "METHODS", "PAPER_AUTODROP", "AutoDropSchedule", "TorchSchedule", "schedule_factory"]

#: AutoDrop's settings recommended by the paper (Section 4) with rho = 0.2, as in its Table 2.
PAPER_AUTODROP: dict[str, Any] = {
    "threshold": 0.01,
    "max_threshold": 1.0,
    "min_lr": 1e-4,
    "drop_delay": 20,
    "drop_factor": 0.2,
}

#: AutoDrop settings of the demo and of the benchmark's ``autodrop-demo`` method:
#: the paper's, with theta0 = 1 degree and a cap of 10 degrees (see docs/demo.md for why).
DEMO_AUTODROP: dict[str, Any] = {
    "threshold": 1.0,
    "max_threshold": 10.0,
    "min_lr": 1e-4,
    "drop_delay": 20,
    "drop_factor": 0.2,
    "angle_window": 1,
}

#: Method names understood by :func:`schedule_factory`, in report order.
METHODS = ("autodrop", "autodrop-demo", "step", "plateau", "cosine", "constant")


@dataclass
class AutoDropSchedule:
    """``autodrop_torch.AutoDrop`` stepped once per epoch; returns its decision."""

    scheduler: Any

    def after_epoch(self, val_loss: float) -> Any:
        self.scheduler.step()
        return self.scheduler.last_decision


@dataclass
class TorchSchedule:
    """A stock torch scheduler; ``needs_metric`` passes the validation loss to ``step``."""

    scheduler: Any
    needs_metric: bool = False

    def after_epoch(self, val_loss: float) -> None:
        if self.needs_metric:
            if math.isnan(val_loss):
                raise ValueError("ReduceLROnPlateau needs a validation split (val_fraction > 0)")
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        return None


def make_autodrop(optimizer: torch.optim.Optimizer, model: nn.Module, **settings: Any) -> AutoDropSchedule:
    """Wrap ``autodrop_torch.AutoDrop(optimizer, model=model, **settings)``."""
    from autodrop_torch import AutoDrop

    return AutoDropSchedule(AutoDrop(optimizer, model=model, **settings))


def schedule_factory(
    method: str, epochs: int, autodrop_settings: dict[str, Any] | None = None
) -> Callable[[torch.optim.Optimizer, nn.Module], Schedule]:
    """A function ``(optimizer, model) -> schedule`` for one of :data:`METHODS`.

    Args:
        method: ``"autodrop"`` (paper defaults unless ``autodrop_settings``),
            ``"autodrop-demo"`` (:data:`DEMO_AUTODROP`), ``"step"``
            (x0.2 at 50% and 75% of ``epochs``), ``"plateau"`` (``ReduceLROnPlateau``
            on the validation loss, factor 0.2, torch's other defaults), ``"cosine"``
            (``CosineAnnealingLR`` over ``epochs``) or ``"constant"``.
        epochs: the run's budget, used by the step and cosine schedules.
        autodrop_settings: keyword settings of ``AutoDrop`` for ``"autodrop"``.
    """
    if method == "autodrop":
        settings = dict(PAPER_AUTODROP if autodrop_settings is None else autodrop_settings)
        return lambda opt, model: make_autodrop(opt, model, **settings)
    if method == "autodrop-demo":
        return lambda opt, model: make_autodrop(opt, model, **DEMO_AUTODROP)
    if method == "step":
        milestones = [epochs // 2, (3 * epochs) // 4]
        return lambda opt, model: TorchSchedule(lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.2))
    if method == "plateau":
        return lambda opt, model: TorchSchedule(lr_scheduler.ReduceLROnPlateau(opt, factor=0.2), needs_metric=True)
    if method == "cosine":
        return lambda opt, model: TorchSchedule(lr_scheduler.CosineAnnealingLR(opt, T_max=epochs))
    if method == "constant":
        return lambda opt, model: TorchSchedule(None)
    raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
