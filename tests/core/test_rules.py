"""One test per decision rule of the spec, on hand-computed sequences.

Reductions are fed directly: with sq_norm = 1 every epoch, the angle is acos(dot) in
degrees, so dot = 0 gives exactly 90 degrees and a repeated dot gives delta = 0.
"""

from __future__ import annotations

import math

import pytest

from autodrop_core import AutoDropConfig, Controller, Decision, InvalidReductionError, advance, initial_state


def run(config: AutoDropConfig, reductions: list[tuple[float, float]]) -> list[Decision]:
    controller = Controller(config)
    return [controller.observe(dot, sq) for dot, sq in reductions]


def unit(dots: list[float]) -> list[tuple[float, float]]:
    return [(d, 1.0) for d in dots]


def test_first_angle_is_undefined_because_s0_is_zero() -> None:
    (first,) = run(AutoDropConfig(lrs=(0.1,)), [(0.0, 4.0)])
    assert first.epoch == 1
    assert first.angle is None and first.smoothed_angle is None and first.delta is None


def test_angle_is_degrees_of_arccos_of_the_cosine() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,)), [(0.0, 4.0), (-2.0, 1.0)])
    assert decisions[1].angle == math.degrees(math.acos(-2.0 / (math.sqrt(1.0) * math.sqrt(4.0))))
    assert decisions[1].angle == pytest.approx(180.0)


def test_cosine_outside_unit_interval_is_clamped_not_rejected() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,)), [(0.0, 1.0), (5.0, 1.0), (-5.0, 1.0)])
    assert decisions[1].angle == 0.0
    assert decisions[2].angle == 180.0


def test_zero_step_has_no_direction_so_its_angle_and_the_next_are_undefined() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,)), [(0.0, 1.0), (0.0, 0.0), (0.0, 1.0), (0.0, 1.0)])
    assert [d.angle for d in decisions] == [None, None, None, 90.0]


def test_no_epsilon_tiny_steps_keep_their_exact_angle() -> None:
    # Norms of 1e-4 (sq_norm 1e-8): an epsilon in the denominator would move this angle.
    decisions = run(AutoDropConfig(lrs=(0.1,)), [(0.0, 1e-8), (0.5e-8, 1e-8)])
    assert decisions[1].angle == math.degrees(math.acos(0.5e-8 / (math.sqrt(1e-8) * math.sqrt(1e-8))))


def test_earliest_trigger_is_epoch_three_with_window_one() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,), drop_delay=5), unit([0.3, 0.3, 0.3, 0.3]))
    assert [d.triggered for d in decisions] == [False, False, True, False]
    assert decisions[1].delta is None and decisions[2].delta == 0.0


def test_trigger_needs_delta_strictly_below_theta() -> None:
    # angles 90 then 0: delta is exactly 90
    at_theta = AutoDropConfig(lrs=(0.1,), threshold=90.0, max_threshold=90.0)
    d = run(at_theta, [(0.0, 1.0), (0.0, 1.0), (1.0, 1.0)])[2]
    assert d.delta == 90.0 and not d.triggered
    above = AutoDropConfig(lrs=(0.1,), threshold=math.nextafter(90.0, math.inf), max_threshold=100.0)
    assert run(above, [(0.0, 1.0), (0.0, 1.0), (1.0, 1.0)])[2].triggered


def test_trigger_uses_theta_before_this_epochs_drop() -> None:
    config = AutoDropConfig(lrs=(0.1,), drop_delay=1, threshold=0.5, max_threshold=10.0, drop_factor=0.5)
    decisions = run(config, unit([0.0, 0.0, 0.0]))
    assert decisions[2].triggered and decisions[2].dropped
    assert decisions[2].threshold == 0.5  # reported theta is the one the check used


def test_running_average_weights_are_two_over_k_plus_one() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,), drop_delay=4), unit([0.2] * 6))
    assert [d.average_weight for d in decisions] == [None, None, 1.0, 2 / 3, 2 / 4, 2 / 5]


