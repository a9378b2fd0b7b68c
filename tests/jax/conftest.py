"""Shared fixtures for the JAX adapter tests: x64 switching, oracle comparison, subprocesses.

Helpers are handed out as fixtures because pytest runs with ``--import-mode=importlib``,
under which test modules cannot import each other.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import numpy as np
import pytest

from autodrop_core import Decision

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=[False, True], ids=["float32", "x64"])
def x64(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run the test body once without and once with ``jax_enable_x64``."""
    with jax.enable_x64(request.param):
        yield request.param


#: Unit roundoff of float32: without x64 each step, product and partial sum rounds at this level.
FLOAT32_U = 2.0**-24


def angle_tolerance(x64_on: bool, angle: float | None) -> float:
    """Degrees an angle may sit from the float64 oracle's, from rounding alone.

    With x64 the reductions are float64: 1e-9 degrees is far above their rounding.
    Without x64 the cosine carries a relative error of a few float32 roundoffs u, and
    d(angle) = d(cos) / sin(angle): the bound is 8 u / sin(angle) radians (an observed
    error is about one u / sin(angle)). It grows for nearly parallel steps, as any
    float32 computation of this cosine must.
    """
    if x64_on:
        return 1e-9
    sine = math.sin(math.radians(angle)) if angle is not None else 1.0
    return math.degrees(8 * FLOAT32_U / max(sine, 1e-3))


class DecisionChecker:
    """Compares decisions epoch by epoch: identical booleans, epochs, weights and lrs,
    angles within :func:`angle_tolerance` (delta within the sum of its two angles')."""

    def __init__(self, x64_on: bool) -> None:
        self.x64_on = x64_on
        self.prev_tol = 0.0

    def __call__(self, got: Decision, want: Decision) -> None:
        where = f"epoch {want.epoch}:\n  jax    {got}\n  oracle {want}"
        for name in ("epoch", "threshold", "triggered", "average_weight", "apply_average", "dropped", "exhausted"):
            assert getattr(got, name) == getattr(want, name), f"{name} differs at {where}"
        assert got.lrs == want.lrs, f"lrs differ at {where}"
        tol = angle_tolerance(self.x64_on, want.smoothed_angle)
        tolerances = {
            "angle": angle_tolerance(self.x64_on, want.angle),
            "smoothed_angle": tol,
            "delta": tol + self.prev_tol,
        }
        for name, limit in tolerances.items():
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None), f"{name} defined on one side only at {where}"
            if a is not None:
                assert math.isclose(a, b, rel_tol=0, abs_tol=limit), (
                    f"{name} differs by {abs(a - b)} > {limit} at {where}"
                )
        self.prev_tol = tol


@pytest.fixture
def checker() -> Callable[[bool], DecisionChecker]:
    """``checker(x64)`` returns a fresh epoch-by-epoch comparer."""
    return DecisionChecker


def numpy_leaves(tree: object) -> list[np.ndarray]:
    """The leaves of a pytree as fresh numpy arrays (the oracle's own copies)."""
    return [np.array(leaf, copy=True) for leaf in jax.tree.leaves(jax.device_get(tree))]


@pytest.fixture
def as_numpy() -> Callable[[object], list[np.ndarray]]:
    return numpy_leaves


def _run_python(code: str, devices: int = 1, timeout: float = 300) -> str:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "adapters"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def run_python() -> Callable[..., str]:
    """Run code in a fresh interpreter (XLA flags must be set before jax is imported)."""
    return _run_python
