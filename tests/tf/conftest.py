"""Fixtures for the TensorFlow adapter tests; quiets TensorFlow's C++ logging.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` at import, so it is set before anything
imports TensorFlow. The shared scenario lives in ``scenario.py`` (also used by the
MirroredStrategy subprocess) and is loaded here by path (pytest runs in importlib mode).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).parent


def _load_scenario() -> ModuleType:
    name = "autodrop_tf_test_scenario"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "scenario.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def scenario() -> ModuleType:
    """The shared model, data and recorder (``tests/tf/scenario.py``)."""
    return _load_scenario()
