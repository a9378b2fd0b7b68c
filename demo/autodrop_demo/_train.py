"""One training run: SGD with momentum over a :class:`~autodrop_demo.Split`, any lr schedule.

The loop is shared by the demo and the benchmark so that every method sees exactly the
same data order, model initialisation and evaluation. A schedule is anything with
``after_epoch(val_loss) -> Decision | None`` (see ``_schedules.py``). The run is
seeded from ``seed`` alone and must leave every global random state as it found it:
the model is built inside ``torch.random.fork_rng`` and batches are drawn from a private
``torch.Generator``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from autodrop_demo._data import Split

__all__ = ["EpochRecord", "RunResult", "Schedule", "TrainSettings", "evaluate", "train"]


class Schedule(Protocol):
    """What the loop needs from an lr schedule."""

    def after_epoch(self, val_loss: float) -> Any:
        """Close an epoch (``val_loss`` is the validation loss, NaN without validation data).

        Returns the AutoDrop decision of the epoch, or None for schedules without one.
        """
        ...


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of a run other than the schedule.

    Attributes:
        epochs: passes over the training data, >= 1.
        lr: initial learning rate, > 0.
        batch_size: examples per SGD step, >= 1.
        momentum: SGD momentum.
        weight_decay: L2 penalty of SGD.
        seed: seeds the model initialisation and the batch order.
    """

    epochs: int = 100
    lr: float = 0.05
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")


@dataclass
class EpochRecord:
    """What one epoch measured; ``lr`` is the rate used during the epoch."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    test_loss: float
    test_error: float
    decision: Any = None


@dataclass
class RunResult:
    """All epochs of a run and its wall time in seconds."""

    records: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and error rate of ``model`` on ``(x, y)``; ``(nan, nan)`` when empty."""
    if len(y) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    error = (logits.argmax(dim=1) != y).float().mean().item()
    model.train(was_training)
    return loss, error


def train(
    build_model: Callable[[], nn.Module],
    split: Split,
    make_schedule: Callable[[torch.optim.Optimizer, nn.Module], Schedule],
    settings: TrainSettings,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> RunResult:
    """Train a fresh model with SGD and the given schedule, evaluating after every epoch.

    Order within an epoch: the SGD steps; the validation loss; ``schedule.after_epoch``
    (which may move the parameters, as AutoDrop does when it applies its average); then
    the test loss and error of the parameters the next epoch starts from.

    Args:
        build_model: makes the untrained network (called once, under the run's seed).
        split: the data; moved to ``device``.
        make_schedule: builds the schedule around the optimizer and the model.
        settings: epochs, lr, batch size, SGD settings and seed.
        device: where to train.
        on_epoch: called with each epoch's record as soon as it is complete.

    Raises:
        FloatingPointError: the training loss became NaN or infinite (the lr is too high).
    """
    device = torch.device(device)
    started = time.perf_counter()
    data = split.to(device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    result = RunResult()
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(settings.seed)
        model = build_model().to(device)
    order = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    schedule = make_schedule(optimizer, model)
    n = len(data.y_train)
    for epoch in range(1, settings.epochs + 1):
        lr = float(optimizer.param_groups[0]["lr"])
        model.train()
        perm = torch.randperm(n, generator=order).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, settings.batch_size):
            idx = perm[start : start + settings.batch_size]
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        train_loss = total.item() / n
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss is {train_loss} at epoch {epoch} with lr {lr}: the learning rate is too high"
            )
        val_loss, _ = evaluate(model, data.x_val, data.y_val)
        decision = schedule.after_epoch(val_loss)
        test_loss, test_error = evaluate(model, data.x_test, data.y_test)
        record = EpochRecord(epoch, lr, train_loss, val_loss, test_loss, test_error, decision)
        result.records.append(record)
        if on_epoch is not None:
            on_epoch(record)
    result.seconds = time.perf_counter() - started
    return result
