"""autodrop_conformance: one Hypothesis suite that every AutoDrop adapter must pass.

An adapter exposes a small *driver* (:class:`Driver`) through the entry-point group
``autodrop.adapters``; the suite replays generated parameter trajectories through it
and through the numpy reference (``autodrop_numpy``, float64) and compares decisions,
reductions, averaged parameters, checkpoints and NaN handling. Run it with
``pytest --pyargs autodrop_conformance --autodrop-adapter=NAME``, or subclass
:class:`AdapterConformance` in your own tests. Importing this package imports no
framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autodrop_conformance._case import Case
    from autodrop_conformance._check import (
        STATS,
        check_against_reference,
        check_case,
        check_checkpoint,
        check_nan_step,
    )
    from autodrop_conformance._compare import ConformanceError, Verdict
    from autodrop_conformance._protocol import (
        DEFAULT_SIZE_THRESHOLDS,
        DTYPES,
        UNIT_ROUNDOFF,
        AdapterRun,
        Driver,
        DType,
        Layout,
        lr_dtype,
        optimizer_state,
        round_to,
        size_thresholds,
    )
    from autodrop_conformance._registry import (
        GROUP,
        AdapterLoadError,
        AdapterLoadWarning,
        adapter_names,
        load_all,
        load_driver,
    )
    from autodrop_conformance._strategies import MOTIFS, cases, configs, layouts
    from autodrop_conformance._suite import AdapterConformance

__all__ = [
    "DEFAULT_SIZE_THRESHOLDS",
    "DTYPES",
    "GROUP",
    "MOTIFS",
    "STATS",
    "UNIT_ROUNDOFF",
    "AdapterConformance",
    "AdapterLoadError",
    "AdapterLoadWarning",
    "AdapterRun",
    "Case",
    "ConformanceError",
    "DType",
    "Driver",
    "Layout",
    "Verdict",
    "adapter_names",
    "cases",
    "check_against_reference",
    "check_case",
    "check_checkpoint",
    "check_nan_step",
    "configs",
    "layouts",
    "load_all",
    "load_driver",
    "lr_dtype",
    "optimizer_state",
    "round_to",
    "size_thresholds",
]

# Public name -> private module. Imported on first use, so that loading the pytest
# plugin (a submodule) does not pull in numpy, Hypothesis or the reference adapter.
_HOME = {
    **dict.fromkeys(["Case"], "_case"),
    **dict.fromkeys(["STATS", "check_against_reference", "check_case", "check_checkpoint", "check_nan_step"], "_check"),
    **dict.fromkeys(["ConformanceError", "Verdict"], "_compare"),
    **dict.fromkeys(
        ["DEFAULT_SIZE_THRESHOLDS", "DTYPES", "UNIT_ROUNDOFF", "AdapterRun", "Driver", "DType", "Layout", "lr_dtype",
         "optimizer_state", "round_to", "size_thresholds"],
        "_protocol",
    ),
    **dict.fromkeys(
        ["GROUP", "AdapterLoadError", "AdapterLoadWarning", "adapter_names", "load_all", "load_driver"], "_registry"
    ),
    **dict.fromkeys(["MOTIFS", "cases", "configs", "layouts"], "_strategies"),
    **dict.fromkeys(["AdapterConformance"], "_suite"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'autodrop_conformance' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"autodrop_conformance.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
