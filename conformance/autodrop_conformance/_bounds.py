"""Error bounds: how far an adapter's numbers may honestly lie from the reference's.

Every bound is computed from measured quantities of the two runs being compared (their
parameters before and after each epoch) and from the precisions the adapter may use
(its declared accumulation dtype for forming steps, holding the running average and
summing; the parameter dtype only for the final rounding of an applied average). A
rounding is paid for only where one happens: forming a step costs nothing where the
exact difference is representable in the accumulation dtype. Nothing here is a tuning
knob: a loose bound would hide real disagreements, so each term says which rounding it
pays for. This module decides nothing about AutoDrop itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from autodrop_conformance._protocol import UNIT_ROUNDOFF, Array
from autodrop_core._calibrated import MIN_WINDOW

__all__ = ["ANGLE_SLACK", "angle_halfwidth", "average_tolerance", "reduction_errors", "step_errors"]

#: Absolute slack (degrees) for the core's own float64 evaluation of sqrt, acos, degrees.
ANGLE_SLACK = 1e-12

_U64 = UNIT_ROUNDOFF["float64"]


def step_errors(
    x_got: Sequence[Array], x_ref: Sequence[Array], hat_got: Sequence[Array], hat_ref: Sequence[Array],
    accumulation: str,
) -> list[Array]:
    """Per element, a bound on |s_adapter - s_reference| for one epoch's step.

    Pays for the two runs holding different parameters (measured), for an adapter that
    forms the step in its accumulation dtype (nothing where the step is representable
    in that dtype, since IEEE subtraction then is exact; else one rounding: with float64
    accumulation never more than the float64 term), and for a float64 subtraction on
    either side (one rounding each). A float16 or bfloat16 step formed in the parameter
    dtype is not paid for: the spec forms steps before any reduction, in the
    accumulation precision.
    """
    from autodrop_conformance._protocol import round_to

    out = []
    unit = UNIT_ROUNDOFF[accumulation]
    for xa, xr, ha, hr in zip(x_got, x_ref, hat_got, hat_ref, strict=True):
        step = xa - ha
        if accumulation == "float64":
            formed: Array | float = 0.0
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                inexact = round_to(accumulation, step) != step
            formed = np.where(inexact, unit * np.abs(step), 0.0)
        out.append(np.abs(xa - xr) + np.abs(ha - hr) + formed + _U64 * (np.abs(step) + np.abs(xr - hr)))
    return out


def _gamma(n: int, unit: float) -> float:
    return n * unit / (1.0 - n * unit)


def reduction_errors(
    step: Sequence[Array], prev_step: Sequence[Array], err: Sequence[Array], prev_err: Sequence[Array],
    accumulation: str,
) -> tuple[float, float]:
    """Bounds on |dot_adapter - dot_ref| and |sq_norm_adapter - sq_norm_ref|.

    First-order and second-order terms of the step errors, plus a classical recursive
    summation bound gamma_n = n u / (1 - n u) for each side's accumulation (the adapter's
    declared dtype, the reference's float64), n counting every product and every
    tensor-by-tensor addition.
    """
    n = sum(s.size for s in step) + len(step) + 1
    gamma = _gamma(n, UNIT_ROUNDOFF[accumulation]) + _gamma(n, _U64)
    dot_err = sq_err = 0.0
    dot_abs = sq_abs = 0.0
    for s, sp, e, ep in zip(step, prev_step, err, prev_err, strict=True):
        s_abs, sp_abs = np.abs(s).ravel(), np.abs(sp).ravel()
        e, ep = e.ravel(), ep.ravel()
        dot_err += float(np.sum(e * sp_abs + s_abs * ep + e * ep))
        sq_err += float(np.sum(2.0 * e * s_abs + e * e))
        dot_abs += float(np.sum((s_abs + e) * (sp_abs + ep)))
        sq_abs += float(np.sum((s_abs + e) ** 2))
    return dot_err + gamma * dot_abs, sq_err + gamma * sq_abs


def _angle(dot: float, sq_norm: float, prev_sq_norm: float) -> float:
    denom = math.sqrt(sq_norm) * math.sqrt(prev_sq_norm)
    return math.degrees(math.acos(min(1.0, max(-1.0, dot / denom))))


def angle_halfwidth(
    dot: float, sq_norm: float, prev_sq_norm: float, dot_err: float, sq_err: float, prev_err: float,
    angle: float | None,
) -> float | None:
    """Half-width (degrees) of the angles the adapter may see, or None when it may not agree on definedness.

    ``angle`` is the reference's angle (None when undefined). The cosine is monotone in
    each reduction separately, so its extremes over the error box lie at its corners.
    """
    if angle is None:
        certain = (sq_norm == 0.0 and sq_err == 0.0) or (prev_sq_norm == 0.0 and prev_err == 0.0)
        return 0.0 if certain else None
    if sq_norm - sq_err <= 0.0 or prev_sq_norm - prev_err <= 0.0:
        return None
    width = 0.0
    for d in (dot - dot_err, dot + dot_err):
        for a in (sq_norm - sq_err, sq_norm + sq_err):
            for b in (prev_sq_norm - prev_err, prev_sq_norm + prev_err):
                if not math.isfinite(math.sqrt(a) * math.sqrt(b)):
                    return None
                width = max(width, abs(_angle(d, a, b) - angle))
    return width + ANGLE_SLACK + 1e-13 * angle


def average_tolerance(
    average_ref: Sequence[Array], magnitude: Sequence[Array], discrepancy: Sequence[Array],
    dtypes: Sequence[str], drop_delay: int, accumulation: str = "float64",
) -> list[Array]:
    """Per element, how far the adapter's applied average may lie from the reference's.

    Pays for the inputs differing (``discrepancy``: the largest |x_adapter - x_ref| over the
    averaged vectors), for the running average held in the accumulation dtype on each
    side (three roundings per absorbed vector, on ``magnitude``, the largest |x|
    averaged), and for the final rounding into the parameter dtype on both sides. A
    running average held in float16 or bfloat16 is not paid for.
    """
    out = []
    acc = max(UNIT_ROUNDOFF[accumulation], _U64)
    for w, m, d, dtype in zip(average_ref, magnitude, discrepancy, dtypes, strict=True):
        u = UNIT_ROUNDOFF[dtype]
        out.append(d + (3 * drop_delay + 2) * acc * m + 2 * u * np.abs(w))
    return out


def calibrated_widths(halfwidths: Sequence[float]) -> tuple[float, float, float, float] | None:
    """Rounding bands of the calibrated trigger's statistics, from the bands of its angles.

    ``halfwidths`` holds the half-width of each angle the trigger tests (the defined
    angles since the last applied average, oldest first, as the core keeps them). Each
    statistic is a fixed function of those angles (docs/spec.md), so its error is bounded
    by propagating theirs: the window mean by the mean of the window's widths, the rise by
    that plus the burn-in's, the fitted change by sum |i - c| e_i / S_xx (m - 1), and the
    noise (the norm of the successive differences, scaled) by the same norm of e_i + e_{i-1}.

    Returns:
        ``(window_mean, fitted_change, noise, rise)`` widths in degrees, or None while the
        test has too few angles (fewer than 2 * MIN_WINDOW).
    """
    n = len(halfwidths)
    if n < 2 * MIN_WINDOW:
        return None
    size = n // 2
    window, burn_in = list(halfwidths[n - size :]), list(halfwidths[: n - size])
    slack = ANGLE_SLACK + 1e-12 * 180.0  # the core's own float64 arithmetic on up to 200 angles
    window_mean = sum(window) / size + slack
    rise = window_mean + sum(burn_in) / len(burn_in) + slack
    centre = (size - 1) / 2.0
    spread = sum((i - centre) ** 2 for i in range(size))
    change = sum(abs(i - centre) * e for i, e in enumerate(window)) / spread * (size - 1) + slack
    noise = math.sqrt(sum((a + b) ** 2 for a, b in itertools.pairwise(window)) / (2.0 * (size - 1))) + slack
    return window_mean, change, noise, rise
