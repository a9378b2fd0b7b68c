"""The oracle side of every comparison: the numpy reference adapter behind the run protocol.

It wraps :class:`autodrop_numpy.NumpyAutoDrop` (float64 steps, reductions and running
average) so that the suite can drive it exactly like an adapter under test. numpy has
no bfloat16, so bfloat16 tensors are carried in float32 arrays and the averaged values
are rounded to bfloat16 through the adapter's public checkpoint, the way a bfloat16
tensor would store them. This module must not reimplement any AutoDrop rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from autodrop_numpy import NumpyAutoDrop, reduce_steps

from autodrop_conformance._protocol import Array, Layout, round_to
from autodrop_core import AutoDropConfig, Decision

__all__ = ["ReferenceRun", "adapter_kwargs"]

_CARRIER = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.float32}


def adapter_kwargs(config: AutoDropConfig) -> dict[str, Any]:
    """The keyword settings of ``config`` other than ``lrs`` (what adapters take as ``**config``)."""
    settings = config.to_dict()
    settings.pop("lrs")
    settings["min_lr"] = tuple(settings["min_lr"])
    return settings


class ReferenceRun:
    """The numpy reference over one case's parameters (see the module docstring)."""

    def __init__(self, values: Sequence[Array], layout: Layout, config: AutoDropConfig) -> None:
        self._layout = layout
        self._arrays = [np.array(v, dtype=_CARRIER[d]) for v, d in zip(values, layout.dtypes, strict=True)]
        self._adapter = NumpyAutoDrop(self._arrays, config.lrs, **adapter_kwargs(config))
        self._last: tuple[float, float] | None = None

    def set_params(self, values: Sequence[Array]) -> None:
        for array, value in zip(self._arrays, values, strict=True):
            array[...] = value

    def get_params(self) -> list[Array]:
        return [np.array(a, dtype=np.float64) for a in self._arrays]

    def end_epoch(self) -> Decision:
        state = self._adapter.state_dict()
        dot, sq_norm, _ = reduce_steps(self._arrays, state["snapshot"], state["prev_step"])
        decision = self._adapter.end_epoch()
        self._last = (dot, sq_norm)
        if decision.apply_average and "bfloat16" in self._layout.dtypes:
            self._round_bfloat16()
        return decision

    def _round_bfloat16(self) -> None:
        for array, dtype in zip(self._arrays, self._layout.dtypes):
            if dtype == "bfloat16":
                array[...] = round_to("bfloat16", array)
        state = self._adapter.state_dict()
        state["snapshot"] = [a.copy() for a in self._arrays]
        self._adapter.load_state_dict(state)

    @property
    def lrs(self) -> tuple[float, ...]:
        return self._adapter.lrs

    def save(self) -> dict[str, Any]:
        return self._adapter.state_dict()

    def reductions(self) -> tuple[float, float] | None:
        return self._last
