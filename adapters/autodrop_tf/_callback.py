"""The Keras callback: AutoDrop in ``model.fit(callbacks=[...])``, next to ReduceLROnPlateau.

:class:`AutoDropCallback` builds an :class:`autodrop_tf.AutoDrop` over the model's
trainable variables (and its float non-trainable weights, such as BatchNorm moving
statistics, which are averaged but not measured), validates the optimizer at
``on_train_begin``, starts afresh or resumes at the first ``on_epoch_begin``, and acts
in ``on_epoch_end``. It holds no rule of its own and no tensor work: both live in the
low-level adapter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras

from autodrop_core import DEFAULT_HISTORY_SIZE, AutoDropConfig
from autodrop_core._history import check_history_size
from autodrop_tf._adapter import AutoDrop, _one_lr
from autodrop_tf._variables import LrHandle, float_weights

__all__ = ["AutoDropCallback"]


class AutoDropCallback(keras.callbacks.Callback):
    """Drop the learning rate when training saturates (AutoDrop, UAI 2024).

    Args:
        lrs: starting lr (one float); by default the optimizer's lr at the start of
            training. Keras optimizers have one learning rate, so there is one group.
        average_non_trainable: average the model's float non-trainable weights
            (BatchNorm moving statistics) together with the parameters.
        verbose: 1 prints a line at each drop.
        history_size: how many of the latest decisions ``autodrop.history`` keeps
            (default 100); None keeps every one.
        **settings: the spec's keyword settings: ``min_lr``, ``drop_factor``,
            ``threshold``, ``max_threshold``, ``drop_delay``, ``angle_window``,
            ``reset_on_drop``, ``trigger``.

    Each epoch it writes ``logs["learning_rate"]`` (the lr used in that epoch, as
    Keras' own lr callbacks do), ``logs["autodrop_angle"]`` (degrees, NaN when
    undefined) and the keys of :meth:`AutoDrop.last_decision_log` (``autodrop/angle``,
    ``autodrop/delta``, ``autodrop/threshold``, ``autodrop/triggered``,
    ``autodrop/pending``, ``autodrop/lr_0``, ...; undefined ones left out), which
    Keras' TensorBoard and CSVLogger callbacks record. Put it before checkpointing
    callbacks, so they save the averaged weights. If another callback or code changes
    the optimizer's learning rate (Keras' ``ReduceLROnPlateau``, a
    ``LearningRateScheduler``), the next ``on_epoch_end`` raises
    :class:`autodrop_core.LRConflictError`.

    ``lrs`` sets the starting lr of the first ``fit``. A later ``fit`` from epoch 0
    starts afresh from the optimizer's lr as the previous one left it (or as you set
    it between the two), so a dropped lr is never raised back silently.

    Resuming: Keras does not save callback state. Track :attr:`autodrop` (built by
    :meth:`build`) in a ``tf.train.Checkpoint``; ``fit(initial_epoch=n)`` then resumes
    when the restored state has seen exactly n epochs. ``initial_epoch=0`` starts
    afresh from the current weights.

    Raises:
        ConfigError: a setting is out of range (at construction).
    """

    def __init__(
        self,
        lrs: Sequence[float] | float | None = None,
        *,
        average_non_trainable: bool = True,
        verbose: int = 0,
        history_size: int | None = DEFAULT_HISTORY_SIZE,
        **settings: Any,
    ) -> None:
        super().__init__()
        self._history_size = check_history_size(history_size)
        AutoDropConfig(lrs=(1.0,) if lrs is None else _one_lr(lrs, None), **settings)  # validate now
        self._lrs = lrs
        self._settings = dict(settings)
        self._average_non_trainable = average_non_trainable
        self._verbose = verbose
        self._starting = False
        self._restarted = False  # a fit has already started from epoch 0
        self._built_for: tuple[int, ...] = ()
        self.autodrop: AutoDrop | None = None

    def build(self, model: keras.Model) -> AutoDrop:
        """The :class:`AutoDrop` for ``model`` (compiled and built), created once.

        Call it before ``fit`` to get the object to track in a ``tf.train.Checkpoint``.
        """
        if getattr(model, "optimizer", None) is None:
            raise ValueError("AutoDropCallback needs a compiled model: call model.compile(optimizer=...) first")
        LrHandle(model.optimizer)  # refuses a schedule with a message saying what to use
        params = list(model.trainable_variables)
        if not params:
            raise ValueError("the model has no trainable variables yet: build it (call it on data) first")
        extras = float_weights(model.non_trainable_weights) if self._average_non_trainable else []
        key = tuple(id(v) for v in params + extras)
        if self.autodrop is None or key != self._built_for:
            self.autodrop = AutoDrop(
                params, model.optimizer, lrs=self._lrs, extra_variables=extras, name="autodrop",
                history_size=self._history_size, **self._settings,
            )
            self._built_for = key
        return self.autodrop

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.build(self.model)
        self._starting = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._starting:
            return
        self._starting = False
        autodrop = self.autodrop
        assert autodrop is not None
        if epoch == 0:
            current = LrHandle(self.model.optimizer).read()
            # ``lrs`` is the lr of the first fit only: a later fit from epoch 0 starts afresh from the
            # optimizer's lr as the last fit left it (dropped), never silently back at ``lrs``.
            autodrop.restart(lrs=_one_lr(None if self._restarted else self._lrs, current))
            self._restarted = True
            autodrop.apply_lr()
        elif epoch == autodrop.epoch:
            autodrop.apply_lr()
        else:
            raise ValueError(
                f"fit starts at initial_epoch={epoch}, but AutoDropCallback has observed {autodrop.epoch} "
                f"epochs: restore the AutoDrop checkpoint written after epoch {epoch} "
                f"(tf.train.Checkpoint(autodrop=callback.autodrop)), or pass initial_epoch=0 to start afresh"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        autodrop = self.autodrop
        assert autodrop is not None
        used = autodrop.lr
        decision = autodrop.end_epoch()
        if logs is not None:
            logs["learning_rate"] = used
            logs["autodrop_angle"] = math.nan if decision.angle is None else decision.angle
            logs.update(autodrop.last_decision_log())
        if self._verbose and (decision.dropped or decision.exhausted):
            what = f"reducing learning rate to {decision.lrs[0]}" if decision.dropped else "lr at its floor"
            print(f"\nEpoch {epoch + 1}: AutoDrop {what} (weights replaced by their average).")
