"""The numpy reference adapter: steps, reductions, the linear-weight average, checkpoints, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from autodrop_numpy import NumpyAutoDrop, reduce_steps
from hypothesis import given, settings
from hypothesis import strategies as st

from autodrop_core import AutoDropConfig, Controller, InvalidReductionError


def saturating_trajectory(shapes: list[tuple[int, ...]], epochs: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Steps that repeat one direction with tiny noise, so the angle is flat and triggers."""
    rng = np.random.default_rng(seed)
    base = [rng.standard_normal(s) for s in shapes]
    return [[b + 1e-9 * rng.standard_normal(b.shape) for b in base] for _ in range(epochs)]


def train(adapter: NumpyAutoDrop, steps: list[list[np.ndarray]]) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Add each step to the parameters as the adapter left them; record x(t) and x̂(t) per epoch."""
    seen = []
    for step in steps:
        for p, s in zip(adapter.params, step):
            p += s.astype(p.dtype)
        before = [p.copy() for p in adapter.params]
        adapter.end_epoch()
        seen.append((before, [p.copy() for p in adapter.params]))
    return seen


def test_reductions_are_formed_from_elementwise_steps_in_float64() -> None:
    params = [np.array([1.0, 2.0], np.float32), np.array(3.0)]
    snapshot = [np.array([0.5, 2.5], np.float32), np.array(1.0)]
    prev = [np.array([2.0, 4.0]), np.array(-1.0)]
    dot, sq, steps = reduce_steps(params, snapshot, prev)
    assert (dot, sq) == (0.5 * 2.0 + -0.5 * 4.0 + 2.0 * -1.0, 0.25 + 0.25 + 4.0)
    assert all(s.dtype == np.float64 for s in steps)


def test_decisions_equal_the_core_fed_with_independently_computed_reductions() -> None:
    steps = saturating_trajectory([(3, 4), (5,)], epochs=12)
    adapter = NumpyAutoDrop([np.zeros((3, 4)), np.zeros(5)], lrs=0.1, drop_delay=3)
    seen = train(adapter, steps)
    controller = Controller(AutoDropConfig(lrs=(0.1,), drop_delay=3))
    start = np.zeros(17)
    prev_step = np.zeros(17)
    for (x, after), decision in zip(seen, adapter.history):
        step = np.concatenate([p.ravel() for p in x]) - start
        expected = controller.observe(float(step @ prev_step), float(step @ step))
        # one flat dot vs per-tensor partial sums: equal up to rounding (angles near 0 amplify it)
        for field in ("epoch", "triggered", "average_weight", "apply_average", "dropped", "exhausted", "lrs"):
            assert getattr(expected, field) == getattr(decision, field), field
        for field in ("angle", "smoothed_angle", "delta"):
            assert getattr(expected, field) == pytest.approx(getattr(decision, field), abs=1e-5), field
        prev_step = step
        start = np.concatenate([p.ravel() for p in after])  # the average, when one was applied
    assert any(d.dropped for d in adapter.history)


@pytest.mark.parametrize("drop_delay", [1, 2, 5, 20])
def test_average_is_the_papers_linearly_weighted_mean(drop_delay: int) -> None:
    rng = np.random.default_rng(drop_delay)
    adapter = NumpyAutoDrop([np.zeros(6)], lrs=0.1, drop_delay=drop_delay, threshold=1e9, max_threshold=1e9)
    seen = []
    for _ in range(2 + drop_delay):  # epoch 3 triggers (any delta < 1e9), drop at 2 + drop_delay
        adapter.params[0] += rng.standard_normal(6)
        seen.append(adapter.params[0].copy())
        decision = adapter.end_epoch()
    assert decision.apply_average and decision.dropped
    window = seen[2:]  # x(3) .. x(2 + n_d)
    direct = sum((j + 1) * x for j, x in enumerate(window)) / (drop_delay * (drop_delay + 1) / 2)
    np.testing.assert_allclose(adapter.params[0], direct, rtol=1e-13, atol=1e-13)


def test_average_is_written_in_place_into_the_callers_arrays() -> None:
    param = np.zeros(4, np.float32)
    adapter = NumpyAutoDrop([param], lrs=0.1, drop_delay=2, threshold=1e9, max_threshold=1e9)
    for value in (1.0, 2.0, 3.0, 5.0):
        param += value
        adapter.end_epoch()
    assert adapter.params[0] is param
    np.testing.assert_array_equal(param, np.full(4, (6.0 * 1 + 11.0 * 2) / 3, np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_zero_dimensional_and_empty_arrays_are_accepted(dtype: type[np.floating]) -> None:
    params = [np.array(1.0, dtype), np.zeros((0, 3), dtype), np.ones((2, 2), dtype)]
    adapter = NumpyAutoDrop(params, lrs=(0.1, 0.2), drop_delay=2, threshold=1e9, max_threshold=1e9)
    for _ in range(5):
        for p in params:
            p += dtype(0.25)
        adapter.end_epoch()
    assert adapter.history[-2].dropped
    assert adapter.lrs[0] < 0.1 and all(p.dtype == dtype for p in params)


def test_non_float_arrays_are_refused() -> None:
    with pytest.raises(TypeError, match=r"params\[1\] must be a numpy array of a float dtype, got int64"):
        NumpyAutoDrop([np.zeros(2), np.zeros(2, np.int64)], lrs=0.1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_parameters_are_rejected_naming_epoch_and_tensor_and_nothing_changes(bad: float) -> None:
    params = [np.zeros(3), np.zeros(2)]
    adapter = NumpyAutoDrop(params, lrs=0.1, drop_delay=4)
    train(adapter, saturating_trajectory([(3,), (2,)], epochs=4))  # inside an averaging window
    before = adapter.state_dict()
    params[1][0] = bad
    with pytest.raises(InvalidReductionError, match=r"epoch 5: .*params\[1\] holds NaN or infinity"):
        adapter.end_epoch()
    after = adapter.state_dict()
    assert after["core"] == before["core"]
    for key in ("snapshot", "prev_step", "average"):
        for a, b in zip(after[key], before[key]):
            np.testing.assert_array_equal(a, b)
    assert len(adapter.history) == 4


@settings(max_examples=40, deadline=None)
@given(split=st.integers(0, 14), delay=st.integers(1, 5))
def test_state_dict_resume_reproduces_the_uninterrupted_run(split: int, delay: int) -> None:
    steps = saturating_trajectory([(4,), ()], epochs=14, seed=delay)
    whole = NumpyAutoDrop([np.zeros(4), np.array(0.0)], lrs=0.3, drop_delay=delay)
    train(whole, steps)

    first = NumpyAutoDrop([np.zeros(4), np.array(0.0)], lrs=0.3, drop_delay=delay)
    train(first, steps[:split])
    saved = first.state_dict()
    params = [p.copy() for p in first.params]
    second = NumpyAutoDrop([p.copy() for p in params], lrs=99.0)  # config comes from the checkpoint
    second.load_state_dict(saved)
    train(second, steps[split:])
    assert first.history + second.history == whole.history
    for a, b in zip(second.params, whole.params):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_refuses_mismatched_shapes_and_keeps_state() -> None:
    adapter = NumpyAutoDrop([np.zeros(3)], lrs=0.1)
    saved = NumpyAutoDrop([np.zeros(4)], lrs=0.1).state_dict()
    before = adapter.state_dict()
    with pytest.raises(ValueError, match=r"snapshot\[0\] has shape \(4,\), expected \(3,\)"):
        adapter.load_state_dict(saved)
    assert adapter.state_dict()["core"] == before["core"]


def noisy_trajectory(shapes: list[tuple[int, ...]], epochs: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Steps of one drift plus as much noise: a stationary, jittering angle, as at saturation."""
    rng = np.random.default_rng(seed)
    base = [rng.standard_normal(s) for s in shapes]
    return [[b + rng.standard_normal(b.shape) for b in base] for _ in range(epochs)]


def test_the_calibrated_trigger_resumes_exactly_from_a_state_dict_mid_history() -> None:
    steps = noisy_trajectory([(6,), (2, 3)], epochs=60, seed=4)
    settings = {"trigger": "calibrated", "drop_delay": 4, "drop_factor": 0.5}
    whole = NumpyAutoDrop([np.zeros(6), np.zeros((2, 3))], lrs=0.3, **settings)
    train(whole, steps)
    assert any(d.dropped for d in whole.history) and any(d.rise is not None for d in whole.history)
    first = NumpyAutoDrop([np.zeros(6), np.zeros((2, 3))], lrs=0.3, **settings)
    train(first, steps[:33])
    second = NumpyAutoDrop([p.copy() for p in first.params], lrs=0.3)
    second.load_state_dict(first.state_dict())
    assert second.controller.config.trigger == "calibrated"
    train(second, steps[33:])
    assert first.history + second.history == whole.history
