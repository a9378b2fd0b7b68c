"""A third-party AutoDrop adapter over plain Python lists of floats, with its conformance driver.

It stands for an adapter someone writes for a new framework: it depends only on
``autodrop_core`` (the decisions) and registers its driver in the entry-point group
``autodrop.adapters`` from its own ``pyproject.toml``. Parameters are flat lists of
Python floats (float64); steps are formed element by element and summed with
``math.fsum``. It is test material: it must stay small and must not import numpy at
module level (the driver converts at the boundary only).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from autodrop_core import AutoDropConfig, Controller, Decision

__all__ = ["ListAutoDrop", "driver"]


class ListAutoDrop:
    """AutoDrop over a list of parameter lists that the caller updates in place."""

    def __init__(self, params: list[list[float]], config: AutoDropConfig) -> None:
        self.params = params
        self.controller = Controller(config)
        self.snapshot = copy.deepcopy(params)
        self.prev_step = [[0.0] * len(p) for p in params]
        self.average: list[list[float]] | None = None
        self.last_reductions: tuple[float, float] | None = None

    def end_epoch(self) -> Decision:
        steps = [[x - h for x, h in zip(p, s)] for p, s in zip(self.params, self.snapshot)]
        dot = math.fsum(a * b for st, sp in zip(steps, self.prev_step) for a, b in zip(st, sp))
        sq_norm = math.fsum(a * a for st in steps for a in st)
        decision, state = self.controller.preview(dot, sq_norm)
        if decision.average_weight is not None:
            c = decision.average_weight
            if self.average is None or c == 1.0:
                self.average = copy.deepcopy(self.params)
            else:
                self.average = [[w + c * (x - w) for w, x in zip(wa, p)] for wa, p in zip(self.average, self.params)]
        if decision.apply_average and self.average is not None:
            for p, w in zip(self.params, self.average):
                p[:] = w
            self.average = None
        self.snapshot = copy.deepcopy(self.params)
        self.prev_step = steps
        self.controller.commit(decision, state)
        self.last_reductions = (dot, sq_norm)
        return decision

    def checkpoint(self) -> str:
        """Everything needed to resume, as a JSON string (the adapter's own format)."""
        return json.dumps({
            "core": self.controller.to_dict(),
            "snapshot": self.snapshot,
            "prev_step": self.prev_step,
            "average": self.average,
        })

    def resume(self, text: str) -> None:
        data = json.loads(text)
        self.controller = Controller.from_dict(data["core"])
        self.snapshot, self.prev_step, self.average = data["snapshot"], data["prev_step"], data["average"]


class _Run:
    def __init__(self, values: Any, layout: Any, config: AutoDropConfig) -> None:
        self.shapes = [v.shape for v in values]
        self.adapter = ListAutoDrop([[float(x) for x in v.ravel()] for v in values], config)

    def set_params(self, values: Any) -> None:
        for p, v in zip(self.adapter.params, values):
            p[:] = [float(x) for x in v.ravel()]

    def get_params(self) -> Any:
        import numpy as np

        return [np.array(p, dtype=np.float64).reshape(s) for p, s in zip(self.adapter.params, self.shapes)]

    def end_epoch(self) -> Decision:
        return self.adapter.end_epoch()

    @property
    def lrs(self) -> tuple[float, ...]:
        return self.adapter.controller.lrs

    def save(self) -> str:
        return self.adapter.checkpoint()

    def reductions(self) -> tuple[float, float] | None:
        return self.adapter.last_reductions


class _Driver:
    name = "example"
    dtypes = ("float64",)
    accumulation = "float64"
    max_examples = 40
    # no size-dependent code path, and plain Python lists make tensors of 2**18 elements
    # slow: draw no large tensors (the suite's default is (2**16 + 1, 2**18 + 1))
    size_thresholds = ()

    def start(self, values: Any, layout: Any, config: AutoDropConfig) -> _Run:
        return _Run(values, layout, config)

    def restore(self, values: Any, layout: Any, config: AutoDropConfig, saved: Any) -> _Run:
        run = _Run(values, layout, config)
        run.adapter.resume(saved)
        return run


#: What the ``example`` entry point names.
driver = _Driver()
