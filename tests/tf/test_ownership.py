"""No silent failure in TensorFlow/Keras: another lr writer is refused; decisions reach Keras' logs."""

from __future__ import annotations

import math
from typing import Any

import keras
import pytest
import tensorflow as tf
from autodrop_tf import AutoDrop, AutoDropCallback

from autodrop_core import LRConflictError


# Keras' ReduceLROnPlateau calls np.array on a TF variable, which numpy 2 flags; not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("position", ["before", "after"])
def test_keras_reduce_lr_on_plateau_beside_the_callback_is_refused_at_the_epoch_it_moves_the_lr(
    scenario: Any, position: str
) -> None:
    model = scenario.make_model()
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)
    autodrop = AutoDropCallback(**scenario.SETTINGS)
    callbacks = [plateau, autodrop] if position == "before" else [autodrop, plateau]
    with pytest.raises(LRConflictError, match=r"the optimizer's learning_rate is 0\.02.*ReduceLROnPlateau") as info:
        scenario.fit(model, callbacks, 6)
    assert info.value.group == 0 and info.value.found == pytest.approx(info.value.written / 2)
    # the plateau callback first reduces at the end of epoch 2 (epoch 1 sets its best loss)
    assert autodrop.autodrop is not None and autodrop.autodrop.epoch == (1 if position == "before" else 2)


def test_the_low_level_adapter_refuses_an_lr_assigned_behind_its_back_and_changes_nothing() -> None:
    v = tf.Variable([1.0, 2.0])
    opt = keras.optimizers.SGD(learning_rate=0.1)
    autodrop = AutoDrop([v], opt, drop_delay=2)
    v.assign_add([0.5, 0.5])
    autodrop.end_epoch()
    opt.learning_rate = 0.3
    v.assign_add([0.5, 0.5])
    with pytest.raises(LRConflictError, match=r"is 0\.30000001192092896, but AutoDrop wrote 0\.10000000149011612"):
        autodrop.end_epoch()
    assert autodrop.epoch == 1
    autodrop.apply_lr()  # take the lr back: the run goes on
    assert autodrop.end_epoch().epoch == 2


def test_the_callback_writes_the_decision_keys_into_keras_logs(scenario: Any) -> None:
    model = scenario.make_model()
    callback = AutoDropCallback(**scenario.SETTINGS)
    history = scenario.fit(model, [callback], 8)
    logs = history.history
    assert logs["autodrop/epoch"] == [float(e) for e in range(1, 9)]
    assert logs["autodrop/lr_0"] == [d.lrs[0] for d in callback.autodrop.history]
    assert "autodrop/threshold" in logs and "autodrop/pending" in logs and "autodrop/triggered" in logs
    # the first epoch's angle is undefined: the key is left out that epoch, so Keras records fewer values
    assert len(logs["autodrop/angle"]) == 7
    assert all(math.isfinite(a) for a in logs["autodrop/angle"])


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_lr_is_read_and_written_in_the_variable_the_optimizer_property_returns(wrapped: bool) -> None:
    # the one-op read and write must touch the optimizer's lr, also through LossScaleOptimizer,
    # whose own (unused) learning-rate variable holds 0.0
    from autodrop_tf._variables import LrHandle

    inner = keras.optimizers.SGD(learning_rate=0.1)
    opt = keras.optimizers.LossScaleOptimizer(inner) if wrapped else inner
    handle = LrHandle(opt)
    assert handle.read() == float(opt.learning_rate) == pytest.approx(0.1)
    handle.write(0.025)
    assert float(opt.learning_rate) == float(inner.learning_rate) == handle.read() == pytest.approx(0.025)
    assert handle.holds(0.025, handle.read()) and not handle.holds(0.0125, handle.read())
    opt.learning_rate = 0.5  # written through Keras' setter: the one-op read sees it
    assert handle.read() == 0.5


def test_an_epoch_end_that_keeps_the_lr_does_not_write_it_and_a_drop_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from autodrop_tf import _variables

    writes: list[float] = []
    real = _variables.LrHandle.write
    monkeypatch.setattr(_variables.LrHandle, "write", lambda self, lr: writes.append(lr) or real(self, lr))
    v = tf.Variable([1.0, 2.0, 3.0])
    opt = keras.optimizers.SGD(learning_rate=0.1)
    autodrop = AutoDrop([v], opt, drop_delay=1, threshold=45.0, max_threshold=90.0)
    writes.clear()
    start, lrs = autodrop.lr, []
    for step in ([0.5, 0.5, 0.5], [0.5, 0.5, 0.6], [0.5, 0.5, 0.5], [0.5, 0.6, 0.5]):
        v.assign_add(step)
        lrs.append(autodrop.end_epoch().lrs[0])
    drops = [b for a, b in zip([start, *lrs], lrs) if b != a]
    assert drops and writes == drops, (lrs, writes)
    assert float(opt.learning_rate) == pytest.approx(lrs[-1])
    opt.learning_rate = 0.3  # another writer is still caught, although AutoDrop skipped its writes
    v.assign_add([0.5, 0.5, 0.5])
    with pytest.raises(LRConflictError):
        autodrop.end_epoch()
