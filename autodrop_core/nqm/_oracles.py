"""Closed forms the simulations are checked against: exact expected dynamics and Theorem 1.

Per coordinate, the unified-momentum iteration is linear in the state v = (x, ys, x_prev)
plus a noise term: v(t+1) = M v(t) + b c(t), c(t) ~ N(0, S) independent of v(t). So the
raw second moments P(t) = E[v v^T] obey P(t+1) = M P M^T + S b b^T exactly, and every
expectation the angle needs (E<d(t+1), d(t)>, E||d(t+1)||^2, the expected loss) is a
linear function of P(t). For plain SGD this reduces to the formulas in the NQM notes.

This module is plain numpy: it must not draw random numbers or call the kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autodrop_core.nqm._model import Momentum, NoisyQuadratic, sgd

__all__ = [
    "ExpectedDynamics",
    "expected_dynamics",
    "stationary_second_moment",
    "theorem1_angle",
    "theorem1_cosine",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ExpectedDynamics:
    """Expectations over the noise, summed over coordinates, for t = 0..T (loss) or 1..T (steps).

    Attributes:
        loss: E[1/2 sum a_i x_i(t)^2], shape (T + 1,).
        dot: E<d(t), d(t-1)>, shape (T,) (0 at t = 1).
        sq_norm: E||d(t)||^2, shape (T,).
    """

    loss: FloatArray
    dot: FloatArray
    sq_norm: FloatArray

    def ratio_angle(self) -> FloatArray:
        """degrees(arccos(E<d(t), d(t-1)> / sqrt(E||d(t)||^2 E||d(t-1)||^2))): NaN at t = 1."""
        prev = np.concatenate([[0.0], self.sq_norm[:-1]])
        denom = np.sqrt(self.sq_norm) * np.sqrt(prev)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, np.degrees(np.arccos(np.clip(self.dot / denom, -1, 1))), np.nan)


def _transition(model: NoisyQuadratic, lr: float, optimizer: Momentum) -> tuple[FloatArray, FloatArray]:
    """Per-coordinate M (n, 3, 3) and b (n, 3) for the state (x, ys, x_prev)."""
    h = lr * model.curvature
    s, beta = optimizer.s, optimizer.beta
    m = np.zeros((model.n, 3, 3))
    m[:, 0, 0] = 1.0 - h + beta - beta * s * h
    m[:, 0, 1] = -beta
    m[:, 1, 0] = 1.0 - s * h
    m[:, 2, 0] = 1.0
    b = np.zeros((model.n, 3))
    b[:, 0] = h * (1.0 + beta * s)
    b[:, 1] = s * h
    return m, b


def expected_dynamics(
    model: NoisyQuadratic,
    lrs: float | Sequence[float],
    iters: int,
    x0: float | FloatArray = 1.0,
    optimizer: Momentum | None = None,
) -> ExpectedDynamics:
    """Exact expected loss and step reductions of a run started at a fixed x(0).

    Args:
        model: the NQM.
        lrs: one lr for all iterations, or one per iteration (length ``iters``).
        iters: number of iterations T.
        x0: the fixed start x(0) (a number or n numbers); ys(0) = x(-1) = x(0).
        optimizer: unified momentum settings (plain SGD when omitted).
    """
    optimizer = optimizer or sgd()
    schedule = np.broadcast_to(np.asarray(lrs, dtype=np.float64), (iters,))
    x = np.broadcast_to(np.asarray(x0, dtype=np.float64), (model.n,))
    if optimizer.beta == 0.0:
        return _sgd_dynamics(model, schedule, x)
    v = np.stack([x, x, x], axis=1)
    p = v[:, :, None] * v[:, None, :]
    a, var = model.curvature, model.variance
    loss = np.empty(iters + 1)
    dot = np.empty(iters)
    sq = np.empty(iters)
    loss[0] = 0.5 * a @ p[:, 0, 0]
    cached_lr, m, b = None, None, None
    for t in range(iters):
        if schedule[t] != cached_lr:
            cached_lr = schedule[t]
            m, b = _transition(model, float(cached_lr), optimizer)
        assert m is not None and b is not None
        # d(t+1) = (M[0] - e_x) v + b_0 c ;  d(t) = (1, 0, -1) v
        row = m[:, 0, :].copy()
        row[:, 0] -= 1.0
        p_row = np.einsum("nj,njk->nk", row, p)
        dot[t] = np.sum(p_row[:, 0] - p_row[:, 2])
        sq[t] = np.sum(np.einsum("nk,nk->n", p_row, row) + var * b[:, 0] ** 2)
        p = m @ p @ m.transpose(0, 2, 1) + var[:, None, None] * b[:, :, None] * b[:, None, :]
        loss[t + 1] = 0.5 * a @ p[:, 0, 0]
    return ExpectedDynamics(loss, dot, sq)


def _sgd_dynamics(model: NoisyQuadratic, schedule: FloatArray, x0: FloatArray) -> ExpectedDynamics:
    """Plain SGD in O(n) per iteration, with h = lr(t) a and h' = lr(t-1) a:

    E[d(t+1) d(t)] = -h (q(t) - (1 - h') q(t-1)),  E[d(t+1)^2] = h^2 (q(t) + S),
    q(t+1) = (1 - h)^2 q(t) + h^2 S.
    """
    a, var = model.curvature, model.variance
    iters = schedule.size
    loss, dot, sq = np.empty(iters + 1), np.empty(iters), np.empty(iters)
    q = x0 * x0
    q_before, h_before = q, np.zeros_like(a)  # x(-1) = x(0) and d(0) = 0
    loss[0] = 0.5 * a @ q
    for t in range(iters):
        h = schedule[t] * a
        dot[t] = -(h @ (q - (1.0 - h_before) * q_before)) if t > 0 else 0.0
        sq[t] = (h * h) @ (q + var)
        q_before, h_before = q, h
        q = (1.0 - h) ** 2 * q + h * h * var
        loss[t + 1] = 0.5 * a @ q
    return ExpectedDynamics(loss, dot, sq)


def stationary_second_moment(model: NoisyQuadratic, lr: float) -> FloatArray:
    """Plain SGD's stationary E[x_i^2] = lr a_i S_i / (2 - lr a_i)."""
    a = model.curvature
    if not 0 < lr * a.max() < 2:
        raise ValueError(f"lr={lr!r} is invalid: expected 0 < lr < {2 / a.max():.6g} (2 / max a_i)")
    return np.asarray(lr * a * model.variance / (2.0 - lr * a))


def theorem1_cosine(model: NoisyQuadratic, lr: float) -> float:
    """Theorem 1 (eq. 6): the stationary ratio E<d(t+1), d(t)> / E||d||^2 of plain SGD.

    cos C* ~= -(lr / 2) sum a^3 S / (2 - lr a) / sum a^2 S / (2 - lr a). The formula is a
    ratio of expectations; the mean per-iteration cosine or angle follows it only when
    many coordinates share the step (see :func:`participation_ratio`).
    """
    stationary_second_moment(model, lr)  # validates lr
    a, var = model.curvature, model.variance
    w = a * a * var / (2.0 - lr * a)
    return float(-0.5 * lr * (a @ w) / w.sum())


def theorem1_angle(model: NoisyQuadratic, lr: float) -> float:
    """Theorem 1's predicted saturation angle, degrees(arccos(cos C*))."""
    return math.degrees(math.acos(max(-1.0, min(1.0, theorem1_cosine(model, lr)))))
