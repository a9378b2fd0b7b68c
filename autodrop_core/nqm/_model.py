"""The noisy quadratic model, the unified-momentum optimizer family, and the presets.

L(x) = 1/2 (x - c)^T A (x - c) with c ~ N(0, Sigma) drawn afresh every iteration, A and
Sigma diagonal (the paper's Definition 2; the optimum is x* = 0). This module holds the
model's numbers and validates them; it must not simulate anything (see ``_kernels.py``)
nor hold closed forms (see ``_oracles.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "PRESETS",
    "ZHANG2019_BATCH_SIZE",
    "Momentum",
    "NoisyQuadratic",
    "figure1_model",
    "heavy_ball",
    "nesterov",
    "participation_ratio",
    "preset",
    "sgd",
    "zhang2019_model",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class NoisyQuadratic:
    """A diagonal noisy quadratic model.

    Attributes:
        curvature: a_i > 0, the diagonal of A (float64, 1-d, read-only).
        variance: S_i >= 0, the variance of c_i (the diagonal of Sigma; the paper's sigma_i^2).
        name: a label for tables and plots.
    """

    curvature: FloatArray
    variance: FloatArray
    name: str = "custom"

    def __post_init__(self) -> None:
        a = np.array(self.curvature, dtype=np.float64).ravel()
        s = np.array(self.variance, dtype=np.float64).ravel()
        if a.size == 0 or a.shape != s.shape:
            raise ValueError(f"curvature has {a.size} values and variance {s.size}: expected the same number, >= 1")
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            bad = float(a[~(np.isfinite(a) & (a > 0))][0])
            raise ValueError(f"curvature holds {bad!r}: expected finite values > 0")
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            bad = float(s[~(np.isfinite(s) & (s >= 0))][0])
            raise ValueError(f"variance holds {bad!r}: expected finite values >= 0")
        a.flags.writeable = False
        s.flags.writeable = False
        object.__setattr__(self, "curvature", a)
        object.__setattr__(self, "variance", s)

    @property
    def n(self) -> int:
        """Number of coordinates."""
        return int(self.curvature.size)

    def max_stable_lr(self, optimizer: Momentum | None = None) -> float:
        """The largest lr for which plain SGD's second moments stay bounded: 2 / max a_i.

        For momentum the bound is 2 (1 + beta) / ((1 + 2 s beta) max a_i) (heavy ball:
        2 (1 + beta) / max a; Nesterov: 2 (1 + beta) / ((1 + 2 beta) max a)).
        """
        beta, s = (0.0, 0.0) if optimizer is None else (optimizer.beta, optimizer.s)
        return 2.0 * (1.0 + beta) / ((1.0 + 2.0 * s * beta) * float(self.curvature.max()))

    def loss(self, x: FloatArray) -> FloatArray:
        """Excess loss 1/2 sum_i a_i x_i^2 (the expected loss minus its floor 1/2 sum_i a_i S_i), last axis."""
        return 0.5 * np.asarray(x, dtype=np.float64) ** 2 @ self.curvature


@dataclass(frozen=True)
class Momentum:
    """The paper's unified momentum (its eq. 7), with G = A (x - c):

        y(t+1)  = x(t) - lr G
        ys(t+1) = x(t) - s lr G
        x(t+1)  = y(t+1) + beta (ys(t+1) - ys(t)),   ys(0) = x(0)

    s = 0 is heavy ball, s = 1 Nesterov, beta = 0 plain SGD (any s), and
    s = 1 / (1 - beta) plain SGD with step lr / (1 - beta).
    """

    s: float = 0.0
    beta: float = 0.0
    name: str = "sgd"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and 0.0 <= self.beta < 1.0):
            raise ValueError(f"beta={self.beta!r} is invalid: expected 0 <= beta < 1")
        if not (math.isfinite(self.s) and self.s >= 0.0):
            raise ValueError(f"s={self.s!r} is invalid: expected a finite s >= 0")


def sgd() -> Momentum:
    """Plain SGD: x(t+1) = x(t) - lr G."""
    return Momentum(0.0, 0.0, "sgd")


def heavy_ball(beta: float = 0.9) -> Momentum:
    """Heavy ball (s = 0): x(t+1) = x(t) - lr G + beta (x(t) - x(t-1))."""
    return Momentum(0.0, beta, "heavy-ball")


def nesterov(beta: float = 0.9) -> Momentum:
    """Nesterov (s = 1): y(t+1) = x(t) - lr G, x(t+1) = y(t+1) + beta (y(t+1) - y(t))."""
    return Momentum(1.0, beta, "nesterov")


def participation_ratio(model: NoisyQuadratic, lr: float) -> float:
    """Effective number of coordinates that carry the stationary SGD step.

    With weights w_i = a_i^2 S_i / (2 - lr a_i) (each coordinate's share of E||d||^2),
    n_eff = (sum w_i)^2 / sum w_i^2: n when all share equally, about 1 when one dominates.
    With small n_eff the per-iteration angle is very noisy and its mean need not follow
    Theorem 1's ratio of expectations.
    """
    a, s = model.curvature, model.variance
    if not 0 < lr * a.max() < 2:
        raise ValueError(f"lr={lr!r} is invalid for this model: expected 0 < lr < {2 / a.max():.6g} (2 / max a_i)")
    w = a * a * s / (2.0 - lr * a)
    total = w.sum()
    return float(total * total / (w @ w)) if total > 0 else 0.0


#: Default batch size B of :func:`zhang2019_model`. B = 1 is the per-example noise, the
#: noisiest member of the family; B only scales the noise (S_i = i / B), so the step
#: angles, Theorem 1 and n_eff do not depend on it, and the stationary excess loss
#: (about lr / (4 B) * sum_i 1/i) falls as 1 / B.
ZHANG2019_BATCH_SIZE = 1.0


def zhang2019_model(n: int = 10_000, batch_size: float = ZHANG2019_BATCH_SIZE) -> NoisyQuadratic:
    """The NQM of G. Zhang et al. 2019: a_i = 1/i and gradient-noise covariance H / B (i = 1..n).

    The gradient here is A (x - c), so its noise -A c has covariance A Sigma A; H / B with
    H = A therefore means S_i = 1 / (a_i B) = i / B: the variance of c_i *grows* with i
    (S_i * a_i = 1 / B for every i). Each coordinate's share of the stationary step,
    a_i^2 S_i / (2 - lr a_i) ~ 1 / (2 B i), falls only like 1/i, so many coordinates
    carry it: n_eff is about 58 at n = 10^4 (about (ln n + 0.58)^2 / 1.64 for any lr
    used here), and the saturation angle lies just above 90 degrees (90.29 at lr 0.06).

    Args:
        n: coordinates, >= 1.
        batch_size: B > 0 (may be fractional: 1 / B is just the noise scale).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} is invalid: expected an integer >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float)) or not (
        math.isfinite(batch_size) and batch_size > 0
    ):
        raise ValueError(f"batch_size={batch_size!r} is invalid: expected a finite number > 0")
    i = np.arange(1, n + 1, dtype=np.float64)
    label = f"zhang2019(n={n})" if batch_size == ZHANG2019_BATCH_SIZE else f"zhang2019(n={n}, B={batch_size:g})"
    return NoisyQuadratic(1.0 / i, i / float(batch_size), label)


