"""The torch adapter on a CUDA device passes the suite (skipped where there is no GPU)."""

from __future__ import annotations

import pytest
from autodrop_conformance import AdapterConformance

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _cuda_driver() -> object:
    from autodrop_torch._conformance import driver_cuda

    return driver_cuda


class TestTorchOnCuda(AdapterConformance):
    driver = _cuda_driver() if torch.cuda.is_available() else None  # type: ignore[assignment]
