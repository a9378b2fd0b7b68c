"""A plain numpy re-implementation of the NQM kernels, used only to check them.

Written independently of ``autodrop_core.nqm._rng`` and ``_kernels``: the same published
recipe (SplitMix64 at a counter, a 256-layer ziggurat, eq. 7's update), but vectorised
over coordinates with numpy's wrapping uint64 arithmetic, and the rare slow path in
exact Python integers. It must not import the numba modules (only their tables, which
are data).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from autodrop_core.nqm._rng import ZIGGURAT_F, ZIGGURAT_R, ZIGGURAT_X

FloatArray = npt.NDArray[np.float64]
MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64_array(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix64_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def bits_int(key: int, counter: int) -> int:
    return mix64_int((key + counter * GOLDEN) & MASK)


def open_unit(u: int) -> float:
    return ((u >> 11) + 0.5) * 2.0**-53


def slow_normal(key: int, counter: int, u: int) -> float:
    """The ziggurat's slow path, counter by counter, in Python integers."""
    j = 1
    while True:
        idx, negative = u & 255, (u >> 8) & 1
        z = float(u >> 11) * 2.0**-53 * ZIGGURAT_X[idx]
        if z < ZIGGURAT_X[idx + 1]:
            return -z if negative else z
        if idx == 0:
            while True:
                e1 = -math.log(open_unit(bits_int(key, counter + j))) / ZIGGURAT_R
                e2 = -math.log(open_unit(bits_int(key, counter + j + 1)))
                j += 2
                if e2 + e2 >= e1 * e1:
                    return -(ZIGGURAT_R + e1) if negative else ZIGGURAT_R + e1
        low, high = ZIGGURAT_F[idx + 1], ZIGGURAT_F[idx]
        height = low + open_unit(bits_int(key, counter + j)) * (high - low)
        j += 1
        if height < math.exp(-0.5 * z * z):
            return -z if negative else z
        u = bits_int(key, counter + j)
        j += 1


def normals(key: int, first: int, count: int) -> tuple[FloatArray, int]:
    """Variates first .. first + count - 1 of stream ``key``, and how many took the slow path."""
    counters = (np.arange(first, first + count, dtype=np.uint64)) << np.uint64(16)
    u = mix64_array(np.uint64(key) + counters * np.uint64(GOLDEN))
    idx = (u & np.uint64(255)).astype(np.intp)
    z = (u >> np.uint64(11)).astype(np.float64) * 2.0**-53 * ZIGGURAT_X[idx]
    z = np.where(((u >> np.uint64(8)) & np.uint64(1)) == 1, -z, z)
    slow = np.flatnonzero(np.abs(z) >= ZIGGURAT_X[idx + 1])
    for i in slow:
        z[i] = slow_normal(key, int(counters[i]), int(u[i]))
    return z, int(slow.size)


def run(
    curvature: FloatArray,
    variance: FloatArray,
    x0: FloatArray,
    lr: float,
    s: float,
    beta: float,
    key: int,
    iters: int,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Unified momentum on the NQM: (loss after each iteration, dot, sq_norm, final x)."""
    n = curvature.size
    x = np.array(x0, dtype=np.float64)
    ys = x.copy()
    prev = np.zeros(n)
    sd = np.sqrt(variance)
    loss, dot, sq = np.empty(iters), np.empty(iters), np.empty(iters)
    for t in range(iters):
        z, _ = normals(key, t * n, n)
        grad = curvature * (x - sd * z)
        ys_new = x - (s * lr) * grad
        x_new = x - lr * grad + beta * (ys_new - ys)
        step = x_new - x
        dot[t] = step @ prev
        sq[t] = step @ step
        loss[t] = 0.5 * np.sum(curvature * x_new * x_new)
        x, ys, prev = x_new, ys_new, step
    return loss, dot, sq, x
