"""The tensor work of one epoch end, as ``tf.function`` graphs over fixed variable lists.

:class:`EpochOps` holds the adapter's buffers and three compiled steps:

* :meth:`EpochOps.reduce` forms s(t) = x(t) - x̂(t-1) element by element in float64,
  returns the spec's two reductions (float64 sums per chunk of at most :data:`CHUNK`
  elements, added chunk by chunk in a fixed order) and writes s(t) and x(t) into the
  *inactive* half of a pair of buffers, so that the active half, the state the core has
  accepted, is untouched until :meth:`EpochOps.flip`.
* :meth:`EpochOps.absorb` folds x(t) into the float64 running average W.
* :meth:`EpochOps.apply_average` writes W into the variables and re-takes the snapshot.

This module decides nothing: the core decides and ``_adapter.py`` calls these steps in
the order the spec gives. It must never reduce in float32, nor derive a step from dot
products of positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["EpochOps", "cast_rounded"]


def cast_rounded(value: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """float64 -> ``dtype`` rounded once to nearest, as numpy's ``astype`` does.

    TensorFlow casts float64 to float16 through float32, rounding twice; rounding to
    float32 "to odd" first (the last bit set when inexact) makes the second rounding
    exact. Other dtypes are cast directly (bfloat16 goes through float32 in numpy's
    ``ml_dtypes`` as well, so the two agree there as they are).
    """
    if dtype != tf.float16:
        return tf.cast(value, dtype)
    nearest = tf.cast(value, tf.float32)
    widened = tf.cast(nearest, tf.float64)
    bits = tf.bitcast(nearest, tf.int32)
    bits = tf.where(tf.abs(widened) > tf.abs(value), bits - 1, bits)  # truncate toward zero
    bits = tf.where(widened == value, bits, tf.bitwise.bitwise_or(bits, 1))  # inexact: make it odd
    return tf.cast(tf.bitcast(bits, tf.float32), dtype)


#: Elements per chunk of a snapshot or step buffer. Working chunk by chunk keeps each
#: float64 temporary small enough to be recycled by the allocator (a fresh 90 MB buffer
#: per epoch costs page faults) and warm in cache; measured best among 2**14 .. 2**20.
CHUNK = 1 << 18


def chunk_sizes(size: int) -> list[int]:
    """Near-equal chunk lengths, at most :data:`CHUNK` each, that add up to ``size``."""
    count = max(1, -(-size // CHUNK))
    base, extra = divmod(size, count)
    return [base + 1] * extra + [base] * (count - extra)


def _buffer(var: Any, shape: Sequence[int], dtype: tf.DType, name: str) -> tf.Variable:
    """A non-trainable zero buffer placed on ``var``'s device."""
    with tf.device(var.device):
        return tf.Variable(tf.zeros(shape, dtype), trainable=False, name=name)


def _chunks(var: Any, dtype: tf.DType, name: str) -> list[tf.Variable]:
    """One flat buffer per chunk of ``var``."""
    return [_buffer(var, [n], dtype, f"{name}_{j}") for j, n in enumerate(chunk_sizes(var.shape.num_elements()))]


def _split(value: tf.Tensor, like: Sequence[tf.Variable]) -> list[tf.Tensor]:
    """``value`` flattened and cut into the lengths of the chunk buffers ``like``."""
    flat = tf.reshape(value, [-1])
    return [flat] if len(like) == 1 else tf.split(flat, [c.shape[0] for c in like])


@dataclass
class _Untracked:
    """Holds what a checkpoint must not contain: the caller's variables and the graphs.

    A plain object, so ``tf.Module`` neither tracks nor saves what it holds (the model's
    own variables belong to the model's checkpoint, not to AutoDrop's).
    """

    params: list[Any]
    extras: list[Any]
    graphs: dict[str, Callable[..., Any]] = field(default_factory=dict)


