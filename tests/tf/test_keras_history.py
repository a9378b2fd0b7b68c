"""The Keras 3 callback keeps the last ``history_size`` decisions (default 100; None: all), on the TensorFlow backend.

In tests/tf because importing keras loads its default backend, TensorFlow, which the other
sessions lack (tests/keras runs each backend in a subprocess).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from autodrop_keras import AutoDropCallback


def test_history_keeps_the_last_history_size_decisions_across_a_fit() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    callback = AutoDropCallback(history_size=2)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[callback])
    assert [d.epoch for d in callback.history] == [4, 5] and callback.history.dropped == 3
    assert AutoDropCallback().history.limit == 100 and AutoDropCallback(history_size=None).history.limit is None


def test_a_bad_history_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"history_size must be an integer >= 1, or None .*got -1"):
        AutoDropCallback(history_size=-1)
