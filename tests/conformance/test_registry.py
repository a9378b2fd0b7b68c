"""Discovery through the ``autodrop.adapters`` entry points: list cheaply, load on demand, fail clearly."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from autodrop_conformance import GROUP, AdapterLoadError, AdapterLoadWarning, _registry, adapter_names, load_all
from autodrop_conformance import load_driver as load


def _fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **modules: str) -> None:
    """Register one entry point per module source given (name -> source of a module ``fake_<name>``)."""
    for name, source in modules.items():
        (tmp_path / f"fake_{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint(name=n, value=f"fake_{n}:driver", group=GROUP) for n in modules]
    monkeypatch.setattr(_registry, "entry_points", lambda group: points if group == GROUP else [])


def test_our_adapters_are_registered_like_any_third_party() -> None:
    assert {"numpy", "torch", "jax", "tensorflow"} <= set(adapter_names())


def test_listing_adapters_imports_no_framework() -> None:
    code = (
        "import sys, autodrop_conformance as ac\n"
        "names = ac.adapter_names()\n"
        "heavy = [m for m in ('torch', 'jax', 'tensorflow', 'keras', 'hypothesis') if m in sys.modules]\n"
        "assert 'numpy' in names and not heavy, (names, heavy)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_adapter_loads_on_demand_and_is_checked() -> None:
    driver = load("numpy")
    assert driver.name == "numpy" and driver.accumulation == "float64"


def test_an_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(AdapterLoadError, match=r"no adapter named 'mlx'.*registered: \[.*'numpy'"):
        load("mlx")


def test_a_missing_framework_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake(monkeypatch, tmp_path, tf="raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n")
    expected = r"missing module 'tensorflow'; install it with: pip install 'autodrop\[tensorflow\]'"
    with pytest.raises(AdapterLoadError, match=expected):
        load("tf")


def test_a_broken_plugin_warns_and_the_others_still_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake(
        monkeypatch,
        tmp_path,
        broken="raise RuntimeError('plugin bug')\n",
        notadriver="driver = 42\n",
        good="from autodrop_numpy._conformance import driver\n",
    )
    with pytest.warns(AdapterLoadWarning) as warned:
        drivers = load_all()
    assert list(drivers) == ["good"]
    messages = sorted(str(w.message) for w in warned)
    assert "adapter 'broken' (fake_broken:driver) failed to load: RuntimeError('plugin bug')" in messages[0]
    assert "adapter 'notadriver': 42 is not a conformance driver" in messages[1]


def test_a_requested_adapter_that_does_not_load_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake(monkeypatch, tmp_path, broken="raise RuntimeError('plugin bug')\n")
    with pytest.raises(AdapterLoadError, match="failed to load"):
        load("broken")


def test_a_driver_with_an_unknown_dtype_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = (
        "from autodrop_numpy._conformance import NumpyDriver\n"
        "class D(NumpyDriver):\n    dtypes = ('float8',)\n"
        "driver = D()\n"
    )
    _fake(monkeypatch, tmp_path, odd=source)
    with pytest.raises(AdapterLoadError, match=r"dtypes=\('float8',\) is invalid"):
        load("odd")
