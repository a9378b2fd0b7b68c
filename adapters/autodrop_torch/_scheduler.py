"""AutoDrop as a ``torch.optim.lr_scheduler.LRScheduler``: one ``step()`` per epoch.

The scheduler watches the optimizer's trainable parameters, reduces each epoch's step
on the device (see ``_reduce.py``), asks the core for a decision with preview/commit,
then averages, snapshots and writes the learning rates. Every rule lives in
``autodrop_core``; this module only moves tensors and must never decide anything
itself. Checkpointing lives in ``_checkpoint.py``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from autodrop_core import (
    DEFAULT_HISTORY_SIZE,
    DEFAULTS,
    AutoDropConfig,
    Controller,
    Decision,
    DecisionHistory,
    InvalidReductionError,
    check_lrs_unchanged,
    log_scalars,
)
from autodrop_core._history import check_history_size
from autodrop_torch import _checkpoint
from autodrop_torch._buffers import TrackedTensors
from autodrop_torch._reduce import accumulation_dtype, local_shape, local_tensor, reduce_steps

__all__ = ["PER_BATCH_PERIODS", "AutoDrop", "AutoDropUsageWarning"]

Key = tuple[int, int]

#: After this many consecutive ``step()`` calls with exactly one optimizer step each, AutoDrop
#: warns that it looks stepped once per batch instead of once per epoch.
PER_BATCH_PERIODS = 10

_LR_FIX = (
    "Make AutoDrop the only thing that sets this optimizer's lrs: remove the other scheduler (or the "
    "code writing param_groups[...]['lr']); for a warmup, compose it as "
    "SequentialLR(optimizer, [warmup, autodrop], milestones=[warmup_epochs]); under Hugging Face Trainer "
    "use autodrop_torch.AutoDropTrainerCallback, whose lr_scheduler keeps Trainer from writing the lr."
)


class AutoDropUsageWarning(UserWarning):
    """``step()`` is called in a way that is legal but almost always a mistake.

    Raised as a warning (not an error) because full-batch training and tests that set
    parameters by hand do it on purpose; silence it with
    ``warnings.filterwarnings("ignore", category=AutoDropUsageWarning)``.
    """


class _OptimizerSteps:
    """Counts the optimizer's steps through a step post-hook (one object per scheduler)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self.count += 1


def _per_group(min_lr: object) -> bool:
    """``min_lr`` given as one floor per group (a string is not: the core refuses it whole)."""
    return isinstance(min_lr, Sequence) and not isinstance(min_lr, (str, bytes))


def _set_group_lr(group: dict[str, Any], lr: float) -> None:
    if isinstance(group["lr"], Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


class _Names(Sequence[str]):
    """Each watched tensor's name for an error message, formed only when one is asked for.

    With a model, naming a parameter walks ``model.named_parameters()``: naming them all
    at every epoch end would cost a walk per parameter (milliseconds for a ResNet).
    """

    def __init__(self, name_of: Callable[[int], str], count: int) -> None:
        self._name_of = name_of
        self._count = count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._name_of(i) for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"name index {index} out of range for {self._count} tensors")
        return self._name_of(index % self._count)

    def __len__(self) -> int:
        return self._count


