"""The Keras 3 callback: AutoDrop's tensor work in ``keras.ops``, the same on every backend.

Per epoch it forms each variable's step in the accumulation dtype (float64 on the
TensorFlow and torch backends, and on JAX with ``jax_enable_x64``; float32 on JAX
without it), reduces the two scalars per variable, adds them on the host in order,
asks the core for a decision, and then averages (the trainable variables and the
model's float non-trainable weights, e.g. BatchNorm moving statistics), snapshots
and sets the optimizer's learning rate as the decision says. It holds no rule of its
own and imports no backend directly.

Buffers (issue 15): the snapshot S = x̂(t-1) and B = x̂(t-2) in the parameter dtype
(B absent in the first epoch: s(t-1) = 0); A = x(t-1) only in the epoch after an
applied average (else A is S); the running average W in the accumulation dtype only
while a drop is pending. s(t-1) = acc(A) - acc(B) is formed on the fly, the same
rounding as the explicit step the old layout stored (its state files still load: their
step is used for one epoch). Everything new is built before anything is written, and
a failed write puts back what was already written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

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
from autodrop_keras import _fused_cpu

__all__ = ["AutoDropCallback", "accumulation_dtype"]

_LR_FIX = (
    "Make AutoDrop the only thing that sets this optimizer's learning rate: remove Keras' ReduceLROnPlateau or "
    "LearningRateScheduler callback (or the code assigning optimizer.learning_rate); AutoDrop is itself the schedule."
)


def accumulation_dtype() -> str:
    """``"float64"`` where the backend computes in it, else ``"float32"`` (JAX without x64)."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def _learning_rate_variable(optimizer: Any) -> Any:
    raw = getattr(optimizer, "_learning_rate", None)
    if isinstance(raw, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(raw) and not isinstance(raw, keras.Variable)
    ):
        raise TypeError(
            f"the optimizer's learning_rate is a {type(raw).__name__} schedule, which AutoDrop cannot set: AutoDrop is "
            f"itself the schedule. Create the optimizer with a float, e.g. "
            f"keras.optimizers.{type(optimizer).__name__}(learning_rate=0.1), and tune AutoDrop's min_lr, "
            "drop_factor, threshold and drop_delay"
        )
    if not isinstance(raw, keras.Variable):
        raise TypeError(f"optimizer must be a Keras 3 optimizer with a variable learning rate, got {raw!r}")
    return raw


def _numpy(tensor: Any) -> np.ndarray[Any, Any]:
    """A copy of a backend tensor as a numpy array (float16/32/64 only: callers cast bfloat16 first)."""
    # keras.ops.convert_to_numpy goes through np.array(tensor), which numpy 2 flags (DeprecationWarning) for
    # torch tensors and TensorFlow variables; their own .numpy() does not
    # torch's .numpy() shares the tensor's memory: always hand back a copy
    backend = keras.backend.backend()
    if backend == "torch":
        return np.array(tensor.detach().cpu().numpy(), copy=True)
    if backend == "tensorflow":
        return np.array(tensor.numpy(), copy=True)
    return np.array(keras.ops.convert_to_numpy(tensor), copy=True)


def _plain_tf(variable: Any) -> Any:
    """The ``tf.Variable`` under a Keras variable where one eager op reads or writes all of it, else None.

    On the TensorFlow backend, eagerly and outside any distribution strategy, a Keras
    variable's one-op read or write costs a fifth of ``numpy()`` or ``assign`` (their
    Python layers: about 0.5 ms each for a scalar after a training epoch has flushed the
    caches, docs/memory.md). Other backends, and distributed variables, keep Keras' own.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    from autodrop_tf._ops import _plain

    inner = variable.value
    return inner if tf.executing_eagerly() and _plain(inner) else None


def _read(variable: Any) -> float:
    """A scalar variable's value as a Python float."""
    inner = _plain_tf(variable)
    if inner is not None:
        import tensorflow as tf

        return float(tf.raw_ops.ReadVariableOp(resource=inner.handle, dtype=inner.dtype).numpy())
    return float(_numpy(variable.value))


