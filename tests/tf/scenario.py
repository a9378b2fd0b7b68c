"""Shared test scenario: a small Keras regression model, its data, and a weight recorder.

Imported by ``conftest.py`` and by ``mirrored_run.py`` (a subprocess script), so it
must work both ways and must not import pytest.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

SETTINGS: dict[str, Any] = {"drop_delay": 3, "threshold": 1.0, "max_threshold": 20.0}


def data() -> tuple[np.ndarray, np.ndarray]:
    """64 samples of a noisy linear target in 8 features (float32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = (x @ rng.standard_normal((8, 1)) + 0.1 * rng.standard_normal((64, 1))).astype(np.float32)
    return x, y


def make_model(strategy: tf.distribute.Strategy | None = None, *, momentum: float = 0.9) -> keras.Model:
    """Dense -> BatchNorm -> ReLU -> Dense, with fixed initial weights, compiled with SGD."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16),
                keras.layers.BatchNormalization(synchronized=True),
                keras.layers.ReLU(),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=momentum), loss="mse")
    rng = np.random.default_rng(1)
    model.set_weights(  # kernels drawn here, the rest (biases, BatchNorm) at Keras' constant defaults
        [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) if w.ndim == 2 else w for w in model.get_weights()]
    )
    return model


def fit(model: keras.Model, callbacks: list[Any], epochs: int, initial_epoch: int = 0) -> Any:
    x, y = data()
    return model.fit(
        x, y, batch_size=16, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0, callbacks=callbacks
    )


def _weights(variables: list[Any]) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


class Recorder(keras.callbacks.Callback):
    """Records, per epoch: the lr in force, and the weights when its ``on_epoch_end`` runs.

    Place one before the AutoDrop callback (it sees x(t)) and one after (it sees the
    weights AutoDrop leaves: x̂(t)).
    """

    def __init__(self) -> None:
        super().__init__()
        self.start: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        self.xs: list[list[np.ndarray]] = []
        self.stats: list[list[np.ndarray]] = []
        self.lrs: list[float] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.start = (_weights(self.model.trainable_variables), _weights(self.model.non_trainable_weights))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.lrs.append(float(np.asarray(self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.xs.append(_weights(self.model.trainable_variables))
        self.stats.append(_weights(self.model.non_trainable_weights))
