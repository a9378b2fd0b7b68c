"""One conformance case as plain data, and the Python source that rebuilds it.

A case is a configuration, a parameter layout, the starting values and one step per
epoch (float64; the suite adds each step to the parameters as the adapter left them and
rounds to the tensor's dtype), plus the epochs at which the checkpoint and NaN checks
strike. It must stay printable as a self-contained snippet: failure reports embed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from autodrop_conformance._protocol import Array, Layout, round_to
from autodrop_core import AutoDropConfig

__all__ = ["Case"]


def _array_source(a: Array) -> str:
    if a.size == 0 or a.ndim == 0:
        return f"np.array({a.tolist()!r}).reshape({a.shape!r})"
    return f"np.array({a.tolist()!r})"


@dataclass(frozen=True, eq=False)
class Case:
    """Everything needed to replay one trajectory against one adapter.

    Attributes:
        config: the AutoDrop configuration (its ``lrs`` give the parameter groups).
        layout: shapes, dtypes and groups of the parameters.
        initial: x̂(0) per tensor, float64 values exactly representable in its dtype.
        steps: per epoch, one float64 step per tensor.
        save_at: the checkpoint check saves and restores after this many epochs.
        nan_at: the NaN check poisons the parameters at this epoch (1-based).
        motif: a short name of how the steps were built (for reports only).
    """

    config: AutoDropConfig
    layout: Layout
    initial: tuple[Array, ...]
    steps: tuple[tuple[Array, ...], ...]
    save_at: int = 0
    nan_at: int = 1
    motif: str = field(default="", compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Case):
            return NotImplemented
        arrays = [*self.initial, *(s for epoch in self.steps for s in epoch)]
        others = [*other.initial, *(s for epoch in other.steps for s in epoch)]
        return (
            (self.config, self.layout, self.save_at, self.nan_at, len(self.steps))
            == (other.config, other.layout, other.save_at, other.nan_at, len(other.steps))
            and len(arrays) == len(others)
            and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(arrays, others))
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def epochs(self) -> int:
        """The number of epochs in the trajectory."""
        return len(self.steps)

    def advance(self, params: Sequence[Array], epoch: int) -> list[Array]:
        """x(t): the step of ``epoch`` (1-based) added to ``params``, rounded to each dtype."""
        step = self.steps[epoch - 1]
        with np.errstate(over="ignore", invalid="ignore"):
            return [round_to(d, p + s) for p, s, d in zip(params, step, self.layout.dtypes, strict=True)]

    def to_source(self, driver_expr: str = 'load_driver("NAME")') -> str:
        """A Python snippet that rebuilds this case and checks it against a driver."""
        cfg = self.config
        initial = ", ".join(_array_source(a) for a in self.initial)
        steps = ",\n        ".join("(" + ", ".join(_array_source(s) for s in epoch) + ",)" for epoch in self.steps)
        return (
            "import numpy as np\n"
            "from autodrop_core import AutoDropConfig\n"
            "from autodrop_conformance import Case, Layout, check_case, load_driver\n\n"
            "case = Case(\n"
            f"    config=AutoDropConfig(lrs={cfg.lrs!r}, min_lr={cfg.floors!r}, drop_factor={cfg.drop_factor!r},\n"
            f"        threshold={cfg.threshold!r}, max_threshold={cfg.max_threshold!r},\n"
            f"        drop_delay={cfg.drop_delay!r}, angle_window={cfg.angle_window!r}, "
            f"reset_on_drop={cfg.reset_on_drop!r}),\n"
            f"    layout=Layout(shapes={self.layout.shapes!r}, dtypes={self.layout.dtypes!r},\n"
            f"        groups={self.layout.groups!r}),\n"
            f"    initial=({initial},),\n"
            f"    steps=(\n        {steps},\n    ),\n"
            f"    save_at={self.save_at!r}, nan_at={self.nan_at!r},\n"
            ")\n"
            f"check_case({driver_expr}, case)\n"
        )
