"""The low-level ``AutoDrop`` against the numpy reference, the spec's bad-input rule and checkpoints."""

from __future__ import annotations

import json
import math
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from autodrop_numpy import NumpyAutoDrop
from autodrop_tf import AutoDrop, _ops
from autodrop_tf._ops import cast_rounded

from autodrop_core import ConfigError, InvalidReductionError, StateError

SHAPES = [(3, 4), (5,), (), (2, 2, 2)]
SETTINGS: dict[str, Any] = {"drop_delay": 3, "threshold": 5.0, "max_threshold": 50.0}


class Walk:
    """Parameters that drift along a fixed direction plus noise, as tf and numpy twins."""

    def __init__(self, seed: int = 0, shapes: list[tuple[int, ...]] = SHAPES, dtype: Any = np.float32) -> None:
        self.rng = np.random.default_rng(seed)
        start = [self.rng.standard_normal(s).astype(dtype) for s in shapes]
        self.direction = [self.rng.standard_normal(s).astype(dtype) for s in shapes]
        self.tf_vars = [tf.Variable(a) for a in start]
        self.np_arrays = [a.copy() for a in start]
        self.stats = tf.Variable(np.zeros(3, np.float32))

    def train(self, lr: float) -> list[np.ndarray]:
        """One 'epoch': the same float32 step added to both twins; returns x(t)."""
        for var, arr, d in zip(self.tf_vars, self.np_arrays, self.direction):
            step = ((d + 0.2 * self.rng.standard_normal(d.shape)) * lr).astype(d.dtype)
            var.assign_add(step)
            arr += step
        self.stats.assign_add(np.float32(1.0) + np.zeros(3, np.float32))
        return [v.numpy() for v in self.tf_vars]


