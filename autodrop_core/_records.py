"""The two immutable records that cross the core's boundary: its state and its decision.

:class:`AutoDropState` is everything the state machine remembers between epochs, as
plain numbers, JSON-safe and versioned so that a checkpoint written today loads
tomorrow. :class:`Decision` is what one epoch returns, with exactly the spec's field
names. Neither record knows any rule: the transition lives in ``_rules.py``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autodrop_core._calibrated import MAX_HISTORY
from autodrop_core._config import AutoDropConfig

__all__ = ["STATE_FORMAT_VERSION", "AutoDropState", "Decision", "StateError", "initial_state"]

#: Bumped whenever the serialised layout of :class:`AutoDropState` changes.
#: Version 2 added ``recent`` (the calibrated trigger's angles); version 1 still loads.
STATE_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)

_STATE_FIELDS = (
    "version",
    "epoch",
    "lrs",
    "theta",
    "prev_sq_norm",
    "angles",
    "prev_smoothed_angle",
    "pending",
    "recent",
)


class StateError(ValueError):
    """A serialised state is malformed, from an unknown version, or does not fit the config."""


@dataclass(frozen=True)
class AutoDropState:
    """What the state machine remembers between epochs (the spec's "State").

    Attributes:
        epoch: t, epochs seen so far (0 before the first).
        lrs: the lr of each parameter group for the coming epoch.
        theta: the threshold in force, in degrees.
        prev_sq_norm: ||s(t)||^2 of the last epoch (0 before the first, as s(0) = 0).
        angles: H, the last defined angles (at most ``angle_window``), oldest first.
        prev_smoothed_angle: m(t) of the last epoch, or None when undefined.
        pending: k, 0 when no drop is pending, else vectors averaged so far.
        recent: the defined angles since the last applied average (at most
            ``MAX_HISTORY``, oldest first), which the calibrated trigger tests;
            always empty with the paper's trigger.
        version: the serialisation format version.
    """

    epoch: int
    lrs: tuple[float, ...]
    theta: float
    prev_sq_norm: float
    angles: tuple[float, ...]
    prev_smoothed_angle: float | None
    pending: int
    recent: tuple[float, ...] = ()
    version: int = STATE_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; floats survive ``json`` exactly (``repr`` round-trips)."""
        return {
            "version": self.version,
            "epoch": self.epoch,
            "lrs": list(self.lrs),
            "theta": self.theta,
            "prev_sq_norm": self.prev_sq_norm,
            "angles": list(self.angles),
            "prev_smoothed_angle": self.prev_smoothed_angle,
            "pending": self.pending,
            "recent": list(self.recent),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: AutoDropConfig) -> AutoDropState:
        """Rebuild a state from :meth:`to_dict`'s output and check it fits ``config``.

        Raises:
            StateError: a field is missing, unknown, of the wrong type or out of range,
                or the version is not one this code reads.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"state must be a mapping, got {type(data).__name__}")
        version = data.get("version")
        if isinstance(version, bool) or version not in _READABLE_VERSIONS:
            raise StateError(
                f"state version={version!r} is not readable: this autodrop_core reads versions "
                f"{', '.join(map(str, _READABLE_VERSIONS))}"
            )
        expected = _STATE_FIELDS if version == STATE_FORMAT_VERSION else _STATE_FIELDS[:-1]
        missing = [name for name in expected if name not in data]
        extra = sorted(set(data) - set(expected))
        if missing or extra:
            raise StateError(f"state fields do not match format {version}: missing {missing}, unknown {extra}")
        epoch = _int(data, "epoch", 0)
        pending = _int(data, "pending", 0)
        if pending >= config.drop_delay:
            raise StateError(
                f"state pending={pending!r} is invalid: expected 0 <= pending < drop_delay ({config.drop_delay})"
            )
        lrs = _floats(data, "lrs")
        if len(lrs) != config.num_groups or any(lr < 0 for lr in lrs):
            raise StateError(f"state lrs={data['lrs']!r} is invalid: expected {config.num_groups} numbers >= 0")
        angles = _floats(data, "angles")
        if len(angles) > config.angle_window:
            raise StateError(
                f"state angles={data['angles']!r} is invalid: expected at most angle_window "
                f"({config.angle_window}) angles"
            )
        theta = _float(data, "theta")
        if not config.threshold <= theta <= config.max_threshold:
            raise StateError(
                f"state theta={theta!r} is invalid: expected threshold ({config.threshold!r}) <= theta <= "
                f"max_threshold ({config.max_threshold!r})"
            )
        prev_sq_norm = _float(data, "prev_sq_norm")
        if prev_sq_norm < 0:
            raise StateError(f"state prev_sq_norm={prev_sq_norm!r} is invalid: expected a number >= 0")
        smoothed = data["prev_smoothed_angle"]
        prev_smoothed = None if smoothed is None else _float(data, "prev_smoothed_angle")
        recent = _floats(data, "recent") if version >= 2 else ()
        limit = MAX_HISTORY if config.trigger == "calibrated" else 0
        if len(recent) > limit or any(not 0.0 <= a <= 180.0 for a in recent):
            raise StateError(
                f"state recent={data['recent']!r} is invalid: expected at most {limit} angles in [0, 180] "
                f"with trigger={config.trigger!r}"
            )
        return cls(
            epoch=epoch,
            lrs=lrs,
            theta=theta,
            prev_sq_norm=prev_sq_norm,
            angles=angles,
            prev_smoothed_angle=prev_smoothed,
            pending=pending,
            recent=recent,
        )


def _float(data: Mapping[str, Any], name: str) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise StateError(f"state {name}={value!r} is invalid: expected a finite number")
    return float(value)


def _floats(data: Mapping[str, Any], name: str) -> tuple[float, ...]:
    values = data[name]
    if not isinstance(values, (list, tuple)):
        raise StateError(f"state {name}={values!r} is invalid: expected a list of finite numbers")
    return tuple(_float({name: v}, name) for v in values)


def _int(data: Mapping[str, Any], name: str, minimum: int) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise StateError(f"state {name}={value!r} is invalid: expected an integer >= {minimum}")
    return int(value)


def initial_state(config: AutoDropConfig) -> AutoDropState:
    """The state before the first epoch: t = 0, theta = threshold, nothing pending.

    >>> initial_state(AutoDropConfig(lrs=(0.1,))).theta
    0.01
    """
    return AutoDropState(
        epoch=0,
        lrs=config.lrs,
        theta=config.threshold,
        prev_sq_norm=0.0,
        angles=(),
        prev_smoothed_angle=None,
        pending=0,
    )


@dataclass(frozen=True)
class Decision:
    """What the core decides at the end of one epoch (the spec's decision table).

    Attributes:
        epoch: t.
        angle: angle(t) in degrees, or None when undefined.
        smoothed_angle: m(t) as computed at this epoch, or None.
        delta: |m(t) - m(t-1)| (paper trigger) or the fitted change of angle across the
            test window (calibrated trigger), or None.
        threshold: theta in force at the start of this epoch (paper trigger), or the
            estimated epoch-to-epoch noise of the angle (calibrated trigger; None
            while it has too few angles).
        triggered: the trigger fired at this epoch.
        average_weight: c with which x(t) enters the running average, or None.
        apply_average: replace the parameters by the running average now.
        dropped: some lr went down at this epoch.
        exhausted: a drop was due at this epoch and no lr went down.
        lrs: the lr of each group for the next epoch.
        rise: calibrated trigger only: the test window's mean angle minus the burn-in's
            (the trigger needs it >= 0), or None.
    """

    epoch: int
    angle: float | None
    smoothed_angle: float | None
    delta: float | None
    threshold: float | None
    triggered: bool
    average_weight: float | None
    apply_average: bool
    dropped: bool
    exhausted: bool
    lrs: tuple[float, ...]
    rise: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The decision with the spec's field names, JSON-safe (None becomes null)."""
        return {
            "epoch": self.epoch,
            "angle": self.angle,
            "smoothed_angle": self.smoothed_angle,
            "delta": self.delta,
            "threshold": self.threshold,
            "triggered": self.triggered,
            "average_weight": self.average_weight,
            "apply_average": self.apply_average,
            "dropped": self.dropped,
            "exhausted": self.exhausted,
            "lrs": list(self.lrs),
            "rise": self.rise,
        }
