"""The calibrated trigger, rule by rule (docs/spec.md, "The calibrated trigger").

Each test feeds the core angle sequences with a known shape (built from exact
reductions: unit steps whose dot is the cosine of the wanted angle) and checks when
the flatness test passes and what the decision reports.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from autodrop_core import AutoDropConfig, AutoDropState, ConfigError, Controller, StateError, advance, initial_state
from autodrop_core._calibrated import MAX_HISTORY, MIN_WINDOW, flatness_test


def reductions_for(angles: list[float]) -> list[tuple[float, float]]:
    """(dot, sq_norm) pairs whose angles are `angles` from epoch 2 on (epoch 1 is undefined)."""
    return [(0.0, 1.0)] + [(math.cos(math.radians(a)), 1.0) for a in angles]


def run(angles: list[float], **settings: object) -> list:
    config = AutoDropConfig(lrs=(0.1,), trigger="calibrated", **settings)  # type: ignore[arg-type]
    controller = Controller(config)
    return [controller.observe(dot, sq) for dot, sq in reductions_for(angles)]


def noisy(level: float, n: int, sigma: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [min(180.0, max(0.0, level + rng.gauss(0.0, sigma))) for _ in range(n)]


def rise_then_level(sigma: float, seed: int = 0) -> list[float]:
    """A rise from 60 to 100 degrees over 20 epochs, then a level of 100 degrees, with noise."""
    rng = random.Random(seed)
    rise = [60.0 + 2.0 * i + rng.gauss(0.0, sigma) for i in range(20)]
    return rise + noisy(100.0, 80, sigma, seed + 1)


def first_trigger(decisions: list) -> int | None:
    return next((d.epoch for d in decisions if d.triggered), None)


def test_it_needs_two_minimum_windows_of_angles_before_it_can_fire() -> None:
    decisions = run([90.0] * 40, drop_delay=100)
    assert all(d.delta is None and d.threshold is None for d in decisions[: 2 * MIN_WINDOW])
    # epoch 1 has no angle, so the 2 * MIN_WINDOW-th angle arrives at epoch 2 * MIN_WINDOW + 1
    assert first_trigger(decisions) == 2 * MIN_WINDOW + 1


@pytest.mark.parametrize("sigma", [0.01, 1.0, 5.0])
def test_a_rise_then_a_level_fires_soon_after_the_level_whatever_the_noise(sigma: float) -> None:
    epochs = [first_trigger(run(rise_then_level(sigma, seed), drop_delay=1000)) for seed in range(10)]
    assert all(e is not None for e in epochs), epochs
    # the level starts at epoch 22 (the rise is 2 degrees per epoch): the test window must be
    # mostly level before it fires; with 5 degrees of noise the end of the rise is blurred
    assert all(25 <= e <= 70 for e in epochs), epochs  # type: ignore[operator]


@pytest.mark.parametrize("sigma", [0.1, 1.0])
def test_a_steady_rise_never_fires(sigma: float) -> None:
    rng = random.Random(3)
    angles = [40.0 + 0.5 * i + rng.gauss(0.0, sigma) for i in range(200)]
    assert first_trigger(run(angles, drop_delay=1000)) is None


def test_a_plateau_reached_by_a_fall_is_not_saturation() -> None:
    # The small MNIST-1D CNN: the angle falls from about 50 to a plateau near 36 degrees
    # for a while, then climbs towards 90. The level is flat but below what came before.
    fall = [50.0 - 0.7 * i for i in range(20)]
    plateau = noisy(36.0, 40, 1.0, seed=4)
    decisions = run(fall + plateau, drop_delay=1000)
    assert first_trigger(decisions) is None
    assert all(d.rise < 0 for d in decisions if d.rise is not None and d.delta <= d.threshold)


def test_the_decision_reports_the_test_statistics() -> None:
    angles = rise_then_level(1.0)
    decisions = run(angles, drop_delay=1000)
    d = decisions[60]
    test = flatness_test(tuple(x.angle for x in decisions[:61] if x.angle is not None))
    assert test is not None
    assert (d.delta, d.threshold, d.smoothed_angle, d.rise) == (test.change, test.noise, test.window_mean, test.rise)
    assert d.triggered == test.flat or decisions[59].triggered or any(x.average_weight for x in decisions[:60])


def test_the_window_is_the_later_half_and_noise_is_the_successive_difference_estimate() -> None:
    # 20 angles: a burn-in of 10 at 50 degrees, then 10 alternating 99/101 degrees (level, noise 1.41)
    level = [99.0, 101.0] * 5
    test = flatness_test(tuple([50.0] * 10 + level))
    assert test is not None
    assert test.window_mean == 100.0 and test.rise == 50.0
    assert test.noise == pytest.approx(math.sqrt(9 * 4.0 / 18))
    # the least-squares slope of 99, 101, ... is 5 / 82.5 = 0.0606 per epoch, over 9 epochs
    assert test.change == pytest.approx(5 / 82.5 * 9)
    assert test.flat


def test_history_restarts_at_every_applied_average_and_the_next_test_waits_again() -> None:
    angles = rise_then_level(0.5) + rise_then_level(0.5, seed=7)
    decisions = run(angles, drop_delay=5)
    drops = [d.epoch for d in decisions if d.apply_average]
    assert drops
    after = [d for d in decisions if d.epoch > drops[0]]
    assert all(d.threshold is None for d in after[: 2 * MIN_WINDOW - 1])


def test_an_undefined_angle_is_skipped_not_a_reset() -> None:
    config = AutoDropConfig(lrs=(0.1,), trigger="calibrated", drop_delay=1000)
    state = initial_state(config)
    for dot, sq in reductions_for([90.0] * 15):
        _, state = advance(config, state, dot, sq)
    _, state = advance(config, state, 0.0, 0.0)  # a zero step: undefined angle
    assert len(state.recent) == 15
    _, state = advance(config, state, 0.0, 1.0)  # the next angle is undefined too (previous step was zero)
    _, state = advance(config, state, 0.0, 1.0)  # 90 degrees again
    assert len(state.recent) == 16


def test_history_is_bounded() -> None:
    config = AutoDropConfig(lrs=(0.1,), trigger="calibrated", drop_delay=1000)
    state = initial_state(config)
    rng = random.Random(0)
    for i in range(MAX_HISTORY + 50):
        _, state = advance(config, state, math.cos(math.radians(20 + i * 0.5 + rng.random())), 1.0)
    assert len(state.recent) == MAX_HISTORY


def test_the_paper_trigger_keeps_its_behaviour_and_reports_no_rise() -> None:
    decisions = [Controller(AutoDropConfig(lrs=(0.1,))).observe(0.0, 1.0)]
    assert decisions[0].rise is None
    assert decisions[0].to_dict()["rise"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 0.5), ("max_threshold", 2.0), ("angle_window", 3), ("reset_on_drop", True)],
)
def test_settings_it_would_ignore_are_refused_by_name(field: str, value: object) -> None:
    expected = rf"^{field}={value!r} is invalid: expected its default .* trigger='calibrated'"
    with pytest.raises(ConfigError, match=expected):
        AutoDropConfig(lrs=(0.1,), trigger="calibrated", **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["Calibrated", "", None, 1])
def test_an_unknown_trigger_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^trigger=.* is invalid: expected one of 'paper', 'calibrated'"):
        AutoDropConfig(lrs=(0.1,), trigger=value)  # type: ignore[arg-type]


def test_a_checkpoint_resumes_mid_history_exactly() -> None:
    angles = rise_then_level(1.0)
    config = AutoDropConfig(lrs=(0.1,), trigger="calibrated", drop_delay=4)
    whole = Controller(config)
    expected = [whole.observe(dot, sq) for dot, sq in reductions_for(angles)]
    first = Controller(config)
    seq = reductions_for(angles)
    for dot, sq in seq[:37]:
        first.observe(dot, sq)
    resumed = Controller.from_dict(json.loads(json.dumps(first.to_dict())))
    assert [resumed.observe(dot, sq) for dot, sq in seq[37:]] == expected[37:]


def test_a_version_1_state_still_loads() -> None:
    config = AutoDropConfig(lrs=(0.1,))
    old = initial_state(config).to_dict()
    del old["recent"]
    old["version"] = 1
    assert AutoDropState.from_dict(old, config) == initial_state(config)


def test_a_config_without_a_trigger_field_is_the_paper_rule() -> None:
    data = AutoDropConfig(lrs=(0.1,)).to_dict()
    del data["trigger"]
    assert AutoDropConfig.from_dict(data).trigger == "paper"


@pytest.mark.parametrize("recent", [[-1.0], [181.0], [90.0] * (MAX_HISTORY + 1)])
def test_impossible_histories_are_refused(recent: list[float]) -> None:
    config = AutoDropConfig(lrs=(0.1,), trigger="calibrated")
    data = initial_state(config).to_dict() | {"recent": recent}
    with pytest.raises(StateError, match="state recent="):
        AutoDropState.from_dict(data, config)


def test_a_paper_state_may_not_carry_a_history() -> None:
    config = AutoDropConfig(lrs=(0.1,))
    with pytest.raises(StateError, match="at most 0 angles"):
        AutoDropState.from_dict(initial_state(config).to_dict() | {"recent": [90.0]}, config)
