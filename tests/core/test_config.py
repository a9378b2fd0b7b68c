"""The configuration table of the spec: defaults, valid ranges, and the errors that name them."""

from __future__ import annotations

import math

import pytest

from autodrop_core import DEFAULTS, AutoDropConfig, ConfigError


def test_defaults_are_the_papers_deep_learning_settings() -> None:
    config = AutoDropConfig(lrs=(0.1,))
    assert config.min_lr == (1e-4,)
    assert config.drop_factor == 0.1
    assert config.threshold == 0.01
    assert config.max_threshold == 1.0
    assert config.drop_delay == 20
    assert config.angle_window == 1
    assert config.reset_on_drop is False
    assert dict(DEFAULTS) == {k: v for k, v in config.to_dict().items() if k != "lrs"} | {"min_lr": 1e-4}


def test_one_floor_is_broadcast_to_every_group() -> None:
    assert AutoDropConfig(lrs=(0.1, 0.2, 0.3), min_lr=0.001).floors == (0.001, 0.001, 0.001)


def test_floors_may_be_given_per_group() -> None:
    assert AutoDropConfig(lrs=(0.1, 0.2), min_lr=[0.0, 0.05]).floors == (0.0, 0.05)


def test_a_floor_above_the_starting_lr_is_allowed() -> None:
    assert AutoDropConfig(lrs=(0.01,), min_lr=0.5).floors == (0.5,)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("drop_factor", 1.0, "0 < drop_factor < 1"),
        ("drop_factor", 0.0, "0 < drop_factor < 1"),
        ("drop_factor", math.nan, "0 < drop_factor < 1"),
        ("threshold", 0.0, "> 0"),
        ("threshold", -0.01, "> 0"),
        ("threshold", math.inf, "> 0"),
        ("max_threshold", 0.001, ">= threshold"),
        ("max_threshold", math.inf, ">= threshold"),
        ("drop_delay", 0, "integer >= 1"),
        ("drop_delay", 2.0, "integer >= 1"),
        ("drop_delay", True, "integer >= 1"),
        ("angle_window", 0, "integer >= 1"),
        ("angle_window", False, "integer >= 1"),
        ("reset_on_drop", 1, "bool"),
        ("min_lr", -1e-4, ">= 0"),
        ("min_lr", math.nan, ">= 0"),
        ("min_lr", "0.1", ">= 0"),
    ],
)
def test_invalid_field_is_rejected_naming_field_value_and_range(field: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        AutoDropConfig(lrs=(0.1,), **{field: value})  # type: ignore[arg-type]
    message = str(info.value)
    assert info.value.field.startswith(field)
    assert field in message and repr(value) in message and needle in message


@pytest.mark.parametrize("lrs", [(), (0.0,), (-0.1,), (math.inf,), (math.nan,), (0.1, True), "0.1", 0.1])
def test_lrs_must_be_a_non_empty_sequence_of_positive_finite_numbers(lrs: object) -> None:
    with pytest.raises(ConfigError, match=r"lrs"):
        AutoDropConfig(lrs=lrs)  # type: ignore[arg-type]


def test_a_negative_per_group_floor_is_named_by_its_index() -> None:
    with pytest.raises(ConfigError) as info:
        AutoDropConfig(lrs=(0.1, 0.2), min_lr=(-1.0, -1.0))
    assert info.value.field == "min_lr[0]"


def test_per_group_floors_need_one_value_per_group() -> None:
    with pytest.raises(ConfigError, match=r"exactly 2 \(one per parameter group\), got 3"):
        AutoDropConfig(lrs=(0.1, 0.2), min_lr=(0.0, 0.0, 0.0))


def test_config_is_frozen() -> None:
    config = AutoDropConfig(lrs=(0.1,))
    with pytest.raises(AttributeError):
        config.drop_factor = 0.5  # type: ignore[misc]


def test_config_round_trips_through_its_dict() -> None:
    config = AutoDropConfig(lrs=(0.3, 0.1), min_lr=(0.0, 1e-3), drop_factor=0.2, threshold=0.02,
                            max_threshold=3.0, drop_delay=5, angle_window=4, reset_on_drop=True)
    assert AutoDropConfig.from_dict(config.to_dict()) == config


def test_from_dict_refuses_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="drop_facter"):
        AutoDropConfig.from_dict({"lrs": [0.1], "drop_facter": 0.5})
