"""Discovery of adapters through the ``autodrop.adapters`` entry-point group.

Listing reads distribution metadata only, so it never imports a framework; a driver is
imported when it is asked for by name. Our own adapters register exactly as a third
party would. A plugin that fails to load makes :func:`load_all` warn and go on, while
:func:`load_driver` (one adapter asked for by name) raises, naming the extra to install
when the cause is a missing framework. This module must not import any framework.
"""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autodrop_conformance._protocol import Driver

__all__ = ["GROUP", "AdapterLoadError", "AdapterLoadWarning", "adapter_names", "load_all", "load_driver"]

#: The entry-point group every adapter's driver registers in.
GROUP = "autodrop.adapters"

# Top-level module missing -> what to install (the autodrop extra that brings it).
_EXTRA_FOR_MODULE = {
    "numpy": "autodrop[numpy]",
    "torch": "autodrop[torch]",
    "jax": "autodrop[jax]",
    "jaxlib": "autodrop[jax]",
    "optax": "autodrop[jax]",
    "flax": "autodrop[jax]",
    "orbax": "autodrop[jax]",
    "tensorflow": "autodrop[tensorflow]",
    "keras": "autodrop[keras]",
    "hypothesis": "autodrop[conformance]",
}


class AdapterLoadError(ImportError):
    """An adapter was asked for by name and could not be loaded."""


class AdapterLoadWarning(UserWarning):
    """A registered adapter could not be loaded while loading all of them."""


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            warnings.warn(
                f"adapter {ep.name!r} is registered twice ({found[ep.name].value} and {ep.value}); using the first",
                AdapterLoadWarning,
                stacklevel=3,
            )
            continue
        found.setdefault(ep.name, ep)
    return found


def adapter_names() -> list[str]:
    """Names of every registered adapter, sorted; imports nothing but metadata."""
    return sorted(_entry_points())


def _check_driver(name: str, obj: object) -> Driver:
    from autodrop_conformance._protocol import DTYPES, Driver

    if not isinstance(obj, Driver):
        raise AdapterLoadError(
            f"adapter {name!r}: {obj!r} is not a conformance driver (it needs name, dtypes, accumulation, "
            "max_examples, start() and restore())"
        )
    unknown = [d for d in obj.dtypes if d not in DTYPES]
    if not obj.dtypes or unknown:
        raise AdapterLoadError(
            f"adapter {name!r}: dtypes={obj.dtypes!r} is invalid: expected a non-empty subset of {DTYPES}"
        )
    if obj.accumulation not in ("float64", "float32"):
        raise AdapterLoadError(
            f"adapter {name!r}: accumulation={obj.accumulation!r} is invalid: expected 'float64' or 'float32'"
        )
    return obj


def load_driver(name: str) -> Driver:
    """Import and return the driver registered as ``name``.

    Raises:
        AdapterLoadError: no such adapter, its framework is missing (the message names
            the extra to install), its module fails to import, or the object it names is
            not a driver.
    """
    registered = _entry_points()
    if name not in registered:
        raise AdapterLoadError(
            f"no adapter named {name!r} in entry-point group {GROUP!r}; registered: {sorted(registered) or 'none'}"
        )
    ep = registered[name]
    try:
        obj = ep.load()
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        hint = _EXTRA_FOR_MODULE.get(top)
        advice = f"; install it with: pip install '{hint}'" if hint else ""
        raise AdapterLoadError(f"adapter {name!r} ({ep.value}) needs the missing module {err.name!r}{advice}") from err
    except Exception as err:
        raise AdapterLoadError(f"adapter {name!r} ({ep.value}) failed to load: {err!r}") from err
    return _check_driver(name, obj)


def load_all() -> dict[str, Driver]:
    """Every adapter that loads; each one that does not is skipped with an :class:`AdapterLoadWarning`."""
    drivers: dict[str, Driver] = {}
    for name in adapter_names():
        try:
            drivers[name] = load_driver(name)
        except AdapterLoadError as err:
            warnings.warn(str(err), AdapterLoadWarning, stacklevel=2)
    return drivers
