"""The counter-based noise: a standard normal, a pure function of (seed, index), reproduced by numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autodrop_core.nqm import standard_normals
from autodrop_core.nqm._rng import ZIGGURAT_R, ZIGGURAT_X, run_key


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_draws_follow_the_standard_normal_law() -> None:
    z = standard_normals(seed=11, count=400_000)
    se = 1 / math.sqrt(z.size)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * math.sqrt(2) * se
    # Kolmogorov-Smirnov distance against the normal CDF; 1.95 / sqrt(n) is the 0.1% critical value.
    ordered = np.sort(z)
    cdf = normal_cdf(ordered)
    ranks = np.arange(1, z.size + 1) / z.size
    distance = max(np.max(ranks - cdf), np.max(cdf - (ranks - 1 / z.size)))
    assert distance < 1.95 * se
    tail = np.mean(np.abs(z) > ZIGGURAT_R)  # the tail beyond the base layer has its own sampler
    expected = math.erfc(ZIGGURAT_R / math.sqrt(2.0))
    assert abs(tail - expected) < 5 * math.sqrt(expected / z.size)


def test_ziggurat_layers_end_at_zero_and_decrease() -> None:
    assert ZIGGURAT_X[1] == ZIGGURAT_R and ZIGGURAT_X[256] == 0.0
    assert np.all(np.diff(ZIGGURAT_X[1:]) < 0)


def test_a_variate_depends_only_on_seed_and_index() -> None:
    whole = standard_normals(seed=3, count=1000)
    pieces = np.concatenate([standard_normals(3, 300, 0), standard_normals(3, 700, 300)])
    np.testing.assert_array_equal(whole, pieces)


def test_different_seeds_give_uncorrelated_streams() -> None:
    streams = np.stack([standard_normals(seed, 50_000) for seed in range(4)])
    corr = np.corrcoef(streams)[np.triu_indices(4, 1)]
    assert np.all(np.abs(corr) < 5 / math.sqrt(50_000))


def test_numpy_reference_draws_the_same_variates(reference) -> None:
    kernel = standard_normals(seed=5, count=50_000, first=123)
    ref, slow = reference.normals(int(run_key(5)), 123, 50_000)
    assert slow > 300  # the slow path (wedges and tail) was exercised too
    np.testing.assert_allclose(kernel, ref, rtol=1e-15, atol=0)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_bad_seed_is_rejected_with_its_value_and_range(seed) -> None:
    with pytest.raises(ValueError, match=r"seed=.* expected an integer in \[0, 2\*\*63\)"):
        run_key(seed)
