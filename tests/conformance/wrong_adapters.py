"""Deliberately wrong adapters that the conformance suite must catch (test material).

``LateDropDriver`` drops one epoch late (it averages one vector too many);
``FlatFloat32Driver`` reduces the steps as one flat float32 vector, the classic shortcut
that loses the float64 accumulation the spec asks for. Both otherwise behave like the
numpy reference, so only the named defect can make them fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from autodrop_numpy._conformance import NumpyDriver, NumpyRun

from autodrop_core import AutoDropConfig, Controller, Decision


class LateDropDriver(NumpyDriver):
    """The numpy adapter with drop_delay one larger than configured."""

    name = "late-drop"

    def start(self, values: Sequence[Any], layout: Any, config: AutoDropConfig) -> NumpyRun:
        return NumpyRun(values, layout.dtypes, replace(config, drop_delay=config.drop_delay + 1))

    def restore(self, values: Sequence[Any], layout: Any, config: AutoDropConfig, saved: Any) -> NumpyRun:
        return super().restore(values, layout, replace(config, drop_delay=config.drop_delay + 1), saved)


class FlatFloat32Run:
    """Like the reference, except that dot and sq_norm are taken over one flat float32 vector."""

    def __init__(self, values: Sequence[Any], config: AutoDropConfig, report: bool) -> None:
        self.arrays = [np.array(v, dtype=np.float64) for v in values]
        self.controller = Controller(config)
        self.snapshot = [a.copy() for a in self.arrays]
        self.prev = [np.zeros_like(a) for a in self.arrays]
        self.average: list[Any] | None = None
        self.report = report
        self.last: tuple[float, float] | None = None

    def set_params(self, values: Sequence[Any]) -> None:
        for a, v in zip(self.arrays, values):
            a[...] = v

    def get_params(self) -> list[Any]:
        return [a.copy() for a in self.arrays]

    def end_epoch(self) -> Decision:
        steps = [a - s for a, s in zip(self.arrays, self.snapshot)]
        flat = np.concatenate([s.ravel() for s in steps]).astype(np.float32)
        prev = np.concatenate([s.ravel() for s in self.prev]).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            dot, sq_norm = float(np.dot(flat, prev)), float(np.dot(flat, flat))
        decision, state = self.controller.preview(dot, sq_norm)
        if decision.average_weight is not None:
            if self.average is None or decision.average_weight == 1.0:
                self.average = [a.copy() for a in self.arrays]
            else:
                for w, a in zip(self.average, self.arrays):
                    w += decision.average_weight * (a - w)
        if decision.apply_average and self.average is not None:
            for a, w in zip(self.arrays, self.average):
                a[...] = w
            self.average = None
        self.snapshot = [a.copy() for a in self.arrays]
        self.prev = steps
        self.controller.commit(decision, state)
        self.last = (dot, sq_norm)
        return decision

    @property
    def lrs(self) -> tuple[float, ...]:
        return self.controller.lrs

    def save(self) -> Any:
        raise NotImplementedError("not needed: the reference comparison catches this adapter")

    def reductions(self) -> tuple[float, float] | None:
        return self.last if self.report else None


class FlatFloat32Driver:
    """Drives :class:`FlatFloat32Run` over float64 parameters; ``report`` says whether it shows its reductions."""

    dtypes = ("float64",)
    accumulation = "float64"  # what it claims; what it does is float32
    max_examples = None

    def __init__(self, report: bool) -> None:
        self.report = report
        self.name = "flat-float32" + ("" if report else "-silent")

    def start(self, values: Sequence[Any], layout: Any, config: AutoDropConfig) -> FlatFloat32Run:
        return FlatFloat32Run(values, config, self.report)

    def restore(self, values: Sequence[Any], layout: Any, config: AutoDropConfig, saved: Any) -> FlatFloat32Run:
        raise NotImplementedError


class ForgetfulDriver(NumpyDriver):
    """Restoring ignores the saved state and starts afresh (a checkpoint that loses the core)."""

    name = "forgetful"

    def restore(self, values: Sequence[Any], layout: Any, config: AutoDropConfig, saved: Any) -> NumpyRun:
        return NumpyRun(values, layout.dtypes, config)


class _WrongErrorRun(NumpyRun):
    def end_epoch(self) -> Decision:
        if not all(np.all(np.isfinite(a)) for a in self.arrays):
            raise ValueError("parameters are not finite")
        return super().end_epoch()


class WrongErrorDriver(NumpyDriver):
    """Refuses NaN parameters, but with a plain ValueError that names no epoch."""

    name = "wrong-error"

    def start(self, values: Sequence[Any], layout: Any, config: AutoDropConfig) -> NumpyRun:
        return _WrongErrorRun(values, layout.dtypes, config)
