"""Fixtures for the NQM tests: the numpy reference module and small models.

Sizes stay small (CI has 2 cores and a few minutes for this folder, numba compilation
included). The simulations are deterministic (counter-based noise, fixed seeds), so
every statistical tolerance below is checked on the same draws each run: no flakiness.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("numba")

from autodrop_core.nqm import NoisyQuadratic, figure1_model, zhang2019_model


def _load_reference() -> ModuleType:
    path = Path(__file__).with_name("_reference.py")
    spec = importlib.util.spec_from_file_location("nqm_numpy_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    """The plain numpy implementation (tests/nqm/_reference.py)."""
    return _load_reference()


@pytest.fixture(scope="session")
def small_figure1() -> NoisyQuadratic:
    """The Figure 1 spectrum with 400 coordinates (n_eff in the hundreds)."""
    return figure1_model(n=400)


@pytest.fixture(scope="session")
def small_zhang() -> NoisyQuadratic:
    """The Zhang et al. 2019 model with 300 coordinates (n_eff about 24; 57 at n = 10^4)."""
    return zhang2019_model(n=300)