class EpochOps(tf.Module):
    """Buffers and graphs for AutoDrop's epoch end over one list of variables.

    Args:
        params: the trainable variables x (plain ``tf.Variable`` or distributed ones).
        extras: float variables averaged with the parameters but left out of the
            reductions (BatchNorm moving statistics).
        averaging: allocate the float64 running average (not needed when
            ``drop_delay == 1``, where the average is x(t) itself).
    """

    def __init__(self, params: Sequence[Any], extras: Sequence[Any], averaging: bool) -> None:
        super().__init__(name="autodrop_buffers")
        self._held = _Untracked(list(params), list(extras))
        params, extras = self._held.params, self._held.extras
        # Two halves: [active, spare], each a list (per variable) of flat chunk buffers.
        # Snapshots keep the parameter's dtype (an exact copy of x̂); steps are float64
        # (the exact difference of two floats).
        self.snapshots = [[_chunks(p, p.dtype, f"snapshot{half}_{i}") for i, p in enumerate(params)] for half in (0, 1)]
        self.steps = [[_chunks(p, tf.float64, f"step{half}_{i}") for i, p in enumerate(params)] for half in (0, 1)]
        self.average = [_chunks(p, tf.float64, f"average_{i}") for i, p in enumerate(params)] if averaging else []
        self.extra_average = (
            [_chunks(e, tf.float64, f"extra_average_{i}") for i, e in enumerate(extras)] if averaging else []
        )
        self.active = 0
        graphs = self._held.graphs
        for half in (0, 1):
            graphs[f"reduce{half}"] = tf.function(self._make_reduce(half))
            graphs[f"snapshot{half}"] = tf.function(self._make_snapshot(half))
        graphs["absorb"] = tf.function(self._absorb)
        graphs["apply"] = tf.function(self._apply)

    # -- graph bodies -------------------------------------------------------------

    def _make_reduce(self, src: int) -> Any:
        dst = 1 - src

        def reduce() -> tuple[tf.Tensor, tf.Tensor]:
            dot = tf.constant(0.0, tf.float64)
            sq_norm = tf.constant(0.0, tf.float64)
            columns = (self._held.params, self.snapshots[src], self.steps[src], self.steps[dst], self.snapshots[dst])
            for x_var, snaps, prevs, new_steps, new_snaps in zip(*columns, strict=True):
                x_parts = _split(tf.convert_to_tensor(x_var), snaps)
                for x, snap, prev, new_step, new_snap in zip(x_parts, snaps, prevs, new_steps, new_snaps, strict=True):
                    step = tf.cast(x, tf.float64) - tf.cast(snap, tf.float64)
                    # fused float64 reductions, no product temporaries: a dot and a sum of squares
                    dot += tf.tensordot(step, prev, 1)
                    sq_norm += 2.0 * tf.nn.l2_loss(step)
                    new_step.assign(step)
                    new_snap.assign(x)
            return dot, sq_norm

        return reduce

    def _make_snapshot(self, dst: int) -> Any:
        def snapshot(clear_steps: bool) -> tf.Tensor:
            for x_var, snaps, steps in zip(self._held.params, self.snapshots[dst], self.steps[dst], strict=True):
                for x, snap, step in zip(_split(tf.convert_to_tensor(x_var), snaps), snaps, steps, strict=True):
                    snap.assign(x)
                    if clear_steps:
                        step.assign(tf.zeros_like(step))
            return tf.constant(True)

        return snapshot

    def _absorb(self, weight: tf.Tensor, first: bool) -> tf.Tensor:
        for var, avgs in zip(self._held.params + self._held.extras, self.average + self.extra_average, strict=True):
            for x, avg in zip(_split(tf.convert_to_tensor(var), avgs), avgs, strict=True):
                if first:
                    avg.assign(tf.cast(x, tf.float64))
                else:
                    avg.assign_add(weight * (tf.cast(x, tf.float64) - avg))
        return tf.constant(True)

    def _apply(self) -> tf.Tensor:
        for var, avgs in zip(self._held.params + self._held.extras, self.average + self.extra_average, strict=True):
            flat = tf.concat([cast_rounded(avg, var.dtype) for avg in avgs], axis=0)
            var.assign(tf.reshape(flat, var.shape))
        return tf.constant(True)

    # -- host-side entry points ---------------------------------------------------

    @property
    def params(self) -> list[Any]:
        """The measured variables (not tracked: they belong to the caller's checkpoint)."""
        return self._held.params

    def reduce(self) -> tuple[float, float]:
        """dot and sq_norm for this epoch; fills the spare half, leaves the active one alone."""
        dot, sq_norm = self._held.graphs[f"reduce{self.active}"]()
        return float(dot), float(sq_norm)

    def absorb(self, weight: float) -> None:
        """W = W + weight * (x - W) in float64 (weight 1 starts W at x)."""
        self._held.graphs["absorb"](tf.constant(weight, tf.float64), weight == 1.0)

    def apply_average(self) -> None:
        """Write W into the variables and retake the spare snapshot from them."""
        self._held.graphs["apply"]()
        self._held.graphs[f"snapshot{1 - self.active}"](False)

    def _kind(self, kind: str) -> tuple[list[Any], list[list[tf.Variable]]]:
        """The variables and per-variable chunk buffers that make up one part of the state."""
        if kind == "snapshot":
            return self._held.params, self.snapshots[self.active]
        if kind == "prev_step":
            return self._held.params, self.steps[self.active]
        if kind == "average":
            return self._held.params, self.average
        if kind == "extra_average":
            return self._held.extras, self.extra_average
        raise KeyError(kind)

    def export(self, kind: str) -> list[np.ndarray]:
        """Copies of one part of the state (``snapshot`` and ``prev_step`` from the active
        half, ``average``, ``extra_average``), one array per variable in its shape."""
        variables, buffers = self._kind(kind)
        return [
            np.concatenate([c.numpy() for c in chunks]).reshape(tuple(v.shape))
            for v, chunks in zip(variables, buffers, strict=False)
        ]

    def shapes(self, kind: str) -> list[tuple[int, ...]]:
        """The array shapes :meth:`load` expects for ``kind`` (none without averaging buffers)."""
        variables, buffers = self._kind(kind)
        return [tuple(v.shape) for v in variables] if buffers else []

    def load(self, kind: str, arrays: Sequence[np.ndarray]) -> None:
        """Write arrays shaped as :meth:`shapes` says into the buffers of ``kind``."""
        _, buffers = self._kind(kind)
        for chunks, array in zip(buffers, arrays, strict=True):
            flat = np.asarray(array).reshape(-1)
            start = 0
            for c in chunks:
                size = c.shape.num_elements()
                c.assign(np.asarray(flat[start : start + size], dtype=c.dtype.as_numpy_dtype))
                start += size

    def flip(self) -> None:
        """Adopt the spare half (written by :meth:`reduce`) as the active state."""
        self.active = 1 - self.active

    def restart(self) -> None:
        """x̂ = current variables, s = 0, in the active half (a fresh start)."""
        self._held.graphs[f"snapshot{self.active}"](True)
