"""Figure 3 through the core: the NQM run follows autodrop_core's decisions exactly."""

from __future__ import annotations

import numpy as np
import pytest

from autodrop_core import AutoDropConfig, initial_state
from autodrop_core import advance as core_advance
from autodrop_core.nqm import NQMRun, autodrop_run, figure1_model, figure3_lrs


@pytest.fixture(scope="module")
def model():
    return figure1_model(n=300)


@pytest.fixture(scope="module")
def run(model):
    return autodrop_run(model, iters=600, seed=2)


def test_replaying_the_reported_reductions_through_the_core_gives_the_same_schedule(run) -> None:
    config = AutoDropConfig(lrs=(0.06,), min_lr=0.001, drop_factor=0.5, angle_window=20, reset_on_drop=True)
    state = initial_state(config)
    lrs, drops = [], []
    for t, (dot, sq) in enumerate(zip(run.dot, run.sq_norm), start=1):
        lrs.append(state.lrs[0])
        decision, state = core_advance(config, state, float(dot), float(sq))
        if decision.dropped:
            drops.append((t, decision.lrs[0]))
    np.testing.assert_array_equal(run.lr, lrs)
    assert drops == run.drops


def test_the_lr_halves_from_006_down_to_the_001_floor(run) -> None:
    visited = sorted(set(run.lr.tolist()), reverse=True)
    assert visited == figure3_lrs(0.06, 0.001, 0.5)
    assert visited[-1] == 0.001 and len(run.drops) == len(visited) - 1


def test_drop_delay_20_averages_20_iterates_before_each_drop(run) -> None:
    # Each drop comes 19 iterations after its trigger (the trigger epoch is averaged too).
    for iteration, _ in run.drops:
        assert iteration - 19 in run.triggers


def test_an_applied_average_replaces_the_parameters_by_the_linearly_weighted_mean(model) -> None:
    result = autodrop_run(model, iters=120, seed=5, drop_delay=3)
    first_drop = result.drops[0][0]
    replay = NQMRun(model, 0.06, seed=5, start=1.0)
    iterates = []
    for _ in range(first_drop):
        replay.step(1)
        iterates.append(replay.x.copy())
    weights = np.array([1.0, 2.0, 3.0]) / 6.0
    average = weights @ np.array(iterates[-3:])
    assert result.loss[first_drop] == pytest.approx(model.loss(average), rel=1e-12)


def test_summary_compares_with_every_constant_lr_and_flags_noise_triggers(run) -> None:
    summary = run.summary()
    assert set(summary["constant_lr_final_loss"]) == {str(lr) for lr in figure3_lrs()}
    assert summary["best_constant_final_loss"] == min(summary["constant_lr_final_loss"].values())
    assert 0 <= summary["triggers_on_noise"] <= summary["triggers"]
    assert [d["iteration"] for d in summary["drops"]] == [it for it, _ in run.drops]


def test_a_bad_autodrop_setting_is_refused_by_the_core(model) -> None:
    from autodrop_core import ConfigError

    with pytest.raises(ConfigError, match="drop_factor"):
        autodrop_run(model, iters=10, drop_factor=1.5)


@pytest.fixture(scope="module")
def calibrated(model):
    return autodrop_run(model, iters=600, seed=2, trigger="calibrated")


def test_the_calibrated_run_uses_the_core_defaults_and_replays_through_the_core(calibrated) -> None:
    config = AutoDropConfig(lrs=(0.06,), min_lr=0.001, drop_factor=0.5, trigger="calibrated")
    state = initial_state(config)
    lrs, drops = [], []
    for t, (dot, sq) in enumerate(zip(calibrated.dot, calibrated.sq_norm), start=1):
        lrs.append(state.lrs[0])
        decision, state = core_advance(config, state, float(dot), float(sq))
        if decision.dropped:
            drops.append((t, decision.lrs[0]))
    np.testing.assert_array_equal(calibrated.lr, lrs)
    assert drops == calibrated.drops and calibrated.trigger == "calibrated"
    assert calibrated.summary()["trigger"] == "calibrated"


def test_the_calibrated_trigger_waits_for_twenty_angles_and_reports_its_noise(calibrated) -> None:
    assert min(calibrated.triggers) >= 21  # angle(1) is undefined, the test needs 20 angles
    assert calibrated.threshold is not None and np.all(np.isnan(calibrated.threshold[:20]))
    sigma = calibrated.threshold[np.isfinite(calibrated.threshold)]
    assert sigma.size and np.all(sigma > 0)
    assert calibrated.expected_fires is not None and calibrated.expected_fires.shape == calibrated.lr.shape
    assert 0 <= len(calibrated.noise_triggers()) <= len(calibrated.triggers)


def test_the_calibrated_run_refuses_a_paper_only_setting_by_name(model) -> None:
    from autodrop_core import ConfigError

    with pytest.raises(ConfigError, match="angle_window"):
        autodrop_run(model, iters=10, trigger="calibrated", angle_window=20)


@pytest.mark.parametrize("trigger", ["paper", "calibrated"])
def test_without_noise_the_noise_free_diagnostic_is_the_run_itself(trigger) -> None:
    # S = 0 and drop_delay = 1 (no averaging jump): the run's angles are the closed-form
    # ones, so the diagnostic must reproduce the controller's own delta at every epoch.
    from autodrop_core.nqm import NoisyQuadratic

    curvature = figure1_model(n=50).curvature
    quiet = NoisyQuadratic(curvature, np.zeros_like(curvature), "noise-free")
    result = autodrop_run(quiet, iters=300, seed=0, drop_delay=1, trigger=trigger)
    assert result.delta is not None and result.expected_delta is not None
    defined = np.isfinite(result.delta)
    assert defined.sum() > 40
    np.testing.assert_array_equal(defined, np.isfinite(result.expected_delta))
    np.testing.assert_allclose(result.expected_delta[defined], result.delta[defined], rtol=1e-6, atol=1e-7)
    assert result.noise_triggers() == []
