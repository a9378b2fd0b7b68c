"""The AutoDrop configuration: a frozen record, validated once at construction.

Every field of the spec's configuration table lives here with its default and its
valid range. A bad value raises :class:`ConfigError` naming the field, the value
received and the range, so mistakes surface before training starts, never mid-run.
This module must not import anything outside the standard library.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DEFAULTS", "TRIGGERS", "AutoDropConfig", "ConfigError"]

#: The trigger rules: the paper's fixed threshold on the change of angle, or the
#: calibrated flatness test of ``_calibrated.py`` (see docs/spec.md).
TRIGGERS = ("paper", "calibrated")

#: Fields that only the paper's trigger reads; the calibrated trigger refuses any other value.
_PAPER_ONLY = ("threshold", "max_threshold", "angle_window", "reset_on_drop")

#: Default value of every optional field, as in the spec's configuration table.
DEFAULTS: Mapping[str, Any] = {
    "min_lr": 1e-4,
    "drop_factor": 0.1,
    "threshold": 0.01,
    "max_threshold": 1.0,
    "drop_delay": 20,
    "angle_window": 1,
    "reset_on_drop": False,
    "trigger": "paper",
}


def show(value: object, limit: int = 120) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int beyond sys.get_int_max_str_digits(), or deep nesting
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class ConfigError(ValueError):
    """An AutoDrop configuration field holds a value outside its valid range.

    Attributes:
        field: the name of the offending field, as in the spec.
        value: the value received.
    """

    def __init__(self, field: str, value: object, valid: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={show(value)} is invalid: expected {valid}")


def _as_text_hint(value: object, valid: str) -> str:
    # '1e-4' would otherwise be read character by character, or refused without saying why.
    return f"{valid} (got a string; pass the number itself)" if isinstance(value, (str, bytes)) else valid


def _finite_float(name: str, value: object, valid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(name, value, _as_text_hint(value, valid))
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float range
        raise ConfigError(name, value, valid) from None
    if not math.isfinite(as_float):
        raise ConfigError(name, value, valid)
    return as_float


def _strict_int(name: str, value: object, valid: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(name, value, valid)
    return int(value)


def _float_tuple(name: str, values: object, valid: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(name, values, _as_text_hint(values, valid))
    return tuple(_finite_float(f"{name}[{i}]", v, valid) for i, v in enumerate(values))


@dataclass(frozen=True)
class AutoDropConfig:
    """Immutable AutoDrop settings (the spec's configuration table).

    Args:
        lrs: starting learning rate of each parameter group, each finite and > 0.
        min_lr: floor per group: one value for all groups or one per group, >= 0.
        drop_factor: rho, each drop multiplies every lr by it; 0 < rho < 1.
        threshold: theta0, first threshold on the change of angle in degrees; > 0.
        max_threshold: cap on theta in degrees; >= threshold.
        drop_delay: n_d, parameter vectors averaged before a drop; integer >= 1.
        angle_window: w, the trigger compares means of the last w angles; integer >= 1.
        reset_on_drop: a drop clears the angle history.
        trigger: ``"paper"`` (the paper's rule, the default) or ``"calibrated"``, which
            sets its own threshold from the angle's measured noise; with it,
            ``threshold``, ``max_threshold``, ``angle_window`` and ``reset_on_drop``
            must keep their defaults (they would have no effect).

    ``min_lr`` is stored as one float per group whatever form it was given in.

    >>> AutoDropConfig(lrs=(0.1, 0.01)).min_lr
    (0.0001, 0.0001)
    >>> AutoDropConfig(lrs=(0.1,), drop_factor=1.5)
    Traceback (most recent call last):
    ...
    autodrop_core._config.ConfigError: drop_factor=1.5 is invalid: expected a finite number with 0 < drop_factor < 1
    """

    lrs: tuple[float, ...]
    min_lr: tuple[float, ...] | float = field(default=DEFAULTS["min_lr"])
    drop_factor: float = DEFAULTS["drop_factor"]
    threshold: float = DEFAULTS["threshold"]
    max_threshold: float = DEFAULTS["max_threshold"]
    drop_delay: int = DEFAULTS["drop_delay"]
    angle_window: int = DEFAULTS["angle_window"]
    reset_on_drop: bool = DEFAULTS["reset_on_drop"]
    trigger: Literal["paper", "calibrated"] = DEFAULTS["trigger"]

    def __post_init__(self) -> None:
        lrs = _float_tuple("lrs", self.lrs, "a non-empty sequence of finite numbers > 0")
        if not lrs:
            raise ConfigError("lrs", self.lrs, "a non-empty sequence of finite numbers > 0")
        for i, lr in enumerate(lrs):
            if not lr > 0:
                raise ConfigError(f"lrs[{i}]", lr, "a finite number > 0")

        floor_range = "a finite number >= 0, or one such number per parameter group"
        if isinstance(self.min_lr, numbers.Real) and not isinstance(self.min_lr, bool):
            floor = _finite_float("min_lr", self.min_lr, floor_range)
            if floor < 0:
                raise ConfigError("min_lr", self.min_lr, floor_range)
            floors = (floor,) * len(lrs)
        else:
            floors = _float_tuple("min_lr", self.min_lr, floor_range)
            if len(floors) != len(lrs):
                raise ConfigError(
                    "min_lr",
                    self.min_lr,
                    f"one value, or exactly {len(lrs)} (one per parameter group), got {len(floors)}",
                )
            for i, floor in enumerate(floors):
                if floor < 0:
                    raise ConfigError(f"min_lr[{i}]", floor, floor_range)

        rho = _finite_float("drop_factor", self.drop_factor, "a finite number with 0 < drop_factor < 1")
        if not 0 < rho < 1:
            raise ConfigError("drop_factor", self.drop_factor, "a finite number with 0 < drop_factor < 1")
        theta0 = _finite_float("threshold", self.threshold, "a finite number > 0 (degrees)")
        if not theta0 > 0:
            raise ConfigError("threshold", self.threshold, "a finite number > 0 (degrees)")
        cap_range = f"a finite number >= threshold ({theta0!r} degrees)"
        cap = _finite_float("max_threshold", self.max_threshold, cap_range)
        if cap < theta0:
            raise ConfigError("max_threshold", self.max_threshold, cap_range)
        delay = _strict_int("drop_delay", self.drop_delay, "an integer >= 1")
        if delay < 1:
            raise ConfigError("drop_delay", self.drop_delay, "an integer >= 1")
        window = _strict_int("angle_window", self.angle_window, "an integer >= 1")
        if window < 1:
            raise ConfigError("angle_window", self.angle_window, "an integer >= 1")
        if not isinstance(self.reset_on_drop, bool):
            raise ConfigError("reset_on_drop", self.reset_on_drop, "a bool (True or False)")
        if not isinstance(self.trigger, str) or self.trigger not in TRIGGERS:
            raise ConfigError("trigger", self.trigger, "one of " + ", ".join(repr(t) for t in TRIGGERS))
        if self.trigger == "calibrated":
            given = {"threshold": theta0, "max_threshold": cap, "angle_window": window,
                     "reset_on_drop": self.reset_on_drop}
            for name in _PAPER_ONLY:
                if given[name] != DEFAULTS[name]:
                    raise ConfigError(
                        name, getattr(self, name),
                        f"its default {DEFAULTS[name]!r} with trigger='calibrated', which sets its own threshold "
                        "from the angle's noise (or use trigger='paper')",
                    )

        for name, value in (
            ("lrs", lrs),
            ("min_lr", floors),
            ("drop_factor", rho),
            ("threshold", theta0),
            ("max_threshold", cap),
            ("drop_delay", delay),
            ("angle_window", window),
        ):
            object.__setattr__(self, name, value)

    @property
    def floors(self) -> tuple[float, ...]:
        """The floor of each parameter group (``min_lr`` after normalisation)."""
        assert isinstance(self.min_lr, tuple)
        return self.min_lr

    @property
    def num_groups(self) -> int:
        """How many parameter groups the configuration describes."""
        return len(self.lrs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that :meth:`from_dict` turns back into an equal config."""
        return {
            "lrs": list(self.lrs),
            "min_lr": list(self.floors),
            "drop_factor": self.drop_factor,
            "threshold": self.threshold,
            "max_threshold": self.max_threshold,
            "drop_delay": self.drop_delay,
            "angle_window": self.angle_window,
            "reset_on_drop": self.reset_on_drop,
            "trigger": self.trigger,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoDropConfig:
        """Rebuild a config from :meth:`to_dict`'s output, validating every field."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", data, "a mapping of configuration fields")
        known = {"lrs", *DEFAULTS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("config", unknown[0], f"one of the fields {sorted(known)}")
        if "lrs" not in data:
            raise ConfigError("lrs", None, "a non-empty sequence of finite numbers > 0")
        return cls(**dict(data))
