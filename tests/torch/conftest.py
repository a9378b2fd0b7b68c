"""Shared setup of the torch adapter tests: import path, thread count, helper module.

The helpers live in ``torch_testkit.py`` beside this file (pytest runs with
``--import-mode=importlib``, so test modules cannot import each other); this conftest
puts the folder on ``sys.path`` for them and for the subprocess workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

try:  # an editable install made before adapters/autodrop_torch existed does not map it
    import autodrop_torch  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - depends on how the checkout was installed
    sys.path.insert(0, str(ROOT / "adapters"))

import torch  # noqa: E402

# The models here are tiny: one thread is faster than two fighting over a shared machine,
# and it keeps every float reduction in the same order from run to run.
torch.set_num_threads(1)


import importlib.util  # noqa: E402

import pytest  # noqa: E402

_PATHS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba not installed: no fused CPU kernels"))]


@pytest.fixture(params=_PATHS)
def reduction_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with plain torch ops and once with the fused numba CPU kernels."""
    from autodrop_torch import _fused_cpu, _reduce

    monkeypatch.setattr(_reduce, "USE_FUSED_CPU", request.param == "numba")
    monkeypatch.setattr(_fused_cpu, "MIN_NUMEL", 0)  # the test models are small
    return str(request.param)
