"""A third party's adapter, installed as its own tiny distribution, passes through its entry point alone.

The example lives in ``example_plugin/`` (its own ``pyproject.toml`` registers
``example`` in ``autodrop.adapters``). It is pip-installed offline (no build isolation,
no dependencies) into a temporary target directory, and the suite is run against it in a
subprocess that only finds it through that directory's metadata.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from autodrop_conformance import AdapterConformance

EXAMPLE = Path(__file__).with_name("example_plugin")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="building the example offline needs hatchling in this environment")
    target = tmp_path_factory.mktemp("example_dist")
    build = tmp_path_factory.mktemp("example_src")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(EXAMPLE)],
        check=True,
        cwd=build,
    )
    return target


def _env(target: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_the_installed_example_is_found_through_its_entry_point(installed: Path) -> None:
    code = (
        "from autodrop_conformance import adapter_names, load_driver; "
        "print(adapter_names(), load_driver('example').name)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(installed), capture_output=True, text=True, check=True)
    assert "'example'" in out.stdout and out.stdout.strip().endswith("example")
    bare = subprocess.run([sys.executable, "-c", "import autodrop_conformance as a; print(a.adapter_names())"],
                          capture_output=True, text=True, check=True)
    assert "'example'" not in bare.stdout  # not installed in the dev environment itself


@pytest.mark.slow
def test_the_suite_passes_for_the_example_through_its_entry_point_alone(installed: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "autodrop_conformance", "--autodrop-adapter=example",
         "-q", "-p", "no:cacheprovider", "--hypothesis-profile=autodrop-ci", "-o", "addopts="],
        env=_env(installed), cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
    assert "example: 60 reference comparisons" in result.stdout


def test_a_requested_adapter_that_is_not_installed_fails_the_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "autodrop_conformance", "--autodrop-adapter=nosuch",
         "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "no adapter named 'nosuch'" in result.stdout


def _example_driver() -> Any:
    spec = importlib.util.spec_from_file_location(
        "_example_adapter_by_path", EXAMPLE / "autodrop_example_adapter" / "__init__.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.driver


class TestExampleBySubclassing(AdapterConformance):
    """The third party's other path: subclass the suite in its own tests and name the driver."""

    driver = _example_driver()