def test_drop_comes_drop_delay_minus_one_epochs_after_trigger() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,), drop_delay=4), unit([0.2] * 8))
    trigger = next(d.epoch for d in decisions if d.triggered)
    drop = next(d.epoch for d in decisions if d.apply_average)
    assert (trigger, drop) == (3, 6)
    assert [d.dropped for d in decisions] == [e == 6 for e in range(1, 9)]


def test_trigger_is_latched_while_a_drop_is_pending() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,), drop_delay=3), unit([0.2] * 5))
    assert [d.triggered for d in decisions] == [False, False, True, False, False]
    assert decisions[4].apply_average


def test_drop_multiplies_each_lr_by_rho_and_respects_each_floor() -> None:
    config = AutoDropConfig(lrs=(1.0, 0.1, 0.05), min_lr=(0.0, 0.05, 0.5), drop_factor=0.1, drop_delay=1)
    decisions = run(config, unit([0.0, 0.0, 0.0]))
    # group 0 falls by rho, group 1 stops at its floor, group 2 (floor above lr) never moves
    assert decisions[2].lrs == (0.1, 0.05, 0.05)
    assert decisions[2].dropped and not decisions[2].exhausted


def test_lr_updates_apply_to_current_values_not_closed_forms() -> None:
    config = AutoDropConfig(lrs=(0.3,), min_lr=0.0, drop_factor=0.1, drop_delay=1, threshold=1.0, max_threshold=1e9)
    lrs = [d.lrs[0] for d in run(config, unit([0.0] * 6)) if d.dropped]
    expected = [0.3]
    for _ in lrs:
        expected.append(0.1 * expected[-1])
    assert lrs == expected[1:]


def test_theta_is_divided_by_rho_at_each_drop_and_capped() -> None:
    config = AutoDropConfig(lrs=(0.1,), min_lr=0.0, drop_factor=0.5, drop_delay=1, threshold=0.3, max_threshold=1.0)
    decisions = run(config, unit([0.0] * 7))
    assert [d.threshold for d in decisions] == [0.3, 0.3, 0.3, 0.6, 1.0, 1.0, 1.0]


def test_exhausted_when_a_drop_is_due_but_every_lr_is_at_its_floor() -> None:
    config = AutoDropConfig(lrs=(0.1,), min_lr=0.1, drop_delay=2, threshold=1.0, max_threshold=2.0)
    decisions = run(config, unit([0.0] * 8))
    due = [d for d in decisions if d.apply_average]
    assert due, "a drop must come due"
    assert all(d.exhausted and not d.dropped and d.lrs == (0.1,) for d in due)
    assert len(due) >= 2  # the machine keeps running and says it again
    assert not any(d.exhausted for d in decisions if not d.apply_average)


def test_exhausted_drop_still_averages_and_raises_theta() -> None:
    config = AutoDropConfig(lrs=(0.1,), min_lr=0.1, drop_factor=0.5, drop_delay=1, threshold=0.1, max_threshold=5.0)
    decisions = run(config, unit([0.0] * 5))
    assert decisions[2].apply_average and decisions[2].exhausted
    assert decisions[3].threshold == 0.2


def test_window_mean_of_the_last_w_angles_slides() -> None:
    config = AutoDropConfig(lrs=(0.1,), angle_window=2, threshold=1e-9)
    angles_in = [0.0, 0.0, 0.5, 1.0, 0.0]  # epoch 1 undefined, then 90, 60, 0, 90
    decisions = run(config, unit(angles_in))
    a = [d.angle for d in decisions]
    assert decisions[1].smoothed_angle is None  # one angle only
    assert decisions[2].smoothed_angle == (a[1] + a[2]) / 2
    assert decisions[3].smoothed_angle == (a[2] + a[3]) / 2
    assert decisions[3].delta == abs(decisions[3].smoothed_angle - decisions[2].smoothed_angle)


