"""The shared bandwidth probe of the benchmarks: it must be a vectorized stream that computes what it says.

A scalar probe reads a bound below what the memory gives (the core is the limit), and
every benchmark's ratio then looks better than it is (docs/memory.md, 2026-12-03).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bandwidth.py"
_spec = importlib.util.spec_from_file_location("bandwidth", _PATH)
assert _spec is not None and _spec.loader is not None
bandwidth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bandwidth)


def test_the_probe_compiles_to_packed_adds() -> None:
    assert bandwidth.vector_instructions() > 0


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_the_probe_writes_the_sum_of_its_three_inputs(chunks: int) -> None:
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(1001, dtype=np.float32) for _ in range(3))
    d = np.full_like(a, np.nan)
    bandwidth._kernel()(a, b, c, d, chunks)
    np.testing.assert_array_equal(d, a + b + c)


def test_a_bound_is_bytes_over_bandwidth() -> None:
    assert math.isclose(bandwidth.ms_at(2e9, 4.0), 500.0)