class AutoDropCallback(keras.callbacks.Callback):
    """Drop the learning rate when training saturates, on any Keras 3 backend.

    Args:
        average_non_trainable: average the model's float non-trainable weights
            (BatchNorm moving statistics) with the parameters.
        history_size: how many of the latest decisions :attr:`history` keeps (default
            100); None keeps every one.
        **settings: the spec's keyword settings: ``min_lr``, ``drop_factor``,
            ``threshold``, ``max_threshold``, ``drop_delay``, ``angle_window``,
            ``reset_on_drop``, validated at construction.

    The starting lr is the optimizer's at the start of ``fit``. Each epoch the
    callback writes ``logs["learning_rate"]`` (the lr the epoch trained with) and the
    keys of :func:`autodrop_core.log_scalars` (``autodrop/angle``, ``autodrop/delta``,
    ``autodrop/lr_0``, ...; undefined ones left out). Put it before checkpointing
    callbacks, so they save the averaged weights.

    Resuming: with ``state_dir``, the callback writes its state after every epoch to
    ``state_dir/autodrop-<epoch>.npz`` (keeping the last ``keep``), and a ``fit`` that
    starts at ``initial_epoch = n > 0`` (set by Keras' ``BackupAndRestore``, or passed
    after ``load_model``) loads ``autodrop-<n>.npz``, so the run continues exactly, also
    inside an averaging window. Without ``state_dir``, ``initial_epoch > 0`` is refused.
    One learning rate only (Keras optimizers have one).

    Raises:
        ConfigError: a setting is out of range (at construction).
    """

    def __init__(
        self,
        *,
        average_non_trainable: bool = True,
        state_dir: str | os.PathLike[str] | None = None,
        keep: int = 2,
        history_size: int | None = DEFAULT_HISTORY_SIZE,
        **settings: Any,
    ) -> None:
        super().__init__()
        self._history_size = check_history_size(history_size)
        AutoDropConfig(lrs=(1.0,), **settings)  # validate now
        if keep < 1:
            raise ValueError(f"keep={keep!r}: expected an integer >= 1 (state files kept in state_dir)")
        self._state_dir = None if state_dir is None else Path(state_dir)
        self._keep = int(keep)
        self._settings = dict(settings)
        self._average_non_trainable = average_non_trainable
        self.controller: Controller | None = None
        self.history = DecisionHistory(limit=self._history_size)
        self.last_reductions: tuple[float, float] | None = None

    # ------------------------------------------------------------------ events
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            raise ValueError("AutoDropCallback needs a compiled model: call model.compile(optimizer=...) first")
        params = list(self.model.trainable_variables)
        if not params:
            raise ValueError("the model has no trainable variables: build it (call it on data) first")
        extras = (
            [v for v in self.model.non_trainable_weights if keras.backend.is_float_dtype(v.dtype)]
            if self._average_non_trainable else []
        )
        self._watch(params, _learning_rate_variable(optimizer), extras)

    def _watch(self, params: Sequence[Any], lr: Any, extras: Sequence[Any] = (), start_lr: float | None = None) -> None:
        """Watch ``params`` (averaging ``extras`` too) and own the lr variable ``lr`` (also the conformance driver's
        entry: it has no model). ``start_lr`` overrides the lr read from ``lr`` at the first epoch."""
        self._lr = lr
        self._params: list[Any] = list(params)
        self._extras: list[Any] = list(extras)
        self._acc = accumulation_dtype()
        self._start_lr = start_lr
        self._starting = True
        self._read_memo: dict[str, Any] = {}  # _fused_cpu.values' graph over these variables

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._starting:
            return
        self._starting = False
        if epoch != 0:
            self._resume(epoch)
            return
        lr = _read(self._lr) if self._start_lr is None else self._start_lr
        self.controller = Controller(AutoDropConfig(lrs=(lr,), **self._settings))
        if self._start_lr is not None:
            self._lr.assign(lr)
            lr = _read(self._lr)
        self._snapshot: list[Any] = [keras.ops.copy(v.value) for v in self._params]
        self._base: list[Any] | None = None  # x̂(t-2); None: s(t-1) = 0
        self._head: list[Any] | None = None  # x(t-1) in the epoch after an applied average; None: S
        self._explicit: list[Any] | None = None  # an old state file's explicit s(t-1), for one epoch
        self._average: list[Any] | None = None
        self._extra_average: list[Any] | None = None
        self._written = lr
        self.history = DecisionHistory(limit=self._history_size)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        used = _read(self._lr)
        self._end_epoch(used)
        if self._state_dir is not None:
            self._save(epoch + 1)
        if logs is not None:
            logs["learning_rate"] = used
            logs.update(self.last_decision_log())

    # ------------------------------------------------------------------ state files
    def _path(self, epoch: int) -> Path:
        assert self._state_dir is not None
        return self._state_dir / f"autodrop-{epoch}.npz"

    def _save(self, epoch: int) -> None:
        """Write the state after ``epoch`` epochs (atomically), then drop files older than ``keep``."""
        assert self.controller is not None and self._state_dir is not None
        self._state_dir.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for name, tensors in (("snapshot", self._snapshot), ("step_base", self._base), ("step_head", self._head),
                              ("prev_step", self._explicit), ("average", self._average),
                              ("extra_average", self._extra_average)):
            for i, t in enumerate(tensors or []):
                # the accumulation dtype holds every value exactly (snapshots of float16/bfloat16 too)
                arrays[f"{name}_{i}"] = _numpy(keras.ops.cast(t, self._acc))
        meta = {"epoch": epoch, "core": self.controller.to_dict(), "written": self._written,
                "pending": self._average is not None, "acc": self._acc, "layout": 2,
                "base": self._base is not None, "head": self._head is not None,
                "explicit": self._explicit is not None}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        target = self._path(epoch)
        partial = target.with_suffix(".partial.npz")
        np.savez(partial, **arrays)
        os.replace(partial, target)
        for old in self._state_dir.glob("autodrop-*.npz"):
            number = old.stem.removeprefix("autodrop-")
            if number.isdigit() and int(number) <= epoch - self._keep:
                old.unlink()

    def _resume(self, epoch: int) -> None:
        if self._state_dir is None:
            raise ValueError(
                f"fit starts at initial_epoch={epoch} but AutoDropCallback has no state_dir to resume from: pass "
                "AutoDropCallback(state_dir=...) in both runs (next to BackupAndRestore's backup_dir), or start "
                "with initial_epoch=0"
            )
        path = self._path(epoch)
        if not path.is_file():
            found = sorted(p.name for p in self._state_dir.glob("autodrop-*.npz"))
            raise ValueError(
                f"fit resumes at epoch {epoch} but {path} does not exist (state_dir holds {found}): the weights and "
                "AutoDrop's state must come from the same epoch"
            )
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k: data[k] for k in data.files if k != "meta"}
        controller = Controller.from_dict(meta["core"])
        if meta["epoch"] != epoch or controller.state.epoch != epoch or meta["acc"] != self._acc:
            raise StateError(
                f"{path} holds epoch {meta['epoch']} (core epoch {controller.state.epoch}, accumulation "
                f"{meta['acc']}); expected epoch {epoch} accumulated in {self._acc}"
            )
        mine = AutoDropConfig(lrs=controller.config.lrs, **self._settings).to_dict()
        if mine != controller.config.to_dict():
            raise StateError(f"{path} was written with other AutoDrop settings: {controller.config.to_dict()}")

        def load(name: str, variables: Sequence[Any], dtype: str | None) -> list[Any]:
            out = []
            for i, v in enumerate(variables):
                a = arrays.get(f"{name}_{i}")
                if a is None or tuple(a.shape) != tuple(v.shape):
                    raise StateError(f"{path}: {name}[{i}] is missing or has the wrong shape for {v.path}")
                out.append(keras.ops.convert_to_tensor(a, dtype=dtype or v.dtype))
            return out

        snapshot = load("snapshot", self._params, None)
        if "layout" not in meta:  # the old layout: an explicit step in the accumulation dtype
            base, head, explicit = None, None, load("prev_step", self._params, self._acc)
        else:
            base = load("step_base", self._params, None) if meta["base"] else None
            head = load("step_head", self._params, None) if meta["head"] else None
            explicit = load("prev_step", self._params, self._acc) if meta["explicit"] else None
        average = load("average", self._params, self._acc) if meta["pending"] else None
        extra_average = load("extra_average", self._extras, self._acc) if meta["pending"] else None
        self.controller = controller
        self._snapshot, self._base, self._head, self._explicit = snapshot, base, head, explicit
        self._average, self._extra_average = average, extra_average
        self._lr.assign(controller.lrs[0])
        self._written = _read(self._lr)
        self.history = DecisionHistory(limit=self._history_size)

    # ------------------------------------------------------------------ work
    def _end_epoch(self, lr_now: float | None = None) -> Decision:
        """One epoch end; ``lr_now``: the optimizer's lr as just read (read here when omitted)."""
        controller = self.controller
        if controller is None:
            raise RuntimeError("AutoDropCallback.on_epoch_end before on_epoch_begin")
        if lr_now is None:
            lr_now = _read(self._lr)
        check_lrs_unchanged([self._written], [lr_now], where="the optimizer's learning_rate", fix=_LR_FIX)
        ops = keras.ops
        dot, sq_norm = 0.0, 0.0
        pairs, fused_average, fused_weight, current = None, None, None, None
        if self._base is not None and self._explicit is None:  # s(t-1) from two buffers: maybe one numba pass
            heads = self._snapshot if self._head is None else self._head
            # while a drop is pending the weight is known now: the same pass then forms W' (float64 W only)
            fused_weight = controller.pending_average_weight if self._acc == "float64" else None
            absorb = (self._average, fused_weight) if fused_weight is not None and self._average else None
            values = _fused_cpu.values(self._params, self._read_memo)
            # TensorFlow's reads are x(t) already (copy on write); other backends get a copy from the pass
            on_tensorflow = keras.backend.backend() == "tensorflow"
            result = _fused_cpu.reduce_buffers(values, self._snapshot, heads, self._base, absorb,
                                               copying=not on_tensorflow)
            if result is not None:
                pairs, fused_average = result.pairs, result.averages
                current = values if on_tensorflow else result.copies
        if pairs is not None:
            for leaf_dot, leaf_sq in pairs:  # the variables in order, as below
                dot += leaf_dot
                sq_norm += leaf_sq
        else:
            for i, (v, snap) in enumerate(zip(self._params, self._snapshot, strict=True)):
                snap_acc = ops.cast(snap, self._acc)
                step = ops.subtract(ops.cast(v.value, self._acc), snap_acc)
                prev = self._prev(i, snap_acc)
                if prev is not None:
                    dot += float(_numpy(ops.sum(ops.multiply(step, prev))))
                sq_norm += float(_numpy(ops.sum(ops.multiply(step, step))))
        try:
            decision, state = controller.preview(dot, sq_norm)
        except InvalidReductionError as err:
            raise self._explain(err) from err
        # everything new is built first; nothing the caller or the callback holds has changed yet
        if current is None:
            current = [ops.copy(v.value) for v in self._params]  # x(t)
        average, extra_average = self._average, self._extra_average
        if decision.average_weight is not None:
            if fused_average is not None and decision.average_weight == fused_weight:
                average = fused_average  # formed in the reduction's pass, the same two roundings
            else:
                average = self._absorb(average, self._params, decision.average_weight)
            extra_average = self._absorb(extra_average, self._extras, decision.average_weight)
        written: list[tuple[Any, Any]] = []
        if decision.apply_average:
            assert average is not None and extra_average is not None
            written = [(v, ops.cast(avg, v.dtype))
                       for v, avg in zip(self._params + self._extras, average + extra_average, strict=True)]
            average = extra_average = None
        same_lr = _holds(self._lr, decision.lrs[0], lr_now)  # not written again (every epoch but a drop's)
        self._write(written, None if same_lr else decision.lrs[0], lr_now)
        if decision.apply_average and decision.average_weight != 1.0:
            # the epoch after an applied average: S = the written average, A = x(t), B = x̂(t-1)
            snapshot, head = [ops.copy(v.value) for v in self._params], current
        else:
            snapshot, head = current, None
        self._base, self._snapshot, self._head, self._explicit = self._snapshot, snapshot, head, None
        self._average, self._extra_average = average, extra_average
        controller.commit(decision, state)
        self._written = lr_now if same_lr else _read(self._lr)
        self.history.append(decision)
        self.last_reductions = (dot, sq_norm)
        return decision

    def _prev(self, i: int, snap_acc: Any) -> Any:
        """s(t-1) of variable ``i`` in the accumulation dtype (None: zero), formed from the buffers."""
        ops = keras.ops
        if self._explicit is not None:
            return self._explicit[i]
        if self._base is None:
            return None
        head = snap_acc if self._head is None else ops.cast(self._head[i], self._acc)
        return ops.subtract(head, ops.cast(self._base[i], self._acc))

    def _write(self, written: Sequence[tuple[Any, Any]], lr: float | None, lr_before: float) -> None:
        """Write an applied average into the variables, then the lr (None: unchanged): all or nothing.

        Each variable's old value is kept (a copy) until every write succeeded; a failure
        puts back everything already written (the lr: ``lr_before``, the value it held,
        which the variable's dtype holds exactly) before it propagates.
        """
        done: list[tuple[Any, Any]] = []
        try:
            for v, value in written:
                backup = keras.ops.copy(v.value)
                _assign(v, value)
                done.append((v, backup))
            if lr is not None:
                _assign(self._lr, lr)
        except BaseException:
            for v, backup in reversed(done):
                v.assign(backup)
            if lr is not None:
                self._lr.assign(lr_before)
            raise

    def _absorb(self, average: list[Any] | None, variables: Sequence[Any], weight: float) -> list[Any]:
        ops = keras.ops
        values = [ops.cast(v.value, self._acc) for v in variables]
        if average is None or weight == 1.0:
            return [ops.copy(x) for x in values]
        # the weight as a tensor of the accumulation dtype: a Python float would become floatx on some backends
        c = ops.convert_to_tensor(weight, dtype=self._acc)
        return [ops.add(w, ops.multiply(c, ops.subtract(x, w))) for w, x in zip(average, values, strict=True)]

    def _explain(self, err: InvalidReductionError) -> InvalidReductionError:
        for v in self._params:
            if not bool(ops_all_finite(v)):
                return InvalidReductionError(
                    err.epoch, err.field, err.value, "finite parameters", f"variable {v.path} holds NaN or infinity"
                )
        return err

    # ------------------------------------------------------------------ reading
    @property
    def last_decision(self) -> Decision | None:
        """The decision of the last epoch, None before the first."""
        return None if self.controller is None else self.controller.last_decision

    def last_decision_log(self) -> dict[str, float]:
        """The last decision as a flat dict of finite floats ({} before the first epoch)."""
        decision = self.last_decision
        if decision is None or self.controller is None:
            return {}
        return log_scalars(decision, pending=self.controller.state.pending)


def _holds(variable: Any, value: float, current: float) -> bool:
    """Whether writing ``value`` into a float32/float64 ``variable`` that holds ``current`` would leave it so."""
    dtype = str(variable.dtype)
    return dtype in ("float32", "float64") and float(np.asarray(value, dtype=dtype)) == current


def _assign(variable: Any, value: Any) -> None:
    """One write into a variable (a seam: tests make it fail); a Python float by one op where it can."""
    inner = _plain_tf(variable) if isinstance(value, float) else None
    if inner is not None and inner.dtype.name in ("float32", "float64"):
        import tensorflow as tf

        tf.raw_ops.AssignVariableOp(resource=inner.handle, value=tf.constant(value, dtype=inner.dtype))
        return
    variable.assign(value)


def ops_all_finite(variable: Any) -> bool:
    """Whether every element of ``variable`` is finite."""
    return bool(_numpy(keras.ops.all(keras.ops.isfinite(variable.value))))


