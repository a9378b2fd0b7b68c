"""The calibrated trigger: "has the angle stopped rising?", judged against its own noise.

The paper's trigger compares one epoch's change of angle with a fixed 0.01 degrees;
at saturation the per-epoch angle of real networks jitters by about a degree, so that
comparison fires by chance. This test looks at all the angles since the last drop
instead, in the manner of SASA's stationarity test (Lang, Zhang, Xiao, NeurIPS 2019):

* the earlier half of those angles is burn-in (the rise, or the recovery from a drop);
* the later half R is the test window: a least-squares line through it gives the
  fitted change across the window, and its von Neumann estimate of the epoch-to-epoch
  noise (mean squared successive difference / 2) sets the threshold;
* it triggers when the fitted change is within one epoch's noise (the curve is flat)
  *and* the window's mean is not below the burn-in's mean (the flat part was reached
  by a rise, as the paper describes saturation, not by a fall into a temporary plateau).

Everything is plain float arithmetic in a fixed order, so every implementation that
feeds the core the same reductions gets bit-identical decisions. This module holds the
test only: the state machine that calls it lives in ``_rules.py``; it must not import
anything outside the standard library.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

__all__ = ["MAX_HISTORY", "MIN_WINDOW", "FlatnessTest", "flatness_test"]

#: Fewest angles in the test window; so the earliest trigger sees 2 * MIN_WINDOW angles
#: since the last drop (training start: epoch 21, since angle(1) is undefined).
MIN_WINDOW = 10

#: Most angles kept since the last drop (older ones are forgotten), so that state and
#: checkpoints stay bounded: the test window then spans the last MAX_HISTORY / 2 epochs.
MAX_HISTORY = 200


class FlatnessTest(NamedTuple):
    """The statistics of one calibrated test, all in degrees.

    Attributes:
        change: |fitted change| of the angle across the test window.
        noise: the estimated epoch-to-epoch standard deviation of the angle (the threshold).
        window_mean: mean angle of the test window.
        rise: window mean minus burn-in mean.
        flat: the test passed: change <= noise and rise >= 0.
    """

    change: float
    noise: float
    window_mean: float
    rise: float
    flat: bool


def _mean(values: tuple[float, ...]) -> float:
    total = 0.0
    for v in values:  # oldest to newest, left to right
        total += v
    return total / len(values)


def flatness_test(angles: tuple[float, ...]) -> FlatnessTest | None:
    """Run the calibrated test on the defined angles since the last drop (oldest first).

    Returns None while fewer than ``2 * MIN_WINDOW`` angles are known.

    >>> rising = tuple(float(a) for a in range(40))
    >>> flatness_test(rising).flat
    False
    >>> level = tuple(10.0 + (0.5 if i % 2 else -0.5) for i in range(20))
    >>> t = flatness_test((0.0,) * 20 + level)
    >>> t.flat, t.change < t.noise, t.rise > 0
    (True, True, True)
    """
    n = len(angles)
    if n < 2 * MIN_WINDOW:
        return None
    size = n // 2
    window = angles[n - size :]
    burn_in = angles[: n - size]

    squared_steps = 0.0
    for previous, current in itertools.pairwise(window):
        squared_steps += (current - previous) * (current - previous)
    noise = math.sqrt(squared_steps / (2.0 * (size - 1)))

    window_mean = _mean(window)
    centre = (size - 1) / 2.0
    spread = 0.0
    covariance = 0.0
    for i, angle in enumerate(window):
        offset = i - centre
        spread += offset * offset
        covariance += offset * (angle - window_mean)
    change = abs(covariance / spread * (size - 1))

    rise = window_mean - _mean(burn_in)
    return FlatnessTest(change, noise, window_mean, rise, change <= noise and rise >= 0.0)
