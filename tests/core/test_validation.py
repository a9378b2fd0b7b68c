"""Impossible states and out-of-range numbers are refused with StateError / ConfigError, never a traceback."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from autodrop_core import AutoDropConfig, ConfigError, Controller, InvalidReductionError, StateError
from autodrop_core._records import AutoDropState, initial_state

CONFIG = AutoDropConfig(lrs=(0.1,), drop_delay=3)
HUGE = 10**400  # an int beyond float range
DIGITS_5001 = (10**5001 - 1) // 9  # 5001 ones: too many digits for str() and repr()


def running_state() -> AutoDropState:
    controller = Controller(CONFIG)
    for dot in (0.0, 0.5, 0.5, 0.5):
        controller.observe(dot, 1.0)
    return controller.state


def state_dict(**changes: Any) -> dict[str, Any]:
    return {**running_state().to_dict(), **changes}


@pytest.mark.parametrize(
    "state",
    [
        dataclasses.replace(initial_state(CONFIG), pending=5),  # pending >= drop_delay never drops
        dataclasses.replace(initial_state(CONFIG), lrs=(0.1, 0.1)),  # two lrs for one group
        dataclasses.replace(initial_state(CONFIG), pending=1),  # pending at epoch 0
        dataclasses.replace(initial_state(CONFIG), theta=float("nan")),
    ],
    ids=["pending-too-large", "two-lrs", "pending-at-epoch-0", "nan-theta"],
)
def test_controller_validates_the_state_it_is_given(state: AutoDropState) -> None:
    with pytest.raises(StateError):
        Controller(CONFIG, state)


def test_controller_accepts_a_real_state() -> None:
    state = running_state()
    assert Controller(CONFIG, state).state == state


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"version": True}, "version=True"),
        ({"version": 1.0}, "version=1.0"),
        ({"angles": [181.0]}, "[0, 180]"),
        ({"angles": [-1.0]}, "[0, 180]"),
        ({"prev_smoothed_angle": 200.0}, "prev_smoothed_angle=200.0"),
        ({"epoch": 0, "pending": 1, "angles": []}, "impossible at epoch 0"),
        ({"epoch": 0, "pending": 0, "angles": [10.0]}, "impossible at epoch 0"),
        ({"theta": HUGE}, "theta="),
        ({"prev_sq_norm": DIGITS_5001}, "too large to show"),
        ({"lrs": [HUGE]}, "lrs="),
    ],
)
def test_from_dict_rejects_impossible_states(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(StateError, match=r"invalid|impossible|not readable") as info:
        AutoDropState.from_dict(state_dict(**changes), CONFIG)
    assert needle in str(info.value)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("missing", ["config", "state"])
def test_controller_from_dict_raises_state_error_for_a_missing_key(missing: str) -> None:
    data = Controller(CONFIG).to_dict()
    del data[missing]
    with pytest.raises(StateError, match=f"missing \\['{missing}'\\]"):
        Controller.from_dict(data)


@pytest.mark.parametrize("field", ["drop_factor", "threshold", "max_threshold", "min_lr"])
@pytest.mark.parametrize("value", [HUGE, DIGITS_5001], ids=["beyond-float", "5001-digits"])
def test_config_refuses_ints_too_large_for_a_float(field: str, value: int) -> None:
    with pytest.raises(ConfigError) as info:
        AutoDropConfig(lrs=(0.1,), **{field: value})
    assert info.value.field == field and len(str(info.value)) < 400


def test_config_refuses_a_huge_lr() -> None:
    with pytest.raises(ConfigError, match=r"lrs\[0\]"):
        AutoDropConfig(lrs=(HUGE,))


@pytest.mark.parametrize("field", ["dot", "sq_norm"])
@pytest.mark.parametrize("value", [HUGE, DIGITS_5001], ids=["beyond-float", "5001-digits"])
def test_observe_refuses_ints_too_large_for_a_float(field: str, value: int) -> None:
    controller = Controller(CONFIG)
    controller.observe(0.0, 1.0)
    before = controller.state
    reductions = {"dot": 0.5, "sq_norm": 1.0, field: value}
    with pytest.raises(InvalidReductionError) as info:
        controller.observe(**reductions)
    assert info.value.field == field and len(str(info.value)) < 400
    assert controller.state == before