def test_undefined_angle_empties_the_window() -> None:
    config = AutoDropConfig(lrs=(0.1,), angle_window=2)
    decisions = run(config, [(0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)])
    assert [d.smoothed_angle is not None for d in decisions] == [False, False, True, False, False, False, True]
    assert decisions[6].delta is None  # the previous smoothed angle was undefined


def test_undefined_angles_never_trigger() -> None:
    decisions = run(AutoDropConfig(lrs=(0.1,), drop_delay=1), [(0.0, 0.0)] * 6)
    assert not any(d.triggered for d in decisions)


def test_without_reset_the_first_delta_after_a_drop_compares_old_and_new_angles() -> None:
    config = AutoDropConfig(lrs=(0.1,), drop_delay=1, threshold=0.5, max_threshold=100.0)
    decisions = run(config, unit([0.0, 0.0, 0.0, 0.0]))
    assert decisions[2].dropped
    assert decisions[3].delta == 0.0 and decisions[3].triggered  # may trigger at once


def test_reset_on_drop_clears_history_so_the_next_delta_is_undefined() -> None:
    config = AutoDropConfig(lrs=(0.1,), drop_delay=1, threshold=0.5, max_threshold=100.0, reset_on_drop=True)
    decisions = run(config, unit([0.0, 0.0, 0.0, 0.0, 0.0]))
    assert decisions[2].dropped
    assert decisions[2].smoothed_angle == 90.0  # reported as computed at this epoch
    assert decisions[3].delta is None and not decisions[3].triggered
    assert decisions[4].triggered


def test_reset_on_drop_with_a_window_needs_w_new_angles() -> None:
    config = AutoDropConfig(lrs=(0.1,), drop_delay=1, angle_window=3, reset_on_drop=True, max_threshold=100.0)
    decisions = run(config, unit([0.0] * 10))
    first_drop = next(d.epoch for d in decisions if d.dropped)
    assert first_drop == 5  # angles from epoch 2; m defined at 4; delta at 5
    after = [d for d in decisions if d.epoch > first_drop]
    assert [d.smoothed_angle is not None for d in after[:3]] == [False, False, True]


@pytest.mark.parametrize(
    ("dot", "sq_norm", "field"),
    [
        (math.nan, 1.0, "dot"), (math.inf, 1.0, "dot"), (1.0, -1e-300, "sq_norm"),
        (1.0, math.nan, "sq_norm"), (1.0, -math.inf, "sq_norm"), ("1.0", 1.0, "dot"), (1.0, None, "sq_norm"),
        (True, 1.0, "dot"),
    ],
)
def test_bad_reduction_is_rejected_naming_epoch_and_value_and_state_is_unchanged(
    dot: object, sq_norm: object, field: str
) -> None:
    config = AutoDropConfig(lrs=(0.1,), drop_delay=3)
    state = initial_state(config)
    for good in ([0.2, 1.0], [0.2, 1.0], [0.2, 1.0]):
        _, state = advance(config, state, *good)
    with pytest.raises(InvalidReductionError) as info:
        advance(config, state, dot, sq_norm)  # type: ignore[arg-type]
    assert info.value.epoch == 4 and info.value.field == field
    assert "epoch 4" in str(info.value) and field in str(info.value)
    assert state.epoch == 3 and state.pending == 1  # immutable: the caller may retry


def test_controller_keeps_its_state_when_a_reduction_is_rejected() -> None:
    controller = Controller(AutoDropConfig(lrs=(0.1,)))
    controller.observe(0.0, 1.0)
    before = controller.state
    with pytest.raises(InvalidReductionError):
        controller.observe(math.nan, 1.0)
    assert controller.state == before
    assert controller.observe(0.0, 1.0).epoch == 2


def test_preview_does_not_commit() -> None:
    controller = Controller(AutoDropConfig(lrs=(0.1,)))
    decision, state = controller.preview(0.0, 1.0)
    assert controller.state.epoch == 0 and controller.last_decision is None
    controller.commit(decision, state)
    assert controller.state.epoch == 1 and controller.last_decision == decision