@pytest.fixture(params=["one chunk per variable", "chunks of 5 elements"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a test with the default chunk size (one chunk for these small variables) and with tiny chunks."""
    if request.param == "chunks of 5 elements":
        monkeypatch.setattr(_ops, "CHUNK", 5)


def _same_decision(got: Any, expected: Any) -> None:
    a, b = got.to_dict(), expected.to_dict()
    measured = ("threshold", "rise") if b["rise"] is not None else ()  # the calibrated trigger's statistics
    for key in ("angle", "smoothed_angle", "delta", "average_weight", *measured):
        if b[key] is None:
            assert a[key] is None, key
        else:
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-10), key
            a[key] = b[key]
    assert a == b


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_decisions_averages_and_lrs_match_the_numpy_reference_epoch_by_epoch(dtype: Any, chunking: None) -> None:
    walk = Walk(dtype=dtype)
    autodrop = AutoDrop(walk.tf_vars, lrs=0.1, extra_variables=[walk.stats], **SETTINGS)
    reference = NumpyAutoDrop(walk.np_arrays, 0.1, **SETTINGS)
    for t in range(24):
        walk.train(autodrop.lr)
        _same_decision(autodrop.end_epoch(), reference.end_epoch())
        for var, arr in zip(walk.tf_vars, walk.np_arrays):
            np.testing.assert_array_equal(var.numpy(), arr, err_msg=f"epoch {t + 1}")
    assert sum(d.dropped for d in reference.history) >= 2


def test_the_calibrated_trigger_matches_the_numpy_reference(chunking: None) -> None:
    settings = {"trigger": "calibrated", "drop_delay": 3, "drop_factor": 0.5}
    walk = Walk(seed=3)
    autodrop = AutoDrop(walk.tf_vars, lrs=0.1, **settings)
    reference = NumpyAutoDrop(walk.np_arrays, 0.1, **settings)
    for t in range(60):
        walk.train(autodrop.lr)
        got, expected = autodrop.end_epoch(), reference.end_epoch()
        for key in ("threshold", "rise"):
            a, b = getattr(got, key), getattr(expected, key)
            assert (a is None) == (b is None), key
            if a is not None:
                assert a == pytest.approx(b, rel=1e-12, abs=1e-10), key
        _same_decision(got, expected)
        for var, arr in zip(walk.tf_vars, walk.np_arrays):
            np.testing.assert_array_equal(var.numpy(), arr, err_msg=f"epoch {t + 1}")
    assert sum(d.dropped for d in reference.history) >= 1


def test_a_float16_average_is_rounded_once_like_numpy_astype() -> None:
    tie_plus = 1 + 2**-11 + 2**-40  # just above a float16 tie; rounding via float32 would land on the tie
    values = np.array([tie_plus, -tie_plus, 1 + 2**-11, 0.0, 1e-9, 6e4, -65519.0], np.float64)
    got = cast_rounded(tf.constant(values), tf.float16).numpy()
    np.testing.assert_array_equal(got.view(np.uint16), values.astype(np.float16).view(np.uint16))
    assert tf.cast(tf.constant(values), tf.float16).numpy()[0] != got[0]  # plain tf.cast rounds twice


def test_extra_variables_are_averaged_with_the_same_weights_but_not_measured(chunking: None) -> None:
    walk = Walk()
    autodrop = AutoDrop(walk.tf_vars, lrs=0.1, extra_variables=[walk.stats], **SETTINGS)
    n = SETTINGS["drop_delay"]
    seen: list[float] = []
    for _ in range(24):
        walk.train(autodrop.lr)
        seen.append(float(walk.stats.numpy()[0]))
        decision = autodrop.end_epoch()
        if decision.apply_average:
            expected = sum((j + 1) * v for j, v in enumerate(seen[-n:])) / (n * (n + 1) / 2)
            assert walk.stats.numpy() == pytest.approx([expected] * 3, rel=1e-7)
            seen[-1] = float(walk.stats.numpy()[0])
        else:
            assert walk.stats.numpy()[0] == seen[-1]
    assert any(d.apply_average for d in autodrop.history)


def test_reductions_accumulate_in_float64_over_millions_of_float32_elements() -> None:
    n = 2_000_000
    rng = np.random.default_rng(3)
    start = (1.0 + rng.standard_normal(n)).astype(np.float32)
    first = 1e-3 * rng.standard_normal(n)
    steps = [first.astype(np.float32), (first + 1e-5 * rng.standard_normal(n)).astype(np.float32)]  # ~0.6 degrees
    var = tf.Variable(start)
    autodrop = AutoDrop([var], lrs=0.1)
    x0 = start.astype(np.float64)
    var.assign_add(steps[0])
    x1 = var.numpy().astype(np.float64)
    autodrop.end_epoch()
    var.assign_add(steps[1])
    x2 = var.numpy().astype(np.float64)
    s1, s2 = x1 - x0, x2 - x1
    exact = math.degrees(math.acos(math.fsum(s1 * s2) / math.sqrt(math.fsum(s1 * s1) * math.fsum(s2 * s2))))
    decision = autodrop.end_epoch()
    assert decision.angle == pytest.approx(exact, abs=1e-9)
    assert autodrop.last_reductions == pytest.approx((math.fsum(s1 * s2), math.fsum(s2 * s2)), rel=1e-12)
    # float32 dot products (one tensordot each) miss by far more: the test tells the two apart
    a, b = (x1 - x0).astype(np.float32), (x2 - x1).astype(np.float32)
    naive = float(tf.tensordot(a, b, 1)) / math.sqrt(float(tf.tensordot(a, a, 1)) * float(tf.tensordot(b, b, 1)))
    assert abs(math.degrees(math.acos(min(1.0, naive))) - exact) > 1e-5


def test_nan_in_a_variable_is_refused_naming_the_epoch_and_leaves_everything_unchanged() -> None:
    walk, twin = Walk(), Walk()
    autodrop = AutoDrop(walk.tf_vars, lrs=0.1, **SETTINGS)
    reference = AutoDrop(twin.tf_vars, lrs=0.1, **SETTINGS)
    for _ in range(4):
        walk.train(autodrop.lr), twin.train(reference.lr)
        autodrop.end_epoch(), reference.end_epoch()
    walk.train(autodrop.lr), twin.train(reference.lr)
    before = autodrop.state_dict()
    good = walk.tf_vars[1].numpy()
    walk.tf_vars[1].assign(np.full(good.shape, np.nan, np.float32))
    with pytest.raises(InvalidReductionError, match=r"epoch 5: .*nan.*holds NaN or infinity") as info:
        autodrop.end_epoch()
    assert info.value.epoch == 5
    after = autodrop.state_dict()
    assert after["core"] == before["core"]
    assert set(after) == set(before)
    for key in ("snapshot", "step_base", "step_head", "average", "extra_average"):
        assert (after[key] is None) == (before[key] is None), key
        for a, b in zip(after[key] or [], before[key] or []):
            np.testing.assert_array_equal(a, b)
    walk.tf_vars[1].assign(good)  # the caller repairs the epoch and retries it
    for _ in range(6):
        _same_decision(autodrop.end_epoch(), reference.end_epoch())
        walk.train(autodrop.lr), twin.train(reference.lr)


@pytest.mark.parametrize("how", ["tf.train.Checkpoint", "state_dict"])
def test_a_restored_autodrop_continues_exactly_like_the_uninterrupted_one(
    how: str, tmp_path: Any, chunking: None
) -> None:
    walk, twin = Walk(), Walk()
    original = AutoDrop(walk.tf_vars, lrs=0.1, extra_variables=[walk.stats], **SETTINGS)
    for _ in range(20):
        walk.train(original.lr)
        if original.end_epoch().triggered:
            break
    assert original.controller.state.pending == 1, "the save must fall inside an averaging window"
    for arr, var in zip(twin.np_arrays, walk.tf_vars):
        arr[...] = var.numpy()
    twin.rng = np.random.default_rng(99)
    walk.rng = np.random.default_rng(99)
    fresh_vars = [tf.Variable(v.numpy()) for v in walk.tf_vars]
    stats = tf.Variable(walk.stats.numpy())
    restored = AutoDrop(fresh_vars, lrs=0.5, extra_variables=[stats], **SETTINGS)
    if how == "state_dict":
        restored.load_state_dict(original.state_dict())
    else:
        path = tf.train.Checkpoint(autodrop=original).write(str(tmp_path / "ad"))
        tf.train.Checkpoint(autodrop=restored).read(path).assert_consumed()
    twin.tf_vars, twin.stats = fresh_vars, stats
    assert restored.lr == original.lr and restored.epoch == original.epoch
    for _ in range(10):
        walk.train(original.lr), twin.train(restored.lr)
        assert restored.end_epoch().to_dict() == original.end_epoch().to_dict()
        for a, b in zip(fresh_vars, walk.tf_vars):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(d.apply_average for d in original.history[-10:])


def test_a_checkpoint_with_other_settings_is_refused_naming_them() -> None:
    walk = Walk()
    saved = AutoDrop(walk.tf_vars, lrs=0.1, drop_delay=3).state_dict()
    other = AutoDrop(walk.tf_vars, lrs=0.1, drop_delay=4)
    with pytest.raises(StateError, match=r"drop_delay: checkpoint 3, here 4"):
        other.load_state_dict(saved)


def test_the_lr_is_written_into_a_keras_optimizer_or_a_tf_variable() -> None:
    walk = Walk()
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    lr_var = tf.Variable(0.1, dtype=tf.float64)
    by_optimizer = AutoDrop(walk.tf_vars, optimizer, drop_delay=1, threshold=50.0, max_threshold=90.0)
    by_variable = AutoDrop(walk.tf_vars, lr_var, drop_delay=1, threshold=50.0, max_threshold=90.0)
    assert by_optimizer.lr == pytest.approx(0.1) and by_variable.lr == 0.1
    AutoDrop(walk.tf_vars, lr_var, lrs=0.25)  # an explicit starting lr is written at once
    assert lr_var.numpy() == 0.25
    lr_var.assign(0.1)
    for _ in range(8):
        walk.train(0.1)
        by_optimizer.end_epoch(), by_variable.end_epoch()
    assert by_variable.lr < 0.1 and lr_var.numpy() == by_variable.lr
    assert by_optimizer.lr < 0.1
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(by_optimizer.lr, rel=1e-7)


def test_setup_errors_say_what_is_wrong() -> None:
    walk = Walk()
    with pytest.raises(ValueError, match="exactly one learning rate"):
        AutoDrop(walk.tf_vars, lrs=[0.1, 0.2])
    with pytest.raises(ValueError, match="lrs=None needs an optimizer"):
        AutoDrop(walk.tf_vars)
    with pytest.raises(TypeError, match=r"variables\[1\] .*int32.*float dtype"):
        AutoDrop([walk.tf_vars[0], tf.Variable([1, 2])], lrs=0.1)
    with pytest.raises(TypeError, match="callable"):
        AutoDrop(walk.tf_vars, keras.optimizers.SGD(learning_rate=lambda: 0.1))
    with pytest.raises(ConfigError, match=r"drop_delay=0 is invalid"):
        AutoDrop(walk.tf_vars, lrs=0.1, drop_delay=0)


def test_a_checkpoint_whose_layout_does_not_fit_its_buffers_is_refused(tmp_path: Any) -> None:
    walk = Walk()
    original = AutoDrop(walk.tf_vars, lrs=0.1, **SETTINGS)
    for _ in range(20):
        walk.train(original.lr)
        if original.end_epoch().triggered:
            break
    assert original.controller.state.pending == 1
    meta = json.loads(original.meta.numpy())
    meta["layout"]["average"] = False  # says no running average although a drop is pending
    original.meta.assign(json.dumps(meta).encode())
    path = tf.train.Checkpoint(autodrop=original).write(str(tmp_path / "ad"))
    restored = AutoDrop([tf.Variable(v.numpy()) for v in walk.tf_vars], lrs=0.1, **SETTINGS)
    tf.train.Checkpoint(autodrop=restored).read(path).assert_consumed()
    with pytest.raises(StateError, match=r"inconsistent: layout says average=False but the core has pending=True"):
        restored.end_epoch()
    meta["layout"]["average"] = True
    meta["layout"]["head"] = True  # says x(t-1) is held, but the buffer is empty
    original.meta.assign(json.dumps(meta).encode())
    path = tf.train.Checkpoint(autodrop=original).write(str(tmp_path / "ad2"))
    tf.train.Checkpoint(autodrop=restored).read(path).assert_consumed()
    with pytest.raises(StateError, match=r"step_head\[0\] .* has shape \(0,\), expected \(3, 4\)"):
        restored.end_epoch()
