"""One decision as a flat dict of finite floats, for loggers (TensorBoard, W&B, Lightning, Keras).

Every adapter's logging hook calls :func:`log_scalars`, so the keys are the same
everywhere. Undefined values (the first epochs' angle, an average weight outside a
window) are left out rather than written as None or NaN, because loggers refuse or
plot those. This module only formats; it must not apply any AutoDrop rule.
"""

from __future__ import annotations

import math

from autodrop_core._records import Decision

__all__ = ["LOG_PREFIX", "log_scalars"]

#: The prefix of every key :func:`log_scalars` writes.
LOG_PREFIX = "autodrop/"


def log_scalars(decision: Decision, *, pending: int | None = None, prefix: str = LOG_PREFIX) -> dict[str, float]:
    """The decision as ``{prefix + name: float}``, undefined values left out.

    Keys: ``epoch``, ``angle``, ``smoothed_angle``, ``delta``, ``threshold``,
    ``average_weight``, the flags ``triggered``, ``apply_average``, ``dropped`` and
    ``exhausted`` as 0.0 or 1.0, ``lr_0``, ``lr_1``, ... (each group's lr for the next
    epoch) and, when ``pending`` is given (the core state's ``pending``: vectors averaged
    so far inside a window, 0 outside), ``pending``.

    >>> from autodrop_core import Controller, AutoDropConfig
    >>> c = Controller(AutoDropConfig(lrs=(0.1,)))
    >>> print(", ".join(sorted(log_scalars(c.observe(0.0, 1.0), pending=c.state.pending))[:4]))
    autodrop/apply_average, autodrop/dropped, autodrop/epoch, autodrop/exhausted
    """
    values: dict[str, float | int | bool | None] = {
        "epoch": decision.epoch,
        "angle": decision.angle,
        "smoothed_angle": decision.smoothed_angle,
        "delta": decision.delta,
        "threshold": decision.threshold,
        "average_weight": decision.average_weight,
        "triggered": decision.triggered,
        "apply_average": decision.apply_average,
        "dropped": decision.dropped,
        "exhausted": decision.exhausted,
        "pending": pending,
    }
    for g, lr in enumerate(decision.lrs):
        values[f"lr_{g}"] = lr
    out: dict[str, float] = {}
    for name, value in values.items():
        if value is None:
            continue
        number = float(value)
        if math.isfinite(number):
            out[prefix + name] = number
    return out
