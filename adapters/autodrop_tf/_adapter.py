"""AutoDrop for TensorFlow variables: the low-level API behind the Keras callback.

:class:`AutoDrop` follows the reference adapter's order (reduce, preview, absorb,
apply, snapshot, commit) over ``tf.Variable`` buffers, sets one learning rate, and
is a ``tf.Module`` so that ``tf.train.Checkpoint(autodrop=...)`` saves its complete
state: the snapshots x̂(t-1) and x̂(t-2) (and x(t-1) after an applied average), the
running averages, and the core's JSON checkpoint with the buffers' layout (held in a
``tf.string`` variable). An epoch end computes everything first and then writes the
lr, the variables and the buffers, undoing them all if any write fails (the numba
path's reduction writes the next snapshot ahead: it is put back as well). It must not
re-implement any decision rule: every decision comes from :class:`autodrop_core.Controller`.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tensorflow as tf

from autodrop_core import (
    DEFAULT_HISTORY_SIZE,
    AutoDropConfig,
    Controller,
    Decision,
    DecisionHistory,
    InvalidReductionError,
    StateError,
    check_lrs_unchanged,
    log_scalars,
)
from autodrop_core._history import check_history_size
from autodrop_tf._ops import EpochOps, Layout, Plan, _assign, _plain
from autodrop_tf._variables import LrHandle, unwrap_variables

__all__ = ["AutoDrop"]

_LR_FIX = (
    "Make AutoDrop the only thing that sets this optimizer's learning rate: remove Keras' ReduceLROnPlateau or "
    "LearningRateScheduler callback (or the code assigning optimizer.learning_rate); AutoDrop is itself the "
    "schedule. After restoring a checkpoint that holds another lr on purpose, call autodrop.apply_lr()."
)

#: Config fields a restored checkpoint must share with the object it is loaded into
#: (the starting ``lrs`` may differ: the optimizer may already hold a dropped lr).
_MATCHING_FIELDS = (
    "min_lr", "drop_factor", "threshold", "max_threshold", "drop_delay", "angle_window", "reset_on_drop", "trigger",
)


@dataclass
class _Host:
    """Host-side state that ``tf.Module`` must not track (a plain object)."""

    controller: Controller
    lr: LrHandle
    #: the optimizer's lr as read back after AutoDrop last wrote (or first read) it; None: unknown
    written: float | None = None
    synced_meta: bytes = b""
    reductions: tuple[float, float] | None = None
    history: DecisionHistory = field(default_factory=DecisionHistory)


def _set_lr(handle: LrHandle, lr: float) -> None:
    """Write the lr (a seam: the fault tests make it fail)."""
    handle.write(lr)


def _set_meta(meta: tf.Variable, encoded: bytes) -> None:
    """Write the checkpointed JSON (a seam: the fault tests make it fail), by ``_ops._assign``."""
    _assign(meta, tf.constant(encoded))


def _read_meta(meta: tf.Variable) -> bytes:
    """The checkpointed JSON as bytes (eagerly, by the variable's ``ReadVariableOp``: a quarter of ``numpy()``)."""
    if tf.executing_eagerly() and _plain(meta):
        return tf.raw_ops.ReadVariableOp(resource=meta.handle, dtype=tf.string).numpy()  # type: ignore[no-any-return]
    return meta.numpy()  # type: ignore[no-any-return]


def _one_lr(lrs: Sequence[float] | float | None, from_optimizer: float | None) -> tuple[float, ...]:
    if lrs is None:
        if from_optimizer is None:
            raise ValueError("lrs=None needs an optimizer to read the starting learning rate from; pass lrs=0.1 or so")
        return (from_optimizer,)
    if isinstance(lrs, numbers.Real):  # also numpy scalars (np.float32(0.1)) and 0-d arrays' items
        values: tuple[float, ...] = (float(lrs),)
    elif isinstance(lrs, (str, bytes)) or not isinstance(lrs, Iterable):
        raise TypeError(f"lrs={lrs!r} must be a number (one learning rate), got {type(lrs).__name__}")
    else:
        values = tuple(lrs)
    if len(values) != 1:
        raise ValueError(
            f"lrs={lrs!r} holds {len(values)} learning rates: TensorFlow optimizers have exactly one "
            f"learning rate, so AutoDrop for TensorFlow supports one parameter group (pass one float)"
        )
    return values


class AutoDrop(tf.Module):
    """AutoDrop over TensorFlow variables, for custom ``GradientTape`` training loops.

    Args:
        variables: the trainable variables (``tf.Variable`` or ``keras.Variable``, any
            float dtype). The angle is measured over these; an applied average is
            written into them.
        optimizer: a Keras optimizer or a scalar ``tf.Variable`` whose value is the lr;
            AutoDrop writes each new lr there. None: read :attr:`lr` yourself.
        lrs: the starting lr (one float; read from ``optimizer`` when omitted).
        extra_variables: float variables averaged along with ``variables`` but not
            measured, e.g. BatchNorm moving statistics.
        history_size: how many of the latest decisions :attr:`history` keeps (default
            100); None keeps every one.
        **settings: the spec's keyword settings (``min_lr``, ``drop_factor``,
            ``threshold``, ``max_threshold``, ``drop_delay``, ``angle_window``,
            ``reset_on_drop``, ``trigger``).

    The snapshot x̂(0) is taken at construction (and an explicit ``lrs`` is written into
    the optimizer). Call :meth:`end_epoch` after each epoch's training.

    Raises:
        ConfigError: a setting is out of range.
        TypeError: a variable is not a float variable, or the optimizer's learning
            rate is a schedule.
        ValueError: more than one lr, or no lr to start from.
    """

    def __init__(
        self,
        variables: Sequence[Any],
        optimizer: Any = None,
        *,
        lrs: Sequence[float] | float | None = None,
        extra_variables: Sequence[Any] = (),
        name: str = "autodrop",
        history_size: int | None = DEFAULT_HISTORY_SIZE,
        **settings: Any,
    ) -> None:
        super().__init__(name=name)
        history_size = check_history_size(history_size)
        handle = LrHandle(optimizer)
        config = AutoDropConfig(lrs=_one_lr(lrs, handle.read()), **settings)
        params = unwrap_variables(variables, "variables")
        extras = unwrap_variables(extra_variables, "extra_variables")
        with tf.init_scope():
            self.buffers = EpochOps(params, extras, averaging=config.drop_delay > 1)
            self.meta = tf.Variable(b"", dtype=tf.string, trainable=False, name="autodrop_state")
        self._host = _Host(
            Controller(config), handle, written=handle.read(), history=DecisionHistory(limit=history_size)
        )
        self.restart()
        if lrs is not None:
            self.apply_lr()  # an explicit starting lr is the one the first epoch trains with

    # -- reading ------------------------------------------------------------------

    @property
    def controller(self) -> Controller:
        """The core controller (re-read after a ``tf.train.Checkpoint`` restore)."""
        self._sync()
        return self._host.controller

    @property
    def config(self) -> AutoDropConfig:
        """The configuration in force."""
        return self.controller.config

    @property
    def lr(self) -> float:
        """The learning rate for the coming epoch."""
        return self.controller.lrs[0]

    @property
    def lrs(self) -> tuple[float, ...]:
        """The lr of the (single) parameter group, as a tuple like the core's."""
        return self.controller.lrs

    @property
    def epoch(self) -> int:
        """Epochs observed so far (t)."""
        return self.controller.state.epoch

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last epoch, None before the first (not checkpointed)."""
        self._sync()
        return self._host.controller.last_decision

    @property
    def last_reductions(self) -> tuple[float, float] | None:
        """(dot, sq_norm) as reported to the core at the last :meth:`end_epoch`, even a refused one."""
        return self._host.reductions

    @property
    def history(self) -> DecisionHistory:
        """The last ``history_size`` decisions since construction or the last restore (not checkpointed)."""
        return self._host.history

    # -- acting -------------------------------------------------------------------

    def end_epoch(self) -> Decision:
        """Reduce, ask the core, then average, set the lr and snapshot as it decides.

        Raises:
            InvalidReductionError: the variables hold NaN or infinity (the error names
                the epoch and the first such variable); nothing changed.
        """
        controller = self.controller
        written, found = self._host.written, self._host.lr.read()
        if written is not None and found is not None:
            check_lrs_unchanged([written], [found], where="the optimizer's learning_rate", fix=_LR_FIX)
        reads = self.buffers.reduce(controller.pending_average_weight)
        # The reduction may have written x(t) ahead into the buffer that becomes the next
        # snapshot (``EpochOps.discard``); everything else is unchanged until the writes below.
        try:
            dot, sq_norm = reads.dot, reads.sq_norm
            self._host.reductions = (dot, sq_norm)
            try:
                decision, state = controller.preview(dot, sq_norm)
            except InvalidReductionError as err:
                raise self._explain(err) from err
            plan = self.buffers.prepare(reads, decision.average_weight, decision.apply_average)
            meta = self._meta(Controller(controller.config, state), plan.layout)
        except BaseException:
            self.buffers.discard(reads)
            raise
        # Now the writes, each undone if a later one fails: the lr, then the caller's
        # variables and the buffers, then the checkpointed meta.
        lr_before = found  # the lr as read above (nothing has written it since)
        # an lr the optimizer already holds is not written again (every epoch but a drop's)
        same_lr = found is not None and self._host.lr.holds(decision.lrs[0], found)
        try:
            if not same_lr:
                _set_lr(self._host.lr, decision.lrs[0])
            self._adopt(plan, meta)
        except BaseException:
            if lr_before is not None and not same_lr:
                self._host.lr.write(lr_before)
            self.buffers.discard(reads)  # (a failed commit has put everything back already: harmless)
            raise
        self._host.written = found if same_lr else self._host.lr.read()
        controller.commit(decision, state)
        self._host.history.append(decision)
        return decision

    def restart(self, lrs: Sequence[float] | float | None = None) -> None:
        """Start afresh from the variables as they are now: new x̂(0), initial core state.

        Args:
            lrs: a new starting lr (one float); the configured one when omitted.
        """
        config = self._host.controller.config
        if lrs is not None:
            config = replace(config, lrs=_one_lr(lrs, None))
        self.buffers.restart()
        self._host.controller = Controller(config)
        self._host.history = DecisionHistory(limit=self._host.history.limit)
        self._write_meta()

    def apply_lr(self) -> None:
        """Write :attr:`lr` into the optimizer (after restoring a checkpoint without it)."""
        self._host.lr.write(self.lr)
        self._host.written = self._host.lr.read()

    def last_decision_log(self) -> dict[str, float]:
        """The last decision as a flat dict of finite floats ({} before the first epoch).

        Keys ``autodrop/angle``, ``autodrop/delta``, ``autodrop/threshold``,
        ``autodrop/lr_0``, ``autodrop/triggered`` (0 or 1), ``autodrop/pending``, ...;
        undefined values are left out (:func:`autodrop_core.log_scalars`).
        """
        decision = self.last_decision
        if decision is None:
            return {}
        return log_scalars(decision, pending=self.controller.state.pending)

    # -- checkpoints --------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as numpy copies and a JSON-safe core dict.

        Keys: ``core`` (``Controller.to_dict()``), ``snapshot`` (x̂(t-1)), ``step_base``
        (x̂(t-2), None in the first epoch), ``step_head`` (x(t-1), only in the epoch after
        an applied average, else None), ``average`` and ``extra_average`` (float64, None
        when no drop is pending). :meth:`load_state_dict` also accepts the old layout's
        ``prev_step`` (an explicit float64 s(t-1)) in place of ``step_base``/``step_head``.
        """
        controller = self.controller
        out: dict[str, Any] = {"core": controller.to_dict()}
        for key in ("snapshot", "step_base", "step_head", "average", "extra_average"):
            out[key] = self.buffers.export(key)
        if self.buffers.layout.explicit:  # a restored old-layout state, before its first epoch end
            out["prev_step"] = [np.concatenate([c.numpy() for c in chunks]).reshape(tuple(p.shape))
                                for p, chunks in zip(self.buffers.params, self.buffers.explicit_step, strict=True)]
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (or the old layout's); shapes and settings must match. Sets the lr.

        Everything is checked before anything is adopted: a refused state changes nothing.

        Raises:
            StateError, ConfigError: the core checkpoint is malformed or its settings differ.
            ValueError: a buffer's count or shape does not match the variables.
        """
        controller = self._checked_controller(state["core"])
        pending = controller.state.pending > 0
        old = "prev_step" in state and state.get("prev_step") is not None
        if old and (state.get("step_base") is not None or state.get("step_head") is not None):
            raise ValueError("state holds both prev_step (old layout) and step_base/step_head (new layout)")
        if state.get("step_head") is not None and state.get("step_base") is None:
            raise ValueError("state['step_head'] needs state['step_base'] (x̂(t-2)) as well")
        arrays: dict[str, Sequence[Any] | None] = {}
        for key in ("snapshot", "step_base", "step_head", "prev_step", "average", "extra_average"):
            given = state.get(key)
            shapes = self.buffers.shapes("snapshot" if key == "prev_step" else key)
            if given is None:
                if key == "snapshot" or (key in ("average", "extra_average") and pending and shapes):
                    raise ValueError(f"state[{key!r}] is missing: it is needed to resume this state")
                arrays[key] = None
                continue
            if key in ("average", "extra_average") and not pending:
                arrays[key] = None  # an old layout kept a stale average outside a window: not needed
                continue
            if len(given) != len(shapes):
                raise ValueError(f"state[{key!r}] holds {len(given)} arrays, expected {len(shapes)}")
            for i, (a, shape) in enumerate(zip(given, shapes, strict=True)):
                if tuple(np.shape(a)) != shape:
                    raise ValueError(f"state[{key!r}][{i}] has shape {np.shape(a)}, expected {shape}")
            arrays[key] = given
        explicit = arrays.pop("prev_step")
        plan = self.buffers.plan_load(arrays, explicit)
        meta = self._meta(controller, plan.layout)
        self._adopt(plan, meta)
        self._host.controller = controller
        self._host.history = DecisionHistory(limit=self._host.history.limit)
        self.apply_lr()

    def _checked_controller(self, core: Mapping[str, Any]) -> Controller:
        controller = Controller.from_dict(core)
        mine, theirs = self._host.controller.config.to_dict(), controller.config.to_dict()
        differ = [k for k in _MATCHING_FIELDS if mine[k] != theirs[k]]
        if differ:
            detail = ", ".join(f"{k}: checkpoint {theirs[k]!r}, here {mine[k]!r}" for k in differ)
            raise StateError(f"the checkpoint was written with other AutoDrop settings ({detail})")
        if controller.config.num_groups != 1:
            raise StateError(f"the checkpoint holds {controller.config.num_groups} lr groups, expected 1")
        return controller

    def _meta(self, controller: Controller, layout: Layout) -> bytes:
        """The checkpointed JSON: the core state and which optional buffers are present."""
        return json.dumps({"core": controller.to_dict(), "layout": layout.to_dict()}).encode()

    def _adopt(self, plan: Plan, meta: bytes) -> None:
        """Write ``plan``'s buffers and the meta that describes them: both, or neither if either fails."""
        undo = self.buffers.commit(plan)
        try:
            _set_meta(self.meta, meta)
        except BaseException:
            undo()
            raise
        self._host.synced_meta = meta

    def _write_meta(self) -> None:
        encoded = self._meta(self._host.controller, self.buffers.layout)
        _set_meta(self.meta, encoded)
        self._host.synced_meta = encoded

    def _sync(self) -> None:
        """Adopt a state that ``tf.train.Checkpoint.restore`` wrote into :attr:`meta`.

        A checkpoint of the old layout (two halves of snapshots and float64 steps, which
        this object no longer has) is recognised by its meta; its buffers, which the
        restore kept aside, are attached under their old names, filled, and moved into
        the new layout (its explicit step serves the next epoch end).
        """
        raw = _read_meta(self.meta)
        if raw == self._host.synced_meta:
            return
        try:
            data = json.loads(raw)
            old = "layout" not in data
            active = data["active"] if old else None
            layout = None if old else Layout.from_dict(data["layout"])
        except (ValueError, KeyError, TypeError) as err:
            raise StateError(f"restored autodrop_state is not an AutoDrop checkpoint: {raw[:80]!r}") from err
        if old and active not in (0, 1):
            raise StateError(f"restored autodrop_state has active={active!r}: expected 0 or 1")
        controller = self._checked_controller(data["core"])
        if layout is not None:
            try:
                self.buffers.check(layout, controller.state.pending > 0)
            except ValueError as err:
                raise StateError(f"restored AutoDrop checkpoint is inconsistent: {err}") from err
            self.buffers.layout = layout
            self._host.synced_meta = raw
        else:
            self.buffers.attach_old_layout()
            self.buffers.adopt_old_layout(active, controller.state.pending > 0)
            self._host.controller = controller
            self._write_meta()
        self._host.controller = controller
        self._host.history = DecisionHistory(limit=self._host.history.limit)
        # A restore may bring the optimizer's saved lr along or not: which lr is in force is unknown
        # until apply_lr() or the next end_epoch writes one, so the ownership check skips one epoch.
        self._host.written = None

    def _explain(self, err: InvalidReductionError) -> InvalidReductionError:
        """Name the first variable holding NaN or infinity, if that is the cause."""
        for var in self.buffers.params:
            if not bool(tf.reduce_all(tf.math.is_finite(var))):
                return InvalidReductionError(
                    err.epoch, err.field, err.value, "finite parameters", f"variable {var.name} holds NaN or infinity"
                )
        return err
