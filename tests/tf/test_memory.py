"""Bytes the TensorFlow adapter holds between epoch ends (issue 15's layout), counted from its variables.

Every buffer ``AutoDrop`` holds is a variable that ``tf.Module.variables`` lists (the
checkpointed state); the bytes are their element counts times their dtype sizes. The
goal: at most two parameter-dtype copies outside an averaging window, at most 16 B per
float32 parameter inside one, and three copies only in the one epoch after an applied
average.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from autodrop_tf import AutoDrop

SHAPES = [(64, 32), (32,), (8, 8, 3), ()]
SETTINGS: dict[str, Any] = {"drop_delay": 3, "threshold": 5.0, "max_threshold": 50.0}


def held_bytes(autodrop: AutoDrop) -> int:
    """Bytes of every float buffer the adapter holds (its string meta left out)."""
    return sum(int(tf.size(v)) * v.dtype.size for v in autodrop.variables if v.dtype.is_floating)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bytes_at_rest_are_two_copies_outside_a_window_and_at_most_16_per_float32_param_in_one(dtype: str) -> None:
    rng = np.random.default_rng(0)
    tf_dtype = tf.as_dtype(dtype)
    params = [tf.Variable(tf.cast(rng.standard_normal(s), tf_dtype)) for s in SHAPES]
    direction = [tf.cast(rng.standard_normal(s), tf_dtype) for s in SHAPES]
    n = sum(math.prod(s) for s in SHAPES)
    copy = n * tf_dtype.size  # one parameter-dtype copy of every parameter
    autodrop = AutoDrop(params, lrs=0.1, **SETTINGS)
    assert held_bytes(autodrop) == copy, "before the first epoch end only the snapshot is held"
    seen = {"outside": 0, "window": 0, "after apply": 0}
    for t in range(40):
        for p, d in zip(params, direction):
            noise = tf.cast(0.3 * rng.standard_normal(d.shape), tf_dtype)
            p.assign_add(tf.cast(autodrop.lr, tf_dtype) * (d + noise))
        decision = autodrop.end_epoch()
        held = held_bytes(autodrop)
        if autodrop.controller.state.pending > 0:
            seen["window"] += 1
            assert held <= 2 * copy + 8 * n, f"epoch {t + 1}: {held / n} B/param in a window"
            if dtype == "float32":
                assert held <= 16 * n
        elif decision.apply_average and decision.average_weight != 1.0:
            seen["after apply"] += 1
            assert held == 3 * copy, f"epoch {t + 1}: {held / n} B/param after an applied average"
        else:
            seen["outside"] += 1
            assert held == 2 * copy, f"epoch {t + 1}: {held / n} B/param outside a window"
    assert all(seen.values()), seen


def test_history_keeps_the_last_history_size_decisions() -> None:
    params = [tf.Variable(tf.ones((3,)))]
    bounded = AutoDrop(params, lrs=0.1, history_size=3)
    assert AutoDrop([tf.Variable(tf.ones((3,)))], lrs=0.1).history.limit == 100
    for t in range(5):
        params[0].assign_add(tf.fill((3,), 0.01 * (t + 1)))
        bounded.end_epoch()
    assert [d.epoch for d in bounded.history] == [3, 4, 5] and bounded.history.dropped == 2
    with pytest.raises(ValueError, match=r"history_size must be an integer >= 1, or None"):
        AutoDrop(params, lrs=0.1, history_size=0)


def test_the_keras_callback_passes_history_size_on() -> None:
    from autodrop_tf import AutoDropCallback

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    callback = AutoDropCallback(history_size=None)
    model.fit(np.ones((4, 2), "float32"), np.ones((4, 1), "float32"), epochs=2, verbose=0, callbacks=[callback])
    assert callback.autodrop is not None and callback.autodrop.history.limit is None
    assert len(callback.autodrop.history) == 2
