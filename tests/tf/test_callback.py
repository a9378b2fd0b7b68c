"""The Keras callback against an independent computation of the spec, epoch by epoch."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from autodrop_numpy import NumpyAutoDrop
from autodrop_tf import AutoDropCallback

from autodrop_core import AutoDropConfig, advance, initial_state

EPOCHS = 16


@pytest.fixture(scope="module")
def fitted(scenario: Any) -> dict[str, Any]:
    """One recorded ``model.fit`` with the callback, shared by the tests of this module."""
    model = scenario.make_model()
    before, after = scenario.Recorder(), scenario.Recorder()
    callback = AutoDropCallback(**scenario.SETTINGS)
    history = scenario.fit(model, [before, callback, after], EPOCHS)
    return {"model": model, "before": before, "after": after, "callback": callback, "history": history}


def _flat64(arrays: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(a, np.float64).ravel() for a in arrays]


def test_decisions_match_the_core_fed_with_the_weights_fit_produced(fitted: dict[str, Any], scenario: Any) -> None:
    before, after = fitted["before"], fitted["after"]
    decisions = fitted["callback"].autodrop.history
    config = AutoDropConfig(lrs=(before.lrs[0],), **scenario.SETTINGS)
    state = initial_state(config)
    snapshot = _flat64(before.start[0])
    prev = [np.zeros_like(s) for s in snapshot]
    for t in range(EPOCHS):
        x = _flat64(before.xs[t])
        steps = [xi - si for xi, si in zip(x, snapshot)]
        dot = sum(float(np.dot(s, p)) for s, p in zip(steps, prev))
        sq_norm = sum(float(np.dot(s, s)) for s in steps)
        expected, state = advance(config, state, dot, sq_norm)
        got = decisions[t]
        assert (got.epoch, got.triggered, got.apply_average, got.dropped, got.lrs) == (
            expected.epoch, expected.triggered, expected.apply_average, expected.dropped, expected.lrs
        ), f"epoch {t + 1}"
        assert (got.angle is None) == (expected.angle is None)
        if expected.angle is not None:
            assert got.angle == pytest.approx(expected.angle, rel=1e-12, abs=1e-9)
        snapshot, prev = _flat64(after.xs[t]), steps
    assert any(d.dropped for d in decisions), "the scenario must exercise at least one drop"


def test_the_optimizer_trains_each_epoch_with_the_lr_of_the_previous_decision(fitted: dict[str, Any]) -> None:
    decisions, lrs = fitted["callback"].autodrop.history, fitted["before"].lrs
    for t in range(1, EPOCHS):
        assert lrs[t] == pytest.approx(decisions[t - 1].lrs[0], rel=1e-7), f"epoch {t + 1}"


def test_an_applied_average_is_the_linearly_weighted_mean_of_the_window(fitted: dict[str, Any], scenario: Any) -> None:
    before, after = fitted["before"], fitted["after"]
    decisions = fitted["callback"].autodrop.history
    n = scenario.SETTINGS["drop_delay"]
    applied = [t for t, d in enumerate(decisions) if d.apply_average]
    assert applied
    for t in range(EPOCHS):
        for kind in ("xs", "stats"):
            got, window = getattr(after, kind)[t], [getattr(before, kind)[j] for j in range(t - n + 1, t + 1)]
            if t not in applied:
                assert all(np.array_equal(a, b) for a, b in zip(got, window[-1])), f"epoch {t + 1}: {kind} changed"
                continue
            for i, value in enumerate(got):
                weighted = sum((j + 1) * np.asarray(w[i], np.float64) for j, w in enumerate(window)) / (n * (n + 1) / 2)
                np.testing.assert_allclose(value, weighted, rtol=2e-7, atol=1e-7, err_msg=f"epoch {t + 1} {kind}[{i}]")


def test_the_numpy_reference_fed_the_same_weights_decides_and_averages_identically(
    fitted: dict[str, Any], scenario: Any
) -> None:
    before, after = fitted["before"], fitted["after"]
    tf_decisions = fitted["callback"].autodrop.history
    params = [a.copy() for a in before.start[0]]
    reference = NumpyAutoDrop(params, before.lrs[0], **scenario.SETTINGS)
    for t in range(EPOCHS):
        for p, x in zip(params, before.xs[t]):
            p[...] = x
        expected = reference.end_epoch()
        assert tf_decisions[t].to_dict()["lrs"] == expected.to_dict()["lrs"]
        got = tf_decisions[t]
        assert (got.triggered, got.apply_average) == (expected.triggered, expected.apply_average)
        for p, x in zip(params, after.xs[t]):
            np.testing.assert_array_equal(p, x, err_msg=f"epoch {t + 1}")


def test_logs_carry_the_lr_used_in_each_epoch_and_the_angle(fitted: dict[str, Any]) -> None:
    logs = fitted["history"].history
    assert logs["learning_rate"] == pytest.approx(fitted["before"].lrs)
    angles = [d.angle for d in fitted["callback"].autodrop.history]
    assert math.isnan(logs["autodrop_angle"][0]) and angles[0] is None
    assert logs["autodrop_angle"][1:] == pytest.approx(angles[1:])


def test_a_learning_rate_schedule_is_refused_at_train_begin_saying_what_to_use(scenario: Any) -> None:
    model = scenario.make_model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    with pytest.raises(TypeError, match=r"LearningRateSchedule \(ExponentialDecay\).*learning_rate=0\.1"):
        scenario.fit(model, [AutoDropCallback()], epochs=1)


def test_bad_settings_are_refused_at_construction_naming_the_value() -> None:
    with pytest.raises(ValueError, match=r"drop_factor=1\.5 .*0 < drop_factor < 1"):
        AutoDropCallback(drop_factor=1.5)
    with pytest.raises(ValueError, match="exactly one learning rate"):
        AutoDropCallback(lrs=(0.1, 0.01))


def test_a_second_fit_from_epoch_zero_starts_afresh_from_the_optimizer_lr(scenario: Any) -> None:
    model = scenario.make_model()
    callback = AutoDropCallback(**scenario.SETTINGS)
    scenario.fit(model, [callback], epochs=2)
    model.optimizer.learning_rate = 0.02
    scenario.fit(model, [callback], epochs=1)
    assert callback.autodrop is not None and callback.autodrop.epoch == 1
    assert callback.autodrop.config.lrs == (pytest.approx(0.02),)


def test_fit_refuses_an_initial_epoch_that_the_state_has_not_reached(scenario: Any) -> None:
    model = scenario.make_model()
    callback = AutoDropCallback(**scenario.SETTINGS)
    scenario.fit(model, [callback], epochs=2)
    with pytest.raises(ValueError, match=r"initial_epoch=5, but AutoDropCallback has observed 2 epochs"):
        scenario.fit(model, [callback], epochs=6, initial_epoch=5)


def test_a_run_resumed_mid_window_from_a_checkpoint_continues_exactly(
    fitted: dict[str, Any], scenario: Any, tmp_path: Any
) -> None:
    uninterrupted = fitted["callback"].autodrop.history
    # stop right after a trigger, so that the checkpoint holds a pending average
    stop = next(d.epoch for d in uninterrupted if d.triggered and d.epoch < EPOCHS - 3)

    model = scenario.make_model()
    callback = AutoDropCallback(**scenario.SETTINGS)
    scenario.fit(model, [callback], epochs=stop)
    assert callback.autodrop is not None and callback.autodrop.controller.state.pending == 1
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer, autodrop=callback.autodrop).write(
        str(tmp_path / "ckpt")
    )

    resumed_model = scenario.make_model()
    resumed_model.optimizer.build(resumed_model.trainable_variables)
    resumed = AutoDropCallback(**scenario.SETTINGS)
    checkpoint = tf.train.Checkpoint(
        model=resumed_model, optimizer=resumed_model.optimizer, autodrop=resumed.build(resumed_model)
    )
    checkpoint.read(path).assert_consumed()
    after = scenario.Recorder()
    scenario.fit(resumed_model, [resumed, after], epochs=EPOCHS, initial_epoch=stop)

    assert [d.to_dict() for d in resumed.autodrop.history] == [d.to_dict() for d in uninterrupted[stop:]]
    for t, weights in enumerate(after.xs, start=stop):
        for got, expected in zip(weights, fitted["after"].xs[t]):
            np.testing.assert_array_equal(got, expected, err_msg=f"epoch {t + 1}")


def test_a_second_fit_never_raises_a_dropped_lr_back_to_the_constructor_lrs(scenario: Any) -> None:
    model = scenario.make_model()
    callback = AutoDropCallback(lrs=0.05, **{**scenario.SETTINGS, "drop_delay": 1, "threshold": 20.0,
                                             "max_threshold": 20.0})
    scenario.fit(model, [callback], epochs=8)
    assert callback.autodrop is not None and any(d.dropped for d in callback.autodrop.history)
    dropped = float(model.optimizer.learning_rate.numpy())
    assert dropped < 0.05
    scenario.fit(model, [callback], epochs=1)
    assert callback.autodrop.config.lrs == (pytest.approx(dropped),)
    assert float(model.optimizer.learning_rate.numpy()) <= dropped


def test_a_numpy_scalar_lr_is_accepted(scenario: Any) -> None:
    model = scenario.make_model()
    callback = AutoDropCallback(lrs=np.float32(0.1), **scenario.SETTINGS)
    scenario.fit(model, [callback], epochs=1)
    assert callback.autodrop is not None and callback.autodrop.config.lrs == (pytest.approx(0.1),)