class AutoDrop(LRScheduler):
    """Drops every group's learning rate when the direction of training saturates.

    Call :meth:`step` once at the end of every epoch, after the optimizer's steps. The
    scheduler measures the angle between the last two epochs' parameter displacements;
    when its change stays below ``threshold`` it averages the next ``drop_delay``
    parameter vectors, writes the average into the parameters in place and multiplies
    every lr by ``drop_factor`` (AutoDrop, Teng, Wang, Choromanska, UAI 2024).

    Args:
        optimizer: the wrapped optimizer; each group's starting lr is its
            ``initial_lr`` if an earlier scheduler set one (as for any torch
            scheduler), else its ``lr``.
        model: optional module whose floating-point buffers (BatchNorm running
            statistics) are averaged with the parameters; integer buffers keep their
            last value. Also used to name a parameter in error messages.
        min_lr: floor of every lr, one value or one per parameter group.
        drop_factor: rho, 0 < rho < 1.
        threshold: theta0 in degrees, > 0.
        max_threshold: cap on theta in degrees, >= threshold.
        drop_delay: n_d, vectors averaged before a drop (trigger epoch included), >= 1.
        angle_window: w, the trigger compares means of the last w angles, >= 1.
        reset_on_drop: a drop clears the angle history.
        trigger: ``"paper"`` (default) or ``"calibrated"``: a flatness test of the angles
            since the last drop that sets its own threshold from their noise (docs/spec.md);
            ``AutoDrop(optimizer, model=model, trigger="calibrated")`` needs nothing else.
        snapshot_device: where x̂(t-1), x̂(t-2) and the average live; None (default)
            keeps them next to each parameter, ``"cpu"`` saves accelerator memory at the
            cost of copying the parameters to the host once per epoch.
        history_size: how many of the latest decisions :attr:`history` (and the
            checkpoint) keeps, default 100; None keeps every one.

    Raises:
        autodrop_core.ConfigError: a setting is out of its valid range.
        TypeError: the optimizer holds a complex or non-floating-point parameter.

    Attributes:
        history: the core's :class:`~autodrop_core.Decision` of the last ``history_size``
            observed epochs, oldest first (a :class:`~autodrop_core.DecisionHistory`).
        last_reductions: ``(dot, sq_norm)`` of the last observed epoch, or None.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        model: torch.nn.Module | None = None,
        min_lr: float | Sequence[float] = DEFAULTS["min_lr"],
        drop_factor: float = DEFAULTS["drop_factor"],
        threshold: float = DEFAULTS["threshold"],
        max_threshold: float = DEFAULTS["max_threshold"],
        drop_delay: int = DEFAULTS["drop_delay"],
        angle_window: int = DEFAULTS["angle_window"],
        reset_on_drop: bool = DEFAULTS["reset_on_drop"],
        trigger: Literal["paper", "calibrated"] = DEFAULTS["trigger"],
        snapshot_device: str | torch.device | None = None,
        history_size: int | None = DEFAULT_HISTORY_SIZE,
    ) -> None:
        # As every torch scheduler: a group's starting lr is its "initial_lr" when an earlier
        # scheduler (a warmup) has set one, else its current "lr".
        lrs = tuple(float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups)
        self._config = AutoDropConfig(
            lrs=lrs,
            min_lr=tuple(min_lr) if _per_group(min_lr) else min_lr,
            drop_factor=drop_factor,
            threshold=threshold,
            max_threshold=max_threshold,
            drop_delay=drop_delay,
            angle_window=angle_window,
            reset_on_drop=reset_on_drop,
            trigger=trigger,
        )
        self._shared_floor: float | None = None if _per_group(min_lr) else self._config.floors[0]
        for g, group in enumerate(optimizer.param_groups):
            for i, p in enumerate(group["params"]):
                if local_tensor(p).device.type == "meta":
                    raise ValueError(
                        f"param_groups[{g}]['params'][{i}] is on the meta device (it has no values yet): "
                        "materialise the model (e.g. model.to_empty(device=...) and initialise it) before "
                        "building AutoDrop"
                    )
                if not p.is_floating_point():
                    raise TypeError(
                        f"param_groups[{g}]['params'][{i}] has dtype {p.dtype}: AutoDrop watches "
                        "real floating-point parameters only (float64, float32, float16, bfloat16)"
                    )
        self._model = model
        self._snapshot_device = None if snapshot_device is None else torch.device(snapshot_device)
        devices = {local_tensor(p).device for g in optimizer.param_groups for p in g["params"]}
        if self._snapshot_device is not None:
            devices = {self._snapshot_device}
        self._acc_dtype = (
            torch.float32 if any(accumulation_dtype(d) == torch.float32 for d in devices) else torch.float64
        )
        self._history_size = check_history_size(history_size)
        self.history = DecisionHistory(limit=self._history_size)
        self.last_reductions: tuple[float, float] | None = None
        self._written: list[float] = []
        self._optimizer_steps = _OptimizerSteps()
        self._single_step_periods = 0
        self._warned_per_batch = False
        optimizer.register_step_post_hook(self._optimizer_steps)
        super().__init__(optimizer)

    # ----------------------------------------------------------------- lifecycle
    def _initial_step(self) -> None:
        """Called by ``LRScheduler.__init__`` (and by ``SequentialLR`` for its first scheduler)."""
        self._step_count = 1
        self._start()

    def _start(self) -> None:
        """Begin watching now: snapshot x̂(0), fresh core state, lrs back to the starting ones."""
        self.last_epoch = 0
        self._controller = Controller(self._config)
        self._keys: list[Key] = []
        self._tracked = TrackedTensors(self._acc_dtype, self._snapshot_device)
        keys = self._unwatched_keys()
        self._tracked.join([self._param(k) for k in keys])
        self._keys.extend(keys)
        if self._model is not None:
            self._tracked.set_buffers([b for b in self._model.buffers() if b.is_floating_point()])
        self.history = DecisionHistory(limit=self._history_size)
        self.last_reductions = None
        self._reset_usage()
        self._write_lrs()

    def _reset_usage(self) -> None:
        """Forget the optimizer steps counted so far (a new observation period starts now)."""
        self._optimizer_steps.count = 0
        self._single_step_periods = 0

    def _param(self, key: Key) -> Tensor:
        param: Tensor = self.optimizer.param_groups[key[0]]["params"][key[1]]
        return param

    def _unwatched_keys(self) -> list[Key]:
        """Parameters that require grad and are not watched yet, in optimizer order."""
        watched = set(self._keys)
        return [
            (g, i)
            for g, group in enumerate(self.optimizer.param_groups)
            for i, p in enumerate(group["params"])
            if p.requires_grad and (g, i) not in watched
        ]

    def _write_lrs(self, lrs: Sequence[float] | None = None) -> None:
        lrs = self._controller.lrs if lrs is None else lrs
        if len(lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"the optimizer has {len(self.optimizer.param_groups)} parameter groups, AutoDrop holds "
                f"{len(lrs)} learning rates: adding or removing groups by hand is not supported here"
            )
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            _set_group_lr(group, lr)
        self._last_lr = [
            g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"] for g in self.optimizer.param_groups
        ]
        # Read back, not the float handed in: a tensor lr may round it to its own dtype.
        self._written = [float(g["lr"]) for g in self.optimizer.param_groups]

    def _check_usage(self) -> int:
        """Refuse an lr someone else wrote; warn about a step() with no or one optimizer step.

        Runs before anything changes, so an error (or a warning turned into one) leaves the
        scheduler exactly as it was. Returns the new count of consecutive one-step periods,
        which the caller adopts once the epoch is accepted.
        """
        check_lrs_unchanged(
            self._written,
            [float(g["lr"]) for g in self.optimizer.param_groups],
            where="optimizer.param_groups[{group}]['lr']",
            fix=_LR_FIX,
        )
        steps = self._optimizer_steps.count
        if steps == 0:
            warnings.warn(
                f"AutoDrop.step() at epoch {self.epoch + 1}: the optimizer has not stepped since the last "
                "AutoDrop.step() (or since AutoDrop was built), so this epoch's parameter step is zero and its "
                "angle undefined, which empties the angle history. Call AutoDrop.step() once per epoch, after "
                "that epoch's optimizer steps.",
                AutoDropUsageWarning,
                stacklevel=3,
            )
        single = self._single_step_periods + 1 if steps == 1 else 0
        if single >= PER_BATCH_PERIODS and not self._warned_per_batch:
            warnings.warn(
                f"AutoDrop.step() has followed every single optimizer step for the last {PER_BATCH_PERIODS} "
                "calls: it looks stepped once per batch (like a per-iteration scheduler, or passed to a "
                "trainer that steps its scheduler every optimizer step). AutoDrop must be stepped once per "
                "epoch, or its angle is measured over one batch and it drops far too early or never. If you "
                "train full-batch (one optimizer step per epoch), this is expected: silence it with "
                "warnings.filterwarnings('ignore', category=autodrop_torch.AutoDropUsageWarning).",
                AutoDropUsageWarning,
                stacklevel=3,
            )
            self._warned_per_batch = True
        return single

    def last_decision_log(self) -> dict[str, float]:
        """The last decision as a flat dict of finite floats for loggers, {} before the first epoch.

        Keys ``autodrop/angle``, ``autodrop/delta``, ``autodrop/threshold``, ``autodrop/lr_0``,
        ``autodrop/triggered`` (0 or 1), ``autodrop/pending``, ...; undefined values are left
        out (see :func:`autodrop_core.log_scalars`). Ready for ``SummaryWriter.add_scalars``,
        ``wandb.log`` or ``LightningModule.log_dict``.
        """
        decision = self.last_decision
        if decision is None:
            return {}
        return log_scalars(decision, pending=self._controller.state.pending)

    # --------------------------------------------------------------------- API
    @property
    def config(self) -> AutoDropConfig:
        """The core configuration in force (it grows by one group per added param group)."""
        return self._controller.config

    @property
    def last_decision(self) -> Decision | None:
        """The core's decision of the last observed epoch, None before the first."""
        return self._controller.last_decision

    @property
    def epoch(self) -> int:
        """Epochs observed since watching started."""
        return self._controller.state.epoch

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The lr of each group for the coming epoch, as the core holds it."""
        return list(self._controller.lrs)

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        """Close one epoch: reduce, decide, average, snapshot, set the lrs.

        Each call is one observation period, whatever happened since the last one. A
        second call with no training in between observes a zero step, whose angle is
        undefined: that empties the angle history (and counts toward a pending drop).

        Raises:
            InvalidReductionError: the parameters hold NaN or infinity; the message
                names the epoch and the parameter. Nothing changed: fix and retry,
                or stop.
            autodrop_core.LRConflictError: a group's lr is not the one AutoDrop wrote
                after its last decision (another scheduler or code changed it). Nothing
                changed.
            TypeError: a metric was passed (``step(val_loss)``): AutoDrop needs none.
            ValueError: ``epoch`` was given (AutoDrop cannot jump to an epoch).

        Warns:
            AutoDropUsageWarning: no optimizer step since the last call, or a call after
                every single optimizer step for :data:`PER_BATCH_PERIODS` calls in a row.
        """
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral)):
            raise TypeError(
                f"AutoDrop.step() takes no metric, got {type(epoch).__name__} {epoch!r}: AutoDrop watches the "
                "parameters, not a loss (unlike ReduceLROnPlateau). Call step() with no argument once per epoch."
            )
        if epoch is not None:
            raise ValueError(
                f"AutoDrop.step(epoch={epoch!r}): AutoDrop observes the parameters and cannot jump to an "
                "epoch; call step() with no argument once per epoch"
            )
        self._observe()

    def _update_lr(self, epoch: int | None = None) -> None:
        # SequentialLR calls _update_lr(0) at its milestone: AutoDrop starts watching there.
        if epoch is None:
            self._observe()
        elif epoch == 0:
            self._start()
        else:
            raise ValueError(f"AutoDrop cannot jump to epoch={epoch!r}: expected None (next epoch) or 0 (start)")

    def _observe(self) -> Decision:
        """One epoch end, all or nothing: every tensor, lr and counter changes, or none does."""
        self._check_watched()
        single_step_periods = self._check_usage()
        joining = self._unwatched_keys()
        for key in joining:
            self._check_param(key, self._param(key))
        controller = self._grown_controller()
        tracked = self._tracked
        # While a drop is pending the weight is known before the reductions: the same pass absorbs x(t).
        weight = controller.pending_average_weight
        absorb = None
        if weight is not None:
            absorb = (tracked.average if tracked.average is not None else [None] * len(tracked.params), weight)
        dot, sq_norm, copies, absorbed = reduce_steps(
            tracked.params, tracked.snapshots, tracked.heads, tracked.bases, self._acc_dtype,
            names=_Names(lambda i: self._name(self._keys[i], tracked.params[i]), len(tracked.params)),
            absorb=absorb,
        )
        try:
            decision, state = controller.preview(dot, sq_norm)
        except InvalidReductionError as err:
            raise self._name_bad_parameter(err) from err
        if decision.average_weight != weight:
            absorbed = None  # the decision is the authority (it agrees whenever a drop was pending)
        end = tracked.prepare(decision.average_weight, decision.apply_average, copies, absorbed)
        old_lrs = [g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"] for g in self.optimizer.param_groups]
        old_last_lr, old_written = self._last_lr, self._written
        try:
            self._write_lrs(decision.lrs)
            if decision.apply_average:
                self._tracked.write(end)  # all or nothing: it puts back what it wrote if it fails
        except BaseException:
            self._restore_lrs(old_lrs)
            self._last_lr, self._written = old_last_lr, old_written
            raise
        # Commit: plain assignments from here on.
        self._tracked.commit(end)
        controller.commit(decision, state)
        self._controller = controller
        self._tracked.join([self._param(k) for k in joining])
        self._keys.extend(joining)
        self.last_reductions = (dot, sq_norm)
        self.history.append(decision)
        self.last_epoch += 1
        self._step_count += 1
        self._optimizer_steps.count = 0
        self._single_step_periods = single_step_periods
        return decision

    def _restore_lrs(self, old_lrs: list[Any]) -> None:
        for group, lr in zip(self.optimizer.param_groups, old_lrs, strict=True):
            if isinstance(group["lr"], Tensor) and isinstance(lr, Tensor):
                group["lr"].copy_(lr)
            else:
                group["lr"] = lr

    def _check_watched(self) -> None:
        """The optimizer still holds every watched tensor, with its shape, in every group."""
        groups = self.optimizer.param_groups
        if len(groups) < self._controller.config.num_groups:
            raise ValueError(
                f"the optimizer has {len(groups)} parameter groups, but AutoDrop watches "
                f"{self._controller.config.num_groups}: removing a param group is not supported; build a new "
                "AutoDrop scheduler (and load the optimizer's state) for the new group layout"
            )
        for n, (key, watched) in enumerate(zip(self._keys, self._tracked.params, strict=True)):
            g, i = key
            where = f"param_groups[{g}]['params'][{i}]"
            params = groups[g]["params"]
            if i >= len(params):
                raise ValueError(
                    f"AutoDrop watches {where}, which the optimizer no longer holds (a parameter was removed); "
                    "build a new AutoDrop scheduler for the new parameters"
                )
            if params[i] is not watched:
                raise ValueError(
                    f"{where} is no longer the tensor AutoDrop watches: it was replaced in the optimizer, so "
                    "AutoDrop would go on averaging the old tensor; put the original tensor back (update it in "
                    "place, e.g. with torch.no_grad(): p.copy_(new)) or build a new AutoDrop scheduler"
                )
            shape = local_shape(watched)
            if shape != self._tracked.snapshots[n].shape:
                raise ValueError(
                    f"{self._name(key, watched)} changed shape from {tuple(self._tracked.snapshots[n].shape)} "
                    f"to {tuple(shape)}; build a new AutoDrop scheduler for the new shapes"
                )

    def _check_param(self, key: Key, param: Tensor) -> None:
        if local_tensor(param).device.type == "meta":
            raise ValueError(
                f"{self._name(key, param)} is on the meta device (it has no values yet): materialise the model "
                "(e.g. model.to_empty(device=...) and initialise it) before building or stepping AutoDrop"
            )

    def _name(self, key: Key, param: Tensor) -> str:
        if self._model is not None:
            for name, candidate in self._model.named_parameters():
                if candidate is param:
                    return f"parameter {name}"
        return f"param_groups[{key[0]}]['params'][{key[1]}]"

    def _grown_controller(self) -> Controller:
        """The controller, extended by one group per param group added since the last epoch."""
        controller = self._controller
        new_groups = self.optimizer.param_groups[controller.config.num_groups :]
        if not new_groups:
            return controller
        config, state = controller.config, controller.state
        lrs = tuple(float(g["lr"]) for g in new_groups)
        floors = []
        for n, group in enumerate(new_groups, start=config.num_groups):
            floor = group.get("min_lr", self._shared_floor)
            if floor is None:
                raise ValueError(
                    f"param_groups[{n}] was added after AutoDrop was built with one min_lr per group: "
                    "give the new group its floor as a 'min_lr' key (a number >= 0)"
                )
            floors.append(floor)
        config = replace(config, lrs=config.lrs + lrs, min_lr=config.floors + tuple(floors))
        grown = Controller(config, replace(state, lrs=state.lrs + lrs))
        if controller.last_decision is not None:
            grown.commit(controller.last_decision, grown.state)
        for group in new_groups:
            group.setdefault("initial_lr", group["lr"])
        return grown

    def _name_bad_parameter(self, err: InvalidReductionError) -> InvalidReductionError:
        names = {id(p): n for n, p in self._model.named_parameters()} if self._model is not None else {}
        for key, param in zip(self._keys, self._tracked.params, strict=True):
            if not bool(torch.isfinite(local_tensor(param)).all()):
                name = names.get(id(param), f"param_groups[{key[0]}]['params'][{key[1]}]")
                return InvalidReductionError(
                    err.epoch, err.field, err.value, "finite parameters", f"parameter {name} holds NaN or infinity"
                )
        return err

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (the optimizer excluded), as copies.

        The dict holds plain Python values and tensors only, so ``torch.save`` and
        ``torch.load(weights_only=True)`` round-trip it.
        """
        return _checkpoint.save(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`'s output; the optimizer must hold the same groups.

        Raises:
            ValueError: the checkpoint is not an AutoDrop one or does not fit the optimizer.
        """
        _checkpoint.load(self, state_dict)
