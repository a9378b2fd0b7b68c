"""Without x64, the float32 scheme keeps the angle within 1e-4 degrees of float64 at 11M parameters."""

from __future__ import annotations

import doctest
import importlib.util
import math
import re
from pathlib import Path

import autodrop_jax
import pytest
from autodrop_jax import _fused_cpu

REPO = Path(__file__).resolve().parents[2]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_jax_step", REPO / "benchmarks" / "bench_jax_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resnet18_shapes_are_62_arrays_of_11_2m_parameters():
    shapes = load_benchmark().resnet18_shapes()
    assert len(shapes) == 62
    total = sum(math.prod(s) for s in shapes)
    assert 11.1e6 < total < 11.2e6


@pytest.mark.slow
@pytest.mark.parametrize("path", ["xla", "numba"])
def test_float32_angle_error_at_11m_parameters_is_at_most_1e_4_degrees(path, monkeypatch):
    # 11M parameters take the numba CPU pass (float64 sums) where numba is installed: the XLA
    # path's float32 sums are what this bound is about, so both are run
    if path == "numba" and importlib.util.find_spec("numba") is None:
        pytest.skip("numba not installed")
    monkeypatch.setattr(_fused_cpu, "USE_FUSED_CPU", path == "numba")
    errors = load_benchmark().float32_angle_errors()
    angles = [angle for angle, _ in errors]
    assert max(angles) > 80 and min(angles) < 5, f"the steps must span wide and narrow angles, got {angles}"
    worst = max(error for _, error in errors)
    assert worst <= 1e-4, f"float32 angle errors {errors}"


def test_package_docstring_example_runs():
    failures, tried = doctest.testmod(autodrop_jax, verbose=False)
    assert tried > 0 and failures == 0


def test_the_usage_examples_in_docs_jax_md_run():
    text = (REPO / "docs" / "jax.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/jax.md must hold runnable python examples"
    for block in blocks:
        exec(compile(block, "docs/jax.md", "exec"), {})
