"""The AutoDrop transition: (config, state, dot, sq_norm) -> (decision, new state).

This is the spec's "One epoch, in order", written once. It is a pure function of
plain floats: no tensors, no I/O, no mutation. Every adapter and the replay CLI go
through :func:`advance`; nothing else may re-implement these rules.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import replace
from typing import NamedTuple

from autodrop_core._calibrated import MAX_HISTORY, flatness_test
from autodrop_core._config import AutoDropConfig, show
from autodrop_core._records import AutoDropState, Decision

__all__ = ["InvalidReductionError", "advance", "step_angle"]


class InvalidReductionError(ValueError):
    """A reported reduction is not a finite number (or ``sq_norm`` is negative).

    The state it was meant for is untouched, so the caller may retry, skip or stop.

    Attributes:
        epoch: the epoch the value was meant for (t + 1).
        field: ``"dot"`` or ``"sq_norm"``.
        value: the value received.
    """

    def __init__(self, epoch: int, field: str, value: object, expected: str, detail: str = "") -> None:
        self.epoch = epoch
        self.field = field
        self.value = value
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"epoch {epoch}: {field}={show(value)} is invalid: expected {expected}{suffix}")


def step_angle(dot: float, sq_norm: float, prev_sq_norm: float) -> float | None:
    """Angle in degrees between s(t) and s(t-1), or None when it is undefined.

    Undefined means a step of length zero (no direction) or a non-finite denominator.
    The cosine is clamped to [-1, 1]; no epsilon is added (see the spec).

    >>> step_angle(0.0, 1.0, 1.0)
    90.0
    >>> step_angle(1.0, 1.0, 0.0) is None
    True
    """
    denom = math.sqrt(sq_norm) * math.sqrt(prev_sq_norm)
    if not (denom > 0 and math.isfinite(denom)):
        return None
    cosine = min(1.0, max(-1.0, dot / denom))
    return math.degrees(math.acos(cosine))


def _checked(epoch: int, field: str, value: object, nonnegative: bool) -> float:
    expected = "a finite number >= 0" if nonnegative else "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidReductionError(epoch, field, value, expected)
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float range
        raise InvalidReductionError(epoch, field, value, expected, "too large for a float") from None
    if not math.isfinite(as_float) or (nonnegative and as_float < 0):
        raise InvalidReductionError(epoch, field, value, expected)
    return as_float


def _window_mean(angles: tuple[float, ...], window: int) -> float | None:
    if len(angles) < window:
        return None
    total = 0.0
    for angle in angles:  # oldest to newest, plain left-to-right addition
        total += angle
    return total / window


class _TriggerTest(NamedTuple):
    """What a trigger rule computed at one epoch, before the latch and the drop."""

    smoothed: float | None
    delta: float | None
    threshold: float | None
    rise: float | None
    fires: bool
    angles: tuple[float, ...]  # the paper rule's window H after this epoch
    recent: tuple[float, ...]  # the calibrated rule's angles since the last drop


def _paper_trigger(config: AutoDropConfig, state: AutoDropState, angle: float | None) -> _TriggerTest:
    """Spec step 1-2: the window mean of the last w angles, its change, theta (strict <)."""
    angles = () if angle is None else (*state.angles, angle)[-config.angle_window :]
    smoothed = _window_mean(angles, config.angle_window)
    previous = state.prev_smoothed_angle
    delta = None if smoothed is None or previous is None else abs(smoothed - previous)
    fires = delta is not None and delta < state.theta
    return _TriggerTest(smoothed, delta, state.theta, None, fires, angles, state.recent)


def _calibrated_trigger(config: AutoDropConfig, state: AutoDropState, angle: float | None) -> _TriggerTest:
    """The flatness test on the angles since the last drop; an undefined angle is skipped."""
    recent = state.recent if angle is None else (*state.recent, angle)[-MAX_HISTORY:]
    test = flatness_test(recent)
    if test is None:
        return _TriggerTest(None, None, None, None, False, (), recent)
    return _TriggerTest(test.window_mean, test.change, test.noise, test.rise, test.flat, (), recent)


def average_weight(vectors: int) -> float:
    """c = 2 / (k + 1), the weight with which W absorbs the k-th averaged vector (k >= 1)."""
    return 2.0 / (vectors + 1)


def advance(
    config: AutoDropConfig, state: AutoDropState, dot: float, sq_norm: float
) -> tuple[Decision, AutoDropState]:
    """Run one epoch of the AutoDrop state machine.

    Args:
        config: the validated configuration.
        state: the state after the previous epoch (never modified).
        dot: <s(t), s(t-1)>, reduced over all trainable parameters.
        sq_norm: ||s(t)||^2.

    Returns:
        The epoch's decision and the state for the next epoch.

    Raises:
        InvalidReductionError: ``dot`` or ``sq_norm`` is not a finite number, or
            ``sq_norm`` < 0. ``state`` is untouched (it is immutable).

    >>> from autodrop_core import AutoDropConfig, initial_state
    >>> cfg = AutoDropConfig(lrs=(0.1,), drop_delay=1)
    >>> s = initial_state(cfg)
    >>> for dot in (0.0, 0.5, 0.5):
    ...     decision, s = advance(cfg, s, dot, 1.0)
    >>> decision.epoch, decision.angle, decision.delta, decision.dropped, decision.lrs
    (3, 60.00000000000001, 0.0, True, (0.010000000000000002,))
    """
    epoch = state.epoch + 1
    dot = _checked(epoch, "dot", dot, nonnegative=False)
    sq_norm = _checked(epoch, "sq_norm", sq_norm, nonnegative=True)

    # 1. Angle, history, smoothed angle, delta; 2. trigger, latched while a drop is pending.
    angle = step_angle(dot, sq_norm, state.prev_sq_norm)
    rule = _calibrated_trigger if config.trigger == "calibrated" else _paper_trigger
    test = rule(config, state, angle)
    triggered = state.pending == 0 and test.fires

    # 3. Running-average bookkeeping (the adapter holds W itself).
    pending = state.pending
    weight = None
    if triggered or pending > 0:
        pending += 1
        weight = average_weight(pending)

    # 4. Drop when n_d vectors have been averaged.
    lrs = state.lrs
    next_theta = state.theta
    apply_average = dropped = exhausted = False
    angles, recent = test.angles, test.recent
    remembered_smoothed = None if config.trigger == "calibrated" else test.smoothed
    if pending == config.drop_delay:
        apply_average = True
        lrs = tuple(
            min(lr, max(floor, config.drop_factor * lr)) for lr, floor in zip(state.lrs, config.floors)
        )
        dropped = any(new < old for new, old in zip(lrs, state.lrs))
        exhausted = not dropped
        pending = 0
        if config.trigger == "calibrated":
            recent = ()  # the next test sees only angles taken at the new lr
        else:
            next_theta = min(config.max_threshold, state.theta / config.drop_factor)
        if config.reset_on_drop:
            angles = ()
            remembered_smoothed = None

    decision = Decision(
        epoch=epoch,
        angle=angle,
        smoothed_angle=test.smoothed,
        delta=test.delta,
        threshold=test.threshold,
        triggered=triggered,
        average_weight=weight,
        apply_average=apply_average,
        dropped=dropped,
        exhausted=exhausted,
        lrs=lrs,
        rise=test.rise,
    )
    # 5. Remember sq_norm(t) and m(t).
    new_state = replace(
        state,
        epoch=epoch,
        lrs=lrs,
        theta=next_theta,
        prev_sq_norm=sq_norm,
        angles=angles,
        prev_smoothed_angle=remembered_smoothed,
        pending=pending,
        recent=recent,
    )
    return decision, new_state
