"""AutoDrop under Hugging Face ``transformers.Trainer``: a ``TrainerCallback`` that owns the lr.

Trainer steps its scheduler after every optimizer step and its default schedules
(``LambdaLR``, even for ``lr_scheduler_type="constant"``) write the lr back each time, so
AutoDrop can neither be passed as Trainer's scheduler nor stepped beside Trainer's own.
:class:`AutoDropTrainerCallback` therefore hands Trainer a scheduler that never writes
an lr (:attr:`~AutoDropTrainerCallback.lr_scheduler`) and carries AutoDrop's checkpoint
inside Trainer's own ``scheduler.pt``, steps AutoDrop once per epoch at ``on_epoch_end``
and logs the decision through ``Trainer.log``. Imported only through
``autodrop_torch.AutoDropTrainerCallback`` (lazily: ``import autodrop_torch`` never
imports transformers). It applies no AutoDrop rule; the scheduler does the work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from autodrop_torch._scheduler import AutoDrop

__all__ = ["AutoDropTrainerCallback"]

_FORMAT = "autodrop_torch.AutoDropTrainerCallback"
_VERSION = 1


def _wraps(optimizer: Any, target: Optimizer) -> bool:
    """``optimizer`` is ``target`` or wraps it (accelerate's ``AcceleratedOptimizer`` and similar)."""
    for _ in range(8):  # wrappers hold the wrapped optimizer as .optimizer
        if optimizer is target:
            return True
        optimizer = getattr(optimizer, "optimizer", None)
        if optimizer is None:
            return False
    return False


class _HoldLR(LRScheduler):
    """The scheduler Trainer steps after every optimizer step: it never writes an lr.

    Its ``state_dict`` is AutoDrop's checkpoint, so Trainer saves it to ``scheduler.pt``
    in every checkpoint folder and loads it back on ``resume_from_checkpoint``.
    """

    def __init__(self, optimizer: Optimizer, owner: AutoDropTrainerCallback) -> None:
        self._owner = owner
        super().__init__(optimizer)

    def _initial_step(self) -> None:
        self._step_count = 1
        self._last_lr = self.get_lr()

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:  # type: ignore[override]
        """The lrs in force (AutoDrop's), which Trainer logs as ``learning_rate``."""
        return self.get_lr()

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        self._step_count += 1

    def state_dict(self) -> dict[str, Any]:
        sched = self._owner.scheduler
        return {"format": _FORMAT, "version": _VERSION, "autodrop": None if sched is None else sched.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, Mapping) or state_dict.get("format") != _FORMAT:
            found = state_dict.get("format") if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(
                f"scheduler.pt of this checkpoint is not an AutoDropTrainerCallback one: format={found!r}, expected "
                f"{_FORMAT!r} (was the checkpoint written by a run with another lr scheduler?)"
            )
        if state_dict.get("version") != _VERSION:
            raise ValueError(f"AutoDropTrainerCallback checkpoint version={state_dict.get('version')!r}: expected 1")
        self._owner._restore(state_dict["autodrop"])


class AutoDropTrainerCallback(TrainerCallback):  # type: ignore[misc]
    """AutoDrop for ``transformers.Trainer``: one ``step()`` per epoch, and sole owner of the lr.

    Build it on the optimizer you give Trainer, pass its :attr:`lr_scheduler` as
    Trainer's scheduler, then :meth:`attach` it::

        autodrop = AutoDropTrainerCallback(optimizer, threshold=0.01)
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          optimizers=(optimizer, autodrop.lr_scheduler))
        autodrop.attach(trainer)
        trainer.train()

    AutoDrop itself is built at ``on_train_begin`` (after Trainer has placed the model and
    loaded a checkpoint it resumes from), with ``model=`` set to Trainer's model so that
    BatchNorm statistics are averaged with the parameters. Each epoch's decision is logged
    through ``trainer.log`` (so TensorBoard, W&B, ... and ``trainer.state.log_history``
    get ``autodrop/angle``, ``autodrop/lr_0``, ...).

    Args:
        optimizer: the torch optimizer passed to Trainer in ``optimizers=``.
        average_buffers: average the model's floating-point buffers with the parameters.
        **autodrop: keyword arguments of :class:`autodrop_torch.AutoDrop` (``threshold``,
            ``drop_delay``, ``min_lr``, ...), checked at once.

    Attributes:
        lr_scheduler: the scheduler to pass to Trainer (it never writes an lr).
        scheduler: the :class:`AutoDrop` of the current training run, None before one.
    """

    def __init__(self, optimizer: Optimizer, *, average_buffers: bool = True, **autodrop: Any) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if "model" in autodrop:
            raise TypeError("AutoDropTrainerCallback takes Trainer's model itself: drop model= (see average_buffers)")
        # Validate the settings now, on a throwaway scheduler over copies of the groups' lrs.
        probe = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": g["lr"]} for g in optimizer.param_groups])
        AutoDrop(probe, **autodrop)
        self._optimizer = optimizer
        self._settings = dict(autodrop)
        self._average_buffers = average_buffers
        self._trainer: Trainer | None = None
        self._pending_state: dict[str, Any] | None = None
        self.scheduler: AutoDrop | None = None
        self.lr_scheduler: LRScheduler = _HoldLR(optimizer, self)

    def attach(self, trainer: Trainer) -> AutoDropTrainerCallback:
        """Check that ``trainer`` uses this callback's optimizer and scheduler, and join its callbacks.

        Raises:
            ValueError: Trainer was built with another optimizer or lr scheduler.
        """
        self._check(trainer.optimizer, trainer.lr_scheduler)
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._trainer = trainer
        return self

    def _check(self, optimizer: Any, lr_scheduler: Any) -> None:
        if not _wraps(optimizer, self._optimizer):
            raise ValueError(
                "this Trainer trains with another optimizer than the one AutoDropTrainerCallback was built on: pass "
                "optimizers=(optimizer, autodrop.lr_scheduler) with the same optimizer"
            )
        if lr_scheduler is not self.lr_scheduler:
            raise ValueError(
                f"this Trainer has its own lr scheduler ({type(lr_scheduler).__name__}), which would write the lr "
                "back after every optimizer step and undo AutoDrop's drops: pass "
                "optimizers=(optimizer, autodrop.lr_scheduler) to Trainer (lr_scheduler_type and warmup settings "
                "are then ignored)"
            )

    def _restore(self, state: dict[str, Any] | None) -> None:
        """Keep a checkpoint Trainer loaded into :attr:`lr_scheduler` until AutoDrop is built."""
        self._pending_state = state

    # ------------------------------------------------------------------ events
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._trainer is None:
            raise RuntimeError(
                "AutoDropTrainerCallback was not attached to the Trainer: call autodrop.attach(trainer) before "
                "trainer.train() (it checks the optimizer and scheduler and logs through trainer.log)"
            )
        self._check(kwargs.get("optimizer"), kwargs.get("lr_scheduler"))
        model = kwargs.get("model") if self._average_buffers else None
        scheduler = AutoDrop(self._optimizer, model=model, **self._settings)
        if self._pending_state is not None:
            scheduler.load_state_dict(self._pending_state)
        elif state.global_step > 0:
            raise RuntimeError(
                f"Trainer resumes at global step {state.global_step} but its checkpoint holds no AutoDrop state "
                "(scheduler.pt was not written by AutoDropTrainerCallback): resuming would restart AutoDrop's "
                "observation from scratch"
            )
        self._pending_state = None
        self.scheduler = scheduler
        self._catch_up(state)

    def _catch_up(self, state: TrainerState) -> None:
        """On resume, close the epoch a checkpoint taken on its last step saw trained but not closed.

        A ``save_strategy="steps"`` checkpoint on an epoch's last optimizer step is written
        before ``on_epoch_end``; Trainer resumes with the next epoch, so without this the
        resumed AutoDrop would never observe that epoch.
        """
        assert self.scheduler is not None
        trained = state.epoch or 0.0
        whole = round(trained)
        observed = self.scheduler.epoch
        if abs(trained - whole) < 1e-9 and observed == whole - 1:
            self.scheduler.step()
            assert self._trainer is not None
            self._trainer.log(self.scheduler.last_decision_log())
        elif not observed <= trained < observed + 1:
            raise RuntimeError(
                f"the checkpoint's AutoDrop has observed {observed} epochs but Trainer resumes at epoch {trained:g}: "
                "the checkpoint's scheduler.pt and trainer_state.json come from different moments"
            )

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.scheduler is None or self._trainer is None:
            raise RuntimeError("AutoDropTrainerCallback.on_epoch_end before on_train_begin")
        self.scheduler.step()
        self._trainer.log(self.scheduler.last_decision_log())

    def last_decision_log(self) -> dict[str, float]:
        """The last decision as a flat dict of finite floats ({} before the first epoch)."""
        return {} if self.scheduler is None else self.scheduler.last_decision_log()
