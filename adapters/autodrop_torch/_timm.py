"""AutoDrop behind timm's scheduler calling convention (``step(epoch, metric)``, ``step_update``).

timm's training script calls ``lr_scheduler.step_update(num_updates=..., metric=...)``
after every optimizer step and ``lr_scheduler.step(epoch + 1, metric)`` after every
epoch, and ``step(start_epoch)`` once when it resumes; layer-wise lr decay stores a
factor ``lr_scale`` in each parameter group, which timm's own schedulers multiply into
the lr they write. :class:`TimmAutoDrop` accepts those calls, closes one AutoDrop epoch
per ``step(epoch)`` and scales each group's starting lr and floor by its ``lr_scale``.
It needs no timm import and applies no AutoDrop rule: :class:`AutoDrop` does the work.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer

from autodrop_core import DEFAULTS
from autodrop_torch._scheduler import AutoDrop

__all__ = ["TimmAutoDrop"]

_FORMAT = "autodrop_torch.TimmAutoDrop"


class TimmAutoDrop:
    """AutoDrop for timm's train loop: pass it where timm expects its ``lr_scheduler``.

    Each group's starting lr is its ``lr`` (or ``initial_lr``) times its ``lr_scale``
    (1 when absent), and its floor is ``min_lr`` times the same scale, so layer-wise
    decay keeps its ratios through every drop. The scaled lrs are written at once.

    Args:
        optimizer: the optimizer, e.g. from ``timm.optim.create_optimizer_v2`` (with
            ``layer_decay`` its groups carry ``lr_scale``).
        min_lr: floor before scaling, one value or one per group.
        **autodrop: the other keyword arguments of :class:`AutoDrop`.

    Attributes:
        scheduler: the wrapped :class:`AutoDrop` (history, last_decision, last_decision_log()).
        epoch: the timm epoch number that the last ``step(epoch)`` closed (0 before any).
    """

    def __init__(
        self, optimizer: Optimizer, *, min_lr: float | Sequence[float] = DEFAULTS["min_lr"], **autodrop: Any
    ) -> None:
        groups = optimizer.param_groups
        floors = list(min_lr) if isinstance(min_lr, Sequence) else [float(min_lr)] * len(groups)
        if len(floors) != len(groups):
            raise ValueError(f"min_lr has {len(floors)} values, the optimizer has {len(groups)} parameter groups")
        scales = [float(g.get("lr_scale", 1.0)) for g in groups]
        for g, scale in enumerate(scales):
            if not scale > 0:
                raise ValueError(f"param_groups[{g}]['lr_scale']={scale!r}: expected a number > 0")
        starts = [float(g.get("initial_lr", g["lr"])) * s for g, s in zip(groups, scales)]
        before = [(g["lr"], g.get("initial_lr")) for g in groups]
        for group, lr in zip(groups, starts):
            group["lr"] = lr
            if "initial_lr" in group:
                group["initial_lr"] = lr
        try:
            self.scheduler = AutoDrop(optimizer, min_lr=[f * s for f, s in zip(floors, scales)], **autodrop)
        except Exception:
            for group, (lr, initial) in zip(groups, before):  # bad settings leave the optimizer as it was
                group["lr"] = lr
                if initial is not None:
                    group["initial_lr"] = initial
            raise
        self.optimizer = optimizer
        self.epoch = 0
        self.num_updates = 0

    def step(self, epoch: int, metric: Any = None) -> None:
        """Close timm epoch ``epoch`` (timm passes ``epoch + 1`` after training epoch ``epoch``).

        ``metric`` is ignored: AutoDrop needs none. ``step(n)`` with ``n`` the epoch
        already closed is a no-op (timm calls ``step(start_epoch)`` when it resumes).

        Raises:
            ValueError: ``epoch`` skips or goes back; on a resume, the state was not loaded.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(f"TimmAutoDrop.step(epoch, metric=None): epoch must be an integer, got {epoch!r}")
        if epoch == self.epoch:
            return
        if epoch != self.epoch + 1:
            hint = (
                " timm resumes by calling step(start_epoch) on a fresh scheduler: AutoDrop cannot jump there, load "
                "the state_dict() you saved with the checkpoint into it first."
                if self.epoch == 0 else ""
            )
            raise ValueError(
                f"TimmAutoDrop.step(epoch={epoch}) after epoch {self.epoch}: AutoDrop closes one epoch per call, "
                f"expected epoch={self.epoch + 1} (or {self.epoch}, a no-op).{hint}"
            )
        self.scheduler.step()
        self.epoch = epoch

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        """Called by timm after every optimizer step: AutoDrop changes lrs only at epoch ends."""
        self.num_updates = int(num_updates)

    def last_decision_log(self) -> dict[str, float]:
        """The last decision as a flat dict of finite floats ({} before the first epoch)."""
        return self.scheduler.last_decision_log()

    def state_dict(self) -> dict[str, Any]:
        """The wrapped scheduler's checkpoint and the timm epoch counter."""
        return {"format": _FORMAT, "epoch": self.epoch, "num_updates": self.num_updates,
                "autodrop": self.scheduler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`'s output (then timm's ``step(start_epoch)`` is a no-op)."""
        if not isinstance(state_dict, dict) or state_dict.get("format") != _FORMAT:
            found = state_dict.get("format") if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"not a TimmAutoDrop checkpoint: format={found!r}, expected {_FORMAT!r}")
        self.scheduler.load_state_dict(state_dict["autodrop"])
        self.epoch = int(state_dict["epoch"])
        self.num_updates = int(state_dict["num_updates"])
