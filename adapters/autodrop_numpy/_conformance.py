"""The conformance driver of the numpy adapter (entry point ``autodrop.adapters: numpy``).

It exposes :class:`autodrop_numpy.NumpyAutoDrop` to the conformance suite exactly as a
third-party driver would: parameters are numpy arrays of the case's dtype, the
checkpoint goes through ``state_dict()``/``load_state_dict()`` and a byte round trip
(``numpy.savez`` holds the arrays, JSON the core checkpoint). It adds no rule of its own
and is imported only by the suite, never by ``autodrop_numpy`` itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from autodrop_core import AutoDropConfig, Decision
from autodrop_numpy._adapter import NumpyAutoDrop, reduce_steps

__all__ = ["NumpyDriver", "driver"]

_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}


def _settings(config: AutoDropConfig) -> dict[str, Any]:
    settings = config.to_dict()
    settings.pop("lrs")
    return settings


def _to_bytes(state: dict[str, Any]) -> bytes:
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    layout: dict[str, Any] = {"core": state["core"]}
    for key in ("snapshot", "prev_step", "average"):
        value = state[key]
        layout[key] = None if value is None else len(value)
        for i, a in enumerate(value or ()):
            arrays[f"{key}_{i}"] = a
    arrays["layout"] = np.array(json.dumps(layout))
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def _from_bytes(blob: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(blob)) as data:
        layout = json.loads(str(data["layout"]))
        state: dict[str, Any] = {"core": layout["core"]}
        for key in ("snapshot", "prev_step", "average"):
            count = layout[key]
            state[key] = None if count is None else [data[f"{key}_{i}"] for i in range(count)]
    return state


class NumpyRun:
    """One :class:`NumpyAutoDrop` over arrays of the case's dtypes."""

    def __init__(self, values: Sequence[np.ndarray[Any, Any]], dtypes: Sequence[str], config: AutoDropConfig) -> None:
        self.arrays = [np.array(v, dtype=_DTYPES[d]) for v, d in zip(values, dtypes, strict=True)]
        self.adapter = NumpyAutoDrop(self.arrays, config.lrs, **_settings(config))
        self._last: tuple[float, float] | None = None

    def set_params(self, values: Sequence[np.ndarray[Any, Any]]) -> None:
        for array, value in zip(self.arrays, values, strict=True):
            array[...] = value

    def get_params(self) -> list[np.ndarray[Any, Any]]:
        return [np.array(a, dtype=np.float64) for a in self.arrays]

    def end_epoch(self) -> Decision:
        state = self.adapter.state_dict()
        reductions = reduce_steps(self.arrays, state["snapshot"], state["prev_step"])[:2]
        decision = self.adapter.end_epoch()
        self._last = reductions
        return decision

    @property
    def lrs(self) -> tuple[float, ...]:
        return self.adapter.lrs

    def save(self) -> bytes:
        return _to_bytes(self.adapter.state_dict())

    def reductions(self) -> tuple[float, float] | None:
        return self._last


class NumpyDriver:
    """The numpy adapter's driver: float16/32/64 arrays, float64 accumulation."""

    name = "numpy"
    dtypes: tuple[Literal["float64", "float32", "float16"], ...] = ("float64", "float32", "float16")
    accumulation: Literal["float64"] = "float64"
    max_examples: int | None = 150
    #: numpy has no size-dependent path; one large size still exercises the suite's own large cases
    size_thresholds: tuple[int, ...] = (2**16 + 1,)

    def start(self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig) -> NumpyRun:
        return NumpyRun(values, layout.dtypes, config)

    def restore(
        self, values: Sequence[np.ndarray[Any, Any]], layout: Any, config: AutoDropConfig, saved: Any
    ) -> NumpyRun:
        run = NumpyRun(values, layout.dtypes, config)
        run.adapter.load_state_dict(_from_bytes(saved))
        return run


#: The object the ``numpy`` entry point names.
driver = NumpyDriver()
