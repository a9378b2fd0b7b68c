"""Recognising what the caller hands in: variables and the thing that holds the lr.

Keras 3 wraps each ``tf.Variable`` in a ``keras.Variable``; this module unwraps it
(looking at ``sys.modules`` rather than importing Keras), checks dtypes, and reads and
writes one learning rate on a Keras optimizer or a plain ``tf.Variable``. It makes no
decision and holds no state.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from autodrop_tf._ops import _plain

__all__ = ["LrHandle", "float_weights", "unwrap_variables"]


def _unwrap(var: Any) -> Any:
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(var, keras.Variable):
        return var.value  # the tf.Variable (or distributed variable) underneath
    return var


def unwrap_variables(variables: Sequence[Any], what: str) -> list[Any]:
    """The ``tf.Variable`` behind each entry; every one must hold floating-point values.

    Raises:
        TypeError: an entry is not a variable, or not of a float dtype.
    """
    if isinstance(variables, (tf.Variable, str, bytes)) or not isinstance(variables, Sequence):
        raise TypeError(f"{what} must be a list of tf.Variable or keras.Variable, got {type(variables).__name__}")
    unwrapped = []
    for i, var in enumerate(variables):
        inner = _unwrap(var)
        if not isinstance(inner, tf.Variable):
            raise TypeError(f"{what}[{i}] must be a tf.Variable or keras.Variable, got {type(var).__name__}")
        if not inner.dtype.is_floating:
            raise TypeError(f"{what}[{i}] ({inner.name}) has dtype {inner.dtype.name}: expected a float dtype")
        unwrapped.append(inner)
    return unwrapped


def float_weights(variables: Sequence[Any]) -> list[Any]:
    """The entries of ``variables`` that hold floats (BatchNorm statistics, not counters)."""
    return [v for v in variables if _unwrap(v).dtype.is_floating]


class LrHandle:
    """Reads and writes the one learning rate of a Keras optimizer or a ``tf.Variable``.

    Args:
        target: a Keras optimizer, a scalar float ``tf.Variable``, or None (the caller
            reads the lr from AutoDrop itself).

    Raises:
        TypeError: the optimizer's learning rate is a schedule or a callable, which
            AutoDrop cannot set.
    """

    def __init__(self, target: Any) -> None:
        self.target = target
        self._direct: Any = False  # the lr's plain variable (None: none), looked up at the first use
        if target is None or isinstance(target, tf.Variable):
            return
        if not hasattr(target, "learning_rate"):
            raise TypeError(
                f"optimizer must be a Keras optimizer, a scalar tf.Variable holding the lr, or None; "
                f"got {type(target).__name__}"
            )
        # Keras keeps the constructor's lr in ``_learning_rate``; the public getter would
        # evaluate a schedule instead of showing it.
        raw = getattr(target, "_learning_rate", None)
        keras = sys.modules.get("keras")
        if keras is not None and isinstance(raw, keras.optimizers.schedules.LearningRateSchedule):
            kind = f"LearningRateSchedule ({type(raw).__name__})"
        elif raw is not None and callable(raw) and not _is_variable(raw):
            kind = f"callable ({type(raw).__name__})"
        else:
            return
        raise TypeError(
            f"the optimizer's learning_rate is a {kind}, which AutoDrop cannot set: AutoDrop is itself "
            f"the schedule. Create the optimizer with a float learning rate, e.g. "
            f"keras.optimizers.{type(target).__name__}(learning_rate=0.1), and tune how AutoDrop drops it "
            f"with min_lr, drop_factor, threshold and drop_delay"
        )

    def _plain(self) -> Any:
        """The plain ``tf.Variable`` that holds the lr, where one eager op reads or writes it; else None.

        That is the target itself, or the variable a Keras optimizer's ``learning_rate``
        property returns (looked up once: a wrapper such as ``LossScaleOptimizer`` returns
        its inner optimizer's), outside any distribution strategy. Read and written by one
        op each (``ReadVariableOp``, ``AssignVariableOp``), the lr costs a tenth of that
        property and its setter, about 1 ms each after a training epoch has flushed the
        caches (docs/memory.md); anything else goes through them.
        """
        if self._direct is False:
            var = self.target if isinstance(self.target, tf.Variable) else _unwrap(self.target.learning_rate)
            plain = (isinstance(var, tf.Variable) and _plain(var) and var.shape.rank == 0
                     and var.dtype in (tf.float32, tf.float64))
            self._direct = var if plain else None
        if self._direct is None or not tf.executing_eagerly() or tf.distribute.has_strategy():
            return None
        return self._direct

    def read(self) -> float | None:
        """The current lr as a Python float, or None without a target."""
        if self.target is None:
            return None
        var = self._plain()
        if var is not None:
            return float(tf.raw_ops.ReadVariableOp(resource=var.handle, dtype=var.dtype).numpy())
        value = self.target if isinstance(self.target, tf.Variable) else self.target.learning_rate
        return float(np.asarray(value))

    def holds(self, lr: float, current: float) -> bool:
        """Whether writing ``lr`` would leave the lr at ``current`` (its value as just read), bit for bit.

        Only for a plain float32/float64 variable, whose write rounds ``lr`` to its dtype
        as numpy does; False wherever the write goes through Keras (it is then made).
        """
        var = self._plain()
        return var is not None and float(np.asarray(lr, dtype=var.dtype.as_numpy_dtype)) == current

    def write(self, lr: float) -> None:
        """Set the lr (a no-op without a target)."""
        if self.target is None:
            return
        var = self._plain()
        if var is not None:
            tf.raw_ops.AssignVariableOp(resource=var.handle, value=tf.constant(lr, dtype=var.dtype))
        elif isinstance(self.target, tf.Variable):
            self.target.assign(tf.constant(lr, dtype=self.target.dtype))
        else:
            self.target.learning_rate = lr


def _is_variable(value: Any) -> bool:
    keras = sys.modules.get("keras")
    return isinstance(value, tf.Variable) or (keras is not None and isinstance(value, keras.Variable))
