"""Counter-based Gaussian noise for the NQM kernels (SplitMix64 hash + 256-layer ziggurat).

Every normal variate is a pure function of ``(key, counter)``: the key comes from the
run's seed, the counter from (iteration, coordinate). A run's noise therefore does not
depend on how many threads share the work, on which thread runs it, or on how the
iterations are split into calls, which is what makes the simulations reproducible and
resumable. The uniform source is the SplitMix64 output function evaluated at position
``counter`` of the stream seeded by ``key``; normals come from a ziggurat (Marsaglia and
Tsang's construction) that consumes further counters only on its rare slow path.

This module must not hold any state: no global generator, no caching of draws.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "COUNTER_SHIFT",
    "ZIGGURAT_F",
    "ZIGGURAT_R",
    "ZIGGURAT_X",
    "fill_normals",
    "mix64",
    "normal_at",
    "run_key",
    "standard_normals",
]

#: Each normal owns 2**COUNTER_SHIFT consecutive counters for its (rarely needed) extra uniforms.
COUNTER_SHIFT = 16
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_LOW8, _ONE = np.uint64(255), np.uint64(1)
_S8, _S11, _SHIFT = np.uint64(8), np.uint64(11), np.uint64(COUNTER_SHIFT)
_TWO_M53 = 2.0**-53

#: Right edge of the ziggurat's base layer and the common area of its 256 layers.
ZIGGURAT_R = 3.6541528853610088
_AREA = 4.92867323399e-3


def _ziggurat_tables() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Layer edges x[0..256] (x[0] is the base layer's virtual width) and f(x) = exp(-x^2/2)."""
    x = np.empty(257, dtype=np.float64)
    x[0] = _AREA / math.exp(-0.5 * ZIGGURAT_R * ZIGGURAT_R)
    x[1] = ZIGGURAT_R
    for i in range(1, 256):
        level = math.exp(-0.5 * x[i] * x[i]) + _AREA / x[i]
        x[i + 1] = math.sqrt(-2.0 * math.log(level)) if level < 1.0 else 0.0
    x[256] = 0.0
    return x, np.exp(-0.5 * x * x)


ZIGGURAT_X, ZIGGURAT_F = _ziggurat_tables()


@numba.njit(cache=True, inline="always")
def mix64(z: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """SplitMix64's finaliser: a bijective avalanche of 64 bits."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(cache=True, inline="always")
def _bits(key: np.uint64, counter: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    return mix64(key + counter * _GOLDEN)


@numba.njit(cache=True, inline="always")
def _open_unit(u: np.uint64) -> float:  # pragma: no cover - compiled
    """A uniform in the open interval (0, 1) from the top 53 bits."""
    return (float(u >> _S11) + 0.5) * _TWO_M53


@numba.njit(cache=True)
def _slow_normal(key: np.uint64, counter: np.uint64, u: np.uint64) -> float:  # pragma: no cover - compiled
    """Finish a draw whose first candidate missed the fast path (about 1.2% of draws)."""
    j = np.uint64(1)
    while True:
        idx = u & _LOW8
        negative = (u >> _S8) & _ONE
        z = float(u >> _S11) * _TWO_M53 * ZIGGURAT_X[idx]
        if z < ZIGGURAT_X[idx + _ONE]:
            return -z if negative else z
        if idx == 0:
            while True:  # Marsaglia's exponential rejection for the tail beyond R
                e1 = -math.log(_open_unit(_bits(key, counter + j))) / ZIGGURAT_R
                e2 = -math.log(_open_unit(_bits(key, counter + j + _ONE)))
                j += np.uint64(2)
                if e2 + e2 >= e1 * e1:
                    z = ZIGGURAT_R + e1
                    return -z if negative else z
        low, high = ZIGGURAT_F[idx + _ONE], ZIGGURAT_F[idx]
        height = low + _open_unit(_bits(key, counter + j)) * (high - low)
        j += _ONE
        if height < math.exp(-0.5 * z * z):
            return -z if negative else z
        u = _bits(key, counter + j)
        j += _ONE


@numba.njit(cache=True, inline="always")
def normal_at(key: np.uint64, index: np.uint64) -> float:  # pragma: no cover - compiled
    """The standard normal variate number ``index`` of the stream ``key``."""
    counter = index << _SHIFT
    u = _bits(key, counter)
    idx = u & _LOW8
    z = float(u >> _S11) * _TWO_M53 * ZIGGURAT_X[idx]
    if z < ZIGGURAT_X[idx + _ONE]:
        return -z if (u >> _S8) & _ONE else z
    return _slow_normal(key, counter, u)


@numba.njit(cache=True)
def fill_normals(key: np.uint64, first: np.uint64, out: npt.NDArray[np.float64]) -> None:  # pragma: no cover
    """Write variates ``first``, ``first + 1``, ... of the stream ``key`` into ``out``."""
    for i in range(out.shape[0]):
        out[i] = normal_at(key, first + np.uint64(i))


def run_key(seed: int) -> np.uint64:
    """The stream key of a seed (any integer in [0, 2**63)); nearby seeds give unrelated keys."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed={seed!r} is invalid: expected an integer in [0, 2**63)")
    z = (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(z ^ (z >> 31))


def standard_normals(seed: int, count: int, first: int = 0) -> npt.NDArray[np.float64]:
    """Draws ``first`` .. ``first + count - 1`` of the seed's stream (the kernels' noise source).

    Args:
        seed: the run's seed.
        count: how many variates.
        first: index of the first variate in the stream.
    """
    if count < 0 or first < 0 or first + count > 2 ** (64 - COUNTER_SHIFT):
        raise ValueError(f"count={count}, first={first}: expected 0 <= first, first + count <= 2**48")
    out = np.empty(count, dtype=np.float64)
    fill_normals(run_key(seed), np.uint64(first), out)
    return out
