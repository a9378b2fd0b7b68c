"""Closed forms: they match the NQM notes, and the simulations match them within sampling error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autodrop_core.nqm import (
    Momentum,
    NoisyQuadratic,
    expected_dynamics,
    figure1_model,
    heavy_ball,
    nesterov,
    participation_ratio,
    sgd,
    simulate,
    stationary_second_moment,
    theorem1_angle,
    theorem1_cosine,
    zhang2019_model,
)


def test_sgd_second_moment_follows_the_notes_closed_form(small_figure1) -> None:
    lr, t, x0 = 0.02, 37, 1.5
    a, var = small_figure1.curvature, small_figure1.variance
    r = 1 - lr * a
    q = r ** (2 * t) * x0**2 + lr**2 * a**2 * var * (1 - r ** (2 * t)) / (1 - r**2)
    dyn = expected_dynamics(small_figure1, lr, t, x0)
    assert dyn.loss[t] == pytest.approx(0.5 * a @ q, rel=1e-12)


def test_stationary_step_expectations_are_theorem1_eq5(small_figure1) -> None:
    lr = 0.05
    a, var = small_figure1.curvature, small_figure1.variance
    dyn = expected_dynamics(small_figure1, lr, 3000, 0.0)  # a_min = 1: 3000 iterations is stationary
    eq5 = -(lr**3) * np.sum(a**3 * var / (2 - lr * a))
    sq = 2 * lr**2 * np.sum(a**2 * var / (2 - lr * a))
    assert dyn.dot[-1] == pytest.approx(eq5, rel=1e-9)
    assert dyn.sq_norm[-1] == pytest.approx(sq, rel=1e-9)
    assert math.cos(math.radians(dyn.ratio_angle()[-1])) == pytest.approx(theorem1_cosine(small_figure1, lr), rel=1e-9)
    assert dyn.loss[-1] == pytest.approx(0.5 * a @ stationary_second_moment(small_figure1, lr), rel=1e-9)


def test_general_momentum_recursion_reduces_to_the_sgd_formulas(small_figure1) -> None:
    schedule = np.r_[np.full(20, 0.06), np.full(20, 0.01)]
    fast = expected_dynamics(small_figure1, schedule, 40, 1.0)
    general = expected_dynamics(small_figure1, schedule, 40, 1.0, optimizer=Momentum(0.3, 1e-300))
    for field in ("loss", "dot", "sq_norm"):
        np.testing.assert_allclose(getattr(fast, field), getattr(general, field), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("optimizer", [sgd(), heavy_ball(0.7), nesterov(0.7)], ids=lambda o: o.name)
def test_simulated_loss_and_steps_match_the_closed_form(small_figure1, optimizer) -> None:
    """Mean over 24 seeds vs exact expectation, within 4 standard errors at several times."""
    lr, iters, seeds = 0.02, 120, 24
    traj = simulate(small_figure1, [lr], range(seeds), iters, optimizer=optimizer, start=1.0)
    dyn = expected_dynamics(small_figure1, lr, iters, 1.0, optimizer=optimizer)
    for sim, exact in ((traj.loss[0], dyn.loss), (traj.dot[0], dyn.dot), (traj.sq_norm[0], dyn.sq_norm)):
        for t in (5, 30, iters - 1):
            se = sim[:, t].std(ddof=1) / math.sqrt(seeds)
            assert abs(sim[:, t].mean() - exact[t]) <= 4 * se + 1e-12 * abs(exact[t])


def test_theorem1_angle_lies_between_90_and_120_degrees_when_lr_max_a_is_at_most_1() -> None:
    model = figure1_model(n=500)  # max a = 16
    angles = [theorem1_angle(model, lr) for lr in (1 / 16, 0.06, 0.03, 0.01, 0.001)]
    assert all(90 < angle <= 120 for angle in angles)
    assert angles == sorted(angles, reverse=True)  # falls as the lr falls


def test_theorem1_for_a_single_coordinate_is_arccos_of_minus_half_lr_a() -> None:
    one = NoisyQuadratic(np.array([1.0]), np.array([1.0]))
    assert theorem1_angle(one, 1.0) == pytest.approx(120.0)
    assert theorem1_angle(one, 1.9) == pytest.approx(math.degrees(math.acos(-0.95)))


def test_participation_ratio_counts_coordinates_that_carry_the_step() -> None:
    iso = NoisyQuadratic(np.ones(50), np.ones(50))
    assert participation_ratio(iso, 0.1) == pytest.approx(50)
    assert 50 < participation_ratio(zhang2019_model(10_000), 0.06) < 65  # about 57 (see test_model.py)
    assert participation_ratio(figure1_model(10_000), 0.06) > 1000


def test_closed_forms_reject_an_unstable_lr() -> None:
    with pytest.raises(ValueError, match=r"lr=3\.0 is invalid: expected 0 < lr < 2"):
        theorem1_angle(zhang2019_model(5), 3.0)