def figure1_model(n: int = 10_000, low: float = 1.0, high: float = 16.0) -> NoisyQuadratic:
    """A spectrum that shows Figure 1's behaviour: a_i log-spaced in [low, high], S_i = 1 / a_i.

    With high = 16 and lr <= 0.06 every lr a_i stays below 1, so the saturation angle lies
    between 90 and 120 degrees (about 105 at lr 0.06) and falls as the lr falls; thousands
    of coordinates share the step, so the angle curve is smooth, as in the paper's plot.
    """
    if n < 1:
        raise ValueError(f"n={n!r} is invalid: expected an integer >= 1")
    if not 0 < low <= high:
        raise ValueError(f"low={low!r}, high={high!r}: expected 0 < low <= high")
    a = np.geomspace(low, high, n)
    return NoisyQuadratic(a, 1.0 / a, f"figure1(n={n})")


PresetName = Literal["zhang2019", "figure1"]
PRESETS: tuple[PresetName, ...] = ("zhang2019", "figure1")


def preset(name: str, n: int = 10_000) -> NoisyQuadratic:
    """A preset model by name (one of :data:`PRESETS`)."""
    if name == "zhang2019":
        return zhang2019_model(n)
    if name == "figure1":
        return figure1_model(n)
    raise ValueError(f"preset={name!r} is unknown: expected one of {', '.join(PRESETS)}")
