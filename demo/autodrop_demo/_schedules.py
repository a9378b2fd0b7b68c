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
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim import lr_scheduler

from autodrop_demo._train import Schedule

__all__ = [
    "CALIBRATED_AUTODROP",
    "METHODS",
    "PAPER_AUTODROP",
    "AngleProbe",
    "AngleReading",
    "AutoDropSchedule",
    "TorchSchedule",
    "schedule_factory",
]

#: AutoDrop's settings recommended by the paper (Section 4) with rho = 0.2, as in its Table 2.
PAPER_AUTODROP: dict[str, Any] = {
    "threshold": 0.01,
    "max_threshold": 1.0,
    "min_lr": 1e-4,
    "drop_delay": 20,
    "drop_factor": 0.2,
}

#: The calibrated trigger with every other setting at the library's default
#: (``AutoDrop(optimizer, model=model, trigger="calibrated")``): the demo's and the
#: benchmark's ``autodrop-calibrated``. Nothing here is tuned to a task.
CALIBRATED_AUTODROP: dict[str, Any] = {"trigger": "calibrated"}

#: Method names understood by :func:`schedule_factory`, in report order.
METHODS = ("autodrop", "autodrop-calibrated", "step", "plateau", "cosine", "constant")


@dataclass
class AutoDropSchedule:
    """``autodrop_torch.AutoDrop`` stepped once per epoch; returns its decision."""

    scheduler: Any

    def after_epoch(self, val_loss: float) -> Any:
        self.scheduler.step()
        return self.scheduler.last_decision


class AngleReading(NamedTuple):
    """What :class:`AngleProbe` measured at one epoch (None: undefined)."""

    angle: float | None


class AngleProbe:
    """Measures the per-epoch angle of a run that AutoDrop does not steer (no lr change).

    It keeps its own float64 copies of the parameters and reuses the core's
    :func:`autodrop_core.step_angle`, so the constant-lr runs report the angle the
    paper's trigger would have watched. It never writes to a parameter or an lr.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self._snapshot = self._flat()
        self._step = torch.zeros_like(self._snapshot)
        self._prev_sq = 0.0

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().to(torch.float64).flatten() for p in self._params])

    def observe(self) -> AngleReading:
        from autodrop_core import step_angle

        now = self._flat()
        step = now - self._snapshot
        sq = float(step @ step)
        angle = step_angle(float(step @ self._step), sq, self._prev_sq)
        self._snapshot, self._step, self._prev_sq = now, step, sq
        return AngleReading(angle)


@dataclass
class TorchSchedule:
    """A stock torch scheduler; ``needs_metric`` passes the validation loss to ``step``."""

    scheduler: Any
    needs_metric: bool = False
    probe: AngleProbe | None = None

    def after_epoch(self, val_loss: float) -> AngleReading | None:
        reading = None if self.probe is None else self.probe.observe()
        if self.needs_metric:
            if math.isnan(val_loss):
                raise ValueError("ReduceLROnPlateau needs a validation split (val_fraction > 0)")
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        return reading


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
            ``"autodrop-calibrated"`` (:data:`CALIBRATED_AUTODROP`), ``"step"``
            (x0.2 at 50% and 75% of ``epochs``), ``"plateau"`` (``ReduceLROnPlateau``
            on the validation loss, factor 0.2, torch's other defaults), ``"cosine"``
            (``CosineAnnealingLR`` over ``epochs``) or ``"constant"`` (which measures the
            angle with an :class:`AngleProbe`).
        epochs: the run's budget, used by the step and cosine schedules.
        autodrop_settings: keyword settings of ``AutoDrop`` for ``"autodrop"``.
    """
    if method == "autodrop":
        settings = dict(PAPER_AUTODROP if autodrop_settings is None else autodrop_settings)
        return lambda opt, model: make_autodrop(opt, model, **settings)
    if method == "autodrop-calibrated":
        return lambda opt, model: make_autodrop(opt, model, **CALIBRATED_AUTODROP)
    if method == "step":
        milestones = [epochs // 2, (3 * epochs) // 4]
        return lambda opt, model: TorchSchedule(lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.2))
    if method == "plateau":
        return lambda opt, model: TorchSchedule(lr_scheduler.ReduceLROnPlateau(opt, factor=0.2), needs_metric=True)
    if method == "cosine":
        return lambda opt, model: TorchSchedule(lr_scheduler.CosineAnnealingLR(opt, T_max=epochs))
    if method == "constant":
        return lambda opt, model: TorchSchedule(None, probe=AngleProbe(opt))
    raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
