"""numba kernels: advance NQM runs under unified momentum and reduce each step on the fly.

One pass over the coordinates per iteration draws the noise, updates x and the momentum
buffer, forms the step d(t) = x(t) - x(t-1) element by element and accumulates, in
float64, <d(t), d(t-1)>, ||d(t)||^2 and the excess loss 1/2 sum a_i x_i(t)^2. Runs are
independent: :func:`advance_runs` spreads them over threads with ``prange`` and, since
the noise is counter-based (``_rng.py``), the result does not depend on the thread count.

The kernels validate nothing and allocate nothing per iteration; ``_simulate.py`` checks
shapes, dtypes and ranges before calling them. They must not hold any global state.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from autodrop_core.nqm._rng import normal_at

__all__ = ["advance_run", "advance_runs"]

FloatArray = npt.NDArray[np.float64]


@numba.njit(cache=True, fastmath=False)
def advance_run(
    curvature: FloatArray,
    noise_sd: FloatArray,
    x: FloatArray,
    ys: FloatArray,
    prev_step: FloatArray,
    lr: float,
    s: float,
    beta: float,
    key: np.uint64,
    first_iteration: int,
    loss_out: FloatArray,
    dot_out: FloatArray,
    sq_norm_out: FloatArray,
) -> None:  # pragma: no cover - compiled
    """Advance one run by ``loss_out.shape[0]`` iterations, in place.

    Args:
        curvature: a_i.
        noise_sd: sqrt(S_i).
        x: the parameters x(t) (updated in place).
        ys: the momentum buffer ys(t) of eq. 7 (updated in place; equal to x at the start;
            left untouched when beta == 0, where it plays no part).
        prev_step: d(t) = x(t) - x(t-1), zeros at the start (updated in place).
        lr, s, beta: the unified-momentum settings.
        key: the run's noise stream (see ``_rng.run_key``).
        first_iteration: index of the first iteration (the noise counter's time).
        loss_out, dot_out, sq_norm_out: per iteration, 1/2 sum a x(t+1)^2,
            <d(t+1), d(t)> and ||d(t+1)||^2.
    """
    n = x.shape[0]
    slr = s * lr
    n64 = np.uint64(n)
    plain = beta == 0.0  # plain SGD: the momentum buffer plays no part, skip its traffic
    for k in range(loss_out.shape[0]):
        base = np.uint64(first_iteration + k) * n64
        dot = 0.0
        sq_norm = 0.0
        loss = 0.0
        if plain:
            for i in range(n):
                a = curvature[i]
                xi = x[i]
                x_new = xi - lr * (a * (xi - noise_sd[i] * normal_at(key, base + np.uint64(i))))
                step = x_new - xi
                dot += step * prev_step[i]
                sq_norm += step * step
                loss += a * x_new * x_new
                x[i] = x_new
                prev_step[i] = step
        else:
            for i in range(n):
                a = curvature[i]
                xi = x[i]
                grad = a * (xi - noise_sd[i] * normal_at(key, base + np.uint64(i)))
                ys_new = xi - slr * grad
                x_new = xi - lr * grad + beta * (ys_new - ys[i])
                step = x_new - xi
                dot += step * prev_step[i]
                sq_norm += step * step
                loss += a * x_new * x_new
                x[i] = x_new
                ys[i] = ys_new
                prev_step[i] = step
        loss_out[k] = 0.5 * loss
        dot_out[k] = dot
        sq_norm_out[k] = sq_norm


@numba.njit(cache=True, parallel=True)
def advance_runs(
    curvature: FloatArray,
    noise_sd: FloatArray,
    x: FloatArray,
    ys: FloatArray,
    prev_step: FloatArray,
    lrs: FloatArray,
    s: float,
    beta: float,
    keys: npt.NDArray[np.uint64],
    first_iteration: int,
    loss_out: FloatArray,
    dot_out: FloatArray,
    sq_norm_out: FloatArray,
) -> None:  # pragma: no cover - compiled
    """:func:`advance_run` for many runs at once (row r of every 2-d array is run r), in parallel."""
    for r in numba.prange(x.shape[0]):
        advance_run(
            curvature, noise_sd, x[r], ys[r], prev_step[r], lrs[r], s, beta, keys[r],
            first_iteration, loss_out[r], dot_out[r], sq_norm_out[r],
        )
